//! The HTTP API: routes, request validation and error mapping.
//!
//! | route | success | errors |
//! | --- | --- | --- |
//! | `POST /v1/call/{id}.{fn}` | 200 `{"result": [...], "generation": N}` (values by type: see [`convert`](crate::convert)) | 404 unknown plugin/function, 400 bad body or a value of the wrong JSON type (naming the argument index), 408 body too slow, 413 body or rows over the limit, 500 trap/time-out, 503 plugin busy / shutting down |
//! | `GET /v1/plugins` | 200 `[{"id", "generation", "state", "in_flight", "functions", "signatures", "last_error", "kind", "config_path", "reloading", ...}]` | 401, 403 |
//! | `POST /v1/plugins/{id}/reload[?if_generation=N]` | 200 `{"generation": N}` | 404 unknown plugin, 409 in progress or generation moved on, 422 load failed, 401, 403 |
//! | `POST /v1/sql` | 200 `{"columns", "rows", "generations"}` | 400, 408, 413, 500, 504 (see `serve::sql`) |
//! | `GET /metrics` | 200 Prometheus text | 401, 403 |
//!
//! Every error is `{"error": "..."}`. Bodies are read and parsed here, not
//! by an extractor, so that everything that can be checked before reading
//! a body (the route, the target, `Content-Length`) is checked first: a
//! refused body is never read, and `100 Continue` is never sent for it.
//!
//! # Adding routes
//!
//! [`router`] builds two groups: *control* routes, behind
//! [`guard::control`](super::guard::control) (token, browser origins), and
//! *data* routes (calls). Add a route to the group it belongs to; a data
//! route reads its body with [`read_body`] to get the same limits.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use axum::{
    body::{Body, Bytes},
    extract::{rejection::PathRejection, rejection::QueryRejection, Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use cutover::{Lease, MAX_PLUGIN_ID_LEN};
use cutover_wasm::{CallError, WasmPlugin};
use http_body_util::BodyExt as _;
use serde_json::json;

use super::{guard, server::unavailable, AppState};
use crate::{
    convert,
    plugins::{Op, ReloadNowError},
};

/// Longest function name accepted after the plugin id, in bytes.
const MAX_FUNCTION_LEN: usize = 1024;

/// The router for `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let control = Router::new()
        .route("/v1/plugins", get(list).options(guard::preflight))
        .route("/v1/plugins/{id}/reload", post(reload).options(guard::preflight))
        .route("/metrics", get(metrics).options(guard::preflight))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), guard::control));
    let data = Router::new().route("/v1/call/{target}", post(call)).route("/v1/sql", post(super::sql::handler));
    Router::new()
        .merge(control)
        .merge(data)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(super::unread_body::close_if_unread))
        .with_state(state)
}

/// An error response: `status` with `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such route; the API is POST /v1/call/{plugin}.{function}, GET /v1/plugins, \
         POST /v1/plugins/{id}/reload, POST /v1/sql, GET /metrics",
    )
}

async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
}

/// A path parameter that could not be decoded (e.g. `%FF`, not UTF-8): 400.
fn bad_path(rejection: &PathRejection) -> Response {
    error(StatusCode::BAD_REQUEST, format!("the request path is not valid: {}", rejection.body_text()))
}

/// Find the plugin and function `target` (`<id>.<fn>`; the id may itself
/// contain dots) names, and lease the plugin's current generation. Linear
/// in the target's length: the target is length-checked first, and only
/// the dots within the longest possible id are tried.
fn resolve(state: &AppState, target: &str) -> Result<(usize, Lease<WasmPlugin>), (StatusCode, String)> {
    if target.len() > MAX_PLUGIN_ID_LEN + 1 + MAX_FUNCTION_LEN {
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "no such function: a target is at most {} bytes (`<plugin>.<function>`)",
                MAX_PLUGIN_ID_LEN + 1 + MAX_FUNCTION_LEN
            ),
        ));
    }
    let mut found_plugin = None;
    let ids = &target[..target.len().min(MAX_PLUGIN_ID_LEN + 1)];
    for (i, _) in ids.match_indices('.') {
        let (id, function) = (&target[..i], &target[i + 1..]);
        if id.is_empty() || function.is_empty() {
            continue;
        }
        if let Some(lease) = state.plugins.host().lease_str(id) {
            if lease.signature(target).is_some() {
                return Ok((i, lease));
            }
            if found_plugin.is_none() {
                found_plugin = Some((id.to_owned(), lease.generation(), lease.functions().join(", ")));
            }
        }
    }
    Err(match found_plugin {
        Some((id, generation, available)) => (
            StatusCode::NOT_FOUND,
            format!("plugin `{id}` (generation {generation}) has no function `{target}`; it provides: {available}"),
        ),
        None if !target.contains('.') => (
            StatusCode::NOT_FOUND,
            format!("unknown function `{target}`: name it `<plugin>.<function>`, e.g. math.mul3"),
        ),
        None => {
            let loaded: Vec<String> = state.plugins.host().ids().iter().map(ToString::to_string).collect();
            let mut shown = loaded.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
            if loaded.len() > 20 {
                shown.push_str(&format!(", … ({} in all)", loaded.len()));
            }
            (
                StatusCode::NOT_FOUND,
                format!(
                    "no plugin is loaded for `{}`; loaded plugins: {}",
                    target.chars().take(300).collect::<String>(),
                    if loaded.is_empty() { "none".to_owned() } else { shown }
                ),
            )
        }
    })
}

