//! [`Host`]: the reload transaction a host runs, around a [`Registry`] of
//! plugins.
//!
//! A [`Host<P>`] owns plugins of type `P: Plugin` by [`PluginId`], serves
//! calls through [`Host::lease`], and changes them only through
//! transactions:
//!
//! * [`Host::reload`]: build the new generation (`Loaded → Linked →
//!   Initialized`), run the discipline's `before_cutover`, cut over (the new
//!   generation `Active`, the old one `Draining` through its own
//!   [`EpochFencedReload`](crate::EpochFencedReload)), wait for the drain
//!   with a deadline and an escalation ladder ([`ReloadOptions`]), shut the
//!   old generation down, finalize it to `Removed`. An error **or panic** at
//!   any step before the cutover discards the new generation (shutting it
//!   down if it was initialized) and leaves the old one `Active` and
//!   serving, untouched; the [`ReloadError`] names the step and the cause.
//!   The old generation is finalized only after its drain completed (or,
//!   if abandoned, when it completes later): never while work is in flight.
//! * [`Host::add`] / [`Host::add_all`] / [`Host::remove`] go through the
//!   same machinery. Plugins that declare dependencies are initialized after
//!   them; a missing dependency or a cycle is an error at load.
//! * [`Host::rollback`]: while the previous generation is still draining
//!   (or was kept warm), make it current again in one cutover, and drain the
//!   generation that replaced it.
//!
//! # Concurrency
//!
//! Two reloads (or a reload and a rollback or removal) of the same plugin
//! never interleave: while one is building or cutting over, another gets
//! [`ReloadError::InProgress`] at once (no queueing, so a caller is never
//! blocked behind a slow load it did not start). [`Host::reload_if`]
//! reloads only from the generation the caller expects, checked under that
//! same exclusion. Once a transaction has cut over it releases the plugin
//! and waits for its drain, so the next reload
//! (or a rollback) can proceed while the previous generation drains: any
//! number of generations may be draining at once. Transactions on different
//! plugins are independent. Calls ([`Host::lease`]) never wait for any of
//! this.
//!
//! # Observability
//!
//! [`Host::snapshot`] shows each plugin: current generation and state,
//! in-flight count per generation, the generations still draining, and the
//! last operation's [`ReloadReport`] (outcome, per-phase durations,
//! stragglers). Every phase runs in a `tracing` span (`cutover.reload`,
//! with children `load`, `link`, `init`, `prepare`, `cutover`, `drain`,
//! `shutdown`), and outcomes are logged as events.
//!
//! # Change notifications
//!
//! [`Host::subscribe`] registers a callback told about every committed
//! change (add, reload or rollback cutover, removal) as a [`HostChange`],
//! after the change is visible and before the transaction returns (the
//! guarantees are stated on [`HostChange`]).

mod deps;
mod discipline;
mod error;
mod events;
mod options;
mod report;
mod transaction;

use std::{collections::BTreeMap, fmt, sync::Arc};

pub use discipline::{NoDiscipline, ReloadDiscipline};
pub use error::{ReloadError, Step};
pub use events::{HostChange, Subscription};
pub use options::ReloadOptions;
pub use report::{
    DrainOutcome, DrainingGeneration, Escalation, PhaseTimings, PluginSnapshot, ReloadKind, ReloadReport, Rung,
    StragglerReport,
};
use transaction::Entry;

use crate::{
    plugin::{Plugin, PluginSource},
    sync::{lock, Mutex},
    Lease, PluginId, Registry,
};

