//! Change notifications: [`Host::subscribe`](super::Host::subscribe) and the
//! [`HostChange`]s it delivers.
//!
//! A subscriber is told about every committed change to the host's plugins:
//! an add, a reload's or a rollback's cutover, a removal. Integrations that
//! mirror the host's plugins somewhere else (a query engine's function
//! registry, a router, a cache) use it to follow the host with no action by
//! their users.
//!
//! The guarantees are stated on [`HostChange`].

use std::{
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{Arc, Weak},
};

use super::ReloadKind;
use crate::{
    sync::{lock, Mutex},
    PluginId,
};

/// A committed change to a host's plugins, as delivered to subscribers.
///
/// # Guarantees
///
/// * **After the change is visible.** A subscriber is called once the change
///   is in effect: a [`Host::lease`](super::Host::lease) taken in the
///   callback sees the new generation (or a later one); after a removal it
///   finds nothing (unless the plugin was added again since).
/// * **Before the transaction returns.** The callback runs on the thread
///   that ran the transaction, right after the cutover and *before* a
///   reload, rollback or removal waits for the old generation's drain. So
///   when `add`, `reload`, `rollback` or `remove` returns `Ok`, every
///   subscriber has been told, and a subscriber holding something that
///   keeps the old generation alive can let go of it without delaying the
///   drain.
/// * **Never under a host lock.** Callbacks may call back into the host
///   (lease, snapshot, even change another plugin). They should be quick:
///   the transaction (and so its caller) waits for them.
/// * **Panics are contained.** A panicking callback is logged (`tracing`
///   warning) and the others still run; the change stands.
/// * **Order.** Changes to one plugin are delivered in the order they were
///   committed as long as their transactions do not overlap. A reload may
///   cut over while the previous reload of the same plugin is still
///   notifying (the host releases a plugin right after its cutover), so
///   overlapping changes can be delivered concurrently and out of order. A
///   subscriber that mirrors state should therefore read the *current*
///   state from the host in its callback (it is already current there), and
///   serialize its own updates, rather than apply each event blindly.
/// * **Unsubscribing.** Dropping the [`Subscription`] stops deliveries of
///   changes committed afterwards; a call already under way on another
///   thread may still be running when the drop returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChange {
    /// The plugin that changed.
    pub plugin: PluginId,
    /// What happened: [`ReloadKind::Add`], [`ReloadKind::Reload`],
    /// [`ReloadKind::Rollback`] or [`ReloadKind::Remove`].
    pub kind: ReloadKind,
    /// The generation current before (`None` for an add).
    pub previous: Option<u64>,
    /// The generation current after (`None` for a removal).
    pub generation: Option<u64>,
}

type Callback = dyn Fn(&HostChange) + Send + Sync + 'static;

/// The subscribers of one host.
pub(super) struct Subscribers {
    inner: Mutex<List>,
}

impl Default for Subscribers {
    fn default() -> Self {
        Self { inner: Mutex::new(List::default()) }
    }
}

#[derive(Default)]
struct List {
    next_id: u64,
    callbacks: Vec<(u64, Arc<Callback>)>,
}

impl Subscribers {
    pub(super) fn subscribe(self: &Arc<Self>, callback: Arc<Callback>) -> Subscription {
        let mut list = lock(&self.inner);
        let id = list.next_id;
        list.next_id += 1;
        list.callbacks.push((id, callback));
        Subscription { subscribers: Arc::downgrade(self), id }
    }

    /// Deliver `change` to every subscriber, outside the list's lock (and
    /// the caller holds no host lock either).
    pub(super) fn notify(&self, change: &HostChange) {
        let callbacks: Vec<Arc<Callback>> = {
            let list = lock(&self.inner);
            if list.callbacks.is_empty() {
                return;
            }
            list.callbacks.iter().map(|(_, c)| Arc::clone(c)).collect()
        };
        for callback in callbacks {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| callback(change))) {
                let cause = crate::unwind::message(&*payload);
                tracing::warn!(target: "cutover::host", plugin = %change.plugin, kind = ?change.kind, %cause,
                               "change subscriber panicked");
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        lock(&self.inner).callbacks.len()
    }
}

/// A registration made by [`Host::subscribe`](super::Host::subscribe);
/// dropping it unsubscribes. It does not keep the host alive.
#[must_use = "dropping the Subscription unsubscribes at once"]
pub struct Subscription {
    subscribers: Weak<Subscribers>,
    id: u64,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(subscribers) = self.subscribers.upgrade() {
            // Take the callback out under the lock, drop it after: it may own
            // things whose drop should not run under our lock.
            let removed = {
                let mut list = lock(&subscribers.inner);
                let index = list.callbacks.iter().position(|(id, _)| *id == self.id);
                index.map(|i| list.callbacks.remove(i))
            };
            drop(removed);
        }
    }
}
