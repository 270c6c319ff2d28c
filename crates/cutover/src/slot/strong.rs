//! [`Strong`]: a thread-safe reference-counted pointer with no weak count.
//!
//! A slot's shared state is one allocation per plugin, kept alive by the
//! slot, its registry entries, its live generations and its drains. None of
//! them needs a weak reference, and `Arc` pays a word for one: 48 bytes of
//! state plus `Arc`'s two counts is a 64-byte request, which the allocator
//! (glibc's malloc adds an 8-byte header and rounds to 16) serves from its
//! 80-byte class; with one count the request is 56 bytes, in the 64-byte
//! class. Across a registry of 10,000 plugins that is 160 KB
//! (BENCHMARKS.md, issue 14, item 2, session 32).
//!
//! The counting is `Arc`'s: a clone increments with `Relaxed` ordering (the
//! clone is made from a live reference, so the count cannot reach zero
//! meanwhile) and aborts the process before the count could overflow; a
//! drop decrements with `AcqRel`, so the last drop, which frees the value,
//! happens after every other holder's last use of it. No count is touched
//! on a lease's path: leases hold their generation, not the shared state.

use std::{marker::PhantomData, mem::MaybeUninit, ops::Deref, ptr::NonNull};

// `std`'s atomic even under loom, as `Arc`'s count (which this replaced)
// was: loom requires every modelled operation to recur in the same order
// in each execution, and the registry's models drop their key maps'
// entries (each a count) in an order that follows a randomly seeded hash.
use std::sync::atomic::{AtomicUsize, Ordering};

/// The allocation: the count, then the value.
#[repr(C)]
struct Inner<T> {
    count: AtomicUsize,
    value: T,
}

/// A shared reference to a `T` in an allocation of its own, freed when the
/// last `Strong` to it is dropped. Like `Arc<T>` without weak references
/// (so without `Arc`'s second word), for sized `T`.
pub(crate) struct Strong<T> {
    /// From `Box::into_raw`; owns one count.
    inner: NonNull<Inner<T>>,
    /// We (may) own and drop a `T`.
    _owns: PhantomData<T>,
}

// SAFETY: as for `Arc<T>`: a `Strong` hands out `&T` on every thread that
// holds one (so `T: Sync`), and whichever holder is last drops the `T` (so
// `T: Send`); the count is atomic.
unsafe impl<T: Send + Sync> Send for Strong<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Strong<T> {}

/// Counts above this abort the process (as `Arc`'s do): a count cannot
/// reach it without leaking references (`mem::forget`) in a loop, and
/// stopping well short of `usize::MAX` leaves room for every thread's
/// increment between the check and the abort.
const MAX_COUNT: usize = isize::MAX as usize;

impl<T> Strong<T> {
    /// A new allocation holding the value `make` returns, which is given the
    /// address the value will have (the pointer [`as_ptr`](Self::as_ptr)
    /// and [`into_raw`](Self::into_raw) return), so that the value can
    /// point back at itself, as `Arc::new_cyclic` allows with a `Weak`.
    /// `make` must not read or write through that pointer (the value is not
    /// there yet), nor let it be used before this returns. If `make` panics
    /// the allocation is freed.
    pub(crate) fn new_cyclic(make: impl FnOnce(NonNull<T>) -> T) -> Self {
        let uninit = Box::into_raw(Box::new(MaybeUninit::<Inner<T>>::uninit())).cast::<Inner<T>>();
        // Frees the allocation (without dropping a value that is not there)
        // if `make` unwinds.
        struct Unmade<T>(*mut Inner<T>);
        impl<T> Drop for Unmade<T> {
            fn drop(&mut self) {
                // SAFETY: from `Box::into_raw` of a `Box<MaybeUninit<_>>`
                // of this layout; nothing was written that needs a drop.
                drop(unsafe { Box::from_raw(self.0.cast::<MaybeUninit<Inner<T>>>()) });
            }
        }
        let guard = Unmade(uninit);
        // SAFETY: `uninit` is a live allocation of `Inner<T>`; taking a
        // field's address reads nothing.
        let value_ptr = unsafe { std::ptr::addr_of_mut!((*uninit).value) };
        // SAFETY: a field of a non-null allocation is not null.
        let value = make(unsafe { NonNull::new_unchecked(value_ptr) });
        std::mem::forget(guard);
        // SAFETY: the allocation is ours alone and of `Inner<T>`'s layout.
        unsafe { uninit.write(Inner { count: AtomicUsize::new(1), value }) };
        // SAFETY: from `Box::into_raw`, so not null.
        Self { inner: unsafe { NonNull::new_unchecked(uninit) }, _owns: PhantomData }
    }

    fn inner(&self) -> &Inner<T> {
        // SAFETY: we own a count, so the allocation is live and initialized.
        unsafe { self.inner.as_ref() }
    }

