//! [`Drain`]: the handle on a generation that a cutover retired.

use std::{
    fmt,
    future::{Future, IntoFuture},
    pin::Pin,
    ptr::NonNull,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use super::{
    fence,
    record::{complete, Ended, Record, Retiring, Shared},
    signal::DrainSignal,
    strong::Strong,
    tracking::Straggler,
};
use crate::{lifecycle::SharedLifecycle, DrainError, PluginId};

/// Reads a draining record's counters, whatever the plugin type.
trait Probe: Send + Sync {
    /// End the retirement if it still waits for its barrier (see
    /// [`Drain::pending`]); a no-op after the first call.
    fn settle(&self);
    fn in_flight(&self, signal: &DrainSignal) -> usize;
    fn stragglers(&self, signal: &DrainSignal) -> Vec<Straggler>;
    fn plugin(&self) -> &PluginId;
}

struct RecordProbe<T: ?Sized + Send + Sync + 'static> {
    shared: Strong<Shared<T>>,
    record: NonNull<Record<T>>,
    /// On the asymmetric-fence path, the second half of the retirement
    /// (the barrier, then the sweep), left by the cutover to the handle's
    /// first use or drop; `None` when the cutover ended it.
    pending: Option<Pending<T>>,
}

/// A retirement that waits for its barrier. Only the asymmetric-fence path
/// makes one, and loom models run only the atomic path, so these are `std`
/// types even under loom.
struct Pending<T: ?Sized + 'static> {
    /// Set once the retirement has ended: the fast path of `settle`.
    ended: std::sync::atomic::AtomicBool,
    /// Taken by the one thread that ends it; the others wait on the lock,
    /// so that no counter is read before the sweep.
    retiring: std::sync::Mutex<Option<Retiring<T>>>,
}

impl<T: ?Sized + Send + Sync + 'static> RecordProbe<T> {
    fn settle_pending(&self) {
        use std::sync::atomic::Ordering;
        let Some(pending) = &self.pending else { return };
        if pending.ended.load(Ordering::Acquire) {
            return;
        }
        // The lock is held across the barrier and the sweep (no user code
        // runs there) but not across the completion, which drops the old
        // value and runs `on_drained` callbacks.
        let mut retiring = pending.retiring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ended = retiring.take().map(|retiring| {
            fence::barrier();
            self.shared.end_retire_leaving_completion(retiring).2
        });
        pending.ended.store(true, Ordering::Release);
        drop(retiring);
        if ended == Some(Ended::Drained) {
            // SAFETY: this call brought the count to zero (it took the
            // retirement, which only one caller can), and `self.shared`
            // keeps the record allocated.
            unsafe { complete(self.record) };
        }
    }
}

impl<T: ?Sized + Send + Sync + 'static> Drop for RecordProbe<T> {
    /// The last handle dropped ends a retirement nobody looked at, so that
    /// the generation drains (and its value is dropped) without one.
    fn drop(&mut self) {
        self.settle_pending();
    }
}

// SAFETY: the probe only reads atomics of a record kept allocated by
// `shared`, and a pending retirement is ended under its lock, once.
unsafe impl<T: ?Sized + Send + Sync + 'static> Send for RecordProbe<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send + Sync + 'static> Sync for RecordProbe<T> {}

impl<T: ?Sized + Send + Sync + 'static> Probe for RecordProbe<T> {
    fn settle(&self) {
        self.settle_pending();
    }

    fn in_flight(&self, signal: &DrainSignal) -> usize {
        self.shared.in_flight(self.record, signal)
    }

    fn stragglers(&self, signal: &DrainSignal) -> Vec<Straggler> {
        self.shared.stragglers(self.record, signal)
    }

    fn plugin(&self) -> &PluginId {
        &self.shared.id
    }
}

