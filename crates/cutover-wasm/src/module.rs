//! Core WebAssembly modules: compile and classify exports (load), check
//! imports against the granted host functions and pre-link (link), create
//! instances running the optional `init` export, and call an export row by
//! row through its kernel.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arrow_array::ArrayRef;
use cutover::PluginId;
use wasmtime::{ExternType, FuncType, InstancePre, Linker, Module, Store, ValType};

use crate::engine::engine;
use crate::error::{CallError, LoadError};
use crate::function::{Signature, ValueType};
use crate::kernel::{self, Kernel};
use crate::limits::WasmLimits;
use crate::plugin::{Function, InstanceError};
use crate::source::HostFn;
use crate::store::{self, classify, StoreState};
use crate::PluginFormat;

/// One pooled module instance: its store, and a kernel per function.
pub(crate) struct ModuleInstance {
    store: Store<StoreState<()>>,
    kernels: Vec<Box<dyn Kernel>>,
}

/// The module-specific part of a generation.
pub(crate) struct ModuleGen {
    module: Module,
    grants: Arc<[HostFn]>,
    has_init: bool,
    pre: Option<InstancePre<StoreState<()>>>,
}

/// Validate and compile a core module binary on the shared engine.
pub(crate) fn compile(binary: &[u8], name: Option<&str>) -> Result<Module, LoadError> {
    let format = PluginFormat::Module;
    let message = |e: wasmtime::Error| crate::error::named(name, e);
    Module::validate(engine(), binary).map_err(|e| LoadError::Validate { format, message: message(e) })?;
    Module::from_binary(engine(), binary).map_err(|e| LoadError::Compile { format, message: message(e) })
}

impl ModuleGen {
    /// The load step after compilation: classify exports and check the
    /// initial memory against the limit.
    pub(crate) fn load(
        id: &PluginId,
        module: Module,
        limits: &WasmLimits,
        grants: Arc<[HostFn]>,
    ) -> Result<(Self, Vec<Function>), LoadError> {
        let functions = classify_exports(id, &module)?;
        check_memory(&module, limits)?;
        let has_init = module.get_export("init").is_some();
        Ok((Self { module, grants, has_init, pre: None }, functions))
    }

    /// The link step: every import must be granted; build the `InstancePre`.
    pub(crate) fn link(&mut self) -> Result<(), LoadError> {
        let mut linker: Linker<StoreState<()>> = Linker::new(engine());
        for grant in self.grants.iter() {
            let types = |ts: &[ValueType]| -> Result<Vec<ValType>, LoadError> {
                ts.iter()
                    .map(|t| {
                        val_type(*t).ok_or_else(|| LoadError::Link {
                            message: format!(
                                "the granted host function `{}.{}` uses the type {t}; host functions take and \
                                 return i32/i64/f32/f64 only",
                                grant.module, grant.name
                            ),
                        })
                    })
                    .collect()
            };
            let ty = FuncType::new(engine(), types(&grant.params)?, types(&grant.results)?);
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
                    kind: describe(&import.ty()),
                });
            }
        }
        let pre = linker.instantiate_pre(&self.module).map_err(|e| LoadError::Link { message: format!("{e:#}") })?;
        self.pre = Some(pre);
        Ok(())
    }

    /// Create one instance: new store with limits and epoch callback,
    /// instantiate, run `init` (under `limits.init_timeout`), build kernels.
    pub(crate) fn new_instance(
        &self,
        functions: &[Function],
        limits: &WasmLimits,
        interrupted: &Arc<AtomicBool>,
    ) -> Result<ModuleInstance, InstanceError> {
        let pre = self.pre.as_ref().ok_or_else(|| InstanceError::Other("the plugin is not linked".into()))?;
        let mut store = store::new_store(limits.max_memory_bytes, interrupted, ());
        let _running = store::begin(&mut store, limits.init_timeout);
        let instance = pre.instantiate(&mut store).map_err(|e| InstanceError::Failure(classify(&store, &e)))?;
        if self.has_init {
            let init = instance
                .get_typed_func::<(), i32>(&mut store, "init")
                .map_err(|e| InstanceError::Other(format!("{e:#}")))?;
            match init.call(&mut store, ()) {
                Ok(0) => {}
                Ok(code) => return Err(InstanceError::InitCode(code)),
                Err(e) => return Err(InstanceError::Failure(classify(&store, &e))),
            }
        }
        let mut kernels = Vec::with_capacity(functions.len());
        for function in functions {
            let func = instance
                .get_func(&mut store, &function.bare)
                .ok_or_else(|| InstanceError::Other(format!("export `{}` vanished", function.bare)))?;
            let k = kernel::make(func, &function.signature, &mut store)
                .map_err(|e| InstanceError::Other(format!("{e:#}")))?;
            kernels.push(k);
        }
        Ok(ModuleInstance { store, kernels })
    }
}

