//! `POST /v1/sql`: SQL over the plugins' functions, on Apache DataFusion.
//!
//! Every function `<id>.<fn>` of the served plugins is the SQL function
//! `<id>_<fn>` (through `cutover_datafusion`: each query runs on one
//! generation per plugin, the one current when it was planned; reloads,
//! additions and removals show up in SQL as they happen). With `--data DIR`,
//! every `.csv` and `.parquet` file in DIR is a table named by its file
//! stem.
//!
//! | answer | when |
//! | --- | --- |
//! | 200 `{"columns": [...], "rows": [[...], ...], "generations": {"<id>": N}}` | the query ran; `generations` is the generation of each plugin it used |
//! | 400 `{"error"}` | the body is not `{"sql": "..."}`, or the SQL does not parse or plan (unknown function or table, type error, a statement other than a query) |
//! | 413 `{"error"}` | the result has more than `--sql-max-rows` rows |
//! | 500 `{"error"}` | the query failed while running (a plugin error or trap, an I/O error); the server keeps serving |
//! | 504 `{"error"}` | the query ran past `--sql-timeout-ms`: it was cancelled, and its generations released |
//!
//! Queries run on a runtime of their own (`cutover-sql` threads), never on
//! the HTTP server's: a slow query, or a plugin function busy inside a
//! batch, cannot stall the server. A query is cancelled when it times out
//! or when its client disconnects. Only queries are accepted (no DDL, DML
//! or `SET`).

mod json;

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use cutover::host::Host;
use cutover_datafusion::HostFunctions;
use cutover_wasm::WasmPlugin;
use datafusion::{
    common::TableReference,
    error::DataFusionError,
    execution::context::SQLOptions,
    physical_plan::execute_stream,
    prelude::{CsvReadOptions, ParquetReadOptions, SessionContext},
};
use futures::StreamExt as _;
use serde_json::{json, Value};

use super::AppState;
use crate::plugins::PluginInfo;

/// The SQL flags of `cutover serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct SqlArgs {
    /// Directory of `.csv` and `.parquet` files to query as tables (each
    /// named by its file stem), read at startup.
    #[arg(long, value_name = "DIR", value_parser = crate::parse_dir)]
    pub data: Option<PathBuf>,
    /// Most rows a `POST /v1/sql` result may have (more: 413).
    #[arg(long, value_name = "ROWS", default_value_t = 100_000)]
    pub sql_max_rows: usize,
    /// Time budget of one SQL query, in milliseconds (past it the query is
    /// cancelled: 504).
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub sql_timeout_ms: u64,
}

impl SqlArgs {
    /// The drain deadline of reloads and removals: at least the SQL time
    /// budget, so that a query always finishes on the generation it was
    /// planned on (it cannot run longer than `--sql-timeout-ms`) instead of
    /// being cancelled by a reload's escalation ladder.
    pub fn drain_deadline(&self, configured: Duration) -> Duration {
        configured.max(Duration::from_millis(self.sql_timeout_ms))
    }
}

/// The SQL engine: a DataFusion session over the host's functions and the
/// data tables, and the runtime queries run on.
pub struct SqlEngine {
    ctx: SessionContext,
    functions: HostFunctions<WasmPlugin>,
    runtime: Option<tokio::runtime::Runtime>,
    max_rows: usize,
    timeout: Duration,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine").field("max_rows", &self.max_rows).field("timeout", &self.timeout).finish()
    }
}

impl Drop for SqlEngine {
    fn drop(&mut self) {
        // May run on an async thread (the last `AppState` reference can go
        // anywhere): never block there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What went wrong with a query, and its HTTP status.
enum Failure {
    Plan(DataFusionError),
    Execution(DataFusionError),
    TooManyRows(usize),
}

/// A query's answer (fields in the order the API documents them).
#[derive(serde::Serialize)]
struct Answer {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    generations: BTreeMap<String, u64>,
}

impl SqlEngine {
    /// A session following `host`'s functions, with the tables of
    /// `args.data`, and the query runtime.
    ///
    /// # Errors
    /// The data directory or one of its files cannot be read, or the runtime
    /// cannot start.
    pub fn new(args: &SqlArgs, host: Arc<Host<WasmPlugin>>) -> anyhow::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("cutover-sql")
            .enable_all()
            .build()
            .context("cannot start the SQL runtime")?;
        let ctx = SessionContext::new();
        let functions = HostFunctions::new(host);
        functions.register(&ctx);
        if let Some(dir) = &args.data {
            let tables = runtime.block_on(register_tables(&ctx, dir))?;
            tracing::info!(dir = %dir.display(), tables = ?tables, "SQL tables registered");
        }
        Ok(Self {
            ctx,
            functions,
            runtime: Some(runtime),
            max_rows: args.sql_max_rows,
            timeout: Duration::from_millis(args.sql_timeout_ms),
        })
    }

    /// `GET /v1/plugins` with, per plugin, `queries_in_flight` (queries
    /// holding the current generation) and the same per draining
    /// generation.
    pub fn annotate_plugins(&self, plugins: Vec<PluginInfo>) -> Vec<Value> {
        let counts: BTreeMap<String, BTreeMap<u64, usize>> =
            self.functions.all_queries_in_flight().into_iter().map(|(id, g)| (id.to_string(), g)).collect();
        plugins
            .into_iter()
            .map(|plugin| {
                let queries = counts.get(&plugin.id);
                let on = |generation: u64| queries.and_then(|g| g.get(&generation)).copied().unwrap_or(0);
                let mut value = serde_json::to_value(&plugin).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut value {
                    map.insert("queries_in_flight".into(), on(plugin.generation).into());
                    if let Some(Value::Array(draining)) = map.get_mut("draining") {
                        for (entry, info) in draining.iter_mut().zip(&plugin.draining) {
                            if let Value::Object(entry) = entry {
                                entry.insert("queries_in_flight".into(), on(info.generation).into());
                            }
                        }
                    }
                }
                value
            })
            .collect()
    }

    async fn execute(&self, body: &[u8]) -> Response {
        let sql = match parse_body(body) {
            Ok(sql) => sql,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
        let Some(runtime) = &self.runtime else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the SQL engine is shutting down");
        };
        let (ctx, max_rows) = (self.ctx.clone(), self.max_rows);
        let task = runtime.spawn(run_query(ctx, sql, max_rows));
        // Cancel the query if this request goes away (client disconnect) or
        // times out: aborting drops its stream and plan, releasing its pins.
        let _cancel = AbortOnDrop(task.abort_handle());
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(answer))) => (StatusCode::OK, Json(answer)).into_response(),
            Ok(Ok(Err(failure))) => failure.into_response(self.max_rows),
            Ok(Err(join)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the query failed: {join}")),
            Err(_) => error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the query ran past the time budget of {} ms (--sql-timeout-ms) and was cancelled",
                    self.timeout.as_millis()
                ),
            ),
        }
    }
}