/// The handle on a generation retired by a cutover, returned by
/// [`Slot::replace`](super::Slot::replace).
///
/// The generation is already `Draining` when you get this: no new lease sees
/// it, and leases taken before the cutover keep it alive. When the last of
/// them is dropped, the generation's lifecycle becomes `Removed`, its value
/// is dropped (on the thread that dropped that last lease, or inside
/// `replace` if nothing was in flight), and then every waiter is woken:
/// blocked [`wait_timeout`](Self::wait_timeout) callers, pending
/// [`drained`](Self::drained) futures, and [`on_drained`](Self::on_drained)
/// callbacks. So once a wait returns `Ok`, the old value has been dropped
/// (unless the host holds another `Arc` to it).
///
/// Notification is by a condition variable and wakers, never by polling.
/// Dropping a `Drain` does not stop or block the drain; it just gives up the
/// handle. It is `Clone`: every clone watches the same generation.
///
/// # On the asymmetric-fence path
///
/// On a slot with [`LeasePath::AsymmetricFence`](super::LeasePath::AsymmetricFence),
/// `replace` leaves the last step of the cutover to this handle: one
/// process-wide barrier (`membarrier`, some microseconds), then the sweep
/// of the old generation's counters. It runs once, on the first call that
/// needs the drain's state ([`in_flight`](Self::in_flight),
/// [`stragglers`](Self::stragglers), [`is_drained`](Self::is_drained),
/// [`lifecycle`](Self::lifecycle), [`drained_at`](Self::drained_at),
/// [`finalize`](Self::finalize), a wait, [`drained`](Self::drained),
/// [`on_drained`](Self::on_drained), `Debug`) on any clone, or when the last
/// clone is dropped; concurrent first calls wait for the one that runs it,
/// so none reads a count before the sweep. Until then the generation cannot
/// finish draining: a `replace` (or a registry's `remove`) with nothing in
/// flight drops the old value there, not inside the call. This is what keeps the barrier out of the
/// cutover: when `replace` returns, new leases already see the new
/// generation; only learning that the old one has drained needs the
/// barrier. Keep a `Drain` you never look at and the old value stays
/// alive with it.
#[derive(Clone)]
pub struct Drain {
    signal: Arc<DrainSignal>,
    probe: Arc<dyn Probe>,
}

