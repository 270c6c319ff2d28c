//! WebAssembly scalar-function plugins for `cutover`, on wasmtime:
//! hot-reloadable, sandboxed, and fast.
//!
//! # The plugin format
//!
//! - A plugin is one WebAssembly module, in text (`.wat`) or binary
//!   (`.wasm`) form; loaded from a file ([`WasmSource::from_file`]) its id is
//!   the file stem.
//! - Every export whose parameters and result are `i32`/`i64`/`f32`/`f64`,
//!   with exactly one result (other than `init`), is a scalar function named
//!   `<id>.<export>`, applied row by row over equally long argument columns
//!   (Arrow `Int32Array`/`Int64Array`/`Float32Array`/`Float64Array`). If any
//!   argument is null at a row, the result is null there (the function is
//!   not called for that row).
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
//!
//! # Lifecycle
//!
//! [`WasmSource`] implements `cutover::plugin::PluginSource<WasmPlugin>` and
//! [`WasmPlugin`] implements `cutover::plugin::Plugin`, so a reload
//! transaction drives a generation through:
//!
//! 1. **load** — read, parse text, validate, compile (Cranelift) and
//!    classify exports. This is the expensive step and runs on the reloading
//!    thread, before any cutover; callers never compile.
//! 2. **link** — check every import against the granted [`HostFn`]s, build
//!    an `InstancePre`, register `<id>.<export>` in the `LinkContext`.
//! 3. **init** — create [`WasmLimits::prewarm_instances`] instances, running
//!    `init` on each.
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
//! cached `TypedFunc`s. A call checks one out, runs without holding any
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
//!   past it returns -1;
//! - no host imports unless granted ([`WasmSource::grant`]); a module
//!   importing anything else fails to link ([`LoadError::ImportNotGranted`]).
//!
//! A trap (`unreachable`, out-of-bounds, division by zero, stack overflow,
//! time budget) fails only that call, with a [`CallError`] naming the
//! function and row; the instance is discarded; the host and other calls
//! are unaffected. Library code does not panic on plugin input.
//!
//! # Example
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

mod engine;
mod error;
mod function;
mod kernel;
mod limits;
mod plugin;
mod pool;
mod slot_fn;
mod source;

pub use engine::{shared_engine, TICK};
pub use error::{CallError, LoadError};
pub use function::{NativeFn, NativeValue, ScalarPluginFn, Signature, ValueType};
pub use limits::WasmLimits;
pub use plugin::{WasmFunction, WasmPlugin};
pub use slot_fn::SlotFunction;
pub use source::{HostFn, WasmSource};
/// The value type of [`HostFn`] arguments and results (re-exported from wasmtime).
pub use wasmtime::Val;
