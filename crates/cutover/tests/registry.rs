//! `Registry`: many slots by key.
#![cfg(not(loom))]

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Barrier,
    },
    thread,
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
