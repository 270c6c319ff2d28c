//! The process-wide wasmtime [`Engine`] and its epoch ticker.
//!
//! One engine is shared by every plugin (compiled code is tied to an engine).
//! It has epoch interruption enabled; one background thread, started on first
//! use, increments the epoch every [`TICK`]. Every running call has an epoch
//! deadline of one tick, so its store's deadline callback runs about once per
//! millisecond while WebAssembly executes, and decides to continue, time out,
//! or stop because the generation was interrupted. Idle stores cost nothing.

use std::sync::OnceLock;
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
        let spawned = std::thread::Builder::new().name("cutover-wasm-epoch".into()).spawn(move || loop {
            std::thread::sleep(TICK);
            match ticker.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cutover-wasm: cannot start the epoch ticker thread ({e}); time budgets are not enforced");
        }
        engine
    })
}