/// `POST /v1/sql`.
pub async fn handler(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    // The same body limits as calls (--max-body-bytes, --body-timeout-ms).
    let body = match super::http::read_body(&state, &headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    state.sql.execute(&body).await
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

impl Failure {
    fn into_response(self, max_rows: usize) -> Response {
        match self {
            Failure::Plan(e) => {
                // Planning failures are the query's fault, except the
                // engine's own (bugs, I/O, memory).
                let status = match e.find_root() {
                    DataFusionError::Internal(_)
                    | DataFusionError::IoError(_)
                    | DataFusionError::ObjectStore(_)
                    | DataFusionError::ResourcesExhausted(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                error(status, describe(&e))
            }
            Failure::Execution(e) => error(StatusCode::INTERNAL_SERVER_ERROR, describe(&e)),
            Failure::TooManyRows(at_least) => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the result has more than {max_rows} rows (at least {at_least}; --sql-max-rows): \
                     add a LIMIT or aggregate"
                ),
            ),
        }
    }
}

/// A DataFusion error as one line; a plugin's error (DataFusion's
/// "External error") as the plugin's own message.
fn describe(e: &DataFusionError) -> String {
    let text = match e.find_root() {
        DataFusionError::External(inner) => inner.to_string(),
        _ => e.to_string(),
    };
    text.trim().replace('\n', " ")
}

/// The SQL text of a `{"sql": "..."}` body.
fn parse_body(body: &[u8]) -> Result<String, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    match value.get("sql") {
        Some(Value::String(sql)) if !sql.trim().is_empty() => Ok(sql.clone()),
        Some(Value::String(_)) => Err("\"sql\" is empty".into()),
        Some(_) => Err("\"sql\" must be a string".into()),
        None => Err("the request body must be a JSON object {\"sql\": \"SELECT ...\"}".into()),
    }
}

/// Plan (pinning one generation per plugin), run and collect a query.
async fn run_query(ctx: SessionContext, sql: String, max_rows: usize) -> Result<Answer, Failure> {
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let frame = ctx.sql_with_options(&sql, options).await.map_err(Failure::Plan)?;
    let (state, logical) = frame.into_parts();
    let planned = cutover_datafusion::create_physical_plan(&state, &logical).await.map_err(Failure::Plan)?;
    drop(logical);
    let columns = planned.plan.schema().fields().iter().map(|f| f.name().clone()).collect();
    let generations = planned.generations.into_iter().map(|(id, g)| (id.to_string(), g)).collect();
    let mut stream = execute_stream(planned.plan, state.task_ctx()).map_err(Failure::Execution)?;
    let mut rows = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(Failure::Execution)?;
        let total = rows.len() + batch.num_rows();
        if total > max_rows {
            return Err(Failure::TooManyRows(total));
        }
        json::append_rows(&batch, &mut rows).map_err(|e| Failure::Execution(e.into()))?;
    }
    Ok(Answer { columns, rows, generations })
}

/// Register every `.csv` and `.parquet` file of `dir` as a table named by
/// its stem; the names, sorted.
async fn register_tables(ctx: &SessionContext, dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = dir.canonicalize().with_context(|| format!("cannot read the data directory `{}`", dir.display()))?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read the data directory `{}`", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut tables = Vec::new();
    for path in paths {
        let (Some(stem), Some(ext)) =
            (path.file_stem().and_then(OsStr::to_str), path.extension().and_then(OsStr::to_str))
        else {
            continue;
        };
        let ext = ext.to_ascii_lowercase();
        if stem.is_empty() || stem.starts_with('.') || !matches!(ext.as_str(), "csv" | "parquet") {
            continue;
        }
        if tables.iter().any(|t| t == stem) {
            anyhow::bail!("two files in the data directory `{}` are named `{stem}`: rename one", dir.display());
        }
        let location = path.to_str().with_context(|| format!("`{}` is not valid UTF-8", path.display()))?;
        let table = TableReference::bare(stem);
        let registered = if ext == "csv" {
            ctx.register_csv(table, location, CsvReadOptions::new()).await
        } else {
            ctx.register_parquet(table, location, ParquetReadOptions::default()).await
        };
        registered.with_context(|| format!("cannot load `{}` as a table", path.display()))?;
        tables.push(stem.to_owned());
    }
    Ok(tables)
}
