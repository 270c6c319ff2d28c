//! The lease-counting protocol: generation records, their counters, the
//! cutover and the drain.
//!
//! # How leases are counted
//!
//! Each generation lives in a [`Record`]: the value, and a small array of
//! counters, one per *stripe* (see [`super::stripe`]), each on a line only
//! threads of that stripe write (see "Memory layout" below). A lease
//! increments its thread's stripe; dropping it decrements the same stripe,
//! on whatever thread that happens. While a generation is current, nobody
//! ever sums the stripes, so the per-call path writes one cache line that
//! no other thread writes: no contention, however many threads lease.
//!
//! # The cutover
//!
//! [`Shared::cut_over`] publishes the new record with one atomic swap of the
//! `current` pointer. A lease validates after incrementing that `current`
//! still points at its record; the increment and the validation, and the swap
//! and the drain's sweep below, are sequentially consistent, so either the
//! lease's increment is seen by the sweep, or the lease sees the swap (a
//! store-buffering argument, checked by the loom models).
//!
//! # The drain
//!
//! After the swap, the old record is switched to *draining* mode, as in
//! Linux's `percpu_ref`: each stripe gets [`DRAINING_BIT`] by one `fetch_or`,
//! which also returns the count frozen at that instant. The sum of the frozen
//! counts is moved into one central counter, which was pre-loaded with a
//! bias so that decrements racing the sweep cannot reach zero early. A lease
//! whose decrement finds the bit set also decrements the central counter;
//! whichever operation brings it to zero (the last lease's drop, or the
//! sweep if nothing was in flight) completes the drain, exactly once.
//!
//! # The asymmetric-fence path
//!
//! Where the platform lets a thread update memory in a *restartable
//! sequence* and the writer restart every such sequence in progress with a
//! process-wide barrier (Linux `rseq` and
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)` on x86-64, see
//! [`super::fence`]), a slot made for it (the default where available;
//! the atomic path is the fallback) counts the leases of its first threads
//! differently: the thread
//! holding index `i` (below `owners`, at most 64 and at most the stripe
//! count; indices are exclusive among live threads, see [`super::stripe`])
//! *owns* the `owned` and `released` counters of stripe `i` of every
//! record, and takes and drops its leases with a plain load and store of
//! one of them: no read-modify-write, no fence. The price is paid by the
//! cutover, as in Linux's `percpu_ref` and liburcu's membarrier flavour.
//! Threads without owned counters (index 64 and above, or no registered
//! `rseq` area) use the atomic path described above (both paths count into
//! the same record; the sweep adds both).
//!
//! *Which path a lease takes* is one test of the head's `gate` against the
//! thread's *owned offset* (a thread-local: where its owned counter is in
//! any record, `stripe::owned`, or a number above every gate if it
//! owns none): the gate is the owned offset of index `owners`, 0 on the
//! atomic path, and negative (as a signed number) while straggler tracking
//! is on, which sends every lease to the path that tracks it. The owned
//! offset is then the counter's address in the record as it is, and the
//! lease keeps it as its stripe; owned offsets are 8 bytes past a cell
//! boundary and the atomic stripes' words on one, so bit [`OWNED`] tells a
//! release which kind it holds.
//!
//! *Owner acquire*, one restartable sequence: load `current`; if that
//! record is `draining`, leave (then retry, or `None` if the slot is
//! closed); if `owned + 1` ends in 16 zero bits, leave, and run the same
//! sequence with the limit check instead (if `owned - released` is at the
//! limit, leave and refuse); else store `owned + 1`: the *commit*, the
//! sequence's last instruction.
//! No validation of `current` is needed: a lease that loaded a record just
//! before the swap is counted on it, as if it had started a moment
//! earlier. *Owner release*, one restartable sequence: if the record is
//! `draining`, leave, and decrement `central` as any release of a draining
//! generation; else store `released + 1` (the commit). *Release on another
//! thread* (a lease that moved, or whose owner gave its index back):
//! `remote.fetch_add(1)` (release); if that word was frozen, decrement
//! `central`.
//!
//! *Two owned counters.* Acquisitions and releases go to two words, so
//! that a lease's store and the next release's load (and that release's
//! store and the next lease's load) are of different words, and a lease
//! reads only its own word but once every 2^16 acquisitions (the limit
//! check). The count is their difference, in wrapping arithmetic.
//!
//! *The sweep*, in two halves around the barrier: `begin_retire` (after
//! the swap or the close) sets `draining`; the barrier is issued;
//! `end_retire` freezes `remote` with a `fetch_or` of
//! [`DRAINING_BIT`] (acquire), reading its count `r`; sum `owned -
//! released` over the owner indices; then freeze the atomic stripes as
//! above. The generation's count is `Σ (owned − released) − r + Σ frozen
//! stripes`, moved into `central` with the bias as before. **The writer
//! waits for no thread.**
//!
//! *Why the sum is exact.* The barrier makes every thread of the process
//! that is running execute a full memory barrier at some instant `F`
//! during the system call, and restarts its restartable sequence if it is
//! inside one; a thread that is not running does both when it is next
//! scheduled, before it runs any user code. Take any owner update of this
//! record (acquire or release):
//!
//! * it committed before its thread's `F`: its store is visible to the
//!   sum, which reads after the barrier;
//! * it had started but not committed at `F` (or when its thread was
//!   preempted, or a signal arrived): the kernel restarts it, so it never
//!   commits as started; its restart loads `draining` after `F`;
//! * it loads `draining` after `F`: that load follows the writer's
//!   `draining` store and swap (both before the barrier), so it sees
//!   `draining` and does not commit: an acquire retries on the new
//!   `current` (or returns `None`), a release goes to `central`.
//!
//! So every owned increment of a lease is in the sum, and so is every owned
//! release; later releases go to `central`. A remote release counted in
//! `r` follows (release/acquire on `remote`) the owner's increment of that
//! lease, which the sum therefore also sees, because the owned counters
//! are read after `remote` was frozen; a remote release after the freeze
//! goes to `central`. The subtraction and the bias use wrapping arithmetic,
//! so owned counters that only go up (leases dropped elsewhere) still sum
//! exactly. After the sweep, no owner update of the record is in progress
//! and none can start while it is unpublished, so a drained record's
//! counters can be reset (in `prepare`) and republished by the swap, as for
//! the atomic path.
//!
//! *One barrier for many records.* The argument asks three things of the
//! barrier: that it follow, in the writer's program order, the swap (or
//! close) and the `draining` store of the record being summed, and that
//! the sum follow it. It asks nothing about other records, or about how
//! long after the `draining` store the barrier comes (a writer preempted
//! there for any time is the same case). So one barrier issued after the
//! `draining` stores of several records, of any slots, serves them all:
//! [`super::CutoverBatch`] (and `Registry::replace_many`, and a registry's
//! drop) begins every retirement of a batch, issues one barrier, then ends
//! them in order (once per 256 waiting retirements, and at its end). Until
//! its `end_retire` a record's central count keeps the bias, so its drain
//! cannot complete, however its leases end meanwhile. Checked by
//! `batched_cutovers_share_one_barrier_and_count_exactly` (a registry's
//! plugins cut over in batches while threads lease, pin and hand leases
//! across threads) and by the litmus test's batched variant, which fails
//! with the barrier compiled out.
//!
//! *The barrier in the drain.* For the same reason a single cutover
//! (`Slot::replace`) does not issue its barrier: it begins the retirement
//! and hands it to the [`Drain`](super::Drain) it returns, which issues the
//! barrier and ends the retirement on its first use that reads the drain's
//! state, or on its last clone's drop (once: under a lock that concurrent
//! first uses wait on, so no count is read before the sweep; the completion,
//! if the sweep found nothing in flight, runs after the lock is released).
//! The argument does not depend on which thread issues the barrier, only
//! on the barrier happening after the `draining` store and before the sum:
//! the `Drain` exists only after `begin_retire` returned, and a clone
//! reaches another thread only through a hand-over that synchronizes (a
//! channel, a lock, a spawn), so the store happens before any barrier a
//! clone issues (and on x86-64, whose stores become visible in order, it is
//! visible to every CPU the barrier interrupts). The key map of a registry (a slot with
//! deferred completion) keeps the barrier in its cutover: its writer ends
//! its retirements itself. Checked by the single-cutover litmus test (which
//! drops each `Drain` at once, so the barrier runs in the drop; it fails
//! with the barrier compiled out) and by
//! `a_drain_ends_the_retirement_its_cutover_left_to_it`.
//!
//! *Signals.* The kernel restarts an owner's update that a signal
//! interrupts, so a lease taken or dropped in a handler, on the
//! interrupted thread, is counted like any other (checked by
//! `leases_taken_in_signal_handlers_are_counted_exactly`, which fails
//! without the restart).
//!
//! *Bounds.* The owned count (acquisitions minus the owner's releases) is
//! refused at 2^53, checked once every 2^16 acquisitions (the others read
//! and write only the acquisitions), so it stays below 2^54, and 64 owned
//! counts and the atomic stripes together stay below half the bias. The
//! path is used on x86-64 only.
//!
//! *What the writer waits for.* Nothing but the barrier's system call
//! (microseconds: it interrupts every CPU running one of our threads). The
//! per-call path stays wait-free apart from the retry after a cutover (a
//! restarted sequence restarts once per interruption).
//!
//! *How it is checked.* Loom cannot model `membarrier` or `rseq`; under
//! `--cfg loom` (and Miri) every slot uses the atomic path, which the loom
//! models cover. The barrier path is covered by the stress tests in
//! `tests/lease_paths.rs` (cross-thread drops, thread churn, 100k replaces
//! with pinned generations and record reuse, batched cutovers) and two
//! litmus tests (one cutover per barrier, and a batch per barrier) that
//! fail when the barrier is compiled out (`--cfg cutover_unsound_no_barrier`).
//!
//! # Taking a lease never completes a drain
//!
//! An increment that does not become a validated lease has to be given
//! back, and if a freeze counted it, giving it back would mean decrementing
//! that generation's central counter, possibly to zero, which would make the
//! caller of `lease()` drop the old value, run `on_drained` callbacks and
//! wakers and take locks. The lease path never does that: an increment a
//! freeze counted is *adopted* instead, i.e. returned as a lease on the
//! generation that freeze belongs to. Only a lease's drop (or the writer's
//! sweep) ever decrements a central counter.
//!
//! The two ways an increment can fail to validate:
//!
//! * **The stripe was already frozen** (the `fetch_add` returned a word with
//!   [`DRAINING_BIT`]): the record is no longer current and this freeze did
//!   not count the increment. The stripe word carries an *epoch*, bumped
//!   whenever the record is reused for a new generation, so the undo can tell
//!   what happened since. Same epoch: still that freeze, a plain undo.
//!   Another epoch and not frozen: reused and live, the increment counted by
//!   no freeze, a plain undo. Another epoch and frozen: the record was
//!   reused, published and retired again, and *that* freeze counted the
//!   increment: adopt it.
//! * **`current` moved on between the load and the increment** (the
//!   validation failed on an unfrozen stripe): if the stripe is still not
//!   frozen, a plain undo (a compare-and-swap, so that a freeze cannot slip
//!   in between); if it is frozen now, the freeze counted the increment:
//!   adopt it.
//!
//! The undo is a compare-and-swap loop that re-reads the word, so the choice
//! between undo and adoption is made atomically with respect to freezes.
//!
//! *Why an adopted lease is correct.* The freeze that counted the increment
//! belongs to the generation the record held at the increment's epoch (a
//! record cannot be reused while a count of it is in a central counter), so
//! that generation cannot complete its drain until the adopted lease is
//! dropped, and its value is alive. Reading it is safe: the word showing the
//! freeze is read with acquire ordering, and the freeze (a `SeqCst` `fetch_or`
//! by the retiring writer, after the swap that unpublished the record, which
//! in turn follows the write of the incarnation) heads the release sequence
//! of that stripe, which only read-modify-writes extend. And it is
//! linearizable: the adopted generation was current at some instant inside
//! the `lease()` call (it was current when `current` was loaded, or it was
//! published after that load, since the record was reused after it, and
//! retired before the undo), so the lease may take effect at that instant. A
//! lease that *starts* after a `replace` returned still never sees the
//! generation that `replace` retired, and per thread, generations never go
//! backwards (the adopted one is at least the one loaded from `current`).
//! What changes is only that a call racing a cutover by a few instructions
//! may run on the old generation, as if it had started a moment earlier.
//!
//! *Why it keeps the drain announcement prompt.* Nothing is handed off or
//! queued: the adopted lease is an ordinary in-flight operation, and its drop
//! completes the drain on the spot, as for any lease. (Before, such a
//! `lease()` call completed the drain itself: no sooner than the end of that
//! call, which the drain now waits for.)
//!
//! # Deferred completion (the registry's key map)
//!
//! A slot made with `defer` (only [`Registry`](crate::Registry)'s key map) also
//! keeps its leases' drops from completing drains: a lookup's lease of the
//! key map ends inside `Registry::lease`, which must not free an old key map
//! (and the entries in it) on the caller's thread. When a release brings such
//! a generation's central counter to zero, it pushes the record onto the
//! slot's `deferred` list, a lock-free (Treiber) stack, and returns. The
//! writer side completes the records on that list: every change to the
//! registry, after releasing the registry's lock, and the slot's drop. Each
//! record is pushed once per generation, by the one release that brought its
//! count to zero, and completed once, by whoever took the list with a swap, so
//! completion stays exactly-once. Nobody waits on a key map's drain, so
//! promptness here only means memory: an old key map whose last reader was a
//! lookup is freed by the next change to the registry, or by its drop.
//!
//! # Completion
//!
//! Completing a drain finalizes the lifecycle, drops the value, announces
//! (wakes blocked waiters and futures, runs callbacks) and puts the record up
//! for reuse. A panic in the value's `Drop`, a waker or a callback is caught
//! and reported as a `tracing` error naming the plugin and generation; the
//! announcement and the reuse happen regardless, and the panic never reaches
//! the thread whose lease drop ended the drain (so a lease dropped during an
//! unwind cannot abort the process this way).
//!
//! # Overflow
//!
//! A stripe's count has `EPOCH_SHIFT` bits (40 on 64-bit targets, 20 on
//! 32-bit ones). A lease whose increment finds the count at [`COUNT_LIMIT`]
//! (half of that range) undoes it and panics, as `Arc` aborts on a reference
//! count overflow: so the count never carries into the epoch, which would
//! make a freeze read 0 under live leases. The stripe count is also capped
//! ([`MAX_STRIPES`]) so that every stripe's frozen count together stays far
//! below the central counter's bias.
//!
//! # Memory
//!
//! A thread that read the `current` pointer just before a cutover may still
//! touch that record's stripe (and fail to validate) after the generation has
//! drained. Records are therefore *type-stable*, as with Linux's
//! `SLAB_TYPESAFE_BY_RCU`: a drained record goes on the slot's free list and
//! is reused for a later generation, and its cells go back to the chunk pool
//! (see `chunk`) only when the slot itself is gone (every handle dropped and
//! every generation drained: no stray reader is left then, as each holds the
//! slot's shared state alive). The plugin value is dropped as soon as its
//! generation drains; only the record's small cells are kept, so a slot's
//! memory is bounded by the largest number of generations ever alive at once.
//!
//! A new record's stripes are not written when it is filled: the pool's
//! stripe cells are zero (a fresh stripe), because chunks come zeroed and a
//! slot's drop zeroes the stripe cells its records wrote before giving them
//! back. Only a reused record of the same slot is reset (its epochs bumped)
//! in `prepare`. So a stripe's memory becomes resident when a thread first
//! leases through it, or when a cutover freezes it.
//!
//! # Memory layout
//!
//! A record is not an allocation of its own but one cell (32 bytes) in each
//! region of a chunk shared by every slot of the process (see `chunk`), so
//! that the lines a lease touches are shared with other plugins' and a
//! registry lookup spread over many plugins misses on few of them:
//!
//! ```text
//! region 0      the record's header: draining, value, generation        read by every lease
//! region 1      the cold part: central, remote, next_deferred, tracker  draining / cross-thread releases
//! region 2      the body: the incarnation                               cutover, completion
//! region i + 3  stripe i: shared, owned, released                       the threads of index i
//! head          (a cell of a dense array of heads) current, mask,       read by every lease
//!               gate (with the tracking bit), owners, closed, defer
//! ```
//!
//! The body is one cell, 32 bytes, whatever the value's type: the
//! lifecycle's cell (empty until someone asks for the lifecycle: see
//! `lifecycle_cell`), when the generation became current (8 bytes: see
//! `Stamp`), the drain signal's cell and the slot's shared state. The
//! straggler tracker (a null pointer until a tracked lease) is in the cold
//! cell. The generation's number and its value are only in the header,
//! whose value pointer owns the value: it holds the strong count that
//! `Arc::into_raw` gave up (see `Hot`), so a trait object's two-word
//! pointer is not kept twice. The slot's shared state, one allocation, is
//! 48 bytes (56 with its one-word count: a `Strong` holds it, an `Arc`
//! without weak references), in the allocator's 64-byte class: the head,
//! the id, the deferred list and the writer's lock with its free list.
//! Nothing derivable is kept: the next generation's number is the current
//! record's plus one, read under the writer lock, and the slot's records
//! are found, when it is dropped, on its free list, where every one of
//! them is by then. (Until session 32 the body was an allocation of its
//! own, 48 bytes with the value's `Arc` in it, or 56 with a trait
//! object's, pointed at from the cold cell; and the shared state had
//! `Arc`'s two counts, in the 80-byte class. BENCHMARKS.md, issue 14, item
//! 2, sessions 29, 31 and 32.)
//!
//! Stripe `i` of a record is at `(i + 3) * REGION + SKEW` bytes from its
//! header (`chunk::stripe_offset`), the same in every slot (both are
//! constants), so a lease's and a
//! release's counter address is the record pointer plus an offset computed
//! from the thread index alone, with no load, as when the stripes followed
//! the header in one allocation; a lease stores its stripe as that byte
//! offset (of the shared word, or of the owned counter), so its drop
//! reaches the counter without reading the header or the slot. Two threads
//! of different indices never write the same counter line of one record
//! (their cells are regions apart); the neighbours of a thread's cell in
//! its line are the same stripe of other records. A
//! slot's head (what every lease reads before the record: see [`Head`]) is a
//! cell of another pool: a dense array of heads only, with no regions after
//! it. (Heads used to take a record's cells, leaving that record's cold and
//! stripe cells unused: 160 of a plugin's bytes with four stripes. Measured
//! in BENCHMARKS.md, issue 14, item 2, session 24: the lookups spread over
//! 10,000 plugins were no slower, as the `registry_floor` model with dense
//! slot cells had predicted.)
//!
//! What a lease reads from the header (the value pointer and the
//! generation, `hot`) is written with the incarnation by `prepare` before
//! publication and cleared with it by the completion, under the same rules;
//! the header's value pointer owns the value (one strong count, taken back
//! and dropped by the completion), and the incarnation (which owns the
//! lifecycle and the drain signal) lives in the record's body.
//!
//! *Why it is safe.* `prepare` takes a record's cells from the pool and
//! writes the header, the cold part, the body and (under loom; elsewhere
//! the pool's are zero already) a fresh stripe for each of the slot's
//! `mask + 1` stripe offsets before the record can be reached, and the
//! slot's drop drops each part once and gives the cells back once. The
//! header is reached through a reference, the other parts only through
//! [`cold`], [`body`] and [`stripe_at`], from the pointer the
//! pool returned (kept in `current`, the free and deferred lists and
//! each lease), which is derived from the chunk's allocation
//! pointer: its provenance covers the whole chunk, whereas a pointer derived
//! from a reference to the header would cover the header only (the Miri
//! runs check this). Offsets come from the slot's own mask (at most
//! [`MAX_STRIPES`], the chunk's stripe regions) and the chunk's constants, so they are
//! always inside the chunk. Everything the protocol above says about "the
//! stripe" holds unchanged: only where the counter lives moved.
//!
//! *Prefetch hints.* A container that finds a slot through its own data
//! structure (the registry) may keep a [`Hint`]: where the current record,
//! this thread's stripe and the value were when it was taken. It is used
//! only as an address for prefetch instructions, which have no effect on the
//! program's semantics (they cannot fault and read nothing the program
//! sees), so a stale hint, e.g. after a cutover or once the value it points
//! at was freed, costs a wasted prefetch and is never dereferenced. Taking a
//! hint reads `current` and the value pointer in that record's header under
//! the slot's writer lock (which keeps the record current, so its header
//! stable) and takes no lease, so it never completes a drain and is safe
//! under the registry's lock.

