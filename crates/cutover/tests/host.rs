//! The reload transaction: fault injection, concurrency, escalation, rollback.
#![cfg(not(loom))]

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc, Arc, Barrier,
    },
    thread,
    time::Duration,
};

use cutover::{
    host::{DrainOutcome, Host, ReloadError, ReloadKind, ReloadOptions, Rung, Step},
    plugin::{BoxError, LinkContext, Plugin, PluginSource},
    LifecycleState, PluginId,
};

#[path = "support/events.rs"]
mod events;

/// Where a test plugin misbehaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum At {
    Load,
    Dependencies,
    Link,
    Init,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Error(At),
    Panic(At),
}

/// Counts what happens to every generation of every test plugin.
#[derive(Default)]
struct Counters {
    created: AtomicUsize,
    dropped: AtomicUsize,
    shut_down: AtomicUsize,
    interrupts: AtomicUsize,
}

struct TestPlugin {
    version: u64,
    fault: Option<Fault>,
    deps: Vec<PluginId>,
    counters: Arc<Counters>,
    /// Set by `interrupt`, if this plugin's engine "can interrupt".
    interrupted: Option<Arc<AtomicBool>>,
    shutdown_tx: Option<mpsc::Sender<u64>>,
}

impl TestPlugin {
    fn fail(&self, at: At) -> Result<(), BoxError> {
        match self.fault {
            Some(Fault::Error(a)) if a == at => Err(format!("injected error at {at:?}").into()),
            Some(Fault::Panic(a)) if a == at => panic!("injected panic at {at:?}"),
            _ => Ok(()),
        }
    }
}

impl Plugin for TestPlugin {
    fn link(&mut self, cx: &mut LinkContext) -> Result<(), BoxError> {
        self.fail(At::Link)?;
        cx.register_function("test.version");
        Ok(())
    }
    fn init(&mut self) -> Result<(), BoxError> {
        self.fail(At::Init)
    }
    fn shutdown(&self) {
        self.counters.shut_down.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = &self.shutdown_tx {
            let _ = tx.send(self.version);
        }
    }
    fn interrupt(&self) -> bool {
        self.counters.interrupts.fetch_add(1, Ordering::SeqCst);
        match &self.interrupted {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }
    fn dependencies(&self) -> Vec<PluginId> {
        if self.fault == Some(Fault::Panic(At::Dependencies)) {
            panic!("injected panic at Dependencies");
        }
        self.deps.clone()
    }
}

impl Drop for TestPlugin {
    fn drop(&mut self) {
        self.counters.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// Builds test plugins.
#[derive(Clone)]
struct Source {
    version: u64,
    fault: Option<Fault>,
    deps: Vec<PluginId>,
    counters: Arc<Counters>,
    interrupted: Option<Arc<AtomicBool>>,
    shutdown_tx: Option<mpsc::Sender<u64>>,
}

impl Source {
    fn new(version: u64, counters: &Arc<Counters>) -> Self {
        Self {
            version,
            fault: None,
            deps: Vec::new(),
            counters: Arc::clone(counters),
            interrupted: None,
            shutdown_tx: None,
        }
    }
    fn fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }
    fn deps(mut self, deps: &[&str]) -> Self {
        self.deps = deps.iter().map(|d| PluginId::new(d)).collect();
        self
    }
}

impl PluginSource<TestPlugin> for Source {
    fn load(&self, _id: &PluginId) -> Result<TestPlugin, BoxError> {
        match self.fault {
            Some(Fault::Error(At::Load)) => return Err("injected error at Load".into()),
            Some(Fault::Panic(At::Load)) => panic!("injected panic at Load"),
            _ => {}
        }
        self.counters.created.fetch_add(1, Ordering::SeqCst);
        Ok(TestPlugin {
            version: self.version,
            fault: self.fault,
            deps: self.deps.clone(),
            counters: Arc::clone(&self.counters),
            interrupted: self.interrupted.clone(),
            shutdown_tx: self.shutdown_tx.clone(),
        })
    }
}

fn id(s: &str) -> PluginId {
    PluginId::new(s)
}

/// Silence the injected panics (expected), keep every other panic message.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<&str>().copied().unwrap_or_default();
            let injected = msg.contains("injected") || msg.contains("at_cutover panics");
            if !injected {
                default(info);
            }
        }));
    });
}

