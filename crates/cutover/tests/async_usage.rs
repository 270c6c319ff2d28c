//! `cutover` from async code (tokio): leases held across `.await` (also
//! when the task moves to another worker thread), drains awaited with
//! `drain.await`, and a reload driven from a task with `spawn_blocking`, so
//! that the runtime keeps running the tasks whose leases the drain waits
//! for.
//!
//! No sleeps: tasks hand over with channels and `Notify`, and every wait has
//! a generous deadline that fails with a message.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use cutover::{
    host::{DrainOutcome, Host, ReloadDiscipline, ReloadOptions},
    plugin::{BoxError, Plugin},
    LifecycleState, PluginId, Slot,
};
use tokio::sync::{oneshot, Notify};

/// How long any wait may take before the test fails (never reached when
/// the code is right; generous for a loaded machine).
const DEADLINE: Duration = Duration::from_secs(60);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not happen within {DEADLINE:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_across_await_keeps_its_generation_and_the_drain_is_awaited() {
    let slot = Arc::new(Slot::new(PluginId::new("greeter"), Arc::new(String::from("hello"))));
    let (leased_tx, leased_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();

    let task = tokio::spawn({
        let slot = Arc::clone(&slot);
        async move {
            let lease = slot.lease();
            let before = (std::thread::current().id(), lease.generation());
            leased_tx.send(()).expect("the test waits for the lease");
            // Suspended while holding the lease; the task may resume on the
            // other worker thread.
            go_rx.await.expect("the test tells the task to go on");
            let seen = (lease.generation(), lease.as_str().to_owned());
            drop(lease); // possibly on another thread than it was taken on
            (before, seen)
        }
    });

    within("the task taking its lease", leased_rx).await.expect("the task runs");
    let drain = slot.replace(Arc::new(String::from("bonjour")));
    assert_eq!(slot.lease().as_str(), "bonjour", "new leases see generation 2");
    assert_eq!(drain.in_flight(), 1, "the suspended task holds generation 1");
    assert!(!drain.is_drained());
    assert_eq!(drain.lifecycle().state(), LifecycleState::Draining);

    go_tx.send(()).expect("the task waits");
    let lifecycle = Arc::clone(drain.lifecycle());
    // `Drain: IntoFuture`: awaiting it completes when the last lease drops.
    within("the drain", async move { drain.await }).await;
    assert_eq!(lifecycle.state(), LifecycleState::Removed);

    let ((_, generation_before), (generation_after, value)) = task.await.expect("the task did not panic");
    assert_eq!(generation_before, 1);
    assert_eq!((generation_after, value.as_str()), (1, "hello"), "the lease kept generation 1 across the await");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_migrating_between_workers_are_all_counted() {
    // 64 tasks each hold a lease across several awaits, so many of them
    // resume on a different worker thread than the one they leased on; the
    // drain must wait for every one and complete only after the last.
    let slot = Arc::new(Slot::new(PluginId::new("counter"), Arc::new(1u64)));
    let gate = Arc::new(Notify::new());
    let (leased_tx, mut leased_rx) = tokio::sync::mpsc::channel(64);
    let migrated = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (slot, gate, leased_tx, migrated) =
            (Arc::clone(&slot), Arc::clone(&gate), leased_tx.clone(), Arc::clone(&migrated));
        tasks.push(tokio::spawn(async move {
            let notified = gate.notified();
            tokio::pin!(notified);
            notified.as_mut().enable(); // registered before we report in
            let lease = slot.lease();
            let leased_on = std::thread::current().id();
            leased_tx.send(()).await.expect("the test listens");
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            notified.await;
            if std::thread::current().id() != leased_on {
                migrated.fetch_add(1, Ordering::Relaxed);
            }
            *lease
        }));
    }
    drop(leased_tx);
    for _ in 0..64 {
        within("every task taking its lease", leased_rx.recv()).await.expect("a task ended early");
    }
    let drain = slot.replace(Arc::new(2));
    assert_eq!(drain.in_flight(), 64);
    let drained = drain.drained();
    gate.notify_waiters();
    within("the drain of 64 migrating leases", drained).await;
    assert_eq!(drain.in_flight(), 0);
    for task in tasks {
        assert_eq!(task.await.expect("no task panicked"), 1, "every task kept generation 1");
    }
    // How many moved is up to the scheduler; the count is only reported.
    eprintln!("{} of 64 leases were dropped on another worker thread", migrated.load(Ordering::Relaxed));
}

/// A native plugin for the host test: its number, and the functions it
/// registers.
struct Number(u64);

impl Plugin for Number {}

/// Tells the test the moment the reload has cut over.
struct CutoverSignal(Arc<Notify>);

impl ReloadDiscipline<Number> for CutoverSignal {
    fn at_cutover(&self, _old: &Number, _new: &Number) {
        self.0.notify_one();
    }
}

fn number(n: u64) -> impl Fn(&PluginId) -> Result<Number, BoxError> + Send + Sync + 'static {
    move |_: &PluginId| Ok(Number(n))
}

/// On a *single-threaded* runtime: a task holds a lease until the reload has
/// cut over, so the reload's drain can only finish if the runtime keeps
/// running that task while the reload waits. `Host::reload` blocks; run on
/// `spawn_blocking`, it leaves the runtime free, and the drain completes
/// (`Drained`, not escalated at the deadline).
#[tokio::test(flavor = "current_thread")]
async fn a_reload_on_spawn_blocking_does_not_block_the_tasks_it_drains() {
    let host: Arc<Host<Number>> = Arc::new(Host::new());
    let id = PluginId::new("number");
    host.add(id.clone(), &number(1)).expect("add");
    let cut_over = Arc::new(Notify::new());
    host.set_discipline(&id, Arc::new(CutoverSignal(Arc::clone(&cut_over)))).expect("discipline");

    // The in-flight call: leased now, released only after the cutover.
    let lease = host.lease(&id).expect("loaded");
    let caller = tokio::spawn({
        let (host, id, cut_over) = (Arc::clone(&host), id.clone(), Arc::clone(&cut_over));
        async move {
            cut_over.notified().await;
            // New calls already see generation 2; this one finishes on 1.
            let new_generation = host.lease(&id).expect("loaded").generation();
            let old = (lease.generation(), lease.0);
            drop(lease);
            (old, new_generation)
        }
    });

    // The deadline is far beyond the test's: if the runtime were blocked the
    // drain would escalate only after it, and the test fails first.
    let options = ReloadOptions::default().deadline(DEADLINE * 2);
    let reload = tokio::task::spawn_blocking({
        let (host, id) = (Arc::clone(&host), id.clone());
        move || host.reload(&id, &number(2), &options)
    });
    let report = within("the reload", reload).await.expect("the reload did not panic").expect("the reload succeeds");
    assert_eq!(report.generation, Some(2));
    assert_eq!(report.outcome, DrainOutcome::Drained, "{report:?}");
    assert!(report.escalations.is_empty(), "{report:?}");
    let ((old_generation, old_value), new_generation) = caller.await.expect("the caller did not panic");
    assert_eq!((old_generation, old_value), (1, 1), "the in-flight call finished on generation 1");
    assert_eq!(new_generation, 2);
    assert_eq!(host.lease(&id).expect("loaded").0, 2);
}
