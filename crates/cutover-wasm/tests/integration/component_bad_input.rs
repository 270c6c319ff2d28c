//! Every bad input of a component (issue 9, "Bad input"): each fails with a
//! clear error, through the host's reload transaction the old generation
//! keeps serving, and a failing call fails only itself.
//!
//! The broken components are Rust guests (plugins/broken/): another world, a
//! `functions` that traps or returns bad names, an `init` that refuses its
//! configuration, calls that break the result contract, trap, loop or grow
//! memory without bound, and an import the host does not provide.

use crate::common;

use std::time::Duration;

use arrow_array::ArrayRef;
use common::*;
use cutover::host::{Host, ReloadOptions, Step};
use cutover_wasm::{CallError, LoadError, WasmLimits, WasmPlugin, WasmSource};

fn limits() -> WasmLimits {
    test_limits()
        .init_timeout(Duration::from_millis(200))
        .call_timeout(Duration::from_millis(200))
        .max_memory_bytes(16 << 20)
}

fn source(path: &str) -> WasmSource {
    WasmSource::from_file(path).with_limits(limits())
}

/// A host serving the math v1 component as `math`.
fn math_host() -> Host<WasmPlugin> {
    let host = Host::new();
    host.add(id("math"), &source(test_plugins::MATH_V1)).unwrap();
    host
}

/// The old generation (math v1, generation `generation`) still serves.
fn old_still_serves(host: &Host<WasmPlugin>, generation: u64) {
    let plugin = host.lease_str("math").expect("math is loaded");
    assert_eq!(plugin.generation(), generation);
    assert_eq!(as_i64(&plugin.call("math.mul3", &[i64s(&[1, 2])]).unwrap()), [Some(3), Some(6)]);
}

/// A bad input: what it is, its source, the step that must fail, and a check of the error.
type Case = (&'static str, WasmSource, Step, fn(&LoadError) -> bool);

#[test]
fn each_bad_component_fails_its_load_clearly_and_the_old_generation_keeps_serving() {
    let host = math_host();
    let cases: Vec<Case> = vec![
        ("a component of another world", source(test_plugins::OTHER_WORLD), Step::Load, |e| {
            matches!(e, LoadError::WrongWorld { message } if message.contains("cutover:plugin/scalar@0.1.0")
                && message.contains("test:other/greeter@0.1.0"))
        }),
        ("functions traps", source(test_plugins::FUNCTIONS_TRAP), Step::Link, |e| {
            matches!(e, LoadError::Functions { message } if message.contains("trapped")
                && message.contains("functions() was told to trap"))
        }),
        (
            "functions returns an empty name",
            source(test_plugins::FUNCTIONS_EMPTY_NAME),
            Step::Link,
            |e| matches!(e, LoadError::FunctionName { name, problem } if name.is_empty() && *problem == "is empty"),
        ),
        (
            "functions returns a name twice",
            source(test_plugins::FUNCTIONS_REPEATED),
            Step::Link,
            |e| matches!(e, LoadError::FunctionName { name, problem } if name == "twice" && *problem == "is repeated"),
        ),
        (
            "functions returns a name with a dot",
            source(test_plugins::FUNCTIONS_DOTTED),
            Step::Link,
            |e| matches!(e, LoadError::FunctionName { name, problem } if name == "a.b" && *problem == "contains `.`"),
        ),
        (
            "init returns err",
            source(test_plugins::MISBEHAVE).with_config("init-err"),
            Step::Init,
            |e| matches!(e, LoadError::InitRefused { message } if message == "this configuration is refused: init-err"),
        ),
        (
            "init traps",
            source(test_plugins::MISBEHAVE).with_config("init-trap"),
            Step::Init,
            |e| matches!(e, LoadError::InitTrap { message } if message.contains("init was told to trap")),
        ),
        (
            "init never returns",
            source(test_plugins::MISBEHAVE).with_config("init-loop"),
            Step::Init,
            |e| matches!(e, LoadError::InitTimeout { budget } if *budget == Duration::from_millis(200)),
        ),
        (
            "an import the host does not provide",
            source(test_plugins::EXTRA_IMPORT),
            Step::Link,
            |e| matches!(e, LoadError::ImportNotProvided { name, .. } if name == "test:extra/vault@0.1.0"),
        ),
        ("a component in text of no world", WasmSource::from_wat("(component)"), Step::Load, |e| {
            matches!(e, LoadError::WrongWorld { .. })
        }),
        ("a broken component binary", WasmSource::from_bytes(b"\0asm\x0d\x00\x01\x00\x07".to_vec()), Step::Load, |e| {
            matches!(e, LoadError::Validate { format: cutover_wasm::PluginFormat::Component, .. })
        }),
    ];
    for (what, bad, step, expected) in cases {
        let err = host.reload(&id("math"), &bad, &ReloadOptions::default()).unwrap_err();
        assert_eq!(err.step(), Some(step), "{what}: {err}");
        let load_error = std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<LoadError>())
            .unwrap_or_else(|| panic!("{what}: no LoadError in {err:?}"));
        assert!(expected(load_error), "{what}: unexpected error {load_error:?}");
        eprintln!("{what}: {load_error}");
        old_still_serves(&host, 1);
        assert!(host.snapshot(&id("math")).unwrap().last_error.is_some(), "{what}");
    }
    // And a good reload after all that.
    host.reload(&id("math"), &source(test_plugins::MATH_V2), &ReloadOptions::default()).unwrap();
    let plugin = host.lease_str("math").unwrap();
    assert_eq!(as_i64(&plugin.call("math.mul3", &[i64s(&[1])]).unwrap()), [Some(1_000_003)]);
}