fn fast() -> ReloadOptions {
    ReloadOptions::default().deadline(Duration::from_secs(60))
}

#[test]
fn add_reload_remove_walk_the_lifecycle() {
    let counters = Arc::new(Counters::default());
    let host = Host::new();
    let report = host.add(id("p"), &Source::new(1, &counters)).unwrap();
    assert_eq!(
        (report.kind, report.generation, report.outcome),
        (ReloadKind::Add, Some(1), DrainOutcome::NothingToDrain)
    );
    let old_lifecycle = host.snapshot(&id("p")).map(|s| s.state).unwrap();
    assert_eq!(old_lifecycle, LifecycleState::Active);
    let lease = host.lease(&id("p")).unwrap();
    assert_eq!(lease.version, 1);
    drop(lease);
    let report = host.reload(&id("p"), &Source::new(2, &counters), &fast()).unwrap();
    assert_eq!(report.kind, ReloadKind::Reload);
    assert_eq!((report.previous, report.generation, report.outcome), (Some(1), Some(2), DrainOutcome::Drained));
    assert!(report.phases.drain.is_some() && report.phases.shutdown.is_some());
    assert_eq!(host.lease(&id("p")).unwrap().version, 2);
    assert_eq!(counters.shut_down.load(Ordering::SeqCst), 1);
    assert_eq!(counters.dropped.load(Ordering::SeqCst), 1);
    let snap = host.snapshot(&id("p")).unwrap();
    assert_eq!((snap.generation, snap.state, snap.in_flight), (2, LifecycleState::Active, 0));
    assert_eq!(snap.functions, ["test.version"]);
    assert!(snap.draining.is_empty() && snap.last_error.is_none());
    assert_eq!(snap.last_reload.unwrap().generation, Some(2));
    let report = host.remove(&id("p"), &fast()).unwrap();
    assert_eq!((report.kind, report.previous, report.generation), (ReloadKind::Remove, Some(2), None));
    assert!(host.lease(&id("p")).is_none());
    assert!(host.snapshot(&id("p")).is_none());
    assert_eq!(counters.shut_down.load(Ordering::SeqCst), 2);
    assert_eq!(counters.dropped.load(Ordering::SeqCst), 2);
    assert!(matches!(host.remove(&id("p"), &fast()), Err(ReloadError::NotFound { .. })));
}

#[test]
fn every_fault_before_cutover_leaves_the_old_generation_serving_untouched() {
    quiet_panics();
    let counters = Arc::new(Counters::default());
    let host = Host::new();
    host.add(id("p"), &Source::new(1, &counters)).unwrap();
    let lifecycle_before = host.snapshot(&id("p")).unwrap();
    for at in [At::Load, At::Dependencies, At::Link, At::Init] {
        for fault in [Fault::Error(at), Fault::Panic(at)] {
            if fault == Fault::Error(At::Dependencies) {
                continue; // `dependencies()` cannot return an error; see the missing-dependency test
            }
            let err = host.reload(&id("p"), &Source::new(2, &counters).fault(fault), &fast()).unwrap_err();
            let step = match at {
                At::Load => Step::Load,
                At::Dependencies => Step::Dependencies,
                At::Link => Step::Link,
                At::Init => Step::Init,
            };
            assert_eq!(err.step(), Some(step), "{fault:?}: {err}");
            let text = err.to_string();
            assert!(text.contains("generation 1 keeps serving"), "{text}");
            assert!(text.contains("injected"), "the cause is named: {text}");
            let lease = host.lease(&id("p")).unwrap();
            assert_eq!((lease.version, lease.generation()), (1, 1), "{fault:?}");
            drop(lease);
            let snap = host.snapshot(&id("p")).unwrap();
            assert_eq!((snap.generation, snap.state), (lifecycle_before.generation, LifecycleState::Active));
            assert_eq!(snap.last_error.as_deref(), Some(text.as_str()));
        }
    }
    // Discarded generations were shut down only if they had been initialized
    // (an init failure), and all were dropped.
    let created = counters.created.load(Ordering::SeqCst);
    assert_eq!(counters.dropped.load(Ordering::SeqCst), created - 1);
    assert_eq!(counters.shut_down.load(Ordering::SeqCst), 2, "the two init failures");
    // A later success clears the error.
    host.reload(&id("p"), &Source::new(3, &counters), &fast()).unwrap();
    assert!(host.snapshot(&id("p")).unwrap().last_error.is_none());
}

