//! A forked child keeps using slots of both lease paths: its cutovers
//! count what it holds, and on the asymmetric-fence path its barrier works
//! (the kernel keeps the process's `membarrier` registration and the
//! thread's `rseq` area across `fork`).
//!
//! Alone in its test binary: a child forked from a process with other
//! threads may only rely on what those threads cannot be holding, and this
//! process's only other thread is the test harness's, idle while the test
//! runs.

#![cfg(all(target_os = "linux", not(miri)))]

use std::sync::Arc;

use cutover::{LeasePath, PluginId, Slot};

#[test]
fn a_forked_child_replaces_and_counts_exactly() {
    for path in [LeasePath::AsymmetricFence, LeasePath::Atomic] {
        let slot = Slot::with_lease_path(PluginId::new("forked"), Arc::new(1u32), 8, path);
        let held = slot.lease();
        // SAFETY: the child only uses this thread's own data (the slot, the
        // allocator, whose locks glibc resets in the child) and leaves with
        // `_exit`, without running the parent's destructors.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let ok = {
                let second = slot.lease();
                let drain = slot.replace(Arc::new(2));
                let counted = drain.in_flight() == 2; // `held` (copied) and `second`
                drop(second);
                let new_generation = *slot.lease() == 2;
                counted && new_generation && !drain.is_drained()
            };
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        assert!(child > 0, "fork failed: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{path:?}: the child's cutover miscounted (status {status})"
        );
        // The parent is untouched by the child's cutover.
        assert_eq!(*held, 1);
        assert_eq!(slot.lease().generation(), 1);
    }
}
