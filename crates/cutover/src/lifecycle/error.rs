//! Errors of the drain protocol.

use std::time::Duration;

use super::LifecycleState;

/// Why a drain step did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DrainError {
    /// `begin_drain` found the plugin in another state than `Active`: it was
    /// never activated, or another reload already started draining it.
    #[error("cannot begin draining: the plugin is {current}, not Active; if another reload is already draining it, wait for that reload instead of starting a second one")]
    NotActive {
        /// The state the plugin was found in.
        current: LifecycleState,
    },
    /// A transition ended in a state the protocol did not expect.
    #[error("lifecycle transition reached {reached} unexpectedly; another party changed the state concurrently: re-read the state and retry or abort")]
    UnexpectedTransition {
        /// The state that was reached.
        reached: LifecycleState,
    },
    /// `wait_for_drain` gave up: the old plugin's lifecycle handle was still
    /// shared when `max_wait` elapsed.
    #[error("drain timed out after {waited:?}: {strong_count} references to the old plugin's lifecycle remain; wait longer, or find and cancel the operations still holding it")]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
        /// `Arc::strong_count` of the old lifecycle when giving up.
        strong_count: usize,
    },
    /// A lease-counted generation still had operations in flight when the
    /// wait timed out (see [`Drain::wait_timeout`](crate::Drain::wait_timeout)).
    #[error("generation {generation} is still draining after {waited:?}: {in_flight} operation(s) in flight; wait longer, cancel them, or escalate")]
    StillDraining {
        /// The draining generation.
        generation: u64,
        /// Operations still in flight on it when the wait gave up.
        in_flight: usize,
        /// How long the caller waited.
        waited: Duration,
    },
    /// A strict finalize ([`EpochFencedReload::try_finalize`](super::EpochFencedReload::try_finalize),
    /// [`Drain::finalize`](crate::Drain::finalize)) was asked to remove a
    /// plugin that is draining but has not been shown drained.
    #[error("refusing to finalize: the plugin is {current} and has not been shown drained; wait for the drain first (wait_for_drain, or Drain::wait_timeout), or call finalize to force the removal")]
    NotDrained {
        /// The state the plugin was found in.
        current: LifecycleState,
    },
    /// [`EpochFencedReload::try_finalize`](super::EpochFencedReload::try_finalize)
    /// was asked to remove a plugin whose drain has not begun.
    #[error("refusing to finalize: the plugin is {current}, not Draining; begin_drain and wait_for_drain first, or call finalize to force the removal")]
    NotDraining {
        /// The state the plugin was found in.
        current: LifecycleState,
    },
}
