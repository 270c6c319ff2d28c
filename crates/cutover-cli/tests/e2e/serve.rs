//! End-to-end tests of `cutover serve`: the real binary on a loopback port,
//! a real HTTP client, plugins written to a temporary directory.

use crate::common;

use common::{math_version, write_atomic, Server, MATH_V1};
use serde_json::{json, Value};

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_else(|| panic!("no \"error\" string in {body}"))
}

#[test]
fn calls_return_results_and_precise_errors() {
    let server = Server::start(&[("math.wat", MATH_V1)], &["--call-timeout-ms", "300"]);

    let (status, body) = server.call("math.mul3", r#"{"args": [[1, 2, null, -4]]}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"result": [3, 6, null, -12], "generation": 1}));

    let (status, body) = server.call("math.add", r#"{"args": [[1, 2], [10, null]]}"#);
    assert_eq!((status, &body["result"]), (200, &json!([11, null])), "{body}");
    let (status, body) = server.call("math.half", r#"{"args": [[1, 3.5]]}"#);
    assert_eq!((status, &body["result"]), (200, &json!([0.5, 1.75])), "{body}");
    let (status, body) = server.call("math.mul3", r#"{"args": [[]]}"#);
    assert_eq!((status, &body["result"]), (200, &json!([])), "{body}");

    // Unknown plugin or function: 404.
    for target in ["nope.mul3", "math.nope", "mul3"] {
        let (status, body) = server.call(target, r#"{"args": [[1]]}"#);
        assert_eq!(status, 404, "{target}: {body}");
        assert!(!error_of(&body).is_empty());
    }

    // Malformed or invalid bodies: 400 with a precise message, never 422.
    for (body, needle) in [
        (r#"{"args": [[1, 2]"#, "not valid JSON"),
        ("", "not valid JSON"),
        ("[1]", "JSON object"),
        ("{}", "no \"args\""),
        (r#"{"args": 5}"#, "one array (column) per argument"),
        (r#"{"args": [1]}"#, "not an array"),
        (r#"{"args": [[1], [2]]}"#, "takes 1 argument"),
        (r#"{"args": []}"#, "takes 1 argument"),
        (r#"{"args": [["x"]]}"#, "not a number"),
        (r#"{"args": [[true]]}"#, "not a number"),
        (r#"{"args": [[1.5]]}"#, "not an integer"),
    ] {
        let (status, reply) = server.call("math.mul3", body);
        assert_eq!(status, 400, "{body} -> {reply}");
        assert!(error_of(&reply).contains(needle), "{body} -> {reply}, expected {needle:?}");
    }
    let (status, reply) = server.call("math.add", r#"{"args": [[1, 2], [3]]}"#);
    assert_eq!(status, 400, "{reply}");
    assert!(error_of(&reply).contains("same length"), "{reply}");
    let (status, reply) = server.call("math.boom", r#"{"args": [[3000000000]]}"#);
    assert_eq!(status, 400, "{reply}");
    assert!(error_of(&reply).contains("out of range"), "{reply}");

    // A trap or a time-out inside the plugin: 500, and the server keeps serving.
    let (status, reply) = server.call("math.boom", r#"{"args": [[1, 0]]}"#);
    assert_eq!(status, 500, "{reply}");
    assert!(error_of(&reply).contains("trapped"), "{reply}");
    let (status, reply) = server.call("math.spin", r#"{"args": [[1]]}"#);
    assert_eq!(status, 500, "{reply}");
    assert!(error_of(&reply).contains("budget"), "{reply}");
    let (status, body) = server.call("math.mul3", r#"{"args": [[5]]}"#);
    assert_eq!((status, &body["result"]), (200, &json!([15])), "{body}");

    // Unknown routes answer JSON too.
    let (status, text) = server.get("/v1/nothing");
    assert_eq!(status, 404, "{text}");
    assert!(serde_json::from_str::<Value>(&text).unwrap()["error"].is_string());
}

#[test]
fn lists_plugins_with_state_and_functions() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    let plugins = server.plugins();
    assert_eq!(plugins.len(), 1, "{plugins:?}");
    let math = &plugins[0];
    assert_eq!(math["id"], "math");
    assert_eq!(math["generation"], 1);
    assert_eq!(math["state"], "Active");
    assert_eq!(math["in_flight"], 0);
    assert!(math["last_error"].is_null());
    let functions: Vec<&str> = math["functions"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for f in ["math.mul3", "math.add", "math.boom"] {
        assert!(functions.contains(&f), "{functions:?}");
    }
    assert!(!functions.contains(&"math.init"), "{functions:?}");
}

#[test]
fn file_changes_reload_and_unchanged_content_is_skipped() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);

    // In-place write.
    server.write("math.wat", &math_version(1));
    server.wait_generation("math", 2);
    let (status, body) = server.call("math.mul3", r#"{"args": [[1]]}"#);
    assert_eq!(body, json!({"result": [1_000_003], "generation": 2}), "{status}");

    // Rewriting the same content is not a reload; the next real change makes
    // generation 3, not 4.
    server.write("math.wat", &math_version(1));
    write_atomic(&server.path("math.wat"), &math_version(2));
    server
        .wait_for("version 2 serving", |s| s.call("math.mul3", r#"{"args": [[1]]}"#).1["result"] == json!([2_000_003]));
    assert_eq!(server.plugin("math").unwrap()["generation"], 3, "{}", server.log());

    // An editor's atomic save (temporary file renamed over the plugin).
    write_atomic(&server.path("math.wat"), &math_version(3));
    server.wait_reloaded("math", 4);
    let (_, body) = server.call("math.mul3", r#"{"args": [[1]]}"#);
    assert_eq!(body, json!({"result": [3_000_003], "generation": 4}));
    assert!(server.plugin("math").unwrap()["last_error"].is_null());
}

#[test]
fn reload_endpoint_reloads_from_the_file() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    let (status, text) = server.post("/v1/plugins/math/reload", "");
    assert_eq!(status, 200, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({"generation": 2}));
    let (_, body) = server.call("math.mul3", r#"{"args": [[2]]}"#);
    assert_eq!(body, json!({"result": [6], "generation": 2}));

    let (status, text) = server.post("/v1/plugins/nope/reload", "");
    assert_eq!(status, 404, "{text}");
    assert!(serde_json::from_str::<Value>(&text).unwrap()["error"].is_string());

    // A broken file: 422, and generation 2 keeps serving.
    server.write("math.wat", "(module (func (export \"mul3\" oops");
    let (status, text) = server.post("/v1/plugins/math/reload", "");
    assert_eq!(status, 422, "{text}");
    let error = serde_json::from_str::<Value>(&text).unwrap()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("load failed"), "{error}");
    let (status, body) = server.call("math.mul3", r#"{"args": [[2]]}"#);
    assert_eq!((status, body), (200, json!({"result": [6], "generation": 2})));
    let math = server.plugin("math").unwrap();
    assert_eq!(math["generation"], 2);
    assert!(math["last_error"].is_string(), "{math}");
}

#[test]
fn broken_file_keeps_the_old_generation_serving() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    server.write("math.wat", "this is not WebAssembly");
    server.wait_for("last_error set", |s| s.plugin("math").is_some_and(|p| p["last_error"].is_string()));
    let math = server.plugin("math").unwrap();
    assert_eq!(math["generation"], 1, "{math}");
    assert_eq!(math["state"], "Active", "{math}");
    assert!(math["last_error"].as_str().unwrap().contains("load"), "{math}");
    let (status, body) = server.call("math.mul3", r#"{"args": [[1]]}"#);
    assert_eq!((status, body), (200, json!({"result": [3], "generation": 1})));

    // A module whose init fails is rejected the same way.
    server.write("math.wat", r#"(module (func (export "init") (result i32) i32.const 7) (func (export "mul3") (param i64) (result i64) local.get 0))"#);
    server.wait_for("init failure recorded", |s| {
        s.plugin("math").is_some_and(|p| p["last_error"].as_str().is_some_and(|e| e.contains("init")))
    });
    assert_eq!(server.call("math.mul3", r#"{"args": [[1]]}"#).1["generation"], 1);

    // Fixing the file reloads it and clears the error.
    server.write("math.wat", &math_version(1));
    // The listing is not one snapshot: the record's error is cleared just
    // after the cutover, so wait for both.
    server.wait_for("generation 2 without an error", |s| {
        s.plugin("math").is_some_and(|p| p["generation"] == 2 && p["last_error"].is_null())
    });
}

#[test]
fn new_files_are_added_and_deleted_ones_removed() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    server.write(
        "extra.wat",
        r#"(module (func (export "neg") (param i32) (result i32) i32.const 0 local.get 0 i32.sub))"#,
    );
    server.wait_generation("extra", 1);
    let (status, body) = server.call("extra.neg", r#"{"args": [[5]]}"#);
    assert_eq!((status, body), (200, json!({"result": [-5], "generation": 1})));

    // Files that are not plugins are ignored.
    server.write("notes.txt", "hello");

    std::fs::remove_file(server.path("extra.wat")).unwrap();
    server.wait_for("extra removed", |s| s.plugin("extra").is_none());
    let (status, body) = server.call("extra.neg", r#"{"args": [[5]]}"#);
    assert_eq!(status, 404, "{body}");
    assert_eq!(server.plugins().len(), 1);
    assert_eq!(server.call("math.mul3", r#"{"args": [[1]]}"#).0, 200);
}

#[test]
fn metrics_count_calls_errors_and_reloads() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    for _ in 0..3 {
        assert_eq!(server.call("math.mul3", r#"{"args": [[1]]}"#).0, 200);
    }
    assert_eq!(server.call("math.boom", r#"{"args": [[0]]}"#).0, 500);
    let (_, text) = server.get("/metrics");
    for needle in [
        "cutover_calls_total{function=\"math.mul3\",generation=\"1\"} 3",
        "cutover_call_errors_total{function=\"math.boom\",generation=\"1\",kind=\"trap\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(server.post("/v1/plugins/math/reload", "").0, 200);
    assert_eq!(server.call("math.mul3", r#"{"args": [[1]]}"#).0, 200);

    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200, "{text}");
    // Generation 1 is gone: its series were dropped with it.
    assert!(!text.contains("generation=\"1\""), "{text}");
    for needle in [
        "# TYPE cutover_calls_total counter",
        "cutover_calls_total{function=\"math.mul3\",generation=\"2\"} 1",
        "cutover_reloads_total{plugin=\"math\",op=\"reload\",outcome=\"drained\"} 1",
        "cutover_drain_duration_seconds_count 1",
        "cutover_in_flight{plugin=\"math\",generation=\"2\"} 0",
        "cutover_plugin_generation{plugin=\"math\"} 2",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn graceful_shutdown_lets_a_call_in_flight_finish() {
    let mut server = Server::start(&[("math.wat", MATH_V1)], &["--call-timeout-ms", "60000"]);
    // A call that runs for a while (billions of loop iterations, seconds).
    let base = server.base.clone();
    let call = std::thread::spawn(move || {
        let mut resp = common::agent()
            .post(format!("{base}/v1/call/math.slow"))
            .send(r#"{"args": [[4000000000]]}"#)
            .expect("slow call");
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap_or_default())
    });
    server.wait_for("the slow call in flight", |s| {
        call.is_finished() || s.plugin("math").is_some_and(|p| p["in_flight"].as_u64() >= Some(1))
    });
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}; log:\n{}", server.log());
    let (code, body) = call.join().unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["result"], json!([7]));
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

#[test]
fn sigint_exits_zero() {
    let mut server = Server::start(&[("math.wat", MATH_V1)], &[]);
    common::signal(&server.child, "INT");
    let status = common::wait_exit(&mut server.child);
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_flags_and_unreadable_directories_fail_clearly() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::binary()).args(args).output().expect("run cutover");
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (status, stderr) = run(&["serve", "--listen", "127.0.0.1:0", "--plugins", "/definitely/not/here"]);
    assert!(!status.success());
    assert!(stderr.contains("cannot read the plugin directory"), "{stderr}");

    let file = tempfile::NamedTempFile::new().unwrap();
    let (status, stderr) = run(&["serve", "--listen", "127.0.0.1:0", "--plugins", file.path().to_str().unwrap()]);
    assert!(!status.success());
    assert!(stderr.contains("not a directory"), "{stderr}");

    let (status, stderr) = run(&["serve", "--listen", "not-an-address", "--plugins", "."]);
    assert!(!status.success());
    assert!(stderr.contains("--listen"), "{stderr}");

    let (status, stderr) = run(&["serve", "--bogus"]);
    assert!(!status.success());
    assert!(stderr.contains("--bogus"), "{stderr}");

    let (status, _) = run(&["soak", "--threads", "0"]);
    assert!(!status.success());
}
