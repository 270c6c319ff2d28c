//! `Slot`, `Lease` and `Drain`: cutover, counting, notification.
#![cfg(not(loom))]

use std::{
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc, Arc, Barrier,
    },
    task::{Context, Poll, Wake, Waker},
    thread,
    time::Duration,
};

use cutover::{DrainError, Lease, LifecycleState, PluginId, Slot};

#[path = "support/events.rs"]
mod events;

const LONG: Duration = Duration::from_secs(60);

/// A value that counts its drops.
struct Tracked {
    tag: u64,
    drops: Arc<AtomicUsize>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn tracked(tag: u64, drops: &Arc<AtomicUsize>) -> Arc<Tracked> {
    Arc::new(Tracked { tag, drops: Arc::clone(drops) })
}

fn id() -> PluginId {
    PluginId::new("plugin")
}

#[test]
fn new_slot_is_generation_one_and_active() {
    let slot = Slot::new(id(), Arc::new(5));
    assert_eq!(slot.generation(), 1);
    assert_eq!(slot.lifecycle().state(), LifecycleState::Active);
    assert_eq!(slot.id(), &id());
    let lease = slot.lease();
    assert_eq!(*lease, 5);
    assert_eq!(lease.generation(), 1);
    assert_eq!(*slot.current(), 5);
}

/// A slot makes its generations' lifecycles only when asked (or at their
/// retirement); every request gets the same one, it follows the generation
/// through `Draining` to `Removed`, and the transition events are those of a
/// lifecycle made at once: `Initialized → Active` at the cutover, then
/// `Active → Draining → Removed`.
#[test]
fn a_lifecycle_made_on_request_is_one_per_generation_with_every_event() {
    let ((), events) = events::during("cutover::lifecycle", tracing::Level::DEBUG, || {
        let slot = Slot::new(id(), Arc::new(1));
        let asked = slot.lifecycle();
        assert!(Arc::ptr_eq(&asked, &slot.lifecycle()), "two lifecycles for generation 1");
        let lease = slot.lease();
        let drain = slot.replace(Arc::new(2));
        assert!(Arc::ptr_eq(&asked, drain.lifecycle()), "the drain has another lifecycle");
        assert_eq!(asked.state(), LifecycleState::Draining);
        drop(lease);
        assert_eq!(asked.state(), LifecycleState::Removed);
        // Generation 2's lifecycle is first made by its retirement.
        let drain = slot.replace(Arc::new(3));
        assert_eq!(drain.lifecycle().state(), LifecycleState::Removed);
        assert_eq!(drain.generation(), 2);
        // Requests racing each other all get the one that won.
        let lifecycles: Vec<_> = thread::scope(|scope| {
            let asks: Vec<_> = (0..4).map(|_| scope.spawn(|| slot.lifecycle())).collect();
            asks.into_iter().map(|ask| ask.join().unwrap()).collect()
        });
        assert!(lifecycles.iter().all(|l| Arc::ptr_eq(l, &lifecycles[0])), "racing requests got different lifecycles");
        assert!(Arc::ptr_eq(&lifecycles[0], &slot.lifecycle()));
    });
    let transitions: Vec<(String, String)> = events
        .iter()
        .map(|event| {
            let get = |name: &str| event.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
            (get("from"), get("to"))
        })
        .collect();
    let step = |from: &str, to: &str| (from.to_owned(), to.to_owned());
    let made = step("Initialized", "Active");
    let (drain, remove) = (step("Active", "Draining"), step("Draining", "Removed"));
    assert_eq!(
        transitions,
        [made.clone(), made.clone(), drain.clone(), remove.clone(), made, drain.clone(), remove.clone(), drain, remove],
        "generations 1 to 3 made; 1 and 2 retired by cutovers, 3 by the slot's drop"
    );
}

#[test]
fn replace_cuts_over_and_old_leases_keep_their_generation() {
    let drops = Arc::new(AtomicUsize::new(0));
    let slot = Slot::new(id(), tracked(1, &drops));
    let old = slot.lease();
    let old_lifecycle = slot.lifecycle();
    let drain = slot.replace(tracked(2, &drops));
    assert_eq!(slot.generation(), 2);
    assert_eq!(drain.generation(), 1);
    assert_eq!(drain.plugin(), &id());
    let new = slot.lease();
    assert_eq!((new.tag, new.generation()), (2, 2));
    assert_eq!((old.tag, old.generation()), (1, 1));
    assert_eq!(old_lifecycle.state(), LifecycleState::Draining);
    assert!(Arc::ptr_eq(drain.lifecycle(), &old_lifecycle));
    assert_eq!(slot.lifecycle().state(), LifecycleState::Active);
    assert_eq!(drain.in_flight(), 1);
    assert!(!drain.is_drained());
    match drain.wait_timeout(Duration::from_millis(1)) {
        Err(DrainError::StillDraining { generation: 1, in_flight: 1, .. }) => {}
        other => panic!("expected StillDraining, got {other:?}"),
    }
    assert_eq!(drops.load(Ordering::SeqCst), 0, "the old value must live while leased");
    drop(old);
    drain.wait_timeout(LONG).unwrap();
    assert!(drain.is_drained());
    assert_eq!(drain.in_flight(), 0);
    assert_eq!(old_lifecycle.state(), LifecycleState::Removed);
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped exactly once, when drained");
    assert!(drain.drained_at().is_some());
    assert!(drain.drained_at().unwrap() >= drain.cutover_at());
    drop(new);
    drop(slot);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}

#[test]
fn replace_with_nothing_in_flight_drains_immediately() {
    let drops = Arc::new(AtomicUsize::new(0));
    let slot = Slot::new(id(), tracked(1, &drops));
    let drain = slot.replace(tracked(2, &drops));
    assert!(drain.is_drained());
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(drain.wait_timeout(Duration::ZERO), Ok(()));
    assert_eq!(drain.lifecycle().state(), LifecycleState::Removed);
}

#[test]
fn drained_records_are_reused_whole_after_any_release_order() {
    // Eight generations pinned, then released in a scrambled order: their
    // records go on the slot's free list in that order. Reloads then take
    // them back (and make new ones once the list is empty); every lease
    // must see its own generation's value, and every value is dropped once.
    let drops = Arc::new(AtomicUsize::new(0));
    let slot = Slot::new(id(), tracked(1, &drops));
    let mut pinned = Vec::new();
    for g in 1..=8 {
        let lease = slot.lease();
        assert_eq!((lease.generation(), lease.tag), (g, g));
        pinned.push((lease, slot.replace(tracked(g + 1, &drops))));
    }
    for i in [5, 0, 7, 2, 6, 1, 4, 3] {
        let (lease, drain) = std::mem::replace(&mut pinned[i], (slot.lease(), slot.replace(tracked(0, &drops))));
        drop(lease);
        assert!(drain.is_drained());
    }
    drop(pinned);
    for g in 0..24 {
        let before = slot.lease();
        let drain = slot.replace(tracked(1000 + g, &drops));
        let after = slot.lease();
        assert_eq!(after.tag, 1000 + g);
        assert_eq!(after.generation(), before.generation() + 1);
        assert!(!drain.is_drained());
        drop(before);
        assert!(drain.is_drained());
    }
    let current = slot.lease().generation();
    drop(slot);
    // Every generation made was dropped exactly once.
    assert_eq!(drops.load(Ordering::SeqCst) as u64, current);
}

#[test]
fn slot_of_a_trait_object() {
    trait Op: Send + Sync {
        fn apply(&self, x: i64) -> i64;
    }
    struct Add(i64);
    impl Op for Add {
        fn apply(&self, x: i64) -> i64 {
            x + self.0
        }
    }
    let slot: Slot<dyn Op> = Slot::new(id(), Arc::new(Add(1)));
    assert_eq!(slot.lease().apply(1), 2);
    let drain = slot.replace(Arc::new(Add(10)));
    assert_eq!(slot.lease().apply(1), 11);
    drain.wait();
}

#[test]
fn many_generations_drain_independently() {
    const GENERATIONS: u64 = 12;
    let drops = Arc::new(AtomicUsize::new(0));
    let slot = Slot::new(id(), tracked(1, &drops));
    let mut held: Vec<(Vec<Lease<Tracked>>, cutover::Drain)> = Vec::new();
    for g in 1..=GENERATIONS {
        let leases: Vec<_> = (0..g as usize % 3 + 1).map(|_| slot.lease()).collect();
        assert!(leases.iter().all(|l| l.generation() == g && l.tag == g));
        let drain = slot.replace(tracked(g + 1, &drops));
        held.push((leases, drain));
    }
    assert!(held.iter().all(|(leases, drain)| drain.in_flight() == leases.len() && !drain.is_drained()));
    // Release in a scrambled order; each drain completes exactly when its own
    // leases are gone, and no other.
    let mut order: Vec<usize> = (0..held.len()).collect();
    order.sort_by_key(|i| (i * 7) % held.len());
    let mut drains = Vec::new();
    for &i in &order {
        let (leases, drain) = std::mem::replace(&mut held[i], (Vec::new(), slot.replace(tracked(0, &drops))));
        drains.push(held[i].1.clone());
        let n = leases.len();
        for (k, lease) in leases.into_iter().enumerate() {
            assert!(!drain.is_drained());
            assert_eq!(drain.in_flight(), n - k);
            drop(lease);
        }
        assert!(drain.is_drained(), "generation {} should be drained", drain.generation());
        assert_eq!(drain.lifecycle().state(), LifecycleState::Removed);
    }
    // The placeholders' drains too: on the asymmetric-fence path a drain
    // nobody looked at ends (and drops its value) when it is dropped.
    drop(drains);
    drop(held);
    drop(slot);
    // GENERATIONS + 1 tracked values plus one `tracked(0)` per swap above.
    assert_eq!(drops.load(Ordering::SeqCst), GENERATIONS as usize + 1 + order.len());
}

#[test]
fn lease_dropped_on_another_thread_ends_the_operation() {
    let slot = Slot::new(id(), Arc::new(1u32));
    let lease = slot.lease();
    let drain = slot.replace(Arc::new(2));
    thread::spawn(move || drop(lease)).join().unwrap();
    drain.wait_timeout(LONG).unwrap();
}

#[test]
fn a_panic_while_holding_a_lease_releases_it() {
    let slot = Slot::new(id(), Arc::new(1u32));
    let drain_cell = std::sync::Mutex::new(None);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _lease = slot.lease();
        *drain_cell.lock().unwrap() = Some(slot.replace(Arc::new(2)));
        panic!("plugin bug");
    }));
    assert!(result.is_err());
    let drain = drain_cell.lock().unwrap().take().unwrap();
    assert!(drain.is_drained());
}

