//! The process-wide barrier of the asymmetric-fence lease path, and the
//! per-thread *busy* sequence words the writer waits on.
//!
//! On Linux, `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` makes every
//! thread of the process that is running at that moment execute a full
//! memory barrier (an IPI to each CPU running one of our threads; threads not
//! running get one from the context switch). That lets the per-call path
//! update its counters with plain (`Relaxed`, non-read-modify-write) loads
//! and stores and no fence, while the rare writer pays for the ordering: the
//! scheme of Linux's `percpu_ref` and of liburcu's membarrier flavour. The
//! correctness argument is in the `record` module docs.
//!
//! The path is available when `MEMBARRIER_CMD_QUERY` lists the private
//! expedited command and registering for it (once per process, at first
//! use) succeeds; not on other platforms, under Miri and loom (which cannot
//! model a system call), or with the environment variable
//! `CUTOVER_LEASE_PATH=atomic`. It is **opt-in** ([`default_on`]): a slot
//! uses it when made with `Slot::with_lease_path(.., LeasePath::AsymmetricFence)`,
//! or every slot when `CUTOVER_LEASE_PATH=asymmetric` is set. The default
//! is the atomic path (one `fetch_add` per lease), because the cutover of
//! this path waits for owner threads that are preempted in the middle of a
//! lease update, which on an oversubscribed machine costs milliseconds (see
//! BENCHMARKS.md).

use std::sync::{atomic::AtomicUsize, OnceLock};

use crate::sync::CachePadded;

/// How many thread indices may use the plain-update path: threads whose
/// index (see `stripe::thread_stripe`) is below this and below their slot's
/// stripe count own a counter; the others take the atomic path.
pub(crate) const MAX_OWNERS: usize = 64;

/// The busy word of an owner between the start and the end of a plain
/// counter update (from before loading the record pointer to after storing
/// the count).
pub(crate) const IN_UPDATE: usize = 1;
/// The busy word of an owner outside a counter update.
pub(crate) const IDLE: usize = 0;

/// One word per owner thread index: [`IN_UPDATE`] or [`IDLE`]. Written only
/// by the thread that holds the index, with constant stores (no load first,
/// so consecutive updates do not form a dependency chain through this word),
/// read by writers.
pub(crate) static BUSY: [CachePadded<AtomicUsize>; MAX_OWNERS] =
    [const { CachePadded(AtomicUsize::new(0)) }; MAX_OWNERS];

/// Whether the asymmetric-fence path is available in this process (decided
/// once, at the first call).
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let forced_off = std::env::var("CUTOVER_LEASE_PATH").is_ok_and(|v| v == "atomic");
        let on = !forced_off && register();
        tracing::debug!(target: "cutover::slot", asymmetric_fence = on, "lease path chosen");
        on
    })
}

#[cfg(all(target_os = "linux", not(miri), not(loom)))]
mod sys {
    pub(super) const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
    pub(super) const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    pub(super) const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

    /// `membarrier(cmd, 0, 0)`.
    pub(super) fn membarrier(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: `membarrier` takes two integer arguments (and a CPU id
        // only with a flag we do not pass); it touches no memory of ours.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_uint, 0 as libc::c_int) }
    }
}

#[cfg(all(target_os = "linux", not(miri), not(loom)))]
fn register() -> bool {
    use sys::*;
    let supported = membarrier(MEMBARRIER_CMD_QUERY);
    if supported < 0
        || supported & libc::c_long::from(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0
        || supported & libc::c_long::from(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
    {
        return false;
    }
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
}

#[cfg(not(all(target_os = "linux", not(miri), not(loom))))]
fn register() -> bool {
    false
}

/// Whether slots made without an explicit lease path use this one: only
/// with `CUTOVER_LEASE_PATH=asymmetric` (read once) and if [`available`].
pub(crate) fn default_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("CUTOVER_LEASE_PATH").is_ok_and(|v| v == "asymmetric") && available())
}

/// Make every running thread of the process execute a full memory barrier.
/// Only called once [`available`] returned true.
///
/// Built with `--cfg cutover_unsound_no_barrier` (for the litmus test that
/// shows the barrier is needed, never for use), this does nothing.
pub(crate) fn barrier() {
    #[cfg(all(target_os = "linux", not(miri), not(loom), not(cutover_unsound_no_barrier)))]
    {
        if sys::membarrier(sys::MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0 {
            // Registered at start-up, so the kernel cannot refuse; if it did,
            // counters written without ordering could not be summed safely.
            let error = std::io::Error::last_os_error();
            tracing::error!(target: "cutover::slot", %error, "membarrier failed after registration; aborting");
            std::process::abort();
        }
    }
    #[cfg(any(not(target_os = "linux"), miri, loom, cutover_unsound_no_barrier))]
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

/// Wait until the owner thread `index` is not in the middle of an update it
/// started before the barrier: until its busy word is seen [`IDLE`] once.
/// (An update is a few instructions, so an owner leasing in a tight loop is
/// idle often; the writer is lock-free here, not wait-free.)
pub(crate) fn wait_quiescent(index: usize) {
    use std::sync::atomic::Ordering;
    let word = &BUSY[index];
    // Acquire: pairs with the owner's release store ending an update, so the
    // counter store of the update that straddled the barrier (which that
    // store follows in the owner's program order) is visible to the sum.
    let mut spins = 0u32;
    while word.load(Ordering::Acquire) != IDLE {
        if spins < 128 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            // The owner was preempted inside its update: let it run.
            std::thread::yield_now();
        }
    }
}
