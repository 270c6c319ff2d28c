//! [`WasmPlugin`]: one generation of a WebAssembly plugin — a core module or
//! a component, compiled and pre-linked, its function table and its instance
//! pool — and the [`ScalarPluginFn`] handles onto its functions.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use arrow_array::ArrayRef;
use cutover::plugin::{BoxError, LinkContext, Plugin};
use cutover::PluginId;

use crate::component::{self, ComponentGen, ComponentInstance};
use crate::error::{CallError, LoadError};
use crate::function::{ScalarPluginFn, Signature};
use crate::limits::WasmLimits;
use crate::module::{ModuleGen, ModuleInstance};
use crate::pool::Pool;
use crate::store::Failure;

/// What a plugin file holds: a core WebAssembly module or a component.
/// Told apart by the binary header (the *layer* field), not by the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginFormat {
    /// A core module (text or binary): its numeric exports are the
    /// functions, called once per row.
    Module,
    /// A component of world `cutover:plugin/scalar-plugin`: its `functions`
    /// are the functions, called once per batch.
    Component,
}

impl PluginFormat {
    /// `module` or `component`.
    pub fn name(self) -> &'static str {
        match self {
            PluginFormat::Module => "module",
            PluginFormat::Component => "component",
        }
    }
}

impl fmt::Display for PluginFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One scalar function of a generation.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    /// The name inside the plugin: the export name (modules), the WIT
    /// signature name (components).
    pub(crate) bare: String,
    /// `<id>.<name>`.
    pub(crate) full: String,
    pub(crate) signature: Signature,
}

impl Function {
    pub(crate) fn new(id: &PluginId, name: &str, signature: Signature) -> Self {
        Self { bare: name.to_owned(), full: format!("{id}.{name}"), signature }
    }

    /// The call error for `failure` (a trap at `row`, for modules).
    pub(crate) fn call_error(&self, failure: Failure, row: Option<usize>, limits: &WasmLimits) -> CallError {
        let function = self.full.clone();
        match failure {
            Failure::Interrupted => CallError::Interrupted { function },
            Failure::Timeout => CallError::Timeout { function, budget: limits.call_timeout },
            Failure::Memory { requested } => {
                CallError::OutOfMemory { function, requested, limit: limits.max_memory_bytes }
            }
            Failure::Trap(message) | Failure::Other(message) => CallError::Trap { function, row, message },
        }
    }
}

/// Why creating (and initializing) an instance failed.
#[derive(Debug)]
pub(crate) enum InstanceError {
    /// Instantiation or `init` trapped, timed out, was interrupted or ran out of memory.
    Failure(Failure),
    /// A module's `init` returned a non-zero code.
    InitCode(i32),
    /// A component's `init` returned `err`.
    InitRefused(String),
    /// Anything else.
    Other(String),
}

impl InstanceError {
    /// As an error of the load (link or init) step.
    pub(crate) fn into_load_error(self, limits: &WasmLimits) -> LoadError {
        match self {
            InstanceError::Failure(Failure::Memory { requested }) => {
                LoadError::MemoryTooLarge { required: requested, limit: limits.max_memory_bytes }
            }
            InstanceError::Failure(Failure::Timeout | Failure::Interrupted) => {
                LoadError::InitTimeout { budget: limits.init_timeout }
            }
            InstanceError::Failure(Failure::Trap(message)) => LoadError::InitTrap { message },
            InstanceError::Failure(Failure::Other(message)) | InstanceError::Other(message) => {
                LoadError::Instantiate { message }
            }
            InstanceError::InitCode(code) => LoadError::Init { code },
            InstanceError::InitRefused(message) => LoadError::InitRefused { message },
        }
    }

