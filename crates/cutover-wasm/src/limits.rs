//! Per-plugin sandbox limits.

use std::time::Duration;

/// Sandbox limits for one WebAssembly plugin. Set them on a
/// [`WasmSource`](crate::WasmSource) with
/// [`with_limits`](crate::WasmSource::with_limits); every generation loaded
/// from that source uses them.
///
/// Defaults ([`WasmLimits::default`]): 1 s per call, 5 s for `init`,
/// 64 MiB of linear memory per instance, instances pre-created per
/// generation = available parallelism (at least 2, at most 16), and
/// no host imports (imports are granted on the source, not here).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WasmLimits {
    /// Time budget of one call (one [`invoke`](crate::ScalarPluginFn::invoke)
    /// over a batch of rows). Enforced with epoch interruption, to a
    /// granularity of about 1 ms. Exceeding it fails the call with
    /// [`CallError::Timeout`](crate::CallError::Timeout).
    pub call_timeout: Duration,
    /// Time budget of the `init` export, per run (default 5 s). `init` runs
    /// once per instance: for each of the
    /// [`prewarm_instances`](Self::prewarm_instances) at every (re)load, one
    /// after another, and for each instance created later on a caller's
    /// path; the budget applies to each run, not to their sum. Exceeding it
    /// fails the load with [`LoadError::InitTimeout`](crate::LoadError::InitTimeout)
    /// (or, for an instance created for a call, fails that call).
    pub init_timeout: Duration,
    /// Maximum linear memory per instance, in bytes. A module whose initial
    /// memory is larger fails to load
    /// ([`LoadError::MemoryTooLarge`](crate::LoadError::MemoryTooLarge));
    /// `memory.grow` past it returns -1 to the plugin.
    pub max_memory_bytes: u64,
    /// Instances created (and `init`ialized, one after another, each within
    /// [`init_timeout`](Self::init_timeout)) when a generation initializes,
    /// before its cutover, so callers never instantiate on their path in the
    /// steady state. A reload's init phase takes about this many times one
    /// instantiation plus one `init`.
    pub prewarm_instances: usize,
    /// Maximum idle instances kept per generation; beyond it, instances
    /// returned after a call are dropped.
    pub max_idle_instances: usize,
}

impl Default for WasmLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let prewarm = cores.clamp(2, 16);
        Self {
            call_timeout: Duration::from_secs(1),
            init_timeout: Duration::from_secs(5),
            max_memory_bytes: 64 << 20,
            prewarm_instances: prewarm,
            max_idle_instances: prewarm * 4,
        }
    }
}

impl WasmLimits {
    /// Set [`call_timeout`](Self::call_timeout).
    pub fn call_timeout(mut self, budget: Duration) -> Self {
        self.call_timeout = budget;
        self
    }

    /// Set [`init_timeout`](Self::init_timeout).
    pub fn init_timeout(mut self, budget: Duration) -> Self {
        self.init_timeout = budget;
        self
    }

    /// Set [`max_memory_bytes`](Self::max_memory_bytes).
    pub fn max_memory_bytes(mut self, bytes: u64) -> Self {
        self.max_memory_bytes = bytes;
        self
    }

    /// Set [`prewarm_instances`](Self::prewarm_instances) (at least 1 is used).
    pub fn prewarm_instances(mut self, n: usize) -> Self {
        self.prewarm_instances = n;
        self
    }

    /// Set [`max_idle_instances`](Self::max_idle_instances).
    pub fn max_idle_instances(mut self, n: usize) -> Self {
        self.max_idle_instances = n;
        self
    }
}
