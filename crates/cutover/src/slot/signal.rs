//! [`DrainSignal`]: how a generation's drain is announced, to blocking
//! waiters, to futures and to callbacks.

use std::{
    fmt,
    sync::atomic::Ordering,
    task::Waker,
    time::{Duration, Instant},
};

use crate::{
    lifecycle::EpochFencedReload,
    sync::{lock, AtomicBool, Condvar, Mutex},
    unwind,
};

type Callback = Box<dyn FnOnce() + Send + 'static>;

/// The drain state of one generation, shared by its [`Drain`](super::Drain)
/// handles and the slot.
pub(crate) struct DrainSignal {
    pub(crate) generation: u64,
    /// Drives the generation's lifecycle: `begin_drain` at cutover,
    /// `finalize` once drained.
    pub(crate) fence: EpochFencedReload,
    /// When the generation became current.
    pub(crate) activated_at: Stamp,
    done: AtomicBool,
    cancelled: AtomicBool,
    /// Whether completing the drain also finalizes the lifecycle.
    auto_finalize: AtomicBool,
    state: Mutex<SignalState>,
    cond: Condvar,
}

/// What the lock guards. Kept small (48 bytes): every retired generation
/// has one until it is drained and its `Drain` handles are gone, most
/// never waited for.
#[derive(Default)]
struct SignalState {
    done: bool,
    /// Threads blocked in `wait_timeout`: notify only if there are any (a
    /// condvar notification is a system call).
    sleepers: u32,
    /// When the cutover and the drain happened (`None`: not yet).
    cutover_at: Option<Stamp>,
    drained_at: Option<Stamp>,
    /// Futures' wakers and `on_drained` callbacks, to run once drained.
    listeners: Vec<Listener>,
}

/// Something to tell when the drain completes.
enum Listener {
    Waker(Waker),
    Callback(Callback),
}

/// An instant in eight bytes: nanoseconds since the process's first stamp,
/// plus one, so that an `Option<Stamp>` ("not yet") is eight bytes too
/// (an `Instant` takes sixteen, an `Option<Instant>` as many). Every
/// generation keeps when it became current this way, and a drain signal
/// when its cutover and its drain happened.
#[derive(Clone, Copy)]
pub(crate) struct Stamp(std::num::NonZeroU64);

impl Stamp {
    /// The origin every stamp counts from, fixed by the first call.
    fn origin() -> Instant {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }

    /// Now (saturating 584 years after the origin).
    pub(crate) fn now() -> Self {
        let origin = Self::origin();
        let nanos = u64::try_from(Instant::now().saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX);
        Self(std::num::NonZeroU64::MIN.saturating_add(nanos))
    }

    /// The instant this stamp recorded.
    pub(crate) fn instant(self) -> Instant {
        Self::origin() + Duration::from_nanos(self.0.get() - 1)
    }
}

impl DrainSignal {
    pub(crate) fn new(generation: u64, fence: EpochFencedReload, activated_at: Stamp) -> Self {
        Self {
            generation,
            fence,
            activated_at,
            done: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            auto_finalize: AtomicBool::new(true),
            state: Mutex::new(SignalState::default()),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn mark_cutover(&self, auto_finalize: bool) {
        self.auto_finalize.store(auto_finalize, Ordering::Release);
        lock(&self.state).cutover_at = Some(Stamp::now());
    }

    /// Record the end of the drain in the lifecycle: the drain is shown
    /// (the lease count reached zero), and the lifecycle becomes `Removed`
    /// unless the retirer asked to finalize by hand.
    pub(crate) fn finalize_on_drain(&self) {
        self.fence.mark_drained();
        if self.auto_finalize.load(Ordering::Acquire) {
            self.fence.finalize();
        }
    }

    pub(crate) fn cutover_at(&self) -> Option<Instant> {
        lock(&self.state).cutover_at.map(Stamp::instant)
    }

    pub(crate) fn drained_at(&self) -> Option<Instant> {
        lock(&self.state).drained_at.map(Stamp::instant)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Announce the drain: wake blocked waiters and futures, run callbacks.
    /// Called exactly once, by the thread that completed the drain. A waker or
    /// callback that panics is caught and reported; the others still run.
    pub(crate) fn complete(&self) {
        let (sleepers, listeners) = {
            let mut state = lock(&self.state);
            state.done = true;
            state.drained_at = Some(Stamp::now());
            self.done.store(true, Ordering::Release);
            (state.sleepers > 0, std::mem::take(&mut state.listeners))
        };
        if sleepers {
            self.cond.notify_all();
        }
        // Futures are woken first (waking is cheap), then callbacks run.
        let mut callbacks = Vec::new();
        for listener in listeners {
            match listener {
                Listener::Waker(waker) => {
                    if let Err(panic) = unwind::catch(move || waker.wake()) {
                        self.report_panic("a drain future's waker", &panic);
                    }
                }
                Listener::Callback(callback) => callbacks.push(callback),
            }
        }
        for callback in callbacks {
            if let Err(panic) = unwind::catch(callback) {
                self.report_panic("an on_drained callback", &panic);
            }
        }
    }

    fn report_panic(&self, what: &str, panic: &str) {
        tracing::error!(target: "cutover::slot", plugin = %self.fence.old_lifecycle().plugin(),
            generation = self.generation, panic, "{what} panicked; the remaining ones still run");
    }

    /// Block until done or `timeout` elapses; `true` if done.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = lock(&self.state);
        while !state.done {
            let remaining = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => r,
                    _ => return false,
                },
                None => Duration::from_secs(3600),
            };
            state.sleepers += 1;
            state = match self.cond.wait_timeout(state, remaining) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            state.sleepers -= 1;
        }
        true
    }

    /// Register `waker` unless already done; `true` if done.
    pub(crate) fn poll_done(&self, waker: &Waker) -> bool {
        if self.is_done() {
            return true;
        }
        let mut state = lock(&self.state);
        if state.done {
            return true;
        }
        let known = state.listeners.iter().any(|l| matches!(l, Listener::Waker(w) if w.will_wake(waker)));
        if !known {
            state.listeners.push(Listener::Waker(waker.clone()));
        }
        false
    }

    /// Run `f` when done (now, on this thread, if already done: a panic of
    /// `f` then reaches the caller, as a direct call would).
    pub(crate) fn on_done(&self, f: Callback) {
        let mut state = lock(&self.state);
        if state.done {
            drop(state);
            f();
        } else {
            state.listeners.push(Listener::Callback(f));
        }
    }
}

impl fmt::Debug for DrainSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainSignal")
            .field("plugin", self.fence.old_lifecycle().plugin())
            .field("generation", &self.generation)
            .field("done", &self.is_done())
            .finish_non_exhaustive()
    }
}

// Every retired generation has a signal: keep its lock's state small.
const _: () = assert!(std::mem::size_of::<SignalState>() <= 48);