#[test]
fn cancellation_is_visible_to_leases_of_that_generation_only() {
    let slot = Slot::new(id(), Arc::new(1u32));
    let old = slot.lease();
    let drain = slot.replace(Arc::new(2));
    assert!(!old.is_cancelled());
    drain.cancel();
    assert!(drain.is_cancelled());
    assert!(old.is_cancelled());
    assert!(!slot.lease().is_cancelled());
}

#[test]
fn on_drained_runs_once_when_drained_or_at_once_if_already() {
    let slot = Slot::new(id(), Arc::new(1u32));
    let lease = slot.lease();
    let drain = slot.replace(Arc::new(2));
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    drain.on_drained(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    drop(lease);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let r = Arc::clone(&ran);
    drain.on_drained(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(ran.load(Ordering::SeqCst), 2);
}

/// A waker that counts wake-ups.
struct CountingWaker(AtomicUsize);
impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn drained_future_wakes_every_waiter() {
    let slot = Slot::new(id(), Arc::new(1u32));
    let lease = slot.lease();
    let drain = slot.replace(Arc::new(2));
    let wakers: Vec<_> = (0..3).map(|_| Arc::new(CountingWaker(AtomicUsize::new(0)))).collect();
    let mut futures: Vec<_> = (0..3).map(|_| Box::pin(drain.drained())).collect();
    for (f, w) in futures.iter_mut().zip(&wakers) {
        let waker = Waker::from(Arc::clone(w));
        assert_eq!(f.as_mut().poll(&mut Context::from_waker(&waker)), Poll::Pending);
    }
    drop(lease);
    for (f, w) in futures.iter_mut().zip(&wakers) {
        assert_eq!(w.0.load(Ordering::SeqCst), 1, "each waiter woken once");
        let waker = Waker::from(Arc::clone(w));
        assert_eq!(f.as_mut().poll(&mut Context::from_waker(&waker)), Poll::Ready(()));
    }
    // A future made after the drain is ready at once; `Drain` is IntoFuture.
    let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
    let mut late = pin!(drain.into_future_for_test());
    assert_eq!(late.as_mut().poll(&mut Context::from_waker(&waker)), Poll::Ready(()));
}

trait IntoFutureForTest {
    fn into_future_for_test(self) -> <Self as std::future::IntoFuture>::IntoFuture
    where
        Self: std::future::IntoFuture + Sized,
    {
        std::future::IntoFuture::into_future(self)
    }
}
impl IntoFutureForTest for cutover::Drain {}

#[test]
fn drain_future_is_send_and_lease_is_send_sync() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    let slot = Slot::new(id(), Arc::new(1u32));
    let drain = slot.replace(Arc::new(2));
    send(&drain.drained());
    send_sync::<Lease<u32>>();
    send_sync::<Lease<dyn Fn() + Send + Sync>>();
    send_sync::<Slot<dyn Fn() + Send + Sync>>();
    send_sync::<cutover::Drain>();
}

#[test]
fn blocked_waiter_is_woken_by_the_last_release_on_another_thread() {
    let slot = Slot::new(id(), Arc::new(1u32));
    let lease = slot.lease();
    let drain = slot.replace(Arc::new(2));
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let drain = drain.clone();
        thread::spawn(move || {
            tx.send(()).unwrap();
            drain.wait_timeout(LONG)
        })
    };
    rx.recv().unwrap();
    drop(lease);
    assert_eq!(waiter.join().unwrap(), Ok(()));
}

