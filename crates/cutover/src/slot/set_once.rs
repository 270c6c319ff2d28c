//! A pointer set at most once, by whichever thread gets there first: how a
//! generation makes its rarely needed parts (its lifecycle, see
//! `lifecycle_cell`; its straggler tracker, see `tracking`) only when
//! someone asks, at the cost of one null pointer until then.
//!
//! Two threads may make the value at once: each builds its own and offers
//! it with a compare-and-swap from null; the loser drops its own and uses
//! the winner's, so every caller sees the same value. Once set, the pointer
//! never changes until the cell is dropped (which needs `&mut self`), so a
//! reference to the value lives as long as the borrow of the cell.

use std::{marker::PhantomData, ptr::NonNull, sync::atomic::Ordering, sync::Arc};

use crate::sync::AtomicPtr;

/// An owning pointer that can be turned into a raw pointer and back:
/// `Box` and `Arc`.
pub(crate) trait Owning {
    /// What it points at.
    type Target;

    /// Give up the pointer, keeping what it owns alive.
    fn into_raw(self) -> *mut Self::Target;

    /// Take back what [`into_raw`](Self::into_raw) gave up.
    ///
    /// # Safety
    /// `ptr` came from `into_raw` of this type, and is taken back once.
    unsafe fn from_raw(ptr: *mut Self::Target) -> Self;
}

impl<T> Owning for Box<T> {
    type Target = T;

    fn into_raw(self) -> *mut T {
        Box::into_raw(self)
    }

    unsafe fn from_raw(ptr: *mut T) -> Self {
        // SAFETY: forwarded from the caller.
        unsafe { Box::from_raw(ptr) }
    }
}

impl<T> Owning for Arc<T> {
    type Target = T;

    fn into_raw(self) -> *mut T {
        Arc::into_raw(self).cast_mut()
    }

    unsafe fn from_raw(ptr: *mut T) -> Self {
        // SAFETY: forwarded from the caller.
        unsafe { Arc::from_raw(ptr) }
    }
}

/// Null, or what one `P` owned (from [`Owning::into_raw`]), owned by the
/// cell until it is dropped. Sendable and shareable as `P` is.
pub(crate) struct SetOnce<P: Owning> {
    ptr: AtomicPtr<P::Target>,
    owns: PhantomData<P>,
}

impl<P: Owning> SetOnce<P> {
    /// An empty cell.
    pub(crate) fn empty() -> Self {
        Self { ptr: AtomicPtr::new(std::ptr::null_mut()), owns: PhantomData }
    }

    /// A cell set to `value`.
    pub(crate) fn new(value: P) -> Self {
        Self { ptr: AtomicPtr::new(value.into_raw()), owns: PhantomData }
    }

    /// The value, if set.
    pub(crate) fn get(&self) -> Option<&P::Target> {
        // SAFETY: a non-null pointer was published (with release ordering,
        // which this acquire load pairs with) from a `P` the cell owns, and
        // is freed only by the cell's drop, which needs `&mut self`.
        unsafe { self.ptr.load(Ordering::Acquire).as_ref() }
    }

    /// The value, set now to what `make` returns if the cell is empty. If
    /// another thread sets it first, the value `make` returned is dropped
    /// and the other thread's is returned.
    pub(crate) fn get_or_set(&self, make: impl FnOnce() -> P) -> &P::Target {
        let ptr = self.ptr_or_set(make);
        // SAFETY: as in `get`: set, and freed only by the cell's drop.
        unsafe { ptr.as_ref() }
    }

    /// The pointer the cell holds, set now if it was empty.
    fn ptr_or_set(&self, make: impl FnOnce() -> P) -> NonNull<P::Target> {
        if let Some(set) = NonNull::new(self.ptr.load(Ordering::Acquire)) {
            return set;
        }
        let made = make().into_raw();
        match self.ptr.compare_exchange(std::ptr::null_mut(), made, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: `into_raw` of a live `P` is not null.
            Ok(_) => unsafe { NonNull::new_unchecked(made) },
            Err(winner) => {
                // SAFETY: `made` came from `into_raw` just above and was not
                // published: taken back once, here.
                drop(unsafe { P::from_raw(made) });
                // SAFETY: the exchange failed, so `winner` is not null.
                unsafe { NonNull::new_unchecked(winner) }
            }
        }
    }
}

impl<T> SetOnce<Arc<T>> {
    /// A new reference to the value, set now to what `make` returns if the
    /// cell is empty (as [`get_or_set`](Self::get_or_set)).
    pub(crate) fn cloned_or_set(&self, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        let ptr = self.ptr_or_set(make).as_ptr().cast_const();
        // SAFETY: the cell holds one strong count of that `Arc` (from
        // `Arc::into_raw`) until its drop, which needs `&mut self`: the
        // count is alive while we borrow the cell, so adding one is sound.
        unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        }
    }
}

impl<P: Owning> Default for SetOnce<P> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<P: Owning> Drop for SetOnce<P> {
    fn drop(&mut self) {
        let ptr = self.ptr.swap(std::ptr::null_mut(), Ordering::Acquire);
        if !ptr.is_null() {
            // SAFETY: from `into_raw` (in `new` or `ptr_or_set`), owned by
            // the cell, taken back once, here.
            drop(unsafe { P::from_raw(ptr) });
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Barrier,
    };

    use super::SetOnce;

    struct Counted<'a>(&'a AtomicUsize);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Racing makers agree on one value; every loser's is dropped at once,
    /// the winner's with the cell.
    #[test]
    fn racing_makers_agree_and_nothing_leaks() {
        const THREADS: usize = 4;
        let drops = AtomicUsize::new(0);
        let cell: SetOnce<Box<(usize, Counted<'_>)>> = SetOnce::empty();
        assert!(cell.get().is_none());
        let barrier = Barrier::new(THREADS);
        let seen: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|i| {
                    let (cell, barrier, drops) = (&cell, &barrier, &drops);
                    scope.spawn(move || {
                        barrier.wait();
                        cell.get_or_set(|| Box::new((i, Counted(drops)))).0
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(seen.iter().all(|&winner| winner == seen[0]), "{seen:?}");
        assert_eq!(cell.get().map(|v| v.0), Some(seen[0]));
        // Makers that lost dropped theirs; those that found it set made none.
        let lost = drops.load(Ordering::SeqCst);
        assert!(lost < THREADS);
        drop(cell);
        assert_eq!(drops.load(Ordering::SeqCst), lost + 1);
    }

    /// An `Arc` cell hands out references to the one value it holds, set
    /// once, and gives its own count back when dropped.
    #[test]
    fn an_arc_cell_shares_its_value() {
        let given = Arc::new(7);
        let cell = SetOnce::new(Arc::clone(&given));
        let shared = cell.cloned_or_set(|| unreachable!("already set"));
        assert!(Arc::ptr_eq(&shared, &given));
        assert_eq!(Arc::strong_count(&given), 3);
        drop(cell);
        assert_eq!(Arc::strong_count(&given), 2);

        let empty: SetOnce<Arc<u8>> = SetOnce::default();
        let made = empty.cloned_or_set(|| Arc::new(1));
        let again = empty.cloned_or_set(|| Arc::new(2));
        assert!(Arc::ptr_eq(&made, &again));
        assert_eq!(Arc::strong_count(&made), 3);
        drop(again);
        drop(empty);
        assert_eq!(Arc::strong_count(&made), 1);
    }
}
