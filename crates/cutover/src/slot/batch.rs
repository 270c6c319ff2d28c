//! [`CutoverBatch`]: cutovers of many slots that start their drains
//! together, after one barrier.
//!
//! On the asymmetric-fence path every retirement needs the process-wide
//! barrier between marking the old record draining and summing its owned
//! counters (see the `record` module docs). Nothing in that argument asks
//! for one barrier *per record*: a barrier issued after several records
//! were marked serves them all, and any amount of time may pass between
//! marking a record and its barrier (a writer preempted there is the same
//! case). So a batch begins every retirement as its cutover happens, and
//! once 256 of them wait (or at the end) issues one barrier and ends them
//! in order, while their records are still in cache. On the atomic path
//! there is no barrier: a retirement is ended as soon as it begins, as
//! `Slot::replace` does, so a batch is exactly a loop of replaces.

use std::{fmt, sync::Arc};

use super::{
    fence,
    record::{Retiring, Shared},
    strong::Strong,
    Drain, Finalize, Slot,
};
use crate::lifecycle::SharedLifecycle;

/// Cutovers of many slots whose drains start together. On the
/// asymmetric-fence lease path ([`LeasePath::AsymmetricFence`](super::LeasePath::AsymmetricFence)),
/// where the drain of every [`Slot::replace`] pays one process-wide barrier
/// (`membarrier`: some microseconds, and an interrupt to every CPU running
/// one of the process's threads), the cutovers of a batch share one (one
/// per 256 cutovers, so that their records are ended while still in cache).
/// On the atomic path it is exactly a loop of `replace` (each drain starts
/// at its cutover).
///
/// Each [`replace`](Self::replace) is a whole cutover, as `Slot::replace`'s:
/// when it returns, every lease taken afterwards sees the new value, and
/// leases taken before keep the old one. On the asymmetric-fence path the
/// old generation's drain may wait until [`finish`](Self::finish) (a batch
/// issues its barrier once per 256 such cutovers, and at `finish`): until
/// then it cannot complete (its value is not dropped, its lifecycle stays
/// `Draining`). `finish` returns the [`Drain`]s, in the order of the
/// cutovers. A batch dropped without `finish` (e.g. by a panic) finishes
/// in its `Drop`; a batch leaked with [`mem::forget`](std::mem::forget)
/// leaves its old generations draining forever. It is not a transaction across slots: a
/// lease taken meanwhile may see some slots cut over and others not.
///
/// [`Registry::replace_many`](crate::Registry::replace_many) is this for
/// the plugins of a registry.
///
/// ```
/// use std::sync::Arc;
/// use cutover::{CutoverBatch, PluginId, Slot};
///
/// let slots: Vec<Slot<u32>> = (0..3).map(|i| Slot::new(PluginId::new("p"), Arc::new(i))).collect();
/// let held = slots[1].lease();
/// let mut batch = CutoverBatch::new();
/// for slot in &slots {
///     batch.replace(slot, Arc::new(10));
/// }
/// assert_eq!(*slots[0].lease(), 10, "each cutover is visible at once");
/// let drains = batch.finish();
/// assert!(drains[0].is_drained() && drains[2].is_drained());
/// assert_eq!(drains[1].in_flight(), 1, "a lease taken before keeps generation 1");
/// drop(held);
/// assert!(drains[1].is_drained());
/// ```
pub struct CutoverBatch<T: ?Sized + Send + Sync + 'static> {
    cutovers: Vec<Cutover<T>>,
    /// How many of `cutovers` wait for the barrier.
    waiting: usize,
    /// Every cutover before this position has been retired.
    retired_up_to: usize,
}

/// How many retirements share a barrier at most: after this many, a batch
/// issues the barrier and ends them before it goes on, while their records
/// are still in cache (a barrier costs some microseconds; this spreads it
/// to a fraction of a microsecond per cutover, and a batch of 10,000 ending
/// its records in one pass after the last cutover was measurably slower).
const SHARED_BY: usize = 256;

/// One cutover of a batch.
enum Cutover<T: ?Sized + Send + Sync + 'static> {
    /// On the asymmetric-fence path: its retirement waits for the barrier.
    Waiting(Strong<Shared<T>>, Retiring<T>),
    /// On the atomic path: retired at once, as `Slot::replace` would.
    Retired(Drain),
}

