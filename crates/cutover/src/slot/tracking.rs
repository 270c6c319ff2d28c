//! Opt-in straggler tracking: with it on, every lease records when and on
//! which thread it started, so that a drain that overruns its deadline can
//! say exactly how old its oldest operation is and where it runs.
//!
//! Off by default: the per-call path then only reads one flag. On, each
//! lease also takes a short lock, reads the clock and the thread's name.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::set_once::SetOnce;
use crate::sync::{lock, Mutex};

/// One operation still in flight on a generation, as recorded by straggler
/// tracking ([`Slot::set_tracking`](super::Slot::set_tracking)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Straggler {
    /// How long ago its lease was taken.
    pub age: Duration,
    /// The name of the thread that took the lease, if it had one.
    pub thread: Option<String>,
}

#[derive(Default)]
struct Live {
    next: u64,
    /// By ticket, so in the order the leases were taken: oldest first.
    leases: BTreeMap<u64, (Instant, Option<String>)>,
}

/// The leases of one generation that were taken with tracking on.
/// Allocated at the first tracked lease: most generations never see one,
/// and each has a tracker (one null pointer until then).
#[derive(Default)]
pub(crate) struct Tracker {
    /// Set once, by the first tracked lease (see `set_once`).
    live: SetOnce<Box<Mutex<Live>>>,
}

impl Tracker {
    /// The leases' record, if a tracked lease ever made it.
    fn get(&self) -> Option<&Mutex<Live>> {
        self.live.get()
    }

    /// The leases' record, made now by the first tracked lease.
    fn get_or_make(&self) -> &Mutex<Live> {
        self.live.get_or_set(Box::default)
    }

    /// Record a lease starting now; its ticket (never 0).
    pub(crate) fn track(&self) -> u64 {
        let thread = std::thread::current().name().map(str::to_owned);
        let mut live = lock(self.get_or_make());
        live.next += 1;
        let ticket = live.next;
        live.leases.insert(ticket, (Instant::now(), thread));
        ticket
    }

    /// Forget the lease with `ticket`.
    pub(crate) fn untrack(&self, ticket: u64) {
        if let Some(live) = self.get() {
            lock(live).leases.remove(&ticket);
        }
    }

    /// The tracked leases still in flight, oldest first.
    pub(crate) fn stragglers(&self) -> Vec<Straggler> {
        let Some(live) = self.get() else { return Vec::new() };
        let now = Instant::now();
        lock(live)
            .leases
            .values()
            .map(|(since, thread)| Straggler { age: now.saturating_duration_since(*since), thread: thread.clone() })
            .collect()
    }
}
