//! WebAssembly components of world `cutover:plugin/scalar-plugin`
//! (`wit/cutover-plugin.wit`): compile and check the world (load); link
//! against the host's interfaces, instantiate once and ask `functions`
//! (link); run `init(config)` on every instance (init); call a function
//! once per batch with whole columns.

mod abi;
mod bindings;
mod sandbox;

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use arrow_array::ArrayRef;
use cutover::PluginId;
use wasmtime::component::{Component, ComponentExportIndex, Func, TypedFunc};
use wasmtime::Store;

use self::abi::{ArgColumn, Scratch};
use self::bindings::cutover::plugin::types::Column;
use self::bindings::{ScalarPlugin, ScalarPluginPre};
use self::sandbox::Sandbox;
use crate::engine::engine;
use crate::error::{CallError, LoadError};
use crate::function::Signature;
use crate::limits::WasmLimits;
use crate::plugin::{Function, InstanceError};
use crate::store::{self, classify, Failure, StoreState};
use crate::PluginFormat;

/// The name of the exported interface that makes a component a plugin.
const SCALAR: &str = "cutover:plugin/scalar@0.1.0";

type CallParams<'a> = (&'a str, &'a [ArgColumn<'a>], u32);
type CallResults = (Result<Column, String>,);

/// One pooled component instance: its store, its bindings (for `functions`
/// and `init`) and its `call` export.
pub(crate) struct ComponentInstance {
    store: Store<StoreState<Sandbox>>,
    bindings: ScalarPlugin,
    /// Type-checked against `CallParams<'static>` / `CallResults` when the
    /// instance was created.
    call: Func,
}

/// The component-specific part of a generation.
pub(crate) struct ComponentGen {
    plugin: Arc<str>,
    component: Component,
    config: Arc<str>,
    call_index: ComponentExportIndex,
    pre: Option<ScalarPluginPre<StoreState<Sandbox>>>,
    /// The instance `functions` was asked on at link; `init` runs on it
    /// first, then it joins the pool. (In a `Mutex` only to make the
    /// generation `Sync`: it is reached through `&mut self`, never locked.)
    first: Mutex<Option<ComponentInstance>>,
}

/// Validate and compile a component binary on the shared engine.
pub(crate) fn compile(binary: &[u8], name: Option<&str>) -> Result<Component, LoadError> {
    Component::from_binary(engine(), binary)
        .map_err(|e| LoadError::Validate { format: PluginFormat::Component, message: crate::error::named(name, e) })
}

