//! Watching the plugin directory: notify events, debounced per plugin, then
//! synced through the reload transaction, each plugin on its own task.
//!
//! # What is watched
//!
//! * The directory itself (non-recursively). Access events (open, read,
//!   close without writing) are ignored: reading a plugin file never
//!   schedules another read, so an idle server does no work. A close after
//!   writing is kept.
//! * Its parent, for events naming the directory: when the directory is
//!   replaced (`rm -rf` + `mkdir`, or a new directory renamed over it), the
//!   watch is re-established and everything is rescanned.
//! * An event on a plugin file (`<id>.wat`/`<id>.wasm`) or on its
//!   configuration file (`<id>.config`) marks that plugin pending (the
//!   sync reads both); any other event inside the directory (a Kubernetes ConfigMap
//!   swapping its `..data` symlink, a chmod of the directory) schedules a
//!   rescan of every plugin.
//!
//! # Debounce
//!
//! A pending plugin is synced once no event has touched it for
//! `debounce`, or at the latest `max_wait` after its first pending event
//! (a file rewritten without pause is still loaded, with its latest
//! content). Syncing looks at what is on disk then, and skips content whose
//! hash did not change.
//!
//! # Concurrency
//!
//! Each plugin syncs on its own task, so a slow `init` of one plugin never
//! delays another. Events for a plugin that is syncing are coalesced: one
//! more sync runs after the current one. A sync that finds the plugin busy
//! with a reload by request waits for it to end and syncs again (which
//! skips the content the reload already loaded).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use cutover::PluginId;
use notify::{
    event::{AccessKind, AccessMode},
    EventKind, RecursiveMode, Watcher,
};
use tokio::{sync::mpsc, time::Instant};

use super::AppState;
use crate::plugins::{owner_id_for, Op, Synced};

/// What the loop is told.
enum Msg {
    /// A plugin's file or its `.config` changed.
    Plugin(PluginId),
    /// Something else in the directory changed: rescan everything.
    Rescan,
    /// The directory itself was replaced or removed: watch it again.
    Rewatch,
    /// A sync task of `id` ended; `retry` asks for another sync after the
    /// debounce.
    Synced { id: PluginId, retry: bool },
    /// A rescan listed these plugins.
    Listed(Vec<PluginId>),
    /// A debounce deadline passed.
    Tick,
}

/// Debounce settings.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// Quiet time before a change is applied.
    pub quiet: Duration,
    /// Longest time a change waits from its first event.
    pub max_wait: Duration,
}

/// A running directory watcher; dropping it stops watching.
pub struct DirWatcher {
    _task: tokio::task::JoinHandle<()>,
}

/// Start watching `dir` (canonical) and syncing changed plugins into
/// `state`. The loop runs on the current tokio runtime.
///
/// # Errors
/// The watcher could not be created or could not watch `dir`.
pub fn start(state: Arc<AppState>, dir: &Path, debounce: Debounce) -> notify::Result<DirWatcher> {
    let (tx, rx) = mpsc::unbounded_channel();
    let events_tx = tx.clone();
    let watched = dir.to_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "plugin directory watcher error; rescanning");
                let _ = events_tx.send(Msg::Rescan);
                return;
            }
        };
        if event.need_rescan() {
            let _ = events_tx.send(Msg::Rescan);
            return;
        }
        if let EventKind::Access(kind) = event.kind {
            if kind != AccessKind::Close(AccessMode::Write) {
                return; // our own (or anyone's) reads: nothing changed
            }
        }
        for path in &event.paths {
            if let Some(msg) = classify(&watched, path) {
                let _ = events_tx.send(msg);
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    if let Some(parent) = dir.parent() {
        if let Err(e) = watcher.watch(parent, RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, parent = %parent.display(),
                "cannot watch the plugin directory's parent; replacing the directory will not be noticed");
        }
    }
    let task = tokio::spawn(sync_loop(state, dir.to_owned(), watcher, tx, rx, debounce));
    Ok(DirWatcher { _task: task })
}

/// What an event on `path` means for the directory `dir`.
fn classify(dir: &Path, path: &Path) -> Option<Msg> {
    if path == dir {
        // The directory itself (from its own watch or its parent's):
        // attributes changed, deleted, moved away or moved in. Watching it
        // again is cheap and right in every case.
        return Some(Msg::Rewatch);
    }
    match path.parent() {
        Some(parent) if parent == dir => Some(match owner_id_for(path) {
            Some(id) => Msg::Plugin(id),
            None => Msg::Rescan,
        }),
        // In the parent: only events naming the directory matter.
        _ if path.file_name() == dir.file_name() && path.parent() == dir.parent() => Some(Msg::Rewatch),
        _ => None,
    }
}

/// When a pending key is due.
#[derive(Debug, Clone, Copy)]
struct Pending {
    first: Instant,
    due: Instant,
    /// Only rescans asked for it: an unchanged file stamp may skip the read.
    trust_stamp: bool,
}

impl Pending {
    fn touch(entry: Option<Pending>, now: Instant, d: Debounce) -> Pending {
        let first = entry.map_or(now, |p| p.first);
        Pending { first, due: (now + d.quiet).min(first + d.max_wait), trust_stamp: false }
    }