use std::{
    fmt,
    ptr::NonNull,
    sync::{atomic::Ordering, Arc},
};

use super::{
    chunk::{self, stripe_offset, BODY, CELL, COLD},
    fence,
    lifecycle_cell::LifecycleCell,
    signal::{DrainSignal, Stamp},
    stripe::{
        owned, owner_index, thread_stripe, Owned, COUNT_LIMIT, COUNT_MASK, DRAINING_BIT, EPOCH_MASK, EPOCH_SHIFT,
        MAX_STRIPES, NO_OWNED_OFFSET,
    },
    strong::Strong,
    tracking::{Straggler, Tracker},
    Finalize,
};
use crate::{
    lifecycle::{EpochFencedReload, LifecycleState, SharedLifecycle},
    sync::{lock, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Mutex, UnsafeCell},
    PluginId,
};

/// Pre-loaded into the central counter of a generation, so that it cannot
/// reach zero before the sweep has added the frozen stripe counts.
const BIAS: usize = 1 << (usize::BITS - 2);

// Every stripe at its limit, plus a stray per thread, stays far below the bias.
const _: () = assert!(MAX_STRIPES.checked_mul(COUNT_LIMIT).is_some() && MAX_STRIPES * COUNT_LIMIT <= BIAS / 4);

/// Where a stripe's owned counter is, from the stripe's start.
const OWNED_COUNTER: usize = std::mem::offset_of!(Stripe, owned);
// The owners' restartable sequences find `released` right after `owned`.
const _: () = assert!(std::mem::offset_of!(Stripe, released) == OWNED_COUNTER + 8 || usize::BITS < 64);

/// Set in a lease's stripe (the offset of the counter it was counted on)
/// when that counter is an owned one (the asymmetric-fence path): stripes
/// are cells, so their shared words are at multiples of [`CELL`], and the
/// owned counters [`OWNED_COUNTER`] bytes past them. One bit test tells the
/// two apart, and the offset needs no unmasking.
#[cfg(not(loom))]
pub(crate) const OWNED: usize = OWNED_COUNTER;
#[cfg(not(loom))]
const _: () = assert!(OWNED.is_power_of_two() && OWNED < CELL && chunk::SKEW % CELL == 0 && chunk::REGION % CELL == 0);
/// Under loom (whose atomics are larger) no lease is counted on an owned
/// counter: a bit no stripe offset has.
#[cfg(loom)]
pub(crate) const OWNED: usize = 1 << (usize::BITS - 1);

/// The offset in a record of the owned counter of thread index `index`
/// (`stripe::owned`), or `NO_OWNED_OFFSET` if no slot has that
/// many owners. (Unused under loom, whose threads never own a counter.)
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const fn owned_offset_of(index: usize) -> usize {
    // (`MAX_OWNERS` is at most `MAX_STRIPES`, asserted below.)
    if index < fence::MAX_OWNERS {
        owned_counter(index)
    } else {
        NO_OWNED_OFFSET
    }
}