#[test]
fn dropping_the_slot_retires_the_current_generation_after_its_leases() {
    let drops = Arc::new(AtomicUsize::new(0));
    let slot = Slot::new(id(), tracked(1, &drops));
    let lease = slot.lease();
    let lifecycle = slot.lifecycle();
    drop(slot);
    assert_eq!(lifecycle.state(), LifecycleState::Draining);
    assert_eq!(lease.tag, 1);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(lease);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(lifecycle.state(), LifecycleState::Removed);
}

/// Readers lease in a loop while a writer replaces hundreds of times.
#[test]
fn stress_readers_and_a_writer() {
    let (readers, replaces) = if cfg!(miri) { (2, 20) } else { (4, 500) };
    let drops = Arc::new(AtomicUsize::new(0));
    let slot = Arc::new(Slot::new(id(), tracked(1, &drops)));
    // Highest generation whose `replace` has returned.
    let published = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(readers + 1));
    let progress = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..readers)
        .map(|r| {
            let (slot, published, stop, start, progress) = (
                Arc::clone(&slot),
                Arc::clone(&published),
                Arc::clone(&stop),
                Arc::clone(&start),
                Arc::clone(&progress),
            );
            thread::spawn(move || {
                start.wait();
                let mut last = 0;
                let mut held = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let floor = published.load(Ordering::Acquire);
                    let lease = slot.lease();
                    assert!(
                        lease.generation() >= floor,
                        "stale lease: {} after {floor} was published",
                        lease.generation()
                    );
                    assert!(lease.generation() >= last, "generation went backwards");
                    assert_eq!(lease.tag, lease.generation(), "lease value belongs to its generation");
                    last = lease.generation();
                    n += 1;
                    progress.fetch_add(1, Ordering::Release);
                    // Hold some leases for a while, and panic with one now and then.
                    if n % 7 == r as u64 {
                        held.push(lease);
                        if held.len() > 5 {
                            held.remove(0);
                        }
                    } else if n % 101 == 0 {
                        let _ = catch_unwind(AssertUnwindSafe(move || {
                            let _l = lease;
                            panic!("boom");
                        }));
                    }
                }
                n
            })
        })
        .collect();
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    start.wait();
    let mut drains = Vec::new();
    for g in 2..=replaces + 1 {
        // Let the readers make progress between replaces, so they interleave.
        let seen = progress.load(Ordering::Acquire);
        while progress.load(Ordering::Acquire) < seen + readers as u64 {
            thread::yield_now();
        }
        drains.push(slot.replace(tracked(g, &drops)));
        published.store(g, Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    let calls: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    std::panic::set_hook(prev_hook);
    assert!(calls > 0);
    for drain in &drains {
        drain.wait_timeout(LONG).unwrap();
        assert_eq!(drain.lifecycle().state(), LifecycleState::Removed);
    }
    assert_eq!(drops.load(Ordering::SeqCst), replaces as usize, "every retired value dropped exactly once");
    drop(slot);
    assert_eq!(drops.load(Ordering::SeqCst), replaces as usize + 1);
}

#[test]
fn concurrent_replaces_each_get_a_distinct_generation() {
    let slot = Arc::new(Slot::new(id(), Arc::new(0u64)));
    let barrier = Arc::new(Barrier::new(4));
    let gens: Vec<u64> = (0..4)
        .map(|i| {
            let (slot, barrier) = (Arc::clone(&slot), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                (0..50).map(|k| slot.replace(Arc::new(i * 100 + k)).generation()).collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let mut sorted = gens.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (1..=200).collect::<Vec<_>>());
    assert_eq!(slot.generation(), 201);
}

#[test]
fn straggler_tracking_names_the_threads_a_drain_waits_for() {
    let slot = Arc::new(Slot::new(id(), Arc::new(1u32)));
    // Off by default: counted, not listed.
    let untracked = slot.lease();
    slot.set_tracking(true);
    assert!(slot.is_tracking());
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let caller = {
        let slot = Arc::clone(&slot);
        thread::Builder::new()
            .name("caller-7".into())
            .spawn(move || {
                let lease = slot.lease();
                held_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                drop(lease);
            })
            .unwrap()
    };
    held_rx.recv().unwrap();
    let drain = slot.replace(Arc::new(2));
    assert_eq!(drain.in_flight(), 2);
    let stragglers = drain.stragglers();
    assert_eq!(stragglers.len(), 1, "only the lease taken with tracking on is listed");
    assert_eq!(stragglers[0].thread.as_deref(), Some("caller-7"));
    release_tx.send(()).unwrap();
    caller.join().unwrap();
    assert!(drain.stragglers().is_empty());
    drop(untracked);
    assert!(drain.is_drained());
    // Leases on the new generation are tracked too, and untracked on drop.
    let lease = slot.lease();
    slot.set_tracking(false);
    drop(lease);
    let drain = slot.replace(Arc::new(3));
    assert!(drain.is_drained() && drain.stragglers().is_empty());
}

/// The `ERROR` events of the target `cutover::slot` emitted while `f` runs.
fn errors_during(f: impl FnOnce()) -> Vec<events::Event> {
    events::during("cutover::slot", tracing::Level::ERROR, f).1
}

/// Silences the panic hook (these tests panic on purpose) while `f` runs.
fn quietly<R>(f: impl FnOnce() -> R) -> R {
    static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = HOOK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    out.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

/// A plugin value whose `Drop` panics.
struct PanicsOnDrop;
impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("plugin teardown failed");
    }
}

/// Issue 12, item 1: before the fix, a panic in the value's `Drop` escaped
/// from whatever completed the drain (`Lease::drop`, `replace`, `Slot::drop`)
/// and left the drain unannounced (`wait_timeout` said `StillDraining` with
/// nothing in flight); during an unwind it aborted the process.
#[test]
fn a_panicking_value_drop_is_contained_and_the_drain_still_announced() {
    let errors = errors_during(|| {
        quietly(|| {
            // Completed by the last lease's drop.
            let slot: Slot<PanicsOnDrop> = Slot::new(id(), Arc::new(PanicsOnDrop));
            let lease = slot.lease();
            let drain = slot.replace(Arc::new(PanicsOnDrop));
            let dropped = catch_unwind(AssertUnwindSafe(move || drop(lease)));
            assert!(dropped.is_ok(), "the value's panic reached the lease's drop");
            assert_eq!(drain.wait_timeout(Duration::ZERO), Ok(()), "the drain was not announced");
            assert_eq!(drain.in_flight(), 0);
            assert_eq!(drain.lifecycle().state(), LifecycleState::Removed);

            // Completed during an unwind: a lease dropped by a panicking call.
            let lease = slot.lease();
            let drain = slot.replace(Arc::new(PanicsOnDrop));
            let unwound = catch_unwind(AssertUnwindSafe(move || {
                let _lease = lease;
                panic!("the call failed");
            }));
            assert!(unwound.is_err());
            assert!(drain.is_drained());

            // Completed inside `replace` (nothing in flight), and by the slot's drop.
            let drain = catch_unwind(AssertUnwindSafe(|| slot.replace(Arc::new(PanicsOnDrop))))
                .expect("the old value's panic escaped from replace");
            assert!(drain.is_drained());
            // The record was recycled: the slot keeps working.
            let lease = slot.lease();
            assert_eq!(lease.generation(), 4);
            drop(lease);
            assert!(catch_unwind(AssertUnwindSafe(move || drop(slot))).is_ok(), "escaped from Slot::drop");
        });
    });
    assert_eq!(errors.len(), 4, "{errors:?}");
    for (event, generation) in errors.iter().zip(1..) {
        assert_eq!(events::field(event, "plugin").as_deref(), Some("plugin"));
        assert_eq!(events::field(event, "generation"), Some(generation.to_string()));
        assert!(events::field(event, "panic").is_some_and(|p| p.contains("plugin teardown failed")), "{event:?}");
    }
}

/// Issue 12, item 2: before the fix, a panicking `on_drained` callback kept
/// the ones after it from running, left waiters unannounced and the record
/// unrecycled, and reached the thread whose lease drop ended the drain. A
/// panicking waker did the same.
#[test]
fn every_callback_and_waker_runs_though_one_panics() {
    struct PanickingWaker;
    impl Wake for PanickingWaker {
        fn wake(self: Arc<Self>) {
            panic!("executor gone");
        }
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let woken = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let errors = errors_during(|| {
        quietly(|| {
            let slot = Slot::new(id(), Arc::new(1u32));
            let lease = slot.lease();
            let drain = slot.replace(Arc::new(2));
            for i in 0..4 {
                let ran = Arc::clone(&ran);
                drain.on_drained(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                    if i == 1 {
                        panic!("callback {i} failed");
                    }
                });
            }
            let mut first = Box::pin(drain.drained());
            let bad = Waker::from(Arc::new(PanickingWaker));
            assert_eq!(first.as_mut().poll(&mut Context::from_waker(&bad)), Poll::Pending);
            let mut second = Box::pin(drain.drained());
            let good = Waker::from(Arc::clone(&woken));
            assert_eq!(second.as_mut().poll(&mut Context::from_waker(&good)), Poll::Pending);
            let dropped = catch_unwind(AssertUnwindSafe(move || drop(lease)));
            assert!(dropped.is_ok(), "a callback's panic reached the lease's drop");
            assert!(drain.is_drained());
            assert_eq!(drain.wait_timeout(Duration::ZERO), Ok(()));
            // The slot keeps working (the record was put up for reuse).
            assert!(slot.replace(Arc::new(3)).is_drained());
        });
    });
    assert_eq!(ran.load(Ordering::SeqCst), 4, "every callback ran");
    assert_eq!(woken.0.load(Ordering::SeqCst), 1, "the other waker was woken");
    assert_eq!(errors.len(), 2, "{errors:?}");
}

thread_local! {
    /// Set while this thread is inside `Slot::lease`.
    static IN_LEASE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A value that counts drops made inside a `lease()` call.
struct Witness {
    generation: u64,
    inside_lease: Arc<AtomicUsize>,
}
impl Drop for Witness {
    fn drop(&mut self) {
        if IN_LEASE.with(|f| f.get()) {
            self.inside_lease.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Issue 12, item 3: before the fix, about 2 in 50,000 replaces under churn
/// had a caller's `lease()` complete the old generation's drain: drop its
/// value and run its `on_drained` callbacks. A race, so this test can only
/// catch it by chance; the loom model `lease_never_completes_a_drain` checks
/// every interleaving.
#[test]
fn lease_never_runs_a_drop_or_a_callback_under_churn() {
    let (readers, replaces) = if cfg!(miri) { (2, 30) } else { (3, 20_000) };
    let inside_lease = Arc::new(AtomicUsize::new(0));
    let witness = |generation| Arc::new(Witness { generation, inside_lease: Arc::clone(&inside_lease) });
    let slot = Arc::new(Slot::with_stripes(id(), witness(1), 2));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..readers)
        .map(|_| {
            let (slot, stop) = (Arc::clone(&slot), Arc::clone(&stop));
            thread::spawn(move || {
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    IN_LEASE.with(|f| f.set(true));
                    let lease = slot.lease();
                    IN_LEASE.with(|f| f.set(false));
                    assert!(lease.generation >= last);
                    last = lease.generation;
                }
            })
        })
        .collect();
    let callbacks_inside = Arc::new(AtomicUsize::new(0));
    for g in 2..=replaces {
        let drain = slot.replace(witness(g));
        let inside = Arc::clone(&callbacks_inside);
        drain.on_drained(move || {
            if IN_LEASE.with(|f| f.get()) {
                inside.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(inside_lease.load(Ordering::SeqCst), 0, "a value was dropped inside lease()");
    assert_eq!(callbacks_inside.load(Ordering::SeqCst), 0, "a callback ran inside lease()");
}

/// Slots' records and heads are cells of chunks shared by every slot, handed
/// back when a slot is gone and reused by the next one, whatever its plugin
/// type. Many short-lived slots of two types, leased, replaced and dropped
/// on two threads at once while a long-lived slot's leases stay out: every
/// lease reads its own generation's value, and every value is dropped once.
#[test]
fn record_cells_are_reused_across_slots_of_other_types() {
    let rounds = if cfg!(miri) { 20 } else { 2_000 };
    let drops = Arc::new(AtomicUsize::new(0));
    let keeper = Slot::new(id(), tracked(0, &drops));
    let held = keeper.lease();
    thread::scope(|scope| {
        for thread in 0..2u64 {
            let drops = &drops;
            scope.spawn(move || {
                for round in 0..rounds {
                    let tag = thread * 1_000_000 + round;
                    let words = Slot::new(id(), Arc::new(vec![tag; 3]));
                    let tracked_slot = Slot::new(id(), tracked(tag, drops));
                    let before = tracked_slot.lease();
                    tracked_slot.replace(tracked(tag + 1, drops));
                    assert_eq!(words.lease()[2], tag);
                    assert_eq!(before.tag, tag);
                    assert_eq!(tracked_slot.lease().tag, tag + 1);
                    let late = words.lease();
                    drop(words);
                    assert_eq!(late[0], tag, "a lease outlives its slot handle");
                    drop((late, before, tracked_slot));
                }
            });
        }
    });
    assert_eq!(held.tag, 0);
    assert_eq!(drops.load(Ordering::SeqCst), 2 * 2 * rounds as usize, "every short-lived value dropped once");
    drop((held, keeper));
    assert_eq!(drops.load(Ordering::SeqCst), 2 * 2 * rounds as usize + 1);
}

/// A `CutoverBatch` is a loop of `replace` whose drains start together: its
/// cutovers are visible at once, `finish` returns the drains in order, and
/// a batch dropped without `finish` (as by a panic) still starts them, so
/// no old generation is left draining forever. (Run on both lease paths:
/// `.ci/run` runs this suite again with `CUTOVER_LEASE_PATH=atomic`.)
#[test]
fn a_cutover_batch_starts_its_drains_at_finish_or_when_dropped() {
    use cutover::CutoverBatch;
    let drops = Arc::new(AtomicUsize::new(0));
    let slots: Vec<Slot<Tracked>> = (0..3).map(|_| Slot::new(id(), tracked(1, &drops))).collect();

    let held = slots[1].lease();
    let mut batch = CutoverBatch::new();
    assert!(batch.is_empty());
    for (i, slot) in slots.iter().enumerate() {
        assert_eq!(batch.replace(slot, tracked(2, &drops)), i);
        assert_eq!(slot.lease().tag, 2, "each cutover is visible as soon as it is made");
    }
    assert_eq!(batch.len(), 3);
    let drains = batch.finish();
    assert_eq!(drains.iter().map(|d| d.generation()).collect::<Vec<_>>(), [1, 1, 1]);
    assert_eq!(drops.load(Ordering::SeqCst), 2, "the old values with nothing in flight");
    assert!(drains[0].is_drained() && drains[2].is_drained());
    assert_eq!(drains[1].in_flight(), 1);
    drop(held);
    assert!(drains[1].is_drained());
    assert_eq!(drops.load(Ordering::SeqCst), 3);

    let mut batch = CutoverBatch::new();
    for slot in &slots {
        batch.replace(slot, tracked(3, &drops));
    }
    drop(batch);
    assert_eq!(drops.load(Ordering::SeqCst), 6, "a dropped batch still retires what it cut over");
    assert!(slots.iter().all(|slot| slot.generation() == 3 && slot.in_flight() == 0));
}
