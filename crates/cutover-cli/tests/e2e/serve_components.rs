//! End-to-end tests of `cutover serve` with WebAssembly components (the
//! Rust guests under `plugins/`, built by the `test-plugins` crate) served
//! beside core modules: JSON ↔ every data type, signatures, `.config`
//! files, and broken components.

use crate::common;

use std::path::Path;

use common::{Server, MATH_V1};
use serde_json::{json, Value};

/// Copy the built component `from` into the plugin directory as `name`,
/// atomically (a temporary file renamed over it).
fn install(dir: &Path, name: &str, from: &str) {
    let tmp = dir.join(format!(".{name}.tmp~"));
    std::fs::copy(from, &tmp).unwrap_or_else(|e| panic!("copy {from}: {e}"));
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

/// Start a server over a directory holding the components `components`
/// (file name, built component) and the text files `files`.
fn start(components: &[(&str, &str)], files: &[(&str, &str)], flags: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, from) in components {
        install(dir.path(), name, from);
    }
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write file");
    }
    Server::start_in(dir, flags)
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_else(|| panic!("no \"error\" string in {body}"))
}

/// `POST /v1/call/{target}` with `args`, expecting 200: the result.
fn ok(server: &Server, target: &str, args: Value) -> Value {
    let (status, body) = server.call(target, &json!({ "args": args }).to_string());
    assert_eq!(status, 200, "{target} {args}: {body}");
    body["result"].clone()
}

