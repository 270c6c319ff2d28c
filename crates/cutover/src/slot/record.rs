//! The lease-counting protocol: generation records, their counters, the
//! cutover and the drain.
//!
//! # How leases are counted
//!
//! Each generation lives in a [`Record`]: the value, and a small array of
//! cache-padded counters, one per *stripe* (see [`super::stripe`]). A lease
//! increments its thread's stripe; dropping it decrements the same stripe,
//! on whatever thread that happens. While a generation is current, nobody
//! ever sums the stripes, so the per-call path writes one cache line that
//! no other thread writes: no contention, however many threads lease.
//!
//! # The cutover
//!
//! [`Shared::replace`] publishes the new record with one atomic swap of the
//! `current` pointer. A lease validates after incrementing that `current`
//! still points at its record; the increment and the validation, and the swap
//! and the drain's sweep below, are sequentially consistent, so either the
//! lease's increment is seen by the sweep, or the lease sees the swap and
//! retries on the new generation (a store-buffering argument, checked by the
//! loom models).
//!
//! # The drain
//!
//! After the swap, the old record is switched to *draining* mode, as in
//! Linux's `percpu_ref`: each stripe gets [`DRAINING_BIT`] by one `fetch_or`,
//! which also returns the count frozen at that instant. The sum of the frozen
//! counts is moved into one central counter, which was pre-loaded with a
//! bias so that decrements racing the sweep cannot reach zero early. A lease
//! whose decrement finds the bit set also decrements the central counter;
//! whichever operation brings it to zero (the last lease, or the sweep if
//! nothing was in flight) completes the drain, exactly once.
//!
//! A lease increments with one `fetch_add`, and checks the bit in the value
//! it returns: if the stripe was already frozen, the lease did not start
//! (the record is no longer current) and it undoes its increment. That undo
//! must know whether its stray increment was counted by a freeze: the stripe
//! word carries an *epoch*, bumped whenever the record is reused for a new
//! generation. Same epoch at the undo: still the freeze it saw, which did not
//! count it. Another epoch and frozen: the record was reused and frozen again
//! with the increment counted, so the undo also decrements that generation's
//! central counter. Another epoch and not frozen: a plain undo.
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
//! # Memory
//!
//! A thread that read the `current` pointer just before a cutover may still
//! touch that record's stripe (and fail to validate) after the generation has
//! drained. Records are therefore *type-stable*, as with Linux's
//! `SLAB_TYPESAFE_BY_RCU`: a drained record goes on the slot's free list and
//! is reused for a later generation, and its memory is freed only when the
//! slot itself is gone (every handle dropped and every generation drained).
//! The plugin value is dropped as soon as its generation drains; only the
//! small counter block is kept, so a slot's memory is bounded by the largest
//! number of generations ever alive at once.

use std::{
    fmt,
    ptr::NonNull,
    sync::{atomic::Ordering, Arc},
};

use super::{
    signal::DrainSignal,
    stripe::{COUNT_MASK, DRAINING_BIT, EPOCH_MASK, EPOCH_SHIFT},
    tracking::{Straggler, Tracker},
    Finalize,
};
use crate::{
    lifecycle::{EpochFencedReload, LifecycleState, PluginLifecycle, SharedLifecycle},
    sync::{lock, AtomicBool, AtomicPtr, AtomicUsize, CachePadded, Mutex, UnsafeCell},
    PluginId,
};

/// Pre-loaded into the central counter of a generation, so that it cannot
/// reach zero before the sweep has added the frozen stripe counts.
const BIAS: usize = 1 << (usize::BITS - 2);

/// What a live generation holds. Written only while its record is not
/// reachable by any lease (before publication, or after the drain).
pub(crate) struct Incarnation<T: ?Sized + 'static> {
    pub(crate) generation: u64,
    pub(crate) value: Arc<T>,
    pub(crate) signal: Arc<DrainSignal>,
    /// Keeps the slot's shared state (and so this record's memory) alive
    /// while the generation lives. Released when the drain completes.
    keep: Arc<Shared<T>>,
}

/// One generation's counters and value. See the module docs.
pub(crate) struct Record<T: ?Sized + 'static> {
    stripes: Box<[CachePadded<AtomicUsize>]>,
    central: AtomicUsize,
    incarnation: UnsafeCell<Option<Incarnation<T>>>,
    /// Leases taken with straggler tracking on (empty when it is off).
    pub(crate) tracker: Tracker,
}

