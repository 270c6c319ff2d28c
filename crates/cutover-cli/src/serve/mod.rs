//! `cutover serve`: the reference host. Loads every plugin in a directory,
//! watches it, and serves the plugins' functions over HTTP (see [`http`]).
//!
//! Shutdown (SIGINT or SIGTERM): stop accepting connections, let the calls
//! in flight finish for up to `--shutdown-timeout`, then interrupt whatever
//! still runs and exit 0.

mod http;
mod metrics;
mod sql;
mod watch;

use std::{io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use cutover::host::ReloadOptions;
use cutover_wasm::WasmLimits;

use crate::plugins::PluginSet;

/// Flags of `cutover serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is
    /// printed as `listening on ADDR`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = crate::parse_listen)]
    pub listen: SocketAddr,
    /// Directory of `.wat`/`.wasm` plugins to load and watch (id = file stem).
    #[arg(long, value_name = "DIR", value_parser = crate::parse_dir)]
    pub plugins: PathBuf,
    /// Time budget of one call, in milliseconds (a call past it fails with 500).
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub call_timeout_ms: u64,
    /// How long a reload or removal waits for the old generation's calls
    /// before cancelling and then interrupting them, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub drain_deadline_ms: u64,
    /// How long a file must be quiet before its change is applied, in
    /// milliseconds (editors write in several steps).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub debounce_ms: u64,
    /// On SIGINT/SIGTERM, how long to let calls in flight finish, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub shutdown_timeout: u64,
    /// `POST /v1/sql`: `--data`, `--sql-max-rows`, `--sql-timeout-ms`.
    #[command(flatten)]
    pub sql: sql::SqlArgs,
}

/// What the HTTP handlers and the watcher share.
pub struct AppState {
    /// The plugins.
    pub plugins: PluginSet,
    /// The counters behind `/metrics`.
    pub metrics: metrics::Metrics,
    /// Serializes plugin changes (watcher and reload endpoint).
    pub changes: tokio::sync::Mutex<()>,
    /// The SQL engine behind `POST /v1/sql`.
    pub sql: sql::SqlEngine,
}

/// Run `cutover serve` until SIGINT/SIGTERM.
///
/// # Errors
/// The plugin directory cannot be read or watched, or the address cannot
/// be bound.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.plugins;
    let meta =
        std::fs::metadata(dir).with_context(|| format!("cannot read the plugin directory `{}`", dir.display()))?;
    anyhow::ensure!(meta.is_dir(), "the plugin directory `{}` is not a directory", dir.display());
    std::fs::read_dir(dir).with_context(|| format!("cannot read the plugin directory `{}`", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("cannot resolve `{}`", dir.display()))?;

    let limits = WasmLimits::default().call_timeout(Duration::from_millis(args.call_timeout_ms));
    let deadline = args.sql.drain_deadline(Duration::from_millis(args.drain_deadline_ms));
    let options = ReloadOptions::default().deadline(deadline);
    let plugins = PluginSet::new(dir.clone(), limits, options);
    let sql = sql::SqlEngine::new(&args.sql, plugins.shared_host())?;
    let state =
        Arc::new(AppState { plugins, metrics: metrics::Metrics::default(), changes: tokio::sync::Mutex::new(()), sql });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cutover-serve")
        .build()
        .context("cannot start the async runtime")?;
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout);
    let result = runtime.block_on(serve(Arc::clone(&state), dir, args));
    // Calls still running after the bounded wait are interrupted; do not let
    // them hold the process.
    state.plugins.interrupt_all();
    runtime.shutdown_timeout(shutdown_timeout.min(Duration::from_secs(2)));
    result.map(|()| ExitCode::SUCCESS)
}

async fn serve(state: Arc<AppState>, dir: PathBuf, args: ServeArgs) -> anyhow::Result<()> {
    // Watch first, then scan: a change in between is seen twice, and the
    // second time skipped by its hash.
    let _watcher = watch::start(Arc::clone(&state), &dir, Duration::from_millis(args.debounce_ms))
        .with_context(|| format!("cannot watch the plugin directory `{}`", dir.display()))?;
    {
        let _serial = state.changes.lock().await;
        let scan_state = Arc::clone(&state);
        let results = tokio::task::spawn_blocking(move || scan_state.plugins.scan()).await?;
        let results = results.with_context(|| format!("cannot read the plugin directory `{}`", dir.display()))?;
        results.into_iter().for_each(|r| watch::report(&state, r));
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let signals = Signals::install().context("cannot install the SIGINT/SIGTERM handlers")?;
    let loaded = state.plugins.host().ids().len();
    println!("listening on {local}");
    let _ = std::io::stdout().flush();
    tracing::info!(address = %local, plugins = loaded, dir = %dir.display(), "serving");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        signals.recv().await;
        tracing::info!("shutting down: no new connections; waiting for calls in flight");
        let _ = stop_tx.send(());
    };
    let server = axum::serve(listener, http::router(Arc::clone(&state))).with_graceful_shutdown(shutdown);
    let bound = Duration::from_secs(args.shutdown_timeout);
    let deadline = async move {
        if stop_rx.await.is_ok() {
            tokio::time::sleep(bound).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result.context("the HTTP server failed")?,
        () = deadline => tracing::warn!(
            timeout_s = bound.as_secs(),
            "calls still in flight after the shutdown timeout; interrupting them"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT and SIGTERM handlers, installed before the server announces
/// itself, so a signal sent right after `listening on` is never lost.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