struct FailingDiscipline {
    panic: bool,
}

impl cutover::host::ReloadDiscipline<TestPlugin> for FailingDiscipline {
    fn before_cutover(&self, _old: &TestPlugin, _new: &mut TestPlugin) -> Result<(), BoxError> {
        if self.panic {
            panic!("injected panic in before_cutover");
        }
        Err("injected error in before_cutover".into())
    }
    fn at_cutover(&self, _old: &TestPlugin, _new: &TestPlugin) {
        panic!("at_cutover panics are logged, not fatal");
    }
}

#[test]
fn a_failing_discipline_hook_aborts_the_reload() {
    quiet_panics();
    let counters = Arc::new(Counters::default());
    let host = Host::new();
    host.add(id("p"), &Source::new(1, &counters)).unwrap();
    for panic in [false, true] {
        host.set_discipline(&id("p"), Arc::new(FailingDiscipline { panic })).unwrap();
        let err = host.reload(&id("p"), &Source::new(2, &counters), &fast()).unwrap_err();
        assert_eq!(err.step(), Some(Step::Prepare), "{err}");
        assert_eq!(host.lease(&id("p")).unwrap().version, 1);
    }
    assert_eq!(counters.shut_down.load(Ordering::SeqCst), 2, "initialized generations were shut down");
}

#[test]
fn dependencies_initialize_in_order_and_missing_or_cyclic_ones_are_errors() {
    quiet_panics();
    let counters = Arc::new(Counters::default());
    let host: Host<TestPlugin> = Host::new();
    let err = host.add(id("b"), &Source::new(1, &counters).deps(&["a"])).unwrap_err();
    assert!(matches!(&err, ReloadError::MissingDependency { dependency, .. } if dependency.as_str() == "a"), "{err}");
    assert!(err.to_string().contains("load `a` first"));
    // A batch in any order is initialized dependencies first.
    let (a, b, c) = (
        Source::new(1, &counters),
        Source::new(1, &counters).deps(&["a"]),
        Source::new(1, &counters).deps(&["b", "a"]),
    );
    let reports = host.add_all(vec![(id("c"), &c as &dyn PluginSource<_>), (id("b"), &b), (id("a"), &a)]).unwrap();
    let order: Vec<_> = reports.iter().map(|r| r.plugin.to_string()).collect();
    assert_eq!(order, ["a", "b", "c"]);
    // A reload that would close a cycle is refused; the old one serves.
    let err = host.reload(&id("a"), &Source::new(2, &counters).deps(&["c"]), &fast()).unwrap_err();
    match &err {
        ReloadError::DependencyCycle { cycle } => assert_eq!(cycle.first(), cycle.last()),
        other => panic!("expected a cycle, got {other}"),
    }
    assert_eq!(host.lease(&id("a")).unwrap().version, 1);
    // A cycle inside a batch: nothing added.
    let (x, y) = (Source::new(1, &counters).deps(&["y"]), Source::new(1, &counters).deps(&["x"]));
    assert!(matches!(
        host.add_all(vec![(id("x"), &x as &dyn PluginSource<_>), (id("y"), &y)]),
        Err(ReloadError::DependencyCycle { .. })
    ));
    assert!(host.lease(&id("x")).is_none() && host.lease(&id("y")).is_none());
    // Removing a plugin others depend on is refused.
    assert!(matches!(host.remove(&id("a"), &fast()), Err(ReloadError::DependedOn { .. })));
    // A failing member of a batch adds nothing and shuts down what was built.
    let shut = counters.shut_down.load(Ordering::SeqCst);
    let (m, n) = (Source::new(1, &counters), Source::new(1, &counters).deps(&["m"]).fault(Fault::Error(At::Init)));
    assert!(host.add_all(vec![(id("m"), &m as &dyn PluginSource<_>), (id("n"), &n)]).is_err());
    assert!(host.lease(&id("m")).is_none());
    assert_eq!(counters.shut_down.load(Ordering::SeqCst), shut + 2);
}