struct Writer<T: ?Sized + 'static> {
    next_generation: u64,
    /// Drained records, ready for reuse.
    free: Vec<NonNull<Record<T>>>,
    /// Every record this slot ever allocated, freed when the slot is gone.
    all: Vec<NonNull<Record<T>>>,
}

/// The state a slot shares with its live generations and drain handles.
pub(crate) struct Shared<T: ?Sized + 'static> {
    pub(crate) id: PluginId,
    current: AtomicPtr<Record<T>>,
    mask: usize,
    /// Set once by [`Shared::close`]: the slot has no current generation.
    closed: AtomicBool,
    /// Straggler tracking on (see `tracking`).
    pub(crate) tracking: AtomicBool,
    writer: Mutex<Writer<T>>,
}

// SAFETY: the raw record pointers are owned by `Shared` (allocated and freed
// only here); the values they hold are `Send + Sync`, and every access to a
// record's non-atomic part follows the protocol in the module docs.
unsafe impl<T: ?Sized + Send + Sync + 'static> Send for Shared<T> {}
// SAFETY: as above; shared access is through atomics or protocol-guarded cells.
unsafe impl<T: ?Sized + Send + Sync + 'static> Sync for Shared<T> {}

/// A successful acquisition: the record, the stripe, and what the lease needs.
pub(crate) struct Acquired<T: ?Sized + 'static> {
    pub(crate) record: NonNull<Record<T>>,
    pub(crate) stripe: usize,
    pub(crate) value: NonNull<T>,
    pub(crate) generation: u64,
    /// The straggler-tracking ticket, 0 if untracked.
    pub(crate) ticket: u64,
}

