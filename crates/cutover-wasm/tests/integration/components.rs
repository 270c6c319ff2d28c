//! The Rust guest plugins (plugins/): text, geo, math; configuration, logs,
//! and telling a component from a module by its header.

use crate::common;

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};
use common::*;
use cutover::Slot;
use cutover_wasm::{PluginFormat, ScalarPluginFn, Signature, SlotFunction, ValueType, WasmSource};

fn strs(v: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

fn as_strs(a: &ArrayRef) -> Vec<Option<String>> {
    a.as_any().downcast_ref::<StringArray>().expect("utf8 result").iter().map(|v| v.map(str::to_owned)).collect()
}

fn owned(v: &[Option<&str>]) -> Vec<Option<String>> {
    v.iter().map(|s| s.map(str::to_owned)).collect()
}

#[test]
fn text_functions_are_null_aware() {
    let text = component(test_plugins::TEXT, "text", test_limits());
    assert_eq!(text.functions(), ["text.upper", "text.lower", "text.length", "text.concat"]);
    assert_eq!(text.signature("text.length"), Some(&Signature::new([ValueType::Utf8], ValueType::Int32)));
    assert_eq!(
        text.signature("text.concat"),
        Some(&Signature::new([ValueType::Utf8, ValueType::Utf8], ValueType::Utf8))
    );

    // ASCII (converted in place) and not (per row), nulls and empty strings.
    let ascii = strs(&[Some("abc"), None, Some(""), Some("MiXeD 42")]);
    let unicode = strs(&[Some("straße"), None, Some("ÉCOLE"), Some("ǅ")]);
    assert_eq!(
        as_strs(&text.call("text.upper", std::slice::from_ref(&ascii)).unwrap()),
        owned(&[Some("ABC"), None, Some(""), Some("MIXED 42")])
    );
    assert_eq!(
        as_strs(&text.call("text.lower", std::slice::from_ref(&ascii)).unwrap()),
        owned(&[Some("abc"), None, Some(""), Some("mixed 42")])
    );
    assert_eq!(
        as_strs(&text.call("text.upper", std::slice::from_ref(&unicode)).unwrap()),
        owned(&[Some("STRASSE"), None, Some("ÉCOLE"), Some("Ǆ")])
    );
    assert_eq!(
        as_strs(&text.call("text.lower", std::slice::from_ref(&unicode)).unwrap()),
        owned(&[Some("straße"), None, Some("école"), Some("ǆ")])
    );

    let length = text.call("text.length", &[unicode]).unwrap();
    let length: Vec<_> = length.as_any().downcast_ref::<Int32Array>().unwrap().iter().collect();
    assert_eq!(length, [Some(6), None, Some(5), Some(1)]);

    let a = strs(&[Some("foo"), None, Some("x"), Some("")]);
    let b = strs(&[Some("bar"), Some("y"), None, Some("é")]);
    assert_eq!(as_strs(&text.call("text.concat", &[a, b]).unwrap()), owned(&[Some("foobar"), None, None, Some("é")]));
}

#[test]
fn sliced_string_columns_are_rebased() {
    let text = component(test_plugins::TEXT, "text", test_limits());
    let column = strs(&[Some("skip"), Some("me"), Some("a"), None, Some("bc"), Some("dé")]);
    let sliced = column.slice(2, 4);
    let out = text.call("text.upper", &[sliced]).unwrap();
    assert_eq!(as_strs(&out), owned(&[Some("A"), None, Some("BC"), Some("DÉ")]));
}

#[test]
fn geo_haversine_km() {
    let geo = component(test_plugins::GEO, "geo", test_limits());
    let f = |v: Vec<Option<f64>>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
    // One degree of longitude on the equator; Paris → London; a null row.
    let lat1 = f(vec![Some(0.0), Some(48.8566), None, Some(10.0)]);
    let lon1 = f(vec![Some(0.0), Some(2.3522), Some(0.0), Some(20.0)]);
    let lat2 = f(vec![Some(0.0), Some(51.5074), Some(0.0), Some(10.0)]);
    let lon2 = f(vec![Some(1.0), Some(-0.1278), Some(0.0), Some(20.0)]);
    let out = geo.call("geo.haversine_km", &[lat1, lon1, lat2, lon2]).unwrap();
    let out: Vec<_> = out.as_any().downcast_ref::<Float64Array>().unwrap().iter().collect();
    let one_degree = 2.0 * std::f64::consts::PI * 6371.0088 / 360.0;
    assert!((out[0].unwrap() - one_degree).abs() < 1e-9, "{out:?}");
    assert!((out[1].unwrap() - 343.56).abs() < 0.5, "{out:?}");
    assert_eq!(out[2], None);
    assert_eq!(out[3], Some(0.0));
}

#[test]
fn math_versions_tell_themselves_apart() {
    let v1 = component(test_plugins::MATH_V1, "math", test_limits());
    let v2 = component(test_plugins::MATH_V2, "math", test_limits());
    let x: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(-2), Some(i64::MAX)]));
    let y: ArrayRef = Arc::new(Int64Array::from(vec![Some(10), Some(20), None, Some(1)]));
    assert_eq!(
        as_i64(&v1.call("math.mul3", std::slice::from_ref(&x)).unwrap()),
        [Some(3), None, Some(-6), Some(i64::MAX.wrapping_mul(3))]
    );
    assert_eq!(
        as_i64(&v2.call("math.mul3", std::slice::from_ref(&x)).unwrap())[..3],
        [Some(1_000_003), None, Some(999_994)]
    );
    assert_eq!(as_i64(&v1.call("math.add", &[x.clone(), y.clone()]).unwrap()), [Some(11), None, None, Some(i64::MIN)]);
    assert_eq!(as_i64(&v2.call("math.add", &[x, y]).unwrap())[..3], [Some(1_000_011), None, None]);
}

