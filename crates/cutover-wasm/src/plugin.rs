//! [`WasmPlugin`]: one generation of a WebAssembly plugin — compiled module,
//! pre-linked `InstancePre`, export table and instance pool — and the
//! [`ScalarPluginFn`] handles onto its exports.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef};
use cutover::plugin::{BoxError, LinkContext, Plugin};
use cutover::PluginId;
use wasmtime::{FuncType, InstancePre, Linker, Module, ResourceLimiter, Store, Trap, UpdateDeadline, ValType};

use crate::engine::engine;
use crate::error::{CallError, LoadError};
use crate::function::{ScalarPluginFn, Signature, ValueType};
use crate::kernel::{self, Kernel};
use crate::limits::WasmLimits;
use crate::pool::Pool;
use crate::source::HostFn;

/// One scalar export.
#[derive(Debug, Clone)]
pub(crate) struct Export {
    pub(crate) export: String,
    pub(crate) full: String,
    pub(crate) signature: Signature,
}

/// Why a running call was stopped by the epoch callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    None,
    Timeout,
    Interrupted,
}

/// Per-store data: memory limiter and the call-deadline state read by the
/// epoch callback.
pub(crate) struct StoreState {
    max_memory: usize,
    memory_denied: Option<usize>,
    deadline: Instant,
    stop: Stop,
    interrupted: Arc<AtomicBool>,
}

impl fmt::Debug for StoreState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreState").field("max_memory", &self.max_memory).finish_non_exhaustive()
    }
}

impl ResourceLimiter for StoreState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables cost a pointer per element; hold them to the memory budget too.
        Ok(desired.saturating_mul(std::mem::size_of::<usize>()) <= self.max_memory)
    }
}

/// One pooled instance: its store, and a kernel per export.
struct PooledInstance {
    store: Store<StoreState>,
    kernels: Vec<Box<dyn Kernel>>,
}

impl PooledInstance {
    /// Arm the deadline for a run; the epoch ticks while the result lives.
    #[must_use = "the epoch ticks only while the guard lives"]
    fn begin(&mut self, budget: Duration) -> crate::engine::Running {
        let running = crate::engine::Running::start();
        let data = self.store.data_mut();
        data.deadline = Instant::now() + budget;
        data.stop = Stop::None;
        self.store.set_epoch_deadline(1);
        running
    }
}

const LOADED: u8 = 0;
const LINKED: u8 = 1;
const READY: u8 = 2;
const SHUT_DOWN: u8 = 3;

/// Instance-creation failure, before mapping to a load or call error.
enum InstanceError {
    Memory { required: u64 },
    InitCode(i32),
    Timeout,
    Interrupted,
    Trap(String),
    Other(String),
}

/// One generation of a WebAssembly plugin.
///
/// Created by [`WasmSource::load_plugin`](crate::WasmSource::load_plugin)
/// (the load step: compile); [`Plugin::link`] checks imports against the
/// granted host functions, pre-links (`InstancePre`) and registers the
/// functions `<id>.<export>`; [`Plugin::init`] creates the
/// [`prewarm_instances`](WasmLimits::prewarm_instances) instances, running
/// `init` on each; then the generation serves calls from any thread
/// ([`call`](Self::call), [`invoke`](Self::invoke), [`function`](Self::function)).
/// [`Plugin::interrupt`] force-stops its running calls; [`Plugin::shutdown`]
/// frees its instances (the module is freed when the last `Arc` drops).
pub struct WasmPlugin {
    id: PluginId,
    module: Module,
    limits: WasmLimits,
    grants: Arc<[HostFn]>,
    exports: Vec<Export>,
    names: Vec<String>,
    index: HashMap<String, usize>,
    has_init: bool,
    pre: Option<InstancePre<StoreState>>,
    pool: Pool<PooledInstance>,
    interrupted: Arc<AtomicBool>,
    state: AtomicU8,
}

