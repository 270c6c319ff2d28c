//! `Registry`: many slots by key.
#![cfg(not(loom))]

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Barrier, Weak,
    },
    thread,
    time::Duration,
};

use cutover::{LifecycleState, PluginId, Registry, RegistryError, Slot};

type Scalar = dyn Fn(i64) -> i64 + Send + Sync;

fn registry() -> Registry<String, Scalar> {
    Registry::new()
}

#[test]
fn add_lease_replace_remove() {
    let r = registry();
    assert!(r.is_empty());
    r.add("double".into(), PluginId::new("double"), Arc::new(|x| x * 2)).unwrap();
    r.add("neg".into(), PluginId::new("neg"), Arc::new(|x| -x)).unwrap();
    assert_eq!(r.len(), 2);
    let mut keys = r.keys();
    keys.sort();
    assert_eq!(keys, ["double", "neg"]);
    assert!(r.contains("double"));
    assert_eq!(r.lease("double").map(|f| f(21)), Some(42));
    assert_eq!(r.generation("double"), Some(1));
    assert_eq!(r.lifecycle("double").map(|l| l.state()), Some(LifecycleState::Active));
    assert!(r.lease("missing").is_none());

    let held = r.lease("double").unwrap();
    let drain = r.replace("double", Arc::new(|x| x * 2 + 1)).unwrap();
    assert_eq!(r.lease("double").map(|f| f(21)), Some(43));
    assert_eq!(r.generation("double"), Some(2));
    assert_eq!(held(21), 42);
    assert_eq!(drain.in_flight(), 1);
    drop(held);
    assert!(drain.is_drained());

    let held = r.lease("neg").unwrap();
    let drain = r.remove("neg").unwrap();
    assert!(r.lease("neg").is_none(), "no lookup after remove returned finds it");
    assert!(!r.contains("neg"));
    assert_eq!(held(5), -5, "calls in flight finish");
    assert!(!drain.is_drained());
    drop(held);
    assert!(drain.is_drained());
    assert_eq!(drain.lifecycle().state(), LifecycleState::Removed);
    assert_eq!(r.len(), 1);
}

#[test]
fn errors_name_the_key() {
    let r = registry();
    r.add("a".into(), PluginId::new("a"), Arc::new(|x| x)).unwrap();
    let e = r.add("a".into(), PluginId::new("a"), Arc::new(|x| x)).unwrap_err();
    assert_eq!(e, RegistryError::AlreadyExists { key: "\"a\"".into() });
    assert!(e.to_string().contains("already registered"));
    assert!(matches!(r.replace("b", Arc::new(|x| x)), Err(RegistryError::NotFound { .. })));
    assert!(matches!(r.remove("b"), Err(RegistryError::NotFound { .. })));
    let e = r.extend([
        ("c".to_string(), Slot::new(PluginId::new("c"), Arc::new(|x: i64| x) as Arc<Scalar>)),
        ("a".to_string(), Slot::new(PluginId::new("a"), Arc::new(|x: i64| x) as Arc<Scalar>)),
    ]);
    assert!(matches!(e, Err(RegistryError::AlreadyExists { .. })));
    assert!(!r.contains("c"), "extend is all or nothing");
}

#[test]
fn extend_names_the_first_key_repeated_within_the_batch() {
    let r = registry();
    let slot = |k: &str| (k.to_string(), Slot::new(PluginId::new(k), Arc::new(|x: i64| x) as Arc<Scalar>));
    let e = r.extend([slot("x"), slot("y"), slot("z"), slot("y"), slot("x")]).unwrap_err();
    assert_eq!(e, RegistryError::AlreadyExists { key: "\"y\"".into() });
    assert!(r.is_empty(), "extend is all or nothing");
    // A large batch with one repeat at the very end is refused too.
    let n = if cfg!(miri) { 50 } else { 20_000 };
    let batch = (0..n).map(|i| slot(&format!("p{i}"))).chain([slot("p0")]);
    assert_eq!(r.extend(batch).unwrap_err(), RegistryError::AlreadyExists { key: "\"p0\"".into() });
    assert!(r.is_empty());
}

#[test]
fn ten_thousand_plugins() {
    let n = if cfg!(miri) { 100 } else { 10_000 };
    let r = registry();
    r.extend((0..n).map(|i| {
        let slot = Slot::new(PluginId::new(&format!("p{i}")), Arc::new(move |x: i64| x + i) as Arc<Scalar>);
        (format!("p{i}"), slot)
    }))
    .unwrap();
    assert_eq!(r.len(), n as usize);
    for i in (0..n).step_by(97) {
        assert_eq!(r.lease(format!("p{i}").as_str()).map(|f| f(1)), Some(1 + i));
    }
}

