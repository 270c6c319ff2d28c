//! Load benchmark of `cutover serve` against a minimal native axum server.
//!
//! `cargo bench -p cutover-cli --bench serve_load`
//!
//! Both servers run as child processes on loopback, each on tokio's default
//! multi-threaded runtime:
//!
//! * **cutover**: the real `cutover serve` binary (release build) over a
//!   directory holding `math.wat`; `POST /v1/call/math.mul3`, the
//!   computation in WebAssembly.
//! * **native**: this program re-run as `--native-server`: axum, a JSON
//!   extractor, `x * 3` in Rust, the same response shape
//!   (`{"result": [...], "generation": 1}`).
//!
//! The client is `CLIENTS` (64) keep-alive connections, each sending the
//! same 64-row request and reading the response before sending the next
//! (closed loop), all driven by one client thread (a current-thread tokio
//! runtime), so client cost is the same for both servers. Each round runs
//! native then cutover for `SECS` each, back to back, so both see the same
//! background load; the result is the median over rounds of the per-round
//! ratio (and the median requests/s of each). Every response is checked
//! (status 200, the right `result`).
//!
//! Environment: `SERVE_LOAD_ROUNDS` (default 11), `SERVE_LOAD_SECS`
//! (default 2), `SERVE_LOAD_CLIENTS` (default 64), and
//! `SERVE_LOAD_OTHER=/path/to/cutover` to measure another build of
//! `cutover serve` in the same rounds (e.g. the one before a change).

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ROWS: i64 = 64;

const MATH: &str = r#"(module
  (func (export "init") (result i32) i32.const 0)
  (func (export "mul3") (param i64) (result i64) local.get 0 i64.const 3 i64.mul))"#;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn body() -> String {
    let rows: Vec<String> = (0..ROWS).map(|i| i.to_string()).collect();
    format!(r#"{{"args": [[{}]]}}"#, rows.join(","))
}

fn expected() -> String {
    let rows: Vec<String> = (0..ROWS).map(|i| (3 * i).to_string()).collect();
    format!("[{}]", rows.join(","))
}

/// The native baseline: axum, serde, `x * 3`.
fn native_server() {
    #[derive(serde::Deserialize)]
    struct Call {
        args: Vec<Vec<Option<i64>>>,
    }
    async fn mul3(axum::Json(call): axum::Json<Call>) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        let Some(column) = call.args.first() else {
            return (axum::http::StatusCode::BAD_REQUEST, "no column").into_response();
        };
        let result: Vec<Option<i64>> = column.iter().map(|v| v.map(|x| x.wrapping_mul(3))).collect();
        axum::Json(serde_json::json!({ "result": result, "generation": 1 })).into_response()
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("listening on {}", listener.local_addr().expect("address"));
        let app = axum::Router::new().route("/v1/call/math.mul3", axum::routing::post(mul3));
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.expect("serve");
    });
}

/// Start `command` and wait for its `listening on ADDR` line.
fn start(mut command: Command) -> (Child, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    break addr.trim().to_owned();
                }
            }
            _ => panic!("the server exited before listening"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Run `clients` closed-loop keep-alive clients against `addr` for
/// `duration`; requests per second.
fn load(addr: &str, clients: usize, duration: Duration) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let body = body();
    let request = format!(
        "POST /v1/call/math.mul3 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let expected = format!("\"result\":{}", expected());
    runtime.block_on(async {
        let deadline = Instant::now() + duration;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (addr, request, expected) = (addr.to_owned(), request.clone(), expected.clone());
            tasks.spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut buf = Vec::with_capacity(4096);
                let mut done = 0u64;
                while Instant::now() < deadline {
                    stream.write_all(request.as_bytes()).await.expect("write");
                    buf.clear();
                    let (head_end, length) = loop {
                        let mut chunk = [0u8; 4096];
                        let n = stream.read(&mut chunk).await.expect("read");
                        assert!(n > 0, "the server closed the connection");
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = std::str::from_utf8(&buf[..end]).expect("head");
                            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>())
                                })
                                .expect("content-length")
                                .expect("length");
                            break (end + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        let n = stream.read(&mut chunk).await.expect("read");
                        assert!(n > 0, "the server closed the connection");
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let response = std::str::from_utf8(&buf[head_end..]).expect("body");
                    assert!(response.contains(&expected), "wrong answer: {response}");
                    done += 1;
                }
                done
            });
        }
        let start = Instant::now();
        let mut total = 0;
        while let Some(done) = tasks.join_next().await {
            total += done.expect("client");
        }
        total as f64 / start.elapsed().as_secs_f64()
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--native-server") {
        native_server();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    let rounds = env_or("SERVE_LOAD_ROUNDS", 11) as usize;
    let secs = env_or("SERVE_LOAD_SECS", 2);
    let clients = env_or("SERVE_LOAD_CLIENTS", 64) as usize;

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("math.wat"), MATH).expect("write plugin");
    let mut cutover = Command::new(env!("CARGO_BIN_EXE_cutover"));
    cutover.args(["serve", "--listen", "127.0.0.1:0", "--plugins"]).arg(dir.path()).env("RUST_LOG", "warn");
    let (mut cutover_child, cutover_addr) = start(cutover);
    let mut native = Command::new(std::env::current_exe().expect("own path"));
    native.arg("--native-server");
    let (mut native_child, native_addr) = start(native);
    let mut other = std::env::var("SERVE_LOAD_OTHER").ok().map(|bin| {
        let mut command = Command::new(bin);
        command.args(["serve", "--listen", "127.0.0.1:0", "--plugins"]).arg(dir.path()).env("RUST_LOG", "warn");
        start(command)
    });

    let load_avg = || {
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
    };
    println!(
        "serve_load: {clients} keep-alive clients, math.mul3 over {ROWS} rows, {rounds} rounds × {secs} s per server \
         (load average before: {})",
        load_avg()
    );
    // Warm-up (connections, caches, instance pools).
    load(&native_addr, clients, Duration::from_secs(1));
    load(&cutover_addr, clients, Duration::from_secs(1));
    let (mut native_rps, mut cutover_rps, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut other_ratios = Vec::new();
    for round in 1..=rounds {
        let n = load(&native_addr, clients, Duration::from_secs(secs));
        let c = load(&cutover_addr, clients, Duration::from_secs(secs));
        let mut line = format!("round {round:>2}: native {n:>7.0} req/s  cutover {c:>7.0} req/s  ratio {:.2}", c / n);
        if let Some((_, addr)) = &other {
            let o = load(addr, clients, Duration::from_secs(secs));
            line.push_str(&format!("  other {o:>7.0} req/s  cutover/other {:.2}", c / o));
            other_ratios.push(c / o);
        }
        println!("{line}");
        native_rps.push(n);
        cutover_rps.push(c);
        ratios.push(c / n);
    }
    let (n, c, r) = (median(&mut native_rps), median(&mut cutover_rps), median(&mut ratios));
    println!("median: native {n:>7.0} req/s  cutover {c:>7.0} req/s  ratio {r:.2} (median of per-round ratios; target ≥ 0.80)");
    if !other_ratios.is_empty() {
        println!("median cutover/other: {:.2}", median(&mut other_ratios));
    }
    println!("load average after: {}", load_avg());
    for child in
        [Some(&mut cutover_child), Some(&mut native_child), other.as_mut().map(|(c, _)| c)].into_iter().flatten()
    {
        let _ = child.kill();
        let _ = child.wait();
    }
}