/// `math.mul3` works two rows at a time (WebAssembly SIMD) with a scalar
/// tail: every length, odd ones included, and the wrapping extremes give
/// what `i64::wrapping_mul` does, in both versions.
#[test]
fn math_mul3_matches_wrapping_arithmetic_on_every_length() {
    let v1 = component(test_plugins::MATH_V1, "math", test_limits());
    let v2 = component(test_plugins::MATH_V2, "math", test_limits());
    let pool = [i64::MIN, i64::MIN + 1, -3_074_457_345_618_258_603, -1, 0, 1, 3_074_457_345_618_258_603, i64::MAX];
    for rows in 0..=17usize {
        let values: Vec<i64> = (0..rows).map(|i| pool[i % pool.len()].wrapping_add(i as i64 / 8)).collect();
        let x: ArrayRef = Arc::new(Int64Array::from(values.clone()));
        let want =
            |offset: i64| values.iter().map(|v| Some(v.wrapping_mul(3).wrapping_add(offset))).collect::<Vec<_>>();
        assert_eq!(as_i64(&v1.call("math.mul3", std::slice::from_ref(&x)).unwrap()), want(0), "{rows} rows");
        assert_eq!(as_i64(&v2.call("math.mul3", std::slice::from_ref(&x)).unwrap()), want(1_000_000), "{rows} rows");
    }
}