/// Lookups racing a removal and re-add: each sees the plugin (and can call
/// it) or does not; none blocks or sees a dropped value.
#[test]
fn lookups_race_removal() {
    let rounds = if cfg!(miri) { 5 } else { 300 };
    let drops = Arc::new(AtomicUsize::new(0));
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let r: Arc<Registry<String, Tracked>> = Arc::new(Registry::new());
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(3));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (r, stop, barrier, drops) =
                (Arc::clone(&r), Arc::clone(&stop), Arc::clone(&barrier), Arc::clone(&drops));
            thread::spawn(move || {
                barrier.wait();
                let mut seen = 0u64;
                while !stop.load(Ordering::Acquire) {
                    if let Some(lease) = r.lease("p") {
                        assert!(Arc::ptr_eq(&lease.0, &drops));
                        seen += 1;
                    }
                }
                seen
            })
        })
        .collect();
    barrier.wait();
    for _ in 0..rounds {
        r.add("p".into(), PluginId::new("p"), Arc::new(Tracked(Arc::clone(&drops)))).unwrap();
        r.remove("p").unwrap().wait();
    }
    stop.store(true, Ordering::Release);
    for t in readers {
        t.join().unwrap();
    }
    assert_eq!(drops.load(Ordering::SeqCst), rounds);
}

/// What a [`Reentrant`] plugin does to its registry when it is dropped.
enum OnDrop {
    Nothing,
    Add(&'static str),
    Replace(&'static str),
    Remove(&'static str),
}

/// A plugin whose teardown changes the registry it lives in.
struct Reentrant {
    registry: Weak<Registry<String, Reentrant>>,
    on_drop: OnDrop,
    dropped: Arc<AtomicUsize>,
}

impl Drop for Reentrant {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
        let Some(registry) = self.registry.upgrade() else { return };
        let inert = || Arc::new(Reentrant { registry: Weak::new(), on_drop: OnDrop::Nothing, dropped: Arc::default() });
        match self.on_drop {
            OnDrop::Nothing => {}
            OnDrop::Add(key) => registry.add(key.into(), PluginId::new(key), inert()).unwrap(),
            OnDrop::Replace(key) => drop(registry.replace(key, inert()).unwrap()),
            OnDrop::Remove(key) => drop(registry.remove(key).unwrap()),
        }
    }
}

/// Issue 12, item 4: before the fix, `replace`, `remove` and `extend`/`add`
/// (refusing a taken key) dropped values while holding the registry's lock,
/// so a plugin whose `Drop` changes the same registry hung forever.
#[test]
fn a_value_whose_drop_changes_its_registry_does_not_deadlock() {
    let (done_tx, done_rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let registry: Arc<Registry<String, Reentrant>> = Arc::new(Registry::new());
        let dropped = Arc::new(AtomicUsize::new(0));
        let plugin = |on_drop| {
            Arc::new(Reentrant { registry: Arc::downgrade(&registry), on_drop, dropped: Arc::clone(&dropped) })
        };
        let add = |key: &str, on_drop| registry.add(key.into(), PluginId::new(key), plugin(on_drop)).unwrap();
        add("a", OnDrop::Add("b"));
        add("self", OnDrop::Replace("self"));
        // `replace` with nothing in flight drops the old value: it adds "b".
        assert!(registry.replace("a", plugin(OnDrop::Replace("b"))).unwrap().is_drained());
        assert!(registry.contains("b"));
        // A value replacing its own key when dropped.
        assert!(registry.replace("self", plugin(OnDrop::Nothing)).unwrap().is_drained());
        assert_eq!(registry.generation("self"), Some(3));
        // `remove` drops the value: it replaces "b".
        assert!(registry.remove("a").unwrap().is_drained());
        assert_eq!(registry.generation("b"), Some(2));
        // `add` refusing a taken key drops the slot it was given: it removes "b".
        let refused = registry.add("self".into(), PluginId::new("self"), plugin(OnDrop::Remove("b")));
        assert!(matches!(refused, Err(RegistryError::AlreadyExists { .. })));
        assert!(!registry.contains("b"));
        // So does `extend`.
        let refused = registry.extend([
            ("c".to_string(), Slot::new(PluginId::new("c"), plugin(OnDrop::Add("d")))),
            ("self".to_string(), Slot::new(PluginId::new("self"), plugin(OnDrop::Nothing))),
        ]);
        assert!(matches!(refused, Err(RegistryError::AlreadyExists { .. })));
        assert!(registry.contains("d") && !registry.contains("c"));
        done_tx.send(dropped.load(Ordering::SeqCst)).unwrap();
    });
    let dropped = done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("deadlocked: a plugin value's Drop that changes its registry hung (or the test thread panicked)");
    worker.join().unwrap();
    assert_eq!(dropped, 7);
}

/// A registry entry keeps a prefetch hint to its slot's generation as of
/// the last change to the key map; replaces leave it stale (and let the old
/// values go), and the next change refreshes it. Lookups must see the current
/// generation throughout (the hint is never read through).
#[test]
fn lookups_are_right_whatever_the_prefetch_hints_say() {
    let registry = registry();
    for k in 0..8i64 {
        registry.add(format!("k{k}"), PluginId::new(&format!("k{k}")), Arc::new(move |x| x + k)).unwrap();
    }
    for round in 1..=5i64 {
        for k in 0..8i64 {
            // Every old value is dropped by its drain: the hints now point
            // at drained records and freed values.
            registry.replace(format!("k{k}").as_str(), Arc::new(move |x| x * 100 + round + k)).unwrap().wait();
        }
        for k in 0..8i64 {
            let lease = registry.lease(format!("k{k}").as_str()).expect("registered");
            assert_eq!(lease(1), 100 + round + k);
            assert_eq!(lease.generation(), 1 + round as u64);
        }
        // A change copies the map and refreshes every hint.
        registry.add(format!("extra{round}"), PluginId::new("extra"), Arc::new(|x| -x)).unwrap();
        assert_eq!(registry.lease("k3").map(|f| f(1)), Some(100 + round + 3));
        assert_eq!(registry.lease(format!("extra{round}").as_str()).map(|f| f(2)), Some(-2));
    }
    registry.remove("k0").unwrap().wait();
    assert!(registry.lease("k0").is_none());
    assert_eq!(registry.lease("k7").map(|f| f(1)), Some(100 + 5 + 7));
}

/// Dropping a registry retires every registered plugin, as dropping their
/// slots would: a value with no lease out is dropped at once, a value whose
/// lease is still out when that lease ends.
#[test]
fn dropping_the_registry_retires_its_plugins() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let counted = || Arc::new(Counted(Arc::clone(&drops)));
    let r: Registry<String, Counted> = Registry::new();
    for i in 0..3 {
        r.add(format!("p{i}"), PluginId::new("p"), counted()).unwrap();
    }
    r.replace("p0", counted()).unwrap().wait();
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the replaced value, nothing in flight");
    let held = r.lease("p1").unwrap();
    drop(r);
    assert_eq!(drops.load(Ordering::SeqCst), 3, "p0's and p2's current values, at once");
    drop(held);
    assert_eq!(drops.load(Ordering::SeqCst), 4, "p1's value, when its last lease ended");
}

