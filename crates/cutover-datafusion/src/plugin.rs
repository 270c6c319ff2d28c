//! What a plugin must offer to be called from SQL: [`FunctionPlugin`],
//! implemented for WebAssembly plugins ([`WasmPlugin`]) and for native Rust
//! functions ([`NativePlugin`]).

use std::{collections::HashMap, fmt, sync::Arc};

use arrow_array::ArrayRef;
use cutover::plugin::{BoxError, LinkContext, Plugin};
use cutover_wasm::{CallError, NativeFn, ScalarPluginFn, Signature, WasmPlugin};

/// A plugin generation whose scalar functions can be called over Arrow
/// columns: what [`HostFunctions`](crate::HostFunctions) needs of a
/// `Host`'s plugins.
///
/// Function names are full names, `<plugin id>.<function>` (e.g.
/// `math.mul3`); SQL sees them as `<plugin id>_<function>`
/// ([`sql_name`](crate::sql_name)).
pub trait FunctionPlugin: Plugin {
    /// Every scalar function of this generation: full name and signature,
    /// in a stable order.
    fn function_signatures(&self) -> Vec<(String, Signature)>;

    /// The signature of `function` (full name), if this generation has it.
    fn function_signature(&self, function: &str) -> Option<&Signature>;

    /// Call `function` (full name) over `rows` rows of `args`, columns of
    /// the signature's types; a column of `rows` rows of the result type
    /// comes back. Nulls propagate (see
    /// [`ScalarPluginFn`](cutover_wasm::ScalarPluginFn)).
    fn call_function(&self, function: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError>;
}

impl FunctionPlugin for WasmPlugin {
    fn function_signatures(&self) -> Vec<(String, Signature)> {
        self.functions().iter().filter_map(|name| self.signature(name).map(|s| (name.clone(), s.clone()))).collect()
    }

    fn function_signature(&self, function: &str) -> Option<&Signature> {
        self.signature(function)
    }

    fn call_function(&self, function: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError> {
        self.invoke(function, args, rows)
    }
}

type ShutdownHook = dyn Fn() + Send + Sync;

/// A plugin of native Rust scalar functions ([`NativeFn`]s): lives in a
/// `cutover::host::Host` and is added, reloaded, rolled back and removed
/// exactly like a WebAssembly plugin, through the host's transactions.
///
/// Name each function `<plugin id>.<function>`, like WebAssembly plugins'
/// functions (a name without the plugin id prefix is used as the function
/// part: SQL still sees `<plugin id>_<name>`).
///
/// ```
/// use cutover::{host::Host, plugin::BoxError, PluginId};
/// use cutover_datafusion::NativePlugin;
/// use cutover_wasm::NativeFn;
///
/// let host: Host<NativePlugin> = Host::new();
/// let v1 = |_: &PluginId| -> Result<NativePlugin, BoxError> {
///     Ok(NativePlugin::new([NativeFn::unary("math.mul3", |x: i64| x * 3)]))
/// };
/// host.add(PluginId::new("math"), &v1)?;
/// assert_eq!(host.snapshot(&PluginId::new("math")).unwrap().functions, ["math.mul3"]);
/// # Ok::<(), cutover::host::ReloadError>(())
/// ```
#[derive(Clone)]
pub struct NativePlugin {
    functions: Vec<NativeFn>,
    index: HashMap<String, usize>,
    duplicate: Option<String>,
    on_shutdown: Option<Arc<ShutdownHook>>,
}

impl fmt::Debug for NativePlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.functions.iter().map(|f| f.name()).collect();
        f.debug_struct("NativePlugin").field("functions", &names).finish_non_exhaustive()
    }
}

impl NativePlugin {
    /// A plugin providing `functions`. Two functions with the same name make
    /// the link step fail (the load is refused; what serves keeps serving).
    pub fn new(functions: impl IntoIterator<Item = NativeFn>) -> Self {
        let functions: Vec<NativeFn> = functions.into_iter().collect();
        let mut index = HashMap::with_capacity(functions.len());
        let mut duplicate = None;
        for (i, f) in functions.iter().enumerate() {
            if index.insert(f.name().to_owned(), i).is_some() {
                duplicate.get_or_insert_with(|| f.name().to_owned());
            }
        }
        Self { functions, index, duplicate, on_shutdown: None }
    }

    /// Run `hook` when this generation is shut down: after its drain (no
    /// call and no query is running on it any more), or when it is
    /// discarded after a failed load.
    pub fn on_shutdown(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_shutdown = Some(Arc::new(hook));
        self
    }

    /// The functions, in the order given.
    pub fn functions(&self) -> &[NativeFn] {
        &self.functions
    }

    fn function(&self, name: &str) -> Result<&NativeFn, CallError> {
        self.index.get(name).map(|&i| &self.functions[i]).ok_or_else(|| CallError::UnknownFunction {
            name: name.to_owned(),
            available: self.functions.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "),
        })
    }
}

impl Plugin for NativePlugin {
    fn link(&mut self, cx: &mut LinkContext) -> Result<(), BoxError> {
        if let Some(name) = &self.duplicate {
            return Err(format!(
                "the native plugin defines the function `{name}` twice; give each function its own name"
            )
            .into());
        }
        for f in &self.functions {
            cx.register_function(f.name());
        }
        Ok(())
    }

    fn shutdown(&self) {
        if let Some(hook) = &self.on_shutdown {
            hook();
        }
    }
}

impl FunctionPlugin for NativePlugin {
    fn function_signatures(&self) -> Vec<(String, Signature)> {
        self.functions.iter().map(|f| (f.name().to_owned(), f.signature().clone())).collect()
    }

    fn function_signature(&self, function: &str) -> Option<&Signature> {
        self.index.get(function).map(|&i| self.functions[i].signature())
    }

    fn call_function(&self, function: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError> {
        self.function(function)?.invoke(args, rows)
    }
}
