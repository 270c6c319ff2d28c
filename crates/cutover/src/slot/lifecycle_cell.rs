//! A generation's lifecycle, allocated only when someone needs it.
//!
//! A generation the slot made itself ([`Slot::new`](super::Slot::new),
//! [`Slot::replace`](super::Slot::replace)) is `Active` from its cutover
//! until its retirement, and nobody can change that state before they hold
//! its [`SharedLifecycle`]. So the cell starts empty, meaning "`Active`, not
//! yet shared", and the `Arc` is made on the first request: a host asking
//! for it ([`Slot::lifecycle`](super::Slot::lifecycle)) or the generation's
//! retirement (whose [`EpochFencedReload`](crate::EpochFencedReload) moves
//! it to `Draining`). Most generations are never retired while their plugin
//! lives, so a registry of many plugins keeps one allocation (48 bytes with
//! the allocator's header) fewer per plugin. A lifecycle the host supplied
//! ([`Slot::with_lifecycle`](super::Slot::with_lifecycle)) is stored as
//! given.
//!
//! Two threads may make it at once (a host's request racing the retirement,
//! or two requests): the cell is a [`SetOnce`], so the first to set it wins
//! and every caller gets the same `Arc`. The one made is `Active`, which is
//! right whichever thread makes it: no transition can happen before the
//! first `Arc` exists.

use std::sync::Arc;

use super::set_once::SetOnce;
use crate::{
    lifecycle::{LifecycleState, PluginLifecycle, SharedLifecycle},
    PluginId,
};

/// A generation's lifecycle: empty (`Active`, not yet made) or one strong
/// count of its `Arc`.
pub(crate) struct LifecycleCell(SetOnce<SharedLifecycle>);

impl LifecycleCell {
    /// The lifecycle of a generation the slot made itself: `Active`, made
    /// on first request. Emits the `Initialized → Active` transition event
    /// a made-at-once lifecycle would have emitted.
    pub(crate) fn active(plugin: &PluginId) -> Self {
        PluginLifecycle::trace_transition(plugin, LifecycleState::Initialized, LifecycleState::Active);
        Self(SetOnce::empty())
    }

    /// A lifecycle supplied by the host (already set `Active`).
    pub(crate) fn given(lifecycle: SharedLifecycle) -> Self {
        Self(SetOnce::new(lifecycle))
    }

    /// The generation's lifecycle, made now (`Active`, for `plugin`) if this
    /// is the first request.
    pub(crate) fn get(&self, plugin: &PluginId) -> SharedLifecycle {
        self.0.cloned_or_set(|| Arc::new(PluginLifecycle::with_state(plugin.clone(), LifecycleState::Active)))
    }
}