#[test]
fn concurrent_reloads_of_one_plugin_never_interleave() {
    let counters = Arc::new(Counters::default());
    let host = Arc::new(Host::new());
    host.add(id("p"), &Source::new(0, &counters)).unwrap();
    // A load that blocks until released, so the first reload is mid-build.
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let slow = {
        let counters = Arc::clone(&counters);
        move |_: &PluginId| -> Result<TestPlugin, BoxError> {
            entered_tx.send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
            Source::new(1, &counters).load(&PluginId::new("p"))
        }
    };
    let first = {
        let host = Arc::clone(&host);
        thread::spawn(move || host.reload(&PluginId::new("p"), &slow, &ReloadOptions::default()))
    };
    entered_rx.recv().unwrap();
    let second = host.reload(&id("p"), &Source::new(2, &counters), &fast());
    assert!(matches!(second, Err(ReloadError::InProgress { .. })), "{second:?}");
    assert!(second.unwrap_err().to_string().contains("in progress"));
    release_tx.send(()).unwrap();
    assert_eq!(first.join().unwrap().unwrap().generation, Some(2));
    // Different plugins are independent, and an in-progress refusal is not recorded as the plugin's error.
    assert!(host.snapshot(&id("p")).unwrap().last_error.is_none());
}

/// Issue 15, item 4: closures are sources as written, no annotation needed
/// (before, `&|_| Ok(..)` failed with "implementation of `FnOnce` is not
/// general enough"); annotated ones and `impl Fn(&PluginId)` still work.
#[test]
fn closure_sources_need_no_annotation() {
    let counters = Arc::new(Counters::default());
    let host = Host::new();
    let plugin = |version| TestPlugin {
        version,
        fault: None,
        deps: Vec::new(),
        counters: Arc::clone(&counters),
        interrupted: None,
        shutdown_tx: None,
    };
    host.add(id("a"), &|_| Ok(plugin(1))).unwrap();
    host.add(id("b"), &|id: &PluginId| Ok(plugin(id.as_str().len() as u64))).unwrap();
    host.add_all(vec![(id("c"), &|_| Ok(plugin(3))), (id("d"), &Source::new(4, &counters))]).unwrap();
    host.reload(&id("a"), &|_| Ok(plugin(5)), &fast()).unwrap();
    host.reload_if(&id("a"), 2, &|_| Err("no disk".into()), &fast()).unwrap_err();
    fn named(
        version: u64,
        counters: Arc<Counters>,
    ) -> impl Fn(&PluginId) -> Result<TestPlugin, BoxError> + Send + Sync {
        move |_| Source::new(version, &counters).load(&PluginId::new("x"))
    }
    host.reload(&id("b"), &named(6, Arc::clone(&counters)), &fast()).unwrap();
    let versions: Vec<u64> = ["a", "b", "c", "d"].iter().map(|p| host.lease(&id(p)).unwrap().version).collect();
    assert_eq!(versions, [5, 6, 3, 4]);
}

