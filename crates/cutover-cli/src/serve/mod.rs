//! `cutover serve`: the reference host. Binds its address, loads every
//! plugin in a directory, watches it, and serves the plugins' functions
//! over HTTP (see [`http`]).
//!
//! * [`server`] and [`conn`]: the accept loop, connection and request
//!   limits, timeouts, graceful shutdown.
//! * [`http`]: the routes; [`guard`]: token, browser origins, per-plugin
//!   call limits.
//! * [`watch`]: the directory watcher; [`metrics`]: `/metrics`.
//!
//! Start-up: the address is bound first (a port in use fails at once),
//! then the plugins are loaded, then `listening on ADDR` is printed and
//! connections are served (the ones that arrived meanwhile waited in the
//! listen backlog).
//!
//! Shutdown (SIGINT or SIGTERM): stop accepting connections, close idle
//! ones, let the calls in flight finish for up to `--shutdown-timeout`,
//! then interrupt whatever still runs (those calls answer 503) and exit 0.

mod conn;
mod guard;
mod http;
mod metrics;
mod server;
mod sql;
mod unread_body;
mod watch;

use std::{
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use anyhow::Context as _;
use cutover::host::ReloadOptions;
use cutover_wasm::WasmLimits;

use crate::plugins::{LoadConfig, PluginSet};

/// Flags of `cutover serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is
    /// printed as `listening on ADDR`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = crate::parse_listen)]
    pub listen: SocketAddr,
    /// Directory of `.wat`/`.wasm` plugins (core modules or components) to
    /// load and watch (id = file stem; `<id>.config` beside a plugin is its
    /// configuration text).
    #[arg(long, value_name = "DIR", value_parser = crate::parse_dir)]
    pub plugins: PathBuf,
    /// Time budget of one call, in milliseconds (a call past it fails with 500).
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub call_timeout_ms: u64,
    /// Time budget of a plugin's `init` export, per instance, in milliseconds
    /// (`init` runs once per prewarmed instance; past it the load fails and
    /// the old generation keeps serving).
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub init_timeout_ms: u64,
    /// Instances created and `init`ialized per generation before its cutover
    /// [default: available cores, at least 2, at most 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub prewarm_instances: Option<u64>,
    /// How long a reload or removal waits for the old generation's calls
    /// before cancelling and then interrupting them, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub drain_deadline_ms: u64,
    /// How long a file must be quiet before its change is applied, in
    /// milliseconds (editors write in several steps).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub debounce_ms: u64,
    /// Longest a change waits for quiet, in milliseconds: a file rewritten
    /// without pause is loaded this long after its first change anyway.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub debounce_max_ms: u64,
    /// Follow plugin symlinks that resolve outside the plugin directory
    /// (refused by default; links inside it, as in ConfigMaps, are followed).
    #[arg(long)]
    pub allow_outside_symlinks: bool,
    /// Require `Authorization: Bearer TOKEN` on `/v1/plugins`, reload and
    /// `/metrics` (prefer --admin-token-file: arguments are visible to
    /// other local users).
    #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
    pub admin_token: Option<String>,
    /// Read the admin token from FILE (surrounding whitespace is ignored).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// A browser origin (`https://ops.example.com`, or `*`) allowed to use
    /// the control routes; repeatable. Other browser requests get 403.
    #[arg(long, value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Most open connections; at the limit an idle keep-alive connection is
    /// closed to make room, else the new one gets 503.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Most requests in handling at once (not counting `GET /metrics`); more
    /// get 503 with `Retry-After`.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_requests: u64,
    /// Most calls of one plugin running at once; more get 503 with
    /// `Retry-After` at once (calls of other plugins are not affected).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_calls_per_plugin: u64,
    /// Largest request body, in bytes (larger: 413, refused by
    /// `Content-Length` before it is read).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: u64,
    /// Most rows (values per argument column) in one call (more: 413).
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rows: u64,
    /// Longest request URI, in bytes (longer: 414).
    #[arg(long, value_name = "BYTES", default_value_t = 8192, value_parser = clap::value_parser!(u64).range(64..=1 << 20))]
    pub max_uri_bytes: u64,
    /// Largest request headers, in bytes (larger: 431).
    #[arg(long, value_name = "BYTES", default_value_t = 32_768, value_parser = clap::value_parser!(u64).range(1024..=1 << 20))]
    pub max_header_bytes: u64,
    /// Time to receive a complete request head (request line and headers),
    /// in milliseconds, from its first byte (or from the connection's
    /// accept, for the first request); past it the connection is closed.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// Time to receive a whole request body, in milliseconds (past it: 408).
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_ms: u64,
    /// How long an idle connection is kept open between requests, in
    /// milliseconds (0 disables keep-alive).
    #[arg(long, value_name = "MS", default_value_t = 75_000)]
    pub keep_alive_timeout_ms: u64,
    /// How long a response may stay unsent because the client stopped
    /// reading, in milliseconds; past it the connection is closed.
    #[arg(long, value_name = "MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// On SIGINT/SIGTERM, how long to let calls in flight finish, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub shutdown_timeout: u64,
    /// `POST /v1/sql`: `--data`, `--sql-max-rows`, `--sql-timeout-ms`.
    #[command(flatten)]
    pub sql: sql::SqlArgs,
}