    /// As the error of a call that needed a new instance.
    fn into_call_error(self, function: &Function, limits: &WasmLimits) -> CallError {
        let full = function.full.clone();
        let message = match self {
            InstanceError::Failure(Failure::Interrupted) => return CallError::Interrupted { function: full },
            InstanceError::Failure(Failure::Timeout) => "`init` timed out".to_owned(),
            InstanceError::Failure(Failure::Memory { requested }) => {
                format!("needs {requested} bytes of memory, over the limit of {}", limits.max_memory_bytes)
            }
            InstanceError::Failure(Failure::Trap(m) | Failure::Other(m)) | InstanceError::Other(m) => m,
            InstanceError::InitCode(code) => format!("`init` returned {code}"),
            InstanceError::InitRefused(m) => format!("`init` returned an error: {m}"),
        };
        CallError::Instantiate { function: full, message }
    }
}

const LOADED: u8 = 0;
const LINKED: u8 = 1;
const READY: u8 = 2;
const SHUT_DOWN: u8 = 3;

enum Kind {
    Module { module: ModuleGen, pool: Pool<ModuleInstance> },
    Component { component: ComponentGen, pool: Pool<ComponentInstance> },
}

/// One generation of a WebAssembly plugin: a core module or a component.
///
/// Created by [`WasmSource::load_plugin`](crate::WasmSource::load_plugin)
/// (the load step: compile); [`Plugin::link`] links it (a module's imports
/// against the granted host functions, a component's against the host's
/// interfaces, whose `functions` it then asks) and registers the functions
/// `<id>.<name>`; [`Plugin::init`] creates the
/// [`prewarm_instances`](WasmLimits::prewarm_instances) instances, running
/// `init` on each; then the generation serves calls from any thread
/// ([`call`](Self::call), [`invoke`](Self::invoke), [`function`](Self::function)).
/// [`Plugin::interrupt`] force-stops its running calls; [`Plugin::shutdown`]
/// frees its instances (the code is freed when the last `Arc` drops).
///
/// A module's functions are known after the load step; a component's after
/// the link step ([`functions`](Self::functions) is empty before).
pub struct WasmPlugin {
    id: PluginId,
    limits: WasmLimits,
    functions: Vec<Function>,
    names: Vec<String>,
    index: HashMap<String, usize>,
    interrupted: Arc<AtomicBool>,
    state: AtomicU8,
    kind: Kind,
}

