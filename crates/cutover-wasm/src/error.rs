//! Typed errors: [`LoadError`] for the load/link/init steps, [`CallError`] for
//! calls. Each message says what happened and, where useful, what to do.

use std::time::Duration;

use arrow_schema::DataType;

/// Why a WebAssembly plugin generation could not be loaded, linked or
/// initialized. The old generation (if any) keeps serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The plugin file could not be read.
    #[error("cannot read WebAssembly plugin file `{path}`: {source}")]
    Io {
        /// The file that was read.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are neither a WebAssembly binary (`\0asm` magic) nor valid
    /// WebAssembly text (a `(module …)` or `(component …)`).
    #[error("not valid WebAssembly text (.wat) or binary (.wasm): {message}")]
    Parse {
        /// The parser's message (with line and column for text).
        message: String,
    },
    /// The binary failed WebAssembly validation (a core module, or a
    /// component with its core modules).
    #[error("the WebAssembly {format} failed validation: {message}")]
    Validate {
        /// `module` or `component`.
        format: crate::PluginFormat,
        /// The validator's message.
        message: String,
    },
    /// The binary validated but could not be compiled by wasmtime.
    #[error("the WebAssembly {format} could not be compiled: {message}")]
    Compile {
        /// `module` or `component`.
        format: crate::PluginFormat,
        /// The compiler's message.
        message: String,
    },
    /// The module imports something the host did not grant.
    #[error(
        "the WebAssembly module imports `{module}.{name}` ({kind}), which the host does not grant; \
         plugins get no host imports unless granted with `WasmSource::grant`"
    )]
    ImportNotGranted {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// What kind of item is imported (e.g. a function type).
        kind: String,
    },
    /// Linking (pre-instantiation) failed for another reason, e.g. a granted
    /// host function with a different type than the import.
    #[error("the WebAssembly module could not be linked: {message}")]
    Link {
        /// The linker's message.
        message: String,
    },
    /// The component is not of world `cutover:plugin/scalar-plugin`: it does
    /// not export the `cutover:plugin/scalar@0.1.0` interface, or exports it
    /// with other functions or types.
    #[error(
        "the component is not a cutover plugin (world `cutover:plugin/scalar-plugin` of \
         wit/cutover-plugin.wit): {message}"
    )]
    WrongWorld {
        /// What is wrong, with what the component exports.
        message: String,
    },
    /// The component imports an interface (or function) the host does not
    /// provide.
    #[error(
        "the component imports `{name}`, which the host does not provide; plugins may import \
         `cutover:plugin/host@0.1.0` and WASI preview 2 (wasi:cli, wasi:clocks, wasi:filesystem, wasi:io, \
         wasi:random, wasi:sockets; with no files, environment, arguments or network), nothing else: {message}"
    )]
    ImportNotProvided {
        /// The import's name, e.g. `example:secrets/vault@1.0.0`.
        name: String,
        /// The linker's message.
        message: String,
    },
    /// The component's `functions` trapped, ran past its budget, or returned
    /// an unusable list.
    #[error("the plugin's `functions` {message}")]
    Functions {
        /// What went wrong.
        message: String,
    },
    /// A function name returned by the component's `functions` is empty,
    /// repeated, or contains `.`.
    #[error(
        "the plugin's `functions` returned the name `{name}`, which {problem}; names must be \
         non-empty, unique within the plugin and contain no `.` (each is served as `<plugin id>.<name>`)"
    )]
    FunctionName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The module exports no scalar function (`(i32|i64|f32|f64)* -> one of them`),
    /// or a component's `functions` returned an empty list.
    #[error(
        "the plugin provides no scalar function: a module must export at least one function whose \
         parameters and single result are i32/i64/f32/f64 (other than `init`); a component's \
         `functions` must return at least one signature"
    )]
    NoFunctions,
    /// A memory's initial size exceeds the plugin's memory limit.
    #[error("the module needs {required} bytes of linear memory initially, more than the limit of {limit} bytes")]
    MemoryTooLarge {
        /// Bytes the module needs at instantiation.
        required: u64,
        /// The configured limit ([`crate::WasmLimits::max_memory_bytes`]).
        limit: u64,
    },
    /// The `init` export has the wrong type.
    #[error("the export `init` must have type `() -> i32`, found {found}")]
    InitSignature {
        /// The type found.
        found: String,
    },
    /// The `init` export returned a non-zero code.
    #[error("the plugin's `init` returned {code} (non-zero means failure)")]
    Init {
        /// The code `init` returned.
        code: i32,
    },
    /// A component's `init(config)` returned `err(message)`.
    #[error("the plugin's `init` refused its configuration: {message}")]
    InitRefused {
        /// The message the plugin returned.
        message: String,
    },
    /// The `init` export trapped.
    #[error("the plugin's `init` trapped: {message}")]
    InitTrap {
        /// The trap description.
        message: String,
    },
    /// The `init` export ran longer than its budget (e.g. an infinite loop).
    #[error("the plugin's `init` ran longer than its budget of {budget:?} and was stopped")]
    InitTimeout {
        /// The budget ([`crate::WasmLimits::init_timeout`]).
        budget: Duration,
    },
    /// Creating an instance failed (e.g. a start function trapped).
    #[error("the plugin could not be instantiated: {message}")]
    Instantiate {
        /// The instantiation error.
        message: String,
    },
    /// The lifecycle hooks were called out of order (`init` before `link`).
    #[error("plugin lifecycle misuse: {0}")]
    Lifecycle(&'static str),
}