/// Where index `index`'s owned counter would be in a record: also the gate
/// of a slot with `index` owners (see [`Head::gate`]).
const fn owned_counter(index: usize) -> usize {
    stripe_offset(index) + OWNED_COUNTER
}

/// Set in [`Head::gate`] while straggler tracking is on: the gate is then
/// negative, as a signed number, and no lease takes the inlined owned path
/// (which does not track).
const TRACKING: u32 = 1 << 31;
// Every gate (an owned offset, at most that of index `MAX_STRIPES`) is a
// positive `i32`.
const _: () = assert!(owned_counter(MAX_STRIPES) < TRACKING as usize);
const _: () = assert!(fence::MAX_OWNERS <= MAX_STRIPES);

/// Where an owned count (acquisitions minus the owner's own releases) is
/// refused: 2^53. The count is compared with it once every 2^16
/// acquisitions (see `fence::owned_acquire`), so it never exceeds 2^53 +
/// 2^16 < 2^54. With at most [`fence::MAX_OWNERS`] (64) owned counters
/// that keeps their sum below 2^60, and with the atomic stripes' at most
/// 2^60, below half the bias. Releases on other threads do not lower an
/// owned counter, so it also bounds the leases one thread may take in one
/// generation if all of them are dropped elsewhere: 2^53, about 285 years
/// at one lease per microsecond. (Only used on 64-bit targets.)
const OWNED_LIMIT: usize = (1u64 << 53) as usize;

/// The counters of one stripe: the atomic word threads without a counter of
/// their own increment (count, epoch and [`DRAINING_BIT`]), and the counter
/// the thread owning this index updates with plain stores (asymmetric-fence
/// path only). A record's stripe `i` is its cell in stripe region `i` of
/// its chunk (see "Memory layout" in the module docs), written by one
/// thread at a time in the common case.
#[derive(Default)]
#[repr(C)]
struct Stripe {
    shared: AtomicUsize,
    /// The owner's acquisitions, and (next word) its own releases: two
    /// counters rather than their difference, so that a lease and the
    /// release after it do not wait for each other's store (see "Two owned
    /// counters" in the module docs). The owned count is `owned -
    /// released`, in wrapping arithmetic.
    owned: AtomicUsize,
    released: AtomicUsize,
}

/// The part of a record written by releases on the draining (`central`)
/// and cross-thread (`remote`) paths, away from the line every lease reads.
struct Tail {
    central: AtomicUsize,
    /// Releases of owned-counter leases made on other threads than the
    /// owner (count), and [`DRAINING_BIT`] once the sweep froze it.
    remote: AtomicUsize,
}

/// What a live generation holds, but for its value (whose strong count the
/// record's header holds: see [`Hot`]). Written only while its record is
/// not reachable by any lease (before publication, or after the drain).
pub(crate) struct Incarnation<T: ?Sized + 'static> {
    /// Made on request for a generation the slot made (see `lifecycle_cell`).
    lifecycle: LifecycleCell,
    /// When the generation became current (the origin of its drain
    /// signal's instants). (Its number is in the record's header.)
    activated_at: Stamp,
    /// The generation's drain signal, made at its cutover.
    signal: SignalCell,
    /// Keeps the slot's shared state (and so this record's memory) alive
    /// while the generation lives. Released when the drain completes.
    keep: Strong<Shared<T>>,
}

impl<T: ?Sized + 'static> Incarnation<T> {
    /// The generation's lifecycle (made now if nobody asked before).
    pub(crate) fn lifecycle(&self) -> SharedLifecycle {
        self.lifecycle.get(&self.keep.id)
    }
}

/// A generation's [`DrainSignal`], made when the generation is retired, not
/// when it is published: most generations are never retired while their
/// plugin lives, and a signal takes 120 bytes.
///
/// Set once, by `begin_retire` (release), before `end_retire` removes the
/// central counter's bias. Read by leases, which ask whether their
/// generation was cancelled (acquire: empty means not retired, so not
/// cancelled), and by the drain's completion, which follows the bias
/// removal (the central counter's release sequence), so always finds it
/// set.
struct SignalCell(AtomicPtr<DrainSignal>);

impl SignalCell {
    fn empty() -> Self {
        Self(AtomicPtr::new(std::ptr::null_mut()))
    }

    /// Install `signal`. Called once per generation, by its retirer.
    fn set(&self, signal: &Arc<DrainSignal>) {
        let old = self.0.swap(Arc::into_raw(Arc::clone(signal)).cast_mut(), Ordering::AcqRel);
        debug_assert!(old.is_null(), "a generation retired twice");
    }

    fn get(&self) -> Option<&DrainSignal> {
        // SAFETY: a non-null pointer came from `Arc::into_raw` in `set`, and
        // that strong count is given back only by `take`, which has `&mut`
        // access or is called once no reader remains.
        unsafe { self.0.load(Ordering::Acquire).as_ref() }
    }

    fn take(&self) -> Option<Arc<DrainSignal>> {
        let ptr = self.0.swap(std::ptr::null_mut(), Ordering::Acquire);
        // SAFETY: from `Arc::into_raw` in `set`; the swap hands its strong
        // count to exactly one caller.
        (!ptr.is_null()).then(|| unsafe { Arc::from_raw(ptr) })
    }
}

impl Drop for SignalCell {
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// The part of a record that only draining and cross-thread releases, the
/// deferred list, the writer and tracked leases touch: its cell in the
/// chunk's second region (see "Memory layout" in the module docs).
struct Cold<T: ?Sized + 'static> {
    tail: Tail,
    /// The next record on the slot's `deferred` list, or, once the record
    /// is drained and completed, on the writer's free list. A record is on
    /// at most one of them: `complete` puts it on the free list, and
    /// `run_deferred` reads the deferred link before it completes.
    next_deferred: AtomicPtr<Record<T>>,
    /// Leases taken with straggler tracking on (empty when it is off). Kept
    /// for the record's life, across its generations.
    tracker: Tracker,
}

/// The incarnation of the record's generation (which owns the lifecycle
/// and, once retired, the drain signal, and holds the slot alive): its cell
/// in the chunk's third region (see "Memory layout" in the module docs).
struct Body<T: ?Sized + 'static> {
    incarnation: UnsafeCell<Option<Incarnation<T>>>,
}

// The shared state is one allocation per slot: 48 bytes, 56 with its
// `Strong`'s count, so 64 with the allocator's header (with `Arc`'s two
// counts it was 80). (Not under loom, whose atomics and locks are larger.)
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Shared<u64>>() <= 48);

/// What a lease reads from its generation, next to the `draining` flag:
/// its value and its number.
///
/// `value` is also where the generation keeps its value alive: it holds the
/// strong count that `Arc::into_raw` gave up when `prepare` stored it, and
/// [`complete`] takes it back (`Arc::from_raw`) and drops it, so the value
/// lives exactly as long as the `Hot` is set. (Not in the body as an `Arc`
/// with a copy of its pointer here: a trait object's pointer is two words,
/// which the body would pay for a second time.)
struct Hot<T: ?Sized + 'static> {
    value: NonNull<T>,
    generation: u64,
}

impl<T: ?Sized + 'static> Clone for Hot<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized + 'static> Copy for Hot<T> {}

/// One generation's header: what every lease reads. Its cold part and its
/// stripes are its cells in the chunk's other regions (see "Memory layout"
/// in the module docs); reach them with [`cold`] and [`stripe_at`] from the
/// pointer the chunk pool returned, never from a reference to the header.
#[repr(C)]
pub(crate) struct Record<T: ?Sized + 'static> {
    /// Set by the cutover (after the swap, before the barrier): owners stop
    /// updating their counters with plain stores. The record's first byte:
    /// the owners' restartable sequences test it there (see `fence`).
    draining: AtomicBool,
    /// Written only while no lease can read it, as the incarnation it copies
    /// (`None` while the record is free).
    hot: UnsafeCell<Option<Hot<T>>>,
}

// The owners' restartable sequences test a record's first byte; a record's
// parts each fit one cell (a fat value pointer included).
const _: () = assert!(std::mem::offset_of!(Record<u8>, draining) == 0);
const _: () = assert!(std::mem::size_of::<Record<dyn std::any::Any + Send + Sync>>() <= CELL);
const _: () = assert!(std::mem::size_of::<Cold<dyn std::any::Any + Send + Sync>>() <= CELL);
const _: () = assert!(std::mem::size_of::<Body<dyn std::any::Any + Send + Sync>>() <= CELL);
const _: () = assert!(std::mem::size_of::<Stripe>() <= CELL);

/// The cold part of the record at `record`.
///
/// # Safety
/// `record` is a record of a live slot (one `prepare` filled), derived from
/// the pointer the chunk pool returned, and stays allocated for `'a`.
#[inline(always)]
unsafe fn cold<'a, T: ?Sized + 'static>(record: NonNull<Record<T>>) -> &'a Cold<T> {
    // SAFETY: forwarded from the caller: the cell is inside the chunk, was
    // written by `prepare`, and `record`'s provenance covers the chunk.
    unsafe { &*record.as_ptr().cast::<u8>().add(COLD).cast::<Cold<T>>() }
}

/// The body of the record at `record`.
///
/// # Safety
/// As for [`cold`].
#[inline(always)]
unsafe fn body<'a, T: ?Sized + 'static>(record: NonNull<Record<T>>) -> &'a Body<T> {
    // SAFETY: forwarded from the caller: the cell is inside the chunk, was
    // written by `prepare`, and `record`'s provenance covers the chunk.
    unsafe { &*record.as_ptr().cast::<u8>().add(BODY).cast::<Body<T>>() }
}

/// The stripe at byte `offset` of the record at `record`.
///
/// # Safety
/// `record` points at a record of a slot that is still allocated for `'a`
/// (filled by [`Shared::prepare`]), and was derived from the pointer the
/// chunk pool returned (not from a reference to the header); `offset` is
/// [`Shared::offset`] of a stripe index of its slot.
#[inline(always)]
unsafe fn stripe_at<'a, T: ?Sized + 'static>(record: *const Record<T>, offset: usize) -> &'a Stripe {
    // SAFETY: forwarded from the caller: the stripe lies inside the record's
    // chunk, initialized by `prepare`, and `record`'s provenance covers
    // the whole chunk.
    unsafe { &*record.cast::<u8>().add(offset).cast::<Stripe>() }
}

/// What only the slot's writer lock holder touches. (The next generation's
/// number is not kept: it is the current one's plus one, read from the
/// current record's header under this lock, since every record `prepare`
/// fills is published before the lock is released.)
struct Writer<T: ?Sized + 'static> {
    /// Drained records, ready for reuse: a stack linked through the
    /// records' `Cold::next_deferred` (so a slot pays one word for it, and
    /// nothing more when it is reloaded). When the slot's shared state is
    /// dropped, every record the slot ever took is on it (see the drop), so
    /// it is also how they are freed: no list of all records is kept.
    free: Option<NonNull<Record<T>>>,
}

impl<T: ?Sized + 'static> Writer<T> {
    /// Put a drained record up for reuse.
    ///
    /// # Safety
    /// `record` is a record of this writer's slot (filled by
    /// [`Shared::prepare`]) whose generation is complete, and it is on no
    /// list (neither free nor deferred).
    unsafe fn push_free(&mut self, record: NonNull<Record<T>>) {
        let below = self.free.map_or(std::ptr::null_mut(), NonNull::as_ptr);
        // SAFETY: the record stays allocated while its slot's shared state
        // (which owns this writer) lives; nothing else reads the link of a
        // record on no list, and the writer lock orders our accesses.
        unsafe { cold(record) }.next_deferred.store(below, Ordering::Relaxed);
        self.free = Some(record);
    }

    /// Take a drained record for reuse, if there is one.
    fn pop_free(&mut self) -> Option<NonNull<Record<T>>> {
        let record = self.free?;
        // SAFETY: as in `push_free`: a record on the free list is allocated,
        // and its link is written only by `push_free` (under the writer lock)
        // until it is taken off here.
        self.free = NonNull::new(unsafe { cold(record) }.next_deferred.load(Ordering::Relaxed));
        Some(record)
    }
}

