//! The asymmetric-fence lease path's two halves: the owner's counter update,
//! a *restartable sequence* (Linux `rseq`), and the cutover's process-wide
//! barrier that restarts every such update in progress.
//!
//! An owner thread updates its own counter with a plain load and store (no
//! read-modify-write, no fence) inside a restartable sequence: a few
//! instructions, from loading the record to the single store that *commits*
//! the update, registered with the kernel through the thread's `rseq` area
//! (glibc 2.35+ registers one for every thread). If the thread is
//! preempted, migrated or interrupted by a signal before the commit, the
//! kernel makes it restart the sequence from the beginning, so an update is
//! either committed or never started, as far as any other thread can tell.
//!
//! The cutover calls `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`:
//! every thread of the process running at that moment executes a full
//! memory barrier and has its restartable sequence in progress, if any,
//! restarted (an IPI to each CPU running one of our threads); threads not
//! running get the same from their next context switch. So after the
//! barrier, every update that committed is visible to the cutover, and
//! every update that had not committed starts over and sees the record the
//! cutover marked draining: the cutover sums the counters **without
//! waiting for any thread**. This is the scheme of Linux's `percpu_ref`
//! and liburcu's membarrier flavour, with librseq's commit-or-restart
//! updates. The full correctness argument is in the `record` module docs.
//!
//! The path is available on Linux x86-64 when glibc registered an `rseq`
//! area for the process (`__rseq_size`, found with `dlsym`), when
//! `MEMBARRIER_CMD_QUERY` lists the private expedited `rseq` commands, and
//! when registering for them (once per process, at first use) succeeds;
//! and, per thread, when that thread's `rseq` area is registered (others
//! take the atomic path). Not on other platforms, under Miri and loom
//! (which cannot model a system call or inline assembly), or with the
//! environment variable `CUTOVER_LEASE_PATH=atomic`. Where it is
//! available it is the **default** ([`default_on`], since session 33):
//! a slot takes the atomic path only when made with
//! `Slot::with_lease_path(.., LeasePath::Atomic)`, or every slot when
//! `CUTOVER_LEASE_PATH=atomic` is set. (Until session 33 it was opt-in:
//! its per-call cost was not far enough below the atomic path's to pay for
//! the drain's barrier; see BENCHMARKS.md, issue 14, item 1.)
//!
//! A child of `fork()` keeps both registrations (the process's and its one
//! thread's `rseq` area), so its cutovers work as the parent's
//! (`tests/fork.rs`).

use std::sync::OnceLock;

/// How many thread indices may use the plain-update path: threads whose
/// index (see `stripe::thread_stripe`) is below this and below their slot's
/// stripe count own a counter; the others take the atomic path.
pub(crate) const MAX_OWNERS: usize = 64;

/// What an owner's counter update ended with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(not(all(target_os = "linux", target_arch = "x86_64", not(miri), not(loom))), allow(dead_code))]
pub(crate) enum Update {
    /// Committed.
    Done,
    /// The record is draining: nothing was written.
    Draining,
    /// The counter is at its limit (acquisitions only): nothing was written.
    AtLimit,
    /// The acquisition's count is due for the limit check (see
    /// `owned_acquire`): nothing was written.
    Check,
}

/// Whether the asymmetric-fence path is available in this process (decided
/// once, at the first call).
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let forced_off = std::env::var("CUTOVER_LEASE_PATH").is_ok_and(|v| v == "atomic");
        let on = !forced_off && imp::register();
        tracing::debug!(target: "cutover::slot", asymmetric_fence = on, "lease path chosen");
        on
    })
}

/// Whether slots made without an explicit lease path use this one: where
/// it is [`available`] (which `CUTOVER_LEASE_PATH=atomic` turns off).
/// (`CUTOVER_LEASE_PATH=asymmetric`, which made it the default before it
/// was, is still accepted and changes nothing.)
pub(crate) fn default_on() -> bool {
    available()
}

/// Whether the calling thread may own counters: its `rseq` area is
/// registered with the kernel (so its updates restart when interrupted).
/// Cheap; called once per thread, when it takes its index (loom models give
/// threads their indices without it).
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn thread_can_own() -> bool {
    imp::thread_registered()
}