/// The kind of a call error, for metrics, and its HTTP status.
fn classify(e: &CallError) -> (&'static str, StatusCode) {
    match e {
        CallError::UnknownFunction { .. } => ("unknown_function", StatusCode::NOT_FOUND),
        CallError::ArgCount { .. } | CallError::ArgType { .. } | CallError::LengthMismatch { .. } => {
            ("bad_arguments", StatusCode::BAD_REQUEST)
        }
        CallError::Trap { .. } => ("trap", StatusCode::INTERNAL_SERVER_ERROR),
        CallError::Timeout { .. } => ("timeout", StatusCode::INTERNAL_SERVER_ERROR),
        CallError::Interrupted { .. } => ("interrupted", StatusCode::SERVICE_UNAVAILABLE),
        _ => ("other", StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// Read a request body under the server's limits: `Content-Length` over
/// `--max-body-bytes` is refused before anything is read (413, and no
/// `100 Continue`), a body that turns out larger is cut off (413), and one
/// that takes longer than `--body-timeout-ms` is abandoned (408).
///
/// # Errors
/// The error response to send.
pub async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let max = state.config.max_body_bytes;
    let too_large = || {
        error(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {max} bytes (--max-body-bytes)"))
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        state.metrics.rejected("body_too_large");
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(state.config.body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            state.metrics.rejected("body_too_large");
            Err(too_large())
        }
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
        Err(_) => {
            state.metrics.rejected("body_timeout");
            Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms (--body-timeout-ms)",
                    state.config.body_timeout.as_millis()
                ),
            ))
        }
    }
}