fn exports_of(component: &Component) -> String {
    let ty = component.component_type();
    let names: Vec<String> = ty.exports(engine()).map(|(name, _)| format!("`{name}`")).collect();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

impl ComponentGen {
    /// The load step after compilation: the component must export the
    /// `scalar` interface with a `call` function; its initial memory must
    /// fit the limit.
    pub(crate) fn load(
        id: &PluginId,
        component: Component,
        config: Arc<str>,
        limits: &WasmLimits,
    ) -> Result<Self, LoadError> {
        let Some(scalar) = component.get_export_index(None, SCALAR) else {
            return Err(LoadError::WrongWorld {
                message: format!("it does not export `{SCALAR}`; it exports {}", exports_of(&component)),
            });
        };
        let Some(call_index) = component.get_export_index(Some(&scalar), "call") else {
            return Err(LoadError::WrongWorld { message: format!("its `{SCALAR}` export has no `call` function") });
        };
        if let Some(needs) = component.resources_required() {
            if let Some(pages) = needs.max_initial_memory_size {
                let required = pages.saturating_mul(64 * 1024);
                if required > limits.max_memory_bytes {
                    return Err(LoadError::MemoryTooLarge { required, limit: limits.max_memory_bytes });
                }
            }
        }
        Ok(Self { plugin: Arc::from(id.as_str()), component, config, call_index, pre: None, first: Mutex::new(None) })
    }

    /// The link step: link against the host's interfaces (every import must
    /// be provided), type-check the exports, instantiate once and ask
    /// `functions`. Returns the functions, checked.
    pub(crate) fn link(
        &mut self,
        id: &PluginId,
        limits: &WasmLimits,
        interrupted: &Arc<AtomicBool>,
    ) -> Result<Vec<Function>, LoadError> {
        let linker = sandbox::linker().map_err(|message| LoadError::Link { message })?;
        let instance_pre = linker.instantiate_pre(&self.component).map_err(|e| self.import_error(&e))?;
        let pre = ScalarPluginPre::new(instance_pre).map_err(|e| LoadError::WrongWorld {
            message: format!("its `{SCALAR}` export does not match the interface: {e:#}"),
        })?;
        self.pre = Some(pre);
        let mut instance = self.new_instance(limits, interrupted).map_err(|e| instance_load_error(e, limits))?;
        let _running = store::begin(&mut instance.store, limits.init_timeout);
        instance.store.data().ext.clear_stderr();
        let signatures = match instance.bindings.cutover_plugin_scalar().call_functions(&mut instance.store) {
            Ok(list) => list,
            Err(e) => {
                let message = match explain(&instance.store, &e) {
                    Failure::Timeout | Failure::Interrupted => {
                        format!("ran longer than its budget of {:?} and was stopped", limits.init_timeout)
                    }
                    Failure::Memory { requested } => format!(
                        "ran out of memory (asked for {requested} bytes, over the limit of {})",
                        limits.max_memory_bytes
                    ),
                    Failure::Trap(m) => format!("trapped: {m}"),
                    Failure::Other(m) => format!("failed: {m}"),
                };
                return Err(LoadError::Functions { message });
            }
        };
        let functions = check_functions(id, signatures)?;
        *self.first.get_mut().unwrap_or_else(PoisonError::into_inner) = Some(instance);
        Ok(functions)
    }

    /// Name the import that is not provided, from the linker's error.
    fn import_error(&self, error: &wasmtime::Error) -> LoadError {
        let message = format!("{error:#}");
        let ty = self.component.component_type();
        let name = ty
            .imports(engine())
            .map(|(name, _)| name.to_owned())
            .find(|name| message.contains(&format!("`{name}`")))
            .unwrap_or_else(|| "(see the message)".into());
        LoadError::ImportNotProvided { name, message }
    }

    /// Create one instance (without `init`).
    pub(crate) fn new_instance(
        &self,
        limits: &WasmLimits,
        interrupted: &Arc<AtomicBool>,
    ) -> Result<ComponentInstance, InstanceError> {
        let pre = self.pre.as_ref().ok_or_else(|| InstanceError::Other("the plugin is not linked".into()))?;
        let mut store = store::new_store(limits.max_memory_bytes, interrupted, Sandbox::new(&self.plugin));
        let _running = store::begin(&mut store, limits.init_timeout);
        let instance =
            pre.instance_pre().instantiate(&mut store).map_err(|e| InstanceError::Failure(classify(&store, &e)))?;
        let bindings = ScalarPlugin::new(&mut store, &instance).map_err(|e| InstanceError::Other(format!("{e:#}")))?;
        let call = instance
            .get_func(&mut store, self.call_index)
            .ok_or_else(|| InstanceError::Other("the `call` export vanished".into()))?;
        call.typed::<CallParams<'static>, CallResults>(&store)
            .map_err(|e| InstanceError::Other(format!("`call` has the wrong type: {e:#}")))?;
        Ok(ComponentInstance { store, bindings, call })
    }

    /// Run `init(config)` on `instance` (under `limits.init_timeout`).
    pub(crate) fn init(&self, instance: &mut ComponentInstance, limits: &WasmLimits) -> Result<(), InstanceError> {
        let _running = store::begin(&mut instance.store, limits.init_timeout);
        instance.store.data().ext.clear_stderr();
        match instance.bindings.cutover_plugin_scalar().call_init(&mut instance.store, &self.config) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(InstanceError::InitRefused(message)),
            Err(e) => Err(InstanceError::Failure(explain(&instance.store, &e))),
        }
    }

    /// A new instance with `init` run: the one `functions` was asked on, if
    /// still unused, else a fresh one.
    pub(crate) fn ready_instance(
        &mut self,
        limits: &WasmLimits,
        interrupted: &Arc<AtomicBool>,
    ) -> Result<ComponentInstance, InstanceError> {
        let mut instance = match self.first.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            Some(instance) => instance,
            None => self.new_instance(limits, interrupted)?,
        };
        self.init(&mut instance, limits)?;
        Ok(instance)
    }

    /// A fresh instance with `init` run (on a caller's path).
    pub(crate) fn fresh_instance(
        &self,
        limits: &WasmLimits,
        interrupted: &Arc<AtomicBool>,
    ) -> Result<ComponentInstance, InstanceError> {
        let mut instance = self.new_instance(limits, interrupted)?;
        self.init(&mut instance, limits)?;
        Ok(instance)
    }
}

/// Arguments of one call, prepared for lowering (see [`abi`]).
pub(crate) struct Prepared {
    scratch: Vec<Scratch>,
}