/// Make every running thread of the process execute a full memory barrier
/// and restart its restartable sequence in progress, if any. Only called
/// once [`available`] returned true.
///
/// Built with `--cfg cutover_unsound_no_barrier` (for the litmus test that
/// shows the barrier is needed, never for use), this is only a local fence.
pub(crate) fn barrier() {
    #[cfg(not(cutover_unsound_no_barrier))]
    imp::barrier();
    #[cfg(cutover_unsound_no_barrier)]
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

#[cfg(not(loom))]
pub(crate) use imp::thread_rseq_cs;
pub(crate) use imp::{owned_acquire, owned_acquire_checked, owned_release};

#[cfg(all(target_os = "linux", target_arch = "x86_64", not(miri), not(loom)))]
mod imp {
    use std::{arch::asm, sync::OnceLock};

    use super::Update;

    const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 7;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: libc::c_int = 1 << 8;

    /// The start of an owner's restartable sequence (`rseq_start!`, labels
    /// 9 and 2) and its end (`rseq_descriptor!`): its descriptor (label
    /// 3: version, flags, start = label 2, length up to label 6, abort
    /// handler = label 4), in a data section, 32-byte aligned as the `rseq`
    /// ABI requires; and the abort handler, after the 4-byte signature
    /// glibc registered (`RSEQ_SIG`, 0x53053053, as the operand of a `ud1`
    /// so that it is never executed), which starts the sequence over from
    /// label 9, *arming it again*: the kernel clears the thread's
    /// `rseq_cs` when it aborts a sequence, so a restart that skipped the
    /// arming store would run unprotected (a second interruption would not
    /// abort it; found by `leases_taken_in_signal_handlers_are_counted_exactly`).
    macro_rules! rseq_start {
        () => {
            // Label 9: arm the sequence (the thread's `rseq_cs` = label 3's
            // descriptor); the abort handler comes back here. Label 2: the
            // sequence starts. Uses the operands `tmp` (clobbered) and `rseq`
            // (the address of the thread's `rseq_cs` field).
            concat!("9:\n", "lea {tmp}, [rip + 3f]\n", "mov qword ptr [{rseq}], {tmp}\n", "2:",)
        };
    }

    macro_rules! rseq_descriptor {
        () => {
            concat!(
                ".pushsection __rseq_cs, \"aw\"\n",
                ".balign 32\n",
                "3:\n",
                ".long 0, 0\n",
                ".quad 2b, 6b - 2b, 4f\n",
                ".popsection\n",
                ".pushsection __rseq_failure, \"ax\"\n",
                ".byte 0x0f, 0xb9, 0x3d\n",
                ".long 0x53053053\n",
                "4:\n",
                "jmp 9b\n",
                ".popsection",
            )
        };
    }

    macro_rules! acquire_end {
        () => {
            // The end of an acquisition's sequence (label 6, right after the
            // commit) and where it continues (label 7); its descriptor; and,
            // out of line, its two early exits, which leave 0 (label 5: the
            // record is draining) or 1 (label 8) in `rec` in place of the
            // record. Uses the operand `rec`.
            concat!(
                "6:\n",
                "7:\n",
                rseq_descriptor!(),
                "\n",
                ".pushsection .text.cutover_rseq_exits, \"ax\"\n",
                "5:\n",
                "xor {rec:e}, {rec:e}\n",
                "jmp 7b\n",
                "8:\n",
                "mov {rec:e}, 1\n",
                "jmp 7b\n",
                ".popsection",
            )
        };
    }

    /// `membarrier(cmd, 0, 0)`.
    fn membarrier(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: `membarrier` takes two integer arguments (and a CPU id
        // only with a flag we do not pass); it touches no memory of ours.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_uint, 0 as libc::c_int) }
    }

    /// glibc's `rseq` area offset, if glibc registered one (it does for
    /// every thread since 2.35, unless disabled with the tunable
    /// `glibc.pthread.rseq=0`). Looked up once, with `dlsym`, so that
    /// linking does not need a glibc that has the symbols. Each owner
    /// thread keeps the address of its area's `rseq_cs` field
    /// ([`thread_rseq_cs`]) for its sequences.
    fn rseq_offset() -> Option<isize> {
        static FOUND: OnceLock<Option<isize>> = OnceLock::new();
        *FOUND.get_or_init(|| {
            // SAFETY: `dlsym` with a NUL-terminated name; the results are
            // read only if not null, as the types glibc documents (`unsigned
            // int`, `ptrdiff_t`), and they are constant after start-up.
            let (size, offset) = unsafe {
                let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()).cast::<libc::c_uint>();
                let offset = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()).cast::<isize>();
                if size.is_null() || offset.is_null() {
                    return None;
                }
                (size.read(), offset.read())
            };
            // `rseq_cs` is at bytes 8..16 of the area: registered areas are
            // at least 20 bytes (0 means glibc did not register).
            if size < 16 {
                return None;
            }
            Some(offset)
        })
    }

    pub(super) fn register() -> bool {
        if rseq_offset().is_none() || !thread_registered() {
            return false;
        }
        let supported = membarrier(MEMBARRIER_CMD_QUERY);
        if supported < 0
            || supported & libc::c_long::from(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ) == 0
            || supported & libc::c_long::from(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ) == 0
        {
            return false;
        }
        membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ) == 0
    }

    /// The address of this thread's `rseq_cs` field (8 bytes into its
    /// `struct rseq`, at glibc's `__rseq_offset` from the thread pointer),
    /// which an owner's sequence stores its descriptor's address in. Only
    /// on a thread for which [`thread_registered`] is true.
    pub(crate) fn thread_rseq_cs() -> usize {
        let offset = rseq_offset().unwrap_or(0);
        let thread_pointer: usize;
        // SAFETY: on x86-64 Linux the word at `fs:0` is the thread pointer
        // itself (the TCB's self pointer, glibc's `tcbhead_t::tcb`); reading
        // it touches nothing else.
        unsafe {
            asm!(
                "mov {tp}, qword ptr fs:0",
                tp = out(reg) thread_pointer,
                options(nostack, readonly, preserves_flags),
            );
        }
        thread_pointer.wrapping_add_signed(offset).wrapping_add(8)
    }

    pub(super) fn thread_registered() -> bool {
        let Some(offset) = rseq_offset() else { return false };
        let cpu_id: i32;
        // SAFETY: `fs:offset` is this thread's `struct rseq` (glibc keeps it
        // in the thread control block for the thread's whole life); bytes
        // 4..8 are `cpu_id`, which the kernel keeps at the current CPU
        // (>= 0) once the area is registered, and glibc sets negative
        // otherwise. A plain read of our own thread's data.
        unsafe {
            asm!(
                "mov {cpu:e}, dword ptr fs:[{offset} + 4]",
                offset = in(reg) offset,
                cpu = out(reg) cpu_id,
                options(nostack, readonly, preserves_flags),
            );
        }
        cpu_id >= 0
    }

    pub(super) fn barrier() {
        if membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ) != 0 {
            // Registered at start-up, so the kernel cannot refuse; if it did,
            // counters written without ordering could not be summed safely.
            let error = std::io::Error::last_os_error();
            tracing::error!(target: "cutover::slot", %error, "membarrier failed after registration; aborting");
            std::process::abort();
        }
    }

    /// Take a lease on the record `*current` points at: in one restartable
    /// sequence, load the record, stop if it is draining (its first byte,
    /// `Record::draining`), stop if the owner's acquisitions plus one (the
    /// word at `offset` bytes into it) end in 16 zero bits, else store them.
    /// Returns the record loaded and what happened: [`Update::Check`] once
    /// every 2^16 acquisitions, when the caller runs
    /// [`owned_acquire_checked`] instead, which compares the count with its
    /// limit. (So the common case reads one counter, not two.)
    ///
    /// # Safety
    /// `current` points at a record pointer that always points at a live
    /// record whose first byte is its draining flag and with an owned
    /// counter at `offset`, both only written by this thread or by a
    /// writer that then runs [`barrier`]; the calling thread's `rseq` area
    /// is registered ([`thread_registered`]), and `rseq` is the address of
    /// its `rseq_cs` field ([`thread_rseq_cs`], as the thread's
    /// `stripe::owned` keeps it); the process is registered for the barrier
    /// ([`register`]).
    #[inline(always)]
    pub(crate) unsafe fn owned_acquire(rseq: usize, current: *const *mut u8, offset: usize) -> (*mut u8, Update) {
        let record: *mut u8;
        // SAFETY: forwarded from the caller. The sequence runs from label 2
        // to the commit store before label 6; an interruption in between
        // makes the kernel resume at label 4 (after the signature glibc
        // registered, 0x53053053), which arms it again and starts over
        // (label 9). Nothing before the commit writes memory; the descriptor
        // (label 3) is in a data section, 32-byte aligned, as the `rseq` ABI
        // requires. The common case falls through from the commit with the
        // record in `rec`; the others leave through labels 5 and 8 (out of
        // line) with `rec` replaced by 0 or 1, which no record's address is,
        // so one compare tells them apart and the common case takes no jump.
        unsafe {
            asm!(
                rseq_start!(),
                "mov {rec}, qword ptr [{cur}]",
                "cmp byte ptr [{rec}], 0",
                "jne 5f",
                "mov {tmp}, qword ptr [{rec} + {off}]",
                "add {tmp}, 1",
                "test {tmp:x}, {tmp:x}",
                "jz 8f",
                "mov qword ptr [{rec} + {off}], {tmp}",
                acquire_end!(),
                rseq = in(reg) rseq,
                cur = in(reg) current,
                off = in(reg) offset,
                rec = out(reg) record,
                tmp = out(reg) _,
                options(nostack),
            );
        }
        // One compare and a branch not taken in the common case.
        let update = if record as usize > 1 { Update::Done } else { exited(record, Update::Check) };
        (record, update)
    }

    /// What an owner's sequence that left early left in `rec`: 0 if the
    /// record is draining, 1 for `other`.
    #[cold]
    #[inline(never)]
    fn exited(record: *mut u8, other: Update) -> Update {
        if record.is_null() {
            Update::Draining
        } else {
            other
        }
    }

    /// [`owned_acquire`] with the limit check: stop if the owner's
    /// acquisitions minus its releases (the word after them) are at
    /// `limit` or more (a power of two, at most 2^62), else store the
    /// acquisitions plus one. Returns the record loaded and what happened
    /// ([`Update::AtLimit`] for a refusal).
    ///
    /// # Safety
    /// As for [`owned_acquire`].
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn owned_acquire_checked(
        rseq: usize,
        current: *const *mut u8,
        offset: usize,
        limit: usize,
    ) -> (*mut u8, Update) {
        debug_assert!(limit.is_power_of_two() && limit <= 1 << 62);
        let shift = limit.trailing_zeros();
        let record: *mut u8;
        // SAFETY: as in `owned_acquire`, with label 8 for a refusal.
        unsafe {
            asm!(
                rseq_start!(),
                "mov {rec}, qword ptr [{cur}]",
                "cmp byte ptr [{rec}], 0",
                "jne 5f",
                "mov {tmp}, qword ptr [{rec} + {off}]",
                "mov {out}, {tmp}",
                "sub {out}, qword ptr [{rec} + {off} + 8]",
                "shr {out}, cl",
                "jnz 8f",
                "add {tmp}, 1",
                "mov qword ptr [{rec} + {off}], {tmp}",
                acquire_end!(),
                rseq = in(reg) rseq,
                cur = in(reg) current,
                off = in(reg) offset,
                in("cl") shift as u8,
                rec = out(reg) record,
                tmp = out(reg) _,
                out = out(reg) _,
                options(nostack),
            );
        }
        let update = if record as usize > 1 { Update::Done } else { exited(record, Update::AtLimit) };
        (record, update)
    }

    /// Release an owned lease of `record`: in one restartable sequence,
    /// stop if the record is draining, else store the owner's releases (the
    /// word after the one at `offset`) plus one.
    ///
    /// # Safety
    /// As for [`owned_acquire`], with `record` the live record.
    #[inline(always)]
    pub(crate) unsafe fn owned_release(rseq: usize, record: *mut u8, offset: usize) -> Update {
        let draining: usize;
        // SAFETY: as in `owned_acquire`. The common case falls through from
        // the commit with `out` still 0; a draining record leaves through
        // label 5 with 1.
        unsafe {
            asm!(
                rseq_start!(),
                "cmp byte ptr [{rec}], 0",
                "jne 5f",
                "mov {tmp}, qword ptr [{rec} + {off} + 8]",
                "add {tmp}, 1",
                "mov qword ptr [{rec} + {off} + 8], {tmp}",
                "6:",
                "7:",
                rseq_descriptor!(),
                ".pushsection .text.cutover_rseq_exits, \"ax\"",
                "5:",
                "mov {out:e}, 1",
                "jmp 7b",
                ".popsection",
                rseq = in(reg) rseq,
                rec = in(reg) record,
                off = in(reg) offset,
                tmp = out(reg) _,
                out = inout(reg) 0usize => draining,
                options(nostack),
            );
        }
        if draining == 0 {
            Update::Done
        } else {
            Update::Draining
        }
    }
}

