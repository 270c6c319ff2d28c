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
//! or two requests): each builds one and offers it with a compare-and-swap
//! from empty; the loser drops its own and takes the winner's, so every
//! caller gets the same `Arc`. The one made is `Active`, which is right
//! whichever thread makes it: no transition can happen before the first
//! `Arc` exists.

use std::sync::{atomic::Ordering, Arc};

use crate::{
    lifecycle::{LifecycleState, PluginLifecycle, SharedLifecycle},
    sync::AtomicPtr,
    PluginId,
};

/// A generation's lifecycle: empty (`Active`, not yet made) or one strong
/// count of its `Arc`, from [`Arc::into_raw`].
pub(crate) struct LifecycleCell(AtomicPtr<PluginLifecycle>);

impl LifecycleCell {
    /// The lifecycle of a generation the slot made itself: `Active`, made
    /// on first request. Emits the `Initialized → Active` transition event
    /// a made-at-once lifecycle would have emitted.
    pub(crate) fn active(plugin: &PluginId) -> Self {
        PluginLifecycle::trace_transition(plugin, LifecycleState::Initialized, LifecycleState::Active);
        Self(AtomicPtr::new(std::ptr::null_mut()))
    }

    /// A lifecycle supplied by the host (already set `Active`).
    pub(crate) fn given(lifecycle: SharedLifecycle) -> Self {
        Self(AtomicPtr::new(Arc::into_raw(lifecycle).cast_mut()))
    }

    /// The generation's lifecycle, made now (`Active`, for `plugin`) if this
    /// is the first request.
    pub(crate) fn get(&self, plugin: &PluginId) -> SharedLifecycle {
        let seen = self.0.load(Ordering::Acquire);
        if let Some(shared) = Self::share(seen) {
            return shared;
        }
        let made = Arc::new(PluginLifecycle::with_state(plugin.clone(), LifecycleState::Active));
        let offered = Arc::into_raw(Arc::clone(&made)).cast_mut();
        match self.0.compare_exchange(std::ptr::null_mut(), offered, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => made,
            Err(winner) => {
                // SAFETY: `offered` came from `Arc::into_raw` just above and
                // was not published: we give its strong count back.
                drop(unsafe { Arc::from_raw(offered) });
                Self::share(winner).unwrap_or_else(|| unreachable!("a lifecycle cell is only ever filled"))
            }
        }
    }

    /// A new strong reference to the lifecycle at `ptr`, if not null.
    fn share(ptr: *mut PluginLifecycle) -> Option<SharedLifecycle> {
        if ptr.is_null() {
            return None;
        }
        // SAFETY: a non-null pointer in the cell came from `Arc::into_raw`,
        // and the cell holds that strong count until it is dropped (it is
        // never emptied before), which needs `&mut self`: the count is
        // alive while we borrow the cell.
        unsafe {
            Arc::increment_strong_count(ptr);
            Some(Arc::from_raw(ptr))
        }
    }
}

impl Drop for LifecycleCell {
    fn drop(&mut self) {
        let ptr = self.0.swap(std::ptr::null_mut(), Ordering::Acquire);
        if !ptr.is_null() {
            // SAFETY: from `Arc::into_raw` (in `given` or `get`); the cell's
            // strong count is given back once, here.
            drop(unsafe { Arc::from_raw(ptr) });
        }
    }
}
