//! WebAssembly plugins through the reload transaction (`cutover::host::Host`).

use crate::common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Barrier,
    },
    thread,
    time::Duration,
};

use arrow_array::{ArrayRef, Int32Array};
use common::{as_i64, fixture, i64s, id, test_limits};
use cutover::{
    host::{DrainOutcome, Host, ReloadOptions, Step},
    LifecycleState,
};
use cutover_wasm::{CallError, WasmPlugin, WasmSource};

fn source(file: &str) -> WasmSource {
    WasmSource::from_file(fixture(file)).with_limits(test_limits().call_timeout(Duration::from_secs(60)))
}

fn mul3(host: &Host<WasmPlugin>, x: i64) -> (i64, u64) {
    let plugin = host.lease_str("math").expect("math is loaded");
    let out = plugin.call("math.mul3", &[i64s(&[x])]).expect("call succeeds");
    (as_i64(&out)[0].unwrap(), plugin.generation())
}

#[test]
fn reload_through_the_host_under_concurrent_calls() {
    let host = Arc::new(Host::new());
    host.add(id("math"), &source("math_v1.wat")).unwrap();
    assert_eq!(mul3(&host, 2), (6, 1));
    let snap = host.snapshot(&id("math")).unwrap();
    assert!(snap.functions.contains(&"math.mul3".to_string()), "{:?}", snap.functions);
    assert_eq!(snap.state, LifecycleState::Active);

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(1));
    let barrier = Arc::new(Barrier::new(3));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop, published, barrier) =
                (Arc::clone(&host), Arc::clone(&stop), Arc::clone(&published), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let mut calls = 0;
                while !stop.load(Ordering::Acquire) {
                    let floor = published.load(Ordering::Acquire);
                    let (y, generation) = mul3(&host, 7);
                    assert!(generation >= floor, "a call after a cutover ran on an older generation");
                    let v2 = generation % 2 == 0;
                    assert_eq!(y, if v2 { 7 * 3 + 1_000_000 } else { 21 }, "generation {generation}");
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    barrier.wait();
    for round in 0..10u64 {
        let file = if round % 2 == 0 { "math_v2.wat" } else { "math_v1.wat" };
        let report = host.reload(&id("math"), &source(file), &ReloadOptions::default()).unwrap();
        assert_eq!(report.outcome, DrainOutcome::Drained);
        published.store(report.generation.unwrap(), Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    for c in callers {
        assert!(c.join().unwrap() > 0);
    }
    assert_eq!(host.snapshot(&id("math")).unwrap().generation, 11);
}

#[test]
fn bad_input_through_the_host_keeps_the_old_generation() {
    let host = Host::new();
    host.add(id("math"), &source("math_v1.wat")).unwrap();
    let cases: [(WasmSource, Step); 4] = [
        (WasmSource::from_bytes(b"\0asm garbage".to_vec()), Step::Load),
        (WasmSource::from_wat("(module (func (export \"f\") (param i32) (result i32) local.get 7))"), Step::Load),
        (WasmSource::from_wat("(module (import \"env\" \"x\" (func)) (func (export \"f\") (result i32) i32.const 1))"), Step::Link),
        (WasmSource::from_wat("(module (func (export \"init\") (result i32) i32.const 3) (func (export \"f\") (result i32) i32.const 1))"), Step::Init),
    ];
    for (bad, step) in cases {
        let err = host.reload(&id("math"), &bad, &ReloadOptions::default()).unwrap_err();
        assert_eq!(err.step(), Some(step), "{err}");
        assert_eq!(mul3(&host, 1), (3, 1), "the old generation keeps serving after: {err}");
        assert!(host.snapshot(&id("math")).unwrap().last_error.is_some());
    }
}

#[test]
fn a_stuck_call_is_forced_at_the_drain_deadline() {
    let host = Arc::new(Host::new());
    host.add(id("math"), &source("math_v1.wat")).unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let stuck = {
        let host = Arc::clone(&host);
        thread::spawn(move || {
            let plugin = host.lease_str("math").unwrap();
            started_tx.send(()).unwrap();
            let spin: ArrayRef = Arc::new(Int32Array::from(vec![1]));
            plugin.call("math.spin", &[spin])
        })
    };
    started_rx.recv().unwrap();
    let options = ReloadOptions::default()
        .deadline(Duration::from_millis(50))
        .cancel(true, Duration::from_millis(10))
        .force(true, Duration::from_secs(60));
    let report = host.reload(&id("math"), &source("math_v2.wat"), &options).unwrap();
    assert_eq!(report.outcome, DrainOutcome::Forced);
    assert_eq!(report.stragglers.as_ref().map(|s| s.in_flight), Some(1));
    assert!(matches!(stuck.join().unwrap(), Err(CallError::Interrupted { .. })));
    assert_eq!(mul3(&host, 1), (1_000_003, 2), "the new generation serves");
}
