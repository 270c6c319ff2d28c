//! [`Lease`]: one in-flight operation on one generation.

use std::{fmt, marker::PhantomData, ops::Deref, ptr::NonNull};

use super::record::{end_lease, leased_cancelled, Acquired, Record};

/// One in-flight operation's hold on one generation of a [`Slot`](super::Slot).
///
/// Taken by [`Slot::lease`](super::Slot::lease); dereferences to the plugin.
/// While any lease of a generation exists, that generation is not drained:
/// its value stays alive and its [`Drain`](super::Drain) does not complete.
/// Dropping the lease ends the operation, on any thread, also during a panic
/// unwind.
///
/// A lease costs a plain increment and decrement of a counter its thread
/// owns (the asymmetric-fence path), or one uncontended atomic increment and
/// one decrement on a counter no other thread uses (the atomic path; see
/// [`LeasePath`](super::LeasePath)); it may be held for as long as the operation
/// takes (seconds, or across `.await`) without slowing other callers or
/// writers. (An `arc-swap` `Guard` held for long makes later loads on the
/// thread fall back to a slower path.)
///
/// A lease does not keep the [`Slot`](super::Slot) it came from borrowed, so
/// it can be moved into a task or another thread.
///
/// ```
/// use std::sync::Arc;
/// use cutover::{PluginId, Slot};
///
/// let slot = Slot::new(PluginId::new("greeter"), Arc::new(String::from("hello")));
/// let lease = slot.lease();
/// assert_eq!(&*lease, "hello");
/// assert_eq!(lease.generation(), 1);
/// ```
pub struct Lease<T: ?Sized + Send + Sync + 'static> {
    record: NonNull<Record<T>>,
    value: NonNull<T>,
    stripe: usize,
    generation: u64,
    /// Straggler-tracking ticket, 0 if untracked.
    ticket: u64,
    _owns: PhantomData<T>,
}

// SAFETY: a lease gives shared access to a `T: Sync` and its drop may run on
// any thread (the counter it decrements is atomic).
unsafe impl<T: ?Sized + Send + Sync + 'static> Send for Lease<T> {}
// SAFETY: `&Lease<T>` only gives `&T`, and `T: Sync`.
unsafe impl<T: ?Sized + Send + Sync + 'static> Sync for Lease<T> {}

impl<T: ?Sized + Send + Sync + 'static> Lease<T> {
    #[inline(always)]
    pub(crate) fn new(acquired: Acquired<T>) -> Self {
        let Acquired { record, stripe, value, generation, ticket } = acquired;
        Self { record, value, stripe, generation, ticket, _owns: PhantomData }
    }

    /// The generation this lease captured (1 for the slot's first value,
    /// incremented by each [`Slot::replace`](super::Slot::replace)).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The generation record this lease counts on.
    #[inline]
    pub(crate) fn record(&self) -> NonNull<Record<T>> {
        self.record
    }

    /// Whether the host asked the operations on this generation to stop
    /// ([`Drain::cancel`](super::Drain::cancel), the *cancel* rung of a drain
    /// escalation). Cooperative plugin code checks this at convenient points
    /// and returns early; nothing is interrupted by force.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        // SAFETY: we hold a lease on `record`.
        unsafe { leased_cancelled(self.record) }
    }
}

impl<T: ?Sized + Send + Sync + 'static> Deref for Lease<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the lease keeps the generation from draining, so the value
        // (owned by the generation's `Arc<T>`) stays alive and unmoved.
        unsafe { self.value.as_ref() }
    }
}

impl<T: ?Sized + Send + Sync + 'static> Drop for Lease<T> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: this lease holds one count on `stripe` of `record` (and
        // its ticket), given up here exactly once.
        unsafe { end_lease(self.record, self.stripe, self.ticket) }
    }
}

impl<T: ?Sized + Send + Sync + fmt::Debug + 'static> fmt::Debug for Lease<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("generation", &self.generation).field("value", &&**self).finish()
    }
}
