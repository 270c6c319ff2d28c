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

/// A reader answers every lookup as `Registry::lease` would: it sees every
/// add, extend, replace and remove made before the lookup, through any
/// number of key-map changes.
#[test]
fn a_reader_sees_every_change_made_before_its_lookup() {
    let r: Registry<String, i64> = Registry::new();
    r.add("a".into(), PluginId::new("a"), Arc::new(1)).unwrap();
    let mut reader = r.reader();
    assert_eq!(reader.lease("a").map(|v| *v), Some(1));
    assert!(!reader.contains("b"));
    for round in 0..20i64 {
        let key = format!("k{round}");
        r.add(key.clone(), PluginId::new("k"), Arc::new(round)).unwrap();
        assert_eq!(reader.lease(key.as_str()).map(|v| *v), Some(round), "an add");
        r.replace(key.as_str(), Arc::new(-round)).unwrap().wait();
        let lease = reader.lease(key.as_str()).expect("still registered");
        assert_eq!((*lease, lease.generation()), (-round, 2), "a replace");
        let drain = r.remove(key.as_str()).unwrap();
        assert!(reader.lease(key.as_str()).is_none(), "a remove");
        assert!(!reader.contains(key.as_str()));
        assert_eq!(*lease, -round, "a lease taken before the remove keeps its value");
        assert_eq!(drain.in_flight(), 1, "the lease still pins the removed plugin");
        drop(lease);
        assert!(drain.is_drained());
    }
    r.extend((0..3).map(|i| (format!("x{i}"), Slot::new(PluginId::new("x"), Arc::new(100 + i))))).unwrap();
    assert_eq!(
        ["x0", "x1", "x2", "a"].map(|k| reader.lease(k).map(|v| *v)),
        [Some(100), Some(101), Some(102), Some(1)]
    );
    assert!(std::ptr::eq(reader.registry(), &r));
}

/// The key map a reader still holds keeps no plugin alive: a removed
/// plugin drains and is dropped as soon as its own leases end, before the
/// reader's next lookup.
#[test]
fn a_reader_holding_an_old_key_map_keeps_no_removed_plugin_alive() {
    let r: Registry<String, u64> = Registry::new();
    let value = Arc::new(7);
    let weak = Arc::downgrade(&value);
    r.add("p".into(), PluginId::new("p"), value).unwrap();
    let mut reader = r.reader();
    let lease = reader.lease("p").expect("registered");
    let drain = r.remove("p").unwrap();
    assert_eq!(drain.in_flight(), 1);
    drop(lease);
    assert!(drain.is_drained(), "the reader's key map holds no lease of the plugin");
    assert!(weak.upgrade().is_none(), "the value was dropped by the last lease");
    assert!(reader.lease("p").is_none());
}