/// `replace_many` is `replace` on each entry, in order: each outcome at its
/// entry's position, a missing key refused alone, a key given twice cut
/// over twice, leases taken before keeping their generations.
#[test]
fn replace_many_cuts_each_entry_over_as_replace_would() {
    let r: Registry<String, i64> = Registry::new();
    for name in ["a", "b", "c"] {
        r.add(name.into(), PluginId::new(name), Arc::new(1)).unwrap();
    }
    let held = r.lease("b").unwrap();
    let outcome = r.replace_many([
        ("a", Arc::new(2)),
        ("missing", Arc::new(9)),
        ("b", Arc::new(2)),
        ("c", Arc::new(2)),
        ("c", Arc::new(3)),
    ]);
    assert_eq!(outcome.len(), 5);
    assert_eq!(
        outcome[1].as_ref().err(),
        Some(&RegistryError::NotFound { key: "\"missing\"".into() }),
        "a missing key is refused alone"
    );
    assert!(!r.contains("missing"));
    let drain = |i: usize| outcome[i].as_ref().expect("registered key");
    assert_eq!([0, 2, 3, 4].map(|i| drain(i).generation()), [1, 1, 1, 2]);
    assert!(drain(0).is_drained(), "nothing was in flight on a");
    assert_eq!(drain(2).in_flight(), 1, "b's lease keeps generation 1");
    assert!(drain(3).is_drained() && drain(4).is_drained(), "c cut over twice, both drained");
    assert_eq!(["a", "b", "c"].map(|k| r.lease(k).map(|v| *v)), [Some(2), Some(2), Some(3)]);
    assert_eq!(["a", "b", "c"].map(|k| r.generation(k)), [Some(2), Some(2), Some(3)]);
    assert_eq!(*held, 1);
    drop(held);
    assert!(drain(2).is_drained());
    assert_eq!(drain(2).lifecycle().state(), LifecycleState::Removed);
    assert!(r.replace_many(std::iter::empty::<(&str, Arc<i64>)>()).is_empty());
}

/// A removed plugin's key is refused as not found; the rest of the batch
/// is cut over.
#[test]
fn replace_many_refuses_a_removed_plugin_alone() {
    let r: Registry<String, i64> = Registry::new();
    for name in ["a", "b"] {
        r.add(name.into(), PluginId::new(name), Arc::new(1)).unwrap();
    }
    r.remove("a").unwrap().wait();
    let outcome = r.replace_many([("a", Arc::new(2)), ("b", Arc::new(2))]);
    assert!(matches!(&outcome[0], Err(RegistryError::NotFound { key }) if key == "\"a\""));
    assert!(outcome[1].as_ref().is_ok_and(|d| d.is_drained()));
    assert_eq!(r.lease("b").map(|v| *v), Some(2));
}
