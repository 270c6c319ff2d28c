//! Which lease counter a thread uses.
//!
//! Each generation counts its leases in a small array of counters
//! ("stripes"), one cell in each of its record chunk's stripe regions (see
//! `chunk` and "Memory layout" in the `record` module). A thread always
//! increments the same stripe, so two threads leasing one slot at once
//! write different cache lines and never contend.

/// Set in a stripe once its generation has begun draining: from then on the
/// stripe's count is frozen into the generation's central counter, and no new
/// lease may start on it.
pub(crate) const DRAINING_BIT: usize = 1 << (usize::BITS - 1);
/// Where a stripe's *epoch* starts: bumped each time the stripe's record is
/// reused for a new generation, so that a thread that incremented a frozen
/// stripe by mistake can tell, when it undoes that, whether the record was
/// reused (and frozen again) in between.
pub(crate) const EPOCH_SHIFT: u32 = if usize::BITS >= 64 { 40 } else { 20 };
/// The epoch part of a stripe (below the draining bit).
pub(crate) const EPOCH_MASK: usize = !DRAINING_BIT & !((1 << EPOCH_SHIFT) - 1);
/// The count part of a stripe.
pub(crate) const COUNT_MASK: usize = (1 << EPOCH_SHIFT) - 1;
/// The most leases one stripe may count at once: 2^39 on 64-bit targets,
/// 2^19 (524,288) on 32-bit ones. A lease that finds the stripe's count at
/// this limit is refused (`Slot::lease` panics after undoing its
/// increment), so the count can never carry into the epoch: concurrent
/// increments past the limit are bounded by the number of threads, far below
/// the remaining `COUNT_MASK - COUNT_LIMIT`.
pub(crate) const COUNT_LIMIT: usize = 1 << (EPOCH_SHIFT - 1);
/// The most stripes a slot may have: the stripe regions of a record chunk
/// (see `chunk`). The frozen counts of every stripe (each at most
/// [`COUNT_LIMIT`] plus one stray per thread) then sum to far less than a
/// quarter of the central counter's bias.
pub(crate) const MAX_STRIPES: usize = super::chunk::STRIPES;

/// The stripe count used when none is given: twice the available parallelism,
/// rounded up to a power of two, between 4 and 64.
pub(crate) fn default_stripes() -> usize {
    #[cfg(loom)]
    {
        2
    }
    #[cfg(not(loom))]
    {
        static STRIPES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *STRIPES.get_or_init(|| {
            let cpus = std::thread::available_parallelism().map_or(4, usize::from);
            (cpus * 2).next_power_of_two().clamp(4, 64)
        })
    }
}

/// Set in a thread's index (as [`owner_index`] returns it) when the thread
/// cannot own counters (its `rseq` area is not registered): the index is
/// then above every slot's owner count, and masking it still gives the
/// thread's stripe.
#[cfg(not(loom))]
const CANNOT_OWN: usize = 1 << (usize::BITS - 2);

/// This thread's stripe index (before masking): the smallest number no
/// other live thread holds, so that up to `stripes` concurrent threads never
/// share a counter, however many threads came and went before. A thread's
/// number goes back to the pool when it exits. (A lease records its stripe,
/// so one that outlives its thread still releases the right counter.)
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn thread_stripe() -> usize {
    match owner_index() {
        Some(index) => index,
        None => index::slow(),
    }
}

/// The index this thread holds, if it has taken one and not yet given it
/// back (thread teardown): while it returns `Some(i)`, no other live thread
/// gets `Some(i)`. One thread-local load (no lazy initialization).
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn owner_index() -> Option<usize> {
    let index = index::OWNER.with(std::cell::Cell::get);
    (index != usize::MAX).then_some(index)
}

/// Where this thread's owned counter is in a record, if the thread may own
/// counters, and what its restartable sequences need: see [`Owned`]. One
/// thread-local load: the asymmetric-fence path's lease compares the
/// offset with the slot's `Head::gate` and uses it as is, and its release
/// compares it with the offset the lease recorded.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn owned() -> Owned {
    index::OWNED_AT.with(std::cell::Cell::get)
}

