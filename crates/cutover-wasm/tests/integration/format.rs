//! The plugin format: naming, types, nulls, ignored exports, native functions.

use crate::common;

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int32Array, Int64Array};
use common::*;
use cutover::plugin::{LinkContext, Plugin, PluginSource};
use cutover_wasm::{CallError, NativeFn, ScalarPluginFn, Signature, ValueType, WasmPlugin, WasmSource};

#[test]
fn file_stem_is_the_id_and_functions_are_named_id_dot_export() {
    let source = WasmSource::from_file(fixture("math_v1.wat"));
    assert_eq!(source.id().unwrap().as_str(), "math_v1");
    let plugin = source.load_ready(&source.id().unwrap()).unwrap();
    assert_eq!(
        plugin.functions(),
        ["math_v1.mul3", "math_v1.add", "math_v1.spin", "math_v1.boom", "math_v1.peek", "math_v1.fdiv", "math_v1.sum3"]
    );
    // `pair` (two results) and `memory` are ignored; `init` is not a function.
    assert!(plugin.signature("math_v1.pair").is_none());
    assert!(plugin.signature("math_v1.init").is_none());
    assert_eq!(
        plugin.signature("math_v1.add").unwrap(),
        &Signature::new([ValueType::Int64, ValueType::Int64], ValueType::Int64)
    );
}

#[test]
fn the_example_plugin_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins/math.wat");
    let source = WasmSource::from_file(path);
    let id = source.id().unwrap();
    assert_eq!(id.as_str(), "math");
    let plugin = source.load_ready(&id).unwrap();
    assert_eq!(plugin.functions(), ["math.mul3", "math.add"]);
    assert_eq!(as_i64(&plugin.call("math.add", &[i64s(&[1, 2]), i64s(&[10, 20])]).unwrap()), [Some(11), Some(22)]);
}

#[test]
fn binary_and_text_forms_load_the_same() {
    let text = std::fs::read_to_string(fixture("math_v1.wat")).unwrap();
    let binary = wat::parse_str(&text).unwrap();
    for source in [WasmSource::from_wat(&text), WasmSource::from_bytes(binary)] {
        let plugin = source.load_ready(&id("m")).unwrap();
        assert_eq!(as_i64(&plugin.call("m.mul3", &[i64s(&[1, 2, 3])]).unwrap()), [Some(3), Some(6), Some(9)]);
    }
}

#[test]
fn the_reload_transaction_hooks_register_functions() {
    let source = WasmSource::from_file(fixture("math_v2.wat"));
    let mut plugin: WasmPlugin = PluginSource::load(&source, &id("math")).unwrap();
    let mut cx = LinkContext::default();
    plugin.link(&mut cx).unwrap();
    assert_eq!(cx.functions(), ["math.mul3", "math.add", "math.spin"]);
    // Not initialized yet: calls are refused, not run.
    assert!(matches!(plugin.call("math.mul3", &[i64s(&[1])]), Err(CallError::Unavailable { .. })));
    plugin.init().unwrap();
    assert_eq!(as_i64(&plugin.call("math.mul3", &[i64s(&[1])]).unwrap()), [Some(1_000_003)]);
    assert!(plugin.interrupt());
    plugin.shutdown();
    assert!(matches!(plugin.call("math.mul3", &[i64s(&[1])]), Err(CallError::Unavailable { .. })));
}

#[test]
fn nulls_in_any_argument_give_null() {
    let plugin = ready("math_v1.wat", test_limits());
    let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)]));
    let b: ArrayRef = Arc::new(Int64Array::from(vec![Some(10), Some(20), None, Some(40)]));
    assert_eq!(
        as_i64(&plugin.call("math.mul3", std::slice::from_ref(&a)).unwrap()),
        [Some(3), None, Some(9), Some(12)]
    );
    assert_eq!(as_i64(&plugin.call("math.add", &[a, b]).unwrap()), [Some(11), None, None, Some(44)]);
    // Sliced input (non-zero offset).
    let sliced = i64s(&[5, 6, 7, 8]).slice(1, 2);
    assert_eq!(as_i64(&plugin.call("math.mul3", &[sliced]).unwrap()), [Some(18), Some(21)]);
}

#[test]
fn floats_and_three_argument_functions() {
    let plugin = ready("math_v1.wat", test_limits());
    let x: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 9.0]));
    let y: ArrayRef = Arc::new(Float64Array::from(vec![4.0, 3.0]));
    let out = plugin.call("math.fdiv", &[x, y]).unwrap();
    assert_eq!(out.as_any().downcast_ref::<Float64Array>().unwrap().values().to_vec(), [0.25, 3.0]);

    let a: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), Some(2), None]));
    let b: ArrayRef = Arc::new(Int32Array::from(vec![10, 20, 30]));
    let c: ArrayRef = Arc::new(Int32Array::from(vec![100, 200, 300]));
    let f = plugin.function("math.sum3").unwrap();
    assert_eq!(f.signature().to_string(), "(int32, int32, int32) -> int32");
    let out = f.invoke(&[a, b, c], 3).unwrap();
    assert_eq!(
        out.as_any().downcast_ref::<Int32Array>().unwrap().iter().collect::<Vec<_>>(),
        [Some(111), Some(222), None]
    );
}

