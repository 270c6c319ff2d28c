//! Every bad input fails with a clear error and leaves the old generation
//! serving; every failing call is isolated.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int32Array};
use common::*;
use cutover::Slot;
use cutover_wasm::{CallError, LoadError, WasmLimits, WasmPlugin, WasmSource};

/// Try to reload `slot` from `source` the way a reload transaction does (load,
/// link, init, and only then cut over); return the load error.
fn try_reload(slot: &Slot<WasmPlugin>, source: WasmSource) -> LoadError {
    match source.load_ready(&id("math")) {
        Ok(p) => {
            let _ = slot.replace(Arc::new(p));
            panic!("the bad input loaded");
        }
        Err(e) => e,
    }
}

fn old_still_serves(slot: &Slot<WasmPlugin>) {
    let lease = slot.lease();
    assert_eq!(as_i64(&lease.call("math.mul3", &[i64s(&[1, 2])]).unwrap()), [Some(3), Some(6)]);
}

fn v1_slot() -> Slot<WasmPlugin> {
    Slot::new(id("math"), ready("math_v1.wat", test_limits()))
}

/// A bad input: what it is, its bytes, and the error it must give.
type Case = (&'static str, Vec<u8>, fn(&LoadError) -> bool);

fn limits() -> WasmLimits {
    test_limits().init_timeout(Duration::from_millis(50))
}

#[test]
fn each_bad_input_fails_clearly_and_the_old_generation_keeps_serving() {
    let slot = v1_slot();
    let cases: Vec<Case> = vec![
        ("garbage bytes", b"\x00\x01\x02garbage".to_vec(), |e| matches!(e, LoadError::Parse { .. })),
        ("bad text", b"(module (func (export \"f\") (result i32) i32.const))".to_vec(), |e| matches!(e, LoadError::Parse { .. })),
        ("truncated binary", b"\0asm\x01\x00\x00\x00\x01\x05".to_vec(), |e| matches!(e, LoadError::Validate { .. })),
        (
            "fails validation",
            b"(module (func (export \"f\") (result i32) i64.const 0))".to_vec(),
            |e| matches!(e, LoadError::Validate { .. }),
        ),
        (
            "ungranted import",
            b"(module (import \"env\" \"now\" (func (result i64))) (func (export \"f\") (result i32) i32.const 0))".to_vec(),
            |e| matches!(e, LoadError::ImportNotGranted { .. }),
        ),
        ("no callable exports", b"(module (func (export \"f\") (param i32)) (memory (export \"m\") 1))".to_vec(), |e| {
            matches!(e, LoadError::NoFunctions)
        }),
        (
            "init returns non-zero",
            b"(module (func (export \"init\") (result i32) i32.const 7) (func (export \"f\") (result i32) i32.const 0))".to_vec(),
            |e| matches!(e, LoadError::Init { code: 7 }),
        ),
        (
            "init traps",
            b"(module (func (export \"init\") (result i32) unreachable) (func (export \"f\") (result i32) i32.const 0))".to_vec(),
            |e| matches!(e, LoadError::InitTrap { .. }),
        ),
        (
            "init loops forever",
            b"(module (func (export \"init\") (result i32) (loop $l br $l) i32.const 0) (func (export \"f\") (result i32) i32.const 0))"
                .to_vec(),
            |e| matches!(e, LoadError::InitTimeout { .. }),
        ),
        (
            "start function loops forever",
            b"(module (func $s (loop $l br $l)) (start $s) (func (export \"f\") (result i32) i32.const 0))".to_vec(),
            |e| matches!(e, LoadError::InitTimeout { .. }),
        ),
        (
            "init has the wrong type",
            b"(module (func (export \"init\") (param i32) (result i32) i32.const 0) (func (export \"f\") (result i32) i32.const 0))"
                .to_vec(),
            |e| matches!(e, LoadError::InitSignature { .. }),
        ),
        (
            "memory larger than allowed",
            b"(module (memory 2000) (func (export \"f\") (result i32) i32.const 0))".to_vec(),
            |e| matches!(e, LoadError::MemoryTooLarge { limit, .. } if *limit == 64 << 20),
        ),
    ];
    for (what, bytes, expected) in cases {
        let err = try_reload(&slot, WasmSource::from_bytes(bytes).with_limits(limits()));
        assert!(expected(&err), "{what}: unexpected error {err:?}");
        assert!(!err.to_string().is_empty());
        eprintln!("{what}: {err}");
        old_still_serves(&slot);
    }
    // A missing file, too.
    let err = try_reload(&slot, WasmSource::from_file(fixture("no_such_plugin.wat")));
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");
    old_still_serves(&slot);
}

#[test]
fn memory_grow_past_the_limit_returns_minus_one() {
    let wat = r#"(module (memory 1)
        (func (export "grow") (param i32) (result i32) local.get 0 memory.grow))"#;
    let plugin =
        WasmSource::from_wat(wat).with_limits(test_limits().max_memory_bytes(4 * 65536)).load_ready(&id("g")).unwrap();
    let col: ArrayRef = Arc::new(Int32Array::from(vec![2, 100]));
    let out = plugin.call("g.grow", &[col]).unwrap();
    let out: Vec<_> = out.as_any().downcast_ref::<Int32Array>().unwrap().values().to_vec();
    assert_eq!(out, [1, -1]);
}

#[test]
fn traps_fail_only_that_call() {
    let plugin = ready("math_v1.wat", test_limits());
    let ok = || assert_eq!(as_i64(&plugin.call("math.mul3", &[i64s(&[5])]).unwrap()), [Some(15)]);
    let col: ArrayRef = Arc::new(Int32Array::from(vec![1, 2, 0, 3]));
    let e = plugin.call("math.boom", &[col]).unwrap_err();
    assert!(matches!(&e, CallError::Trap { row: Some(2), message, .. } if message.contains("unreachable")), "{e:?}");
    ok();
    let col: ArrayRef = Arc::new(Int32Array::from(vec![0, 70000]));
    let e = plugin.call("math.peek", &[col]).unwrap_err();
    assert!(matches!(&e, CallError::Trap { row: Some(1), message, .. } if message.contains("out of bounds")), "{e:?}");
    ok();
    // Repeated traps never exhaust the pool.
    for _ in 0..20 {
        let col: ArrayRef = Arc::new(Int32Array::from(vec![0]));
        assert!(plugin.call("math.boom", &[col]).is_err());
        ok();
    }
}

#[test]
fn a_call_over_its_time_budget_times_out_and_others_continue() {
    let plugin = ready("math_v1.wat", test_limits().call_timeout(Duration::from_millis(20)));
    let col: ArrayRef = Arc::new(Int32Array::from(vec![0, 1]));
    let e = plugin.call("math.spin", &[col]).unwrap_err();
    assert!(matches!(e, CallError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("budget"), "{e}");
    assert_eq!(as_i64(&plugin.call("math.mul3", &[i64s(&[5])]).unwrap()), [Some(15)]);
}
