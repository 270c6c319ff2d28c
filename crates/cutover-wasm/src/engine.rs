//! The process-wide wasmtime [`Engine`] and its epoch ticker.
//!
//! One engine is shared by every plugin (compiled code is tied to an engine).
//! It has epoch interruption enabled; one background thread, started on first
//! use, increments the epoch every [`TICK`], and sleeps once no WebAssembly
//! has run (no `Running` guard alive) for 100 ticks, until the next run
//! starts: an idle process does not wake up. Every running call has an epoch deadline of one tick,
//! so its store's deadline callback runs about once per millisecond while
//! WebAssembly executes, and decides to continue, time out, or stop because
//! the generation was interrupted. Idle stores cost nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::{Config, Engine};

/// Interval between epoch ticks: the granularity of time budgets and of
/// forced interruption.
pub const TICK: Duration = Duration::from_millis(1);

/// The process-wide wasmtime engine every plugin is compiled on (epoch
/// interruption on; compilation on the calling thread only, so a reload's
/// compile never competes with callers for more than one core). The first
/// call starts the epoch ticker thread.
pub fn shared_engine() -> &'static Engine {
    engine()
}

pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.parallel_compilation(false);
        // Engine::new only fails for inconsistent configurations; this one is
        // fixed, so fall back to the default engine rather than panic.
        let engine = Engine::new(&config).unwrap_or_else(|e| {
            tracing::error!("cutover-wasm: epoch-interruption engine unavailable ({e}); time budgets are not enforced");
            Engine::default()
        });
        let ticker = engine.weak();
        let spawned = std::thread::Builder::new().name("cutover-wasm-epoch".into()).spawn(move || {
            let mut idle_ticks = 0;
            loop {
                idle_ticks = if RUNNING.load(Ordering::SeqCst) == 0 { idle_ticks + 1 } else { 0 };
                if idle_ticks >= PARK_AFTER_IDLE_TICKS {
                    park();
                    idle_ticks = 0;
                }
                std::thread::sleep(TICK);
                match ticker.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cutover-wasm: cannot start the epoch ticker thread ({e}); time budgets are not enforced");
        }
        engine
    })
}

/// Runs of WebAssembly in progress (calls and `init`s).
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Whether the ticker sleeps in [`park`].
static PARKED: AtomicBool = AtomicBool::new(false);
/// Where the ticker sleeps while nothing runs.
static PARK: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
/// Ticks without any run before the ticker parks (100 ms): under load it
/// never parks, so starting a run costs one atomic increment, no wake-up.
const PARK_AFTER_IDLE_TICKS: u32 = 100;

/// Sleep until a run starts.
fn park() {
    let mut guard = PARK.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    PARKED.store(true, Ordering::SeqCst);
    while RUNNING.load(Ordering::SeqCst) == 0 {
        guard = PARK.1.wait(guard).unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    PARKED.store(false, Ordering::SeqCst);
}

/// Keeps the epoch ticking while alive: hold one for every run of
/// WebAssembly code (its deadline needs ticks to be enforced).
pub(crate) struct Running(());

impl Running {
    pub(crate) fn start() -> Self {
        // SeqCst pairs with `park`: either the ticker sees this run before it
        // waits, or this sees PARKED and notifies under the lock, which the
        // ticker holds from setting PARKED until it waits.
        if RUNNING.fetch_add(1, Ordering::SeqCst) == 0 && PARKED.load(Ordering::SeqCst) {
            let _guard = PARK.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            PARK.1.notify_one();
        }
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}
