//! [`PluginSet`]: the plugins of one directory, kept in a
//! [`Host`] and changed only through its reload
//! transaction.
//!
//! Each `.wat`/`.wasm` file is a plugin whose id is the file stem. A file's
//! content is read once per change and hashed (blake3): a change whose hash
//! equals the last one seen is skipped, a new file is added, a changed one
//! reloaded, a deleted one removed. A failed load leaves the old generation
//! serving and is recorded as the plugin's `last_error` until a load of it
//! succeeds.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use cutover::{
    host::{Host, ReloadError, ReloadOptions, ReloadReport},
    PluginId,
};
use cutover_wasm::{WasmLimits, WasmPlugin, WasmSource};
use serde::Serialize;

/// What the set knows about one plugin file.
#[derive(Debug, Clone)]
struct FileRecord {
    path: PathBuf,
    /// Hash of the content last attempted (loaded or failed).
    hash: Option<blake3::Hash>,
    /// The error of the last attempt, cleared by a success.
    error: Option<String>,
}

/// What a host operation on a plugin file was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// A new plugin was added.
    Add,
    /// A plugin was reloaded.
    Reload,
    /// A plugin was removed.
    Remove,
}

impl Op {
    /// The operation's name, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Reload => "reload",
            Op::Remove => "remove",
        }
    }
}

/// The result of bringing one file's plugin in line with the file.
#[derive(Debug)]
pub enum Synced {
    /// Not a plugin file (wrong extension, hidden, invalid id).
    Ignored,
    /// The content hash did not change: nothing done.
    Unchanged(PluginId),
    /// The operation succeeded.
    Done(Op, Box<ReloadReport>),
    /// The operation failed; what was serving still serves.
    Failed(Op, PluginId, String),
}

/// Why [`PluginSet::reload_now`] did not reload.
#[derive(Debug, thiserror::Error)]
pub enum ReloadNowError {
    /// No plugin of that id is loaded or known.
    #[error("no plugin `{0}` is loaded")]
    NotFound(String),
    /// Reading or loading the file failed; the old generation keeps serving.
    #[error("{0}")]
    Failed(String),
}

/// One plugin as `GET /v1/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// The plugin id (file stem).
    pub id: String,
    /// The current generation, from 1 (0 if the plugin never loaded).
    pub generation: u64,
    /// The current generation's lifecycle state (`"Active"`), or `"Failed"`
    /// for a file that never loaded.
    pub state: String,
    /// Calls in flight on the current generation.
    pub in_flight: usize,
    /// Generations still draining, with their calls in flight.
    pub draining: Vec<DrainingInfo>,
    /// The callable functions (`"math.mul3"`).
    pub functions: Vec<String>,
    /// The error of the last failed load, `null` when the last one succeeded.
    pub last_error: Option<String>,
    /// The plugin's file.
    pub path: String,
}

/// A generation still draining.
#[derive(Debug, Clone, Serialize)]
pub struct DrainingInfo {
    /// The generation.
    pub generation: u64,
    /// Calls still in flight on it.
    pub in_flight: usize,
}

/// The plugins of one directory, served by a [`Host`].
pub struct PluginSet {
    host: Arc<Host<WasmPlugin>>,
    dir: PathBuf,
    limits: WasmLimits,
    options: ReloadOptions,
    files: Mutex<BTreeMap<PluginId, FileRecord>>,
    /// Serializes changes (watcher and reload endpoint), so the host never
    /// answers `InProgress` to us.
    ops: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The plugin id a file would have: the stem of a non-hidden `.wat`/`.wasm`
/// file, if it is a valid id.
pub fn plugin_id_for(path: &Path) -> Option<PluginId> {
    let ext = path.extension().and_then(OsStr::to_str)?;
    if !matches!(ext, "wat" | "wasm") {
        return None;
    }
    let stem = path.file_stem().and_then(OsStr::to_str)?;
    if stem.starts_with('.') {
        return None;
    }
    PluginId::parse(stem).ok()
}

impl PluginSet {
    /// A set for the plugins in `dir`, each generation loaded with `limits`,
    /// reloads and removals draining with `options`. Loads nothing yet.
    pub fn new(dir: PathBuf, limits: WasmLimits, options: ReloadOptions) -> Self {
        Self {
            host: Arc::new(Host::new()),
            dir,
            limits,
            options,
            files: Mutex::new(BTreeMap::new()),
            ops: Mutex::new(()),
        }
    }

    /// The host serving the plugins.
    pub fn host(&self) -> &Host<WasmPlugin> {
        &self.host
    }

    /// The host, shared (for the SQL engine).
    pub fn shared_host(&self) -> Arc<Host<WasmPlugin>> {
        Arc::clone(&self.host)
    }

    /// Sync every plugin file in the directory, and remove plugins whose file
    /// is gone.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn scan(&self) -> std::io::Result<Vec<Synced>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| plugin_id_for(p).is_some())
            .collect();
        paths.extend(lock(&self.files).values().map(|r| r.path.clone()));
        paths.sort();
        paths.dedup();
        Ok(paths.iter().map(|p| self.sync_path(p)).collect())
    }