#[test]
fn every_type_round_trips_with_nulls() {
    let server = start(&[("types.wasm", test_plugins::TYPES), ("text.wasm", test_plugins::TEXT)], &[], &[]);
    for (ty, column) in [
        ("boolean", json!([true, null, false])),
        ("int32", json!([i32::MIN, null, 7, i32::MAX])),
        ("int64", json!([i64::MIN, null, i64::MAX])),
        ("float32", json!([0.5, null, -1.25, 3.0])),
        ("float64", json!([1e300, null, -0.5, 0.1])),
        ("utf8", json!(["héllo", null, "", "日本語", "a\"b\\c"])),
        ("binary", json!(["AAE=", null, "", "/w==", "aGVsbG8gd29ybGQ="])),
    ] {
        // The plugin returns its argument: JSON → Arrow → guest → Arrow → JSON.
        assert_eq!(ok(&server, &format!("types.echo_{ty}"), json!([column])), column, "{ty}");
        // The plugin saw the values (and the nulls) the JSON meant.
        let shown = ok(&server, &format!("types.show_{ty}"), json!([column]));
        assert_eq!(shown[1], Value::Null, "{ty}: {shown}");
    }
    assert_eq!(ok(&server, "types.show_boolean", json!([[true, null]])), json!(["true", null]));
    assert_eq!(ok(&server, "types.show_int64", json!([[i64::MIN]])), json!([i64::MIN.to_string()]));
    assert_eq!(ok(&server, "types.show_utf8", json!([["é"]])), json!(["\"é\""]));
    // Base64 is decoded before the call and encoded after it.
    assert_eq!(ok(&server, "types.show_binary", json!([["AAH/", null, ""]])), json!(["[0, 1, 255]", null, "[]"]));
    assert_eq!(ok(&server, "types.parse_binary", json!([["hi", null, ""]])), json!(["aGk=", null, ""]));
    // Columns built by the plugin, nulls decided by the plugin (a row that
    // does not parse is null); a non-finite float is returned as null.
    assert_eq!(ok(&server, "types.parse_boolean", json!([["true", "x", null]])), json!([true, null, null]));
    assert_eq!(ok(&server, "types.parse_int32", json!([["-7", "9", null]])), json!([-7, 9, null]));
    assert_eq!(ok(&server, "types.parse_float64", json!([["1.5", "NaN", null]])), json!([1.5, null, null]));

    assert_eq!(ok(&server, "text.upper", json!([["ada", null, "straße"]])), json!(["ADA", null, "STRASSE"]));
    assert_eq!(ok(&server, "text.length", json!([["日本", null, ""]])), json!([2, null, 0]));
    assert_eq!(ok(&server, "text.concat", json!([["a", "b", null], ["x", null, "z"]])), json!(["ax", null, null]));
    assert_eq!(ok(&server, "text.upper", json!([[]])), json!([]));
    let (status, body) = server.call("text.upper", r#"{"args": [["x"]]}"#);
    assert_eq!((status, body), (200, json!({"result": ["X"], "generation": 1})));
}

#[test]
fn a_value_of_the_wrong_json_type_is_400_with_the_argument_index() {
    let server = start(&[("types.wasm", test_plugins::TYPES), ("text.wasm", test_plugins::TEXT)], &[], &[]);
    for (target, args, needle) in [
        ("text.concat", json!([["a"], [1]]), "argument 1 of `text.concat` is utf8"),
        ("text.concat", json!([[true], ["b"]]), "argument 0 of `text.concat` is utf8"),
        ("text.upper", json!([[["nested"]]]), "argument 0 of `text.upper` is utf8"),
        ("types.echo_boolean", json!([[true, 1]]), "argument 0 of `types.echo_boolean` is boolean: value 1 at row 1"),
        ("types.echo_boolean", json!([["true"]]), "is not a boolean"),
        ("types.echo_int64", json!([[true]]), "argument 0 of `types.echo_int64` is int64"),
        ("types.echo_float64", json!([["1.5"]]), "not a number"),
        ("types.echo_binary", json!([[[0, 1]]]), "argument 0 of `types.echo_binary` is binary"),
        ("types.echo_binary", json!([["AAE"]]), "not standard padded base64"),
        ("types.echo_binary", json!([["a b="]]), "not standard padded base64"),
    ] {
        let (status, body) = server.call(target, &json!({ "args": args }).to_string());
        assert_eq!(status, 400, "{target} {args}: {body}");
        assert!(error_of(&body).contains(needle), "{target} {args}: {body}, expected {needle:?}");
    }
    // The plugin is unaffected.
    assert_eq!(ok(&server, "text.upper", json!([["ok"]])), json!(["OK"]));
}

#[test]
fn signatures_are_listed_for_components_and_modules() {
    let server =
        start(&[("text.wasm", test_plugins::TEXT), ("types.wasm", test_plugins::TYPES)], &[("math.wat", MATH_V1)], &[]);
    let text = server.plugin("text").expect("text listed");
    assert_eq!(text["kind"], "component", "{text}");
    assert_eq!(text["format"], "wasm", "{text}");
    assert_eq!(
        text["signatures"],
        json!([
            {"name": "text.upper", "params": ["utf8"], "returns": "utf8", "deterministic": true},
            {"name": "text.lower", "params": ["utf8"], "returns": "utf8", "deterministic": true},
            {"name": "text.length", "params": ["utf8"], "returns": "int32", "deterministic": true},
            {"name": "text.concat", "params": ["utf8", "utf8"], "returns": "utf8", "deterministic": true},
        ]),
        "{text}"
    );
    assert_eq!(text["functions"], json!(["text.upper", "text.lower", "text.length", "text.concat"]));

    let types = server.plugin("types").expect("types listed");
    let signature = |name: &str| {
        types["signatures"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap_or(Value::Null)
    };
    assert_eq!(
        signature("types.instance_calls"),
        json!({"name": "types.instance_calls", "params": ["boolean"], "returns": "int64", "deterministic": false})
    );
    assert_eq!(signature("types.parse_binary")["returns"], "binary");
    assert_eq!(signature("types.echo_float32")["params"], json!(["float32"]));

    let math = server.plugin("math").expect("math listed");
    assert_eq!(math["kind"], "module", "{math}");
    let math_signatures = math["signatures"].as_array().unwrap();
    for expected in [
        json!({"name": "math.mul3", "params": ["int64"], "returns": "int64", "deterministic": true}),
        json!({"name": "math.add", "params": ["int64", "int64"], "returns": "int64", "deterministic": true}),
        json!({"name": "math.half", "params": ["float64"], "returns": "float64", "deterministic": true}),
        json!({"name": "math.boom", "params": ["int32"], "returns": "int32", "deterministic": true}),
    ] {
        assert!(math_signatures.contains(&expected), "{expected} not in {math}");
    }
    assert_eq!(math_signatures.len(), math["functions"].as_array().unwrap().len(), "{math}");
}

#[test]
fn a_config_file_is_passed_to_init_and_changing_it_reloads() {
    let server = start(
        &[("misbehave.wasm", test_plugins::MISBEHAVE)],
        &[("misbehave.config", "hello"), ("stray.config", "not a plugin")],
        &[],
    );
    let config = |s: &Server| s.call("misbehave.config", r#"{"args": [[1, 2]]}"#).1;
    assert_eq!(config(&server), json!({"result": ["hello", "hello"], "generation": 1}));
    // A `.config` file is not a plugin, alone or beside one.
    let plugins = server.plugins();
    assert_eq!(plugins.len(), 1, "{plugins:?}");
    assert!(plugins[0]["config_path"].as_str().unwrap().ends_with("misbehave.config"), "{plugins:?}");

    // Changing the configuration reloads the plugin with it.
    server.write("misbehave.config", "world");
    server.wait_generation("misbehave", 2);
    assert_eq!(config(&server), json!({"result": ["world", "world"], "generation": 2}));

    // A configuration `init` refuses: the load fails, generation 2 keeps serving.
    server.write("misbehave.config", "init-err");
    server.wait_for("init's refusal recorded", |s| {
        s.plugin("misbehave").is_some_and(|p| p["last_error"].as_str().is_some_and(|e| e.contains("init-err")))
    });
    assert_eq!(config(&server), json!({"result": ["world", "world"], "generation": 2}));

    // Deleting the file reloads with the empty configuration.
    std::fs::remove_file(server.path("misbehave.config")).unwrap();
    server.wait_for("generation 3 without an error", |s| {
        s.plugin("misbehave").is_some_and(|p| p["generation"] == 3 && p["last_error"].is_null())
    });
    assert_eq!(config(&server), json!({"result": ["", ""], "generation": 3}));
    assert!(server.plugin("misbehave").unwrap()["config_path"].is_null());

    // Creating it again reloads too.
    server.write("misbehave.config", "again");
    server.wait_generation("misbehave", 4);
    assert_eq!(config(&server), json!({"result": ["again", "again"], "generation": 4}));
}

#[test]
fn components_hot_reload_and_a_broken_one_keeps_the_old_generation_serving() {
    let server = start(&[("math.wasm", test_plugins::MATH_V1)], &[], &[]);
    assert_eq!(
        server.call("math.mul3", r#"{"args": [[1, null, -2]]}"#).1,
        json!({"result": [3, null, -6], "generation": 1})
    );

    // Broken components: each fails its load, generation 1 keeps serving.
    for (broken, needle) in [
        (test_plugins::FUNCTIONS_TRAP, "the plugin's `functions`"),
        (test_plugins::OTHER_WORLD, "is not a cutover plugin"),
        (test_plugins::EXTRA_IMPORT, "which the host does not provide"),
        (test_plugins::FUNCTIONS_DOTTED, "contain no `.`"),
    ] {
        let before = server.plugin("math").unwrap()["last_error"].clone();
        install(&server.dir, "math.wasm", broken);
        server.wait_for(&format!("the load of {broken} failing"), |s| {
            s.plugin("math").is_some_and(|p| p["last_error"].is_string() && p["last_error"] != before)
        });
        let math = server.plugin("math").unwrap();
        assert_eq!(math["generation"], 1, "{math}");
        assert!(math["last_error"].as_str().unwrap().contains(needle), "{needle}: {math}");
        assert_eq!(server.call("math.mul3", r#"{"args": [[2]]}"#).1, json!({"result": [6], "generation": 1}));
    }

    // Version 2 replaces it: hot-reloaded, the error cleared.
    install(&server.dir, "math.wasm", test_plugins::MATH_V2);
    server.wait_for("version 2 without an error", |s| {
        s.plugin("math").is_some_and(|p| p["generation"] == 2 && p["last_error"].is_null())
    });
    assert_eq!(
        server.call("math.mul3", r#"{"args": [[1, null]]}"#).1,
        json!({"result": [1_000_003, null], "generation": 2})
    );

    // A result that breaks the contract is a call error naming the plugin
    // and the function; the server keeps serving.
    install(&server.dir, "bad.wasm", test_plugins::MISBEHAVE);
    server.wait_generation("bad", 1);
    for (function, needle) in [("wrong_rows", "rows"), ("bad_utf8", "UTF-8"), ("fail", "always fails")] {
        let (status, body) = server.call(&format!("bad.{function}"), r#"{"args": [[1, 2]]}"#);
        assert_eq!(status, 500, "{function}: {body}");
        let error = error_of(&body);
        assert!(error.contains(&format!("bad.{function}")) && error.contains(needle), "{function}: {error}");
    }
    assert_eq!(server.call("math.add", r#"{"args": [[1], [2]]}"#).1["result"], json!([1_000_003]));
}