#[test]
fn reload_if_refuses_a_stale_generation_and_builds_nothing() {
    let counters = Arc::new(Counters::default());
    let host = Host::new();
    host.add(id("p"), &Source::new(1, &counters)).unwrap();
    let report = host.reload_if(&id("p"), 1, &Source::new(2, &counters), &fast()).unwrap();
    assert_eq!((report.previous, report.generation), (Some(1), Some(2)));
    let created = counters.created.load(Ordering::SeqCst);
    let stale = host.reload_if(&id("p"), 1, &Source::new(3, &counters), &fast()).unwrap_err();
    match &stale {
        ReloadError::GenerationMismatch { plugin, expected, current } => {
            assert_eq!((plugin, *expected, *current), (&id("p"), 1, 2));
        }
        other => panic!("expected GenerationMismatch, got {other:?}"),
    }
    let message = stale.to_string();
    assert!(message.contains("expected generation 1") && message.contains("generation 2 is current"), "{message}");
    assert_eq!(counters.created.load(Ordering::SeqCst), created, "nothing was built");
    assert_eq!(host.lease(&id("p")).unwrap().version, 2, "nothing changed");
    let snapshot = host.snapshot(&id("p")).unwrap();
    assert_eq!(snapshot.generation, 2);
    assert!(snapshot.last_error.is_none(), "a refused conditional reload is not a failure of the plugin");
    assert_eq!(snapshot.last_reload.unwrap().generation, Some(2));
    // From a future generation, and on a missing plugin.
    assert!(matches!(
        host.reload_if(&id("p"), 7, &Source::new(3, &counters), &fast()),
        Err(ReloadError::GenerationMismatch { expected: 7, current: 2, .. })
    ));
    assert!(matches!(
        host.reload_if(&id("q"), 1, &Source::new(3, &counters), &fast()),
        Err(ReloadError::NotFound { .. })
    ));
    // After a rollback, the generation to expect is the one rolled back to.
    host.reload(&id("p"), &Source::new(3, &counters), &fast().keep_warm(true)).unwrap();
    assert_eq!(host.rollback(&id("p"), &fast()).unwrap().generation, Some(4));
    assert!(host.reload_if(&id("p"), 3, &Source::new(5, &counters), &fast()).is_err());
    assert_eq!(host.reload_if(&id("p"), 4, &Source::new(5, &counters), &fast()).unwrap().generation, Some(5));
}