#[test]
fn argument_errors_are_clear() {
    let plugin = ready("math_v1.wat", test_limits());
    let e = plugin.call("math.nope", &[i64s(&[1])]).unwrap_err();
    assert!(matches!(e, CallError::UnknownFunction { .. }));
    assert!(e.to_string().contains("math.mul3"), "{e}");
    assert!(matches!(plugin.call("math.add", &[i64s(&[1])]), Err(CallError::ArgCount { expected: 2, got: 1, .. })));
    let i32s: ArrayRef = Arc::new(Int32Array::from(vec![1]));
    assert!(matches!(plugin.call("math.mul3", &[i32s]), Err(CallError::ArgType { index: 0, .. })));
    assert!(matches!(
        plugin.call("math.add", &[i64s(&[1, 2]), i64s(&[1])]),
        Err(CallError::LengthMismatch { index: 1, expected: 2, got: 1, .. })
    ));
    let f = plugin.function("math.mul3").unwrap();
    assert!(matches!(f.invoke(&[i64s(&[1, 2])], 3), Err(CallError::LengthMismatch { .. })));
}

#[test]
fn native_functions_implement_the_same_trait() {
    let fns: Vec<Box<dyn ScalarPluginFn>> = vec![
        Box::new(NativeFn::unary("native.mul3", |x: i64| x * 3)),
        Box::new(ready("math_v1.wat", test_limits()).function("math.mul3").unwrap()),
    ];
    let col: ArrayRef = Arc::new(Int64Array::from(vec![Some(2), None]));
    for f in &fns {
        assert_eq!(f.signature(), &Signature::new([ValueType::Int64], ValueType::Int64));
        assert_eq!(as_i64(&f.invoke(std::slice::from_ref(&col), 2).unwrap()), [Some(6), None]);
    }
    let add = NativeFn::binary("native.add", |a: i32, b: i64| a as i64 + b);
    let a: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None]));
    let out = add.invoke(&[a, i64s(&[5, 6])], 2).unwrap();
    assert_eq!(as_i64(&out), [Some(6), None]);
}

#[test]
fn granted_host_functions_are_the_only_imports() {
    let wat = r#"(module
        (import "host" "double" (func $d (param i64) (result i64)))
        (func (export "quad") (param i64) (result i64) local.get 0 call $d call $d))"#;
    let err = WasmSource::from_wat(wat).load_ready(&id("h")).unwrap_err();
    assert!(err.to_string().contains("host.double"), "{err}");
    let granted = WasmSource::from_wat(wat).grant(cutover_wasm::HostFn::new(
        "host",
        "double",
        [ValueType::Int64],
        [ValueType::Int64],
        |args, out| {
            out[0] = cutover_wasm::Val::I64(args[0].unwrap_i64() * 2);
            Ok(())
        },
    ));
    let plugin = granted.load_ready(&id("h")).unwrap();
    assert_eq!(as_i64(&plugin.call("h.quad", &[i64s(&[3])]).unwrap()), [Some(12)]);
}

#[test]
fn a_file_source_reads_the_file_again_on_every_load() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cutover-wasm-file-source");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("math.wat");
    std::fs::copy(fixture("math_v1.wat"), &path).unwrap();
    let source = WasmSource::from_file(&path);
    let id = source.id().unwrap();
    let v1 = source.load_ready(&id).unwrap();
    std::fs::copy(fixture("math_v2.wat"), &path).unwrap();
    let v2 = source.load_ready(&id).unwrap();
    assert_eq!(as_i64(&v1.call("math.mul3", &[i64s(&[1])]).unwrap()), [Some(3)]);
    assert_eq!(as_i64(&v2.call("math.mul3", &[i64s(&[1])]).unwrap()), [Some(1_000_003)]);
}

#[test]
fn concurrent_calls_from_many_threads_are_correct() {
    let plugin = ready("math_v1.wat", test_limits());
    std::thread::scope(|s| {
        for t in 0..8i64 {
            let plugin = &plugin;
            s.spawn(move || {
                for i in 0..200i64 {
                    let x = t * 1000 + i;
                    let out = plugin.call("math.add", &[i64s(&[x, 1]), i64s(&[1, x])]).unwrap();
                    assert_eq!(as_i64(&out), [Some(x + 1), Some(x + 1)]);
                }
            });
        }
    });
    // Instances created for peak concurrency are kept, up to the idle cap.
    assert!(plugin.idle_instances() >= 2);
    assert!(plugin.idle_instances() <= plugin.limits().max_idle_instances);
}
