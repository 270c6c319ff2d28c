//! Watching the plugin directory: notify events, debounced per file, then
//! synced through the reload transaction.
//!
//! Editors save in several steps (truncate + write, or write a temporary
//! file and rename it over the original). Every event only marks the files
//! it names as *pending*; a pending file is synced once no event has touched
//! it for the debounce period. Syncing looks at what is on disk *then*
//! (exists or not, content hash), not at the event kinds, so a rename over
//! the file is a change, a rename away a removal, and a save that did not
//! change the content is skipped. If the watcher reports lost events, the
//! whole directory is rescanned.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::{sync::mpsc, time::Instant};

use super::AppState;
use crate::plugins::{plugin_id_for, Op, Synced};

/// What the notify callback forwards.
enum Change {
    Paths(Vec<PathBuf>),
    Rescan,
}

/// A running directory watcher; dropping it stops watching.
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Start watching `dir` and syncing changed plugin files into `state`,
/// debounced by `debounce`. The sync loop runs on the current tokio runtime.
///
/// # Errors
/// The watcher could not be created or could not watch `dir`.
pub fn start(state: Arc<AppState>, dir: &Path, debounce: Duration) -> notify::Result<DirWatcher> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let change = match event {
            Ok(event) if event.need_rescan() => Change::Rescan,
            Ok(event) => Change::Paths(event.paths),
            Err(e) => {
                tracing::warn!(error = %e, "plugin directory watcher error; rescanning");
                Change::Rescan
            }
        };
        let _ = tx.send(change);
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(sync_loop(state, rx, debounce));
    Ok(DirWatcher { _watcher: watcher })
}

async fn sync_loop(state: Arc<AppState>, mut rx: mpsc::UnboundedReceiver<Change>, debounce: Duration) {
    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    let mut rescan_at: Option<Instant> = None;
    loop {
        let next = pending.values().copied().chain(rescan_at).min();
        let change = match next {
            Some(deadline) => tokio::select! {
                change = rx.recv() => change,
                () = tokio::time::sleep_until(deadline) => Some(Change::Paths(Vec::new())),
            },
            None => rx.recv().await,
        };
        let Some(change) = change else {
            return; // the watcher is gone
        };
        let now = Instant::now();
        match change {
            Change::Paths(paths) => {
                for path in paths.into_iter().filter(|p| plugin_id_for(p).is_some()) {
                    pending.insert(path, now + debounce);
                }
            }
            Change::Rescan => rescan_at = Some(now + debounce),
        }
        let mut due: Vec<PathBuf> = pending.iter().filter(|(_, &t)| t <= now).map(|(p, _)| p.clone()).collect();
        pending.retain(|_, t| *t > now);
        let rescan = rescan_at.is_some_and(|t| t <= now);
        if rescan {
            rescan_at = None;
        }
        if due.is_empty() && !rescan {
            continue;
        }
        due.sort();
        let _serial = state.changes.lock().await;
        let task_state = Arc::clone(&state);
        let results = tokio::task::spawn_blocking(move || {
            let mut results: Vec<Synced> = due.iter().map(|p| task_state.plugins.sync_path(p)).collect();
            if rescan {
                match task_state.plugins.scan() {
                    Ok(more) => results.extend(more),
                    Err(e) => tracing::error!(error = %e, "cannot rescan the plugin directory"),
                }
            }
            results
        })
        .await;
        match results {
            Ok(results) => results.into_iter().for_each(|r| report(&state, r)),
            Err(e) => tracing::error!(error = %e, "plugin sync task failed"),
        }
    }
}

/// Log a sync result and count it in the metrics.
pub fn report(state: &AppState, synced: Synced) {
    match synced {
        Synced::Ignored => {}
        Synced::Unchanged(id) => tracing::debug!(plugin = %id, "content unchanged; not reloaded"),
        Synced::Done(op, report) => {
            let outcome = if op == Op::Add { "added" } else { report.outcome.as_str() };
            state.metrics.reload(report.plugin.as_str(), op.as_str(), outcome, report.phases.drain);
            tracing::info!(
                plugin = %report.plugin,
                op = op.as_str(),
                generation = report.generation.unwrap_or_default(),
                previous = report.previous.unwrap_or_default(),
                outcome = %report.outcome,
                cutover_us = report.phases.cutover.as_micros() as u64,
                drain_us = report.phases.drain.map(|d| d.as_micros() as u64),
                "plugin {}", match op { Op::Add => "added", Op::Reload => "reloaded", Op::Remove => "removed" }
            );
        }
        Synced::Failed(op, id, error) => {
            state.metrics.reload(id.as_str(), op.as_str(), "failed", None);
            tracing::warn!(plugin = %id, op = op.as_str(), %error, "plugin change failed; what was serving keeps serving");
        }
    }
}