impl fmt::Debug for WasmPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmPlugin")
            .field("id", &self.id)
            .field("functions", &self.names)
            .field("limits", &self.limits)
            .field("idle_instances", &self.pool.idle())
            .field("interrupted", &self.interrupted.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl WasmPlugin {
    pub(crate) fn new(
        id: PluginId,
        module: Module,
        exports: Vec<Export>,
        limits: WasmLimits,
        grants: Arc<[HostFn]>,
    ) -> Self {
        let mut index = HashMap::with_capacity(exports.len() * 2);
        for (i, e) in exports.iter().enumerate() {
            index.insert(e.full.clone(), i);
            index.entry(e.export.clone()).or_insert(i);
        }
        let has_init = module.get_export("init").is_some();
        let names = exports.iter().map(|e| e.full.clone()).collect();
        let shards = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let pool = Pool::new(shards, limits.max_idle_instances.max(1));
        Self {
            id,
            module,
            limits,
            grants,
            exports,
            names,
            index,
            has_init,
            pre: None,
            pool,
            interrupted: Arc::new(AtomicBool::new(false)),
            state: AtomicU8::new(LOADED),
        }
    }

    /// The plugin id.
    pub fn id(&self) -> &PluginId {
        &self.id
    }

    /// Full names (`<id>.<export>`) of the scalar functions, in export order.
    pub fn functions(&self) -> &[String] {
        &self.names
    }

    /// The signature of `function` (full name or bare export name).
    pub fn signature(&self, function: &str) -> Option<&Signature> {
        self.index.get(function).map(|&i| &self.exports[i].signature)
    }

    /// The limits this generation runs under.
    pub fn limits(&self) -> &WasmLimits {
        &self.limits
    }

    /// Idle pooled instances right now (diagnostics).
    pub fn idle_instances(&self) -> usize {
        self.pool.idle()
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
        (0..self.exports.len()).map(|index| WasmFunction { plugin: Arc::clone(self), index }).collect()
    }

    /// Call `function` (full name `<id>.<export>`, or the bare export name)
    /// over `args`; the row count is the first column's length (1 for a
    /// function without arguments).
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
        let export = &self.exports[index];
        export.signature.check_args(&export.full, args, rows)?;
        match self.state.load(Ordering::Acquire) {
            READY => {}
            SHUT_DOWN => {
                return Err(CallError::Unavailable {
                    function: export.full.clone(),
                    reason: "the generation was shut down",
                })
            }
            _ => {
                return Err(CallError::Unavailable {
                    function: export.full.clone(),
                    reason: "the generation is not initialized yet",
                })
            }
        }
        if self.interrupted.load(Ordering::Acquire) {
            return Err(CallError::Interrupted { function: export.full.clone() });
        }
        let mut instance = match self.pool.checkout() {
            Some(instance) => instance,
            None => {
                tracing::debug!(plugin = %self.id, "instance pool empty: creating an instance on the caller's path");
                self.new_instance().map_err(|e| self.call_error_from_instance(export, e))?
            }
        };
        let _running = instance.begin(self.limits.call_timeout);
        match instance.kernels[index].run(&mut instance.store, args, rows) {
            Ok(out) => {
                self.pool.checkin(instance);
                Ok(out)
            }
            Err((row, error)) => {
                // Never reuse an instance whose call failed: its state may be broken.
                let stop = instance.store.data().stop;
                drop(instance);
                Err(match (error.downcast_ref::<Trap>(), stop) {
                    (Some(Trap::Interrupt), Stop::Interrupted) => {
                        CallError::Interrupted { function: export.full.clone() }
                    }
                    (Some(Trap::Interrupt), _) => {
                        CallError::Timeout { function: export.full.clone(), budget: self.limits.call_timeout }
                    }
                    (Some(trap), _) => {
                        CallError::Trap { function: export.full.clone(), row, message: trap.to_string() }
                    }
                    (None, _) => CallError::Trap { function: export.full.clone(), row, message: format!("{error:#}") },
                })
            }
        }
    }

    fn call_error_from_instance(&self, export: &Export, e: InstanceError) -> CallError {
        let function = export.full.clone();
        match e {
            InstanceError::Interrupted => CallError::Interrupted { function },
            InstanceError::Timeout => CallError::Instantiate { function, message: "`init` timed out".into() },
            InstanceError::InitCode(code) => {
                CallError::Instantiate { function, message: format!("`init` returned {code}") }
            }
            InstanceError::Memory { required } => CallError::Instantiate {
                function,
                message: format!(
                    "needs {required} bytes of memory, over the limit of {}",
                    self.limits.max_memory_bytes
                ),
            },
            InstanceError::Trap(m) | InstanceError::Other(m) => CallError::Instantiate { function, message: m },
        }
    }

    /// Create one instance: new store with limits and epoch callback,
    /// instantiate, run `init` (under `init_timeout`), build kernels.
    fn new_instance(&self) -> Result<PooledInstance, InstanceError> {
        let pre = self.pre.as_ref().ok_or_else(|| InstanceError::Other("the plugin is not linked".into()))?;
        let state = StoreState {
            max_memory: usize::try_from(self.limits.max_memory_bytes).unwrap_or(usize::MAX),
            memory_denied: None,
            deadline: Instant::now(),
            stop: Stop::None,
            interrupted: Arc::clone(&self.interrupted),
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store.epoch_deadline_callback(|mut cx| {
            let data = cx.data_mut();
            if data.interrupted.load(Ordering::Relaxed) {
                data.stop = Stop::Interrupted;
                return Ok(UpdateDeadline::Interrupt);
            }
            if Instant::now() >= data.deadline {
                data.stop = Stop::Timeout;
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(1))
        });
        let mut instance = PooledInstance { store, kernels: Vec::new() };
        let _running = instance.begin(self.limits.init_timeout);
        let classify = |store: &Store<StoreState>, e: wasmtime::Error| {
            if let Some(required) = store.data().memory_denied {
                return InstanceError::Memory { required: required as u64 };
            }
            match (e.downcast_ref::<Trap>(), store.data().stop) {
                (Some(Trap::Interrupt), Stop::Interrupted) => InstanceError::Interrupted,
                (Some(Trap::Interrupt), _) => InstanceError::Timeout,
                (Some(trap), _) => InstanceError::Trap(trap.to_string()),
                (None, _) => InstanceError::Other(format!("{e:#}")),
            }
        };
        let wasm = match pre.instantiate(&mut instance.store) {
            Ok(i) => i,
            Err(e) => return Err(classify(&instance.store, e)),
        };
        if self.has_init {
            let init = wasm
                .get_typed_func::<(), i32>(&mut instance.store, "init")
                .map_err(|e| InstanceError::Other(format!("{e:#}")))?;
            match init.call(&mut instance.store, ()) {
                Ok(0) => {}
                Ok(code) => return Err(InstanceError::InitCode(code)),
                Err(e) => return Err(classify(&instance.store, e)),
            }
        }
        for export in &self.exports {
            let func = wasm
                .get_func(&mut instance.store, &export.export)
                .ok_or_else(|| InstanceError::Other(format!("export `{}` vanished", export.export)))?;
            let k = kernel::make(func, &export.signature, &mut instance.store)
                .map_err(|e| InstanceError::Other(format!("{e:#}")))?;
            instance.kernels.push(k);
        }
        Ok(instance)
    }

    /// The link step with a typed error (what [`Plugin::link`] runs).
    pub fn link_checked(&mut self, cx: &mut LinkContext) -> Result<(), LoadError> {
        if self.state.load(Ordering::Acquire) != LOADED {
            return Err(LoadError::Lifecycle("link called twice"));
        }
        let mut linker: Linker<StoreState> = Linker::new(engine());
        for grant in self.grants.iter() {
            let ty = FuncType::new(
                engine(),
                grant.params.iter().map(|t| val_type(*t)),
                grant.results.iter().map(|t| val_type(*t)),
            );
            let body = Arc::clone(&grant.body);
            linker
                .func_new(&grant.module, &grant.name, ty, move |_caller, params, results| {
                    body(params, results).map_err(|e| wasmtime::Error::msg(e.to_string()))
                })
                .map_err(|e| LoadError::Link { message: format!("{e:#}") })?;
        }
        for import in self.module.imports() {
            let granted = self.grants.iter().any(|g| g.module == import.module() && g.name == import.name());
            if !granted {
                return Err(LoadError::ImportNotGranted {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                    kind: describe_import(&import.ty()),
                });
            }
        }
        let pre = linker.instantiate_pre(&self.module).map_err(|e| LoadError::Link { message: format!("{e:#}") })?;
        self.pre = Some(pre);
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
        let mut created = Vec::with_capacity(n);
        for _ in 0..n {
            let instance = self.new_instance().map_err(|e| match e {
                InstanceError::Memory { required } => {
                    LoadError::MemoryTooLarge { required, limit: self.limits.max_memory_bytes }
                }
                InstanceError::InitCode(code) => LoadError::Init { code },
                InstanceError::Timeout | InstanceError::Interrupted => {
                    LoadError::InitTimeout { budget: self.limits.init_timeout }
                }
                InstanceError::Trap(message) => LoadError::InitTrap { message },
                InstanceError::Other(message) => LoadError::Instantiate { message },
            })?;
            created.push(instance);
        }
        for (i, instance) in created.into_iter().enumerate() {
            self.pool.put(i, instance);
        }
        tracing::debug!(plugin = %self.id, instances = n, shards = self.pool.shards(), "WebAssembly generation initialized");
        self.state.store(READY, Ordering::Release);
        Ok(())
    }
}

fn val_type(t: ValueType) -> ValType {
    match t {
        ValueType::Int32 => ValType::I32,
        ValueType::Int64 => ValType::I64,
        ValueType::Float32 => ValType::F32,
        ValueType::Float64 => ValType::F64,
    }
}

fn describe_import(ty: &wasmtime::ExternType) -> String {
    match ty {
        wasmtime::ExternType::Func(f) => format!("function {f}"),
        wasmtime::ExternType::Memory(_) => "memory".into(),
        wasmtime::ExternType::Table(_) => "table".into(),
        wasmtime::ExternType::Global(_) => "global".into(),
        wasmtime::ExternType::Tag(_) => "tag".into(),
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
        self.pool.close();
    }

    fn interrupt(&self) -> bool {
        self.interrupted.store(true, Ordering::Release);
        true
    }
}

/// A [`ScalarPluginFn`] handle on one export of one [`WasmPlugin`]
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
        &self.plugin.exports[self.index].full
    }

    fn signature(&self) -> &Signature {
        &self.plugin.exports[self.index].signature
    }

    fn invoke(&self, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError> {
        self.plugin.invoke_index(self.index, args, rows)
    }
}