impl<T: ?Sized + Send + Sync + 'static> Shared<T> {
    /// A slot serving `value` as generation 1, with `lifecycle` set `Active`.
    pub(crate) fn new(id: PluginId, value: Arc<T>, lifecycle: SharedLifecycle, stripes: usize) -> Arc<Self> {
        let stripes = stripes.clamp(1, 1 << 16).next_power_of_two();
        let shared = Arc::new(Self {
            id,
            current: AtomicPtr::new(std::ptr::null_mut()),
            mask: stripes - 1,
            closed: AtomicBool::new(false),
            tracking: AtomicBool::new(false),
            writer: Mutex::new(Writer { next_generation: 1, free: Vec::new(), all: Vec::new() }),
        });
        {
            let mut writer = lock(&shared.writer);
            let record = shared.prepare(&mut writer, value, lifecycle);
            shared.current.store(record.as_ptr(), Ordering::SeqCst);
        }
        shared
    }

    /// Take a record (reused or new) and fill it with the next generation.
    /// The record is not yet reachable by leases.
    fn prepare(
        self: &Arc<Self>,
        writer: &mut Writer<T>,
        value: Arc<T>,
        lifecycle: SharedLifecycle,
    ) -> NonNull<Record<T>> {
        let generation = writer.next_generation;
        writer.next_generation += 1;
        let record = match writer.free.pop() {
            Some(record) => record,
            None => {
                let stripes = (0..=self.mask).map(|_| CachePadded(AtomicUsize::new(0))).collect();
                let record = Box::new(Record {
                    stripes,
                    central: AtomicUsize::new(BIAS),
                    incarnation: UnsafeCell::new(None),
                    tracker: Tracker::default(),
                });
                // SAFETY: `Box::into_raw` never returns null.
                let record = unsafe { NonNull::new_unchecked(Box::into_raw(record)) };
                writer.all.push(record);
                record
            }
        };
        // SAFETY: records in `all` stay allocated while `self` lives.
        let rec = unsafe { record.as_ref() };
        // A reused record drained completely: no lease of it remains, but a
        // thread may be between a stray increment of a frozen stripe and its
        // undo. Unfreeze and bump the epoch, keeping such counts.
        for stripe in rec.stripes.iter() {
            let _ = stripe.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let epoch = (word & EPOCH_MASK).wrapping_add(1 << EPOCH_SHIFT) & EPOCH_MASK;
                Some(epoch | (word & COUNT_MASK))
            });
        }
        rec.central.store(BIAS, Ordering::Release);
        if lifecycle.state() != LifecycleState::Active {
            lifecycle.set(LifecycleState::Active);
        }
        let signal = Arc::new(DrainSignal::new(generation, EpochFencedReload::new(lifecycle)));
        let incarnation = Incarnation { generation, value, signal, keep: Arc::clone(self) };
        // SAFETY: the record is not current and has no incarnation (fresh, or
        // drained and taken off the free list under the writer lock), so no
        // lease reads the cell; stray readers only touch the stripes.
        rec.incarnation.with_mut(|cell| unsafe { *cell = Some(incarnation) });
        record
    }

    /// Take a lease on the current generation: the per-call path. `None`
    /// only once the slot is closed.
    #[inline]
    pub(crate) fn acquire(&self, stripe: usize) -> Option<Acquired<T>> {
        let stripe = stripe & self.mask;
        loop {
            let ptr = self.current.load(Ordering::Acquire);
            // SAFETY: `current` always points at a record in `all`, which stays
            // allocated while `self` lives, and the caller borrows `self`.
            let rec = unsafe { &*ptr };
            // SAFETY: `stripe <= mask`, and every record has `mask + 1` stripes.
            let counter = unsafe { rec.stripes.get_unchecked(stripe) };
            // SeqCst, as it pairs with the drain's freeze and the swap; its
            // acquire half also means that having seen a frozen stripe, the
            // next read of `current` sees the record that replaced this one.
            let before = counter.fetch_add(1, Ordering::SeqCst);
            if before & DRAINING_BIT != 0 {
                // Frozen: the record is draining or drained, `current` moved on.
                // SAFETY: we hold the stray count we just added.
                unsafe { undo_stray(NonNull::new_unchecked(ptr), stripe, before) };
                if self.closed.load(Ordering::SeqCst) {
                    return None;
                }
                #[cfg(loom)]
                loom::thread::yield_now();
                continue;
            }
            if self.current.load(Ordering::SeqCst) == ptr {
                // SAFETY: validated: the record was current after our
                // increment, so its drain cannot complete (and the record
                // cannot be reused) until we release; its incarnation was
                // written before it was published by the swap we just read.
                let (value, generation) = rec.incarnation.with(|cell| match unsafe { &*cell } {
                    Some(inc) => (NonNull::from(&*inc.value), inc.generation),
                    // The current record always has an incarnation.
                    None => unreachable!("current generation record without a value"),
                });
                // SAFETY: `ptr` came from a `NonNull` stored in `current`.
                let record = unsafe { NonNull::new_unchecked(ptr) };
                let ticket = if self.tracking.load(Ordering::Relaxed) { rec.tracker.track() } else { 0 };
                return Some(Acquired { record, stripe, value, generation, ticket });
            }
            // Replaced between our load and our increment: undo and retry.
            // SAFETY: we hold the count we just added on `stripe` of `ptr`.
            unsafe { release(NonNull::new_unchecked(ptr), stripe) };
        }
    }

    /// The cutover: publish `value` as the next generation and start draining
    /// the one it replaces. Returns the old generation's signal and record.
    pub(crate) fn replace(
        self: &Arc<Self>,
        value: Arc<T>,
        lifecycle: SharedLifecycle,
        finalize: Finalize,
    ) -> (Arc<DrainSignal>, NonNull<Record<T>>) {
        let (old, new_generation) = {
            let mut writer = lock(&self.writer);
            debug_assert!(!self.closed.load(Ordering::Relaxed), "replace on a closed slot");
            let record = self.prepare(&mut writer, value, lifecycle);
            let old = self.current.swap(record.as_ptr(), Ordering::SeqCst);
            (old, writer.next_generation - 1)
        };
        // SAFETY: `old` was current, so it is a live record.
        let old = unsafe { NonNull::new_unchecked(old) };
        let signal = self.retire(old, finalize);
        tracing::info!(target: "cutover::slot", plugin = %self.id, from = signal.generation, to = new_generation, "cutover");
        (signal, old)
    }

    /// Close the slot: retire its current generation and leave it without
    /// one; later acquisitions return `None`. `None` if already closed.
    pub(crate) fn close(&self, finalize: Finalize) -> Option<(Arc<DrainSignal>, NonNull<Record<T>>)> {
        {
            let _writer = lock(&self.writer);
            if self.closed.swap(true, Ordering::SeqCst) {
                return None;
            }
        }
        let record = self.current_record();
        Some((self.retire(record, finalize), record))
    }

    /// Start draining `record`, which was just unpublished: move its lifecycle
    /// `Active → Draining`, freeze its stripes and complete the drain if
    /// nothing is in flight.
    pub(crate) fn retire(&self, record: NonNull<Record<T>>, finalize: Finalize) -> Arc<DrainSignal> {
        // SAFETY: an unpublished record whose drain has not completed (we
        // are the only party that can start it) is live and its incarnation
        // stable: only the drain's completion takes it.
        let rec = unsafe { record.as_ref() };
        let signal = rec.incarnation.with(|cell| match unsafe { &*cell } {
            Some(inc) => Arc::clone(&inc.signal),
            None => unreachable!("retiring a generation record without a value"),
        });
        signal.mark_cutover(finalize == Finalize::OnDrain);
        if let Err(e) = signal.fence.begin_drain() {
            tracing::warn!(target: "cutover::slot", plugin = %self.id, generation = signal.generation, error = %e, "old generation was not Active at cutover");
        }
        let frozen: usize = rec
            .stripes
            .iter()
            .map(|stripe| stripe.fetch_or(DRAINING_BIT, Ordering::SeqCst) & COUNT_MASK)
            .fold(0usize, usize::wrapping_add);
        // Releases that raced the sweep have already decremented `central`;
        // remove the bias, keeping the frozen count.
        let adjust = BIAS.wrapping_sub(frozen);
        if rec.central.fetch_sub(adjust, Ordering::AcqRel) == adjust {
            // SAFETY: the central count reached zero by our hand: we complete.
            unsafe { complete(record) };
        }
        signal
    }

    /// Operations in flight on the generation `signal` belongs to, whose
    /// record is `record` (a snapshot; 0 once drained).
    pub(crate) fn in_flight(&self, record: NonNull<Record<T>>, signal: &DrainSignal) -> usize {
        if signal.is_done() {
            return 0;
        }
        // SAFETY: records stay allocated while `self` lives.
        let central = unsafe { record.as_ref() }.central.load(Ordering::Acquire);
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
        let stragglers = unsafe { record.as_ref() }.tracker.stragglers();
        // A reused record belongs to a later generation: done was announced
        // before the reuse.
        if signal.is_done() {
            Vec::new()
        } else {
            stragglers
        }
    }

    /// Read the current generation's incarnation under a short lease
    /// (lock-free). `None` once the slot is closed.
    pub(crate) fn with_current<R>(&self, f: impl FnOnce(&Incarnation<T>) -> R) -> Option<R> {
        let acquired = self.acquire(super::stripe::thread_stripe())?;
        // SAFETY: the lease we hold keeps the incarnation in place.
        let out = unsafe { acquired.record.as_ref() }.incarnation.with(|cell| unsafe { &*cell }.as_ref().map(f));
        // SAFETY: we give back the count (and ticket) `acquire` took.
        unsafe { end_lease(acquired.record, acquired.stripe, acquired.ticket) };
        out
    }

    /// Operations in flight on the current generation (a snapshot).
    pub(crate) fn current_in_flight(&self) -> usize {
        // SAFETY: records stay allocated while `self` lives; only atomics are read.
        let rec = unsafe { &*self.current.load(Ordering::Acquire) };
        rec.stripes.iter().map(|s| s.load(Ordering::Relaxed) & COUNT_MASK).fold(0, usize::wrapping_add)
    }

    /// The current record, for retiring it when the slot handle goes away.
    pub(crate) fn current_record(&self) -> NonNull<Record<T>> {
        // SAFETY: `current` is never null after construction.
        unsafe { NonNull::new_unchecked(self.current.load(Ordering::Acquire)) }
    }
}

