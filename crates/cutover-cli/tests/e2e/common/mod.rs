//! Helpers for the end-to-end tests: start the real `cutover` binary, talk
//! HTTP to it with a real client, write plugins, poll with a deadline.

#![allow(dead_code)]

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The overall deadline for anything the tests wait for.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Version 1 of the test plugin `math`.
pub const MATH_V1: &str = r#"(module
  (func (export "init") (result i32) i32.const 0)
  (func (export "mul3") (param i64) (result i64)
    local.get 0 i64.const 3 i64.mul)
  (func (export "add") (param i64 i64) (result i64)
    local.get 0 local.get 1 i64.add)
  (func (export "half") (param f64) (result f64)
    local.get 0 f64.const 2 f64.div)
  (func (export "boom") (param i32) (result i32)
    local.get 0 i32.eqz
    if unreachable end
    local.get 0)
  (func (export "spin") (param i32) (result i32)
    (block $done (loop $l local.get 0 i32.eqz br_if $done br $l))
    i32.const 0)
  (func (export "slow") (param $n i64) (result i64)
    (block $done
      (loop $l
        local.get $n i64.eqz br_if $done
        local.get $n i64.const 1 i64.sub local.set $n
        br $l))
    i64.const 7))"#;

/// Version `k` of `math`: `mul3(x) = 3x + k * 1_000_000` (k = 1 is [`MATH_V1`]'s
/// `mul3` plus 1e6), so results tell versions apart.
pub fn math_version(k: i64) -> String {
    format!(
        r#"(module
  (func (export "init") (result i32) i32.const 0)
  (func (export "mul3") (param i64) (result i64)
    local.get 0 i64.const 3 i64.mul i64.const {} i64.add)
  (func (export "add") (param i64 i64) (result i64)
    local.get 0 local.get 1 i64.add))"#,
        k * 1_000_000
    )
}

/// The path of the `cutover` binary under test: this build's, or
/// `CUTOVER_TEST_BIN` (to run these tests against another build, e.g. to
/// see them fail before a fix).
pub fn binary() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("CUTOVER_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cutover").to_owned()))
}

/// An HTTP agent that returns 4xx/5xx as responses, not errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(DEADLINE)).build().into()
}

/// A running `cutover serve` on a loopback port, killed when dropped.
pub struct Server {
    /// The child process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `127.0.0.1:PORT`.
    pub addr: std::net::SocketAddr,
    /// The plugin directory.
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
    agent: ureq::Agent,
}

/// How to start a server beyond its files and flags.
#[derive(Default)]
pub struct Options {
    /// `--listen` (default `127.0.0.1:0`).
    pub listen: Option<String>,
    /// Run as this user id (root only; for permission tests).
    pub uid: Option<u32>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Run this binary instead of [`binary`].
    pub binary: Option<PathBuf>,
}

/// Whether the tests run as root (permission bits do not stop root).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

impl Server {
    /// Start a server over a new plugin directory holding `files` (name,
    /// content), with extra flags.
    pub fn start(files: &[(&str, &str)], flags: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("write plugin");
        }
        let server = Self::start_in(dir, flags);
        // The address is bound before the plugins are compiled: wait until
        // every plugin file given is listed (loaded, or failed), so a test
        // never races the first scan. (The control routes need the token
        // when one is set: such tests wait themselves.)
        if !flags.iter().any(|f| f.starts_with("--admin-token")) {
            let stems: Vec<&str> = files
                .iter()
                .filter_map(|(name, _)| name.strip_suffix(".wat").or_else(|| name.strip_suffix(".wasm")))
                .collect();
            // On a connection of its own, closed after the answer: no idle
            // keep-alive connection is left to count against the test's
            // connection limits.
            server.wait_for("the initial plugins listed", |s| {
                let (status, _, body) =
                    raw(s, b"GET /v1/plugins HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
                let listed: Vec<Value> =
                    if status == 200 { serde_json::from_str(&body).unwrap_or_default() } else { vec![] };
                stems.iter().all(|stem| listed.iter().any(|p| p["id"] == *stem))
            });
        }
        server
    }

    /// Start a server over `dir`.
    pub fn start_in(dir: tempfile::TempDir, flags: &[&str]) -> Server {
        let path = dir.path().to_owned();
        Self::start_at(path, Some(dir), flags, Options::default())
    }

