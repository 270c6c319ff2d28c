//! [`PluginLifecycle`]: one generation's state, changed only by atomic transitions.

use std::sync::{atomic::Ordering, Arc};

use super::LifecycleState;
use crate::{sync::AtomicU8, PluginId};

/// A reference-counted lifecycle, as shared between a host, its reload
/// driver and its observability hooks.
pub type SharedLifecycle = Arc<PluginLifecycle>;

/// The lifecycle state of one plugin generation.
///
/// Every change is a single atomic operation on one byte: [`advance`] and
/// [`compare_and_set`] are compare-and-swap transitions, so when several
/// threads race to move the same lifecycle out of a state, exactly one of
/// them wins and the others see the state the winner left. (The original
/// framework loaded the state and stored the next one separately, so two
/// racing reloads could both "win".)
///
/// Each transition emits a `tracing` event at `DEBUG` level on the target
/// `cutover::lifecycle`, with the fields `plugin`, `from` and `to`.
///
/// Reads and transitions use acquire/release ordering: whatever a thread did
/// before a transition is visible to a thread that observes the new state.
///
/// [`advance`]: PluginLifecycle::advance
/// [`compare_and_set`]: PluginLifecycle::compare_and_set
#[derive(Debug)]
pub struct PluginLifecycle {
    plugin: PluginId,
    state: AtomicU8,
}

impl PluginLifecycle {
    /// A new lifecycle for `plugin`, in state [`LifecycleState::Loaded`].
    pub fn new(plugin: PluginId) -> Self {
        Self::with_state(plugin, LifecycleState::Loaded)
    }

    /// A new lifecycle for `plugin` starting in `state`.
    pub fn with_state(plugin: PluginId, state: LifecycleState) -> Self {
        Self { plugin, state: AtomicU8::new(state as u8) }
    }

    /// The current state.
    pub fn state(&self) -> LifecycleState {
        LifecycleState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The plugin this lifecycle belongs to.
    pub fn plugin(&self) -> &PluginId {
        &self.plugin
    }

    /// Move one step forward (`Removed` stays `Removed`) and return the state
    /// reached. The step is a compare-and-swap from the state read, retried if
    /// another thread moved the state in between, so concurrent calls each
    /// advance exactly one step.
    pub fn advance(&self) -> LifecycleState {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let from = LifecycleState::from_u8(current);
            let to = from.next();
            if from == to {
                return to;
            }
            match self.state.compare_exchange_weak(current, to as u8, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.trace(from, to);
                    return to;
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Move from `from` to `to` in one compare-and-swap.
    ///
    /// # Errors
    /// Returns the state found, leaving it unchanged, if it was not `from`.
    pub fn compare_and_set(&self, from: LifecycleState, to: LifecycleState) -> Result<(), LifecycleState> {
        match self.state.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                self.trace(from, to);
                Ok(())
            }
            Err(seen) => Err(LifecycleState::from_u8(seen)),
        }
    }

    /// Set the state unconditionally (an atomic swap) and return the state it
    /// replaced. Meant for hosts restoring or overriding state; protocol code
    /// uses [`compare_and_set`](Self::compare_and_set).
    pub fn set(&self, state: LifecycleState) -> LifecycleState {
        let from = LifecycleState::from_u8(self.state.swap(state as u8, Ordering::AcqRel));
        if from != state {
            self.trace(from, state);
        }
        from
    }

    /// Whether new operations may start here (state `Active`).
    pub fn is_active(&self) -> bool {
        self.state() == LifecycleState::Active
    }

    /// Whether the generation is on its way out (`Draining` or `Removed`).
    pub fn is_winding_down(&self) -> bool {
        matches!(self.state(), LifecycleState::Draining | LifecycleState::Removed)
    }

    fn trace(&self, from: LifecycleState, to: LifecycleState) {
        Self::trace_transition(&self.plugin, from, to);
    }

    /// The `tracing` event of a transition of `plugin`'s lifecycle (also
    /// emitted by slots for the lifecycles they make only on request).
    pub(crate) fn trace_transition(plugin: &PluginId, from: LifecycleState, to: LifecycleState) {
        tracing::debug!(target: "cutover::lifecycle", plugin = %plugin, %from, %to, "lifecycle transition");
    }
}