/// End a lease: forget its straggler-tracking `ticket` (0: untracked), then
/// give back its count on `stripe` of `record`.
///
/// # Safety
/// As for [`release`]; `ticket` is the one the lease's acquisition returned.
#[inline]
pub(crate) unsafe fn end_lease<T: ?Sized + Send + Sync + 'static>(
    record: NonNull<Record<T>>,
    stripe: usize,
    ticket: u64,
) {
    if ticket != 0 {
        // SAFETY: still leased, so the record is live.
        unsafe { record.as_ref() }.tracker.untrack(ticket);
    }
    // SAFETY: forwarded from the caller.
    unsafe { release(record, stripe) }
}

/// End one count on `stripe` of `record`.
///
/// # Safety
/// The caller holds one count on that stripe (a lease, or an unvalidated
/// increment), which it gives up here.
#[inline]
pub(crate) unsafe fn release<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>, stripe: usize) {
    // SAFETY: our count keeps the record's generation from completing its
    // drain, so the record is live; after this decrement we touch it again
    // only if the stripe was frozen, in which case our count is still part
    // of the central counter until we decrement that.
    let rec = unsafe { record.as_ref() };
    // SAFETY: `stripe` was masked when the lease was taken.
    let before = unsafe { rec.stripes.get_unchecked(stripe) }.fetch_sub(1, Ordering::Release);
    if before & DRAINING_BIT != 0 {
        // SAFETY: forwarded from the caller.
        unsafe { release_draining(record) };
    }
}