impl fmt::Debug for WasmPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmPlugin")
            .field("id", &self.id)
            .field("format", &self.format())
            .field("functions", &self.names)
            .field("limits", &self.limits)
            .field("idle_instances", &self.idle_instances())
            .field("interrupted", &self.interrupted.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn new_pool<T>(limits: &WasmLimits) -> Pool<T> {
    let shards = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    Pool::new(shards, limits.max_idle_instances.max(1))
}

impl WasmPlugin {
    pub(crate) fn module(id: PluginId, module: ModuleGen, functions: Vec<Function>, limits: WasmLimits) -> Self {
        let pool = new_pool(&limits);
        Self::new(id, functions, limits, Kind::Module { module, pool })
    }

    pub(crate) fn component(id: PluginId, component: ComponentGen, limits: WasmLimits) -> Self {
        let pool = new_pool(&limits);
        Self::new(id, Vec::new(), limits, Kind::Component { component, pool })
    }

    fn new(id: PluginId, functions: Vec<Function>, limits: WasmLimits, kind: Kind) -> Self {
        let mut plugin = Self {
            id,
            limits,
            functions: Vec::new(),
            names: Vec::new(),
            index: HashMap::new(),
            interrupted: Arc::new(AtomicBool::new(false)),
            state: AtomicU8::new(LOADED),
            kind,
        };
        plugin.set_functions(functions);
        plugin
    }

    fn set_functions(&mut self, functions: Vec<Function>) {
        let mut index = HashMap::with_capacity(functions.len() * 2);
        for (i, f) in functions.iter().enumerate() {
            index.insert(f.full.clone(), i);
            index.entry(f.bare.clone()).or_insert(i);
        }
        self.names = functions.iter().map(|f| f.full.clone()).collect();
        self.index = index;
        self.functions = functions;
    }

    /// The plugin id.
    pub fn id(&self) -> &PluginId {
        &self.id
    }

    /// Whether this generation is a core module or a component.
    pub fn format(&self) -> PluginFormat {
        match self.kind {
            Kind::Module { .. } => PluginFormat::Module,
            Kind::Component { .. } => PluginFormat::Component,
        }
    }

    /// Full names (`<id>.<name>`) of the scalar functions: in export order
    /// (modules), in the order `functions` returned them (components).
    pub fn functions(&self) -> &[String] {
        &self.names
    }

    /// The signature of `function` (full name or bare name).
    pub fn signature(&self, function: &str) -> Option<&Signature> {
        self.index.get(function).map(|&i| &self.functions[i].signature)
    }

    /// Every function with its signature, in [`functions`](Self::functions) order.
    pub fn signatures(&self) -> impl ExactSizeIterator<Item = (&str, &Signature)> + '_ {
        self.functions.iter().map(|f| (f.full.as_str(), &f.signature))
    }

    /// The limits this generation runs under.
    pub fn limits(&self) -> &WasmLimits {
        &self.limits
    }

    /// Idle pooled instances right now (diagnostics).
    pub fn idle_instances(&self) -> usize {
        match &self.kind {
            Kind::Module { pool, .. } => pool.idle(),
            Kind::Component { pool, .. } => pool.idle(),
        }
    }

    /// Whether [`Plugin::interrupt`] was called on this generation.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Acquire)
    }

    /// A [`ScalarPluginFn`] handle on `function` pinned to this generation.
    pub fn function(self: &Arc<Self>, function: &str) -> Option<WasmFunction> {
        let index = *self.index.get(function)?;
        Some(WasmFunction { plugin: Arc::clone(self), index })
    }

    /// Handles on every scalar function of this generation.
    pub fn scalar_functions(self: &Arc<Self>) -> Vec<WasmFunction> {
        (0..self.functions.len()).map(|index| WasmFunction { plugin: Arc::clone(self), index }).collect()
    }

    /// Call `function` (full name `<id>.<name>`, or the bare name) over
    /// `args`; the row count is the first column's length (1 for a function
    /// without arguments).
    pub fn call(&self, function: &str, args: &[ArrayRef]) -> Result<ArrayRef, CallError> {
        let rows = args.first().map_or(1, |a| a.len());
        self.invoke(function, args, rows)
    }

    /// Call `function` over `rows` rows of `args` (see [`ScalarPluginFn::invoke`]).
    pub fn invoke(&self, function: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError> {
        let index = self.lookup(function)?;
        self.invoke_index(index, args, rows)
    }

    fn lookup(&self, function: &str) -> Result<usize, CallError> {
        self.index
            .get(function)
            .copied()
            .ok_or_else(|| CallError::UnknownFunction { name: function.to_owned(), available: self.names.join(", ") })
    }

    fn invoke_index(&self, index: usize, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError> {
        let function = &self.functions[index];
        function.signature.check_args(&function.full, args, rows)?;
        match self.state.load(Ordering::Acquire) {
            READY => {}
            SHUT_DOWN => {
                return Err(CallError::Unavailable {
                    function: function.full.clone(),
                    reason: "the generation was shut down",
                })
            }
            _ => {
                return Err(CallError::Unavailable {
                    function: function.full.clone(),
                    reason: "the generation is not initialized yet",
                })
            }
        }
        if self.interrupted.load(Ordering::Acquire) {
            return Err(CallError::Interrupted { function: function.full.clone() });
        }
        match &self.kind {
            Kind::Module { module, pool } => {
                let mut instance = match pool.checkout() {
                    Some(instance) => instance,
                    None => {
                        tracing::debug!(plugin = %self.id, "instance pool empty: creating an instance on the caller's path");
                        module
                            .new_instance(&self.functions, &self.limits, &self.interrupted)
                            .map_err(|e| e.into_call_error(function, &self.limits))?
                    }
                };
                // Never reuse an instance whose call failed: its state may be broken.
                let out = instance.call(function, index, args, rows, &self.limits)?;
                pool.checkin(instance);
                Ok(out)
            }
            Kind::Component { component, pool } => {
                let prepared = component::prepare(function, args)?;
                let mut instance = match pool.checkout() {
                    Some(instance) => instance,
                    None => {
                        tracing::debug!(plugin = %self.id, "instance pool empty: creating an instance on the caller's path");
                        component
                            .fresh_instance(&self.limits, &self.interrupted)
                            .map_err(|e| e.into_call_error(function, &self.limits))?
                    }
                };
                match instance.call(function, args, &prepared, rows, &self.limits) {
                    Ok(column) => {
                        pool.checkin(instance);
                        component::result(function, column, rows)
                    }
                    Err((broken, error)) => {
                        if !broken {
                            pool.checkin(instance);
                        }
                        Err(error)
                    }
                }
            }
        }
    }

    /// The link step with a typed error (what [`Plugin::link`] runs).
    pub fn link_checked(&mut self, cx: &mut LinkContext) -> Result<(), LoadError> {
        if self.state.load(Ordering::Acquire) != LOADED {
            return Err(LoadError::Lifecycle("link called twice"));
        }
        match &mut self.kind {
            Kind::Module { module, .. } => module.link()?,
            Kind::Component { component, .. } => {
                let functions = component.link(&self.id, &self.limits, &self.interrupted)?;
                self.set_functions(functions);
            }
        }
        for name in &self.names {
            cx.register_function(name.clone());
        }
        self.state.store(LINKED, Ordering::Release);
        Ok(())
    }

    /// The init step with a typed error (what [`Plugin::init`] runs): create
    /// the prewarmed instances, running `init` on each.
    pub fn init_checked(&mut self) -> Result<(), LoadError> {
        match self.state.load(Ordering::Acquire) {
            LINKED => {}
            LOADED => return Err(LoadError::Lifecycle("init called before link")),
            _ => return Err(LoadError::Lifecycle("init called twice")),
        }
        let n = self.limits.prewarm_instances.max(1);
        let (limits, interrupted) = (&self.limits, &self.interrupted);
        match &mut self.kind {
            Kind::Module { module, pool } => {
                let created = (0..n)
                    .map(|_| module.new_instance(&self.functions, limits, interrupted))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.into_load_error(limits))?;
                for (i, instance) in created.into_iter().enumerate() {
                    pool.put(i, instance);
                }
            }
            Kind::Component { component, pool } => {
                let created = (0..n)
                    .map(|_| component.ready_instance(limits, interrupted))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.into_load_error(limits))?;
                for (i, instance) in created.into_iter().enumerate() {
                    pool.put(i, instance);
                }
            }
        }
        let shards = match &self.kind {
            Kind::Module { pool, .. } => pool.shards(),
            Kind::Component { pool, .. } => pool.shards(),
        };
        tracing::debug!(plugin = %self.id, format = %self.format(), instances = n, shards, "WebAssembly generation initialized");
        self.state.store(READY, Ordering::Release);
        Ok(())
    }
}

