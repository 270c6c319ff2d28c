//! Reload under load, and the forced rung (interrupting a stuck call).

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

use arrow_array::{ArrayRef, Int32Array};
use common::*;
use cutover::plugin::Plugin;
use cutover::Slot;
use cutover_wasm::{CallError, ScalarPluginFn, SlotFunction, WasmPlugin};

const INPUT: [i64; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// Which version produced `out` for INPUT: 1, 2, or panic.
fn version(out: &[Option<i64>]) -> u8 {
    let v1: Vec<_> = INPUT.iter().map(|x| Some(x * 3)).collect();
    let v2: Vec<_> = INPUT.iter().map(|x| Some(x * 3 + 1_000_000)).collect();
    if out == v1 {
        1
    } else if out == v2 {
        2
    } else {
        panic!("result is neither v1's nor v2's: {out:?}")
    }
}

#[test]
fn reload_while_two_threads_call_never_fails_a_call() {
    let v1 = ready("math_v1.wat", test_limits());
    let slot = Arc::new(Slot::new(id("math"), v1.clone()));
    let mul3 = Arc::new(SlotFunction::new(slot.clone(), "math.mul3").unwrap());
    let finished = Arc::new(AtomicBool::new(false));
    let final_cutover_done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(3));
    let (warm_tx, warm_rx) = mpsc::channel();
    let mut callers = Vec::new();
    for _ in 0..2 {
        let (mul3, finished, done, start, warm_tx) =
            (mul3.clone(), finished.clone(), final_cutover_done.clone(), start.clone(), warm_tx.clone());
        callers.push(std::thread::spawn(move || {
            let input = i64s(&INPUT);
            let mut seen = [0u64; 3];
            start.wait();
            let mut calls = 0u64;
            while !finished.load(Ordering::Acquire) {
                let after_final = done.load(Ordering::Acquire);
                let out = mul3.invoke(std::slice::from_ref(&input), INPUT.len()).expect("no call fails during reloads");
                let v = version(&as_i64(&out));
                if after_final {
                    assert_eq!(v, 2, "after the final cutover returned, only v2 may answer");
                }
                seen[v as usize] += 1;
                calls += 1;
                if calls == 50 {
                    warm_tx.send(()).unwrap();
                }
            }
            (calls, seen)
        }));
    }
    start.wait();
    warm_rx.recv().unwrap();
    warm_rx.recv().unwrap();
    // Generations are loaded (compiled, linked, initialized) before each
    // cutover, on this thread, never on a caller's path.
    let mut old = v1;
    const ROUNDS: usize = 41; // odd: the last reload installs v2
    for round in 0..ROUNDS {
        let file = if round % 2 == 0 { "math_v2.wat" } else { "math_v1.wat" };
        let next = ready(file, test_limits());
        let drain = slot.replace(next.clone());
        if round == ROUNDS - 1 {
            final_cutover_done.store(true, Ordering::Release);
        }
        assert!(drain.wait_timeout(Duration::from_secs(30)).is_ok(), "drain completes");
        old.shutdown();
        old = next;
    }
    // Make sure callers run after the final cutover too.
    let lease = slot.lease();
    assert_eq!(version(&as_i64(&lease.call("math.mul3", &[i64s(&INPUT)]).unwrap())), 2);
    drop(lease);
    let probe = AtomicU64::new(0);
    while probe.fetch_add(1, Ordering::Relaxed) < 200 {
        assert_eq!(version(&as_i64(&mul3.invoke(&[i64s(&INPUT)], INPUT.len()).unwrap())), 2);
    }
    finished.store(true, Ordering::Release);
    for c in callers {
        let (calls, seen) = c.join().expect("caller thread panicked");
        assert!(calls >= 50);
        assert_eq!(seen[0], 0);
    }
}

#[test]
fn a_stuck_call_is_interrupted_when_the_drain_deadline_passes() {
    let v1 = ready("math_v1.wat", test_limits().call_timeout(Duration::from_secs(3600)));
    let slot = Arc::new(Slot::new(id("math"), v1.clone()));
    let (leased_tx, leased_rx) = mpsc::channel();
    let stuck = {
        let slot = slot.clone();
        std::thread::spawn(move || {
            let lease = slot.lease();
            leased_tx.send(()).unwrap();
            let col: ArrayRef = Arc::new(Int32Array::from(vec![1]));
            lease.call("math.spin", &[col])
        })
    };
    leased_rx.recv().unwrap();
    let v2 = ready("math_v2.wat", test_limits());
    let drain = slot.replace(v2);
    // New calls reach v2 at once, while the stuck call holds v1.
    assert_eq!(as_i64(&slot.lease().call("math.mul3", &[i64s(&[1])]).unwrap()), [Some(1_000_003)]);
    // The drain deadline passes with the call still running (it never ends
    // by itself): the forced rung.
    assert!(drain.wait_timeout(Duration::from_millis(20)).is_err());
    assert!(v1.interrupt());
    assert!(drain.wait_timeout(Duration::from_secs(60)).is_ok(), "drain completes after the interrupt");
    let result = stuck.join().unwrap();
    assert!(matches!(result, Err(CallError::Interrupted { .. })), "{result:?}");
    v1.shutdown();
    // The new generation is unaffected.
    assert_eq!(as_i64(&slot.lease().call("math.mul3", &[i64s(&[2])]).unwrap()), [Some(1_000_006)]);
    let _: Arc<WasmPlugin> = v1;
}
