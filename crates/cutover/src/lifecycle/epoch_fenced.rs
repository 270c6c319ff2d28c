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
/// 4. [`finalize`](Self::finalize): `Draining → Removed` (from any state,
///    in fact: see below).
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
/// # `finalize` and `try_finalize`
///
/// **finalize is the seed's; try_finalize refuses unless drained.**
///
/// * [`finalize`](Self::finalize) does what the seed documents: it moves the
///   lifecycle to `Removed` from whatever state it is in, in one atomic
///   transition, and is idempotent at `Removed`. Code that calls it after a
///   `wait_for_drain` timeout, as its forced-removal path, removes the
///   plugin, as it did with the original. When it removes a plugin that was
///   never shown drained, it logs a `warn` event naming the plugin and the
///   `strong_count` it saw.
/// * [`try_finalize`](Self::try_finalize) is the strict variant for new code:
///   it removes only a `Draining` plugin shown drained, and otherwise says
///   why not ([`DrainError::NotDraining`], [`DrainError::NotDrained`]),
///   leaving the state unchanged.
///
/// A plugin is *shown drained* by a `wait_for_drain` that succeeded **after
/// the drain began** (it saw the lifecycle `Draining` or `Removed` before it
/// saw the count at or under its threshold; a success while the plugin was
/// still `Active` shows nothing, as new operations could still capture it),
/// or when this driver's handle is the only one left. A successful
/// `begin_drain` starts a new drain and forgets any earlier showing.
///
/// Safety does not depend on any of this: the lease-based API below never
/// drops a generation's value while an operation holds it, whatever state
/// its lifecycle is put in. `finalize` only moves a state.
///
/// # What is fixed, and what is not
///
/// * Every transition is a single atomic operation: of N reloads racing
///   `begin_drain` on one `Active` plugin, exactly one gets `Ok` and the
///   others get [`DrainError::NotActive`] with `current: Draining`; a
///   `begin_drain` racing a `finalize` ends `Removed` whichever comes first
///   (the `begin_drain` then fails with `current: Removed`).
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
/// an `EpochFencedReload` of its own: `begin_drain` at the cutover, and,
/// only once the generation's lease count has reached zero, a drain shown and
/// `finalize` (or, with [`Finalize::Manual`](crate::Finalize::Manual), the
/// strict `try_finalize` when the host calls [`Drain::finalize`](crate::Drain::finalize));
/// [`Drain::lifecycle`](crate::Drain::lifecycle) shows that lifecycle.
///
/// The driver is synchronous, so it can be called from any context; for
/// long drains in async code, prefer [`Drain::drained`](crate::Drain::drained).
#[derive(Debug)]
pub struct EpochFencedReload {
    old: Arc<PluginLifecycle>,
    /// Set once the current drain has been shown complete (see "shown
    /// drained" above); cleared by a successful `begin_drain`.
    drained: AtomicBool,
}

impl EpochFencedReload {
    /// Construct a driver for an old-plugin lifecycle.
    pub fn new(old: Arc<PluginLifecycle>) -> Self {
        Self { old, drained: AtomicBool::new(false) }
    }