/// A bad call: the function, and a check of the error.
type CallCase = (&'static str, fn(&CallError) -> bool);

#[test]
fn each_bad_call_fails_alone_and_the_plugin_keeps_serving() {
    let host = Host::new();
    host.add(id("m"), &source(test_plugins::MISBEHAVE)).unwrap();
    let cases: Vec<CallCase> = vec![
        (
            "m.wrong_rows",
            |e| matches!(e, CallError::BadResult { function, message } if function == "m.wrong_rows" && message == "it has 2 rows, expected 3"),
        ),
        (
            "m.wrong_type",
            |e| matches!(e, CallError::BadResult { message, .. } if message.contains("float64 column") && message.contains("declared to return int64")),
        ),
        (
            "m.offsets_backwards",
            |e| matches!(e, CallError::BadResult { message, .. } if message.contains("run backwards")),
        ),
        (
            "m.offsets_count",
            |e| matches!(e, CallError::BadResult { message, .. } if message.contains("3 offsets; 3 rows need 4")),
        ),
        (
            "m.offsets_start",
            |e| matches!(e, CallError::BadResult { message, .. } if message.contains("start at 1, not 0")),
        ),
        ("m.offsets_beyond", |e| matches!(e, CallError::BadResult { message, .. } if message.contains("past the end"))),
        ("m.bad_utf8", |e| matches!(e, CallError::BadResult { message, .. } if message.contains("row 0 is not UTF-8"))),
        (
            "m.short_validity",
            |e| matches!(e, CallError::BadResult { message, .. } if message.contains("validity bitmap has 0 byte(s)")),
        ),
        (
            "m.fail",
            |e| matches!(e, CallError::Plugin { function, message } if function == "m.fail" && message.contains("always fails")),
        ),
        (
            "m.trap",
            |e| matches!(e, CallError::Trap { function, row: None, message } if function == "m.trap" && message.contains("unreachable") && message.contains("the plugin panicked on purpose")),
        ),
        (
            "m.spin",
            |e| matches!(e, CallError::Timeout { function, budget } if function == "m.spin" && *budget == Duration::from_millis(200)),
        ),
        (
            "m.grow",
            |e| matches!(e, CallError::OutOfMemory { function, limit, .. } if function == "m.grow" && *limit == 16 << 20),
        ),
    ];
    let input: ArrayRef = i64s(&[1, 2, 3]);
    for (function, expected) in cases {
        let plugin = host.lease_str("m").unwrap();
        let err = plugin.call(function, std::slice::from_ref(&input)).unwrap_err();
        assert!(expected(&err), "{function}: unexpected error {err:?}");
        let message = err.to_string();
        assert!(message.contains(function), "the error names the plugin and function: {message}");
        eprintln!("{function}: {message}");
        drop(plugin);
        // The plugin keeps serving, on the same generation.
        let plugin = host.lease_str("m").unwrap();
        assert_eq!(plugin.generation(), 1);
        assert_eq!(as_i64(&plugin.call("m.log", std::slice::from_ref(&input)).unwrap()), [Some(1), Some(2), Some(3)]);
    }
    // Repeated traps, time-outs and out-of-memory never exhaust the pool.
    let plugin = host.lease_str("m").unwrap();
    for function in ["m.trap", "m.grow", "m.trap", "m.spin", "m.trap", "m.grow"] {
        assert!(plugin.call(function, std::slice::from_ref(&input)).is_err());
        assert!(plugin.call("m.log", std::slice::from_ref(&input)).is_ok());
    }
}
