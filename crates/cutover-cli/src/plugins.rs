//! [`PluginSet`]: the plugins of one directory, kept in a [`Host`] and
//! changed only through its reload transaction.
//!
//! Each `.wat`/`.wasm` file is a plugin whose id is the file stem. Whether a
//! file is WebAssembly text or binary is decided by its content (the `\0asm`
//! magic), never by its extension, and so is whether it is a core module or
//! a component (the binary header's *layer* field, read by `cutover-wasm`).
//!
//! A plugin's configuration text is the content of the sibling file
//! `<id>.config`, if there is one (UTF-8, at most [`MAX_CONFIG_BYTES`]); a
//! component's `init` receives it on every instance (empty when there is no
//! file; core modules ignore it). The plugin file and its `.config` are one
//! plugin: the content hash covers both, so creating, changing or deleting
//! the `.config` reloads the plugin, and a `.config` alone is not a plugin.
//!
//! # Guarantees
//!
//! * **One change per plugin at a time, plugins in parallel.** Every change
//!   (a file sync, a reload by request, a removal) of plugin `p` holds `p`'s
//!   exclusion for its whole length, drain included; changes of different
//!   plugins never wait for each other. A change that finds `p` busy does
//!   not queue: it gets [`Busy`] at once, naming the phase and how long it
//!   has run (the HTTP layer answers 409; the watcher waits for
//!   [`PluginSet::wait_idle`] and syncs again, which coalesces into what the
//!   running change already loaded, by content hash).
//! * **Only a real deletion removes a plugin.** A file is gone when `stat`
//!   says `ENOENT`; any other error (permissions, I/O, a dangling or
//!   refused symlink) keeps the loaded generation serving and sets the
//!   plugin's `last_error`.
//! * **A stem with two files is a conflict** (`math.wat` and `math.wasm`):
//!   what is loaded keeps serving, `last_error` names both files, and
//!   nothing is reloaded until one of them is gone.
//! * **Symlinks** (plugin and `.config` files alike) are followed while they
//!   resolve inside the plugin directory (Kubernetes ConfigMap volumes are symlinks into `..data`);
//!   one resolving outside it is refused unless the set was built with
//!   `allow_outside_symlinks`. Only regular files are read.
//! * **Errors never carry file content** beyond a short, escaped excerpt
//!   (see [`excerpt_safe`]).
//! * A file that fails to load while it is still being written (its size or
//!   modification time changed after it was read) leaves no error behind:
//!   the sync answers [`Synced::Retry`] and the watcher tries again.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    time::{Duration, Instant, SystemTime},
};

use cutover::{
    host::{Host, ReloadDiscipline, ReloadError, ReloadOptions, ReloadReport},
    plugin::{BoxError, PluginSource},
    PluginId,
};
use cutover_wasm::{Signature, WasmLimits, WasmPlugin, WasmSource};
use serde::Serialize;

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

/// Where a change of a plugin is, as `GET /v1/plugins` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Looking at and reading the file.
    Read,
    /// Parsing, validating and compiling the module.
    Compile,
    /// Linking and running `init` on every prewarmed instance, then the
    /// cutover.
    Init,
    /// Cut over; waiting for the old generation's calls to finish.
    Drain,
    /// Removing the plugin (draining its last generation).
    Remove,
}

impl Phase {
    /// The phase's name, as `GET /v1/plugins` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Read => "read",
            Phase::Compile => "compile",
            Phase::Init => "init",
            Phase::Drain => "drain",
            Phase::Remove => "remove",
        }
    }
}

/// A change in progress on one plugin.
#[derive(Debug, Clone, Serialize)]
pub struct Reloading {
    /// The phase it is in.
    pub phase: Phase,
    /// Milliseconds since it started.
    pub elapsed_ms: u64,
}

/// Plugin `plugin` is already being changed.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "a change of plugin `{plugin}` is already in progress (phase {}, running for {} ms); try again when it ends",
    phase.as_str(),
    elapsed.as_millis()
)]
pub struct Busy {
    /// The plugin.
    pub plugin: PluginId,
    /// The phase of the running change.
    pub phase: Phase,
    /// How long it has run.
    pub elapsed: Duration,
}

