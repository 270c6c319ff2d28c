//! What a component instance may reach: `cutover:plugin/host` (`log`, to
//! `tracing`) and WASI preview 2 with no preopened directories, no
//! environment, no arguments, no network, stdin closed, and stdout/stderr
//! going to the log line by line. One [`Linker`] for all components, built
//! on first use.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::cutover::plugin::host::{self, Level};
use crate::engine::engine;
use crate::store::StoreState;

/// The longest log line kept whole; longer output is split.
const MAX_LINE: usize = 8 * 1024;

/// How many of the last stderr lines are kept to explain a trap (a Rust
/// panic prints its message to stderr, then traps).
const STDERR_TAIL: usize = 4;

/// The last few stderr lines of an instance.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// The host-side state of one component instance.
pub(crate) struct Sandbox {
    plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    stderr_tail: Tail,
}

impl Sandbox {
    /// A sandbox for an instance of plugin `plugin`.
    pub(crate) fn new(plugin: &Arc<str>) -> Self {
        let stderr_tail = Tail::default();
        let wasi = WasiCtx::builder()
            .stdout(LogStream { plugin: Arc::clone(plugin), stream: Stream::Stdout, tail: None })
            .stderr(LogStream { plugin: Arc::clone(plugin), stream: Stream::Stderr, tail: Some(stderr_tail.clone()) })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self { plugin: Arc::clone(plugin), wasi, table: ResourceTable::new(), stderr_tail }
    }

    /// Forget the stderr lines kept so far (at the start of a call).
    pub(crate) fn clear_stderr(&self) {
        lock(&self.stderr_tail).clear();
    }

    /// The last stderr lines written since [`clear_stderr`](Self::clear_stderr), joined.
    pub(crate) fn stderr(&self) -> Option<String> {
        let tail = lock(&self.stderr_tail);
        (!tail.is_empty()).then(|| tail.iter().map(String::as_str).collect::<Vec<_>>().join(" / "))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WasiView for StoreState<Sandbox> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ext.wasi, table: &mut self.ext.table }
    }
}

impl host::Host for Sandbox {
    fn log(&mut self, level: Level, message: String) {
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "cutover_wasm::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "cutover_wasm::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "cutover_wasm::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "cutover_wasm::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "cutover_wasm::plugin", plugin, "{message}"),
        }
    }
}

/// The linker every component is linked with (built once).
pub(crate) fn linker() -> Result<&'static Linker<StoreState<Sandbox>>, String> {
    static LINKER: OnceLock<Result<Linker<StoreState<Sandbox>>, String>> = OnceLock::new();
    LINKER
        .get_or_init(|| {
            let mut linker: Linker<StoreState<Sandbox>> = Linker::new(engine());
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| format!("WASI: {e:#}"))?;
            host::add_to_linker::<_, HasSelf<Sandbox>>(&mut linker, |state| &mut state.ext)
                .map_err(|e| format!("cutover:plugin/host: {e:#}"))?;
            Ok(linker)
        })
        .as_ref()
        .map_err(Clone::clone)
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A guest's stdout or stderr: each line is a `tracing` event (info for
/// stdout, warn for stderr) with the plugin id.
struct LogStream {
    plugin: Arc<str>,
    stream: Stream,
    tail: Option<Tail>,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.lines())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.lines())
    }
}

impl LogStream {
    fn lines(&self) -> LogLines {
        LogLines { plugin: Arc::clone(&self.plugin), stream: self.stream, tail: self.tail.clone(), line: Vec::new() }
    }
}

/// Buffers one partial line; complete lines are logged at once, the rest on
/// flush or drop.
struct LogLines {
    plugin: Arc<str>,
    stream: Stream,
    tail: Option<Tail>,
    line: Vec<u8>,
}

impl LogLines {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\n', '\r']);
        let (plugin, stream) = (&*self.plugin, self.stream.name());
        match self.stream {
            Stream::Stdout => tracing::info!(target: "cutover_wasm::plugin", plugin, stream, "{text}"),
            Stream::Stderr => tracing::warn!(target: "cutover_wasm::plugin", plugin, stream, "{text}"),
        }
        // Keep the lines that explain a trap (not the blank ones, nor Rust's
        // hint about RUST_BACKTRACE, which cannot be set in the sandbox).
        let explains = !text.trim().is_empty() && !text.starts_with("note: run with `RUST_BACKTRACE=1`");
        if let Some(tail) = self.tail.as_ref().filter(|_| explains) {
            let mut tail = lock(tail);
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(text.to_owned());
        }
        self.line.clear();
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.line.len();
            let take = match bytes.iter().take(room).position(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None => bytes.len().min(room),
            };
            self.line.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.line.ends_with(b"\n") || self.line.len() >= MAX_LINE {
                self.emit();
            }
        }
    }

    fn flush_line(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        self.flush_line();
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogLines {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.flush_line();
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogLines {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogLines {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.get_mut().push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.get_mut().flush_line();
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}
