//! The HTTP API: routes, request validation and error mapping.
//!
//! | route | success | errors |
//! | --- | --- | --- |
//! | `POST /v1/call/{id}.{fn}` | 200 `{"result": [...], "generation": N}` | 404 unknown plugin/function, 400 bad body, 500 trap/time-out |
//! | `GET /v1/plugins` | 200 `[{"id", "generation", "state", "in_flight", "functions", "last_error", ...}]` | |
//! | `POST /v1/plugins/{id}/reload` | 200 `{"generation": N}` | 404 unknown plugin, 422 load failed |
//! | `POST /v1/sql` | 200 `{"columns", "rows", "generations"}` | 400, 413, 500, 504 (see `serve::sql`) |
//! | `GET /metrics` | 200 Prometheus text | |
//!
//! Every error is `{"error": "..."}`. Bodies are parsed here, not by an
//! extractor, so malformed JSON is a 400 with a precise message (not a
//! framework 422), whatever the `Content-Type`.

use std::{sync::Arc, time::Instant};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use cutover::Lease;
use cutover_wasm::{CallError, WasmPlugin};
use serde_json::json;

use super::AppState;
use crate::{
    convert,
    plugins::{Op, ReloadNowError},
};

/// The router for `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/call/{target}", post(call))
        .route("/v1/plugins", get(list))
        .route("/v1/plugins/{id}/reload", post(reload))
        .route("/v1/sql", post(super::sql::handler))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// An error response: `status` with `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
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

/// Find the plugin and function `target` (`<id>.<fn>`; the id may itself
/// contain dots) names, and lease the plugin's current generation.
fn resolve(state: &AppState, target: &str) -> Result<Lease<WasmPlugin>, (StatusCode, String)> {
    let mut found_plugin = None;
    for (i, _) in target.match_indices('.') {
        let (id, function) = (&target[..i], &target[i + 1..]);
        if id.is_empty() || function.is_empty() {
            continue;
        }
        if let Some(lease) = state.plugins.host().lease_str(id) {
            if lease.signature(target).is_some() {
                return Ok(lease);
            }
            found_plugin.get_or_insert((id.to_owned(), lease.generation(), lease.functions().join(", ")));
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
            (
                StatusCode::NOT_FOUND,
                format!(
                    "no plugin is loaded for `{target}`; loaded plugins: {}",
                    if loaded.is_empty() { "none".to_owned() } else { loaded.join(", ") }
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
        CallError::Interrupted { .. } => ("interrupted", StatusCode::INTERNAL_SERVER_ERROR),
        _ => ("other", StatusCode::INTERNAL_SERVER_ERROR),
    }
}

async fn call(State(state): State<Arc<AppState>>, Path(target): Path<String>, body: Bytes) -> Response {
    let lease = match resolve(&state, &target) {
        Ok(lease) => lease,
        Err((status, message)) => return error(status, message),
    };
    let Some(signature) = lease.signature(&target).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("unknown function `{target}`"));
    };
    let columns = match convert::parse_call_body(&body).and_then(|raw| convert::columns(&target, &signature, &raw)) {
        Ok(columns) => columns,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let generation = lease.generation();
    let _in_flight = state.metrics.in_flight();
    let started = Instant::now();
    let function = target.clone();
    // The call is synchronous CPU work: keep it off the reactor. The lease
    // moves with it and is dropped as soon as the call returns.
    let outcome = tokio::task::spawn_blocking(move || {
        let result = lease.call(&function, &columns);
        drop(lease);
        result.map(|array| convert::to_json(array.as_ref()))
    })
    .await;
    let took = started.elapsed();
    match outcome {
        Ok(Ok(result)) => {
            state.metrics.call(&target, generation, took, None);
            (StatusCode::OK, Json(json!({ "result": result, "generation": generation }))).into_response()
        }
        Ok(Err(e)) => {
            let (kind, status) = classify(&e);
            state.metrics.call(&target, generation, took, Some(kind));
            error(status, e.to_string())
        }
        Err(join) => {
            state.metrics.call(&target, generation, took, Some("panic"));
            error(StatusCode::INTERNAL_SERVER_ERROR, format!("the call failed: {join}"))
        }
    }
}

async fn list(State(state): State<Arc<AppState>>) -> Response {
    Json(state.sql.annotate_plugins(state.plugins.list())).into_response()
}

async fn reload(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let _serial = state.changes.lock().await;
    let task_state = Arc::clone(&state);
    let task_id = id.clone();
    let result = tokio::task::spawn_blocking(move || task_state.plugins.reload_now(&task_id)).await;
    match result {
        Ok(Ok(report)) => {
            state.metrics.reload(&id, Op::Reload.as_str(), report.outcome.as_str(), report.phases.drain);
            let generation = report.generation.unwrap_or_default();
            tracing::info!(plugin = %id, generation, outcome = %report.outcome, "reloaded by request");
            (StatusCode::OK, Json(json!({ "generation": generation }))).into_response()
        }
        Ok(Err(ReloadNowError::NotFound(id))) => error(StatusCode::NOT_FOUND, format!("no plugin `{id}` is loaded")),
        Ok(Err(ReloadNowError::Failed(message))) => {
            state.metrics.reload(&id, Op::Reload.as_str(), "failed", None);
            tracing::warn!(plugin = %id, error = %message, "reload by request failed; the old generation keeps serving");
            error(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the reload failed: {join}")),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(&state.plugins.list());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
