//! [`HostFunctions`]: a `Host`'s plugin functions, mirrored into the
//! function registries of DataFusion sessions as the host changes.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{Arc, Mutex, Weak},
};

use cutover::{
    host::{Host, HostChange, Subscription},
    PluginId,
};
use cutover_wasm::Signature;
use datafusion::{
    execution::{FunctionRegistry, SessionState},
    logical_expr::ScalarUDF,
    prelude::SessionContext,
};

use crate::{
    error::Error,
    pin::{lock, HostPin, Pinner, PluginPin, QueryCounts},
    plugin::FunctionPlugin,
    rule::PinGenerations,
    udf::{FunctionId, LiveUdf},
};

/// The SQL name of plugin `plugin`'s function `function` (its full name,
/// `<plugin>.<name>`): `<plugin>_<name>`, e.g. `math.mul3` → `math_mul3`.
/// A function name without the plugin prefix is used whole as `<name>`.
///
/// DataFusion folds unquoted SQL identifiers to lower case: a name with
/// upper-case letters (or characters other than letters, digits and `_`)
/// must be double-quoted in SQL, e.g. `"geo_toRadians"(x)`.
///
/// ```
/// use cutover::PluginId;
/// assert_eq!(cutover_datafusion::sql_name(&PluginId::new("math"), "math.mul3"), "math_mul3");
/// ```
pub fn sql_name(plugin: &PluginId, function: &str) -> String {
    let name = function.strip_prefix(plugin.as_str()).and_then(|rest| rest.strip_prefix('.')).unwrap_or(function);
    format!("{plugin}_{name}")
}

/// A plugin function as registered in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    /// The SQL name, `<plugin>_<function>`.
    pub sql_name: String,
    /// The full name in the plugin, `<plugin>.<function>`.
    pub function: String,
    /// The plugin.
    pub plugin: PluginId,
    /// The generation whose signature new queries are planned with.
    pub generation: u64,
    /// Its signature.
    pub signature: Signature,
}

/// The functions of a [`Host`]'s plugins as DataFusion scalar UDFs, kept in
/// step with the host in every session they are registered in.
///
/// Create one per host ([`HostFunctions::new`]) and
/// [`register`](Self::register) it in any number of `SessionContext`s. From
/// then on, every add, reload, rollback and removal the host commits shows
/// up in those sessions by itself, before the host's transaction returns:
///
/// * each function `<plugin>.<name>` is the SQL function `<plugin>_<name>`
///   ([`sql_name`]), typed by the plugin's current generation;
/// * a query is pinned to the generation of each plugin current when it is
///   planned (see the [crate docs](crate) for the guarantees);
/// * after a removal, new queries fail to plan with DataFusion's error for
///   an unknown function, naming it; running ones finish.
///
/// A name that is already taken in a session by a function that is not
/// this binding's (a DataFusion built-in such as `array_length`, another
/// binding's, or a second plugin function with the same SQL name) is not
/// overridden: the function is skipped in that session with a `tracing`
/// warning.
///
/// The binding lives as long as a session it is registered in (or a clone
/// of this handle, or a plan holding its functions); it holds the sessions
/// weakly and does not keep them alive.
pub struct HostFunctions<P: FunctionPlugin> {
    binding: Arc<Binding<P>>,
}

impl<P: FunctionPlugin> Clone for HostFunctions<P> {
    fn clone(&self) -> Self {
        Self { binding: Arc::clone(&self.binding) }
    }
}

impl<P: FunctionPlugin> fmt::Debug for HostFunctions<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostFunctions")
            .field("functions", &self.functions().iter().map(|f| &f.sql_name).collect::<Vec<_>>())
            .field("sessions", &lock(&self.binding.sessions).len())
            .finish()
    }
}