/// A slot's head: what every lease reads before it reaches a record (the
/// current record, the slot's stripe mask and owner count, the tracking
/// flag). It is one cell of a dense array of heads (see "Memory layout" in
/// the module docs): so a lookup spread over many slots finds it among
/// other heads, not in an allocation of its own.
#[repr(C)]
pub(crate) struct Head<T: ?Sized + 'static> {
    current: AtomicPtr<Record<T>>,
    mask: u32,
    /// The per-call path's one test: a thread whose owned counter's offset
    /// (`stripe::owned`) is below this, as signed numbers, leases on
    /// the asymmetric-fence path, inlined. The owned offset of index
    /// `owners` on that path, 0 on the atomic path; [`TRACKING`] set while
    /// straggler tracking is on (which sends every lease to the path that
    /// tracks it).
    gate: AtomicU32,
    /// The shared state that owns this head (for the rare paths).
    shared: NonNull<Shared<T>>,
    /// Thread indices below this own a counter of each record and lease on
    /// the asymmetric-fence path; 0 on the atomic path (see the module
    /// docs). At most `fence::MAX_OWNERS`.
    owners: u8,
    /// Set once by [`Shared::close`]: the slot has no current generation.
    closed: AtomicBool,
    /// Completions by a lease's drop are deferred to the writer side (see
    /// the module docs). Fixed at construction. (Here, in the head's spare
    /// bytes, rather than in the shared state, which it would grow by a
    /// word.)
    defer: bool,
}

const _: () = assert!(std::mem::size_of::<Head<dyn std::any::Any + Send + Sync>>() <= CELL);

/// The state a slot shares with its live generations and drain handles.
pub(crate) struct Shared<T: ?Sized + 'static> {
    /// This slot's head, owned by it (see [`Head`]); freed with it.
    head: NonNull<Head<T>>,
    pub(crate) id: PluginId,
    /// Drained records whose completion was deferred: a lock-free stack
    /// linked through `Record::next_deferred`.
    deferred: AtomicPtr<Record<T>>,
    writer: Mutex<Writer<T>>,
}

// SAFETY: the raw record pointers are owned by `Shared` (allocated and freed
// only here); the values they hold are `Send + Sync`, and every access to a
// record's non-atomic part follows the protocol in the module docs.
unsafe impl<T: ?Sized + Send + Sync + 'static> Send for Shared<T> {}
// SAFETY: as above; shared access is through atomics or protocol-guarded cells.
unsafe impl<T: ?Sized + Send + Sync + 'static> Sync for Shared<T> {}

/// A generation whose retirement has begun ([`Shared::begin_retire`]) and
/// not yet ended ([`Shared::end_retire`]): its drain cannot complete in
/// between, so a `Retiring` must be ended (the barrier first, if its slot
/// needs one).
#[must_use = "a retirement that is not ended never drains"]
pub(crate) struct Retiring<T: ?Sized + 'static> {
    record: NonNull<Record<T>>,
    signal: Arc<DrainSignal>,
}

impl<T: ?Sized + 'static> Retiring<T> {
    /// The drain's signal.
    pub(crate) fn signal(&self) -> &Arc<DrainSignal> {
        &self.signal
    }

    /// The retiring record.
    pub(crate) fn record(&self) -> NonNull<Record<T>> {
        self.record
    }
}

/// What [`Shared::end_retire_leaving_completion`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Nothing was in flight: the caller completes the drain.
    Drained,
    /// Leases are in flight: the last one's release completes it.
    InFlight,
}

/// A successful acquisition: the record, the stripe, and what the lease needs.
pub(crate) struct Acquired<T: ?Sized + 'static> {
    pub(crate) record: NonNull<Record<T>>,
    /// The byte offset, in the record's chunk, of the counter the lease was
    /// counted on: a stripe's shared word, or (with the [`OWNED`] bit) an
    /// owned counter.
    pub(crate) stripe: usize,
    pub(crate) value: NonNull<T>,
    pub(crate) generation: u64,
    /// The straggler-tracking ticket, 0 if untracked.
    pub(crate) ticket: u64,
}

/// A count held on one stripe of a record, not yet a lease: what the
/// out-of-line part of [`Shared::acquire`] returns (two words, so in
/// registers), which the inlined part turns into an [`Acquired`].
struct Counted<T: ?Sized + 'static> {
    record: NonNull<Record<T>>,
    /// As [`Acquired::stripe`].
    stripe: usize,
}

impl<T: ?Sized + 'static> Counted<T> {
    /// # Safety
    /// `record` is a record allocation pointer taken from `current` (never
    /// null), and the caller holds a count on `stripe` of it that keeps its
    /// incarnation from completing; the incarnation's write happens before
    /// this call. The count passes to the `Counted`.
    #[inline(always)]
    unsafe fn new(record: *mut Record<T>, stripe: usize) -> Self {
        // SAFETY: forwarded from the caller: `record` is not null.
        Self { record: unsafe { NonNull::new_unchecked(record) }, stripe }
    }
}

/// What became of an increment that did not validate.
#[derive(PartialEq, Eq)]
enum Undo {
    /// Given back: no freeze counted it.
    Undone,
    /// A freeze counted it: it is now a lease on that freeze's generation.
    Adopted,
}

/// Give back one increment of `counter`, unless `counted(word)` says a freeze
/// counted it, in which case it is adopted. One compare-and-swap loop, so
/// that no freeze slips in between the decision and the undo.
fn undo_or_adopt(counter: &AtomicUsize, counted: impl Fn(usize) -> bool) -> Undo {
    // Acquire: having seen a freeze, we may read the frozen generation's
    // incarnation (see "Why an adopted lease is correct").
    let mut word = counter.load(Ordering::Acquire);
    loop {
        if counted(word) {
            return Undo::Adopted;
        }
        match counter.compare_exchange_weak(word, word.wrapping_sub(1), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Undo::Undone,
            Err(seen) => word = seen,
        }
    }
}

impl<T: ?Sized + 'static> Head<T> {
    /// The slot's stripe count minus one.
    #[inline(always)]
    fn mask(&self) -> usize {
        self.mask as usize
    }

    /// Thread indices below this own a counter (0: the atomic path).
    #[inline(always)]
    fn owners(&self) -> usize {
        self.owners as usize
    }

    /// The byte offset of the stripe thread index `index` uses, from each
    /// of this slot's records.
    #[inline(always)]
    fn offset(&self, index: usize) -> usize {
        stripe_offset(index & self.mask())
    }

    /// Turn straggler tracking on or off for leases taken from now on.
    pub(crate) fn set_tracking(&self, on: bool) {
        if on {
            self.gate.fetch_or(TRACKING, Ordering::Relaxed);
        } else {
            self.gate.fetch_and(!TRACKING, Ordering::Relaxed);
        }
    }

    /// Whether straggler tracking is on.
    #[inline(always)]
    pub(crate) fn tracking(&self) -> bool {
        self.gate.load(Ordering::Relaxed) & TRACKING != 0
    }

    /// Whether a thread with `owned` (see `stripe::owned`) leases this slot
    /// on its owned counter: its offset is below the gate, as signed
    /// numbers (see [`Head::gate`]).
    #[inline(always)]
    fn owns(&self, owned: Owned) -> bool {
        (owned.offset as isize) < self.gate.load(Ordering::Relaxed) as i32 as isize
    }

    /// The shared state that owns this head, as the pointer of the
    /// `Strong` that holds it (its provenance covers the `Strong`'s count:
    /// see `SlotRef`).
    #[inline(always)]
    pub(crate) fn shared_ptr(&self) -> NonNull<Shared<T>> {
        self.shared
    }

    /// The shared state that owns this head.
    #[inline(always)]
    pub(crate) fn shared(&self) -> &Shared<T> {
        // SAFETY: the shared state owns this head and frees it in its drop,
        // so it is alive while the head is.
        unsafe { self.shared.as_ref() }
    }
}

