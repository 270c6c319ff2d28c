//! Model checks of the cutover protocol with `loom`.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=4 cargo test -p cutover --test loom --release`
#![cfg(loom)]

use std::sync::Arc as StdArc;

use cutover::{DrainError, EpochFencedReload, LifecycleState, PluginId, PluginLifecycle, Slot};
use loom::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
};

/// A plugin value that knows whether it was dropped, and counts drops.
struct Value {
    generation: u64,
    dropped: AtomicBool,
    drops: Arc<AtomicUsize>,
}

impl Value {
    fn new(generation: u64, drops: &Arc<AtomicUsize>) -> StdArc<Self> {
        StdArc::new(Self { generation, dropped: AtomicBool::new(false), drops: drops.clone() })
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        assert!(!self.dropped.swap(true, Ordering::SeqCst), "value dropped twice");
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn id() -> PluginId {
    PluginId::new("p")
}

#[test]
fn racing_begin_drain_has_exactly_one_winner() {
    loom::model(|| {
        let lifecycle = StdArc::new(PluginLifecycle::with_state(id(), LifecycleState::Active));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let driver = EpochFencedReload::new(StdArc::clone(&lifecycle));
                thread::spawn(move || driver.begin_drain())
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(results.iter().any(|r| *r == Err(DrainError::NotActive { current: LifecycleState::Draining })));
        assert_eq!(lifecycle.state(), LifecycleState::Draining);
    });
}

#[test]
fn racing_advance_steps_once_each() {
    loom::model(|| {
        let lifecycle = StdArc::new(PluginLifecycle::new(id()));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let lifecycle = StdArc::clone(&lifecycle);
                thread::spawn(move || lifecycle.advance())
            })
            .collect();
        let mut reached: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        reached.sort();
        assert_eq!(reached, [LifecycleState::Linked, LifecycleState::Initialized]);
    });
}

/// A lease racing a replace: it sees one generation or the other, its value
/// is alive while held, the old value is dropped exactly once after the
/// lease is gone, and a lease taken after `replace` returned is new.
#[test]
fn lease_races_replace() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Slot::new(id(), Value::new(1, &drops)));
        let reader = {
            let slot = slot.clone();
            thread::spawn(move || {
                let lease = slot.lease();
                assert!(!lease.dropped.load(Ordering::SeqCst), "use after free");
                assert_eq!(lease.generation, lease.generation());
                lease.generation()
            })
        };
        let drain = slot.replace(Value::new(2, &drops));
        let after = slot.lease();
        assert_eq!(after.generation(), 2, "a lease after replace returned sees the new generation");
        drop(after);
        let seen = reader.join().unwrap();
        assert!(seen == 1 || seen == 2);
        drain.wait();
        assert!(drain.is_drained());
        assert_eq!(drain.lifecycle().state(), LifecycleState::Removed);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "old value dropped exactly once");
        drop(slot);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    });
}

/// A drain completes exactly when the last lease of its generation is gone,
/// whichever thread drops it.
#[test]
fn drain_completes_exactly_when_leases_are_gone() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Slot::new(id(), Value::new(1, &drops));
        let leases = [slot.lease(), slot.lease()];
        let drain = slot.replace(Value::new(2, &drops));
        let holders: Vec<_> = leases
            .into_iter()
            .map(|lease| {
                let drain = drain.clone();
                thread::spawn(move || {
                    assert!(!drain.is_drained(), "drained while a lease is held");
                    assert!(!lease.dropped.load(Ordering::SeqCst));
                    drop(lease);
                })
            })
            .collect();
        drain.wait();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        for h in holders {
            h.join().unwrap();
        }
        assert_eq!(drain.in_flight(), 0);
    });
}