impl<P: FunctionPlugin> HostFunctions<P> {
    /// Follow `host`'s changes (it subscribes to them at once).
    pub fn new(host: Arc<Host<P>>) -> Self {
        let binding = Arc::new_cyclic(|weak: &Weak<Binding<P>>| {
            let weak = weak.clone();
            let subscription = host.subscribe(move |change: &HostChange| {
                if let Some(binding) = weak.upgrade() {
                    tracing::debug!(target: "cutover::datafusion", plugin = %change.plugin, kind = ?change.kind,
                                    generation = ?change.generation, "host changed; updating sessions");
                    binding.sync();
                }
            });
            Binding { host, counts: Arc::default(), sessions: Mutex::new(Vec::new()), _subscription: subscription }
        });
        Self { binding }
    }

    /// The host.
    pub fn host(&self) -> &Arc<Host<P>> {
        &self.binding.host
    }

    /// Register the host's functions in `ctx`, with the analyzer rule that
    /// pins queries ([`PinGenerations`]), and keep them in step with the
    /// host from now on. Registering the same session twice does nothing
    /// more.
    pub fn register(&self, ctx: &SessionContext) {
        let state = ctx.state_weak_ref();
        {
            let sessions = lock(&self.binding.sessions);
            if sessions.iter().any(|s| Weak::ptr_eq(&s.state, &state)) {
                return;
            }
        }
        let keep_alive: Arc<dyn std::any::Any + Send + Sync> = Arc::clone(&self.binding) as _;
        ctx.add_analyzer_rule(Arc::new(PinGenerations::keeping(keep_alive)));
        lock(&self.binding.sessions).push(Session::new(state));
        self.binding.sync();
    }

    /// Stop following the host in `ctx` and remove this binding's functions
    /// from it (queries already planned keep theirs).
    pub fn unregister(&self, ctx: &SessionContext) {
        let state = ctx.state_weak_ref();
        let removed = {
            let mut sessions = lock(&self.binding.sessions);
            let index = sessions.iter().position(|s| Weak::ptr_eq(&s.state, &state));
            index.map(|i| sessions.remove(i))
        };
        if let Some(mut session) = removed {
            session.apply(&BTreeMap::new(), &(Arc::clone(&self.binding) as Arc<dyn Pinner>));
        }
    }

    /// The functions new queries are planned with, by SQL name.
    pub fn functions(&self) -> Vec<FunctionInfo> {
        self.binding
            .desired()
            .into_values()
            .map(|d| FunctionInfo {
                sql_name: d.id.sql_name,
                function: d.id.function,
                plugin: d.id.plugin,
                generation: d.generation,
                signature: d.signature,
            })
            .collect()
    }

    /// Queries in flight on generation `generation` of `plugin`: planned
    /// queries (logical or physical plans, and their streams) that hold a
    /// pin on it.
    pub fn queries_in_flight(&self, plugin: &PluginId, generation: u64) -> usize {
        self.binding.counts.get(plugin, generation)
    }

    /// Queries in flight, per plugin and generation (generations without
    /// queries are left out).
    pub fn all_queries_in_flight(&self) -> BTreeMap<PluginId, BTreeMap<u64, usize>> {
        self.binding.counts.all()
    }
}

/// What a function should be registered as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Desired {
    id: FunctionId,
    generation: u64,
    signature: Signature,
}

/// One session the binding keeps in step.
struct Session {
    state: Weak<parking_lot::RwLock<SessionState>>,
    /// What this binding registered there, by SQL name.
    registered: BTreeMap<String, Desired>,
    /// Names skipped because something else holds them (warned once).
    conflicts: BTreeSet<String>,
}

/// The shared state of a [`HostFunctions`].
struct Binding<P: FunctionPlugin> {
    host: Arc<Host<P>>,
    counts: Arc<QueryCounts>,
    /// Serializes updates: each reads the host's current state and applies
    /// it whole, so the last update leaves every session current.
    sessions: Mutex<Vec<Session>>,
    _subscription: Subscription,
}

impl<P: FunctionPlugin> fmt::Debug for Binding<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding").field("host", &self.host).finish_non_exhaustive()
    }
}

