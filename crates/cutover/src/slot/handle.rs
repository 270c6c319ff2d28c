//! [`SlotRef`]: the pointer a [`Slot`] is, and a registry entry holds.

use std::ptr::NonNull;

use super::{
    record::{Head, Hint, Shared},
    strong::Strong,
    Lease, Slot,
};

/// An owning pointer to a slot's shared state that points at the slot's
/// [`Head`] (what every lease reads first), so that a lease starts one load
/// from wherever the pointer is kept. It owns one strong count of the
/// shared state (a [`Strong<Shared<T>>`]), reached through the head's back
/// pointer; unlike a [`Slot`], dropping it does not close the slot.
pub(crate) struct SlotRef<T: ?Sized + 'static> {
    head: NonNull<Head<T>>,
}

// SAFETY: a `SlotRef` is a `Strong<Shared<T>>` in another form (it owns one
// strong count and reaches the shared state's head), and `Shared<T>` is
// `Send + Sync` for `T: Send + Sync`.
unsafe impl<T: ?Sized + Send + Sync + 'static> Send for SlotRef<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send + Sync + 'static> Sync for SlotRef<T> {}

impl<T: ?Sized + 'static> SlotRef<T> {
    /// The pointer for `shared`, taking over its strong count.
    pub(crate) fn new(shared: Strong<Shared<T>>) -> Self {
        let head = NonNull::from(shared.head());
        let _ = Strong::into_raw(shared);
        Self { head }
    }

    /// The slot's head.
    #[inline(always)]
    pub(crate) fn head(&self) -> &Head<T> {
        // SAFETY: we own a strong count of the shared state, which owns the
        // head and frees it only in its drop.
        unsafe { self.head.as_ref() }
    }

    /// The slot's shared state.
    #[inline]
    pub(crate) fn shared(&self) -> &Shared<T> {
        self.head().shared()
    }

    /// Another strong reference to the shared state.
    pub(crate) fn strong(&self) -> Strong<Shared<T>> {
        let shared = self.head().shared_ptr();
        // SAFETY: `shared` is the value pointer of the `Strong` whose count
        // we own (the head's back pointer is the one `Strong::new_cyclic`
        // gave `Shared::new`, not derived from a reference), so it is alive
        // and the count may be incremented and taken by a new `Strong`.
        unsafe {
            Strong::increment_count(shared);
            Strong::from_raw(shared)
        }
    }
}

impl<T: ?Sized + Send + Sync + 'static> SlotRef<T> {
    /// This pointer seen as the [`Slot`] it is the only field of.
    #[inline]
    pub(crate) fn as_slot(&self) -> &Slot<T> {
        // SAFETY: `Slot<T>` is `repr(transparent)` over `SlotRef<T>`, so a
        // reference to one is a valid reference to the other; the `Slot` is
        // only borrowed, so its `Drop` (which closes the slot) never runs.
        unsafe { &*(self as *const Self).cast::<Slot<T>>() }
    }

    /// A lease on the current generation; `None` once the slot is closed.
    #[inline]
    pub(crate) fn try_lease(&self) -> Option<Lease<T>> {
        Some(Lease::new(self.head().acquire()?))
    }

    /// Start fetching the head's line (a prefetch: reads nothing, see
    /// [`Hint`]).
    #[inline(always)]
    pub(crate) fn prefetch_head(&self) {
        super::record::prefetch(self.head.as_ptr().cast_const().cast());
    }

    /// A prefetch hint for leases of the current generation (see [`Hint`]);
    /// `None` if the slot is closed.
    pub(crate) fn hint(&self) -> Option<Hint> {
        self.shared().hint()
    }
}

impl<T: ?Sized + 'static> Clone for SlotRef<T> {
    fn clone(&self) -> Self {
        // SAFETY: as in `strong`: the back pointer is the `Strong`'s, and we
        // hold a count; the new one is the clone's.
        unsafe { Strong::increment_count(self.head().shared_ptr()) };
        Self { head: self.head }
    }
}

impl<T: ?Sized + 'static> Drop for SlotRef<T> {
    fn drop(&mut self) {
        let shared = self.head().shared_ptr();
        // SAFETY: we own one count of that `Strong` (see `strong`), given back
        // here once; the head is not used after this.
        drop(unsafe { Strong::from_raw(shared) });
    }
}
