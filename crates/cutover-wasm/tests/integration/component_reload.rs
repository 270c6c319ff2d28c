//! Components through the reload transaction (`cutover::host::Host`), as
//! modules: reload under concurrent calls, a module replaced by a component
//! and back, and the forced rung interrupting only the old generation.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use cutover::host::{DrainOutcome, Host, ReloadOptions};
use cutover_wasm::{CallError, PluginFormat, WasmSource};

fn source(path: &str) -> WasmSource {
    WasmSource::from_file(path).with_limits(test_limits().call_timeout(Duration::from_secs(60)))
}

const INPUT: [i64; 6] = [0, 1, 2, 3, -4, 1 << 40];

/// 1 or 2: which math version computed `out` for INPUT (panics otherwise).
fn version(out: &[Option<i64>]) -> u64 {
    let v1: Vec<_> = INPUT.iter().map(|x| Some(x * 3)).collect();
    let v2: Vec<_> = INPUT.iter().map(|x| Some(x * 3 + 1_000_000)).collect();
    match out {
        o if o == v1 => 1,
        o if o == v2 => 2,
        o => panic!("neither v1's nor v2's result: {o:?}"),
    }
}

#[test]
fn reload_components_under_concurrent_calls_never_fails_a_call() {
    let host = Arc::new(Host::new());
    host.add(id("math"), &source(test_plugins::MATH_V1)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(1));
    let barrier = Arc::new(Barrier::new(3));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop, published, barrier) = (host.clone(), stop.clone(), published.clone(), barrier.clone());
            thread::spawn(move || {
                let input = i64s(&INPUT);
                barrier.wait();
                let mut calls = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let floor = published.load(Ordering::Acquire);
                    let plugin = host.lease_str("math").expect("math is loaded");
                    let out =
                        plugin.invoke("math.mul3", std::slice::from_ref(&input), INPUT.len()).expect("no call fails");
                    let generation = plugin.generation();
                    assert!(generation >= floor, "a call after a cutover ran on an older generation");
                    // Odd generations are v1, even ones v2.
                    assert_eq!(version(&as_i64(&out)), 2 - generation % 2, "generation {generation}");
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    barrier.wait();
    for round in 0..10u64 {
        let file = if round % 2 == 0 { test_plugins::MATH_V2 } else { test_plugins::MATH_V1 };
        let report = host.reload(&id("math"), &source(file), &ReloadOptions::default()).unwrap();
        assert_eq!(report.outcome, DrainOutcome::Drained);
        published.store(report.generation.unwrap(), Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    for c in callers {
        assert!(c.join().expect("a caller failed") > 0);
    }
    let snapshot = host.snapshot(&id("math")).unwrap();
    assert_eq!(snapshot.generation, 11);
    assert_eq!(snapshot.functions, ["math.mul3", "math.add"]);
}

#[test]
fn a_module_is_replaced_by_a_component_and_back() {
    let host = Arc::new(Host::new());
    let module_v1 = WasmSource::from_file(fixture("math_v1.wat"));
    host.add(id("math"), &module_v1).unwrap();
    let slot_fn = {
        let plugin = host.lease_str("math").unwrap();
        assert_eq!(plugin.format(), PluginFormat::Module);
        drop(plugin);
        host.reload(&id("math"), &source(test_plugins::MATH_V2), &ReloadOptions::default()).unwrap();
        let plugin = host.lease_str("math").unwrap();
        assert_eq!(plugin.format(), PluginFormat::Component);
        assert_eq!(version(&as_i64(&plugin.call("math.mul3", &[i64s(&INPUT)]).unwrap())), 2);
        plugin.functions().to_vec()
    };
    assert_eq!(slot_fn, ["math.mul3", "math.add"]);
    host.reload(&id("math"), &module_v1, &ReloadOptions::default()).unwrap();
    let plugin = host.lease_str("math").unwrap();
    assert_eq!(plugin.format(), PluginFormat::Module);
    assert_eq!(version(&as_i64(&plugin.call("math.mul3", &[i64s(&INPUT)]).unwrap())), 1);
}

#[test]
fn a_stuck_component_call_is_forced_and_only_the_old_generation_is_interrupted() {
    let host = Arc::new(Host::new());
    let long = WasmSource::from_file(test_plugins::MISBEHAVE)
        .with_limits(test_limits().call_timeout(Duration::from_secs(3600)));
    host.add(id("m"), &long).unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let stuck = {
        let host = host.clone();
        thread::spawn(move || {
            let plugin = host.lease_str("m").unwrap();
            started_tx.send(plugin.generation()).unwrap();
            plugin.call("m.spin", &[i64s(&[1])])
        })
    };
    assert_eq!(started_rx.recv().unwrap(), 1);
    let options = ReloadOptions::default()
        .deadline(Duration::from_millis(50))
        .cancel(true, Duration::from_millis(10))
        .force(true, Duration::from_secs(60));
    let report = host.reload(&id("m"), &long.clone().with_config("generation 2"), &options).unwrap();
    assert_eq!(report.outcome, DrainOutcome::Forced);
    let result = stuck.join().unwrap();
    assert!(matches!(result, Err(CallError::Interrupted { ref function }) if function == "m.spin"), "{result:?}");
    // The new generation serves, unaffected by the interrupt.
    let plugin = host.lease_str("m").unwrap();
    assert_eq!(plugin.generation(), 2);
    assert!(!plugin.is_interrupted());
    let out = plugin.call("m.config", &[i64s(&[1])]).unwrap();
    let out = out.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
    assert_eq!(out.value(0), "generation 2");
}