/// Plugins of type `P`, served lock-free and changed by reload transactions.
///
/// ```
/// use std::time::Duration;
/// use cutover::host::{Host, ReloadError, ReloadOptions};
/// use cutover::plugin::{BoxError, LinkContext, Plugin};
/// use cutover::PluginId;
///
/// struct Scale(i64);
/// impl Plugin for Scale {
///     fn link(&mut self, cx: &mut LinkContext) -> Result<(), BoxError> {
///         cx.register_function("math.scale");
///         Ok(())
///     }
/// }
///
/// let host: Host<Scale> = Host::new();
/// let id = PluginId::new("math");
/// // A source is anything that implements `PluginSource`, closures included
/// // (their argument is the plugin's id; see `PluginSource` for its type).
/// host.add(id.clone(), &|_| Ok(Scale(2)))?;
/// assert_eq!(host.lease(&id).unwrap().0, 2);
///
/// // A failing load leaves generation 1 serving.
/// let err = host.reload(&id, &|_| Err("disk on fire".into()), &ReloadOptions::default()).unwrap_err();
/// assert!(err.to_string().contains("load failed: disk on fire"));
/// assert_eq!(host.lease(&id).unwrap().0, 2);
///
/// // A good one cuts over; the old generation drains and is removed.
/// let report = host.reload(&id, &|_| Ok(Scale(3)), &ReloadOptions::default().deadline(Duration::from_secs(5)))?;
/// assert_eq!(report.generation, Some(2));
/// assert_eq!(host.lease(&id).unwrap().0, 3);
/// assert_eq!(host.snapshot(&id).unwrap().functions, ["math.scale"]);
///
/// // A conditional reload refuses a stale expectation, building nothing.
/// let err = host.reload_if(&id, 1, &|_| Ok(Scale(4)), &ReloadOptions::default()).unwrap_err();
/// assert!(matches!(err, ReloadError::GenerationMismatch { expected: 1, current: 2, .. }));
/// # Ok::<(), cutover::host::ReloadError>(())
/// ```
pub struct Host<P: Plugin> {
    plugins: Registry<PluginId, P>,
    entries: Mutex<BTreeMap<PluginId, Arc<Entry<P>>>>,
    capabilities: Vec<String>,
    tracking: std::sync::atomic::AtomicBool,
    subscribers: Arc<events::Subscribers>,
}

impl<P: Plugin> Default for Host<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Plugin> Host<P> {
    /// A host offering no capabilities.
    pub fn new() -> Self {
        Self::with_capabilities(Vec::<String>::new())
    }