/// A lease asks whether its generation was cancelled while another thread
/// retires that generation (which is when its drain signal is made) and
/// cancels it: the lease sees "not cancelled" or "cancelled", never
/// anything torn, sees "cancelled" once the cancel happened before its
/// check, and the generation drains once the lease is gone.
#[test]
fn cancel_check_races_the_retire_that_makes_the_signal() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Slot::new(id(), Value::new(1, &drops)));
        let lease = slot.lease();
        let cancelled = Arc::new(AtomicBool::new(false));
        let writer = {
            let (slot, drops, cancelled) = (slot.clone(), drops.clone(), cancelled.clone());
            thread::spawn(move || {
                let drain = slot.replace(Value::new(2, &drops));
                drain.cancel();
                cancelled.store(true, Ordering::SeqCst);
                drain
            })
        };
        let first = lease.is_cancelled();
        let announced = cancelled.load(Ordering::SeqCst);
        let second = lease.is_cancelled();
        assert!(!announced || second, "a cancel that happened before the check was missed");
        assert!(!first || second, "cancellation went away");
        drop(lease);
        let drain = writer.join().unwrap();
        drain.wait();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let after = slot.lease();
        assert!(!after.is_cancelled(), "the new generation is not cancelled");
        assert_eq!(after.generation(), 2);
    });
}

/// A host asking for the current lifecycle while a cutover retires it: the
/// slot makes the lifecycle only on request, so the request and the
/// retirement race to make it. Both must end with the same one: the host's
/// is the drain's (it asked before the cutover) or the new generation's.
#[test]
fn lifecycle_request_races_the_retire_that_makes_it() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Slot::new(id(), Value::new(1, &drops)));
        let writer = {
            let (slot, drops) = (slot.clone(), drops.clone());
            thread::spawn(move || slot.replace(Value::new(2, &drops)))
        };
        let asked = slot.lifecycle();
        let drain = writer.join().unwrap();
        let retired = drain.lifecycle();
        if StdArc::ptr_eq(&asked, retired) {
            assert_eq!(asked.state(), LifecycleState::Removed, "the old generation drained");
        } else {
            assert!(StdArc::ptr_eq(&asked, &slot.lifecycle()), "two lifecycles for one generation");
            assert_eq!(asked.state(), LifecycleState::Active);
        }
        assert_eq!(retired.state(), LifecycleState::Removed);
        drop(slot);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    });
}

/// Two replaces and a reader at once: distinct generations, monotonic
/// reads, every value dropped exactly once, records reused safely.
#[test]
fn two_replaces_and_a_reader() {
    bounded(2).check(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Slot::new(id(), Value::new(1, &drops)));
        let reader = {
            let slot = slot.clone();
            thread::spawn(move || {
                let first = slot.lease();
                let g1 = first.generation();
                drop(first);
                let second = slot.lease();
                assert!(second.generation() >= g1, "generation went backwards");
                assert!(!second.dropped.load(Ordering::SeqCst), "use after free");
            })
        };
        let writer = {
            let (slot, drops) = (slot.clone(), drops.clone());
            thread::spawn(move || slot.replace(Value::new(0, &drops)).generation())
        };
        let mine = slot.replace(Value::new(0, &drops)).generation();
        let theirs = writer.join().unwrap();
        assert_ne!(mine, theirs);
        reader.join().unwrap();
        drop(slot);
        assert_eq!(drops.load(Ordering::SeqCst), 3, "every value dropped exactly once");
    });
}

/// The drain future is woken by the last release on another thread.
#[test]
fn drained_future_is_woken() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Slot::new(id(), Value::new(1, &drops));
        let lease = slot.lease();
        let drain = slot.replace(Value::new(2, &drops));
        let releaser = thread::spawn(move || drop(lease));
        loom::future::block_on(drain.drained());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        releaser.join().unwrap();
    });
}

/// A model checker bounded to `preemptions` preemptions per execution,
/// unless `LOOM_MAX_PREEMPTIONS` sets the bound (as CI does).
fn bounded(preemptions: usize) -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(preemptions);
    builder
}

/// A registry holding plugin 1 (its value counted in `drops`).
fn registry_of_one(drops: &Arc<AtomicUsize>) -> Arc<cutover::Registry<u8, Value>> {
    let registry = Arc::new(cutover::Registry::new());
    registry.add(1, id(), Value::new(1, drops)).unwrap();
    registry
}