impl<T: ?Sized + Send + Sync + 'static> Head<T> {
    /// Whether `record` is the slot's current generation: one load of
    /// `current` (sequentially consistent, as a lease's validation). Meant
    /// for a record the caller holds a lease on: a leased record cannot
    /// drain, so it cannot be reused and published again, and equality
    /// means no cutover happened since it was leased.
    #[inline(always)]
    pub(crate) fn is_current(&self, record: NonNull<Record<T>>) -> bool {
        self.current.load(Ordering::SeqCst) == record.as_ptr()
    }

    /// Take a lease on the current generation: the per-call path. `None`
    /// only once the slot is closed. Never completes a drain (see the module
    /// docs).
    ///
    /// # Panics
    /// If the stripe already counts [`COUNT_LIMIT`] leases (leaked ones,
    /// typically); the increment is undone first.
    #[inline(always)]
    pub(crate) fn acquire(&self) -> Option<Acquired<T>> {
        // The asymmetric-fence path's common case is inlined (a few plain
        // instructions and no call); everything else is out of line. One
        // thread-local load and one compare with the gate choose: the owned
        // offset is `NO_OWNED_OFFSET` (above every gate) on threads that own
        // no counter, and the gate is 0 on the atomic path and negative
        // while tracking is on. (Testing the gate for 0 first, to spare the
        // atomic path the thread-local load, cost the default path more
        // than it saved the fallback: BENCHMARKS.md, session 33.)
        let owned = owned();
        if self.owns(owned) {
            return Some(self.leased_untracked(self.acquire_owned(owned)?));
        }
        Some(self.leased(self.count()?))
    }

    /// The counting part of [`acquire`](Self::acquire), out of line: its
    /// result fits in two registers, so the caller reads the generation
    /// and value itself (from the record line it is about to use) instead
    /// of receiving a five-word `Acquired` through memory.
    #[inline(never)]
    fn count(&self) -> Option<Counted<T>> {
        // An owner thread's lease gets here only while tracking is on (the
        // atomic path then counts it, and `leased` tracks it).
        match owner_index() {
            Some(index) => self.acquire_atomic(index),
            None => self.acquire_first(),
        }
    }

    /// [`acquire`](Self::acquire) on a thread that has no index yet (its
    /// first lease) or no longer has one (thread teardown).
    #[cold]
    #[inline(never)]
    fn acquire_first(&self) -> Option<Counted<T>> {
        let stripe = thread_stripe();
        let owned = owned();
        if self.owns(owned) {
            return self.acquire_owned(owned);
        }
        self.acquire_atomic(stripe)
    }

    /// The asymmetric-fence path: a plain increment of the counter this
    /// thread owns, at `offset` in each record ([`owned`]), in a
    /// restartable sequence (see the module docs).
    #[inline(always)]
    fn acquire_owned(&self, owned: Owned) -> Option<Counted<T>> {
        let Owned { offset, rseq_cs } = owned;
        loop {
            // SAFETY: `current` always points at a live record of this slot
            // (records stay allocated while `self` lives, and the caller
            // borrows `self`), whose first byte is `draining`; `offset` is
            // this thread's owned counter in it, which only this thread
            // writes (it holds `index < owners`, exclusively among live
            // threads, and its `rseq` area is registered: see
            // `stripe::thread_stripe`); the writer marks records draining
            // (`begin_retire`), then runs the barrier, then sums
            // (`end_retire`).
            let (ptr, update) = unsafe { fence::owned_acquire(rseq_cs, self.current_ptr(), offset) };
            let ptr = ptr.cast::<Record<T>>();
            if update == fence::Update::Done {
                // SAFETY: the increment is counted by the generation's sweep
                // (it committed before the barrier), so the generation cannot
                // complete until we release; its incarnation was written
                // before the record was published.
                return Some(unsafe { Counted::new(ptr, offset) });
            }
            // SAFETY: as above.
            if let Some(counted) = unsafe { self.acquire_owned_rare(owned, update) }? {
                return Some(counted);
            }
        }
    }

    /// The rare outcomes of an owned acquisition: a draining record (retry,
    /// unless the slot is closed), or the count due for its limit check.
    /// `Some(None)`: retry.
    ///
    /// # Safety
    /// As for the call to `fence::owned_acquire` in
    /// [`acquire_owned`](Self::acquire_owned).
    #[cold]
    #[inline(never)]
    unsafe fn acquire_owned_rare(&self, owned: Owned, update: fence::Update) -> Option<Option<Counted<T>>> {
        let Owned { offset, rseq_cs } = owned;
        let update = match update {
            fence::Update::Check => {
                // SAFETY: forwarded from the caller.
                let (ptr, update) =
                    unsafe { fence::owned_acquire_checked(rseq_cs, self.current_ptr(), offset, OWNED_LIMIT) };
                if update == fence::Update::Done {
                    // SAFETY: as in `acquire_owned`.
                    return Some(Some(unsafe { Counted::new(ptr.cast(), offset) }));
                }
                update
            }
            other => other,
        };
        match update {
            fence::Update::Draining => {
                // Having seen the flag, the retry's load of `current` sees
                // the swap (or `closed`) that came before it (x86-64
                // keeps loads in order; `closed` is read `SeqCst`).
                if self.closed.load(Ordering::SeqCst) {
                    None
                } else {
                    Some(None)
                }
            }
            fence::Update::AtLimit => self.refuse(OWNED_LIMIT),
            fence::Update::Done | fence::Update::Check => Some(None),
        }
    }

    /// The address of `current`, for the owners' restartable sequences.
    #[cfg(not(loom))]
    #[inline(always)]
    fn current_ptr(&self) -> *const *mut u8 {
        self.current.as_ptr().cast_const().cast()
    }

    /// Loom models run the atomic path only.
    #[cfg(loom)]
    fn current_ptr(&self) -> *const *mut u8 {
        unreachable!("no owners under loom")
    }

    /// Refuse a lease at a counter's limit.
    #[cold]
    #[inline(never)]
    fn refuse(&self, limit: usize) -> ! {
        panic!(
            "cutover: plugin `{}`: {limit} leases are held at once on one lease counter, the most it can count; \
             leases are being leaked (e.g. with mem::forget) or accumulated without bound",
            self.shared().id
        );
    }

    /// The atomic path: one `fetch_add` on the stripe `index` selects.
    #[inline]
    fn acquire_atomic(&self, index: usize) -> Option<Counted<T>> {
        let stripe = self.offset(index);
        loop {
            let ptr = self.current.load(Ordering::Acquire);
            // SAFETY: `current` always points at a record on the slot's list
            // (as its allocation pointer), which stays allocated while `self`
            // lives, and the caller borrows `self`; `stripe` is the offset of
            // a stripe index of this slot.
            let counter = &unsafe { stripe_at(ptr, stripe) }.shared;
            // SeqCst, as it pairs with the drain's freeze and the swap; its
            // acquire half also means that having seen a frozen stripe, the
            // next read of `current` sees the record that replaced this one.
            let before = counter.fetch_add(1, Ordering::SeqCst);
            if before & (DRAINING_BIT | COUNT_LIMIT) != 0 {
                // SAFETY: we hold the increment we just made on `stripe` of `ptr`.
                match unsafe { self.acquire_cold(ptr, stripe, before) } {
                    Acquire::Leased(counted) => return Some(counted),
                    Acquire::Closed => return None,
                    Acquire::Retry => continue,
                }
            }
            if self.current.load(Ordering::SeqCst) == ptr {
                // SAFETY: validated: the record was current after our
                // increment, so its drain cannot complete (and the record
                // cannot be reused) until we release; its incarnation was
                // written before it was published by the swap we just read.
                return Some(unsafe { Counted::new(ptr, stripe) });
            }
            // Replaced between our load and our increment: undo, or adopt if
            // the old record's freeze already counted us.
            if undo_or_adopt(counter, |word| word & DRAINING_BIT != 0) == Undo::Adopted {
                // SAFETY: a freeze counted our increment (see the module docs).
                return Some(unsafe { Counted::new(ptr, stripe) });
            }
        }
    }

    /// The rare cases of [`acquire`](Self::acquire): the stripe was frozen,
    /// or its count at the limit.
    ///
    /// # Safety
    /// The caller made one increment on the stripe at offset `stripe` of
    /// `ptr`, which returned `before`, and gives it up here.
    #[cold]
    #[inline(never)]
    unsafe fn acquire_cold(&self, ptr: *mut Record<T>, stripe: usize, before: usize) -> Acquire<T> {
        // SAFETY: the caller borrows `self`, so the record is allocated.
        let counter = &unsafe { stripe_at(ptr, stripe) }.shared;
        if before & DRAINING_BIT != 0 {
            // A stray increment of a frozen stripe: that freeze did not count
            // it, a freeze of a later epoch would have.
            let epoch = before & EPOCH_MASK;
            if undo_or_adopt(counter, |word| word & DRAINING_BIT != 0 && word & EPOCH_MASK != epoch) == Undo::Adopted {
                // SAFETY: the freeze of a later epoch counted our increment.
                return Acquire::Leased(unsafe { Counted::new(ptr, stripe) });
            }
            if self.closed.load(Ordering::SeqCst) {
                return Acquire::Closed;
            }
            #[cfg(loom)]
            loom::thread::yield_now();
            return Acquire::Retry;
        }
        // The count is at the limit: refuse, unless a freeze already counted
        // the increment (then it is a lease like any other, below the limit
        // of what the central counter can hold).
        if undo_or_adopt(counter, |word| word & DRAINING_BIT != 0) == Undo::Adopted {
            // SAFETY: a freeze counted our increment.
            return Acquire::Leased(unsafe { Counted::new(ptr, stripe) });
        }
        self.refuse(COUNT_LIMIT)
    }

    /// Turn a count into the acquisition of a lease on its record's current
    /// incarnation; the count passes to the lease. Tracked if tracking is
    /// on.
    #[inline(always)]
    fn leased(&self, counted: Counted<T>) -> Acquired<T> {
        let (record, owned) = (counted.record, counted.stripe & OWNED != 0);
        let mut acquired = self.leased_untracked(counted);
        // An owned-counter lease is never tracked (`end_lease` relies on
        // it): one taken here raced tracking being turned on, as a lease
        // taken inline may.
        if !owned && self.tracking() {
            // SAFETY: the lease keeps the record live.
            acquired.ticket = unsafe { cold(record) }.tracker.track();
        }
        acquired
    }

    /// [`leased`](Self::leased) without straggler tracking: for the inlined
    /// owned path, which the gate keeps from running while tracking is on.
    #[inline(always)]
    fn leased_untracked(&self, counted: Counted<T>) -> Acquired<T> {
        let Counted { record, stripe } = counted;
        // SAFETY: a `Counted` holds a count on `stripe` of `record` that keeps
        // its incarnation from completing, and that incarnation was written
        // before (see `Counted::new`).
        let rec = unsafe { record.as_ref() };
        // SAFETY: as above: no one writes `hot` while the count is held.
        let hot = rec.hot.with(|cell| unsafe { *cell });
        debug_assert!(hot.is_some(), "leased generation record without a value");
        // SAFETY: a counted generation always has an incarnation: `prepare`
        // writes `hot` before the record is published, and only the
        // completion, once no count remains, clears it.
        let Hot { value, generation } = unsafe { hot.unwrap_unchecked() };
        Acquired { record, stripe, value, generation, ticket: 0 }
    }
}

impl<T: ?Sized + 'static> Shared<T> {
    /// This slot's head.
    #[inline(always)]
    pub(crate) fn head(&self) -> &Head<T> {
        // SAFETY: the head is ours, written in `new` and freed in our drop.
        unsafe { self.head.as_ref() }
    }

    /// The byte offset of the stripe thread index `index` uses, in each of
    /// this slot's records.
    #[inline(always)]
    fn offset(&self, index: usize) -> usize {
        self.head().offset(index)
    }

    /// The offsets of every stripe of a record.
    fn offsets(&self) -> impl Iterator<Item = usize> + '_ {
        (0..=self.head().mask()).map(|index| self.offset(index))
    }
}