/// The result of bringing one plugin in line with its file(s).
#[derive(Debug)]
pub enum Synced {
    /// Nothing to do (content hash unchanged, or no file and no plugin).
    Unchanged(PluginId),
    /// The operation succeeded.
    Done(Op, Box<ReloadReport>),
    /// The operation failed; what was serving still serves.
    Failed(Op, PluginId, String),
    /// Another change of this plugin is running; sync again after
    /// [`PluginSet::wait_idle`].
    Busy,
    /// The file changed while it was being loaded (still being written):
    /// nothing was recorded; sync again after the debounce.
    Retry,
    /// A conditional reload ([`PluginSet::reload_now`] with
    /// `if_generation`) found another generation current: nothing changed.
    Moved {
        /// The generation the caller expected.
        expected: u64,
        /// The generation that is current.
        current: u64,
    },
}

/// Why [`PluginSet::reload_now`] did not reload.
#[derive(Debug, thiserror::Error)]
pub enum ReloadNowError {
    /// No plugin of that id is loaded or known.
    #[error("no plugin `{0}` is loaded")]
    NotFound(String),
    /// Another change of the plugin is running.
    #[error(transparent)]
    InProgress(Busy),
    /// `if_generation` did not match: the plugin has moved on.
    #[error(
        "plugin `{plugin}` is at generation {current}, not {expected}: it was changed since you looked; \
         nothing was reloaded"
    )]
    GenerationMismatch {
        /// The plugin.
        plugin: PluginId,
        /// The generation the request expected.
        expected: u64,
        /// The current generation.
        current: u64,
    },
    /// Reading or loading the file failed; the old generation keeps serving.
    #[error("{0}")]
    Failed(String),
}

/// One function of a plugin as `GET /v1/plugins` lists it:
/// `{"name": "text.upper", "params": ["utf8"], "returns": "utf8", "deterministic": true}`,
/// with the WIT `data-type` names (`boolean`, `int32`, `int64`, `float32`,
/// `float64`, `utf8`, `binary`; a core module's `i32`/`i64`/`f32`/`f64` are
/// `int32`/`int64`/`float32`/`float64`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureInfo {
    /// The full function name, `<id>.<name>`.
    pub name: String,
    /// The parameter types, in order.
    pub params: Vec<&'static str>,
    /// The result type.
    pub returns: &'static str,
    /// Whether equal arguments always give equal results (core modules'
    /// functions are; a component declares it per function).
    pub deterministic: bool,
}

impl SignatureInfo {
    /// The listing of `name` with `signature`.
    pub fn new(name: &str, signature: &Signature) -> Self {
        Self {
            name: name.to_owned(),
            params: signature.params.iter().map(|t| t.name()).collect(),
            returns: signature.result.name(),
            deterministic: signature.deterministic,
        }
    }
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
    /// The callable functions with their types, in `functions` order.
    pub signatures: Vec<SignatureInfo>,
    /// The error of the last failed load, `null` when the last one succeeded.
    pub last_error: Option<String>,
    /// The plugin's file.
    pub path: String,
    /// `"wat"` (text) or `"wasm"` (binary), by content; `null` if never read.
    pub format: Option<&'static str>,
    /// `"module"` or `"component"`, of the generation serving; `null` if
    /// none is.
    pub kind: Option<&'static str>,
    /// The `<id>.config` file read by the last load, `null` if there was none.
    pub config_path: Option<String>,
    /// The change in progress, `null` when none.
    pub reloading: Option<Reloading>,
}

/// A generation still draining.
#[derive(Debug, Clone, Serialize)]
pub struct DrainingInfo {
    /// The generation.
    pub generation: u64,
    /// Calls still in flight on it.
    pub in_flight: usize,
}

/// How a [`PluginSet`] loads generations.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Sandbox limits of every generation.
    pub limits: WasmLimits,
    /// Drain deadline and escalation of reloads and removals.
    pub options: ReloadOptions,
    /// Follow symlinks that resolve outside the plugin directory.
    pub allow_outside_symlinks: bool,
}