    /// Bring the plugin of file `path` in line with the file: add, reload
    /// (if its content hash changed), or remove (if it is gone).
    pub fn sync_path(&self, path: &Path) -> Synced {
        let Some(id) = plugin_id_for(path) else {
            return Synced::Ignored;
        };
        let _ops = lock(&self.ops);
        if path.is_file() {
            self.load_file(&id, path, false)
        } else {
            let known = lock(&self.files).get(&id).map(|r| r.path.clone());
            if known.as_deref().is_some_and(|p| p != path) {
                // Another file (math.wasm vs math.wat) provides this id.
                return Synced::Unchanged(id);
            }
            // A sibling with the other extension takes over, if there is one.
            for ext in ["wat", "wasm"] {
                let sibling = path.with_extension(ext);
                if sibling != path && sibling.is_file() {
                    return self.load_file(&id, &sibling, false);
                }
            }
            lock(&self.files).remove(&id);
            if !self.host.contains(&id) {
                return Synced::Unchanged(id);
            }
            match self.host.remove(&id, &self.options) {
                Ok(report) => Synced::Done(Op::Remove, Box::new(report)),
                Err(e) => Synced::Failed(Op::Remove, id, e.to_string()),
            }
        }
    }

    /// Reload plugin `id` from its file now, whatever its hash.
    ///
    /// # Errors
    /// [`ReloadNowError::NotFound`] if the plugin is not known;
    /// [`ReloadNowError::Failed`] if reading or loading failed (the old
    /// generation keeps serving; the error is recorded as `last_error`).
    pub fn reload_now(&self, id: &str) -> Result<ReloadReport, ReloadNowError> {
        let not_found = || ReloadNowError::NotFound(id.to_owned());
        let id = PluginId::parse(id).map_err(|_| not_found())?;
        let _ops = lock(&self.ops);
        let path = lock(&self.files).get(&id).map(|r| r.path.clone()).ok_or_else(not_found)?;
        match self.load_file(&id, &path, true) {
            Synced::Done(_, report) => Ok(*report),
            Synced::Failed(_, _, error) => Err(ReloadNowError::Failed(error)),
            Synced::Ignored | Synced::Unchanged(_) => Err(not_found()),
        }
    }

    /// Read `path`, and add or reload plugin `id` from its bytes (unless the
    /// hash is unchanged and `force` is off). Called with `ops` held.
    fn load_file(&self, id: &PluginId, path: &Path, force: bool) -> Synced {
        let op = if self.host.contains(id) { Op::Reload } else { Op::Add };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                let error = format!("cannot read `{}`: {e}", path.display());
                self.record(id, path, None, Some(error.clone()));
                return Synced::Failed(op, id.clone(), error);
            }
        };
        let hash = blake3::hash(&bytes);
        {
            let files = lock(&self.files);
            if let Some(rec) = files.get(id) {
                if !force && rec.hash == Some(hash) && rec.path == path {
                    return Synced::Unchanged(id.clone());
                }
            }
        }
        let source = WasmSource::from_bytes(bytes).with_limits(self.limits.clone());
        let result = match op {
            Op::Add => self.host.add(id.clone(), &source),
            _ => self.host.reload(id, &source, &self.options),
        };
        match result {
            Ok(report) => {
                self.record(id, path, Some(hash), None);
                Synced::Done(op, Box::new(report))
            }
            Err(e) => {
                let error = describe(&e);
                self.record(id, path, Some(hash), Some(error.clone()));
                Synced::Failed(op, id.clone(), error)
            }
        }
    }

    fn record(&self, id: &PluginId, path: &Path, hash: Option<blake3::Hash>, error: Option<String>) {
        lock(&self.files).insert(id.clone(), FileRecord { path: path.to_owned(), hash, error });
    }

    /// Every plugin, sorted by id: the loaded ones, and files that never
    /// loaded (generation 0, state `"Failed"`, with their error).
    pub fn list(&self) -> Vec<PluginInfo> {
        let files = lock(&self.files).clone();
        let mut out: BTreeMap<String, PluginInfo> = BTreeMap::new();
        for snap in self.host.snapshots() {
            let record = files.get(&snap.id);
            out.insert(
                snap.id.to_string(),
                PluginInfo {
                    id: snap.id.to_string(),
                    generation: snap.generation,
                    state: snap.state.to_string(),
                    in_flight: snap.in_flight,
                    draining: snap
                        .draining
                        .iter()
                        .map(|d| DrainingInfo { generation: d.generation, in_flight: d.in_flight })
                        .collect(),
                    functions: snap.functions.clone(),
                    last_error: record.and_then(|r| r.error.clone()),
                    path: record.map(|r| r.path.display().to_string()).unwrap_or_default(),
                },
            );
        }
        for (id, record) in &files {
            out.entry(id.to_string()).or_insert_with(|| PluginInfo {
                id: id.to_string(),
                generation: 0,
                state: "Failed".into(),
                in_flight: 0,
                draining: Vec::new(),
                functions: Vec::new(),
                last_error: record.error.clone(),
                path: record.path.display().to_string(),
            });
        }
        out.into_values().collect()
    }

    /// Ask every plugin's current generation to stop its running calls
    /// (shutdown after the grace period).
    pub fn interrupt_all(&self) {
        use cutover::plugin::Plugin;
        for id in self.host.ids() {
            if let Some(lease) = self.host.lease(&id) {
                lease.interrupt();
            }
        }
    }
}

/// A reload error as one line, with its cause chain.
fn describe(e: &ReloadError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