impl<T: ?Sized + Send + Sync + 'static> Shared<T> {
    /// A slot serving `value` as generation 1, with `lifecycle` set `Active`.
    /// With `defer`, completions by lease drops are left to the writer side.
    /// Its records have `stripes` counters (rounded up to a power of two, at
    /// most [`MAX_STRIPES`]).
    pub(crate) fn new(
        id: PluginId,
        value: Arc<T>,
        lifecycle: Option<SharedLifecycle>,
        stripes: usize,
        defer: bool,
        asymmetric: bool,
    ) -> Strong<Self> {
        let stripes = stripes.clamp(1, MAX_STRIPES).next_power_of_two();
        let owners = if asymmetric && usize::BITS >= 64 { stripes.min(fence::MAX_OWNERS) } else { 0 };
        let shared = Strong::new_cyclic(|back: NonNull<Self>| {
            let head = chunk::take_head().cast::<Head<T>>();
            // SAFETY: the pool gave us the cell (aligned and large enough
            // for a head); nothing else can reach it yet.
            unsafe {
                head.as_ptr().write(Head {
                    current: AtomicPtr::new(std::ptr::null_mut()),
                    mask: (stripes - 1) as u32,
                    gate: AtomicU32::new(if owners == 0 { 0 } else { owned_counter(owners) as u32 }),
                    owners: owners as u8,
                    shared: back,
                    closed: AtomicBool::new(false),
                    defer,
                })
            };
            Self { head, id, deferred: AtomicPtr::new(std::ptr::null_mut()), writer: Mutex::new(Writer { free: None }) }
        });
        {
            let mut writer = lock(&shared.writer);
            let (record, _) = Self::prepare(&shared, &mut writer, value, lifecycle);
            shared.head().current.store(record.as_ptr(), Ordering::SeqCst);
        }
        shared
    }

    /// Thread indices that own a counter (0: the atomic path).
    pub(crate) fn owners(&self) -> usize {
        self.head().owners()
    }

    /// A lease on the current generation (see [`Head::acquire`]).
    #[inline(always)]
    pub(crate) fn acquire(&self) -> Option<Acquired<T>> {
        self.head().acquire()
    }

    /// Make a drained record of this slot, taken off its free list, count
    /// from zero again. It drained completely: no lease of it remains, but a
    /// thread may be between a stray increment of a frozen stripe and its
    /// undo. Unfreeze and bump the epoch, keeping such counts. (A new
    /// record needs none of this: the pool's stripe cells are fresh, and
    /// nothing could have read them.) Under the writer lock, in `prepare`.
    fn reset_stripes(&self, record: NonNull<Record<T>>) {
        for offset in self.offsets() {
            // SAFETY: a record of this slot, allocated while `self` lives.
            let stripe = unsafe { stripe_at(record.as_ptr(), offset) };
            // No owner touches a retired record after its sweep (see the
            // module docs): plain resets, published by the swap.
            stripe.owned.store(0, Ordering::Relaxed);
            stripe.released.store(0, Ordering::Relaxed);
            let stripe = &stripe.shared;
            let mut word = stripe.load(Ordering::Acquire);
            loop {
                let epoch = (word & EPOCH_MASK).wrapping_add(1 << EPOCH_SHIFT) & EPOCH_MASK;
                match stripe.compare_exchange_weak(
                    word,
                    epoch | (word & COUNT_MASK),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(seen) => word = seen,
                }
            }
        }
    }

    /// Take a record (reused or new) and fill it with the next generation,
    /// whose lifecycle is `lifecycle` (set `Active`) or, if `None`, made on
    /// request. Returns the record and its generation's number (the current
    /// one's plus one, 1 for the first). The record is not yet reachable by
    /// leases; the caller publishes it before it releases the writer lock
    /// (which the generation numbering relies on: see [`Writer`]).
    fn prepare(
        this: &Strong<Self>,
        writer: &mut Writer<T>,
        value: Arc<T>,
        lifecycle: Option<SharedLifecycle>,
    ) -> (NonNull<Record<T>>, u64) {
        let generation = this.current_hot(writer).map_or(1, |(_, hot)| hot.generation + 1);
        let record = match writer.pop_free() {
            Some(record) => {
                this.reset_stripes(record);
                record
            }
            None => {
                let cells = chunk::take();
                let record = cells.cast::<Record<T>>();
                #[cfg(test)]
                LIVE_RECORDS.with(|live| live.set(live.get() + 1));
                // SAFETY: the pool gave us the record's cells: `CELL` bytes
                // at the record's offset in every region of its chunk (each
                // aligned to 32 bytes, and every part fits one cell), and
                // `cells`' provenance covers the chunk. Nothing else can
                // reach them yet.
                unsafe {
                    record.as_ptr().write(Record { draining: AtomicBool::new(false), hot: UnsafeCell::new(None) });
                    cells.as_ptr().add(COLD).cast::<Cold<T>>().write(Cold {
                        tail: Tail { central: AtomicUsize::new(BIAS), remote: AtomicUsize::new(0) },
                        next_deferred: AtomicPtr::new(std::ptr::null_mut()),
                        tracker: Tracker::default(),
                    });
                    cells.as_ptr().add(BODY).cast::<Body<T>>().write(Body { incarnation: UnsafeCell::new(None) });
                    // Outside loom the pool's stripe cells are already zero,
                    // a fresh `Stripe` (see `chunk`): not written here, so
                    // that their pages stay untouched until a thread leases
                    // through them. Loom's atomics must be constructed.
                    #[cfg(loom)]
                    for offset in this.offsets() {
                        cells.as_ptr().add(offset).cast::<Stripe>().write(Stripe::default());
                    }
                }
                record
            }
        };
        // SAFETY: records on the slot's list stay allocated while `self` lives.
        let (rec, cold) = unsafe { (record.as_ref(), cold(record)) };
        rec.draining.store(false, Ordering::Relaxed);
        cold.tail.remote.store(0, Ordering::Relaxed);
        cold.tail.central.store(BIAS, Ordering::Release);
        let lifecycle = match lifecycle {
            Some(lifecycle) => {
                if lifecycle.state() != LifecycleState::Active {
                    lifecycle.set(LifecycleState::Active);
                }
                LifecycleCell::given(lifecycle)
            }
            None => LifecycleCell::active(&this.id),
        };
        // The header holds the value's strong count from here until
        // `complete` (see `Hot`).
        let value = NonNull::new(Arc::into_raw(value).cast_mut()).unwrap_or_else(|| unreachable!("an Arc is not null"));
        let hot = Hot { value, generation };
        let incarnation = Incarnation {
            lifecycle,
            activated_at: Stamp::now(),
            signal: SignalCell::empty(),
            keep: Strong::clone(this),
        };
        // SAFETY: the record is not current and has no incarnation (fresh, or
        // drained and taken off the free list under the writer lock), so no
        // lease reads the cells; stray readers only touch the stripes.
        unsafe {
            body(record).incarnation.with_mut(|cell| *cell = Some(incarnation));
            rec.hot.with_mut(|cell| *cell = Some(hot));
        }
        (record, generation)
    }

    /// The current record and its header, read under the writer lock (the
    /// `Writer` is the proof); `None` before the first generation is
    /// published (the pointer is null while [`new`](Self::new) prepares it).
    /// The caller checks that the slot is not closed: a closed slot's
    /// `current` is a retired record, whose completion clears the header
    /// without this lock.
    fn current_hot(&self, _writer: &Writer<T>) -> Option<(NonNull<Record<T>>, Hot<T>)> {
        // Relaxed: `current` is only written under the writer lock we hold.
        let current = NonNull::new(self.head().current.load(Ordering::Relaxed))?;
        // SAFETY: a published record of an open slot is current until a
        // cutover or close, which take the writer lock: it is live, not
        // retiring, and its header was written (by `prepare`, under this
        // lock) before it was published and is not written again until its
        // drain completes.
        let hot = unsafe { current.as_ref() }.hot.with(|cell| unsafe { *cell })?;
        Some((current, hot))
    }

    /// The cutover: publish `value` as the next generation and begin retiring
    /// the one it replaces ([`begin_retire`](Self::begin_retire)); `None` if
    /// the slot was closed (then nothing changed). The caller finishes the
    /// retirement with [`finish_retiring`](Self::finish_retiring) (which
    /// [`Drain::of_retirement`](super::Drain::of_retirement) calls, or leaves
    /// to the drain), or, for several slots sharing one barrier, with
    /// [`fence::barrier`] and [`end_retire`](Self::end_retire).
    pub(crate) fn cut_over(
        this: &Strong<Self>,
        value: Arc<T>,
        lifecycle: Option<SharedLifecycle>,
        finalize: Finalize,
    ) -> Option<Retiring<T>> {
        let (old, new_generation) = {
            let mut writer = lock(&this.writer);
            if this.head().closed.load(Ordering::Relaxed) {
                // `value` is dropped by our caller's frame, after the lock.
                return None;
            }
            let (record, generation) = Self::prepare(this, &mut writer, value, lifecycle);
            let old = this.head().current.swap(record.as_ptr(), Ordering::SeqCst);
            (old, generation)
        };
        // SAFETY: `old` was current, so it is a live record.
        let old = unsafe { NonNull::new_unchecked(old) };
        let retiring = this.begin_retire(old, finalize);
        tracing::info!(target: "cutover::slot", plugin = %this.id, from = retiring.signal.generation, to = new_generation, "cutover");
        Some(retiring)
    }

    /// Close the slot: retire its current generation and leave it without
    /// one; later acquisitions return `None`. `None` if already closed.
    pub(crate) fn close(&self, finalize: Finalize) -> Option<(Arc<DrainSignal>, NonNull<Record<T>>)> {
        let retiring = self.begin_close(finalize)?;
        Some(self.finish_retiring(retiring))
    }

    /// The first half of [`close`](Self::close), finished as
    /// [`cut_over`](Self::cut_over)'s is.
    pub(crate) fn begin_close(&self, finalize: Finalize) -> Option<Retiring<T>> {
        {
            let _writer = lock(&self.writer);
            if self.head().closed.swap(true, Ordering::SeqCst) {
                return None;
            }
        }
        Some(self.begin_retire(self.current_record(), finalize))
    }

    /// Whether finishing a retirement of this slot's needs the process-wide
    /// barrier first (its records have owned counters: the asymmetric-fence
    /// path).
    pub(crate) fn needs_barrier(&self) -> bool {
        self.owners() > 0
    }

    /// Whether a single cutover (or close) leaves its barrier and sweep to
    /// the [`Drain`](super::Drain) it returns: on the asymmetric-fence path,
    /// except for slots with deferred completion (the registry's key map,
    /// whose writer ends its retirements itself).
    pub(crate) fn leaves_barrier_to_drain(&self) -> bool {
        self.needs_barrier() && !self.head().defer
    }

    /// Finish a retirement begun on this slot: the barrier if this slot
    /// needs one, then [`end_retire`](Self::end_retire).
    pub(crate) fn finish_retiring(&self, retiring: Retiring<T>) -> (Arc<DrainSignal>, NonNull<Record<T>>) {
        if self.needs_barrier() {
            fence::barrier();
        }
        self.end_retire(retiring)
    }

    /// Start draining `record`, which was just unpublished: move its lifecycle
    /// `Active → Draining` and, on the asymmetric-fence path, stop the
    /// owners' plain updates of it (they see it draining). The retirement is
    /// finished by [`end_retire`](Self::end_retire), after a barrier issued
    /// after this returned if [`needs_barrier`](Self::needs_barrier): any
    /// number of retirements, of any slots, may share one barrier, and any
    /// amount of time may pass between the two halves (a lease taken or
    /// dropped meanwhile is counted as one racing a preempted writer is).
    pub(crate) fn begin_retire(&self, record: NonNull<Record<T>>, finalize: Finalize) -> Retiring<T> {
        // SAFETY: an unpublished record whose drain has not completed (we
        // are the only party that can start it) is live and its incarnation
        // stable: only the drain's completion takes it.
        let (rec, body) = unsafe { (record.as_ref(), body(record)) };
        let generation = rec.hot.with(|cell| unsafe { *cell }.map(|hot| hot.generation));
        let signal = body.incarnation.with(|cell| match (unsafe { &*cell }, generation) {
            (Some(inc), Some(generation)) => {
                let fence = EpochFencedReload::new(inc.lifecycle());
                let signal = Arc::new(DrainSignal::new(generation, fence, inc.activated_at));
                signal.mark_cutover(finalize == Finalize::OnDrain);
                // Before the bias is removed by `end_retire`: the
                // completion, which follows that, finds it.
                inc.signal.set(&signal);
                signal
            }
            _ => unreachable!("retiring a generation record without a value"),
        });
        if let Err(e) = signal.fence.begin_drain() {
            tracing::warn!(target: "cutover::slot", plugin = %self.id, generation = signal.generation, error = %e, "old generation was not Active at cutover");
        }
        if self.needs_barrier() {
            // SAFETY: as above, the record is live.
            unsafe { record.as_ref() }.draining.store(true, Ordering::Release);
        }
        Retiring { record, signal }
    }

    /// The second half of a retirement: freeze the record's stripes, sum
    /// its counts and complete the drain if nothing is in flight. On the
    /// asymmetric-fence path the caller issued [`fence::barrier`] after
    /// [`begin_retire`](Self::begin_retire) returned. Returns the drain's
    /// signal and the record.
    pub(crate) fn end_retire(&self, retiring: Retiring<T>) -> (Arc<DrainSignal>, NonNull<Record<T>>) {
        let (signal, record, ended) = self.end_retire_leaving_completion(retiring);
        if let Ended::Drained = ended {
            // SAFETY: the central count reached zero by our hand, on the
            // writer side: we complete.
            unsafe { complete(record) };
        }
        (signal, record)
    }

    /// [`end_retire`](Self::end_retire) without the completion: returns
    /// [`Ended::Drained`] if this brought the count to zero, and the caller
    /// must then call [`complete`] on the record exactly once (for
    /// a caller that must not run the value's drop where it is, e.g. under
    /// a lock).
    pub(crate) fn end_retire_leaving_completion(
        &self,
        retiring: Retiring<T>,
    ) -> (Arc<DrainSignal>, NonNull<Record<T>>, Ended) {
        let Retiring { record, signal } = retiring;
        // SAFETY: as in `begin_retire`: the drain cannot complete before the
        // bias is removed below.
        let cold = unsafe { cold(record) };
        let owned = self.sweep_owned(record);
        let frozen: usize = self
            .offsets()
            // SAFETY: a record of this slot, live (see above).
            .map(|offset| unsafe { stripe_at(record.as_ptr(), offset) })
            .map(|stripe| stripe.shared.fetch_or(DRAINING_BIT, Ordering::SeqCst) & COUNT_MASK)
            .fold(owned, usize::wrapping_add);
        // Releases that raced the sweep have already decremented `central`;
        // remove the bias, keeping the frozen count.
        let adjust = BIAS.wrapping_sub(frozen);
        let ended = if cold.tail.central.fetch_sub(adjust, Ordering::AcqRel) == adjust {
            Ended::Drained
        } else {
            Ended::InFlight
        };
        (signal, record, ended)
    }

    /// The asymmetric-fence half of the sweep, after the barrier that
    /// followed marking `record` draining: freeze the remote releases and
    /// sum the owned counters (minus the remote releases). 0 on the atomic
    /// path. See the module docs for why the sum is exact.
    fn sweep_owned(&self, record: NonNull<Record<T>>) -> usize {
        if !self.needs_barrier() {
            return 0;
        }
        // SAFETY: the caller's record is live.
        let cold = unsafe { cold(record) };
        // Acquire: a remote release we count here follows the owner's
        // increment of the lease it ends, which the sum below must then see.
        let remote = cold.tail.remote.fetch_or(DRAINING_BIT, Ordering::AcqRel) & !DRAINING_BIT;
        let mut sum = 0usize;
        for index in 0..self.owners() {
            // SAFETY: `index < owners <= mask + 1`; the record is live.
            let stripe = unsafe { stripe_at(record.as_ptr(), self.offset(index)) };
            let owned = stripe.owned.load(Ordering::Relaxed).wrapping_sub(stripe.released.load(Ordering::Relaxed));
            sum = sum.wrapping_add(owned);
        }
        sum.wrapping_sub(remote)
    }

    /// Complete the drains that lease drops deferred (see the module docs).
    /// Writer side only; call it without holding locks a plugin value's drop
    /// might take.
    pub(crate) fn run_deferred(&self) {
        if self.deferred.load(Ordering::Acquire).is_null() {
            return;
        }
        // Acquire: synchronizes with every push on the list (each push is a
        // release read-modify-write continuing the others' release sequences),
        // so the links and the incarnations are visible.
        let mut next = self.deferred.swap(std::ptr::null_mut(), Ordering::AcqRel);
        while let Some(record) = NonNull::new(next) {
            // SAFETY: a record on the list is allocated (its incarnation keeps
            // `self` alive) and was pushed once, after its count reached zero.
            next = unsafe { cold(record) }.next_deferred.load(Ordering::Relaxed);
            // SAFETY: taking the list made us the one party completing it.
            unsafe { complete(record) };
        }
    }

    /// Operations in flight on the generation `signal` belongs to, whose
    /// record is `record` (a snapshot; 0 once drained).
    pub(crate) fn in_flight(&self, record: NonNull<Record<T>>, signal: &DrainSignal) -> usize {
        if signal.is_done() {
            return 0;
        }
        // SAFETY: records stay allocated while `self` lives.
        let central = unsafe { cold(record) }.tail.central.load(Ordering::Acquire);
        // A reused record's counter is reset (with release ordering) only
        // after its previous generation was announced done, so a counter that
        // belongs to a later generation is caught by this second look.
        if signal.is_done() || central >= BIAS / 2 {
            0
        } else {
            central
        }
    }

    /// The tracked operations in flight on the generation `signal` belongs
    /// to, oldest first (empty once drained, or if tracking was off).
    pub(crate) fn stragglers(&self, record: NonNull<Record<T>>, signal: &DrainSignal) -> Vec<Straggler> {
        if signal.is_done() {
            return Vec::new();
        }
        // SAFETY: records stay allocated while `self` lives.
        let stragglers = unsafe { cold(record) }.tracker.stragglers();
        // A reused record belongs to a later generation: done was announced
        // before the reuse.
        if signal.is_done() {
            Vec::new()
        } else {
            stragglers
        }
    }

    /// Run `f` on the current generation under a short lease (lock-free),
    /// then end the lease. `None` once the slot is closed.
    fn with_lease<R>(&self, f: impl FnOnce(&Acquired<T>) -> R) -> Option<R> {
        let acquired = self.acquire()?;
        let out = f(&acquired);
        // SAFETY: we give back the count (and ticket) `acquire` took.
        unsafe { end_lease(acquired.record, acquired.stripe, acquired.ticket) };
        Some(out)
    }

    /// Read the current generation's incarnation under a short lease
    /// (lock-free). `None` once the slot is closed.
    pub(crate) fn with_current<R>(&self, f: impl FnOnce(&Incarnation<T>) -> R) -> Option<R> {
        self.with_lease(|acquired| {
            // SAFETY: the lease we hold keeps the incarnation in place.
            unsafe { body(acquired.record) }.incarnation.with(|cell| unsafe { &*cell }.as_ref().map(f))
        })
        .flatten()
    }

    /// A strong reference to the current generation's value, taken under a
    /// short lease (lock-free). `None` once the slot is closed.
    pub(crate) fn current_value(&self) -> Option<Arc<T>> {
        self.with_lease(|acquired| {
            let value = acquired.value.as_ptr().cast_const();
            // SAFETY: `value` is the pointer `prepare` got from
            // `Arc::into_raw` (see `Hot`), whose strong count the header
            // holds until the generation completes, which our lease holds
            // off: the `Arc` is alive, and the count we add is the
            // returned `Arc`'s.
            unsafe {
                Arc::increment_strong_count(value);
                Arc::from_raw(value)
            }
        })
    }

    /// The current generation's number; `None` once closed.
    pub(crate) fn generation(&self) -> Option<u64> {
        self.with_lease(|acquired| acquired.generation)
    }

    /// Where a lease of the current generation will read and write, as of
    /// now: a prefetch hint for containers ([`Hint`]). `None` once closed.
    ///
    /// Takes no lease (so it never completes a drain) but the slot's writer
    /// lock, briefly: it may be called under any lock but that one (the
    /// registry takes hints under its own). Once it returns, a cutover may
    /// leave the hint pointing at an older generation, which only matters
    /// to speed.
    pub(crate) fn hint(&self) -> Option<Hint> {
        let writer = lock(&self.writer);
        if self.head().closed.load(Ordering::Relaxed) {
            return None;
        }
        let (record, hot) = self.current_hot(&writer)?;
        drop(writer);
        let stripes_log2 = (self.head().mask() + 1).trailing_zeros() as usize;
        let record = std::num::NonZeroUsize::new(record.as_ptr().addr() | stripes_log2)?;
        Some(Hint { record, value: hot.value.cast::<u8>().as_ptr().addr() })
    }

    /// Operations in flight on the current generation (a snapshot).
    pub(crate) fn current_in_flight(&self) -> usize {
        let ptr = self.head().current.load(Ordering::Acquire);
        // SAFETY: records stay allocated while `self` lives; only atomics are read.
        // SAFETY: `current` is never null after construction.
        let remote = unsafe { cold(NonNull::new_unchecked(ptr)) }.tail.remote.load(Ordering::Relaxed) & !DRAINING_BIT;
        let count = self
            .offsets()
            // SAFETY: as above; `ptr` is the record's allocation pointer.
            .map(|offset| unsafe { stripe_at(ptr, offset) })
            .map(|s| {
                let owned = s.owned.load(Ordering::Relaxed).wrapping_sub(s.released.load(Ordering::Relaxed));
                (s.shared.load(Ordering::Relaxed) & COUNT_MASK).wrapping_add(owned)
            })
            .fold(0, usize::wrapping_add)
            .wrapping_sub(remote);
        // A racy snapshot may be momentarily off (a remote release seen
        // before the increment it ends); never report a negative count.
        if count >= BIAS {
            0
        } else {
            count
        }
    }

    /// The current record, for retiring it when the slot handle goes away.
    pub(crate) fn current_record(&self) -> NonNull<Record<T>> {
        // SAFETY: `current` is never null after construction.
        unsafe { NonNull::new_unchecked(self.head().current.load(Ordering::Acquire)) }
    }

    /// Set this thread's owned count of the current record (asymmetric
    /// path) to `count`, returning the previous count: lets unit tests reach
    /// the owned limit. The acquisitions are set to end in 16 one bits, so
    /// that the next lease is one that checks the limit (see
    /// `fence::owned_acquire`).
    #[cfg(test)]
    pub(crate) fn set_current_owned(&self, count: usize) -> usize {
        let index = owner_index().expect("this thread holds an index");
        assert!(index <= self.head().mask());
        // SAFETY: records stay allocated while `self` lives.
        let stripe = unsafe { stripe_at(self.head().current.load(Ordering::Acquire), self.offset(index)) };
        let before = stripe.owned.load(Ordering::SeqCst).wrapping_sub(stripe.released.load(Ordering::SeqCst));
        let owned = (1 << 60) | 0xffff;
        stripe.owned.store(owned, Ordering::SeqCst);
        stripe.released.store(owned - count, Ordering::SeqCst);
        before
    }

    /// The owned-counter limit (for unit tests).
    #[cfg(test)]
    pub(crate) const OWNED_LIMIT: usize = OWNED_LIMIT;

    /// Add `delta` (two's complement) to the count of `stripe` of the
    /// current record, as if that many leases had been taken (or dropped)
    /// there: lets unit tests reach the count limit without 2^39 leases.
    #[cfg(test)]
    pub(crate) fn add_to_current_stripe(&self, stripe: usize, delta: usize) -> usize {
        // SAFETY: records stay allocated while `self` lives.
        unsafe { stripe_at(self.head().current.load(Ordering::Acquire), self.offset(stripe)) }
            .shared
            .fetch_add(delta, Ordering::SeqCst)
            .wrapping_add(delta)
            & COUNT_MASK
    }
}