/// What is known of a plugin's file(s).
#[derive(Debug, Clone, Default)]
struct Record {
    /// The file last read (or that failed), `None` once deleted.
    path: Option<PathBuf>,
    /// Hash of the content last attempted (loaded or failed).
    hash: Option<blake3::Hash>,
    /// The error of the last attempt, cleared by a success.
    error: Option<String>,
    /// Whether `error` came from looking at/reading the file (cleared by a
    /// later successful read even if the content is unchanged) rather than
    /// from loading its content.
    error_is_access: bool,
    /// `"wat"` or `"wasm"`.
    format: Option<&'static str>,
    /// The resolved file and its [`stamp`] when it was last read.
    stamp: Option<(PathBuf, Stamp)>,
    /// The `.config` file read with it (as named in the directory), if any.
    config: Option<PathBuf>,
    /// The resolved `.config` file and its stamp when it was last read;
    /// `None` when there was none.
    config_stamp: Option<(PathBuf, Stamp)>,
}

/// `(length, modification time, inode)` of a file.
type Stamp = (u64, Option<SystemTime>, u64);

/// One plugin id's exclusion and record. Entries are never removed (one
/// small record per id ever seen), so two changes of one id always meet
/// the same exclusion.
struct Entry {
    id: PluginId,
    busy: Mutex<Option<(Phase, Instant)>>,
    idle: tokio::sync::Notify,
    record: Mutex<Record>,
}

/// The exclusion of one plugin, held for a whole change.
struct OpGuard<'a> {
    entry: &'a Entry,
}

impl OpGuard<'_> {
    fn phase(&self, phase: Phase) {
        self.entry.set_phase(phase);
    }
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.entry.busy) = None;
        self.entry.idle.notify_waiters();
    }
}

