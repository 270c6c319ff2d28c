//! [`EpochFencedReload`]: the seed's reload driver, made atomic.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use super::{DrainError, LifecycleState, PluginLifecycle};
use crate::sync::AtomicBool;

/// Orchestrator for an atomic plugin reload: the epoch-fenced cutover of the
/// original framework, with its faults fixed.
///
/// The reload protocol, as the seed documents it:
///
/// 1. [`begin_drain`](Self::begin_drain) on the old plugin's lifecycle:
///    `Active → Draining`, as one compare-and-swap.
/// 2. The host loads the new plugin and walks its lifecycle
///    `Loaded → Linked → Initialized → Active`.
/// 3. [`wait_for_drain`](Self::wait_for_drain): poll
///    `Arc::strong_count` of the old lifecycle until only the framework's
///    bookkeeping references remain.
/// 4. [`finalize`](Self::finalize): `Draining → Removed`.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use cutover::{EpochFencedReload, LifecycleState, PluginId, PluginLifecycle};
///
/// let old = Arc::new(PluginLifecycle::with_state(PluginId::new("math"), LifecycleState::Active));
/// let in_flight = Arc::clone(&old); // an operation that captured the old plugin
/// let driver = EpochFencedReload::new(Arc::clone(&old));
///
/// driver.begin_drain().unwrap(); // 1. Active → Draining
///
/// let new = PluginLifecycle::new(PluginId::new("math")); // 2. load the new one
/// while new.advance() != LifecycleState::Active {}
///
/// drop(in_flight); // the operation finishes
/// // 3. `old` (ours) and the driver's own handle remain.
/// driver.wait_for_drain(2, Duration::from_millis(1), Duration::from_secs(5)).unwrap();
/// driver.finalize(); // 4. Draining → Removed
/// assert_eq!(old.state(), LifecycleState::Removed);
/// ```
///
/// # What is fixed, and what is not
///
/// * Every transition is a single compare-and-swap: of N reloads racing
///   `begin_drain` on one `Active` plugin, exactly one gets `Ok` and the
///   others get [`DrainError::NotActive`] with `current: Draining`.
/// * [`finalize`](Self::finalize) removes only a plugin shown to be drained
///   (by a successful `wait_for_drain`, or because nothing but this driver
///   holds the lifecycle any more). The original removed it regardless.
///
/// The API itself keeps two limits of the original, on purpose, so that code
/// written against it keeps working:
///
/// * it **polls**: `wait_for_drain` sleeps `poll_interval` between looks, so
///   it notices the end of a drain up to one interval late, and burns wake-ups
///   while it waits;
/// * it **counts references to the lifecycle handle**, which is only right if
///   every in-flight operation holds a clone of that `Arc`. Operations that
///   hold the plugin some other way are invisible to it.
///
/// The lease-based API has neither limit: [`Slot::lease`](crate::Slot::lease)
/// counts exactly the operations in flight on each generation, and
/// [`Slot::replace`](crate::Slot::replace) returns a [`Drain`](crate::Drain)
/// that is *notified* when the last of them ends (blocking, with a timeout,
/// or as a `Future`). A slot drives each old generation's lifecycle through
/// an `EpochFencedReload` of its own: `begin_drain` at the cutover and
/// `finalize` when the drain completes; [`Drain::lifecycle`](crate::Drain::lifecycle)
/// shows that lifecycle.
///
/// The driver is synchronous, so it can be called from any context; for
/// long drains in async code, prefer [`Drain::drained`](crate::Drain::drained).
#[derive(Debug)]
pub struct EpochFencedReload {
    old: Arc<PluginLifecycle>,
    /// Set once the old plugin has been shown drained.
    drained: AtomicBool,
}

impl EpochFencedReload {
    /// Construct a driver for an old-plugin lifecycle.
    pub fn new(old: Arc<PluginLifecycle>) -> Self {
        Self { old, drained: AtomicBool::new(false) }
    }

