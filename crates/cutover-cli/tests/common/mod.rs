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

/// The path of the `cutover` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_cutover")
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
    /// The plugin directory.
    pub dir: tempfile::TempDir,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
    agent: ureq::Agent,
}

impl Server {
    /// Start a server over a new plugin directory holding `files` (name,
    /// content), with extra flags.
    pub fn start(files: &[(&str, &str)], flags: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("write plugin");
        }
        Self::start_in(dir, flags)
    }

    /// Start a server over `dir`.
    pub fn start_in(dir: tempfile::TempDir, flags: &[&str]) -> Server {
        let log_dir = tempfile::tempdir().expect("temp dir");
        let log = log_dir.path().join("server.log");
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--plugins"])
            .arg(dir.path())
            .args(["--debounce-ms", "100"])
            .args(flags)
            .env("RUST_LOG", "info,cutover::slot=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start cutover serve");
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
        Server { child, base: format!("http://{addr}"), dir, log, _log_dir: log_dir, agent: agent() }
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A path in the plugin directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
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

/// Write `content` to `path` atomically: a temporary file renamed over it.
pub fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("wat.tmp~");
    std::fs::write(&tmp, content).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}