    /// The value's address: what [`into_raw`](Self::into_raw) returns and
    /// [`new_cyclic`](Self::new_cyclic) gave its closure. Its provenance is
    /// the allocation's, so [`from_raw`](Self::from_raw) accepts it.
    pub(crate) fn as_ptr(this: &Self) -> NonNull<T> {
        // SAFETY: projecting a field of a live allocation; a field of a
        // non-null pointer is not null.
        unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*this.inner.as_ptr()).value)) }
    }

    /// Give up this reference's count without dropping it, returning the
    /// value's address (for [`from_raw`](Self::from_raw)).
    pub(crate) fn into_raw(this: Self) -> NonNull<T> {
        let ptr = Self::as_ptr(&this);
        std::mem::forget(this);
        ptr
    }

    /// The allocation whose value is at `value`.
    fn inner_of(value: NonNull<T>) -> NonNull<Inner<T>> {
        let offset = std::mem::offset_of!(Inner<T>, value);
        // Wrapping: only `from_raw`'s and `increment_count`'s callers promise
        // that `value` is a field of an `Inner<T>` at `offset` from its
        // start, with that allocation's provenance (so the step back stays
        // inside it).
        let inner = value.as_ptr().wrapping_byte_sub(offset).cast::<Inner<T>>();
        NonNull::new(inner).unwrap_or_else(|| unreachable!("a live allocation is not at address 0"))
    }

    /// Take back a count given up by [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `value` is the address returned by [`as_ptr`](Self::as_ptr),
    /// [`into_raw`](Self::into_raw) or given to
    /// [`new_cyclic`](Self::new_cyclic)'s closure, of an allocation that is
    /// still live; the caller owns one of its counts (given up by
    /// `into_raw` or made by [`increment_count`](Self::increment_count)),
    /// which the returned `Strong` takes over.
    pub(crate) unsafe fn from_raw(value: NonNull<T>) -> Self {
        Self { inner: Self::inner_of(value), _owns: PhantomData }
    }

    /// Add a count to the allocation whose value is at `value`, for a later
    /// [`from_raw`](Self::from_raw).
    ///
    /// # Safety
    /// As for [`from_raw`](Self::from_raw): `value` came from this type,
    /// and the caller holds a count of it (so it stays live meanwhile).
    pub(crate) unsafe fn increment_count(value: NonNull<T>) {
        // SAFETY: the caller holds a count, so the allocation is live.
        let inner = unsafe { Self::inner_of(value).as_ref() };
        Self::increment(inner);
    }

    fn increment(inner: &Inner<T>) {
        // Relaxed: the caller holds a count, so the value cannot be freed
        // meanwhile, and a new reference needs no ordering with the others
        // (the drop's `AcqRel` orders their uses before the free).
        if inner.count.fetch_add(1, Ordering::Relaxed) > MAX_COUNT {
            std::process::abort();
        }
    }

    /// Drop the value and free the allocation: out of line, as `Arc`'s
    /// `drop_slow`, so that the many places a `Strong` is dropped inline
    /// only the decrement.
    ///
    /// # Safety
    /// The count reached zero: `inner`, from `Box::into_raw`, is ours to
    /// drop and free, once.
    #[inline(never)]
    #[cold]
    unsafe fn free(inner: NonNull<Inner<T>>) {
        // SAFETY: forwarded from the caller.
        drop(unsafe { Box::from_raw(inner.as_ptr()) });
    }

    /// The number of references (for tests: it can change at any moment
    /// on another thread).
    #[cfg(test)]
    pub(crate) fn count(this: &Self) -> usize {
        this.inner().count.load(Ordering::Relaxed)
    }
}

impl<T> Clone for Strong<T> {
    fn clone(&self) -> Self {
        Self::increment(self.inner());
        Self { inner: self.inner, _owns: PhantomData }
    }
}

impl<T> Deref for Strong<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T> Drop for Strong<T> {
    #[inline]
    fn drop(&mut self) {
        // AcqRel: release our uses of the value to the last holder, and, if
        // we are the last, acquire everyone else's before the value is
        // dropped (`Arc` does the same with a release decrement and an
        // acquire fence; drops are rare here, so one `AcqRel` is simpler).
        if self.inner().count.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // SAFETY: the count reached zero: no other `Strong` (and no raw
        // pointer with a count) remains.
        unsafe { Self::free(self.inner) };
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Strong<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::{
        atomic::{AtomicUsize as Counter, Ordering::SeqCst},
        Arc,
    };

    struct Dropped(Arc<Counter>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn one_word_of_count() {
        assert_eq!(std::mem::size_of::<Inner<[u64; 6]>>(), 56);
        assert_eq!(std::mem::size_of::<Strong<u64>>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn the_last_drop_drops_the_value_once() {
        let drops = Arc::new(Counter::new(0));
        let first = Strong::new_cyclic(|_| Dropped(Arc::clone(&drops)));
        let clones: Vec<_> = (0..3).map(|_| first.clone()).collect();
        assert_eq!(Strong::count(&first), 4);
        drop(first);
        let handles: Vec<_> = clones.into_iter().map(|clone| std::thread::spawn(move || drop(clone))).collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(drops.load(SeqCst), 1);
    }

    #[test]
    fn the_cyclic_pointer_is_the_values_address_and_round_trips() {
        let mut given = None;
        let strong = Strong::new_cyclic(|ptr: NonNull<(u8, u64)>| {
            given = Some(ptr);
            (7, 42)
        });
        assert_eq!(given, Some(Strong::as_ptr(&strong)));
        assert!(std::ptr::eq(&*strong, Strong::as_ptr(&strong).as_ptr()));
        let raw = Strong::into_raw(strong.clone());
        // SAFETY: `raw` came from `into_raw` of a live `Strong` whose count
        // it owns; the second count is added for the second `from_raw`.
        let (again, twice) = unsafe {
            Strong::increment_count(raw);
            (Strong::from_raw(raw), Strong::from_raw(raw))
        };
        assert_eq!(Strong::count(&strong), 3);
        assert_eq!(*again, (7, 42));
        drop((again, twice));
        assert_eq!(Strong::count(&strong), 1);
    }

    #[test]
    fn a_panic_in_the_maker_frees_the_allocation() {
        let result = std::panic::catch_unwind(|| Strong::<u64>::new_cyclic(|_| panic!("no value")));
        assert!(result.is_err());
    }
}