impl Drain {
    pub(crate) fn new<T: ?Sized + Send + Sync + 'static>(
        signal: Arc<DrainSignal>,
        shared: Strong<Shared<T>>,
        record: NonNull<Record<T>>,
    ) -> Self {
        Self { signal, probe: Arc::new(RecordProbe { shared, record, pending: None }) }
    }

    /// The drain of a retirement begun on `shared` (a cutover or a close):
    /// its second half is left to the handle where the slot leaves its
    /// barrier to the drain ([`pending`](Self::pending): the
    /// asymmetric-fence path), and ended here otherwise.
    pub(crate) fn of_retirement<T: ?Sized + Send + Sync + 'static>(
        shared: Strong<Shared<T>>,
        retiring: Retiring<T>,
    ) -> Self {
        if shared.leaves_barrier_to_drain() {
            return Self::pending(shared, retiring);
        }
        let (signal, record) = shared.finish_retiring(retiring);
        Self::new(signal, shared, record)
    }

    /// The drain of a retirement whose second half (the process-wide
    /// barrier, then the sweep of the counters) is left to the handle: it
    /// runs on the first call that needs the drain's state, or when the
    /// last clone is dropped. This keeps the barrier out of the cutover on
    /// the asymmetric-fence path (issue 14, item 3): the new generation is
    /// visible when `replace` returns, and only learning whether the old
    /// one has drained needs the barrier.
    fn pending<T: ?Sized + Send + Sync + 'static>(shared: Strong<Shared<T>>, retiring: Retiring<T>) -> Self {
        let signal = Arc::clone(retiring.signal());
        let record = retiring.record();
        let pending = Pending {
            ended: std::sync::atomic::AtomicBool::new(false),
            retiring: std::sync::Mutex::new(Some(retiring)),
        };
        Self { signal, probe: Arc::new(RecordProbe { shared, record, pending: Some(pending) }) }
    }

    /// The plugin whose generation this is.
    pub fn plugin(&self) -> &PluginId {
        self.probe.plugin()
    }

    /// The generation being drained.
    pub fn generation(&self) -> u64 {
        self.signal.generation
    }

    /// How many operations are still in flight on the generation (a snapshot:
    /// it may already be lower when you read it). 0 once drained.
    pub fn in_flight(&self) -> usize {
        self.probe.settle();
        self.probe.in_flight(&self.signal)
    }

    /// The operations this drain is waiting for, oldest first, with their
    /// ages and thread names: only those whose leases were taken while
    /// straggler tracking was on ([`Slot::set_tracking`](super::Slot::set_tracking));
    /// empty once drained. [`in_flight`](Self::in_flight) counts them all.
    pub fn stragglers(&self) -> Vec<Straggler> {
        self.probe.settle();
        self.probe.stragglers(&self.signal)
    }

    /// Whether the drain has completed.
    pub fn is_drained(&self) -> bool {
        self.probe.settle();
        self.signal.is_done()
    }

    /// The old generation's lifecycle: `Draining` until drained, then
    /// `Removed`.
    pub fn lifecycle(&self) -> &SharedLifecycle {
        self.probe.settle();
        self.signal.fence.old_lifecycle()
    }

    /// Finalize the generation's lifecycle to `Removed` by hand, after its
    /// drain (for generations retired with [`Finalize::Manual`](super::Finalize::Manual);
    /// idempotent, and a no-op success for those finalized on drain).
    ///
    /// # Errors
    /// [`DrainError::NotDrained`] if operations are still in flight.
    pub fn finalize(&self) -> Result<(), DrainError> {
        if !self.is_drained() {
            return Err(DrainError::NotDrained { current: self.lifecycle().state() });
        }
        self.signal.fence.try_finalize()
    }

    /// When the cutover retired this generation.
    pub fn cutover_at(&self) -> Instant {
        self.signal.cutover_at().unwrap_or_else(|| self.signal.activated_at.instant())
    }

    /// When the retired generation became current.
    pub fn lifecycle_activated_at(&self) -> Instant {
        self.signal.activated_at.instant()
    }

    /// When the drain completed, if it has.
    pub fn drained_at(&self) -> Option<Instant> {
        self.probe.settle();
        self.signal.drained_at()
    }

    /// Block until the drain completes or `timeout` elapses.
    ///
    /// # Errors
    /// [`DrainError::StillDraining`] with the generation, the number of
    /// operations still in flight and the time waited, if the timeout elapsed
    /// first. The drain goes on; you may wait again, [`cancel`](Self::cancel),
    /// or escalate.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), DrainError> {
        self.probe.settle();
        let start = Instant::now();
        if self.signal.wait_timeout(timeout) {
            Ok(())
        } else {
            Err(DrainError::StillDraining {
                generation: self.generation(),
                in_flight: self.in_flight(),
                waited: start.elapsed(),
            })
        }
    }

    /// Block until the drain completes, however long that takes.
    pub fn wait(&self) {
        self.probe.settle();
        while !self.signal.wait_timeout(Duration::from_secs(3600)) {}
    }

    /// A future that resolves when the drain completes. It needs no
    /// particular async runtime; any number of futures (and clones of this
    /// handle) may wait at once and all are woken.
    pub fn drained(&self) -> Drained {
        self.probe.settle();
        Drained { signal: Arc::clone(&self.signal) }
    }

    /// Run `f` once the drain completes: on the thread that completes it, or
    /// right now on this thread if it already has. Keep `f` short: it may run
    /// on a caller's thread as its last lease is dropped.
    pub fn on_drained(&self, f: impl FnOnce() + Send + 'static) {
        self.probe.settle();
        self.signal.on_done(Box::new(f));
    }

    /// Ask the operations still in flight on this generation to stop: their
    /// leases report [`Lease::is_cancelled`](super::Lease::is_cancelled). Only
    /// cooperative code notices; nothing is interrupted by force.
    pub fn cancel(&self) {
        self.signal.cancel();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.signal.is_cancelled()
    }
}

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("plugin", self.plugin())
            .field("generation", &self.generation())
            .field("in_flight", &self.in_flight())
            .field("drained", &self.is_drained())
            .finish()
    }
}

/// A future that resolves when a generation has drained; see
/// [`Drain::drained`]. `Send`, `Unpin`, runtime-agnostic.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Drained {
    signal: Arc<DrainSignal>,
}

impl Future for Drained {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.poll_done(cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl IntoFuture for Drain {
    type Output = ();
    type IntoFuture = Drained;

    /// `drain.await` waits for the drain, like [`Drain::drained`].
    fn into_future(self) -> Drained {
        self.drained()
    }
}