/// Undo an increment that found its stripe frozen (`before` is the word the
/// increment returned). See the module docs.
///
/// # Safety
/// The caller made that increment on `stripe` of `record` and holds the slot.
#[cold]
#[inline(never)]
unsafe fn undo_stray<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>, stripe: usize, before: usize) {
    // SAFETY: the caller borrows the slot, so the record is allocated.
    let rec = unsafe { record.as_ref() };
    let now = rec.stripes[stripe].fetch_sub(1, Ordering::AcqRel);
    let reused = (now & EPOCH_MASK) != (before & EPOCH_MASK);
    if reused && now & DRAINING_BIT != 0 {
        // Reused and frozen again, with our increment counted.
        // SAFETY: our count is in that generation's central counter.
        unsafe { release_draining(record) };
    }
}

#[cold]
#[inline(never)]
unsafe fn release_draining<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>) {
    // SAFETY: see `release`: our count is in `central`, so the record is live.
    let rec = unsafe { record.as_ref() };
    if rec.central.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: we brought the central count to zero: we complete.
        unsafe { complete(record) };
    }
}

/// Complete the drain of `record`: finalize the lifecycle, drop the value,
/// announce, and put the record up for reuse. Panics in the value's drop,
/// wakers and callbacks are caught and reported (see the module docs).
///
/// # Safety
/// Called exactly once per generation, by the party that brought the central
/// count to zero; no lease of the generation remains.
#[cold]
unsafe fn complete<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>) {
    // SAFETY: the record is live until `keep` below is dropped.
    let rec = unsafe { record.as_ref() };
    // SAFETY: no lease remains and none can start; the writer reads the cell
    // only for current records and writes it only for free ones (not yet).
    let Some(Incarnation { generation, value, signal, keep }) =
        rec.incarnation.with_mut(|cell| unsafe { (*cell).take() })
    else {
        return;
    };
    signal.finalize_on_drain();
    tracing::info!(target: "cutover::slot", plugin = %keep.id, generation, "drained");
    if let Err(panic) = crate::unwind::catch(move || drop(value)) {
        tracing::error!(target: "cutover::slot", plugin = %keep.id, generation, panic = %panic,
            "dropping the drained generation's value panicked; the drain completes regardless");
    }
    // Announce before the record can be reused: a `Drain` that reads the
    // record's counter and then sees "not done" read this generation's.
    signal.complete();
    lock(&keep.writer).free.push(record);
    drop(keep);
}

impl<T: ?Sized + 'static> Drop for Shared<T> {
    fn drop(&mut self) {
        #[cfg(loom)]
        let writer = self.writer.get_mut().unwrap();
        #[cfg(not(loom))]
        let writer = self.writer.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        for record in writer.all.drain(..) {
            // SAFETY: every record was made by `Box::into_raw` in `prepare`;
            // with `Shared` gone no lease, drain or stray reader can reach it
            // (each of those holds `Shared` alive).
            drop(unsafe { Box::from_raw(record.as_ptr()) });
        }
    }
}

impl<T: ?Sized + 'static> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("id", &self.id).field("stripes", &(self.mask + 1)).finish_non_exhaustive()
    }
}

/// A lifecycle for a generation built directly by a slot (no load walk).
pub(crate) fn fresh_lifecycle(id: &PluginId) -> SharedLifecycle {
    Arc::new(PluginLifecycle::with_state(id.clone(), LifecycleState::Initialized))
}

/// Whether the generation a lease holds has been asked to cancel.
///
/// # Safety
/// The caller holds a lease on `record`.
#[inline]
pub(crate) unsafe fn leased_cancelled<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>) -> bool {
    // SAFETY: the lease keeps the generation (and its incarnation) in place.
    unsafe { record.as_ref() }
        .incarnation
        .with(|cell| unsafe { &*cell }.as_ref().is_some_and(|inc| inc.signal.is_cancelled()))
}
