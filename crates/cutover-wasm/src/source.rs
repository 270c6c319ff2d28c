//! Where generations come from: [`WasmSource`] (bytes, text or a file), the
//! load step (parse → validate → compile → classify exports), and granted
//! host functions ([`HostFn`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cutover::plugin::{BoxError, LinkContext, PluginSource};
use cutover::PluginId;
use wasmtime::{ExternType, Module, Val};

use crate::engine::engine;
use crate::error::LoadError;
use crate::function::{Signature, ValueType};
use crate::limits::WasmLimits;
use crate::plugin::{Export, WasmPlugin};

type HostBody = dyn Fn(&[Val], &mut [Val]) -> Result<(), BoxError> + Send + Sync;

/// A host function granted to plugins loaded from a [`WasmSource`]: the only
/// way a plugin gets imports. Plugins importing anything not granted fail to
/// load with [`LoadError::ImportNotGranted`].
#[derive(Clone)]
pub struct HostFn {
    pub(crate) module: String,
    pub(crate) name: String,
    pub(crate) params: Vec<ValueType>,
    pub(crate) results: Vec<ValueType>,
    pub(crate) body: Arc<HostBody>,
}

impl fmt::Debug for HostFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostFn")
            .field("module", &self.module)
            .field("name", &self.name)
            .field("params", &self.params)
            .field("results", &self.results)
            .finish_non_exhaustive()
    }
}

impl HostFn {
    /// A host function importable as `(import "<module>" "<name>" (func …))`
    /// with the given types. `body` reads the arguments and writes every
    /// result; an error traps the calling WebAssembly code.
    pub fn new<F>(
        module: impl Into<String>,
        name: impl Into<String>,
        params: impl Into<Vec<ValueType>>,
        results: impl Into<Vec<ValueType>>,
        body: F,
    ) -> Self
    where
        F: Fn(&[Val], &mut [Val]) -> Result<(), BoxError> + Send + Sync + 'static,
    {
        Self {
            module: module.into(),
            name: name.into(),
            params: params.into(),
            results: results.into(),
            body: Arc::new(body),
        }
    }
}

#[derive(Debug, Clone)]
enum Input {
    Bytes(Arc<[u8]>),
    File(PathBuf),
}

/// The source of a WebAssembly plugin's generations; implements
/// [`PluginSource<WasmPlugin>`] for the reload transaction.
///
/// A file source re-reads its file on every load, so reloading picks up the
/// file's current contents. Text (`.wat`) and binary (`.wasm`) are both
/// accepted, whatever the file name: binary is recognised by its `\0asm`
/// magic.
///
/// Load errors name where the module came from: the file's path for a file
/// source, or the name given with [`with_name`](Self::with_name) (e.g. the
/// path a host read the bytes from), so a text parse error points at
/// `plugins/math.wat:3:5` rather than at an anonymous input.
#[derive(Debug, Clone)]
pub struct WasmSource {
    input: Input,
    /// Shown in load errors; the path for a file source.
    name: Option<Arc<str>>,
    limits: WasmLimits,
    grants: Arc<[HostFn]>,
}

