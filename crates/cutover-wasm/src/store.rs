//! Per-instance store state shared by modules and components: the memory
//! limiter, the call deadline read by the epoch callback, and the mapping of
//! a failed call or instantiation to why it failed.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

use crate::engine::engine;

/// Why a running call was stopped by the epoch callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    None,
    Timeout,
    Interrupted,
}

/// Per-store data: memory limiter, the call-deadline state read by the epoch
/// callback, and `ext` (what a component's host functions need).
pub(crate) struct StoreState<T> {
    max_memory: usize,
    memory_denied: Option<usize>,
    deadline: Instant,
    stop: Stop,
    interrupted: Arc<AtomicBool>,
    pub(crate) ext: T,
}

impl<T> fmt::Debug for StoreState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreState").field("max_memory", &self.max_memory).finish_non_exhaustive()
    }
}

impl<T: Send> ResourceLimiter for StoreState<T> {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables cost a pointer per element; hold them to the memory budget too.
        Ok(desired.saturating_mul(std::mem::size_of::<usize>()) <= self.max_memory)
    }
}

/// A new store on the shared engine with the memory limiter and the epoch
/// callback installed; `interrupted` is the generation's forced-rung flag.
pub(crate) fn new_store<T: Send + 'static>(
    max_memory: u64,
    interrupted: &Arc<AtomicBool>,
    ext: T,
) -> Store<StoreState<T>> {
    let state = StoreState {
        max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
        memory_denied: None,
        deadline: Instant::now(),
        stop: Stop::None,
        interrupted: Arc::clone(interrupted),
        ext,
    };
    let mut store = Store::new(engine(), state);
    store.limiter(|s| s as &mut dyn ResourceLimiter);
    store.epoch_deadline_callback(|mut cx| {
        let data = cx.data_mut();
        if data.interrupted.load(Ordering::Relaxed) {
            data.stop = Stop::Interrupted;
            return Ok(UpdateDeadline::Interrupt);
        }
        if Instant::now() >= data.deadline {
            data.stop = Stop::Timeout;
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store
}

/// Start a call (or `init`) with `budget`: the epoch callback stops it once
/// the budget has passed. The epoch ticks while the returned guard lives:
/// keep it until the run ends.
#[must_use = "the epoch ticks only while the guard lives"]
pub(crate) fn begin<T>(store: &mut Store<StoreState<T>>, budget: Duration) -> crate::engine::Running {
    let running = crate::engine::Running::start();
    let data = store.data_mut();
    data.deadline = Instant::now() + budget;
    data.stop = Stop::None;
    data.memory_denied = None;
    store.set_epoch_deadline(1);
    running
}

/// Why a call into WebAssembly failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Over the time budget.
    Timeout,
    /// Stopped by the forced rung.
    Interrupted,
    /// A memory grow past the limit was refused (and the code then failed).
    Memory { requested: u64 },
    /// A trap.
    Trap(String),
    /// Anything else (e.g. malformed values crossing the component boundary).
    Other(String),
}

/// Classify `error`, returned by a call on `store`.
pub(crate) fn classify<T>(store: &Store<StoreState<T>>, error: &wasmtime::Error) -> Failure {
    let data = store.data();
    match (error.downcast_ref::<Trap>(), data.stop) {
        (Some(Trap::Interrupt), Stop::Interrupted) => Failure::Interrupted,
        (Some(Trap::Interrupt), _) => Failure::Timeout,
        _ if data.memory_denied.is_some() => Failure::Memory { requested: data.memory_denied.unwrap_or(0) as u64 },
        (Some(trap), _) => Failure::Trap(trap.to_string()),
        (None, _) => Failure::Other(format!("{error:#}")),
    }
}
