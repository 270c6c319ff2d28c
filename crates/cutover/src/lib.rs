//! Zero-downtime hot reload of plugins inside long-running programs.
//!
//! `cutover` swaps a plugin (a query function, a storage backend, a codec,
//! any `T`, trait objects included) while calls are running, so that:
//!
//! 1. **Cut over first, drain after.** Once a cutover returns, every new
//!    operation sees the new generation; operations already in flight finish
//!    on the generation they captured.
//! 2. **Count what in-flight work really holds, and be told when it is
//!    done.** Each operation holds a [`Lease`]; a retired generation's
//!    [`Drain`] is notified (blocking with a timeout, or as a runtime-agnostic
//!    `Future`) when the last lease is dropped, and only then is the old
//!    value dropped and its lifecycle `Removed`.
//! 3. **Cheap per call.** Taking and dropping a lease costs about half an
//!    `arc-swap` load on x86-64 Linux (the asymmetric-fence path, the
//!    default there: a plain load and store in a restartable sequence), and
//!    about one load elsewhere (the atomic path: one uncontended `fetch_add`
//!    each way); either way it writes no cache line shared with other
//!    callers (see [`LeasePath`] and `BENCHMARKS.md`).
//!
//! # The pieces
//!
//! * [`Slot<T>`]: one hot-swappable plugin. [`Slot::lease`] on the call
//!   path, [`Slot::replace`] for the cutover, returning a [`Drain`].
//! * [`Registry<K, T>`]: many slots by key, with lookup + lease per call;
//!   a [`RegistryReader`] keeps the key map's lease across one thread's
//!   lookups.
//! * [`CutoverBatch<T>`]: cutovers of many slots whose drains start
//!   together, sharing one barrier on the asymmetric-fence lease path
//!   ([`Registry::replace_many`] for a registry's plugins).
//! * [`lifecycle`]: the states `Loaded → Linked → Initialized → Active →
//!   Draining → Removed`, changed only by atomic transitions, and
//!   [`EpochFencedReload`], the original framework's reload driver.
//! * [`plugin`]: the hooks a plugin implements for the reload transaction.
//! * [`host`]: the reload transaction itself ([`host::Host`]): build the new
//!   generation, cut over, drain with a deadline and an escalation ladder,
//!   shut down, with rollback on failure and after the cutover.
//!
//! # The reload protocol
//!
//! The original framework's protocol, which [`EpochFencedReload`] keeps, is:
//! `begin_drain` on the old plugin (`Active → Draining`), load the new plugin
//! (`Loaded → Linked → Initialized → Active`), `wait_for_drain` (poll the old
//! lifecycle's reference count), `finalize` (`Draining → Removed`):
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use cutover::{EpochFencedReload, LifecycleState, PluginId, PluginLifecycle};
//!
//! let id = PluginId::new("math");
//! let old = Arc::new(PluginLifecycle::with_state(id.clone(), LifecycleState::Active));
//! let driver = EpochFencedReload::new(Arc::clone(&old));
//!
//! // 1. begin_drain: Active → Draining (one compare-and-swap).
//! driver.begin_drain()?;
//! // 2. load the new plugin: Loaded → Linked → Initialized → Active.
//! let new = Arc::new(PluginLifecycle::new(id));
//! while new.advance() != LifecycleState::Active {}
//! // 3. wait_for_drain: only our `old` and the driver's handle remain.
//! driver.wait_for_drain(2, Duration::from_millis(1), Duration::from_secs(1))?;
//! // 4. finalize: Draining → Removed.
//! driver.finalize();
//! assert_eq!(old.state(), LifecycleState::Removed);
//! # Ok::<(), cutover::DrainError>(())
//! ```
//!
//! That protocol polls, counts references to a handle in-flight work may not
//! hold, and (in the original) drained before loading, so a failed load left
//! nothing serving. The lease-based API does it in the other order: build
//! the new generation first, cut over atomically, then be told when the old
//! one drained:
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use cutover::{LifecycleState, PluginId, Slot};
//!
//! type Scalar = dyn Fn(i64) -> i64 + Send + Sync;
//! let slot: Slot<Scalar> = Slot::new(PluginId::new("math"), Arc::new(|x: i64| x * 3));
//! let call = slot.lease(); // a call in flight on generation 1
//! let drain = slot.replace(Arc::new(|x: i64| x * 3 + 1)); // the cutover
//! assert_eq!(drain.lifecycle().state(), LifecycleState::Draining);
//! assert_eq!(slot.lease()(1), 4); // new calls: generation 2
//! assert_eq!(call(1), 3); // the call in flight finishes on generation 1
//! drop(call);
//! drain.wait_timeout(Duration::from_secs(1))?; // notified, not polled
//! assert_eq!(drain.lifecycle().state(), LifecycleState::Removed);
//! # Ok::<(), cutover::DrainError>(())
//! ```
//!
//! [`EpochFencedReload::finalize`] is the seed's: it moves the lifecycle to
//! `Removed` from any state (warning when the plugin was never shown
//! drained); [`EpochFencedReload::try_finalize`] refuses unless drained. The
//! lease-based API is what never removes a generation while work holds it.
//! Each generation a [`Slot`] retires is driven through its own
//! [`EpochFencedReload`]: `begin_drain` at the cutover, `finalize` once the
//! lease count has reached zero ([`Drain::lifecycle`] shows the state).
//!
//! # Ordering guarantees
//!
//! * A cutover (`Slot::replace`) is linearizable: every lease is taken either
//!   entirely before it (old generation) or entirely after (new generation),
//!   and a lease that starts after `replace` returned sees the new one.
//! * Everything a thread did before dropping a lease happens-before the old
//!   value's drop and before any drain waiter wakes.
//! * Lifecycle transitions are single compare-and-swaps with
//!   acquire/release ordering.
//!
//! * [`Slot::lease`] (and so [`Registry::lease`], [`RegistryReader::lease`]
//!   and [`host::Host::lease`]) never completes a drain: it never drops a plugin
//!   value, runs an `on_drained` callback, a waker or a shutdown hook, or
//!   frees a registry's key map. Those run where a lease is *dropped* (or in
//!   `replace`/`remove` when nothing is in flight), and a panic in any of
//!   them is caught and logged, never propagated to that thread.
//!
//! # Correctness checking
//!
//! * The lease/replace/drain protocol and the lifecycle transitions are
//!   model-checked with [`loom`](https://docs.rs/loom):
//!   `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=4 cargo test -p cutover --test loom --release`
//!   (12 models: racing lifecycle transitions, a lease racing a cutover, stray
//!   increments across record reuse, a release racing a two-stripe sweep,
//!   `in_flight` on a reused record, registry lookups racing removal, and
//!   that `lease()` never completes a drain). The models run the atomic
//!   lease path ([`LeasePath::Atomic`]): loom cannot model the `membarrier`
//!   system call and the restartable sequences (`rseq`, inline assembly) of
//!   the asymmetric-fence path.
//! * The asymmetric-fence path ([`LeasePath::AsymmetricFence`], x86-64
//!   Linux, the default where available) is argued correct in the `record` module docs and
//!   checked by the stress tests of `tests/lease_paths.rs`, run on both
//!   paths (cross-thread drops, thread churn, 100k replaces with pinned
//!   generations, batched cutovers), including two litmus tests (a barrier
//!   per cutover, and one per batch) that fail when the barrier is compiled
//!   out (`RUSTFLAGS="--cfg cutover_unsound_no_barrier"`).
//! * Under Miri (`cargo +nightly miri test -p cutover --lib --test slot
//!   --test lifecycle --test seed --test registry --test registry_lookup
//!   --test host`), the crate's unit tests and those integration tests run,
//!   with smaller iteration counts, on the atomic path (Miri cannot run
//!   system calls or inline assembly); `.ci/run` runs exactly that. Not under Miri:
//!   `tests/lease_paths.rs` (too long under the interpreter), the loom models (`--cfg loom`), the examples and doc tests, and
//!   the benchmarks.
//!
//! Every `unsafe` block carries a `SAFETY:` comment.

#![warn(missing_docs)]

pub mod host;
mod id;
pub mod lifecycle;
pub mod plugin;
mod registry;
mod slot;
mod sync;
mod unwind;

pub use id::{PluginId, PluginIdError, MAX_PLUGIN_ID_LEN};
pub use lifecycle::{DrainError, EpochFencedReload, LifecycleState, PluginLifecycle, SharedLifecycle};
pub use registry::{Registry, RegistryError, RegistryReader};
pub use slot::{CutoverBatch, Drain, Drained, Finalize, Lease, LeasePath, Slot, Straggler};