#[test]
fn a_component_is_told_from_a_module_by_its_header_not_its_name() {
    let dir = std::env::temp_dir().join(format!("cutover-wasm-format-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A component in a file named .wat, a binary module in a file named .wasm.
    let misnamed = dir.join("math.wat");
    std::fs::copy(test_plugins::MATH_V1, &misnamed).unwrap();
    let module = dir.join("mod.wasm");
    std::fs::write(&module, wat::parse_file(fixture("math_v1.wat")).unwrap()).unwrap();

    let source = WasmSource::from_file(&misnamed);
    assert_eq!(source.id(), Some(id("math")));
    let plugin = source.load_ready(&id("math")).unwrap();
    assert_eq!(plugin.format(), PluginFormat::Component);
    assert_eq!(as_i64(&plugin.call("math.mul3", &[i64s(&[2])]).unwrap()), [Some(6)]);

    let plugin = WasmSource::from_file(&module).load_ready(&id("m")).unwrap();
    assert_eq!(plugin.format(), PluginFormat::Module);
    assert_eq!(as_i64(&plugin.call("m.mul3", &[i64s(&[2])]).unwrap()), [Some(6)]);

    // Components in WebAssembly text are components too (this one is of no
    // world at all, so it is refused as such).
    let err = WasmSource::from_wat("(component)").load_ready(&id("c")).unwrap_err();
    assert!(matches!(err, cutover_wasm::LoadError::WrongWorld { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_receives_the_configuration_text_on_every_instance() {
    let limits = test_limits().prewarm_instances(3).max_idle_instances(3);
    let configured =
        WasmSource::from_file(test_plugins::MISBEHAVE).with_config("threshold = 3").with_limits(limits.clone());
    assert_eq!(configured.config(), "threshold = 3");
    let plugin = Arc::new(configured.load_ready(&id("m")).unwrap());
    // Calls from several threads at once use several instances: each was
    // initialized with the configuration.
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (plugin, barrier) = (plugin.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..20).map(|_| as_strs(&plugin.call("m.config", &[i64s(&[1, 2])]).unwrap())).collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for out in t.join().unwrap() {
            assert_eq!(out, owned(&[Some("threshold = 3"), Some("threshold = 3")]));
        }
    }
    // No configuration: the empty string.
    let plain = component(test_plugins::MISBEHAVE, "m", limits);
    assert_eq!(as_strs(&plain.call("m.config", &[i64s(&[1])]).unwrap()), owned(&[Some("")]));
}

#[test]
fn host_log_stdout_and_stderr_go_to_tracing_with_the_plugin_id() {
    let plugin = component(test_plugins::MISBEHAVE, "noisy", test_limits());
    let logs = capture_logs(|| {
        assert_eq!(as_i64(&plugin.call("noisy.log", &[i64s(&[5, 6])]).unwrap()), [Some(5), Some(6)]);
    });
    for expected in ["log called with 2 rows", "hello from stdout", "hello from stderr"] {
        let line = logs.lines().find(|l| l.contains(expected)).unwrap_or_else(|| panic!("no `{expected}` in:\n{logs}"));
        assert!(line.contains("plugin=\"noisy\"") || line.contains("plugin=noisy"), "{line}");
        assert!(line.contains("cutover_wasm::plugin"), "{line}");
    }
    let level = |needle: &str| {
        logs.lines().find(|l| l.contains(needle)).map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
    };
    assert_eq!(level("log called").as_deref(), Some("INFO"), "{logs}");
    assert_eq!(level("from stdout").as_deref(), Some("INFO"), "{logs}");
    assert_eq!(level("from stderr").as_deref(), Some("WARN"), "{logs}");
}

#[test]
fn components_serve_through_the_same_handles() {
    let v1 = component(test_plugins::MATH_V1, "math", test_limits());
    let slot = Arc::new(Slot::new(id("math"), v1.clone()));
    let f = SlotFunction::new(slot.clone(), "math.mul3").unwrap();
    assert_eq!(as_i64(&f.invoke(&[i64s(&[1, 2])], 2).unwrap()), [Some(3), Some(6)]);
    let handle = v1.function("mul3").unwrap();
    assert_eq!(handle.name(), "math.mul3");
    assert_eq!(as_i64(&handle.invoke(&[i64s(&[4])], 1).unwrap()), [Some(12)]);
    let all: Vec<String> = v1.scalar_functions().iter().map(|f| f.name().to_owned()).collect();
    assert_eq!(all, ["math.mul3", "math.add"]);
    // A module generation, then a component: same id, same signature.
    let _ = slot.replace(ready("math_v2.wat", test_limits()));
    assert_eq!(as_i64(&f.invoke(&[i64s(&[1])], 1).unwrap()), [Some(1_000_003)]);
    let _ = slot.replace(component(test_plugins::MATH_V2, "math", test_limits()));
    assert_eq!(as_i64(&f.invoke(&[i64s(&[1])], 1).unwrap()), [Some(1_000_003)]);
}