impl Entry {
    fn try_begin(&self) -> Result<OpGuard<'_>, Busy> {
        let mut busy = lock(&self.busy);
        if let Some((phase, since)) = *busy {
            return Err(Busy { plugin: self.id.clone(), phase, elapsed: since.elapsed() });
        }
        *busy = Some((Phase::Read, Instant::now()));
        Ok(OpGuard { entry: self })
    }

    fn set_phase(&self, phase: Phase) {
        if let Some((p, _)) = lock(&self.busy).as_mut() {
            *p = phase;
        }
    }

    fn reloading(&self) -> Option<Reloading> {
        lock(&self.busy).map(|(phase, since)| Reloading {
            phase,
            elapsed_ms: u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Marks the phase `drain` at the cutover (installed on each plugin).
struct PhaseHook(Weak<Entry>);

impl ReloadDiscipline<WasmPlugin> for PhaseHook {
    fn at_cutover(&self, _old: &WasmPlugin, _new: &WasmPlugin) {
        if let Some(entry) = self.0.upgrade() {
            entry.set_phase(Phase::Drain);
        }
    }
}

/// A [`WasmSource`] that reports the `compile` and `init` phases.
struct Tracked<'a> {
    source: WasmSource,
    entry: &'a Entry,
}

impl PluginSource<WasmPlugin> for Tracked<'_> {
    fn load(&self, id: &PluginId) -> Result<WasmPlugin, BoxError> {
        self.entry.set_phase(Phase::Compile);
        let result = self.source.load(id);
        self.entry.set_phase(Phase::Init);
        result
    }
}

/// The plugins of one directory, served by a [`Host`].
pub struct PluginSet {
    host: Arc<Host<WasmPlugin>>,
    dir: PathBuf,
    config: LoadConfig,
    entries: Mutex<BTreeMap<PluginId, Arc<Entry>>>,
    reads: AtomicU64,
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

/// The extension of a plugin's configuration file, `<id>.config`.
pub const CONFIG_EXTENSION: &str = "config";

/// The largest configuration file read, in bytes (a larger one fails the
/// load with a clear error; what is loaded keeps serving).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The plugin a file of the directory belongs to: the id of a plugin file
/// ([`plugin_id_for`]) or of a configuration file `<id>.config`.
pub fn owner_id_for(path: &Path) -> Option<PluginId> {
    if path.extension().and_then(OsStr::to_str) == Some(CONFIG_EXTENSION) {
        let stem = path.file_stem().and_then(OsStr::to_str)?;
        if stem.starts_with('.') {
            return None;
        }
        return PluginId::parse(stem).ok();
    }
    plugin_id_for(path)
}

/// The configuration file beside the plugin file `path`:
/// `dir/math.wasm` → `dir/math.config`.
pub fn config_path_for(path: &Path) -> PathBuf {
    path.with_extension(CONFIG_EXTENSION)
}

/// Read the configuration text at `path`: `Ok(None)` if there is no such
/// file; an error message (naming the file) if it cannot be read, is larger
/// than [`MAX_CONFIG_BYTES`] or is not UTF-8.
pub fn read_config(path: &Path) -> Result<Option<String>, String> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the configuration file `{}`: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the configuration file `{}`: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "the configuration file `{}` is larger than {MAX_CONFIG_BYTES} bytes: refused",
            path.display()
        ));
    }
    String::from_utf8(bytes).map(Some).map_err(|e| {
        format!(
            "the configuration file `{}` is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// `"wasm"` for a WebAssembly binary (`\0asm` magic), else `"wat"`.
pub fn format_of(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\0asm") {
        "wasm"
    } else {
        "wat"
    }
}

/// `(length, modification time, inode)`: changes when a file is written.
fn stamp(meta: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let ino = 0;
    (meta.len(), meta.modified().ok(), ino)
}

impl PluginSet {
    /// A set for the plugins in `dir` (canonical), loading with `config`.
    /// Loads nothing yet.
    pub fn new(dir: PathBuf, config: LoadConfig) -> Self {
        Self {
            host: Arc::new(Host::new()),
            dir,
            config,
            entries: Mutex::new(BTreeMap::new()),
            reads: AtomicU64::new(0),
        }
    }

    /// The host serving the plugins.
    pub fn host(&self) -> &Host<WasmPlugin> {
        &self.host
    }

    /// Plugin files read so far (each read hashes the whole file): an idle
    /// server's count does not move.
    pub fn file_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn entry(&self, id: &PluginId) -> Arc<Entry> {
        let mut entries = lock(&self.entries);
        Arc::clone(entries.entry(id.clone()).or_insert_with(|| {
            Arc::new(Entry {
                id: id.clone(),
                busy: Mutex::new(None),
                idle: tokio::sync::Notify::new(),
                record: Mutex::new(Record::default()),
            })
        }))
    }

    /// Every plugin id with a file in the directory or a loaded plugin.
    ///
    /// # Errors
    /// The directory cannot be read: that error is recorded as the
    /// `last_error` of every known plugin (which keep serving).
    pub fn ids(&self) -> std::io::Result<Vec<PluginId>> {
        let mut ids: Vec<PluginId> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries.filter_map(Result::ok).filter_map(|e| plugin_id_for(&e.path())).collect(),
            Err(e) => {
                let error = format!(
                    "cannot read the plugin directory `{}`: {e}; the loaded generation keeps serving",
                    self.dir.display()
                );
                for entry in lock(&self.entries).values() {
                    let mut record = lock(&entry.record);
                    if record.path.is_some() || self.host.contains(&entry.id) {
                        record.error = Some(error.clone());
                        record.error_is_access = true;
                    }
                }
                return Err(e);
            }
        };
        ids.extend(self.host.ids());
        ids.extend(lock(&self.entries).values().filter(|e| lock(&e.record).path.is_some()).map(|e| e.id.clone()));
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The host, shared (for the SQL engine).
    pub fn shared_host(&self) -> Arc<Host<WasmPlugin>> {
        Arc::clone(&self.host)
    }

    /// Sync every plugin of the directory (see [`sync`](Self::sync)).
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn scan(&self) -> std::io::Result<Vec<Synced>> {
        Ok(self.ids()?.iter().map(|id| self.sync(id, false)).collect())
    }

    /// Bring plugin `id` in line with its file(s): add, reload (if the
    /// content hash changed), remove (if no file is left), or record why
    /// not. Never waits for another change of `id`: answers
    /// [`Synced::Busy`] instead.
    ///
    /// With `trust_stamp` (a rescan, not an event naming the file), a file
    /// whose resolved path, length, modification time and inode are those of
    /// the last read is not read again.
    pub fn sync(&self, id: &PluginId, trust_stamp: bool) -> Synced {
        let entry = self.entry(id);
        let Ok(guard) = entry.try_begin() else {
            return Synced::Busy;
        };
        let wat = self.dir.join(format!("{id}.wat"));
        let wasm = self.dir.join(format!("{id}.wasm"));
        let mut present = Vec::new();
        for path in [&wat, &wasm] {
            match std::fs::symlink_metadata(path) {
                Ok(_) => present.push(path.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    let error =
                        format!("cannot look at `{}`: {e}; the loaded generation keeps serving", path.display());
                    return self.fail_access(&entry, id, Some(path), error);
                }
            }
        }
        match present.as_slice() {
            [] => self.remove(&entry, &guard, id),
            [path] => self.load(&entry, &guard, id, path, false, trust_stamp, None),
            _ => {
                let error = format!(
                    "two files provide plugin `{id}`: `{}` and `{}`; remove one of them \
                     (nothing is reloaded until then; what is loaded keeps serving)",
                    wat.display(),
                    wasm.display()
                );
                let mut record = lock(&entry.record);
                record.error = Some(error.clone());
                record.error_is_access = true;
                record.path.get_or_insert(wat);
                let op = if self.host.contains(id) { Op::Reload } else { Op::Add };
                Synced::Failed(op, id.clone(), error)
            }
        }
    }

    fn fail_access(&self, entry: &Entry, id: &PluginId, path: Option<&Path>, error: String) -> Synced {
        let mut record = lock(&entry.record);
        if record.path.is_none() {
            record.path = path.map(Path::to_owned);
        }
        record.error = Some(error.clone());
        record.error_is_access = true;
        let op = if self.host.contains(id) { Op::Reload } else { Op::Add };
        Synced::Failed(op, id.clone(), error)
    }

    fn remove(&self, entry: &Entry, guard: &OpGuard<'_>, id: &PluginId) -> Synced {
        *lock(&entry.record) = Record::default();
        if !self.host.contains(id) {
            return Synced::Unchanged(id.clone());
        }
        guard.phase(Phase::Remove);
        match self.host.remove(id, &self.config.options) {
            Ok(report) => Synced::Done(Op::Remove, Box::new(report)),
            Err(e) => Synced::Failed(Op::Remove, id.clone(), e.to_string()),
        }
    }

    /// Reload plugin `id` from its file now, whatever its hash; with
    /// `if_generation`, only if `id` is still at that generation.
    ///
    /// # Errors
    /// [`ReloadNowError`]: not found, in progress, generation mismatch, or
    /// the load failed (the old generation keeps serving; the error is
    /// recorded as `last_error`).
    pub fn reload_now(&self, id: &str, if_generation: Option<u64>) -> Result<ReloadReport, ReloadNowError> {
        let not_found = || ReloadNowError::NotFound(id.to_owned());
        let id = PluginId::parse(id).map_err(|_| not_found())?;
        let entry = {
            let entries = lock(&self.entries);
            entries.get(&id).cloned().ok_or_else(not_found)?
        };
        let guard = entry.try_begin().map_err(ReloadNowError::InProgress)?;
        let path = lock(&entry.record).path.clone().ok_or_else(not_found)?;
        if let Some(expected) = if_generation {
            // A cheap early answer (no file read); `Host::reload_if` below
            // makes the check atomic with the cutover.
            let current = self.host.snapshot(&id).map_or(0, |s| s.generation);
            check_generation(&id, expected, current)?;
        }
        match self.load(&entry, &guard, &id, &path, true, false, if_generation) {
            Synced::Done(_, report) => Ok(*report),
            Synced::Moved { expected, current } => {
                Err(ReloadNowError::GenerationMismatch { plugin: id, expected, current })
            }
            Synced::Failed(_, _, error) => Err(ReloadNowError::Failed(error)),
            Synced::Retry => Err(ReloadNowError::Failed(format!(
                "`{}` changed while it was being loaded (it is still being written); try again",
                path.display()
            ))),
            Synced::Unchanged(_) | Synced::Busy => Err(not_found()),
        }
    }

    /// Resolve `path` under the symlink policy and stat it: `(resolved
    /// path, stamp)`; `Ok(None)` if `optional` and there is no such file.
    /// The error message says what is wrong and that the loaded generation
    /// keeps serving.
    fn resolve(&self, path: &Path, optional: bool) -> Result<Option<(PathBuf, Stamp)>, String> {
        let resolved = match std::fs::canonicalize(path) {
            Ok(resolved) => resolved,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {
                // No file, or a dangling symlink: only "no file" is absent.
                return match std::fs::symlink_metadata(path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    _ => Err(format!(
                        "cannot resolve `{}`: {e} (a dangling symlink?); the loaded generation keeps serving",
                        path.display()
                    )),
                };
            }
            Err(e) => {
                return Err(format!(
                    "cannot resolve `{}`: {e} (a dangling symlink?); the loaded generation keeps serving",
                    path.display()
                ))
            }
        };
        if !self.config.allow_outside_symlinks && !resolved.starts_with(&self.dir) {
            return Err(format!(
                "`{}` resolves to `{}`, outside the plugin directory `{}`: refused \
                 (pass --allow-outside-symlinks to follow such links)",
                path.display(),
                resolved.display(),
                self.dir.display()
            ));
        }
        match std::fs::metadata(&resolved) {
            Ok(meta) if meta.is_file() => Ok(Some((resolved, stamp(&meta)))),
            Ok(_) => Err(format!("`{}` is not a regular file: refused", path.display())),
            Err(e) => Err(format!("cannot read `{}`: {e}; the loaded generation keeps serving", path.display())),
        }
    }

    /// Read `path` (and its `.config`, if any) and add or reload plugin `id`
    /// from them (unless their hash is unchanged and `force` is off). Called
    /// under `id`'s exclusion. With `expected`, the reload happens only if
    /// `id` is still at that generation ([`Host::reload_if`]).
    #[allow(clippy::too_many_arguments)]
    fn load(
        &self,
        entry: &Arc<Entry>,
        guard: &OpGuard<'_>,
        id: &PluginId,
        path: &Path,
        force: bool,
        trust_stamp: bool,
        expected: Option<u64>,
    ) -> Synced {
        guard.phase(Phase::Read);
        let file = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let (resolved, before) = match self.resolve(path, false) {
            Ok(Some(found)) => found,
            Ok(None) => {
                let error = format!("`{}` is gone; the loaded generation keeps serving", path.display());
                return self.fail_access(entry, id, Some(path), error);
            }
            Err(error) => return self.fail_access(entry, id, Some(path), error),
        };
        let config_path = config_path_for(path);
        let config_before = match self.resolve(&config_path, true) {
            Ok(found) => found,
            Err(error) => return self.fail_access(entry, id, Some(path), error),
        };
        if trust_stamp && !force {
            let record = lock(&entry.record);
            let same = record.stamp.as_ref().is_some_and(|(p, s)| *p == resolved && *s == before)
                && record.config_stamp == config_before;
            if same && !record.error_is_access && record.path.as_deref() == Some(path) {
                return Synced::Unchanged(id.clone());
            }
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        let bytes = match std::fs::read(&resolved) {
            Ok(bytes) => bytes,
            Err(e) => {
                let error = format!("cannot read `{}`: {e}; the loaded generation keeps serving", path.display());
                return self.fail_access(entry, id, Some(path), error);
            }
        };
        let config = match &config_before {
            Some((resolved_config, _)) => match read_config(resolved_config) {
                Ok(text) => text,
                Err(error) => {
                    let error = format!("{error}; the loaded generation keeps serving")
                        .replace(&resolved_config.display().to_string(), &config_path.display().to_string());
                    return self.fail_access(entry, id, Some(path), error);
                }
            },
            None => None,
        };
        let hash = {
            let mut hasher = blake3::Hasher::new();
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
            if let Some(config) = &config {
                hasher.update(config.as_bytes());
            }
            hasher.finalize()
        };
        let format = format_of(&bytes);
        let config_file = config.as_ref().map(|_| config_path.clone());
        {
            let mut record = lock(&entry.record);
            if !force && record.hash == Some(hash) && record.path.as_deref() == Some(path) {
                record.stamp = Some((resolved, before));
                record.config_stamp = config_before;
                record.config = config_file;
                if record.error_is_access {
                    // Readable again, same content as what was loaded or failed.
                    record.error = None;
                    record.error_is_access = false;
                }
                return Synced::Unchanged(id.clone());
            }
        }
        let exists = self.host.contains(id);
        let op = if exists { Op::Reload } else { Op::Add };
        let mut source = WasmSource::from_bytes(bytes).with_limits(self.config.limits.clone());
        if let Some(config) = config {
            source = source.with_config(config);
        }
        let source = Tracked { source, entry };
        let result = if let Some(expected) = expected.filter(|_| exists) {
            self.host.reload_if(id, expected, &source, &self.config.options)
        } else if exists {
            self.host.reload(id, &source, &self.config.options)
        } else {
            self.host.add(id.clone(), &source)
        };
        let mut record = Record {
            path: Some(path.to_owned()),
            hash: Some(hash),
            error: None,
            error_is_access: false,
            format: Some(format),
            stamp: Some((resolved.clone(), before)),
            config: config_file,
            config_stamp: config_before.clone(),
        };
        match result {
            Ok(report) => {
                if op == Op::Add {
                    let hook: Arc<dyn ReloadDiscipline<WasmPlugin>> = Arc::new(PhaseHook(Arc::downgrade(entry)));
                    if let Err(e) = self.host.set_discipline(id, hook) {
                        tracing::debug!(plugin = %id, error = %e, "cannot install the phase hook");
                    }
                }
                *lock(&entry.record) = record;
                Synced::Done(op, Box::new(report))
            }
            Err(ReloadError::InProgress { .. }) => Synced::Busy,
            Err(ReloadError::GenerationMismatch { expected, current, .. }) => Synced::Moved { expected, current },
            Err(e) => {
                let now = |p: &Path| std::fs::metadata(p).map(|m| stamp(&m)).ok();
                let still_writing = now(&resolved) != Some(before)
                    || config_before.as_ref().map(|(p, _)| now(p)) != config_before.as_ref().map(|(_, s)| Some(*s))
                    || config_before.is_none() && std::fs::symlink_metadata(&config_path).is_ok();
                if still_writing && !force {
                    return Synced::Retry;
                }
                let error = excerpt_safe(&describe(&e), &file);
                record.error = Some(error.clone());
                *lock(&entry.record) = record;
                Synced::Failed(op, id.clone(), error)
            }
        }
    }

    /// Wait until no change of `id` is running (at once if none is).
    pub async fn wait_idle(&self, id: &PluginId) {
        let entry = self.entry(id);
        let notified = entry.idle.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if lock(&entry.busy).is_none() {
            return;
        }
        notified.await;
    }

    /// Every plugin, sorted by id: the loaded ones, and files that never
    /// loaded (generation 0, state `"Failed"`, with their error).
    ///
    /// The generation, functions, signatures and kind of a loaded plugin
    /// are read together from its current generation (a lease taken after
    /// the snapshot that gives `state`, `in_flight` and `draining`).
    pub fn list(&self) -> Vec<PluginInfo> {
        let entries: Vec<Arc<Entry>> = lock(&self.entries).values().cloned().collect();
        let by_id: BTreeMap<&PluginId, &Arc<Entry>> = entries.iter().map(|e| (&e.id, e)).collect();
        let mut out: BTreeMap<String, PluginInfo> = BTreeMap::new();
        for snap in self.host.snapshots() {
            let entry = by_id.get(&snap.id);
            let record = entry.map(|e| lock(&e.record).clone()).unwrap_or_default();
            let (generation, functions, signatures, kind) = match self.host.lease(&snap.id) {
                Some(lease) => (
                    lease.generation(),
                    lease.functions().to_vec(),
                    lease.signatures().map(|(name, sig)| SignatureInfo::new(name, sig)).collect(),
                    Some(lease.format().name()),
                ),
                None => (snap.generation, snap.functions.clone(), Vec::new(), None),
            };
            out.insert(
                snap.id.to_string(),
                PluginInfo {
                    id: snap.id.to_string(),
                    generation,
                    state: snap.state.to_string(),
                    in_flight: snap.in_flight,
                    draining: snap
                        .draining
                        .iter()
                        .map(|d| DrainingInfo { generation: d.generation, in_flight: d.in_flight })
                        .collect(),
                    functions,
                    signatures,
                    last_error: record.error,
                    path: record.path.map(|p| p.display().to_string()).unwrap_or_default(),
                    format: record.format,
                    kind,
                    config_path: record.config.map(|p| p.display().to_string()),
                    reloading: entry.and_then(|e| e.reloading()),
                },
            );
        }
        for entry in &entries {
            let record = lock(&entry.record).clone();
            let Some(path) = record.path else { continue };
            out.entry(entry.id.to_string()).or_insert_with(|| PluginInfo {
                id: entry.id.to_string(),
                generation: 0,
                state: "Failed".into(),
                in_flight: 0,
                draining: Vec::new(),
                functions: Vec::new(),
                signatures: Vec::new(),
                last_error: record.error,
                path: path.display().to_string(),
                format: record.format,
                kind: None,
                config_path: record.config.map(|p| p.display().to_string()),
                reloading: entry.reloading(),
            });
        }
        out.into_values().collect()
    }

    /// Ask every plugin's current generation to stop its running calls
    /// (shutdown after the grace period). Calls made afterwards fail with
    /// `Interrupted` too.
    pub fn interrupt_all(&self) {
        use cutover::plugin::Plugin;
        for id in self.host.ids() {
            if let Some(lease) = self.host.lease(&id) {
                lease.interrupt();
            }
        }
    }
}

/// The early `if_generation` check of a conditional reload, before the
/// file is read. The reload itself is a [`Host::reload_if`], which checks
/// again atomically with the cutover (a rollback or a reload by another
/// user of the same host cannot slip in between).
fn check_generation(id: &PluginId, expected: u64, current: u64) -> Result<(), ReloadNowError> {
    if expected == current {
        Ok(())
    } else {
        Err(ReloadNowError::GenerationMismatch { plugin: id.clone(), expected, current })
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

/// Longest excerpt of a source line kept in an error, in characters.
const EXCERPT_CHARS: usize = 48;
/// Longest error kept, in characters.
const ERROR_CHARS: usize = 1024;

/// Make a load error safe to show: the parser's `<anon>` becomes `file`,
/// every control or non-ASCII-printable character is escaped (`\u{0}`),
/// lines quoting the file (`  12 | ...`) keep at most
/// [`EXCERPT_CHARS`] characters, and the whole message at most
/// [`ERROR_CHARS`].
pub fn excerpt_safe(message: &str, file: &str) -> String {
    let message = message.replace("<anon>", file);
    let mut out = String::new();
    for (i, line) in message.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // `   12 | source text` or `      | ^`: the parser quoting the file.
        let quoted = line.find(" | ").filter(|&at| line[..at].trim().chars().all(|c| c.is_ascii_digit()));
        let (prefix, body, limit) = match quoted {
            Some(at) => (&line[..at + 3], &line[at + 3..], EXCERPT_CHARS),
            None => ("", line, ERROR_CHARS),
        };
        out.push_str(prefix);
        for (kept, c) in body.chars().enumerate() {
            if kept == limit {
                out.push('…');
                break;
            }
            if c.is_control() || (c as u32) > 0x7e && !c.is_alphanumeric() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        if out.chars().count() > ERROR_CHARS {
            break;
        }
    }
    if out.chars().count() > ERROR_CHARS {
        out = out.chars().take(ERROR_CHARS).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_escaped() {
        let secret = format!("SECRET=1\0OTHER={}", "x".repeat(5000));
        let message = format!("load failed: expected `(`\n     --> <anon>:1:1\n      |\n    1 | {secret}\n      | ^");
        let safe = excerpt_safe(&message, "math.wat");
        assert!(safe.contains("math.wat:1:1"), "{safe}");
        assert!(safe.contains("\\u{0}"), "{safe}");
        assert!(!safe.contains("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), "{safe}");
        assert!(safe.len() < 400, "{safe}");
    }

    #[test]
    fn generation_check() {
        let id = PluginId::new("math");
        assert!(check_generation(&id, 3, 3).is_ok());
        assert!(matches!(
            check_generation(&id, 2, 3),
            Err(ReloadNowError::GenerationMismatch { expected: 2, current: 3, .. })
        ));
    }
}
