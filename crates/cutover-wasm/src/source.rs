//! Where generations come from: [`WasmSource`] (bytes, text or a file, with
//! limits, configuration text and granted host functions), the load step
//! (read → parse text → tell module from component → validate and compile),
//! and granted host functions ([`HostFn`]).

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cutover::plugin::{BoxError, LinkContext, PluginSource};
use cutover::PluginId;
use wasmtime::Val;

use crate::component::{self, ComponentGen};
use crate::error::LoadError;
use crate::function::ValueType;
use crate::limits::WasmLimits;
use crate::module::{self, ModuleGen};
use crate::plugin::{PluginFormat, WasmPlugin};

type HostBody = dyn Fn(&[Val], &mut [Val]) -> Result<(), BoxError> + Send + Sync;

/// A host function granted to core modules loaded from a [`WasmSource`]: the
/// only way a module gets imports. Modules importing anything not granted
/// fail to load with [`LoadError::ImportNotGranted`]. Host functions take and
/// return the numeric types only (`i32`, `i64`, `f32`, `f64`). (Components
/// import the fixed interfaces of `wit/cutover-plugin.wit` and WASI instead;
/// grants do not apply to them.)
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
/// magic, and a core module is told from a component by the binary header's
/// *layer* field (0: module, 1: component), for text after parsing.
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
    config: Arc<str>,
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
        Self { input, name: None, limits: WasmLimits::default(), grants: Arc::from(Vec::new()), config: Arc::from("") }
    }

    /// Give every generation loaded from this source the configuration text
    /// `config`: a component's `init(config)` receives it on every new
    /// instance (the default is the empty string). Core modules have no
    /// configuration and ignore it.
    pub fn with_config(mut self, config: impl Into<String>) -> Self {
        self.config = Arc::from(config.into());
        self
    }

    /// The configuration text passed to a component's `init` (empty when
    /// none was set).
    pub fn config(&self) -> &str {
        &self.config
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
    /// // A parse error: `i32.const` needs its operand.
    /// let source = WasmSource::from_wat("(module (func (export \"f\") (result i32) i32.const))")
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

    /// Grant a host function to core modules from this source.
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

    /// The load step: read, parse text, tell module from component, validate
    /// and compile; for a module, classify its exports; for a component,
    /// check that it exports the `scalar` interface. The result still needs
    /// [`Plugin::link`](cutover::plugin::Plugin::link) and
    /// [`Plugin::init`](cutover::plugin::Plugin::init) (the reload
    /// transaction calls them), or use [`load_ready`](Self::load_ready).
    pub fn load_plugin(&self, id: &PluginId) -> Result<WasmPlugin, LoadError> {
        let bytes: Cow<'_, [u8]> = match &self.input {
            Input::Bytes(b) => Cow::Borrowed(b),
            Input::File(path) => Cow::Owned(
                std::fs::read(path).map_err(|source| LoadError::Io { path: path.display().to_string(), source })?,
            ),
        };
        let binary = to_binary(&bytes, self.name())?;
        match format_of(&binary) {
            PluginFormat::Module => {
                let compiled = module::compile(&binary, self.name())?;
                let (module, functions) = ModuleGen::load(id, compiled, &self.limits, self.grants.clone())?;
                Ok(WasmPlugin::module(id.clone(), module, functions, self.limits.clone()))
            }
            PluginFormat::Component => {
                let compiled = component::compile(&binary, self.name())?;
                let component = ComponentGen::load(id, compiled, self.config.clone(), &self.limits)?;
                Ok(WasmPlugin::component(id.clone(), component, self.limits.clone()))
            }
        }
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

/// WebAssembly binary as is; text parsed (a module or a component). `name`
/// (a path, usually) is named in parse errors: `--> path:line:column`
/// instead of `--> <anon>:line:column`.
fn to_binary<'a>(bytes: &'a [u8], name: Option<&str>) -> Result<Cow<'a, [u8]>, LoadError> {
    if bytes.starts_with(b"\0asm") {
        return Ok(Cow::Borrowed(bytes));
    }
    wat::Parser::new().parse_bytes(name.map(Path::new), bytes).map_err(|e| LoadError::Parse { message: e.to_string() })
}

/// The format of a binary, by its header: `\0asm`, a 16-bit version, and a
/// 16-bit *layer*, 0 for core modules and 1 for components. Anything else is
/// treated as a module (validation then reports what is wrong).
pub(crate) fn format_of(binary: &[u8]) -> PluginFormat {
    match binary.get(6..8) {
        Some([1, 0]) => PluginFormat::Component,
        _ => PluginFormat::Module,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_read_from_the_header() {
        let module = to_binary(b"(module)", None).unwrap();
        let component = to_binary(b"(component)", None).unwrap();
        assert_eq!(format_of(&module), PluginFormat::Module);
        assert_eq!(format_of(&component), PluginFormat::Component);
        assert_eq!(format_of(b"\0asm"), PluginFormat::Module);
    }
}