/// Where the lines a lease reads and writes were when the hint was taken
/// ([`Shared::hint`]): the generation's record, this thread's stripe in it
/// and the value. A container keeps it next to its pointer to the slot and
/// prefetches these lines while it loads the slot's `current` pointer, so
/// that the misses of a lookup overlap instead of following one another.
/// Only ever used as a prefetch address (never dereferenced), so a hint
/// that went stale after a cutover (or whose value was freed) costs a
/// useless prefetch and nothing else.
#[derive(Clone, Copy)]
#[cfg_attr(not(all(target_arch = "x86_64", not(miri), not(loom))), allow(dead_code))]
pub(crate) struct Hint {
    /// The record's address, with the base-2 logarithm of the slot's stripe
    /// count in its low bits (a record cell is 32-byte aligned, and a slot
    /// has at most 64 stripes): two words, so that a registry entry with its
    /// hint is 24 bytes. Addresses only, never turned back into pointers.
    record: std::num::NonZeroUsize,
    value: usize,
}

const _: () = assert!(MAX_STRIPES.trailing_zeros() < 8 && CELL % 8 == 0);

impl Hint {
    /// The hint as two words, for a container that keeps it in atomics
    /// (`[0, 0]` is no hint: see [`from_words`](Self::from_words)).
    pub(crate) fn to_words(hint: Option<Self>) -> [usize; 2] {
        hint.map_or([0, 0], |hint| [hint.record.get(), hint.value])
    }

    /// The hint [`to_words`](Self::to_words) made of these words, or a
    /// mixture of two such hints (addresses only, so a mixture costs a
    /// useless prefetch at worst); `None` for `[0, _]`.
    #[inline(always)]
    pub(crate) fn from_words([record, value]: [usize; 2]) -> Option<Self> {
        Some(Self { record: std::num::NonZeroUsize::new(record)?, value })
    }

    /// The record's and the value's addresses: lets unit tests check them.
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> (usize, usize) {
        (self.record.get() & !7, self.value)
    }

    /// Prefetch the record's header line and the value's: what
    /// [`prefetch`](Self::prefetch) does but this thread's counter, which
    /// takes a thread-local load to find.
    #[inline(always)]
    pub(crate) fn prefetch_shared(&self) {
        prefetch(std::ptr::without_provenance(self.record.get() & !7));
        prefetch(std::ptr::without_provenance(self.value));
    }

    /// Prefetch the lines a lease on this thread would touch. Never reads
    /// memory as far as the program can tell (a prefetch is a hint to the
    /// cache, which cannot fault); a no-op off x86-64 and under Miri.
    #[inline(always)]
    pub(crate) fn prefetch(&self) {
        self.prefetch_shared();
        #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
        if let Some(index) = owner_index() {
            let mask = (1 << (self.record.get() & 7)) - 1;
            let counter = (self.record.get() & !7).wrapping_add(stripe_offset(index & mask));
            prefetch(std::ptr::without_provenance(counter));
        }
    }
}

/// Start fetching the line at `address` into every cache level. A hint to
/// the cache, not a read: it cannot fault, whatever the address, and has no
/// effect the program can see; a no-op off x86-64 and under Miri and loom.
#[inline(always)]
pub(crate) fn prefetch(address: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
    // SAFETY: `prefetcht0` (SSE, baseline on x86-64) takes any address,
    // valid or not, and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri), not(loom))))]
    let _ = address;
}