/// Elsewhere the path is never available, so no slot has owners and these
/// are never called.
#[cfg(not(all(target_os = "linux", target_arch = "x86_64", not(miri), not(loom))))]
mod imp {
    use super::Update;

    pub(super) fn register() -> bool {
        false
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn thread_registered() -> bool {
        false
    }

    /// Never called: no thread registers here.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn thread_rseq_cs() -> usize {
        0
    }

    pub(super) fn barrier() {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    /// Never called: no slot has owners here.
    ///
    /// # Safety
    /// None needed; it does nothing.
    pub(crate) unsafe fn owned_acquire(_rseq: usize, _current: *const *mut u8, _offset: usize) -> (*mut u8, Update) {
        unreachable!("the asymmetric-fence path is not available on this platform")
    }

    /// Never called: no slot has owners here.
    ///
    /// # Safety
    /// None needed; it does nothing.
    pub(crate) unsafe fn owned_acquire_checked(
        _rseq: usize,
        _current: *const *mut u8,
        _offset: usize,
        _limit: usize,
    ) -> (*mut u8, Update) {
        unreachable!("the asymmetric-fence path is not available on this platform")
    }

    /// Never called: no slot has owners here.
    ///
    /// # Safety
    /// None needed; it does nothing.
    pub(crate) unsafe fn owned_release(_rseq: usize, _record: *mut u8, _offset: usize) -> Update {
        unreachable!("the asymmetric-fence path is not available on this platform")
    }
}