/// A lookup racing a registry removal finds the plugin (alive for as long
/// as it is leased) or nothing; it never blocks on the closed slot.
#[test]
fn registry_lookup_races_removal() {
    bounded(2).check(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let registry = registry_of_one(&drops);
        let reader = {
            let registry = registry.clone();
            thread::spawn(move || {
                if let Some(lease) = registry.lease(&1) {
                    assert!(!lease.dropped.load(Ordering::SeqCst), "use after free");
                }
            })
        };
        let drain = registry.remove(&1).unwrap();
        assert!(registry.lease(&1).is_none());
        reader.join().unwrap();
        drain.wait();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

/// A [`cutover::RegistryReader`] keeps the key map's lease between lookups
/// and checks with one load that no change replaced it: a lookup sees every
/// change that happened before it (here an `add`, published by a flag), and
/// a removed plugin drains and is dropped whatever key map the reader still
/// holds.
#[test]
fn registry_reader_sees_changes_and_holds_no_plugin() {
    bounded(2).check(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let registry = registry_of_one(&drops);
        let added = Arc::new(AtomicBool::new(false));
        let reader = {
            let (registry, added) = (registry.clone(), added.clone());
            thread::spawn(move || {
                let mut reader = registry.reader();
                if let Some(lease) = reader.lease(&1) {
                    assert!(!lease.dropped.load(Ordering::SeqCst), "use after free");
                }
                let seen = added.load(Ordering::Acquire);
                let found = reader.lease(&2).is_some();
                assert!(found || !seen, "a reader missed an add that happened before its lookup");
            })
        };
        registry.add(2, id(), Value::new(2, &drops)).unwrap();
        added.store(true, Ordering::Release);
        registry.remove(&1).unwrap().wait();
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the removed plugin was dropped");
        reader.join().unwrap();
    });
}

/// A reader that read `current` just before a cutover increments the old
/// record after it was frozen, drained and reused for a later generation,
/// which is then frozen again (with the stray count in it) before the reader
/// undoes: that generation must still drain, and every value drop once.
#[test]
fn stray_increment_across_record_reuse() {
    bounded(3).check(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Slot::with_stripes(id(), Value::new(1, &drops), 1));
        let reader = {
            let slot = slot.clone();
            thread::spawn(move || {
                let lease = slot.lease();
                assert!(!lease.dropped.load(Ordering::SeqCst), "use after free");
            })
        };
        let drains: Vec<_> = (2..=4).map(|g| slot.replace(Value::new(g, &drops))).collect();
        reader.join().unwrap();
        for drain in &drains {
            drain.wait();
        }
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    });
}

/// A `begin_drain` racing a `finalize` on one lifecycle ends `Removed`,
/// whichever wins: finalize is one atomic transition from any state.
#[test]
fn begin_drain_racing_finalize_ends_removed() {
    loom::model(|| {
        let lifecycle = StdArc::new(PluginLifecycle::with_state(id(), LifecycleState::Active));
        let drainer = {
            let driver = EpochFencedReload::new(StdArc::clone(&lifecycle));
            thread::spawn(move || driver.begin_drain())
        };
        EpochFencedReload::new(StdArc::clone(&lifecycle)).finalize();
        let drained = drainer.join().unwrap();
        assert!(drained.is_ok() || drained == Err(DrainError::NotActive { current: LifecycleState::Removed }));
        assert_eq!(lifecycle.state(), LifecycleState::Removed);
    });
}

loom::thread_local! {
    /// Set while this model thread is inside `Slot::lease`.
    static IN_LEASE: std::cell::Cell<bool> = std::cell::Cell::new(false);
}

/// `slot.lease()`, flagged as such for [`Witness`].
fn flagged_lease<T: ?Sized + Send + Sync + 'static>(slot: &Slot<T>) -> cutover::Lease<T> {
    IN_LEASE.with(|f| f.set(true));
    let lease = slot.lease();
    IN_LEASE.with(|f| f.set(false));
    lease
}

/// A plugin value that must never be dropped inside `lease()`.
struct Witness(Value);
impl Drop for Witness {
    fn drop(&mut self) {
        assert!(!IN_LEASE.with(|f| f.get()), "a value was dropped inside lease()");
    }
}