/// Readers on several threads race adds, replaces and removes: each finds
/// what a writer's message says was there before its lookup, never a
/// dropped value, while the writer replaces a plugin and changes the key map
/// under their free lookups; every value is dropped exactly once.
#[test]
fn readers_race_changes() {
    let rounds = if cfg!(miri) { 4 } else { 300 };
    struct Tracked {
        round: u64,
        drops: Arc<AtomicUsize>,
    }
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let r: Registry<String, Tracked> = Registry::new();
    r.add("fixed".into(), PluginId::new("fixed"), Arc::new(Tracked { round: 0, drops: Arc::clone(&drops) })).unwrap();
    // Each round: the writer adds "p" and tells every reader its round (the
    // reader must find it); while they look up "fixed" it replaces "fixed"
    // and adds and removes another key (new key maps under their lookups);
    // once both are done it removes "p" and tells them (they must not find
    // it).
    let (tells, hears): (Vec<_>, Vec<_>) = (0..2).map(|_| mpsc::channel::<(u64, bool)>()).unzip();
    let (done, finished) = mpsc::channel::<()>();
    thread::scope(|scope| {
        for hear in hears {
            let (r, done) = (&r, done.clone());
            scope.spawn(move || {
                let mut reader = r.reader();
                for (round, present) in hear {
                    match (present, reader.lease("p")) {
                        (true, Some(lease)) => assert_eq!(lease.round, round, "an add made before the lookup"),
                        (false, None) => {}
                        (true, None) => panic!("round {round}: the reader missed an add"),
                        (false, Some(_)) => panic!("round {round}: the reader found a removed plugin"),
                    }
                    for _ in 0..50 {
                        let fixed = reader.lease("fixed").expect("never removed");
                        assert!(fixed.round + 1 >= round && fixed.round <= round, "a generation of this round");
                        if let Some(churn) = reader.lease("churn") {
                            assert_eq!(churn.round, round);
                        }
                    }
                    done.send(()).unwrap();
                }
            });
        }
        for round in 1..=rounds {
            let tracked = || Arc::new(Tracked { round, drops: Arc::clone(&drops) });
            r.add("p".into(), PluginId::new("p"), tracked()).unwrap();
            tells.iter().for_each(|tell| tell.send((round, true)).unwrap());
            drop(r.replace("fixed", tracked()).unwrap());
            r.add("churn".into(), PluginId::new("churn"), tracked()).unwrap();
            drop(r.remove("churn").unwrap());
            (0..2).for_each(|_| finished.recv().unwrap());
            r.remove("p").unwrap().wait();
            tells.iter().for_each(|tell| tell.send((round, false)).unwrap());
            (0..2).for_each(|_| finished.recv().unwrap());
        }
        drop(tells);
    });
    drop(r);
    assert_eq!(drops.load(Ordering::SeqCst), 3 * rounds as usize + 1, "every value dropped exactly once");
}

/// A lookup hashes its key with the registry's hasher before it leases the
/// key map, and every key map is built with that same hasher, never a
/// clone: a hasher that cannot be cloned, with random keys (so that two
/// instances would hash differently), serves a registry whose lookups
/// through both paths find every key across the key-map rebuilds of `add`,
/// `extend` and `remove`, and a missing key is missing.
#[test]
fn lookups_hash_with_the_registrys_hasher_across_rebuilds() {
    use std::hash::{BuildHasher, RandomState};

    /// Random keys, and no `Clone`: a registry that used a second instance
    /// would not compile, and one that made its own would not find keys.
    struct OneHasher(RandomState);
    impl BuildHasher for OneHasher {
        type Hasher = <RandomState as BuildHasher>::Hasher;
        fn build_hasher(&self) -> Self::Hasher {
            self.0.build_hasher()
        }
    }

    let r: Registry<String, Scalar, OneHasher> = Registry::with_hasher(OneHasher(RandomState::new()));
    let mut reader = r.reader();
    for round in 0..4i64 {
        r.add(format!("add-{round}"), PluginId::new("add"), Arc::new(move |x| x + round)).unwrap();
        r.extend((0..50i64).map(|i| {
            let f: Arc<Scalar> = Arc::new(move |x| x * i);
            (format!("ext-{round}-{i}"), Slot::new(PluginId::new("ext"), f))
        }))
        .unwrap();
        if round > 0 {
            drop(r.remove(&format!("add-{}", round - 1)).unwrap());
        }
        for i in 0..50i64 {
            let key = format!("ext-{round}-{i}");
            assert_eq!(r.lease(key.as_str()).map(|f| f(3)), Some(3 * i), "{key}");
            assert_eq!(reader.lease(key.as_str()).map(|f| f(3)), Some(3 * i), "{key}");
        }
        assert_eq!(r.lease(format!("add-{round}").as_str()).map(|f| f(1)), Some(1 + round));
        assert!(r.lease("missing").is_none() && reader.lease("missing").is_none());
        if round > 0 {
            let removed = format!("add-{}", round - 1);
            assert!(r.lease(removed.as_str()).is_none() && reader.lease(removed.as_str()).is_none());
        }
    }
}