/// What [`owned`] returns: a thread's owned counter and `rseq` area.
#[derive(Clone, Copy)]
pub(crate) struct Owned {
    /// Where the thread's owned counter is in any record:
    /// `stripe_offset(index) + OWNED_COUNTER` (the same in every slot: an
    /// owner's index is below the slot's stripe count, so no mask applies),
    /// or [`NO_OWNED_OFFSET`] if the thread holds no index, cannot own (its
    /// `rseq` area is not registered), or has an index no slot gives a
    /// counter (64 and above).
    pub(crate) offset: usize,
    /// The address of the thread's `rseq_cs` field
    /// (`fence::thread_rseq_cs`), 0 if it owns no counter.
    pub(crate) rseq_cs: usize,
}

impl Owned {
    const NONE: Self = Self { offset: NO_OWNED_OFFSET, rseq_cs: 0 };
}

/// Loom models run the atomic path only: no thread owns a counter.
#[cfg(loom)]
pub(crate) fn owned() -> Owned {
    Owned::NONE
}

/// The owned offset of a thread that owns no counter (see [`Owned`]):
/// above every slot's gate, as a signed number too.
pub(crate) const NO_OWNED_OFFSET: usize = isize::MAX as usize;

#[cfg(not(loom))]
mod index {
    use std::{
        cell::Cell,
        cmp::Reverse,
        collections::BinaryHeap,
        sync::{
            atomic::{AtomicUsize, Ordering},
            Mutex,
        },
    };
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static FREE: Mutex<BinaryHeap<Reverse<usize>>> = Mutex::new(BinaryHeap::new());

    struct Index(usize);
    impl Index {
        fn take() -> Self {
            let reused = FREE.lock().ok().and_then(|mut free| free.pop());
            let index = reused.map_or_else(|| NEXT.fetch_add(1, Ordering::Relaxed), |Reverse(i)| i);
            // A thread that cannot run the owners' restartable sequences
            // keeps its stripe but never owns a counter.
            let can_own = crate::slot::fence::thread_can_own();
            let owner = if can_own { index } else { index | super::CANNOT_OWN };
            OWNER.with(|cell| cell.set(owner));
            let owned_at = match crate::slot::record::owned_offset_of(index) {
                offset if can_own && offset != super::NO_OWNED_OFFSET => {
                    super::Owned { offset, rseq_cs: crate::slot::fence::thread_rseq_cs() }
                }
                _ => super::Owned::NONE,
            };
            OWNED_AT.with(|cell| cell.set(owned_at));
            Index(index)
        }
    }
    impl Drop for Index {
        fn drop(&mut self) {
            // Stop using the index before anyone else can take it (the
            // mutex orders our last use of it before theirs).
            OWNER.with(|owner| owner.set(usize::MAX));
            OWNED_AT.with(|owned_at| owned_at.set(super::Owned::NONE));
            if let Ok(mut free) = FREE.lock() {
                free.push(Reverse(self.0));
            }
        }
    }
    thread_local! {
        /// The index held, `usize::MAX` if none: a copy of `INDEX` that
        /// needs no lazy initialization to read.
        pub(super) static OWNER: Cell<usize> = const { Cell::new(usize::MAX) };
        /// The thread's owned counter and `rseq` area (see [`owned`](super::owned)).
        pub(super) static OWNED_AT: Cell<super::Owned> = const { Cell::new(super::Owned::NONE) };
        static INDEX: Index = Index::take();
    }

    /// Take this thread's index (first use). During thread teardown the
    /// index may be gone: any stripe is correct for the atomic path.
    #[cold]
    pub(super) fn slow() -> usize {
        INDEX.try_with(|i| i.0).unwrap_or(0)
    }
}

/// Under loom every model thread gets the stripe of its loom thread number,
/// which is deterministic across the explored executions.
#[cfg(loom)]
pub(crate) fn thread_stripe() -> usize {
    let id = format!("{:?}", loom::thread::current().id());
    id.trim_start_matches("ThreadId(").trim_end_matches(')').parse().unwrap_or(0)
}

/// Loom models run the atomic path only: no thread owns a counter.
#[cfg(loom)]
pub(crate) fn owner_index() -> Option<usize> {
    None
}