/// Limits the handlers apply.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time to receive a request body.
    pub body_timeout: Duration,
    /// Most rows per call.
    pub max_rows: usize,
    /// Most concurrent calls per plugin.
    pub max_calls_per_plugin: usize,
    /// Who may use the control routes.
    pub access: guard::Access,
}

/// What the HTTP handlers and the watcher share.
pub struct AppState {
    /// The plugins.
    pub plugins: PluginSet,
    /// The counters behind `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Calls running per plugin.
    pub calls: guard::CallSlots,
    /// Which calls run on the async worker that received them.
    pub inline: guard::InlineCalls,
    /// Limits and access settings.
    pub config: HttpConfig,
    /// Set once the shutdown grace has passed: calls answer 503.
    pub shutting_down: AtomicBool,
    /// The SQL engine behind `POST /v1/sql`.
    pub sql: sql::SqlEngine,
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn admin_token(args: &ServeArgs) -> anyhow::Result<Option<String>> {
    let token = match (&args.admin_token, &args.admin_token_file) {
        (Some(token), _) => token.trim().to_owned(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the admin token file `{}`", file.display()))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    anyhow::ensure!(!token.is_empty(), "the admin token is empty");
    Ok(Some(token))
}

/// Run `cutover serve` until SIGINT/SIGTERM.
///
/// # Errors
/// The plugin directory cannot be read or watched, the token file cannot
/// be read, or the address cannot be bound.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.plugins;
    let meta =
        std::fs::metadata(dir).with_context(|| format!("cannot read the plugin directory `{}`", dir.display()))?;
    anyhow::ensure!(meta.is_dir(), "the plugin directory `{}` is not a directory", dir.display());
    std::fs::read_dir(dir).with_context(|| format!("cannot read the plugin directory `{}`", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("cannot resolve `{}`", dir.display()))?;
    let token = admin_token(&args)?;

    let mut limits = WasmLimits::default()
        .call_timeout(Duration::from_millis(args.call_timeout_ms))
        .init_timeout(Duration::from_millis(args.init_timeout_ms));
    if let Some(n) = args.prewarm_instances {
        let n = usize_of(n);
        let idle = limits.max_idle_instances.max(n);
        limits = limits.prewarm_instances(n).max_idle_instances(idle);
    }
    let deadline = args.sql.drain_deadline(Duration::from_millis(args.drain_deadline_ms));
    let options = ReloadOptions::default().deadline(deadline);
    let config = HttpConfig {
        max_body_bytes: usize_of(args.max_body_bytes),
        body_timeout: Duration::from_millis(args.body_timeout_ms),
        max_rows: usize_of(args.max_rows),
        max_calls_per_plugin: usize_of(args.max_calls_per_plugin),
        access: guard::Access {
            token,
            allow_origins: args.allow_origin.clone(),
            loopback_only: args.listen.ip().is_loopback(),
        },
    };
    let plugins = PluginSet::new(
        dir.clone(),
        LoadConfig { limits, options, allow_outside_symlinks: args.allow_outside_symlinks },
    );
    let sql = sql::SqlEngine::new(&args.sql, plugins.shared_host())?;
    // One async worker per core, as tokio starts by default, plus one: short
    // calls run on the workers (`guard::InlineCalls`), on all of them but
    // one, so one is always free for new requests even when those calls
    // spin. `TOKIO_WORKER_THREADS` sets the number, as with tokio.
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) + 1);
    let state = Arc::new(AppState {
        plugins,
        metrics: Arc::new(metrics::Metrics::default()),
        calls: guard::CallSlots::default(),
        inline: guard::InlineCalls::for_workers(workers),
        config,
        shutting_down: AtomicBool::new(false),
        sql,
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("cutover-serve")
        // Every admitted request gets a thread for its call at once.
        .max_blocking_threads(usize_of(args.max_requests).saturating_add(64))
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(Arc::clone(&state), dir, args));
    // Calls still running after the bounded waits are interrupted; do not
    // let them hold the process.
    state.plugins.interrupt_all();
    runtime.shutdown_timeout(Duration::from_secs(1));
    result.map(|()| ExitCode::SUCCESS)
}

async fn serve(state: Arc<AppState>, dir: PathBuf, args: ServeArgs) -> anyhow::Result<()> {
    // Bind first: a port in use fails before any plugin is compiled.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let signals = Signals::install().context("cannot install the SIGINT/SIGTERM handlers")?;

    // Watch first, then scan: a change in between is seen twice, and the
    // second time skipped by its hash.
    let debounce = watch::Debounce {
        quiet: Duration::from_millis(args.debounce_ms),
        max_wait: Duration::from_millis(args.debounce_max_ms.max(args.debounce_ms)),
    };
    let _watcher = watch::start(Arc::clone(&state), &dir, debounce)
        .with_context(|| format!("cannot watch the plugin directory `{}`", dir.display()))?;
    {
        let scan_state = Arc::clone(&state);
        let results = tokio::task::spawn_blocking(move || scan_state.plugins.scan()).await?;
        let results = results.with_context(|| format!("cannot read the plugin directory `{}`", dir.display()))?;
        results.into_iter().for_each(|r| watch::report(&state, r));
    }

    if !local.ip().is_loopback() && state.config.access.token.is_none() {
        tracing::warn!(
            address = %local,
            "listening beyond loopback without an admin token: anyone who can reach this port can list, \
             reload and read the metrics of the plugins; pass --admin-token-file"
        );
    }
    let loaded = state.plugins.host().ids().len();
    println!("listening on {local}");
    let _ = std::io::stdout().flush();
    tracing::info!(address = %local, plugins = loaded, dir = %dir.display(), "serving");

    let limits = server::Limits {
        max_connections: usize_of(args.max_connections),
        max_requests: usize_of(args.max_requests),
        max_uri_bytes: usize_of(args.max_uri_bytes),
        max_header_bytes: usize_of(args.max_header_bytes),
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        keep_alive_timeout: Duration::from_millis(args.keep_alive_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
    };
    let server = server::Server::new(listener, http::router(Arc::clone(&state)), limits, Arc::clone(&state.metrics));
    let grace_state = Arc::clone(&state);
    server
        .run(signals.recv(), Duration::from_secs(args.shutdown_timeout), move || {
            grace_state.shutting_down.store(true, std::sync::atomic::Ordering::Release);
            grace_state.plugins.interrupt_all();
        })
        .await;
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
