//! `cutover serve` under hostile clients: per-plugin call limits, long URLs,
//! large and slow bodies, connection and request limits, header, keep-alive
//! and shutdown behaviour, JSON for every error, exact integer ranges.

use crate::common;

use std::io::Write as _;

use common::{raw, read_response, read_to_close, Server, MATH_V1};
use serde_json::{json, Value};

const GEO: &str = r#"(module (func (export "twice") (param i64) (result i64) local.get 0 i64.const 2 i64.mul))"#;

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `n` keep-alive connections, each left idle after one request served.
fn idle_connections(server: &Server, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|_| {
            let mut stream = server.connect();
            stream.write_all(b"GET /v1/plugins HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
            assert_eq!(read_response(&mut stream).0, 200);
            stream
        })
        .collect()
}

fn error_of(text: &str) -> String {
    json_of(text)["error"].as_str().unwrap_or_else(|| panic!("no \"error\" in {text}")).to_owned()
}

#[test]
fn a_flooded_plugin_refuses_calls_at_once_and_others_keep_serving() {
    let server = Server::start(
        &[("math.wat", MATH_V1), ("geo.wat", GEO)],
        &["--max-calls-per-plugin", "3", "--call-timeout-ms", "120000"],
    );
    // Three calls that spin for minutes fill math's slots.
    let spinners: Vec<_> = (0..3)
        .map(|_| {
            let base = server.base.clone();
            std::thread::spawn(move || {
                common::agent()
                    .post(format!("{base}/v1/call/math.spin"))
                    .send(r#"{"args": [[1]]}"#)
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    server.wait_for("three spinning calls", |s| s.plugin("math").is_some_and(|p| p["in_flight"] == 3));

    // More calls of math: 503 with Retry-After, at once (the spinners still run).
    for _ in 0..10 {
        let (status, headers, text) = server.request("POST", "/v1/call/math.mul3", &[], r#"{"args": [[1]]}"#);
        assert_eq!(status, 503, "{text}");
        assert!(headers.get("retry-after").is_some(), "{headers:?}");
        assert!(error_of(&text).contains("--max-calls-per-plugin"), "{text}");
    }
    // Other plugins are served as usual.
    for i in 0..20 {
        let (status, body) = server.call("geo.twice", &format!(r#"{{"args": [[{i}]]}}"#));
        assert_eq!((status, body["result"].clone()), (200, json!([2 * i])));
    }
    assert_eq!(server.plugin("math").unwrap()["in_flight"], 3);
    assert!(spinners.iter().all(|s| !s.is_finished()), "the spinning calls should still run");
    assert!(server.metric("cutover_http_rejected_total{reason=\"plugin_busy\"}").unwrap() >= 10.0);
    drop(server); // kills the server; the spinners' connections fail
    for s in spinners {
        let _ = s.join();
    }
}

#[test]
fn long_urls_are_refused_before_any_lookup() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    // 60 KB of dots (it cost 0.4 s of an async worker): 414 at once, and the
    // answer survives the client still sending.
    for length in [10_000, 60_000, 200_000] {
        let dots = ".".repeat(length);
        let mut stream = server.connect();
        let _ = stream.write_all(format!("POST /v1/call/{dots} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        let (status, _, text) = read_response(&mut stream);
        assert_eq!(status, 414, "{length}: {text}");
        assert!(error_of(&text).contains("URI"), "{text}");
    }

    // Under the URI limit but over the target limit: 404, quickly resolved.
    let dots = ".".repeat(4000);
    let (status, text) = server.post(&format!("/v1/call/{dots}"), "{}");
    assert_eq!(status, 404, "{text}");
    assert!(error_of(&text).contains("at most"), "{text}");
    let (status, text) = server.post(&format!("/v1/call/math{}", ".x".repeat(100)), r#"{"args": [[1]]}"#);
    assert_eq!(status, 404, "{text}");
}

#[test]
fn bodies_are_bounded_by_size_rows_and_time() {
    let server = Server::start(
        &[("math.wat", MATH_V1)],
        &["--max-body-bytes", "4096", "--max-rows", "100", "--body-timeout-ms", "300"],
    );
    // Refused by Content-Length, before the body: no `100 Continue`.
    let (status, head, body) = raw(
        &server,
        b"POST /v1/call/math.mul3 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2097152\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(status, 413, "{head}{body}");
    assert!(error_of(&body).contains("--max-body-bytes"), "{body}");

    // A chunked body that grows past the limit: 413 too.
    let mut stream = server.connect();
    stream
        .write_all(b"POST /v1/call/math.mul3 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 3000, "1".repeat(3000));
    stream.write_all(chunk.as_bytes()).unwrap();
    let _ = stream.write_all(chunk.as_bytes());
    let (status, _, body) = read_response(&mut stream);
    assert_eq!(status, 413, "{body}");

    // Too many rows: 413 naming the flag.
    let rows: Vec<u32> = (0..101).collect();
    let (status, text) = server.post("/v1/call/math.mul3", &json!({"args": [rows]}).to_string());
    assert_eq!(status, 413, "{text}");
    assert!(error_of(&text).contains("--max-rows"), "{text}");
    let rows: Vec<u32> = (0..100).collect();
    assert_eq!(server.post("/v1/call/math.mul3", &json!({"args": [rows]}).to_string()).0, 200);

    // A body that stalls: 408 after the body timeout.
    let mut stream = server.connect();
    stream
        .write_all(b"POST /v1/call/math.mul3 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{\"args\": [[1")
        .unwrap();
    let (status, _, body) = read_response(&mut stream);
    assert_eq!(status, 408, "{body}");
    assert!(error_of(&body).contains("--body-timeout-ms"), "{body}");
}

/// Whether the server has sent anything on `stream` (without waiting).
fn answered(stream: &std::net::TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let got = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false).unwrap();
    matches!(got, Ok(n) if n > 0)
}

#[test]
fn requests_and_connections_are_limited() {
    let server = Server::start(
        &[("math.wat", MATH_V1)],
        &["--max-requests", "2", "--max-connections", "3", "--body-timeout-ms", "60000"],
    );
    // Two requests whose bodies never come occupy both request slots. They
    // are sent once no other request is in progress (scrapes of /metrics
    // are not counted), so neither can find the slots full and be refused.
    let in_progress = |s: &Server| s.try_metric("cutover_http_requests_in_progress ");
    server.wait_for("no request in progress", |s| in_progress(s) == Some(0.0));
    let stalled: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut stream = server.connect();
            stream
                .write_all(b"POST /v1/call/math.mul3 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
                .unwrap();
            stream
        })
        .collect();
    // (A scrape is answered while both slots are taken.)
    server.wait_for("two requests in handling", |s| in_progress(s) == Some(2.0));
    assert!(!stalled.iter().any(answered), "a stalled request was answered");
    // A third request is refused while the two are stalled.
    let (status, head, body) = raw(&server, b"GET /v1/plugins HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, 503, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    assert!(error_of(&body).contains("too many requests"), "{body}");

    // A third connection busy with a half-sent head fills the connection
    // limit: the next connection is refused with 503 JSON.
    let mut busy = server.connect();
    busy.write_all(b"GET /v1/plugins HTTP/1.1\r\n").unwrap();
    // Until the server has counted `busy`, a probe may take the third
    // connection and be refused for the requests instead (503 "too many
    // requests"): wait for the connection refusal itself.
    let mut refused = String::new();
    server.wait_for("a refused connection", |s| {
        let mut stream = s.connect();
        let _ = stream.write_all(b"GET /v1/plugins HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let (status, _, body) = read_response(&mut stream);
        let connections_full = status == 503 && body.contains("too many connections");
        if connections_full {
            refused = body;
        }
        connections_full
    });
    assert!(error_of(&refused).contains("too many connections"), "{refused}");
    drop(stalled);
    drop(busy);

    // Idle keep-alive connections are closed to make room for new ones.
    server.wait_for("the connections closed", |s| s.try_metric("cutover_http_connections ").is_some_and(|n| n <= 1.0));
    let mut idle = idle_connections(&server, 3);
    let (status, _, body) = raw(&server, b"GET /v1/plugins HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    // The oldest idle connection was closed by the server.
    assert_eq!(read_to_close(&mut idle[0]), "");
}

#[test]
fn a_burst_of_connections_at_the_limit_closes_one_idle_connection_each() {
    let server = Server::start(&[("math.wat", MATH_V1)], &["--max-connections", "3"]);
    // Three idle keep-alive connections fill the limit (opening them may
    // close the test client's own pooled connection, idle longer).
    let mut idle = idle_connections(&server, 3);
    // Two new connections at once, before either closed one is gone: each
    // closes a different idle connection (the oldest two), and both are
    // served.
    let mut new: Vec<_> = (0..2).map(|_| server.connect()).collect();
    assert_eq!(read_to_close(&mut idle[0]), "");
    assert_eq!(read_to_close(&mut idle[1]), "");
    for stream in &mut new {
        stream.write_all(b"GET /v1/plugins HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        assert_eq!(read_response(stream).0, 200);
    }
    // The youngest idle connection is still open and served.
    idle[2].write_all(b"GET /v1/plugins HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut idle[2]).0, 200);
}

#[test]
fn header_and_keep_alive_timeouts_close_connections() {
    let server =
        Server::start(&[("math.wat", MATH_V1)], &["--header-timeout-ms", "300", "--keep-alive-timeout-ms", "300"]);
    // Half a head: closed after the header timeout (it held for 65 s+).
    let mut half = server.connect();
    half.write_all(b"POST /v1/call/math.mul3 HTTP/1.1\r\nHost: loc").unwrap();
    assert_eq!(read_to_close(&mut half), "");
    // Nothing at all: closed too.
    let mut silent = server.connect();
    assert_eq!(read_to_close(&mut silent), "");
    // Idle after a response: closed after the keep-alive timeout.
    let mut idle = server.connect();
    idle.write_all(b"GET /v1/plugins HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut idle).0, 200);
    assert_eq!(read_to_close(&mut idle), "");
}

#[test]
fn shutdown_closes_idle_and_half_open_connections_at_once() {
    let mut server =
        Server::start(&[("math.wat", MATH_V1)], &["--shutdown-timeout", "600", "--call-timeout-ms", "600000"]);
    let base = server.base.clone();
    let call = std::thread::spawn(move || {
        common::agent()
            .post(format!("{base}/v1/call/math.spin"))
            .send(r#"{"args": [[1]]}"#)
            .map(|r| r.status().as_u16())
    });
    server.wait_for("the call in flight", |s| s.plugin("math").is_some_and(|p| p["in_flight"] == 1));
    let mut idle = server.connect();
    idle.write_all(b"GET /v1/plugins HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut idle).0, 200);
    let mut half = server.connect();
    half.write_all(b"GET /v1/plugins HTTP/1.1\r\nHos").unwrap();
    server.wait_for("three connections", |s| s.metric("cutover_http_connections ").is_some_and(|n| n >= 4.0));

    common::signal(&server.child, "TERM");
    // Both close while the call (which may run for 600 s) still runs.
    assert_eq!(read_to_close(&mut idle), "");
    assert_eq!(read_to_close(&mut half), "");
    assert!(!call.is_finished());
    let _ = server.child.kill();
    let _ = call.join();
}

#[test]
fn calls_interrupted_by_shutdown_get_a_503_json_answer() {
    let mut server =
        Server::start(&[("math.wat", MATH_V1)], &["--shutdown-timeout", "1", "--call-timeout-ms", "600000"]);
    let base = server.base.clone();
    let call = std::thread::spawn(move || {
        let mut resp =
            common::agent().post(format!("{base}/v1/call/math.spin")).send(r#"{"args": [[1]]}"#).expect("an answer");
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
    });
    server.wait_for("the call in flight", |s| s.plugin("math").is_some_and(|p| p["in_flight"] == 1));
    let status = server.terminate();
    assert!(status.success(), "{status:?}\n{}", server.log());
    let (code, body) = call.join().unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(error_of(&body).contains("shutting down"), "{body}");
}

#[test]
fn every_error_is_json() {
    let server = Server::start(&[("math.wat", MATH_V1)], &["--max-body-bytes", "100"]);
    let (status, text) = server.post("/v1/call/math.mul3", &format!(r#"{{"args": [[{}1]]}}"#, "1,".repeat(100)));
    assert_eq!(status, 413, "{text}");
    assert!(json_of(&text)["error"].is_string());

    // Headers over the limit (431), and a head hyper itself refuses.
    let big = "x".repeat(40_000);
    let (status, _, text) = server.request("GET", "/v1/plugins", &[("x-big", big.as_str())], "");
    assert_eq!(status, 431, "{text}");
    assert!(json_of(&text)["error"].is_string());
    let huge = format!("GET /v1/plugins HTTP/1.1\r\nHost: localhost\r\nx-huge: {}\r\n\r\n", "y".repeat(300_000));
    let mut stream = server.connect();
    let _ = stream.write_all(huge.as_bytes());
    let (status, _, text) = read_response(&mut stream);
    assert_eq!(status, 431, "{text}");
    assert!(json_of(&text)["error"].is_string());

    // Percent-encoded bad UTF-8, and raw non-ASCII bytes, in the path.
    for path in ["/v1/call/%FF.mul3", "/v1/plugins/%C3%28/reload"] {
        let (status, text) = server.post(path, "{}");
        assert_eq!(status, 400, "{path}: {text}");
        assert!(json_of(&text)["error"].is_string(), "{path}: {text}");
    }
    let (status, _, text) =
        raw(&server, b"POST /v1/call/\xff\xfe.mul3 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(status, 400, "{text}");
    assert!(json_of(&text)["error"].is_string());
    // A request line that is not HTTP at all.
    let (status, _, text) = raw(&server, b"BLAH\r\n\r\n");
    assert_eq!(status, 400, "{text}");
    assert!(json_of(&text)["error"].is_string());
}

#[test]
fn floats_out_of_an_integer_range_are_refused() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    for value in ["9.223372036854776e18", "-9.3e18", "1e300"] {
        let (status, body) = server.call("math.mul3", &format!(r#"{{"args": [[{value}]]}}"#));
        assert_eq!(status, 400, "{value}: {body}");
        assert!(body["error"].as_str().unwrap().contains("out of range"), "{body}");
    }
    let (status, body) = server.call("math.add", r#"{"args": [[9.2233720368547748e18], [0]]}"#);
    assert_eq!((status, body["result"].clone()), (200, json!([9_223_372_036_854_774_784_i64])));
}

/// An answer given before the request's body was read (here a call to an
/// unknown plugin, which is checked first) leaves a connection the server
/// cannot reuse, and says so with `Connection: close`: a pooling client
/// then opens a new one for its next request instead of failing on the
/// closed one. A call whose body was read keeps its connection.
#[test]
fn an_answer_before_the_body_says_connection_close() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    let body = r#"{"args": [[5]]}"#;
    let mut stream = server.connect();
    write!(stream, "POST /v1/call/nope.neg HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len())
        .unwrap();
    let (status, head, text) = read_response(&mut stream);
    assert_eq!(status, 404, "{text}");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    // The body sent now is not taken for a request: the server has closed.
    let _ = stream.write_all(body.as_bytes());
    assert_eq!(read_to_close(&mut stream), "");

    let mut stream = server.connect();
    for _ in 0..2 {
        write!(
            stream,
            "POST /v1/call/math.mul3 HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let (status, head, text) = read_response(&mut stream);
        assert_eq!(status, 200, "{text}");
        assert!(!head.to_ascii_lowercase().contains("connection: close"), "{head}");
    }
    // And a pooling client goes on after the 404 (the case that failed
    // at random before the header: the next request on the closed
    // connection).
    assert_eq!(server.call("nope.neg", body).0, 404);
    assert_eq!(server.plugins().len(), 1);
}