    /// Start a server over the plugin directory `dir` (kept alive by `tmp`).
    pub fn start_at(dir: PathBuf, tmp: Option<tempfile::TempDir>, flags: &[&str], options: Options) -> Server {
        let log_dir = tempfile::tempdir().expect("temp dir");
        let log = log_dir.path().join("server.log");
        let mut command = Command::new(options.binary.as_deref().unwrap_or(Path::new(binary())));
        command
            .args(["serve", "--listen", options.listen.as_deref().unwrap_or("127.0.0.1:0"), "--plugins"])
            .arg(&dir)
            .args(if flags.contains(&"--debounce-ms") { &[][..] } else { &["--debounce-ms", "100"][..] })
            .args(flags)
            .env("RUST_LOG", "info,cutover::slot=warn")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(uid) = options.uid {
            use std::os::unix::process::CommandExt as _;
            command.uid(uid).gid(uid);
        }
        let mut child = command.spawn().expect("start cutover serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(DEADLINE) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not print its address; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        };
        let addr: std::net::SocketAddr = addr.replace("0.0.0.0", "127.0.0.1").parse().expect("address");
        Server { child, base: format!("http://{addr}"), addr, dir, _tmp: tmp, log, _log_dir: log_dir, agent: agent() }
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A path in the plugin directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `method path` with extra `headers` and `body` → (status, headers, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, ureq::http::HeaderMap, String) {
        let mut builder = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(body.to_owned()).expect("request");
        let mut resp = self.agent.run(request).expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.body_mut().read_to_string().expect("body"))
    }

    /// The value of the metric line starting with `series` (name and labels).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "{text}");
        series_value(&text, series)
    }

    /// As [`Server::metric`], read on a fresh connection, or `None` if that
    /// connection was refused or reset: at a connection limit the server
    /// may still count connections the test closed but it has not yet seen
    /// close.
    pub fn try_metric(&self, series: &str) -> Option<f64> {
        use std::io::{Read as _, Write as _};
        let mut stream = self.connect();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.starts_with("HTTP/1.1 200").then(|| series_value(&text, series))?
    }

    /// Open a raw TCP connection to the server (read timeout: [`DEADLINE`]).
    pub fn connect(&self) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("read timeout");
        stream
    }

    /// Write a plugin file (replacing it in place).
    pub fn write(&self, name: &str, content: &str) {
        std::fs::write(self.path(name), content).expect("write plugin");
    }

    /// `GET path` → (status, body text).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut resp = self.agent.get(format!("{}{path}", self.base)).call().expect("GET");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().expect("body"))
    }

    /// `POST path` with `body` → (status, body text).
    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        let mut resp = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body)
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().expect("body"))
    }

    /// `POST /v1/call/{target}` with `body` → (status, JSON).
    pub fn call(&self, target: &str, body: &str) -> (u16, Value) {
        let (status, text) = self.post(&format!("/v1/call/{target}"), body);
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    /// `GET /v1/plugins` as JSON.
    pub fn plugins(&self) -> Vec<Value> {
        let (status, text) = self.get("/v1/plugins");
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).expect("plugins JSON")
    }

    /// The entry of plugin `id` in `GET /v1/plugins`.
    pub fn plugin(&self, id: &str) -> Option<Value> {
        self.plugins().into_iter().find(|p| p["id"] == id)
    }

    /// Poll until `check` is true, or panic after [`DEADLINE`] describing
    /// `what` (with the server log).
    pub fn wait_for(&self, what: &str, mut check: impl FnMut(&Server) -> bool) {
        let start = Instant::now();
        while !check(self) {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; plugins: {:?}\nlog:\n{}",
                self.plugins(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Poll until plugin `id` is at `generation`.
    pub fn wait_generation(&self, id: &str, generation: u64) {
        self.wait_for(&format!("{id} at generation {generation}"), |s| {
            s.plugin(id).is_some_and(|p| p["generation"] == generation)
        });
    }

    /// Wait until `id` serves `generation` and the reload that made it has
    /// finished (its drain included): what the reload records, such as
    /// clearing `last_error`, is written only then, after the cutover that
    /// `wait_generation` sees.
    pub fn wait_reloaded(&self, id: &str, generation: u64) {
        self.wait_for(&format!("{id}'s reload to generation {generation} to finish"), |s| {
            s.plugin(id).is_some_and(|p| p["generation"] == generation && p["reloading"].is_null())
        });
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, "TERM");
        wait_exit(&mut self.child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Send `SIG<name>` to `child` (by its pid).
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().expect("kill");
    assert!(status.success(), "kill -{name} failed");
}

/// Wait for `child` to exit, at most [`DEADLINE`].
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "the process did not exit within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Read from `stream` until the server closes it (or [`DEADLINE`]),
/// returning what was read; panics on a time-out.
pub fn read_to_close(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read as _;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "no close from the server within {DEADLINE:?} ({e}); read so far: {}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `series` (its name and labels, then a space) in Prometheus
/// text.
fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// Send `request` as is on a new connection and read one response:
/// (status, head, body).
pub fn raw(server: &Server, request: &[u8]) -> (u16, String, String) {
    use std::io::Write as _;
    let mut stream = server.connect();
    stream.write_all(request).expect("write the request");
    read_response(&mut stream)
}

/// Read one HTTP/1.1 response (head and a `content-length` body) from `stream`.
pub fn read_response(stream: &mut std::net::TcpStream) -> (u16, String, String) {
    use std::io::Read as _;
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => data.push(byte[0]),
            other => panic!("response head cut short ({other:?}): {}", String::from_utf8_lossy(&data)),
        }
    }
    let head = String::from_utf8_lossy(&data).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("response body");
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// Write `content` to `path` atomically: a temporary file renamed over it.
pub fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("wat.tmp~");
    std::fs::write(&tmp, content).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}