async fn call(
    State(state): State<Arc<AppState>>,
    target: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Path(target) = match target {
        Ok(target) => target,
        Err(rejection) => return bad_path(&rejection),
    };
    if state.shutting_down.load(Ordering::Acquire) {
        return unavailable("the server is shutting down");
    }
    // Check the target before reading the body, and hold no lease while
    // the body arrives (a slow client must not hold a generation's drain).
    let split = match resolve(&state, &target) {
        Ok((split, lease)) => {
            drop(lease);
            split
        }
        Err((status, message)) => return error(status, message),
    };
    let body = match read_body(&state, &headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let raw = match convert::parse_call_body_limited(&body, state.config.max_rows) {
        Ok(raw) => raw,
        Err(e @ convert::ConvertError::TooManyRows { .. }) => {
            state.metrics.rejected("too_many_rows");
            return error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    drop(body);
    let id = &target[..split];
    let Some(lease) = state.plugins.host().lease_str(id) else {
        return error(StatusCode::NOT_FOUND, format!("plugin `{id}` was removed"));
    };
    let Some(signature) = lease.signature(&target).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("plugin `{id}` (generation {}) no longer has function `{target}`", lease.generation()),
        );
    };
    let columns = match convert::columns(&target, &signature, &raw) {
        Ok(columns) => columns,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    drop(raw);
    let Some(slot) = state.calls.try_acquire(id, state.config.max_calls_per_plugin) else {
        state.metrics.rejected("plugin_busy");
        return unavailable(&format!(
            "plugin `{id}` is running its maximum of {} concurrent calls (--max-calls-per-plugin); try again later",
            state.config.max_calls_per_plugin
        ));
    };
    let generation = lease.generation();
    let _in_flight = state.metrics.in_flight();
    let started = Instant::now();
    let function = target.clone();
    let values = columns.iter().map(|c| c.len()).sum::<usize>();
    // The call is synchronous CPU work. A short one runs right here (a
    // thread hand-off each way would cost more than the call); any other
    // goes to the blocking pool, off the reactor (see `guard::InlineCalls`).
    // The lease moves with the call and is dropped as soon as it returns.
    let run = move || {
        let timer = guard::CallTimer::start();
        let result = lease.call(&function, &columns);
        let cost = timer.elapsed();
        drop(lease);
        (result.map(|array| convert::to_json(array.as_ref())), cost)
    };
    let inline = state.inline.try_enter(&slot, generation, &target, values);
    let ran_inline = inline.is_some();
    let outcome = match inline {
        Some(_inline) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
            .map_err(|panic| format!("the call panicked: {}", panic_message(panic.as_ref()))),
        None => tokio::task::spawn_blocking(run).await.map_err(|join| format!("the call failed: {join}")),
    };
    let took = started.elapsed();
    let outcome = outcome.map(|(result, cost)| {
        if slot.took(generation, &target, values, cost, ran_inline, &state.inline) {
            tracing::info!(
                function = %target,
                generation,
                cpu_us = u64::try_from(cost.as_micros()).unwrap_or(u64::MAX),
                "calls that ran on an async worker took more than 10 ms of CPU 3 times: \
                 the function's calls run on the blocking pool for the rest of this generation"
            );
        }
        result
    });
    drop(slot);
    match outcome {
        Ok(Ok(result)) => {
            state.metrics.call(&target, generation, took, None);
            (StatusCode::OK, Json(Answer { generation, result })).into_response()
        }
        Ok(Err(e)) => {
            let (kind, status) = classify(&e);
            state.metrics.call(&target, generation, took, Some(kind));
            if status == StatusCode::SERVICE_UNAVAILABLE {
                let why = if state.shutting_down.load(Ordering::Acquire) {
                    "the server is shutting down"
                } else {
                    "the plugin generation was stopped"
                };
                return unavailable(&format!("{why}; the call was interrupted: {e}"));
            }
            error(status, e.to_string())
        }
        Err(failed) => {
            state.metrics.call(&target, generation, took, Some("panic"));
            error(StatusCode::INTERNAL_SERVER_ERROR, failed)
        }
    }
}

/// The answer of a call (fields in the order `json!` would sort them).
#[derive(serde::Serialize)]
struct Answer {
    generation: u64,
    result: Vec<serde_json::Value>,
}

/// The message of a panic payload (`panic!` with a literal or a format).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("")
}

async fn list(State(state): State<Arc<AppState>>) -> Response {
    Json(state.sql.annotate_plugins(state.plugins.list())).into_response()
}

/// The query of a reload.
#[derive(Debug, serde::Deserialize)]
struct ReloadQuery {
    /// Reload only if the plugin is at this generation.
    if_generation: Option<u64>,
}

async fn reload(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<ReloadQuery>, QueryRejection>,
) -> Response {
    let Path(id) = match id {
        Ok(id) => id,
        Err(rejection) => return bad_path(&rejection),
    };
    let if_generation = match query {
        Ok(Query(q)) => q.if_generation,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad query: {}; use ?if_generation=N with N a generation number", rejection.body_text()),
            )
        }
    };
    let task_state = Arc::clone(&state);
    let task_id = id.clone();
    let result = tokio::task::spawn_blocking(move || task_state.plugins.reload_now(&task_id, if_generation)).await;
    match result {
        Ok(Ok(report)) => {
            state.metrics.reload(&id, Op::Reload.as_str(), report.outcome.as_str(), report.phases.drain);
            state.metrics.retain_alive(&state.plugins.list());
            let generation = report.generation.unwrap_or_default();
            tracing::info!(plugin = %id, generation, outcome = %report.outcome, "reloaded by request");
            (StatusCode::OK, Json(json!({ "generation": generation }))).into_response()
        }
        Ok(Err(e @ ReloadNowError::NotFound(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e @ ReloadNowError::InProgress(_))) => error(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(e @ ReloadNowError::GenerationMismatch { current, .. })) => {
            (StatusCode::CONFLICT, Json(json!({ "error": e.to_string(), "generation": current }))).into_response()
        }
        Ok(Err(ReloadNowError::Failed(message))) => {
            state.metrics.reload(&id, Op::Reload.as_str(), "failed", None);
            tracing::warn!(plugin = %id, error = %message, "reload by request failed; the old generation keeps serving");
            error(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the reload failed: {join}")),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(&state.plugins.list(), state.plugins.file_reads());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