/// Two threads race a conditional reload from the same generation: exactly
/// one succeeds; the other is refused (the plugin moved on, or the winner
/// was still building) and builds nothing.
#[test]
fn racing_conditional_reloads_from_one_generation_have_one_winner() {
    let rounds = if cfg!(miri) { 2 } else { 200 };
    let counters = Arc::new(Counters::default());
    let host = Arc::new(Host::new());
    host.add(id("p"), &Source::new(0, &counters)).unwrap();
    let (mut moved_on, mut in_progress) = (0, 0);
    for round in 1..=rounds {
        let expected = host.snapshot(&id("p")).unwrap().generation;
        let created = counters.created.load(Ordering::SeqCst);
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|i| {
                let (host, barrier, source) =
                    (Arc::clone(&host), Arc::clone(&barrier), Source::new(round * 10 + i, &counters));
                thread::spawn(move || {
                    barrier.wait();
                    host.reload_if(&PluginId::new("p"), expected, &source, &fast())
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert_eq!(winners[0].generation, Some(expected + 1));
        for loser in results.iter().filter_map(|r| r.as_ref().err()) {
            match loser {
                ReloadError::GenerationMismatch { expected: e, current, .. } => {
                    assert_eq!((*e, *current), (expected, expected + 1));
                    moved_on += 1;
                }
                ReloadError::InProgress { .. } => in_progress += 1,
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(counters.created.load(Ordering::SeqCst), created + 1, "round {round}: the loser built something");
        assert_eq!(host.snapshot(&id("p")).unwrap().generation, expected + 1);
    }
    assert_eq!(moved_on + in_progress, rounds);
}

/// A call stuck on generation 1: it holds a lease until told to stop, or
/// (if `cooperative`) until the lease reports cancellation, or until the
/// plugin's interrupt flag is set.
fn stuck_call(
    host: &Arc<Host<TestPlugin>>,
    cooperative: bool,
    release: mpsc::Receiver<()>,
) -> (thread::JoinHandle<&'static str>, mpsc::Receiver<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let host = Arc::clone(host);
    let call = thread::Builder::new().name("stuck-call".into()).spawn(move || {
        let lease = host.lease(&PluginId::new("p")).unwrap();
        started_tx.send(()).unwrap();
        loop {
            if cooperative && lease.is_cancelled() {
                return "cancelled";
            }
            if lease.interrupted.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
                return "interrupted";
            }
            match release.recv_timeout(Duration::from_millis(1)) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return "released",
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    });
    (call.expect("spawn the stuck call"), started_rx)
}

fn ladder() -> ReloadOptions {
    ReloadOptions::default()
        .deadline(Duration::from_millis(20))
        .cancel(true, Duration::from_millis(20))
        .force(true, Duration::from_millis(20))
}

#[test]
fn a_cooperative_stuck_call_ends_at_the_cancel_rung() {
    let counters = Arc::new(Counters::default());
    let host = Arc::new(Host::new());
    host.add(id("p"), &Source::new(1, &counters)).unwrap();
    host.set_straggler_tracking(true);
    let (_release, rx) = mpsc::channel();
    let (call, started) = stuck_call(&host, true, rx);
    started.recv().unwrap();
    let opts = ladder().cancel(true, Duration::from_secs(60));
    let (report, warnings) = events::during("cutover::host", tracing::Level::WARN, || {
        host.reload(&id("p"), &Source::new(2, &counters), &opts).unwrap()
    });
    assert_eq!(report.outcome, DrainOutcome::Cancelled);
    // Each rung climbed is a `tracing` event: the deadline, then the cancel.
    let messages: Vec<_> = warnings.iter().filter_map(|e| events::field(e, "message")).collect();
    assert_eq!(messages, ["drain deadline passed", "drain escalated: calls in flight cancelled"]);
    assert_eq!(events::field(&warnings[1], "plugin").as_deref(), Some("p"));
    assert_eq!(events::field(&warnings[1], "generation").as_deref(), Some("1"));
    let stragglers = report.stragglers.unwrap();
    assert_eq!((stragglers.generation, stragglers.in_flight), (1, 1));
    assert!(stragglers.oldest_at_least <= stragglers.oldest_at_most);
    let oldest = stragglers.oldest.expect("tracked");
    assert!(oldest >= stragglers.oldest_at_least && oldest <= stragglers.oldest_at_most + Duration::from_secs(1));
    assert_eq!(stragglers.threads, ["stuck-call"]);
    assert_eq!(report.escalations.iter().map(|e| e.rung).collect::<Vec<_>>(), [Rung::Report, Rung::Cancel]);
    assert_eq!(call.join().unwrap(), "cancelled");
    assert_eq!(counters.shut_down.load(Ordering::SeqCst), 1);
}

#[test]
fn an_interruptible_stuck_call_ends_at_the_force_rung() {
    let counters = Arc::new(Counters::default());
    let host = Arc::new(Host::new());
    let mut source = Source::new(1, &counters);
    source.interrupted = Some(Arc::new(AtomicBool::new(false)));
    host.add(id("p"), &source).unwrap();
    let (_release, rx) = mpsc::channel();
    let (call, started) = stuck_call(&host, false, rx);
    started.recv().unwrap();
    let opts = ladder().force(true, Duration::from_secs(60));
    let (report, warnings) = events::during("cutover::host", tracing::Level::WARN, || {
        host.reload(&id("p"), &Source::new(2, &counters), &opts).unwrap()
    });
    assert_eq!(report.outcome, DrainOutcome::Forced);
    let messages: Vec<_> = warnings.iter().filter_map(|e| events::field(e, "message")).collect();
    assert_eq!(
        messages,
        [
            "drain deadline passed",
            "drain escalated: calls in flight cancelled",
            "drain escalated: interrupting calls in flight"
        ]
    );
    assert_eq!(
        report.escalations.iter().map(|e| e.rung).collect::<Vec<_>>(),
        [Rung::Report, Rung::Cancel, Rung::Force]
    );
    assert_eq!(call.join().unwrap(), "interrupted");
    assert_eq!(counters.interrupts.load(Ordering::SeqCst), 1);
}

#[test]
fn an_unstoppable_call_is_abandoned_then_finished_in_the_background() {
    let counters = Arc::new(Counters::default());
    let host = Arc::new(Host::new());
    let (shutdown_tx, shutdown_rx) = mpsc::channel();
    let mut source = Source::new(1, &counters);
    source.shutdown_tx = Some(shutdown_tx);
    host.add(id("p"), &source).unwrap();
    let (release, rx) = mpsc::channel();
    let (call, started) = stuck_call(&host, false, rx);
    started.recv().unwrap();
    let report = host.reload(&id("p"), &Source::new(2, &counters), &ladder()).unwrap();
    assert_eq!(report.outcome, DrainOutcome::Abandoned);
    assert_eq!(report.escalations.last().map(|e| e.rung), Some(Rung::Abandon));
    assert!(report.phases.drain.is_none());
    // Still tracked: visible as draining, not finalized, not shut down.
    let snap = host.snapshot(&id("p")).unwrap();
    assert_eq!(snap.generation, 2);
    assert_eq!(snap.draining.len(), 1);
    assert_eq!((snap.draining[0].generation, snap.draining[0].in_flight, snap.draining[0].cancelled), (1, 1, true));
    assert_eq!(counters.shut_down.load(Ordering::SeqCst), 0, "never shut down while a call is in flight");
    // New calls go to generation 2 meanwhile.
    assert_eq!(host.lease(&id("p")).unwrap().version, 2);
    release.send(()).unwrap();
    assert_eq!(call.join().unwrap(), "released");
    assert_eq!(shutdown_rx.recv_timeout(Duration::from_secs(60)), Ok(1), "shut down once it drained");
}

#[test]
fn rollback_after_cutover_while_the_old_generation_drains() {
    let counters = Arc::new(Counters::default());
    let host = Arc::new(Host::new());
    host.add(id("p"), &Source::new(1, &counters)).unwrap();
    let (release, rx) = mpsc::channel();
    let (call, started) = stuck_call(&host, false, rx);
    started.recv().unwrap();
    // Reload in the background: it cuts over and then waits for the drain.
    let reload = {
        let host = Arc::clone(&host);
        let source = Source::new(2, &counters);
        thread::spawn(move || host.reload(&PluginId::new("p"), &source, &fast()))
    };
    // Wait until the cutover is visible.
    while host.lease(&id("p")).map(|l| l.version) != Some(2) {
        thread::yield_now();
    }
    assert!(host.snapshot(&id("p")).unwrap().rollback_available);
    let report = host.rollback(&id("p"), &fast()).unwrap();
    assert_eq!(report.kind, ReloadKind::Rollback);
    assert_eq!(report.generation, Some(3));
    let lease = host.lease(&id("p")).unwrap();
    assert_eq!((lease.version, lease.generation()), (1, 3), "generation 1's plugin serves again as generation 3");
    drop(lease);
    release.send(()).unwrap();
    call.join().unwrap();
    let reloaded = reload.join().unwrap().unwrap();
    assert_eq!(reloaded.outcome, DrainOutcome::Drained);
    // Version 2 was shut down; version 1 still serves and was not.
    assert_eq!(counters.shut_down.load(Ordering::SeqCst), 1);
    assert_eq!(host.lease(&id("p")).unwrap().version, 1);
    assert!(matches!(host.rollback(&id("p"), &fast()), Err(ReloadError::NoRollback { .. })));
}

#[test]
fn keep_warm_allows_rollback_after_the_drain() {
    let counters = Arc::new(Counters::default());
    let host = Host::new();
    host.add(id("p"), &Source::new(1, &counters)).unwrap();
    host.reload(&id("p"), &Source::new(2, &counters), &fast().keep_warm(true)).unwrap();
    assert_eq!(counters.shut_down.load(Ordering::SeqCst), 0, "kept warm");
    host.rollback(&id("p"), &fast()).unwrap();
    assert_eq!(host.lease(&id("p")).unwrap().version, 1);
    assert_eq!(counters.shut_down.load(Ordering::SeqCst), 1, "version 2 shut down after its drain");
}

#[test]
fn ten_thousand_reloads_under_concurrent_calls_leak_nothing() {
    let reloads = if cfg!(miri) { 50 } else { 10_000 };
    let counters = Arc::new(Counters::default());
    let host = Arc::new(Host::new());
    host.add(id("p"), &Source::new(0, &counters)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(1));
    let barrier = Arc::new(Barrier::new(3));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop, published, barrier) =
                (Arc::clone(&host), Arc::clone(&stop), Arc::clone(&published), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let mut calls = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let floor = published.load(Ordering::Acquire);
                    let lease = host.lease(&PluginId::new("p")).expect("always serving");
                    assert!(lease.generation() >= floor, "stale call");
                    assert_eq!(lease.version + 1, lease.generation());
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    barrier.wait();
    for v in 1..=reloads {
        let report = host.reload(&id("p"), &Source::new(v, &counters), &fast()).unwrap();
        assert_eq!(report.outcome, DrainOutcome::Drained);
        published.store(v + 1, Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    let calls: u64 = callers.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(calls > 0);
    let created = counters.created.load(Ordering::SeqCst);
    assert_eq!(created as u64, reloads + 1);
    assert_eq!(counters.dropped.load(Ordering::SeqCst), created - 1, "every retired generation dropped");
    assert_eq!(counters.shut_down.load(Ordering::SeqCst), created - 1, "every retired generation shut down once");
    host.remove(&id("p"), &fast()).unwrap();
    assert_eq!(counters.dropped.load(Ordering::SeqCst), created);
}

#[test]
fn racing_adds_of_one_id_have_one_winner_and_the_loser_is_shut_down() {
    for _ in 0..20 {
        let counters = Arc::new(Counters::default());
        let host = Arc::new(Host::new());
        let barrier = Arc::new(Barrier::new(2));
        let adders: Vec<_> = (1..=2)
            .map(|v| {
                let (host, barrier, source) = (Arc::clone(&host), Arc::clone(&barrier), Source::new(v, &counters));
                thread::spawn(move || {
                    barrier.wait();
                    host.add(PluginId::new("p"), &source).map(|_| v)
                })
            })
            .collect();
        let results: Vec<_> = adders.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<u64> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(results.iter().any(|r| matches!(r, Err(ReloadError::AlreadyExists { .. }))));
        assert_eq!(host.lease(&id("p")).unwrap().version, winners[0]);
        assert_eq!(host.snapshot(&id("p")).unwrap().generation, 1);
        // The loser was built (loaded, linked, initialized) and then shut down.
        assert_eq!(counters.shut_down.load(Ordering::SeqCst), counters.created.load(Ordering::SeqCst) - 1);
    }
}