    /// Begin draining the old plugin: `Active → Draining`, as one
    /// compare-and-swap. A drain shown before this one began no longer
    /// counts.
    ///
    /// # Errors
    /// [`DrainError::NotActive`] with the state found if the old plugin was
    /// not `Active` (never activated, finalized, or another reload is already
    /// draining it); the state is left unchanged. The caller can retry or
    /// bail out.
    pub fn begin_drain(&self) -> Result<(), DrainError> {
        self.old
            .compare_and_set(LifecycleState::Active, LifecycleState::Draining)
            .map_err(|current| DrainError::NotActive { current })?;
        // A `wait_for_drain` racing this store may have shown the new drain
        // already; forgetting that is conservative (`try_finalize` refuses
        // until it is shown again), never the other way round.
        self.drained.store(false, Ordering::Release);
        Ok(())
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
    /// As in the seed, it returns `Ok` in any state; it *shows the plugin
    /// drained* (for [`try_finalize`](Self::try_finalize), and to keep
    /// [`finalize`](Self::finalize) from warning) only if it saw the state
    /// `Draining` or `Removed` before it saw the count: before the drain
    /// began, new operations could still capture the plugin after the look.
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
            // The state first (acquire): a clone taken while the plugin was
            // still `Active` happens before the transition we see, so the
            // count read after it includes that clone.
            let draining = self.old.is_winding_down();
            let strong_count = Arc::strong_count(&self.old);
            if strong_count <= threshold {
                if draining {
                    self.drained.store(true, Ordering::Release);
                }
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

    /// Finalize the drain: advance to `Removed`, as the seed documents.
    ///
    /// Typically called only after [`wait_for_drain`](Self::wait_for_drain)
    /// succeeds. Moves the lifecycle to `Removed` from **any** state, in one
    /// atomic transition (which emits the lifecycle's `tracing` transition
    /// event), and is safe to call multiple times (idempotent at `Removed`).
    ///
    /// If the plugin was never shown drained (see the type-level docs) and
    /// other handles to its lifecycle remain, it still removes it, and logs
    /// a `warn` event on the target `cutover::lifecycle` with the fields
    /// `plugin`, `from` (the state it left) and `strong_count` (the
    /// references to the lifecycle it saw, this driver's included): operations
    /// may still be running on a plugin that is now `Removed`. Use
    /// [`try_finalize`](Self::try_finalize) to refuse instead.
    pub fn finalize(&self) {
        let from = self.old.set(LifecycleState::Removed);
        if from == LifecycleState::Removed {
            return;
        }
        let strong_count = Arc::strong_count(&self.old);
        let shown = strong_count == 1 || (from == LifecycleState::Draining && self.drained.load(Ordering::Acquire));
        if !shown {
            tracing::warn!(target: "cutover::lifecycle", plugin = %self.old.plugin(), %from, strong_count,
                "finalize removed a plugin never shown drained; {strong_count} reference(s) to its lifecycle remained, so operations may still be running on it");
        }
    }

    /// Finalize only a drained plugin: `Draining → Removed` if the plugin was
    /// shown drained (see the type-level docs), `Ok` at once if it is already
    /// `Removed`; otherwise refuse, leaving the state unchanged.
    ///
    /// # Errors
    /// * [`DrainError::NotDraining`] with the state found, if the plugin is
    ///   not `Draining` or `Removed` (its drain has not begun);
    /// * [`DrainError::NotDrained`] if it is `Draining` but has not been shown
    ///   drained: call `wait_for_drain` first;
    /// * [`DrainError::UnexpectedTransition`] if another party moved the
    ///   state to something else than `Removed` while finalizing.
    pub fn try_finalize(&self) -> Result<(), DrainError> {
        match self.old.state() {
            LifecycleState::Removed => Ok(()),
            LifecycleState::Draining => {
                if !self.drained.load(Ordering::Acquire) && Arc::strong_count(&self.old) > 1 {
                    return Err(DrainError::NotDrained { current: LifecycleState::Draining });
                }
                match self.old.compare_and_set(LifecycleState::Draining, LifecycleState::Removed) {
                    Ok(()) | Err(LifecycleState::Removed) => Ok(()),
                    Err(reached) => Err(DrainError::UnexpectedTransition { reached }),
                }
            }
            current => Err(DrainError::NotDraining { current }),
        }
    }

    /// Record that the current drain completed, as established by other means
    /// (a slot's lease count reaching zero, after `begin_drain`).
    pub(crate) fn mark_drained(&self) {
        self.drained.store(true, Ordering::Release);
    }

    /// Shared access to the old plugin's lifecycle (e.g., for observability
    /// hooks reading the current state).
    pub fn old_lifecycle(&self) -> &Arc<PluginLifecycle> {
        &self.old
    }
}