/// Issue 12, item 3: `lease()` never completes a drain, not even when its
/// increment lands on a record that a cutover froze, drained, reused and
/// froze again (where, before the fix, the undo completed that generation's
/// drain and dropped its value inside `lease()`), nor when its validation
/// fails after a freeze counted it. Callbacks never run inside it either.
#[test]
fn lease_never_completes_a_drain() {
    bounded(3).check(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let witness =
            |g| StdArc::new(Witness(Value { generation: g, dropped: AtomicBool::new(false), drops: drops.clone() }));
        let slot = Arc::new(Slot::with_stripes(id(), witness(1), 1));
        let reader = {
            let slot = slot.clone();
            thread::spawn(move || {
                let lease = flagged_lease(&slot);
                assert!(!lease.0.dropped.load(Ordering::SeqCst), "use after free");
                assert_eq!(lease.0.generation, lease.generation());
            })
        };
        let drains: Vec<_> = (2..=4).map(|g| slot.replace(witness(g))).collect();
        for drain in &drains {
            drain.on_drained(|| assert!(!IN_LEASE.with(|f| f.get()), "a callback ran inside lease()"));
        }
        reader.join().unwrap();
        for drain in &drains {
            drain.wait();
        }
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    });
}

/// Issue 12, item 6: `Drain::in_flight` of a drained generation whose record
/// was reused and frozen again must not report the later generation's count.
/// (Deleting `Shared::in_flight`'s second `is_done` check fails this model.)
#[test]
fn in_flight_never_reads_a_reused_record() {
    bounded(3).check(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Slot::with_stripes(id(), Value::new(1, &drops), 1);
        let first = slot.lease();
        let drain = slot.replace(Value::new(2, &drops)); // generation 1: one lease
        let observer = {
            let drain = drain.clone();
            thread::spawn(move || {
                let n = drain.in_flight();
                assert!(n <= 1, "generation 1 never had more than 1 lease in flight, in_flight() said {n}");
            })
        };
        drop(first); // generation 1 drains; its record goes up for reuse
        let _g2 = slot.lease();
        let drain2 = slot.replace(Value::new(3, &drops)); // generation 3 reuses generation 1's record
        let held = [slot.lease(), slot.lease()];
        let drain3 = slot.replace(Value::new(4, &drops)); // that record is frozen again, with 2 in flight
        observer.join().unwrap();
        assert!(drain.is_drained());
        drop(held);
        drop(_g2);
        drain2.wait();
        drain3.wait();
        assert_eq!(drain.in_flight(), 0);
    });
}

/// Issue 12, item 6: a release on another thread racing a sweep of two
/// stripes, with the record reused afterwards: the generation drains exactly
/// once, after both leases, and no value is used after it was dropped.
#[test]
fn release_on_another_thread_races_a_two_stripe_sweep_with_reuse() {
    bounded(3).check(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let slot = Arc::new(Slot::with_stripes(id(), Value::new(1, &drops), 2));
        let mine = slot.lease(); // stripe 0 (the main thread's)
        let (taken_tx, taken_rx) = loom::sync::mpsc::channel();
        let other = {
            let slot = slot.clone();
            thread::spawn(move || {
                let lease = slot.lease(); // stripe 1 (this thread's), generation 1
                taken_tx.send(()).unwrap();
                assert!(!lease.dropped.load(Ordering::SeqCst), "use after free");
                drop(lease); // races the sweep below
            })
        };
        taken_rx.recv().unwrap();
        let drain = slot.replace(Value::new(2, &drops)); // sweeps both stripes
        assert!(!mine.dropped.load(Ordering::SeqCst));
        drop(mine);
        // Reuses generation 1's record if it has drained by now.
        let drain2 = slot.replace(Value::new(3, &drops));
        let lease = slot.lease();
        assert_eq!(lease.generation(), 3);
        assert!(!lease.dropped.load(Ordering::SeqCst));
        drop(lease);
        other.join().unwrap();
        drain.wait();
        drain2.wait();
        assert_eq!(drops.load(Ordering::SeqCst), 2, "each retired value dropped exactly once");
    });
}