    fn now(now: Instant, trust_stamp: bool) -> Pending {
        Pending { first: now, due: now, trust_stamp }
    }
}

async fn sync_loop(
    state: Arc<AppState>,
    dir: PathBuf,
    mut watcher: notify::RecommendedWatcher,
    tx: mpsc::UnboundedSender<Msg>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    debounce: Debounce,
) {
    let mut pending: HashMap<PluginId, Pending> = HashMap::new();
    let mut rescan: Option<Pending> = None;
    let mut running: HashSet<PluginId> = HashSet::new();
    // Plugins to sync again when their running sync ends, and whether only
    // rescans asked for it.
    let mut again: HashMap<PluginId, bool> = HashMap::new();
    loop {
        let next = pending.values().map(|p| p.due).chain(rescan.map(|p| p.due)).min();
        let msg = match next {
            Some(deadline) => tokio::select! {
                msg = rx.recv() => msg,
                () = tokio::time::sleep_until(deadline) => Some(Msg::Tick),
            },
            None => rx.recv().await,
        };
        let Some(msg) = msg else { return };
        let now = Instant::now();
        match msg {
            Msg::Plugin(id) => {
                let p = Pending::touch(pending.get(&id).copied(), now, debounce);
                pending.insert(id, p);
            }
            Msg::Rescan => rescan = Some(Pending::touch(rescan, now, debounce)),
            Msg::Rewatch => {
                let _ = watcher.unwatch(&dir);
                match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    Ok(()) => tracing::info!(dir = %dir.display(), "plugin directory replaced; watching it again"),
                    Err(e) => tracing::debug!(error = %e, "plugin directory not there (yet)"),
                }
                rescan = Some(Pending::touch(rescan, now, debounce));
            }
            Msg::Synced { id, retry } => {
                running.remove(&id);
                if retry {
                    let p = Pending::touch(pending.get(&id).copied(), now, debounce);
                    pending.insert(id.clone(), p);
                }
                if let Some(trust_stamp) = again.remove(&id) {
                    pending.entry(id).or_insert(Pending::now(now, trust_stamp));
                }
            }
            Msg::Listed(ids) => {
                for id in ids {
                    pending.entry(id).or_insert(Pending::now(now, true));
                }
            }
            Msg::Tick => {}
        }
        if rescan.is_some_and(|p| p.due <= now) {
            rescan = None;
            let (state, tx) = (Arc::clone(&state), tx.clone());
            tokio::spawn(async move {
                let listed = tokio::task::spawn_blocking(move || state.plugins.ids()).await;
                match listed {
                    Ok(Ok(ids)) => {
                        let _ = tx.send(Msg::Listed(ids));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot read the plugin directory; what is loaded keeps serving")
                    }
                    Err(e) => tracing::error!(error = %e, "plugin rescan task failed"),
                }
            });
        }
        let due: Vec<(PluginId, bool)> =
            pending.iter().filter(|(_, p)| p.due <= now).map(|(id, p)| (id.clone(), p.trust_stamp)).collect();
        for (id, trust_stamp) in due {
            pending.remove(&id);
            if running.contains(&id) {
                let trust = again.get(&id).is_none_or(|&t| t) && trust_stamp;
                again.insert(id, trust);
                continue;
            }
            running.insert(id.clone());
            tokio::spawn(sync_task(Arc::clone(&state), id, trust_stamp, tx.clone()));
        }
    }
}

/// Sync one plugin, waiting out a reload by request if one is running.
async fn sync_task(state: Arc<AppState>, id: PluginId, trust_stamp: bool, tx: mpsc::UnboundedSender<Msg>) {
    let retry = loop {
        let (task_state, task_id) = (Arc::clone(&state), id.clone());
        match tokio::task::spawn_blocking(move || task_state.plugins.sync(&task_id, trust_stamp)).await {
            Ok(Synced::Busy) => state.plugins.wait_idle(&id).await,
            Ok(Synced::Retry) => {
                tracing::debug!(plugin = %id, "file changed while loading; trying again after the debounce");
                break true;
            }
            Ok(synced) => {
                report(&state, synced);
                break false;
            }
            Err(e) => {
                tracing::error!(plugin = %id, error = %e, "plugin sync task failed");
                break false;
            }
        }
    };
    let _ = tx.send(Msg::Synced { id, retry });
}

/// Log a sync result and count it in the metrics.
pub fn report(state: &AppState, synced: Synced) {
    match synced {
        Synced::Busy | Synced::Retry | Synced::Moved { .. } => {}
        Synced::Unchanged(id) => tracing::debug!(plugin = %id, "content unchanged; not reloaded"),
        Synced::Done(op, report) => {
            let outcome = if op == Op::Add { "added" } else { report.outcome.as_str() };
            state.metrics.reload(report.plugin.as_str(), op.as_str(), outcome, report.phases.drain);
            if op == Op::Remove {
                state.metrics.forget_plugin(report.plugin.as_str());
                state.calls.retain(|id| id != report.plugin.as_str());
            }
            state.metrics.retain_alive(&state.plugins.list());
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
