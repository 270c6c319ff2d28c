//! `cutover serve`'s security: no file content in errors, symlinks out of
//! the plugin directory refused, the admin token and browser origins on the
//! control routes, and metric series that die with their generations.

use crate::common;

use common::{math_version, Options, Server, MATH_V1};
use serde_json::json;

#[test]
fn symlinks_outside_the_directory_are_refused_and_errors_quote_no_content() {
    let secret = format!("CUTOVER_TEST_SECRET={}", "S".repeat(300));
    let (name, value) = secret.split_once('=').unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("real.wat"), math_version(7)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("math.wat"), MATH_V1).unwrap();
    std::fs::write(dir.join("sub/inner.wat"), math_version(8)).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", dir.join("env.wat")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("real.wat"), dir.join("ext.wat")).unwrap();
    std::os::unix::fs::symlink("sub/inner.wat", dir.join("inner.wat")).unwrap();
    let options = Options { env: vec![(name.to_owned(), value.to_owned())], ..Options::default() };
    let server = Server::start_at(dir.clone(), Some(tmp), &[], options);

    // Inside: followed. Outside: refused, saying why.
    assert_eq!(server.call("inner.mul3", r#"{"args": [[1]]}"#).1["result"], json!([8_000_003]));
    for id in ["env", "ext"] {
        let plugin = server.plugin(id).unwrap_or_else(|| panic!("{id} listed"));
        assert_eq!(plugin["generation"], 0, "{plugin}");
        let error = plugin["last_error"].as_str().unwrap();
        assert!(
            error.contains("outside the plugin directory") && error.contains("--allow-outside-symlinks"),
            "{error}"
        );
    }
    let (_, listing) = server.get("/v1/plugins");
    assert!(!listing.contains("SSSSSSSSSS"), "{listing}");

    // Garbage content: the error quotes at most a short, escaped excerpt.
    std::fs::write(dir.join("junk.wat"), format!("\u{1b}[31m{}\0{}", "A".repeat(5000), secret)).unwrap();
    server.wait_for("junk's error", |s| s.plugin("junk").is_some_and(|p| p["last_error"].is_string()));
    let error = server.plugin("junk").unwrap()["last_error"].as_str().unwrap().to_owned();
    assert!(error.contains("junk.wat"), "the error names the file: {error}");
    assert!(!error.contains("<anon>"), "{error}");
    assert!(!error.contains('\u{1b}') && !error.contains('\0'), "{error:?}");
    assert!(!error.contains(&"A".repeat(100)), "{error}");
    assert!(error.len() < 1500, "{error}");
}

#[test]
fn outside_symlinks_can_be_allowed_and_still_leak_nothing() {
    let secret_value = "S".repeat(300);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("real.wat"), math_version(7)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", dir.join("env.wat")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("real.wat"), dir.join("ext.wat")).unwrap();
    let options = Options { env: vec![("CUTOVER_TEST_SECRET".into(), secret_value)], ..Options::default() };
    let server = Server::start_at(dir, Some(tmp), &["--allow-outside-symlinks"], options);
    assert_eq!(server.call("ext.mul3", r#"{"args": [[1]]}"#).1["result"], json!([7_000_003]));
    // The environment is read (allowed), fails to parse, and is not quoted.
    let (_, listing) = server.get("/v1/plugins");
    let env = server.plugin("env").unwrap();
    assert!(env["last_error"].is_string(), "{env}");
    assert!(!listing.contains("SSSSSSSSSS") && !listing.contains("PATH="), "{listing}");
}

#[test]
fn the_admin_token_guards_the_control_routes() {
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let server = Server::start(&[("math.wat", MATH_V1)], &["--admin-token-file", token_file.to_str().unwrap()]);
    let auth = [("authorization", "Bearer s3cret-token")];
    for (method, path) in [("GET", "/v1/plugins"), ("POST", "/v1/plugins/math/reload"), ("GET", "/metrics")] {
        let (status, headers, text) = server.request(method, path, &[], "");
        assert_eq!(status, 401, "{path}: {text}");
        assert!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"].is_string());
        assert!(headers.get("www-authenticate").is_some());
        let (status, _, text) = server.request(method, path, &[("authorization", "Bearer wrong")], "");
        assert_eq!(status, 401, "{path}: {text}");
        let (status, _, text) = server.request(method, path, &auth, "");
        assert_eq!(status, 200, "{path}: {text}");
    }
    // Calls need no token.
    assert_eq!(server.call("math.mul3", r#"{"args": [[1]]}"#).0, 200);
}

#[test]
fn browser_origins_are_refused_unless_allowed() {
    let server = Server::start(&[("math.wat", MATH_V1)], &["--allow-origin", "http://ops.example"]);
    for headers in [
        &[("origin", "http://evil.example")][..],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-origin")],
        &[("host", "evil.example:8080")],
    ] {
        for (method, path) in [("GET", "/v1/plugins"), ("POST", "/v1/plugins/math/reload"), ("GET", "/metrics")] {
            let (status, _, text) = server.request(method, path, headers, "");
            assert_eq!(status, 403, "{headers:?} {path}: {text}");
            assert!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"].is_string());
        }
    }
    assert_eq!(server.plugin("math").unwrap()["generation"], 1, "no reload went through");

    let (status, headers, text) = server.request("GET", "/v1/plugins", &[("origin", "http://ops.example")], "");
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers.get("access-control-allow-origin").unwrap(), "http://ops.example");
    let (status, headers, _) = server.request(
        "OPTIONS",
        "/v1/plugins/math/reload",
        &[("origin", "http://ops.example"), ("access-control-request-method", "POST")],
        "",
    );
    assert_eq!(status, 204);
    assert!(headers.get("access-control-allow-methods").unwrap().to_str().unwrap().contains("POST"));
    // A user typing the URL (Sec-Fetch-Site: none) is no cross-site request.
    assert_eq!(server.request("GET", "/metrics", &[("sec-fetch-site", "none")], "").0, 200);
}

#[test]
fn listening_beyond_loopback_without_a_token_warns() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("math.wat"), MATH_V1).unwrap();
    let path = dir.path().to_owned();
    let options = Options { listen: Some("0.0.0.0:0".into()), ..Options::default() };
    let server = Server::start_at(path, Some(dir), &[], options);
    assert!(server.log().contains("without an admin token"), "{}", server.log());
}

#[test]
fn metric_series_of_removed_generations_are_dropped() {
    let server = Server::start(&[("math.wat", MATH_V1), ("geo.wat", MATH_V1)], &[]);
    for generation in 1..=30 {
        assert_eq!(server.call("math.mul3", r#"{"args": [[1]]}"#).1["generation"], generation);
        assert_eq!(server.call("math.boom", r#"{"args": [[0]]}"#).0, 500);
        assert_eq!(server.post("/v1/plugins/math/reload", "").0, 200);
    }
    assert_eq!(server.call("geo.mul3", r#"{"args": [[1]]}"#).0, 200);
    let (_, text) = server.get("/metrics");
    let series = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(series("cutover_calls_total{function=\"math."), 0, "generation 31 had no call yet:\n{text}");
    assert_eq!(series("cutover_call_errors_total{"), 0, "{text}");
    assert_eq!(series("cutover_calls_total{function=\"geo."), 1, "{text}");
    assert_eq!(server.call("math.mul3", r#"{"args": [[1]]}"#).1["generation"], 31);
    let (_, text) = server.get("/metrics");
    assert!(text.contains("cutover_calls_total{function=\"math.mul3\",generation=\"31\"} 1"), "{text}");

    // A removed plugin leaves no series behind.
    std::fs::remove_file(server.path("geo.wat")).unwrap();
    server.wait_for("geo removed", |s| s.plugin("geo").is_none());
    let (_, text) = server.get("/metrics");
    assert!(!text.contains("geo"), "{text}");
}