    /// A host offering `capabilities` to plugins at link time.
    pub fn with_capabilities<I, S>(capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            plugins: Registry::new(),
            entries: Mutex::new(BTreeMap::new()),
            capabilities: capabilities.into_iter().map(Into::into).collect(),
            tracking: std::sync::atomic::AtomicBool::new(false),
            subscribers: Arc::default(),
        }
    }

    /// Lease the current generation of plugin `id` for one call: the
    /// per-call path (a registry lookup and a [`Lease`]; no lock). It never
    /// completes a drain: no plugin's `Drop`, shutdown hook or drain
    /// callback runs inside it (they run where leases are dropped, or in the
    /// reload transaction).
    #[inline]
    pub fn lease(&self, id: &PluginId) -> Option<Lease<P>> {
        self.plugins.lease(id)
    }

    /// Lease by id string (no `PluginId` allocation on the call path).
    #[inline]
    pub fn lease_str(&self, id: &str) -> Option<Lease<P>> {
        self.plugins.lease(id)
    }

    /// The ids of the loaded plugins, sorted.
    pub fn ids(&self) -> Vec<PluginId> {
        lock(&self.entries).keys().cloned().collect()
    }

    /// Whether plugin `id` is loaded.
    pub fn contains(&self, id: &PluginId) -> bool {
        self.plugins.contains(id)
    }

    /// Turn straggler tracking on or off, for every plugin loaded now and
    /// later: a diagnostic mode in which each call records when and on which
    /// thread it started, so that a drain that overruns its deadline reports
    /// the exact age of its oldest call and the threads still running
    /// ([`StragglerReport::oldest`], [`StragglerReport::threads`]). It costs a
    /// short lock and a clock read per call; off (the default), a call only
    /// reads a flag.
    pub fn set_straggler_tracking(&self, on: bool) {
        self.tracking.store(on, std::sync::atomic::Ordering::Relaxed);
        self.plugins.set_tracking(on);
    }

    /// Set the per-kind reload discipline of plugin `id` (default: none).
    ///
    /// # Errors
    /// [`ReloadError::NotFound`] if `id` is not loaded.
    pub fn set_discipline(&self, id: &PluginId, discipline: Arc<dyn ReloadDiscipline<P>>) -> Result<(), ReloadError> {
        self.entry(id)?.set_discipline(discipline);
        Ok(())
    }

    /// A snapshot of plugin `id`, or `None` if it is not loaded.
    pub fn snapshot(&self, id: &PluginId) -> Option<PluginSnapshot> {
        let entry = lock(&self.entries).get(id).cloned()?;
        Some(entry.snapshot(&self.plugins))
    }

    /// Snapshots of every loaded plugin, sorted by id.
    ///
    /// Each snapshot is of one moment of its plugin; the list as a whole is
    /// not one moment of the host: it holds the plugins loaded when it
    /// started, each read in turn, so a change committed meanwhile may show
    /// in some entries and not in others (and a plugin removed meanwhile is
    /// still listed, as `Removed`). To see changes in commit order, use
    /// [`subscribe`](Self::subscribe).
    pub fn snapshots(&self) -> Vec<PluginSnapshot> {
        let entries: Vec<_> = lock(&self.entries).values().cloned().collect();
        entries.iter().map(|e| e.snapshot(&self.plugins)).collect()
    }

    /// The error of the last failed reload of `id`, until a later success.
    pub fn last_error(&self, id: &PluginId) -> Option<String> {
        lock(&self.entries).get(id).and_then(|e| e.last_error())
    }

    /// Add plugin `id`, built from `source`: load, resolve dependencies
    /// (which must be loaded), link, init, then make it `Active`.
    ///
    /// `source` is a [`PluginSource`]: a type of yours, or a closure such as
    /// `&|_| Ok(MyPlugin::new())` (its argument is the id, as a
    /// `&'static PluginId`: [`PluginSource`] says why).
    ///
    /// # Errors
    /// [`ReloadError::AlreadyExists`], [`ReloadError::MissingDependency`],
    /// [`ReloadError::DependencyCycle`], or [`ReloadError::Failed`] naming
    /// the step; nothing is added.
    pub fn add(&self, id: PluginId, source: &dyn PluginSource<P>) -> Result<ReloadReport, ReloadError> {
        let mut reports = self.add_all(vec![(id, source)])?;
        Ok(reports.remove(0))
    }

    /// Add several plugins at once, initialized in dependency order. All or
    /// nothing: if any fails to load, resolve, link or init, none is added
    /// (those already initialized are shut down).
    ///
    /// # Errors
    /// As [`add`](Self::add), for the first plugin that failed.
    pub fn add_all(&self, sources: Vec<(PluginId, &dyn PluginSource<P>)>) -> Result<Vec<ReloadReport>, ReloadError> {
        transaction::add_all(self, sources)
    }

    /// Reload plugin `id` from `source`, as one transaction (see the module
    /// docs). Returns when the old generation has drained and been shut down,
    /// or when the escalation ladder ends in [`DrainOutcome::Abandoned`].
    ///
    /// # Errors
    /// [`ReloadError::NotFound`], [`ReloadError::InProgress`], a dependency
    /// error, or [`ReloadError::Failed`] naming the step; in every case the
    /// old generation keeps serving, untouched. The error is also kept as the
    /// plugin's [`last_error`](PluginSnapshot::last_error).
    pub fn reload(
        &self,
        id: &PluginId,
        source: &dyn PluginSource<P>,
        options: &ReloadOptions,
    ) -> Result<ReloadReport, ReloadError> {
        transaction::reload(self, id, None, source, options)
    }

    /// Reload plugin `id` from `source` only if its current generation is
    /// `expected_generation`: a reload against a handle that may be stale
    /// (two operators, or a deploy tool and a file watcher, racing to reload
    /// must not clobber each other). Otherwise nothing is built and nothing
    /// changes.
    ///
    /// The check is made under the same per-plugin exclusion that serializes
    /// building and cutting over, so it is atomic with respect to every other
    /// reload, rollback and removal of the plugin: of several conditional
    /// reloads from the same generation, at most one succeeds (the others get
    /// [`ReloadError::GenerationMismatch`], or [`ReloadError::InProgress`]
    /// while the winner is still building).
    ///
    /// # Errors
    /// [`ReloadError::GenerationMismatch`] naming the expected and the current
    /// generation (not recorded as the plugin's
    /// [`last_error`](PluginSnapshot::last_error): nothing failed); otherwise
    /// as [`reload`](Self::reload).
    pub fn reload_if(
        &self,
        id: &PluginId,
        expected_generation: u64,
        source: &dyn PluginSource<P>,
        options: &ReloadOptions,
    ) -> Result<ReloadReport, ReloadError> {
        transaction::reload(self, id, Some(expected_generation), source, options)
    }

    /// Make the previous generation current again, in one cutover, and drain
    /// the one that replaced it. Possible while the previous generation is
    /// still draining, or after, if it was kept warm
    /// ([`ReloadOptions::keep_warm`]).
    ///
    /// # Errors
    /// [`ReloadError::NoRollback`] if there is nothing to return to;
    /// [`ReloadError::NotFound`], [`ReloadError::InProgress`].
    pub fn rollback(&self, id: &PluginId, options: &ReloadOptions) -> Result<ReloadReport, ReloadError> {
        transaction::rollback(self, id, options)
    }

    /// Remove plugin `id`: unregister it (calls starting afterwards find
    /// nothing), drain it with the escalation ladder, shut it down, finalize.
    ///
    /// # Errors
    /// [`ReloadError::NotFound`], [`ReloadError::InProgress`],
    /// [`ReloadError::DependedOn`] if other plugins depend on it.
    pub fn remove(&self, id: &PluginId, options: &ReloadOptions) -> Result<ReloadReport, ReloadError> {
        transaction::remove(self, id, options)
    }

    /// Call `callback` with every change committed from now on: each add,
    /// each reload's and rollback's cutover, each removal, as a
    /// [`HostChange`]. Until the returned [`Subscription`] is dropped.
    ///
    /// The callback runs on the thread of the transaction, after the change
    /// is visible to [`lease`](Self::lease) and before the transaction
    /// returns (a reload, rollback or removal calls it right after its
    /// cutover, before it waits for the drain), never under a host lock.
    /// Overlapping transactions may deliver concurrently and out of order:
    /// read the current state from the host in the callback if you mirror
    /// it. A panic in the callback is caught and logged.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use cutover::host::{Host, HostChange, ReloadKind, ReloadOptions};
    /// use cutover::plugin::{BoxError, Plugin};
    /// use cutover::PluginId;
    ///
    /// struct P;
    /// impl Plugin for P {}
    /// let source = |_: &PluginId| -> Result<P, BoxError> { Ok(P) };
    ///
    /// let host: Host<P> = Host::new();
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&seen);
    /// let subscription = host.subscribe(move |change: &HostChange| {
    ///     log.lock().unwrap().push((change.kind, change.generation));
    /// });
    /// let id = PluginId::new("p");
    /// host.add(id.clone(), &source)?;
    /// host.reload(&id, &source, &ReloadOptions::default())?;
    /// host.remove(&id, &ReloadOptions::default())?;
    /// assert_eq!(*seen.lock().unwrap(), [
    ///     (ReloadKind::Add, Some(1)),
    ///     (ReloadKind::Reload, Some(2)),
    ///     (ReloadKind::Remove, None),
    /// ]);
    /// drop(subscription); // no more deliveries
    /// # Ok::<(), cutover::host::ReloadError>(())
    /// ```
    pub fn subscribe<F>(&self, callback: F) -> Subscription
    where
        F: Fn(&HostChange) + Send + Sync + 'static,
    {
        self.subscribers.subscribe(Arc::new(callback))
    }

    /// How many subscriptions are live.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// Tell the subscribers about a committed change (no host lock held).
    fn notify(&self, plugin: &PluginId, kind: ReloadKind, previous: Option<u64>, generation: Option<u64>) {
        self.subscribers.notify(&HostChange { plugin: plugin.clone(), kind, previous, generation });
    }

    fn entry(&self, id: &PluginId) -> Result<Arc<Entry<P>>, ReloadError> {
        lock(&self.entries).get(id).cloned().ok_or_else(|| ReloadError::NotFound { plugin: id.clone() })
    }
}

impl<P: Plugin> fmt::Debug for Host<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").field("plugins", &self.ids()).field("capabilities", &self.capabilities).finish()
    }
}
