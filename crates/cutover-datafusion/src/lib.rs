//! cutover plugins as Apache DataFusion scalar UDFs: functions that reload
//! while queries run, with each query pinned to one generation.
//!
//! [`HostFunctions`] takes a `cutover::host::Host` whose plugins provide
//! scalar functions ([`FunctionPlugin`]: WebAssembly plugins,
//! [`cutover_wasm::WasmPlugin`], components and core modules alike, and
//! native Rust functions, [`NativePlugin`]) and registers them in DataFusion
//! `SessionContext`s: the
//! function `<plugin>.<name>` is the SQL function `<plugin>_<name>`
//! ([`sql_name`]). Reloads, rollbacks, additions and removals committed by
//! the host show up in those sessions with no action by their users.
//!
//! # Guarantees
//!
//! A query is *planned* when DataFusion analyzes its logical plan: in
//! `DataFrame::collect`, `execute_stream`, `create_physical_plan` and the
//! like (or [`create_physical_plan`], which also reports what was pinned).
//! Building a `DataFrame` with `SessionContext::sql` only parses and plans
//! the SQL; it holds no generation until it is executed.
//!
//! * **One generation per query.** A query runs every batch of every
//!   plugin function it calls on one generation per plugin: the one current
//!   when the query was planned. A reload during the query does not change
//!   its results. A query planned after a reload returned (in fact, as soon
//!   as the reload has cut over) runs on the new generation.
//! * **Drain = queries.** A retired generation drains when the last query
//!   planned on it ends, however it ends: finishing, failing, being
//!   cancelled (its future or task dropped), or having its stream dropped
//!   unfinished. Only then does the host shut it down and finalize it
//!   `Removed`.
//! * **A query holds what it really holds.** The pin is a lease owned by
//!   the pinned functions in the query's plans: the analyzed logical plan,
//!   the physical plan and the streams executing it. Dropping the last of
//!   them releases it, on the spot (parts of a plan that DataFusion runs on
//!   tasks of their own let go when those tasks are cancelled). No timers,
//!   no polling.
//!   [`HostFunctions::queries_in_flight`] counts them per generation.
//! * **Signatures.** If a reload changes a function's signature, queries
//!   planned before keep the old one; new queries are planned against the
//!   new one. (A query whose SQL was planned against the old signature but
//!   analyzed after the reload fails to plan with
//!   [`Error::SignatureChanged`]; run it again.)
//! * **Removal.** After a removal, new queries do not know the plugin's
//!   functions: they fail to plan with DataFusion's unknown-function error,
//!   which names the function. Queries already running finish on the
//!   removed generation.
//!
//! The host's reload (or removal) returns when the old generation has
//! drained, so it waits for the queries pinned on it. Its drain deadline and
//! escalation ladder (`cutover::host::ReloadOptions`) apply to queries as
//! they do to calls: past the deadline, the *cancel* rung makes the pinned
//! functions fail the query ([`Error::Cancelled`]) at its next batch, and
//! the *force* rung interrupts WebAssembly calls. Give reloads a deadline
//! longer than your longest query if queries must always finish.
//!
//! # Types
//!
//! A plugin function's signature ([`cutover_wasm::Signature`]) is its
//! DataFusion signature: parameter and result types map to Arrow's
//! `Boolean`, `Int32`, `Int64`, `Float32`, `Float64`, `Utf8` and `Binary`
//! ([`cutover_wasm::ValueType::data_type`]), and the function is always
//! called with columns of exactly those types. Results are nullable; nulls
//! go in as Arrow validity and the plugin decides its own (components), or
//! a null argument makes a null result (core modules, native functions).
//! SQL arguments of other types are cast to the declared ones when the
//! conversion is one SQL makes implicitly:
//!
//! | declared | accepted (cast to the declared type) |
//! |---|---|
//! | `int32`, `int64` | any integer (signed or unsigned); a value out of range fails the query |
//! | `float32`, `float64` | any integer, float or decimal |
//! | `utf8` | `Utf8`, `LargeUtf8`, `Utf8View` (as Parquet files are read) |
//! | `binary` | `Binary`, `LargeBinary`, `BinaryView`, `FixedSizeBinary` |
//! | `boolean` | `Boolean` |
//!
//! `NULL` converts to every type, a dictionary-encoded argument as its
//! values do. Anything else (a string to a number, a float to an integer,
//! a number to a string, ...) fails to plan with [`Error::ArgumentType`],
//! naming the function, the argument and the signature: write the `CAST`
//! you mean.
//!
//! A function declared deterministic (core modules' and native functions
//! always are; a component says so per function) is *immutable* to
//! DataFusion: the optimizer may evaluate a call on constants once, at
//! planning (on the pinned generation). One that is not is *volatile*:
//! never folded, and given a full column (one row per input row, constants
//! repeated) even when all its arguments are constants.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::{mpsc, Arc};
//! use cutover::{host::{DrainOutcome, Host, HostChange, ReloadOptions}, plugin::BoxError, PluginId};
//! use cutover_datafusion::{HostFunctions, NativePlugin};
//! use cutover_wasm::NativeFn;
//! use datafusion::{arrow::array::{AsArray, RecordBatch}, arrow::datatypes::Int64Type};
//! use datafusion::{physical_plan::collect, prelude::SessionContext};
//!
//! // Version k of the plugin `math`: mul3(x) = 3x + k.
//! fn math(k: i64) -> impl Fn(&PluginId) -> Result<NativePlugin, BoxError> + Send + Sync {
//!     move |_| Ok(NativePlugin::new([NativeFn::unary("math.mul3", move |x: i64| 3 * x + k)]))
//! }
//! fn values(batches: &[RecordBatch]) -> Vec<i64> {
//!     batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect()
//! }
//!
//! let host = Arc::new(Host::new());
//! let id = PluginId::new("math");
//! host.add(id.clone(), &math(0))?;
//!
//! let ctx = SessionContext::new();
//! HostFunctions::new(Arc::clone(&host)).register(&ctx);
//!
//! // Plan a query: it pins generation 1 of `math`.
//! let sql = "SELECT math_mul3(value) FROM generate_series(1, 3)";
//! let planned = ctx.sql(sql).await?.create_physical_plan().await?;
//!
//! // Reload. The reload returns once generation 1 has drained, so run it on
//! // a thread of its own, and learn of the cutover from the host.
//! let (cut_over, on_cutover) = mpsc::channel();
//! let _watch = host.subscribe(move |c: &HostChange| { let _ = cut_over.send(c.generation); });
//! let reload = std::thread::spawn({
//!     let (host, id) = (Arc::clone(&host), id.clone());
//!     move || host.reload(&id, &math(1000), &ReloadOptions::default())
//! });
//! assert_eq!(on_cutover.recv()?, Some(2));
//!
//! // New queries run on generation 2...
//! assert_eq!(values(&ctx.sql(sql).await?.collect().await?), [1003, 1006, 1009]);
//! // ...the query planned before still runs on generation 1...
//! assert_eq!(values(&collect(planned, ctx.task_ctx()).await?), [3, 6, 9]);
//! // ...and, now that it has ended (and its plan is dropped), generation 1
//! // has drained: the reload returns.
//! assert_eq!(reload.join().unwrap()?.outcome, DrainOutcome::Drained);
//! # Ok(()) }
//! ```
//!
//! `cargo run --release -p cutover-datafusion --example reload_mid_query`
//! runs a long query while the function is reloaded under it.
//!
//! # How a query is pinned (the design, and why)
//!
//! Each session's function registry holds, per plugin function, a *live*
//! UDF made from the plugin's current generation. It holds no lease: it
//! carries that generation's signature (so the SQL planner types the query
//! consistently) and a way to pin the plugin. On every change the host
//! commits, [`HostFunctions`] (subscribed with `Host::subscribe`, told
//! after the cutover and before the reload waits for its drain) replaces the
//! session's live UDFs with ones made from the new generation, and removes
//! those of removed plugins.
//!
//! The analyzer rule [`PinGenerations`], which DataFusion runs once on the
//! whole logical plan of a query (subqueries and inlined views included)
//! before the optimizer and the physical planner, rewrites every live UDF
//! into a *pinned* UDF. For each plugin the query uses it takes one lease
//! on the generation current now, shared by all of that plugin's functions
//! in the query; the pinned UDFs own it. From there DataFusion does the
//! rest: the pinned UDF is an `Arc` inside the plan's expressions, cloned
//! into the physical plan's `ScalarFunctionExpr`s and into the streams that
//! evaluate them; when the last of those is dropped the lease drops and the
//! generation can drain. A pinned UDF checks that its generation still has
//! the signature the SQL was planned with, which catches a reload landing
//! between SQL planning and analysis.
//!
//! The alternatives, and why not:
//!
//! * *Register UDFs that hold a lease* (re-registered on every reload): a
//!   session's registry, and every `SessionState` snapshot and `DataFrame`
//!   cloned from it, would hold every plugin's generation, used or not; a
//!   reload would wait for idle sessions and dropped-but-cloned states, and
//!   in-flight counts would mean nothing.
//! * *A lease per batch* (what `cutover_wasm::SlotFunction` does for single
//!   calls): the batches of one query could straddle a reload and mix
//!   generations.
//! * *Pin in the physical plan* (a physical optimizer rule): the logical
//!   optimizer folds constant calls (`math_mul3(2)`) before that, which would
//!   run outside the pin, on whatever generation was current.
//! * *Pin when the SQL is planned* (a custom `ContextProvider`): not
//!   reachable through `SessionContext`, and the DataFrame API and views
//!   would escape it; a `DataFrame` would also hold a generation from
//!   `ctx.sql()` on, executed or not.
//! * *Pin each function on its own*: two functions of one plugin in one
//!   query could run on different generations; the rule pins once per
//!   plugin per query.
//!
//! A live UDF evaluated outside an analyzed plan (e.g. an expression built
//! with `SessionContext::create_physical_expr`, which skips the analyzer)
//! runs each batch on the generation current when that batch starts.
//!
//! # Cost
//!
//! Pinning costs one registry lookup and one lease per plugin per query, at
//! planning. Per batch, a pinned function adds a cancellation check and a
//! function lookup by name to the plugin's own call: within a few percent
//! of the same function registered as a plain DataFusion UDF (see
//! `BENCHMARKS.md`).

#![warn(missing_docs)]

mod error;
mod functions;
mod pin;
mod plugin;
mod rule;
mod types;
mod udf;

pub use error::Error;
pub use functions::{sql_name, FunctionInfo, HostFunctions};
pub use plugin::{FunctionPlugin, NativePlugin};
pub use rule::{create_physical_plan, pinned_generations, PinGenerations, PinnedPlan};
