//! `cutover serve`: plugins change independently (a slow reload of one
//! never holds another), a reload of a busy plugin answers 409 at once,
//! conditional reloads (`?if_generation=N`), the address is bound before
//! plugins are compiled, and the `init` budget flag.

use crate::common;

use common::{math_version, Server, MATH_V1};
use serde_json::{json, Value};

/// A `math` whose `init` never returns (it runs until its budget).
const MATH_LOOPING_INIT: &str = r#"(module
  (func (export "init") (result i32) (loop $l br $l) i32.const 0)
  (func (export "mul3") (param i64) (result i64) local.get 0))"#;

const GEO_V1: &str = r#"(module (func (export "twice") (param i64) (result i64) local.get 0 i64.const 2 i64.mul))"#;
const GEO_V2: &str = r#"(module (func (export "twice") (param i64) (result i64) local.get 0 i64.const 2 i64.mul i64.const 100 i64.add))"#;

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn plugins_reload_in_parallel_and_a_busy_plugin_answers_409_at_once() {
    // math's next version loops in `init` for its whole 15 s budget.
    let server = Server::start(
        &[("math.wat", MATH_V1), ("geo.wat", GEO_V1)],
        &["--init-timeout-ms", "15000", "--prewarm-instances", "1"],
    );
    server.write("math.wat", MATH_LOOPING_INIT);
    server
        .wait_for("math reloading in `init`", |s| s.plugin("math").is_some_and(|p| p["reloading"]["phase"] == "init"));
    let reloading = server.plugin("math").unwrap()["reloading"].clone();
    assert!(reloading["elapsed_ms"].is_u64(), "{reloading}");

    // A reload of math while the watcher reloads it: 409 at once.
    let (status, text) = server.post("/v1/plugins/math/reload", "");
    assert_eq!(status, 409, "{text}");
    assert!(json_of(&text)["error"].as_str().unwrap().contains("in progress"), "{text}");

    // geo changes, by request and by file, while math is still in `init`.
    let (status, text) = server.post("/v1/plugins/geo/reload", "");
    assert_eq!((status, json_of(&text)), (200, json!({"generation": 2})), "{text}");
    server.write("geo.wat", GEO_V2);
    server.wait_generation("geo", 3);
    assert_eq!(server.call("geo.twice", r#"{"args": [[1]]}"#).1["result"], json!([102]));
    assert_eq!(server.plugin("math").unwrap()["reloading"]["phase"], "init", "math's reload should still run");
    assert_eq!(server.call("math.mul3", r#"{"args": [[1]]}"#).1, json!({"result": [3], "generation": 1}));

    // A fix written while the looping reload runs is applied after it.
    server.write("math.wat", &math_version(2));
    server.wait_reloaded("math", 2);
    assert_eq!(server.call("math.mul3", r#"{"args": [[1]]}"#).1, json!({"result": [2_000_003], "generation": 2}));
    let math = server.plugin("math").unwrap();
    assert!(math["reloading"].is_null() && math["last_error"].is_null(), "{math}");
}

#[test]
fn conditional_reload_refuses_a_stale_generation() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    let (status, text) = server.post("/v1/plugins/math/reload?if_generation=1", "");
    assert_eq!((status, json_of(&text)), (200, json!({"generation": 2})), "{text}");

    let (status, text) = server.post("/v1/plugins/math/reload?if_generation=1", "");
    assert_eq!(status, 409, "{text}");
    let body = json_of(&text);
    assert_eq!(body["generation"], 2, "{text}");
    assert!(body["error"].as_str().unwrap().contains("generation 2, not 1"), "{text}");
    assert_eq!(server.plugin("math").unwrap()["generation"], 2);

    let (status, text) = server.post("/v1/plugins/math/reload?if_generation=two", "");
    assert_eq!(status, 400, "{text}");
    assert!(json_of(&text)["error"].is_string());

    // Two clients race from generation 2: exactly one reloads.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let base = server.base.clone();
            std::thread::spawn(move || {
                let mut resp = common::agent()
                    .post(format!("{base}/v1/plugins/math/reload?if_generation=2"))
                    .send("")
                    .expect("POST");
                (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
            })
        })
        .collect();
    let mut statuses: Vec<u16> = racers.into_iter().map(|r| r.join().unwrap().0).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    assert_eq!(server.plugin("math").unwrap()["generation"], 3);
}

#[test]
fn a_port_in_use_fails_before_any_plugin_is_compiled() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    // Loading this plugin would take its whole 600 s `init` budget.
    std::fs::write(dir.path().join("math.wat"), MATH_LOOPING_INIT).unwrap();
    let mut child = std::process::Command::new(common::binary())
        .args(["serve", "--listen", &addr, "--init-timeout-ms", "600000", "--plugins"])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = common::wait_exit(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

#[test]
fn init_budget_is_a_flag() {
    let server = Server::start(&[("math.wat", MATH_V1)], &["--init-timeout-ms", "300", "--prewarm-instances", "3"]);
    server.write("math.wat", MATH_LOOPING_INIT);
    server.wait_for("the init budget error", |s| {
        s.plugin("math").is_some_and(|p| p["last_error"].as_str().is_some_and(|e| e.contains("300ms")))
    });
    assert_eq!(server.call("math.mul3", r#"{"args": [[1]]}"#).1, json!({"result": [3], "generation": 1}));
}