    /// Begin draining the old plugin: `Active → Draining`, as one
    /// compare-and-swap.
    ///
    /// # Errors
    /// [`DrainError::NotActive`] with the state found if the old plugin was
    /// not `Active` (never activated, or another reload is already draining
    /// it); the state is left unchanged. The caller can retry or bail out.
    pub fn begin_drain(&self) -> Result<(), DrainError> {
        self.old
            .compare_and_set(LifecycleState::Active, LifecycleState::Draining)
            .map_err(|current| DrainError::NotActive { current })
    }

    /// Wait until the old plugin has been fully drained.
    ///
    /// Polls `Arc::strong_count` of the old lifecycle every `poll_interval`.
    /// Returns `Ok` as soon as the count is at most `threshold` (the number of
    /// bookkeeping `Arc`s the framework holds: typically 1, this driver's own;
    /// 2 if the host also keeps a side reference), or
    /// [`DrainError::Timeout`] with the last count seen once `max_wait` has
    /// elapsed. The count is checked at least once, even with a zero
    /// `max_wait`; a zero `poll_interval` yields the thread between looks.
    ///
    /// See the type-level docs for why [`Drain::wait_timeout`](crate::Drain::wait_timeout)
    /// is the better tool for new code.
    ///
    /// # Errors
    /// [`DrainError::Timeout`] if the count did not drop to `threshold`
    /// within `max_wait`.
    pub fn wait_for_drain(
        &self,
        threshold: usize,
        poll_interval: Duration,
        max_wait: Duration,
    ) -> Result<(), DrainError> {
        let start = Instant::now();
        loop {
            let strong_count = Arc::strong_count(&self.old);
            if strong_count <= threshold {
                self.drained.store(true, Ordering::Release);
                return Ok(());
            }
            let waited = start.elapsed();
            if waited >= max_wait {
                return Err(DrainError::Timeout { waited, strong_count });
            }
            if poll_interval.is_zero() {
                std::thread::yield_now();
            } else {
                std::thread::sleep(poll_interval.min(max_wait - waited));
            }
        }
    }

    /// Finalize the drain: `Draining → Removed`.
    ///
    /// Typically called after [`wait_for_drain`](Self::wait_for_drain)
    /// succeeds. Safe to call multiple times (idempotent at `Removed`).
    /// Unlike the original, it never removes a plugin that has not been shown
    /// drained: in any other state, or while the drain is unconfirmed, it
    /// leaves the state as it is and logs a warning. Use
    /// [`try_finalize`](Self::try_finalize) to be told why.
    pub fn finalize(&self) {
        if let Err(e) = self.try_finalize() {
            tracing::warn!(target: "cutover::lifecycle", plugin = %self.old.plugin(), error = %e, "finalize refused");
        }
    }

    /// [`finalize`](Self::finalize), reporting a refusal.
    ///
    /// The plugin counts as drained if `wait_for_drain` succeeded, or if this
    /// driver's handle is the only one left.
    ///
    /// # Errors
    /// [`DrainError::NotDrained`] with the state found when the plugin is not
    /// `Draining`/`Removed`, or is `Draining` but not shown drained;
    /// [`DrainError::UnexpectedTransition`] if another party moved the state
    /// while finalizing.
    pub fn try_finalize(&self) -> Result<(), DrainError> {
        match self.old.state() {
            LifecycleState::Removed => Ok(()),
            LifecycleState::Draining if self.drained.load(Ordering::Acquire) || Arc::strong_count(&self.old) == 1 => {
                match self.old.compare_and_set(LifecycleState::Draining, LifecycleState::Removed) {
                    Ok(()) | Err(LifecycleState::Removed) => Ok(()),
                    Err(reached) => Err(DrainError::UnexpectedTransition { reached }),
                }
            }
            current => Err(DrainError::NotDrained { current }),
        }
    }

    /// Finalize a drain whose completion the caller has established by other
    /// means (the slot's lease count reaching zero).
    pub(crate) fn finalize_drained(&self) {
        self.mark_drained();
        self.finalize();
    }

    /// Record that the old plugin has drained, without finalizing.
    pub(crate) fn mark_drained(&self) {
        self.drained.store(true, Ordering::Release);
    }

    /// Shared access to the old plugin's lifecycle (e.g., for observability
    /// hooks reading the current state).
    pub fn old_lifecycle(&self) -> &Arc<PluginLifecycle> {
        &self.old
    }
}