impl Plugin for WasmPlugin {
    fn link(&mut self, cx: &mut LinkContext) -> Result<(), BoxError> {
        Ok(self.link_checked(cx)?)
    }

    fn init(&mut self) -> Result<(), BoxError> {
        Ok(self.init_checked()?)
    }

    fn shutdown(&self) {
        self.state.store(SHUT_DOWN, Ordering::Release);
        match &self.kind {
            Kind::Module { pool, .. } => pool.close(),
            Kind::Component { pool, .. } => pool.close(),
        }
    }

    fn interrupt(&self) -> bool {
        self.interrupted.store(true, Ordering::Release);
        true
    }
}

/// A [`ScalarPluginFn`] handle on one function of one [`WasmPlugin`]
/// generation (kept alive by the handle).
#[derive(Clone)]
pub struct WasmFunction {
    plugin: Arc<WasmPlugin>,
    index: usize,
}

impl fmt::Debug for WasmFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmFunction").field("name", &self.name()).field("signature", self.signature()).finish()
    }
}

impl ScalarPluginFn for WasmFunction {
    fn name(&self) -> &str {
        &self.plugin.functions[self.index].full
    }

    fn signature(&self) -> &Signature {
        &self.plugin.functions[self.index].signature
    }

    fn invoke(&self, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError> {
        self.plugin.invoke_index(self.index, args, rows)
    }
}