/// Why a call of a scalar plugin function failed. A failed call never affects
/// other calls or the host; a trapped instance is discarded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No function of that name.
    #[error("unknown function `{name}`; the plugin provides: {available}")]
    UnknownFunction {
        /// The name asked for.
        name: String,
        /// Comma-separated names of the functions available.
        available: String,
    },
    /// Wrong number of argument columns.
    #[error("`{function}` takes {expected} argument(s), got {got}")]
    ArgCount {
        /// Function name.
        function: String,
        /// Expected number of arguments.
        expected: usize,
        /// Number given.
        got: usize,
    },
    /// An argument column has the wrong Arrow type.
    #[error("argument {index} of `{function}` must be {expected}, got {got}")]
    ArgType {
        /// Function name.
        function: String,
        /// Zero-based argument index.
        index: usize,
        /// The Arrow type expected.
        expected: DataType,
        /// The Arrow type given.
        got: DataType,
    },
    /// Argument columns are not all `rows` long.
    #[error("argument {index} of `{function}` has {got} rows, expected {expected}")]
    LengthMismatch {
        /// Function name.
        function: String,
        /// Zero-based argument index.
        index: usize,
        /// Rows expected.
        expected: usize,
        /// Rows given.
        got: usize,
    },
    /// The function's signature changed (a handle made for one signature was
    /// used after a reload changed it).
    #[error("`{function}` changed signature in the current generation: {message}")]
    SignatureChanged {
        /// Function name.
        function: String,
        /// What changed.
        message: String,
    },
    /// The WebAssembly code trapped (`unreachable`, a Rust panic,
    /// out-of-bounds access, division by zero, stack overflow, …). The
    /// instance is discarded.
    #[error("`{function}` trapped{}: {message}", row.map(|r| format!(" at row {r}")).unwrap_or_default())]
    Trap {
        /// Function name.
        function: String,
        /// The row whose call trapped (core modules, called per row); `None`
        /// for components (called once per batch).
        row: Option<usize>,
        /// The trap description.
        message: String,
    },
    /// The call needed more linear memory than the limit allows (a component
    /// whose allocation failed traps; this names the cause). The instance is
    /// discarded.
    #[error(
        "`{function}` ran out of memory: it tried to grow its linear memory to {requested} bytes, over the \
         limit of {limit} bytes (WasmLimits::max_memory_bytes)"
    )]
    OutOfMemory {
        /// Function name.
        function: String,
        /// The memory size asked for, in bytes.
        requested: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// A component's `call` returned `err(message)`.
    #[error("`{function}` failed in the plugin: {message}")]
    Plugin {
        /// Function name.
        function: String,
        /// The message the plugin returned.
        message: String,
    },
    /// A component returned a result that breaks the contract: another type
    /// than declared, another number of rows, malformed offsets or validity,
    /// or bytes that are not UTF-8 in a `utf8` column.
    #[error("`{function}` returned an invalid result: {message}")]
    BadResult {
        /// Function name.
        function: String,
        /// What was wrong.
        message: String,
    },
    /// A component call takes at most `u32::MAX` rows.
    #[error("`{function}` was called with {rows} rows; a component call takes at most 4294967295")]
    TooManyRows {
        /// Function name.
        function: String,
        /// Rows asked for.
        rows: usize,
    },
    /// The call ran longer than its time budget and was stopped.
    #[error("`{function}` ran longer than its budget of {budget:?} and was stopped")]
    Timeout {
        /// Function name.
        function: String,
        /// The budget ([`crate::WasmLimits::call_timeout`]).
        budget: Duration,
    },
    /// The call was force-stopped because its generation was replaced and the
    /// drain deadline passed. Retrying reaches the new generation.
    #[error("`{function}` was interrupted: its plugin generation was replaced and the drain deadline passed; retry to reach the new generation")]
    Interrupted {
        /// Function name.
        function: String,
    },
    /// The plugin generation cannot serve (not initialized yet, or shut down).
    #[error("`{function}` is unavailable: {reason}")]
    Unavailable {
        /// Function name.
        function: String,
        /// Why.
        reason: &'static str,
    },
    /// A new instance was needed but could not be created.
    #[error("could not create an instance to run `{function}`: {message}")]
    Instantiate {
        /// Function name.
        function: String,
        /// The error.
        message: String,
    },
    /// A native function reported an error.
    #[error("`{function}` failed: {message}")]
    Native {
        /// Function name.
        function: String,
        /// The error.
        message: String,
    },
}

/// A wasmtime error's full message, prefixed with the source's name (a path,
/// usually) when it has one.
pub(crate) fn named(name: Option<&str>, e: wasmtime::Error) -> String {
    match name {
        Some(name) => format!("`{name}`: {e:#}"),
        None => format!("{e:#}"),
    }
}