/// Prepare `args` (checked against `signature`) for a call.
pub(crate) fn prepare(function: &Function, args: &[ArrayRef]) -> Result<Prepared, CallError> {
    let mut scratch = Vec::with_capacity(args.len());
    for (array, ty) in args.iter().zip(&function.signature.params) {
        let mut s = Scratch::default();
        abi::prepare(array.as_ref(), *ty, &mut s)
            .map_err(|message| CallError::Native { function: function.full.clone(), message })?;
        scratch.push(s);
    }
    Ok(Prepared { scratch })
}

impl ComponentInstance {
    /// Call `function` over `rows` rows with `limits.call_timeout`. `Err`
    /// with `true`: the instance must be dropped (the call trapped or was
    /// stopped); with `false`: the instance is fine (the plugin returned
    /// `err`, or a result the host rejected).
    pub(crate) fn call(
        &mut self,
        function: &Function,
        args: &[ArrayRef],
        prepared: &Prepared,
        rows: usize,
        limits: &WasmLimits,
    ) -> Result<Column, (bool, CallError)> {
        let full = || function.full.clone();
        let n = u32::try_from(rows).map_err(|_| (false, CallError::TooManyRows { function: full(), rows }))?;
        let columns = args
            .iter()
            .zip(&function.signature.params)
            .zip(&prepared.scratch)
            .map(|((array, ty), scratch)| abi::arg(array.as_ref(), *ty, scratch))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| (false, CallError::Native { function: full(), message }))?;
        let _running = store::begin(&mut self.store, limits.call_timeout);
        self.store.data().ext.clear_stderr();
        // SAFETY: `self.call` was type-checked against `CallParams<'static>`
        // and `CallResults` when this instance was created (`new_instance`);
        // `CallParams<'_>` differs only in lifetimes, which do not change the
        // component-model type or how the values are lowered.
        let call = unsafe { TypedFunc::<CallParams<'_>, CallResults>::new_unchecked(self.call) };
        match call.call(&mut self.store, (function.bare.as_str(), columns.as_slice(), n)) {
            Ok((Ok(column),)) => Ok(column),
            Ok((Err(message),)) => Err((false, CallError::Plugin { function: full(), message })),
            Err(e) => Err((true, function.call_error(explain(&self.store, &e), None, limits))),
        }
    }
}

/// Why a call into the component failed; a trap says what the plugin wrote
/// to stderr just before (a Rust panic prints its message there, then traps).
fn explain(store: &Store<StoreState<Sandbox>>, error: &wasmtime::Error) -> Failure {
    match classify(store, error) {
        Failure::Trap(m) => match store.data().ext.stderr() {
            Some(said) => Failure::Trap(format!("{m}; the plugin's stderr: {said}")),
            None => Failure::Trap(m),
        },
        other => other,
    }
}

/// Check a returned result column and make it an Arrow array.
pub(crate) fn result(function: &Function, column: Column, rows: usize) -> Result<ArrayRef, CallError> {
    abi::result(column, function.signature.result, rows)
        .map_err(|message| CallError::BadResult { function: function.full.clone(), message })
}

fn instance_load_error(e: InstanceError, limits: &WasmLimits) -> LoadError {
    e.into_load_error(limits)
}

/// Check `functions`' answer: at least one, names non-empty, unique, no `.`.
fn check_functions(
    id: &PluginId,
    signatures: Vec<bindings::cutover::plugin::types::Signature>,
) -> Result<Vec<Function>, LoadError> {
    if signatures.is_empty() {
        return Err(LoadError::NoFunctions);
    }
    let mut seen = HashSet::with_capacity(signatures.len());
    let mut functions = Vec::with_capacity(signatures.len());
    for s in signatures {
        let problem = if s.name.is_empty() {
            Some("is empty")
        } else if s.name.contains('.') {
            Some("contains `.`")
        } else if !seen.insert(s.name.clone()) {
            Some("is repeated")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(LoadError::FunctionName { name: s.name, problem });
        }
        let signature =
            Signature::new(s.params.into_iter().map(abi::value_type).collect::<Vec<_>>(), abi::value_type(s.returns))
                .with_deterministic(s.deterministic);
        functions.push(Function::new(id, &s.name, signature));
    }
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use super::abi;
    use crate::function::ValueType;

    #[test]
    fn wit_and_value_types_round_trip() {
        for ty in ValueType::ALL {
            assert_eq!(abi::value_type(abi::wit_type(ty)), ty);
        }
    }
}