impl WasmSource {
    /// A source of fixed bytes: WebAssembly binary or text.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self::new(Input::Bytes(bytes.into().into()))
    }

    /// A source of fixed WebAssembly text.
    pub fn from_wat(text: &str) -> Self {
        Self::from_bytes(text.as_bytes())
    }

    /// A source reading `path` (`.wat` or `.wasm`) on every load. Its
    /// [`id`](Self::id) is the file stem, and load errors name the path.
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = Arc::from(path.display().to_string());
        Self { name: Some(name), ..Self::new(Input::File(path)) }
    }

    fn new(input: Input) -> Self {
        Self { input, name: None, limits: WasmLimits::default(), grants: Arc::from(Vec::new()) }
    }

    /// Name this source in load errors (parse errors show it as
    /// `name:line:column`): typically the path the bytes of
    /// [`from_bytes`](Self::from_bytes) were read from. It replaces the path
    /// a file source names by default. Only messages change; the
    /// [`id`](Self::id) and the file read stay the same.
    ///
    /// ```
    /// use cutover::PluginId;
    /// use cutover_wasm::WasmSource;
    ///
    /// let source = WasmSource::from_wat("(module (func (export \"f\") (result i32)))")
    ///     .with_name("plugins/broken.wat");
    /// let err = source.load_plugin(&PluginId::new("broken")).unwrap_err();
    /// assert!(err.to_string().contains("plugins/broken.wat:1:"), "{err}");
    /// ```
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Arc::from(name.into()));
        self
    }

    /// The name load errors use: the one given to
    /// [`with_name`](Self::with_name), else the path of a file source;
    /// `None` for unnamed bytes.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Use `limits` for every generation loaded from this source.
    pub fn with_limits(mut self, limits: WasmLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Grant a host function to plugins from this source.
    pub fn grant(mut self, host_fn: HostFn) -> Self {
        let mut grants = self.grants.to_vec();
        grants.push(host_fn);
        self.grants = grants.into();
        self
    }

    /// The limits generations from this source get.
    pub fn limits(&self) -> &WasmLimits {
        &self.limits
    }

    /// The plugin id for a file source: the file stem (`plugins/math.wat` →
    /// `math`). `None` for byte sources or a stem that is not a valid id.
    pub fn id(&self) -> Option<PluginId> {
        match &self.input {
            Input::File(path) => path.file_stem().and_then(|s| s.to_str()).and_then(|s| PluginId::parse(s).ok()),
            Input::Bytes(_) => None,
        }
    }

    /// The file path, for a file source.
    pub fn path(&self) -> Option<&Path> {
        match &self.input {
            Input::File(path) => Some(path),
            Input::Bytes(_) => None,
        }
    }

    /// The load step: read, parse, validate, compile and classify exports.
    /// The result still needs [`Plugin::link`](cutover::plugin::Plugin::link) and [`Plugin::init`](cutover::plugin::Plugin::init) (the
    /// reload transaction calls them), or use [`load_ready`](Self::load_ready).
    pub fn load_plugin(&self, id: &PluginId) -> Result<WasmPlugin, LoadError> {
        let bytes: std::borrow::Cow<'_, [u8]> = match &self.input {
            Input::Bytes(b) => std::borrow::Cow::Borrowed(b),
            Input::File(path) => std::borrow::Cow::Owned(
                std::fs::read(path).map_err(|source| LoadError::Io { path: path.display().to_string(), source })?,
            ),
        };
        let module = compile(&bytes, self.name())?;
        let exports = classify_exports(id, &module)?;
        check_memory(&module, &self.limits)?;
        Ok(WasmPlugin::new(id.clone(), module, exports, self.limits.clone(), self.grants.clone()))
    }

    /// Load, link (with an empty [`LinkContext`]) and initialize: a
    /// generation ready to serve, without a reload transaction (tests,
    /// benchmarks, one-shot tools).
    pub fn load_ready(&self, id: &PluginId) -> Result<WasmPlugin, LoadError> {
        let mut plugin = self.load_plugin(id)?;
        plugin.link_checked(&mut LinkContext::default())?;
        plugin.init_checked()?;
        Ok(plugin)
    }
}

impl PluginSource<WasmPlugin> for WasmSource {
    fn load(&self, id: &PluginId) -> Result<WasmPlugin, BoxError> {
        Ok(self.load_plugin(id)?)
    }
}

/// Parse (text), validate and compile on the shared engine. `name` (a path,
/// usually) is named in the error messages.
fn compile(bytes: &[u8], name: Option<&str>) -> Result<Module, LoadError> {
    let binary: std::borrow::Cow<'_, [u8]> = if bytes.starts_with(b"\0asm") {
        std::borrow::Cow::Borrowed(bytes)
    } else {
        // With a path the parser's message reads `--> path:line:column`
        // instead of `--> <anon>:line:column`.
        match wat::Parser::new().parse_bytes(name.map(Path::new), bytes) {
            Ok(b) => b,
            Err(e) => return Err(LoadError::Parse { message: e.to_string() }),
        }
    };
    let named = |e: wasmtime::Error| match name {
        Some(name) => format!("`{name}`: {e:#}"),
        None => format!("{e:#}"),
    };
    Module::validate(engine(), &binary).map_err(|e| LoadError::Validate { message: named(e) })?;
    Module::from_binary(engine(), &binary).map_err(|e| LoadError::Compile { message: named(e) })
}

fn classify_exports(id: &PluginId, module: &Module) -> Result<Vec<Export>, LoadError> {
    let mut exports = Vec::new();
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
            Some(signature) => {
                exports.push(Export { export: name.to_owned(), full: format!("{id}.{name}"), signature })
            }
            None => tracing::warn!(
                plugin = %id,
                export = name,
                ty = %describe(&ty),
                "ignoring WebAssembly export that is not a scalar function ((i32|i64|f32|f64)* -> one result)"
            ),
        }
    }
    if exports.is_empty() {
        return Err(LoadError::NoFunctions);
    }
    Ok(exports)
}

fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => f.to_string(),
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