impl<P: FunctionPlugin> Pinner for Binding<P> {
    fn pin(&self, plugin: &PluginId, function: &str) -> Result<Arc<dyn PluginPin>, Error> {
        Ok(Arc::new(HostPin::take(&self.host, &self.counts, plugin, function)?))
    }
}

impl<P: FunctionPlugin> Binding<P> {
    /// Every function of every plugin's current generation, by SQL name
    /// (plugins in id order: on a clash of SQL names, the first wins).
    fn desired(&self) -> BTreeMap<String, Desired> {
        let mut out = BTreeMap::new();
        for plugin in self.host.ids() {
            let Some(lease) = self.host.lease(&plugin) else { continue };
            let generation = lease.generation();
            for (function, signature) in lease.function_signatures() {
                let name = sql_name(&plugin, &function);
                if let Some(taken) = out.get(&name) {
                    let taken: &Desired = taken;
                    tracing::warn!(target: "cutover::datafusion", sql_name = %name, function = %function,
                                   taken_by = %taken.id.function, "two plugin functions have the same SQL name; \
                                   the first keeps it");
                    continue;
                }
                let id = FunctionId { sql_name: name.clone(), function, plugin: plugin.clone() };
                out.insert(name, Desired { id, generation, signature });
            }
        }
        out
    }

    /// Bring every live session in line with the host.
    fn sync(self: &Arc<Self>) {
        let mut sessions = lock(&self.sessions);
        sessions.retain(|s| s.state.strong_count() > 0);
        if sessions.is_empty() {
            return;
        }
        let desired = self.desired();
        let pinner: Arc<dyn Pinner> = Arc::clone(self) as _;
        for session in sessions.iter_mut() {
            session.apply(&desired, &pinner);
        }
    }
}

impl Session {
    fn new(state: Weak<parking_lot::RwLock<SessionState>>) -> Self {
        Self { state, registered: BTreeMap::new(), conflicts: BTreeSet::new() }
    }

    /// Register what is `desired` and deregister what this binding
    /// registered that is not.
    fn apply(&mut self, desired: &BTreeMap<String, Desired>, pinner: &Arc<dyn Pinner>) {
        let Some(state) = self.state.upgrade() else { return };
        let mut state = state.write();
        let ours = |udf: &ScalarUDF| {
            udf.inner()
                .downcast_ref::<LiveUdf>()
                .is_some_and(|live| std::ptr::addr_eq(Arc::as_ptr(&live.pinner), Arc::as_ptr(pinner)))
        };
        let gone: Vec<String> = self.registered.keys().filter(|n| !desired.contains_key(*n)).cloned().collect();
        for name in gone {
            self.registered.remove(&name);
            if state.scalar_functions().get(&name).is_some_and(|udf| ours(udf)) {
                let _ = state.deregister_udf(&name);
                tracing::info!(target: "cutover::datafusion", sql_name = %name, "function removed from SQL");
            }
        }
        self.conflicts.retain(|name| desired.contains_key(name));
        for (name, want) in desired {
            if self.registered.get(name) == Some(want) {
                continue;
            }
            if let Some(existing) = state.scalar_functions().get(name) {
                if !ours(existing) {
                    if self.conflicts.insert(name.clone()) {
                        tracing::warn!(target: "cutover::datafusion", sql_name = %name, function = %want.id.function,
                                       "the SQL name is taken by another function in this session; not registered");
                    }
                    continue;
                }
            }
            let live = LiveUdf::new(want.id.clone(), want.generation, want.signature.clone(), Arc::clone(pinner));
            if let Err(e) = state.register_udf(Arc::new(ScalarUDF::new_from_impl(live))) {
                tracing::warn!(target: "cutover::datafusion", sql_name = %name, error = %e, "could not register");
                continue;
            }
            tracing::debug!(target: "cutover::datafusion", sql_name = %name, generation = want.generation,
                            "function registered in SQL");
            self.registered.insert(name.clone(), want.clone());
        }
    }
}
