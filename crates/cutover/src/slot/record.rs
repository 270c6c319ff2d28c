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
    stripe::{COUNT_LIMIT, COUNT_MASK, DRAINING_BIT, EPOCH_MASK, EPOCH_SHIFT, MAX_STRIPES},
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

// Every stripe at its limit, plus a stray per thread, stays far below the bias.
const _: () = assert!(MAX_STRIPES.checked_mul(COUNT_LIMIT).is_some() && MAX_STRIPES * COUNT_LIMIT <= BIAS / 4);

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
    /// The next record on the slot's `deferred` list.
    next_deferred: AtomicPtr<Record<T>>,
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
    /// Completions by a lease's drop are deferred to the writer side (see
    /// the module docs). Fixed at construction.
    defer: bool,
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

/// A successful acquisition: the record, the stripe, and what the lease needs.
pub(crate) struct Acquired<T: ?Sized + 'static> {
    pub(crate) record: NonNull<Record<T>>,
    pub(crate) stripe: usize,
    pub(crate) value: NonNull<T>,
    pub(crate) generation: u64,
    /// The straggler-tracking ticket, 0 if untracked.
    pub(crate) ticket: u64,
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

impl<T: ?Sized + Send + Sync + 'static> Shared<T> {
    /// A slot serving `value` as generation 1, with `lifecycle` set `Active`.
    /// With `defer`, completions by lease drops are left to the writer side.
    pub(crate) fn new(
        id: PluginId,
        value: Arc<T>,
        lifecycle: SharedLifecycle,
        stripes: usize,
        defer: bool,
    ) -> Arc<Self> {
        let stripes = stripes.clamp(1, MAX_STRIPES).next_power_of_two();
        let shared = Arc::new(Self {
            id,
            current: AtomicPtr::new(std::ptr::null_mut()),
            mask: stripes - 1,
            closed: AtomicBool::new(false),
            tracking: AtomicBool::new(false),
            defer,
            deferred: AtomicPtr::new(std::ptr::null_mut()),
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
                    next_deferred: AtomicPtr::new(std::ptr::null_mut()),
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
    /// only once the slot is closed. Never completes a drain (see the module
    /// docs).
    ///
    /// # Panics
    /// If the stripe already counts [`COUNT_LIMIT`] leases (leaked ones,
    /// typically); the increment is undone first.
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
            if before & (DRAINING_BIT | COUNT_LIMIT) != 0 {
                // SAFETY: we hold the increment we just made on `stripe` of `ptr`.
                match unsafe { self.acquire_cold(ptr, stripe, before) } {
                    Cold::Leased(acquired) => return Some(acquired),
                    Cold::Closed => return None,
                    Cold::Retry => continue,
                }
            }
            if self.current.load(Ordering::SeqCst) == ptr {
                // SAFETY: validated: the record was current after our
                // increment, so its drain cannot complete (and the record
                // cannot be reused) until we release; its incarnation was
                // written before it was published by the swap we just read.
                return Some(unsafe { self.leased(ptr, stripe) });
            }
            // Replaced between our load and our increment: undo, or adopt if
            // the old record's freeze already counted us.
            if undo_or_adopt(counter, |word| word & DRAINING_BIT != 0) == Undo::Adopted {
                // SAFETY: a freeze counted our increment (see the module docs).
                return Some(unsafe { self.leased(ptr, stripe) });
            }
        }
    }

    /// The rare cases of [`acquire`](Self::acquire): the stripe was frozen,
    /// or its count at the limit.
    ///
    /// # Safety
    /// The caller made one increment on `stripe` of `ptr`, which returned
    /// `before`, and gives it up here.
    #[cold]
    #[inline(never)]
    unsafe fn acquire_cold(&self, ptr: *mut Record<T>, stripe: usize, before: usize) -> Cold<T> {
        // SAFETY: the caller borrows `self`, so the record is allocated.
        let counter = unsafe { (&*ptr).stripes.get_unchecked(stripe) };
        if before & DRAINING_BIT != 0 {
            // A stray increment of a frozen stripe: that freeze did not count
            // it, a freeze of a later epoch would have.
            let epoch = before & EPOCH_MASK;
            if undo_or_adopt(counter, |word| word & DRAINING_BIT != 0 && word & EPOCH_MASK != epoch) == Undo::Adopted {
                // SAFETY: the freeze of a later epoch counted our increment.
                return Cold::Leased(unsafe { self.leased(ptr, stripe) });
            }
            if self.closed.load(Ordering::SeqCst) {
                return Cold::Closed;
            }
            #[cfg(loom)]
            loom::thread::yield_now();
            return Cold::Retry;
        }
        // The count is at the limit: refuse, unless a freeze already counted
        // the increment (then it is a lease like any other, below the limit
        // of what the central counter can hold).
        if undo_or_adopt(counter, |word| word & DRAINING_BIT != 0) == Undo::Adopted {
            // SAFETY: a freeze counted our increment.
            return Cold::Leased(unsafe { self.leased(ptr, stripe) });
        }
        panic!(
            "cutover: plugin `{}`: {COUNT_LIMIT} leases are held at once on one lease counter, the most it can count; \
             leases are being leaked (e.g. with mem::forget) or accumulated without bound",
            self.id
        );
    }

    /// Build the acquisition of a lease on `ptr`'s current incarnation.
    ///
    /// # Safety
    /// The caller holds a count on `stripe` of `ptr` that keeps that
    /// incarnation from completing, and the incarnation's write happens
    /// before this call.
    #[inline]
    unsafe fn leased(&self, ptr: *mut Record<T>, stripe: usize) -> Acquired<T> {
        // SAFETY: forwarded from the caller.
        let rec = unsafe { &*ptr };
        let (value, generation) = rec.incarnation.with(|cell| match unsafe { &*cell } {
            Some(inc) => (NonNull::from(&*inc.value), inc.generation),
            // A counted generation always has an incarnation.
            None => unreachable!("leased generation record without a value"),
        });
        // SAFETY: `ptr` came from a `NonNull` stored in `current`.
        let record = unsafe { NonNull::new_unchecked(ptr) };
        let ticket = if self.tracking.load(Ordering::Relaxed) { rec.tracker.track() } else { 0 };
        Acquired { record, stripe, value, generation, ticket }
    }

    /// The cutover: publish `value` as the next generation and start draining
    /// the one it replaces. Returns the old generation's signal and record,
    /// or `None` if the slot was closed (then nothing changed).
    pub(crate) fn replace(
        self: &Arc<Self>,
        value: Arc<T>,
        lifecycle: SharedLifecycle,
        finalize: Finalize,
    ) -> Option<(Arc<DrainSignal>, NonNull<Record<T>>)> {
        let (old, new_generation) = {
            let mut writer = lock(&self.writer);
            if self.closed.load(Ordering::Relaxed) {
                // `value` is dropped by our caller's frame, after the lock.
                return None;
            }
            let record = self.prepare(&mut writer, value, lifecycle);
            let old = self.current.swap(record.as_ptr(), Ordering::SeqCst);
            (old, writer.next_generation - 1)
        };
        // SAFETY: `old` was current, so it is a live record.
        let old = unsafe { NonNull::new_unchecked(old) };
        let signal = self.retire(old, finalize);
        tracing::info!(target: "cutover::slot", plugin = %self.id, from = signal.generation, to = new_generation, "cutover");
        Some((signal, old))
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
            // SAFETY: the central count reached zero by our hand, on the
            // writer side: we complete.
            unsafe { complete(record) };
        }
        signal
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
            next = unsafe { record.as_ref() }.next_deferred.load(Ordering::Relaxed);
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

    /// Add `delta` (two's complement) to the count of `stripe` of the
    /// current record, as if that many leases had been taken (or dropped)
    /// there: lets unit tests reach the count limit without 2^39 leases.
    #[cfg(test)]
    pub(crate) fn add_to_current_stripe(&self, stripe: usize, delta: usize) -> usize {
        // SAFETY: records stay allocated while `self` lives.
        let rec = unsafe { &*self.current.load(Ordering::Acquire) };
        rec.stripes[stripe & self.mask].fetch_add(delta, Ordering::SeqCst).wrapping_add(delta) & COUNT_MASK
    }
}

/// What the cold path of an acquisition ended with.
enum Cold<T: ?Sized + 'static> {
    Leased(Acquired<T>),
    Closed,
    Retry,
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

/// End one lease's count on `stripe` of `record`.
///
/// # Safety
/// The caller holds one counted lease on that stripe, which it gives up here.
#[inline]
unsafe fn release<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>, stripe: usize) {
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

#[cold]
#[inline(never)]
unsafe fn release_draining<T: ?Sized + Send + Sync + 'static>(record: NonNull<Record<T>>) {
    // SAFETY: see `release`: our count is in `central`, so the record is live.
    let rec = unsafe { record.as_ref() };
    if rec.central.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    // We brought the central count to zero: the incarnation is ours.
    // SAFETY: no lease remains and none can start; the record cannot be
    // completed or reused by anyone else until we complete or defer it.
    let deferred = rec.incarnation.with(|cell| match unsafe { &*cell } {
        Some(inc) if inc.keep.defer => Some(Arc::as_ptr(&inc.keep)),
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
    let rec = unsafe { record.as_ref() };
    let mut top = head.load(Ordering::Relaxed);
    loop {
        rec.next_deferred.store(top, Ordering::Relaxed);
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
