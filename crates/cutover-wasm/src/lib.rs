//! WebAssembly scalar-function plugins for `cutover`, on wasmtime:
//! hot-reloadable, sandboxed, and fast.
//!
//! A plugin is a WebAssembly **component** written in any language that
//! targets the component model (Rust: `wit-bindgen`, see `plugins/README.md`
//! in the repository) and called once per batch with whole Arrow columns, or
//! a **core module** (text `.wat` or binary `.wasm`) with numeric exports
//! called once per row. Both are served by the same [`WasmPlugin`] type,
//! through the same [`ScalarPluginFn`] handles and the same reload
//! transaction. Loaded from a file ([`WasmSource::from_file`]), the plugin
//! id is the file stem; which format a file holds is read from its binary
//! header (the *layer* field: 0 module, 1 component; text is parsed first),
//! never from its name.
//!
//! # Components
//!
//! A component is of world `cutover:plugin/scalar-plugin`, the WIT package
//! `cutover:plugin@0.1.0` shipped as `wit/cutover-plugin.wit`:
//!
//! ```text
//! interface scalar {
//!     use types.{column, signature};
//!     functions: func() -> list<signature>;
//!     init: func(config: string) -> result<_, string>;
//!     call: func(name: string, args: list<column>, rows: u32) -> result<column, string>;
//! }
//! world scalar-plugin {
//!     import host;      // log: func(level: level, message: string)
//!     export scalar;
//! }
//! ```
//!
//! - **`functions`** is called once per generation, at link. Each
//!   `signature { name, params, returns, deterministic }` becomes a function
//!   `<id>.<name>` with a [`Signature`]; a name that is empty, repeated or
//!   contains `.` fails the load ([`LoadError::FunctionName`]), and so does
//!   an empty list, a trap or running past [`WasmLimits::init_timeout`]
//!   ([`LoadError::Functions`]).
//! - **`init(config)`** runs on every new instance before any call, with the
//!   source's configuration text ([`WasmSource::with_config`], empty by
//!   default). `err(msg)` fails the load ([`LoadError::InitRefused`]); the old
//!   generation keeps serving.
//! - **`call(name, args, rows)`** gets one column per parameter, each of
//!   `rows` rows and the declared type, and returns one column. The plugin
//!   sees nulls through each column's validity and decides its own nulls.
//!   `err(msg)` fails the call ([`CallError::Plugin`]). The host checks the
//!   result: the declared type, `rows` rows, a validity bitmap of at least
//!   `⌈rows / 8⌉` bytes, offsets with `rows + 1` entries that start at 0,
//!   never decrease and stay within the data, and UTF-8 in `utf8` columns
//!   (Arrow's rule: every row is UTF-8). Anything else is
//!   [`CallError::BadResult`], naming the plugin, the function and the fault.
//!
//! The type mapping ([`ValueType`]), both directions, one call per batch:
//!
//! | WIT `data-type` | `column` case | Arrow array | [`ValueType`] | core module |
//! |---|---|---|---|---|
//! | `boolean` | `boolean(boolean-column)` | `BooleanArray` | `Boolean` | — |
//! | `int32` | `int32(int32-column)` | `Int32Array` | `Int32` | `i32` |
//! | `int64` | `int64(int64-column)` | `Int64Array` | `Int64` | `i64` |
//! | `float32` | `float32(float32-column)` | `Float32Array` | `Float32` | `f32` |
//! | `float64` | `float64(float64-column)` | `Float64Array` | `Float64` | `f64` |
//! | `utf8` | `utf8(varlen-column)` | `StringArray` | `Utf8` | — |
//! | `binary` | `binary(varlen-column)` | `BinaryArray` | `Binary` | — |
//!
//! Validity is Arrow's bitmap (row `i` is valid when bit `i % 8` of byte
//! `i / 8` is set), `none` when no row is null. Arguments are lowered
//! straight from the Arrow buffers into the guest's memory (one copy each);
//! only `boolean` values (bits → bytes), the offsets of a sliced varlen array
//! (rebased to 0) and a validity bitmap not starting on a byte boundary are
//! materialized first. Results are copied once out of the guest's memory and
//! become Arrow buffers without another copy.
//!
//! **Sandbox.** A component may import `cutover:plugin/host@0.1.0` (`log`
//! goes to `tracing`, target `cutover_wasm::plugin`, with a `plugin` field)
//! and WASI preview 2 (`wasmtime-wasi`), because Rust's `wasm32-wasip2`
//! target imports it: with no preopened directories, no environment, no
//! arguments, no network (TCP, UDP and name lookup refused), stdin closed,
//! and stdout/stderr going to the log line by line (info and warn). A trap
//! error quotes the plugin's last stderr lines (a Rust panic's message).
//! Importing anything else fails the load ([`LoadError::ImportNotProvided`]),
//! as does a component of another world ([`LoadError::WrongWorld`]).
//!
//! # Core modules
//!
//! - Every export whose parameters and result are `i32`/`i64`/`f32`/`f64`,
//!   with exactly one result (other than `init`), is a scalar function named
//!   `<id>.<export>`, applied row by row over equally long argument columns
//!   (Arrow `Int32Array`/`Int64Array`/`Float32Array`/`Float64Array`). If any
//!   argument is null at a row, the result is null there (the function is
//!   not called for that row). Their signatures are deterministic.
//! - An optional export `init: () -> i32` runs when a generation
//!   initializes; a non-zero result, a trap, or running past
//!   [`WasmLimits::init_timeout`] fails the load and the old generation keeps
//!   serving. (`init` runs once per *instance*, see below, so every instance
//!   starts from the same state; the load fails if any prewarmed instance's
//!   `init` fails.)
//!
//! ## `init`: its time budget, and how often it runs
//!
//! - **Budget**: 5 s per run by default ([`WasmLimits::init_timeout`], set
//!   with [`WasmLimits::init_timeout`](WasmLimits::init_timeout()) on
//!   [`WasmSource::with_limits`]). An `init` that runs past it (an infinite
//!   loop, say) is stopped by epoch interruption and the load fails with
//!   [`LoadError::InitTimeout`]; the old generation keeps serving.
//! - **Once per prewarmed instance**: the init step of a (re)load creates
//!   [`WasmLimits::prewarm_instances`] instances (default: the available
//!   cores, 2 to 16) one after another, and runs `init` in each. So the init
//!   phase of a reload takes about `prewarm_instances × (instantiation +
//!   init)`, and the budget applies to each run, not to their sum: with 16
//!   instances and an `init` of 1 s, a reload spends 16 s initializing
//!   before its cutover (the old generation serves meanwhile).
//! - **And once per instance created later**: when more threads call at
//!   once than there are idle instances, the extra instance is created on
//!   the calling thread, which runs `init` too (under the same budget)
//!   before its call. Keep `init` short (microseconds to milliseconds), or
//!   raise `prewarm_instances` to the peak number of concurrent callers.
//! - `init` must be deterministic enough that every instance ends up in an
//!   equivalent state: instances share nothing, and any instance may serve
//!   any call.
//! - Exports of any other shape are ignored with a `tracing` warning.
//! - Imports must be granted host functions ([`WasmSource::grant`]).
//!
//! # Lifecycle
//!
//! [`WasmSource`] implements `cutover::plugin::PluginSource<WasmPlugin>` and
//! [`WasmPlugin`] implements `cutover::plugin::Plugin`, so a reload
//! transaction drives a generation through:
//!
//! 1. **load** — read, parse text, tell module from component, validate,
//!    compile (Cranelift); classify a module's exports, check that a
//!    component exports the `scalar` interface. This is the expensive step
//!    and runs on the reloading thread, before any cutover; callers never
//!    compile.
//! 2. **link** — a module: check every import against the granted
//!    [`HostFn`]s; a component: link it against `host` and WASI, type-check
//!    its exports, instantiate it once and ask `functions`. Build an
//!    `InstancePre`; register `<id>.<name>` in the `LinkContext`.
//! 3. **init** — create [`WasmLimits::prewarm_instances`] instances, running
//!    `init` (a component: `init(config)`) on each.
//! 4. **cutover** — the slot points at the new generation; new calls use it.
//! 5. **drain**, then **shutdown** frees the old generation's instances; its
//!    module is freed when the last `Arc` (slot, leases, handles) drops.
//!
//! If the drain deadline passes, [`Plugin::interrupt`](cutover::plugin::Plugin::interrupt)
//! (the *forced* rung) makes every call still running on that generation
//! trap within about one epoch tick (1 ms) and return
//! [`CallError::Interrupted`]; later calls on it fail the same way at once;
//! the new generation is unaffected.
//!
//! # Concurrency: the instance pool
//!
//! A wasmtime `Store` is single-threaded, so each generation keeps a pool of
//! instances, each with its own `Store` (own linear memory and globals) and
//! cached typed functions. A call checks one out, runs without holding any
//! lock, and checks it back in; the free list is sharded per core so
//! concurrent calls do not serialize (see the `pool` module docs).
//!
//! How many instances exist and when:
//! - at init, [`WasmLimits::prewarm_instances`] (default: available cores,
//!   clamped to 2..=16) are created, before the cutover;
//! - when more threads call at once than there are idle instances, the
//!   extra callers create one more each (on their path; instantiation is
//!   microseconds, no compilation), so the count tracks peak concurrency;
//! - at most [`WasmLimits::max_idle_instances`] (default 4 × prewarm) are
//!   kept idle; extra ones are dropped when checked in;
//! - an instance whose call trapped, timed out or was interrupted is dropped,
//!   never reused;
//! - shutdown drops them all.
//!
//! Instances do not share memory: a plugin must not rely on state written by
//! one call being visible to the next (as with any pooled sandbox).
//!
//! # Sandboxing and limits
//!
//! Per plugin, via [`WasmSource::with_limits`] ([`WasmLimits`]):
//! - a time budget per call (default 1 s; one call = one `invoke` over a
//!   batch), enforced by epoch interruption on a shared engine whose epoch a
//!   background thread advances every millisecond →
//!   [`CallError::Timeout`];
//! - a linear-memory limit per instance (default 64 MiB): a larger initial
//!   memory fails the load ([`LoadError::MemoryTooLarge`]), `memory.grow`
//!   past it returns -1 (a component whose allocation then fails traps:
//!   [`CallError::OutOfMemory`]);
//! - a module gets no host imports unless granted ([`WasmSource::grant`]);
//!   importing anything else fails to link ([`LoadError::ImportNotGranted`]);
//!   a component gets `host` and the WASI sandbox above, nothing else.
//!
//! A trap (`unreachable` — a Rust panic —, out-of-bounds, division by zero,
//! stack overflow, time budget, memory) fails only that call, with a
//! [`CallError`] naming the function (and, for modules, the row); the
//! instance is discarded; the host and other calls are unaffected. A
//! component's `err` or invalid result fails the call but keeps the
//! instance. Library code does not panic on plugin input.
//!
//! # Errors
//!
//! Loading returns a [`LoadError`] (the reload transaction reports the step:
//! load, link or init; the old generation keeps serving); a call returns a
//! [`CallError`]. Both say what happened and what to do.
//!
//! # Example: a component written in Rust
//!
//! The plugin (a crate of `plugins/`, built with `cargo build --release
//! --target wasm32-wasip2`; `plugins/README.md` walks through it):
//!
//! ```ignore
//! use cutover_guest::{export_plugin, signature, unknown_function, Args, Column, DataType, Plugin, Signature, View};
//!
//! struct Text;
//!
//! impl Plugin for Text {
//!     fn functions() -> Vec<Signature> {
//!         vec![signature("upper", &[DataType::Utf8], DataType::Utf8)]
//!     }
//!     fn call(name: &str, args: Vec<Column>, _rows: usize) -> Result<Column, String> {
//!         match name {
//!             "upper" => Ok(args.utf8(0)?.map(|s| s.to_uppercase())), // null in, null out
//!             _ => Err(unknown_function(name)),
//!         }
//!     }
//! }
//!
//! export_plugin!(Text);
//! ```
//!
//! The host, loading it and hot-reloading it through the reload transaction:
//!
//! ```no_run
//! use std::sync::Arc;
//! use arrow_array::{ArrayRef, StringArray};
//! use cutover::{host::{Host, ReloadOptions}, PluginId};
//! use cutover_wasm::{WasmPlugin, WasmSource};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host: Host<WasmPlugin> = Host::new();
//! let source = WasmSource::from_file("plugins/target/wasm32-wasip2/release/text.wasm").with_config("");
//! host.add(PluginId::new("text"), &source)?; // compile, link, functions(), init(config)
//!
//! let names: ArrayRef = Arc::new(StringArray::from(vec![Some("ada"), None]));
//! let text = host.lease_str("text").unwrap();
//! let upper = text.call("text.upper", &[names])?; // ["ADA", null], in one call
//! assert_eq!(text.signature("text.upper").unwrap().to_string(), "(utf8) -> utf8");
//! drop(text);
//!
//! // After rebuilding the plugin: the new version is compiled and
//! // initialized first; calls in flight finish on the old one.
//! host.reload(&PluginId::new("text"), &source, &ReloadOptions::default())?;
//! # let _ = upper; Ok(()) }
//! ```
//!
//! # Example: a core module
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Array, ArrayRef, Int64Array};
//! use cutover::PluginId;
//! use cutover_wasm::{ScalarPluginFn, WasmSource};
//!
//! let source = WasmSource::from_wat(r#"(module
//!     (func (export "init") (result i32) i32.const 0)
//!     (func (export "mul3") (param i64) (result i64)
//!         local.get 0 i64.const 3 i64.mul))"#);
//! let plugin = Arc::new(source.load_ready(&PluginId::new("math")).unwrap());
//! assert_eq!(plugin.functions(), ["math.mul3"]);
//!
//! let col: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(7)]));
//! let out = plugin.call("math.mul3", &[col.clone()]).unwrap();
//! let out = out.as_any().downcast_ref::<Int64Array>().unwrap();
//! assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(3), None, Some(21)]);
//!
//! // The same through the host-facing trait:
//! let mul3 = plugin.function("math.mul3").unwrap();
//! assert_eq!(mul3.invoke(&[col], 3).unwrap().len(), 3);
//! ```

mod component;
mod engine;
mod error;
mod function;
mod kernel;
mod limits;
mod module;
mod plugin;
mod pool;
mod slot_fn;
mod source;
mod store;

pub use engine::{shared_engine, TICK};
pub use error::{CallError, LoadError};
pub use function::{NativeFn, NativeValue, ScalarPluginFn, Signature, ValueType};
pub use limits::WasmLimits;
pub use plugin::{PluginFormat, WasmFunction, WasmPlugin};
pub use slot_fn::SlotFunction;
pub use source::{HostFn, WasmSource};
/// The value type of [`HostFn`] arguments and results (re-exported from wasmtime).
pub use wasmtime::Val;