impl<T: ?Sized + Send + Sync + 'static> CutoverBatch<T> {
    /// An empty batch.
    pub fn new() -> Self {
        Self { cutovers: Vec::new(), waiting: 0, retired_up_to: 0 }
    }

    /// Cut `slot` over to `value`, as [`Slot::replace`] does, leaving the
    /// old generation's drain to [`finish`](Self::finish). Returns the
    /// position of its [`Drain`] in what `finish` returns.
    pub fn replace(&mut self, slot: &Slot<T>, value: Arc<T>) -> usize {
        self.replace_as(slot, value, None, Finalize::OnDrain)
    }

    /// Like [`replace`](Self::replace), with the new generation's lifecycle
    /// (set `Active`) and how the old one is finalized, as
    /// [`Slot::replace_with`].
    pub fn replace_with(
        &mut self,
        slot: &Slot<T>,
        value: Arc<T>,
        lifecycle: SharedLifecycle,
        finalize: Finalize,
    ) -> usize {
        self.replace_as(slot, value, Some(lifecycle), finalize)
    }

    /// [`replace_with`](Self::replace_with), with a lifecycle made on
    /// request if `lifecycle` is `None` (see [`Slot::lifecycle`]).
    fn replace_as(
        &mut self,
        slot: &Slot<T>,
        value: Arc<T>,
        lifecycle: Option<SharedLifecycle>,
        finalize: Finalize,
    ) -> usize {
        match self.try_replace(slot, value, lifecycle, finalize) {
            Some(index) => index,
            // Only a `Registry` closes a slot, and it never replaces one after.
            None => unreachable!("replace on a closed slot"),
        }
    }

    /// [`replace_with`](Self::replace_with), or `None` (nothing changed) if
    /// the slot was closed.
    pub(crate) fn try_replace(
        &mut self,
        slot: &Slot<T>,
        value: Arc<T>,
        lifecycle: Option<SharedLifecycle>,
        finalize: Finalize,
    ) -> Option<usize> {
        let shared = slot.slot.strong();
        let retiring = Shared::cut_over(&shared, value, lifecycle, finalize)?;
        Some(self.push(shared, retiring))
    }

    /// The close of [`Slot::close`], its drain left to `finish`; `None` if
    /// the slot was already closed.
    pub(crate) fn close(&mut self, slot: &Slot<T>, finalize: Finalize) -> Option<usize> {
        let shared = slot.slot.strong();
        let retiring = shared.begin_close(finalize)?;
        Some(self.push(shared, retiring))
    }

    /// Add a begun retirement: ended at once on the atomic path (nothing to
    /// share; the record is still in cache), else left for the barrier.
    fn push(&mut self, shared: Strong<Shared<T>>, retiring: Retiring<T>) -> usize {
        let cutover = if shared.needs_barrier() {
            self.waiting += 1;
            Cutover::Waiting(shared, retiring)
        } else {
            Cutover::Retired(Cutover::Waiting(shared, retiring).end())
        };
        self.cutovers.push(cutover);
        if self.waiting == SHARED_BY {
            self.retire_waiting();
        }
        self.cutovers.len() - 1
    }

    /// Issue the barrier and end every retirement waiting for it.
    fn retire_waiting(&mut self) {
        if std::mem::take(&mut self.waiting) == 0 {
            return;
        }
        fence::barrier();
        let tail: Vec<Cutover<T>> = self.cutovers.drain(self.retired_up_to..).collect();
        self.cutovers.extend(tail.into_iter().map(|cutover| Cutover::Retired(cutover.end())));
        self.retired_up_to = self.cutovers.len();
    }

    /// How many cutovers the batch holds.
    pub fn len(&self) -> usize {
        self.cutovers.len()
    }

    /// Whether the batch holds no cutover.
    pub fn is_empty(&self) -> bool {
        self.cutovers.is_empty()
    }

    /// Start every drain of the batch, after one barrier if any of its
    /// slots is on the asymmetric-fence path: the [`Drain`]s, in the order
    /// of the cutovers. Drains with nothing in flight complete here (their
    /// old values are dropped, on this thread).
    pub fn finish(mut self) -> Vec<Drain> {
        self.end_all()
    }

    fn end_all(&mut self) -> Vec<Drain> {
        self.retire_waiting();
        self.retired_up_to = 0;
        std::mem::take(&mut self.cutovers).into_iter().map(Cutover::end).collect()
    }
}

impl<T: ?Sized + Send + Sync + 'static> Cutover<T> {
    /// The drain, ending the retirement if it waits: only after the barrier
    /// that followed its `begin_retire`, if its slot needs one.
    fn end(self) -> Drain {
        match self {
            Cutover::Retired(drain) => drain,
            Cutover::Waiting(shared, retiring) => {
                let (signal, record) = shared.end_retire(retiring);
                Drain::new(signal, shared, record)
            }
        }
    }
}

impl<T: ?Sized + Send + Sync + 'static> Default for CutoverBatch<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: ?Sized + Send + Sync + 'static> Drop for CutoverBatch<T> {
    /// A batch abandoned without [`finish`](Self::finish) (e.g. by a
    /// panic) still starts its drains, so that no old generation is left
    /// draining forever.
    fn drop(&mut self) {
        drop(self.end_all());
    }
}

impl<T: ?Sized + Send + Sync + 'static> fmt::Debug for CutoverBatch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CutoverBatch")
            .field("cutovers", &self.cutovers.len())
            .field("waiting_for_the_barrier", &self.waiting)
            .finish()
    }
}