impl ModuleInstance {
    /// Run function `index` over `rows` rows with `limits.call_timeout`.
    /// On failure, the instance must be dropped.
    pub(crate) fn call(
        &mut self,
        function: &Function,
        index: usize,
        args: &[ArrayRef],
        rows: usize,
        limits: &WasmLimits,
    ) -> Result<ArrayRef, CallError> {
        let _running = store::begin(&mut self.store, limits.call_timeout);
        self.kernels[index]
            .run(&mut self.store, args, rows)
            .map_err(|(row, error)| function.call_error(classify(&self.store, &error), Some(row), limits))
    }
}

fn val_type(t: ValueType) -> Option<ValType> {
    match t {
        ValueType::Int32 => Some(ValType::I32),
        ValueType::Int64 => Some(ValType::I64),
        ValueType::Float32 => Some(ValType::F32),
        ValueType::Float64 => Some(ValType::F64),
        ValueType::Boolean | ValueType::Utf8 | ValueType::Binary => None,
    }
}

fn classify_exports(id: &PluginId, module: &Module) -> Result<Vec<Function>, LoadError> {
    let mut functions = Vec::new();
    for export in module.exports() {
        let name = export.name();
        let ty = export.ty();
        if name == "init" {
            let ok = matches!(&ty, ExternType::Func(f)
                if f.params().len() == 0 && f.results().len() == 1
                    && matches!(f.results().next(), Some(wasmtime::ValType::I32)));
            if !ok {
                return Err(LoadError::InitSignature { found: describe(&ty) });
            }
            continue;
        }
        let scalar = match &ty {
            ExternType::Func(f) => {
                let params: Option<Vec<ValueType>> = f.params().map(|p| ValueType::from_val_type(&p)).collect();
                let results: Option<Vec<ValueType>> = f.results().map(|r| ValueType::from_val_type(&r)).collect();
                match (params, results.as_deref()) {
                    (Some(params), Some([result])) => Some(Signature::new(params, *result)),
                    _ => None,
                }
            }
            _ => None,
        };
        match scalar {
            Some(signature) => functions.push(Function::new(id, name, signature)),
            None => tracing::warn!(
                plugin = %id,
                export = name,
                ty = %describe(&ty),
                "ignoring WebAssembly export that is not a scalar function ((i32|i64|f32|f64)* -> one result)"
            ),
        }
    }
    if functions.is_empty() {
        return Err(LoadError::NoFunctions);
    }
    Ok(functions)
}

fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => format!("function {f}"),
        ExternType::Memory(_) => "memory".into(),
        ExternType::Table(_) => "table".into(),
        ExternType::Global(_) => "global".into(),
        ExternType::Tag(_) => "tag".into(),
    }
}

fn check_memory(module: &Module, limits: &WasmLimits) -> Result<(), LoadError> {
    let needs = module.resources_required();
    if let Some(pages) = needs.max_initial_memory_size {
        let required = pages.saturating_mul(64 * 1024);
        if required > limits.max_memory_bytes {
            return Err(LoadError::MemoryTooLarge { required, limit: limits.max_memory_bytes });
        }
    }
    Ok(())
}