/// What the cold path of an acquisition ended with.
enum Acquire<T: ?Sized + 'static> {
    Leased(Counted<T>),
    Closed,
    Retry,
}

/// End a lease: forget its straggler-tracking `ticket` (0: untracked), then
/// give back its count on `stripe` of `record`.
///
/// # Safety
/// The caller holds one counted lease on `stripe` of `record` (either kind:
/// see [`Acquired::stripe`]), which it gives up here; `ticket` is the one
/// the lease's acquisition returned.
#[inline(always)]
pub(crate) unsafe fn end_lease<T: ?Sized + Send + Sync + 'static>(
    record: NonNull<Record<T>>,
    stripe: usize,
    ticket: u64,
) {
    // An owned-counter lease is never tracked (see `Head::leased`): its
    // release tests one bit before anything else.
    if stripe & OWNED != 0 {
        debug_assert_eq!(ticket, 0, "a tracked owned-counter lease");
        // SAFETY: forwarded from the caller.
        return unsafe { release_owned_or_remote(record, stripe) };
    }
    if ticket != 0 {
        // SAFETY: still leased, so the record is live.
        unsafe { cold(record) }.tracker.untrack(ticket);
    }
    // SAFETY: forwarded from the caller; not an owned counter (above).
    unsafe { release_shared(record, stripe) }
}

/// End one lease's count on the shared word of the stripe at offset
/// `stripe` of `record` (the atomic path).
///
/// # Safety
/// The caller holds one counted lease on that stripe's shared word, which
/// it gives up here.
#[inline(always)]
unsafe fn release_shared<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>, stripe: usize) {
    debug_assert_eq!(stripe & OWNED, 0, "an owned counter released as a shared word");
    // Our count keeps the record's generation from completing its drain, so
    // the record is live; after the decrement we touch it again only if the
    // stripe was frozen, in which case our count is still part of the
    // central counter until we decrement that.
    // SAFETY: `stripe` is the offset of a stripe of this record, computed
    // when the lease was taken; `record` is the allocation pointer.
    let before = unsafe { stripe_at(record.as_ptr(), stripe) }.shared.fetch_sub(1, Ordering::Release);
    if before & DRAINING_BIT != 0 {
        // SAFETY: forwarded from the caller.
        unsafe { release_draining(record) };
    }
}

/// Release a lease counted on the owned counter at `offset`: on its owner
/// thread, in a restartable sequence; elsewhere, through `remote`.
///
/// # Safety
/// As for [`release_shared`], with `offset` the lease's stripe (an owned
/// counter).
#[inline(always)]
unsafe fn release_owned_or_remote<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>, offset: usize) {
    let owned = owned();
    if owned.offset == offset {
        // SAFETY: forwarded from the caller; this thread owns the counter
        // at `offset`.
        unsafe { release_owned(record, owned) }
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { release_remote(record) }
    }
}

/// Release an owned-counter lease on the thread that owns the counter
/// (`owned`): a plain increment of its releases, unless the generation is
/// draining (then `central`).
///
/// # Safety
/// As for [`release_shared`]; the lease was counted on the owned counter at
/// `owned.offset`, which this thread owns.
#[inline(always)]
unsafe fn release_owned<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>, owned: Owned) {
    let Owned { offset, rseq_cs } = owned;
    // SAFETY: our count keeps the record live (see `release_shared`), its first
    // byte is `draining`, and `offset` is the owned counter this thread
    // owns (see `acquire_owned`).
    if unsafe { fence::owned_release(rseq_cs, record.as_ptr().cast(), offset) } == fence::Update::Done {
        return;
    }
    // The sweep counted our increment: our count is in `central`.
    // SAFETY: forwarded from the caller.
    unsafe { release_draining(record) }
}

/// Release an owned-counter lease on another thread than its owner's: one
/// atomic increment of the record's remote-release count, or of `central`
/// once the sweep froze it.
///
/// # Safety
/// As for [`release_shared`].
#[inline(never)]
unsafe fn release_remote<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>) {
    // SAFETY: our count keeps the record live (see `release_shared`).
    let cold = unsafe { cold(record) };
    // Release: our use of the value, and the owner's increment that counted
    // this lease, happen before a sweep that reads this.
    let before = cold.tail.remote.fetch_add(1, Ordering::Release);
    if before & DRAINING_BIT != 0 {
        // SAFETY: forwarded from the caller: the sweep counted our
        // increment, and our count is in `central`.
        unsafe { release_draining(record) }
    }
}

#[cold]
#[inline(never)]
unsafe fn release_draining<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>) {
    // SAFETY: see `release_shared`: our count is in `central`, so the record is live.
    let (cold, body) = unsafe { (cold(record), body(record)) };
    if cold.tail.central.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    // We brought the central count to zero: the incarnation is ours.
    // SAFETY: no lease remains and none can start; the record cannot be
    // completed or reused by anyone else until we complete or defer it.
    let deferred = body.incarnation.with(|cell| match unsafe { &*cell } {
        Some(inc) if inc.keep.head().defer => Some(Strong::as_ptr(&inc.keep).as_ptr().cast_const()),
        _ => None,
    });
    match deferred {
        // SAFETY: the incarnation's `keep` holds the shared state alive until
        // the record is completed, which takes our push to happen first.
        Some(shared) => unsafe { push_deferred(&(*shared).deferred, record) },
        // SAFETY: as above: we complete.
        None => unsafe { complete(record) },
    }
}

/// Push `record` onto a `deferred` list; its last access to `head`.
///
/// # Safety
/// `record`'s count reached zero by our hand and it is on no list.
unsafe fn push_deferred<T: ?Sized + Send + Sync + 'static>(head: &AtomicPtr<Record<T>>, record: NonNull<Record<T>>) {
    // SAFETY: the record stays allocated while it is unfinished.
    let cold = unsafe { cold(record) };
    let mut top = head.load(Ordering::Relaxed);
    loop {
        cold.next_deferred.store(top, Ordering::Relaxed);
        // Release: publishes the link and the drained record to whoever
        // takes the list. (A push-only stack emptied by swaps has no ABA
        // problem: the link is whatever was on top at the successful CAS.)
        match head.compare_exchange_weak(top, record.as_ptr(), Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => top = seen,
        }
    }
}

/// Complete the drain of `record`: finalize the lifecycle, drop the value,
/// announce, and put the record up for reuse. Panics in the value's drop,
/// wakers and callbacks are caught and reported (see the module docs).
///
/// # Safety
/// Called exactly once per generation, by the party that brought the central
/// count to zero (or took it off the deferred list); no lease of the
/// generation remains.
#[cold]
pub(crate) unsafe fn complete<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>) {
    // SAFETY: the record is live until `keep` below is dropped.
    let (rec, body) = unsafe { (record.as_ref(), body(record)) };
    // SAFETY: no lease remains and none can start; the writer reads the cells
    // only for current records and writes them only for free ones (not yet).
    let Some((hot, Incarnation { signal, keep, .. })) =
        body.incarnation.with_mut(|cell| unsafe { rec.hot.with_mut(|hot| (*hot).take()).zip((*cell).take()) })
    else {
        return;
    };
    // SAFETY: the header held the strong count `prepare` gave up with
    // `Arc::into_raw` (see `Hot`); taking the `Hot` out hands it to us, once.
    let value = unsafe { Arc::from_raw(hot.value.as_ptr().cast_const()) };
    // `begin_retire` set it before the count could reach zero.
    let Some(signal) = signal.take() else {
        unreachable!("a drained generation without a drain signal");
    };
    signal.finalize_on_drain();
    let generation = signal.generation;
    tracing::info!(target: "cutover::slot", plugin = %keep.id, generation, "drained");
    if let Err(panic) = crate::unwind::catch(move || drop(value)) {
        tracing::error!(target: "cutover::slot", plugin = %keep.id, generation, panic = %panic,
            "dropping the drained generation's value panicked; the drain completes regardless");
    }
    // Announce before the record can be reused: a `Drain` that reads the
    // record's counter and then sees "not done" read this generation's.
    signal.complete();
    // SAFETY: the record's generation is complete and it is on no list.
    unsafe { lock(&keep.writer).push_free(record) };
    drop(keep);
}

#[cfg(test)]
thread_local! {
    /// Records this thread took fresh from the pool, less those it gave
    /// back: lets a unit test (which makes and drops its slots on one
    /// thread) check that a slot's drop frees every record the slot took.
    pub(crate) static LIVE_RECORDS: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

impl<T: ?Sized + 'static> Drop for Shared<T> {
    fn drop(&mut self) {
        let offsets: Vec<usize> = self.offsets().collect();
        #[cfg(loom)]
        let writer = self.writer.get_mut().unwrap();
        #[cfg(not(loom))]
        let writer = self.writer.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Every record this slot took from the pool is on the free list now,
        // once: a record leaves the list only in `prepare`, whose caller
        // publishes it; from then its incarnation holds `Shared` alive (its
        // `keep`), and `complete` puts the record back on the list before it
        // drops that hold. So no record is current, draining or deferred
        // when `Shared` is dropped. (A record missed here would never go back
        // to the pool, and would leak its tracker, which Miri would not see,
        // as the chunk that points at it is reachable from the pool:
        // `LIVE_RECORDS` lets a unit test check it.)
        while let Some(record) = writer.pop_free() {
            // SAFETY: every record on the list was taken from the chunk pool
            // and filled in `prepare`, and is on it once; with `Shared` gone
            // no lease, drain or stray reader can reach it (each of those
            // holds `Shared` alive). Each part is dropped once (the cold part
            // after `pop_free` read its link), then the cells go back to the
            // pool once.
            unsafe {
                for &offset in &offsets {
                    let stripe = record.as_ptr().cast::<u8>().add(offset).cast::<Stripe>();
                    // Loom's atomics are dropped; elsewhere the cells go back
                    // zeroed, as the pool keeps them (a stripe no thread
                    // wrote is only read, so its page stays untouched).
                    #[cfg(loom)]
                    std::ptr::drop_in_place(stripe);
                    #[cfg(not(loom))]
                    if (*stripe).shared.load(Ordering::Relaxed) != 0
                        || (*stripe).owned.load(Ordering::Relaxed) != 0
                        || (*stripe).released.load(Ordering::Relaxed) != 0
                    {
                        stripe.write(Stripe::default());
                    }
                }
                #[cfg(test)]
                LIVE_RECORDS.with(|live| live.set(live.get() - 1));
                std::ptr::drop_in_place(record.as_ptr().cast::<u8>().add(BODY).cast::<Body<T>>());
                std::ptr::drop_in_place(record.as_ptr().cast::<u8>().add(COLD).cast::<Cold<T>>());
                std::ptr::drop_in_place(record.as_ptr());
                chunk::give(record.cast());
            }
        }
        // SAFETY: the head was written in `new` and is reached only through
        // us (or a `Slot` or `RawSlot`, which keep us alive): dropped once,
        // then its cell goes back to the pool once.
        unsafe {
            std::ptr::drop_in_place(self.head.as_ptr());
            chunk::give_head(self.head.cast());
        }
    }
}

impl<T: ?Sized + 'static> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("id", &self.id)
            .field("stripes", &(self.head().mask() + 1))
            .finish_non_exhaustive()
    }
}

/// Whether the generation a lease holds has been asked to cancel.
///
/// # Safety
/// The caller holds a lease on `record`.
#[inline]
pub(crate) unsafe fn leased_cancelled<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>) -> bool {
    // SAFETY: the lease keeps the generation (and its incarnation) in place.
    unsafe { body(record) }
        .incarnation
        .with(|cell| unsafe { &*cell }.as_ref().and_then(|inc| inc.signal.get()).is_some_and(DrainSignal::is_cancelled))
}
