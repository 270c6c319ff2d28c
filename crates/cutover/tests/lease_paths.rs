//! Stress tests of both lease paths (the asymmetric-fence path, where the
//! platform offers it, and the atomic path): cross-thread drops, thread
//! churn, record-reuse storms, 100k replaces with pinned generations, and a
//! litmus test of the barrier.
//!
//! Every test checks the one property a wrong count would break: a
//! generation's value is never dropped while a lease on it is held, and
//! every generation drains exactly once when its last lease is gone. Values
//! carry their generation's entry in a table of "alive" flags that their
//! `Drop` clears; a lease holder checks its generation's flag (through the
//! lease's own generation number, never through the value) before it lets
//! go.
//!
//! The litmus test (`plain_updates_are_fenced_by_the_barrier`) is the
//! check of the barrier path that loom cannot make: built with
//! `RUSTFLAGS="--cfg cutover_unsound_no_barrier"` (the barrier replaced by
//! nothing), it fails; see BENCHMARKS.md ("Checking the barrier").

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc, Arc, Barrier,
    },
    thread,
    time::Duration,
};

use cutover::{Drain, Lease, LeasePath, PluginId, Slot};

const DEADLINE: Duration = Duration::from_secs(60);

/// Alive flags by generation, and a count of drops.
struct Table {
    alive: Vec<AtomicBool>,
    drops: AtomicUsize,
    /// Leases that found their generation's value dropped.
    violations: AtomicUsize,
}

impl Table {
    fn new(generations: usize) -> Arc<Self> {
        Arc::new(Self {
            alive: (0..=generations + 1).map(|_| AtomicBool::new(false)).collect(),
            drops: AtomicUsize::new(0),
            violations: AtomicUsize::new(0),
        })
    }

    fn value(self: &Arc<Self>, generation: u64) -> Arc<Value> {
        self.alive[generation as usize].store(true, Ordering::SeqCst);
        Arc::new(Value { generation, table: Arc::clone(self) })
    }

    /// Check that `lease`'s value is alive, then drop it.
    fn check_and_drop(&self, lease: Lease<Value>) {
        if !self.alive[lease.generation() as usize].load(Ordering::SeqCst) {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        drop(lease);
    }

    fn assert_sound(&self) {
        assert_eq!(
            self.violations.load(Ordering::SeqCst),
            0,
            "a generation's value was dropped while a lease on it was held"
        );
    }
}

struct Value {
    generation: u64,
    table: Arc<Table>,
}

impl Drop for Value {
    fn drop(&mut self) {
        let was = self.table.alive[self.generation as usize].swap(false, Ordering::SeqCst);
        assert!(was, "generation {} dropped twice", self.generation);
        self.table.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn slot(path: LeasePath, table: &Arc<Table>) -> Slot<Value> {
    slot_with(path, table, 8)
}

fn slot_with(path: LeasePath, table: &Arc<Table>, stripes: usize) -> Slot<Value> {
    Slot::with_lease_path(PluginId::new("stress"), table.value(1), stripes, path)
}

fn wait_all(drains: Vec<Drain>) {
    for drain in drains {
        if let Err(e) = drain.wait_timeout(DEADLINE) {
            panic!("a drain did not complete within {DEADLINE:?} after its last lease was dropped: {e}");
        }
    }
}

fn paths() -> [LeasePath; 2] {
    [LeasePath::AsymmetricFence, LeasePath::Atomic]
}

/// Clones of `drain` (of a generation with one lease in flight) racing for
/// its first use: each must count the lease (none reads the counters before
/// the sweep the first use runs). Then a callback, which must not run yet;
/// the returned receiver hears it when the drain completes.
fn race_first_uses_then_listen(drain: &Drain, path: LeasePath) -> mpsc::Receiver<()> {
    const CLONES: usize = 4;
    let start = Arc::new(Barrier::new(CLONES));
    let seen: Vec<usize> = (0..CLONES)
        .map(|_| {
            let (drain, start) = (drain.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                drain.in_flight()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("racing clone"))
        .collect();
    assert_eq!(seen, vec![1; CLONES], "{path:?}: a clone read the counters before the sweep");
    let (tx, rx) = mpsc::channel();
    drain.on_drained(move || tx.send(()).expect("test alive"));
    assert!(rx.try_recv().is_err(), "{path:?}: drained under a lease");
    rx
}

#[test]
fn the_lease_path_is_the_one_asked_for_or_the_fallback() {
    let table = Table::new(1);
    assert_eq!(slot(LeasePath::Atomic, &table).lease_path(), LeasePath::Atomic);
    // The asymmetric-fence path is the default wherever it is available
    // (`CUTOVER_LEASE_PATH=atomic` makes it unavailable).
    let default = Slot::new(PluginId::new("default"), table.value(1)).lease_path();
    assert_eq!(default, slot(LeasePath::AsymmetricFence, &table).lease_path());
    let table = Table::new(1);
    let fast = slot(LeasePath::AsymmetricFence, &table);
    if cfg!(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu", not(miri)))
        && std::env::var("CUTOVER_LEASE_PATH").as_deref() != Ok("atomic")
        && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("rseq=0"))
    {
        // glibc 2.35+ registers every thread's rseq area, and kernels since
        // 5.10 have the rseq membarrier commands (CI runs on both).
        assert_eq!(fast.lease_path(), LeasePath::AsymmetricFence);
    }
    let lease = fast.lease();
    let drain = fast.replace(table.value(2));
    assert_eq!(drain.in_flight(), 1);
    assert!(!drain.is_drained());
    table.check_and_drop(lease);
    assert!(drain.is_drained());
    table.assert_sound();
}

/// Leases taken on two threads and dropped on two others (and some on
/// their own thread) while the main thread replaces: every drain completes,
/// none early.
#[test]
fn cross_thread_drops_are_counted_exactly() {
    for path in paths() {
        const REPLACES: usize = 2_000;
        let table = Table::new(REPLACES + 1);
        let slot = Arc::new(slot(path, &table));
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for t in 0..2 {
            let (tx, rx) = mpsc::sync_channel::<Vec<Lease<Value>>>(4);
            let (slot, stop, table2) = (Arc::clone(&slot), Arc::clone(&stop), Arc::clone(&table));
            handles.push(thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<_> = (0..16).map(|_| slot.lease()).collect();
                    i += 1;
                    if (i + t) % 3 == 0 {
                        // Some dropped here, by the owner.
                        batch.into_iter().for_each(|l| table2.check_and_drop(l));
                    } else if tx.send(batch).is_err() {
                        break;
                    }
                }
            }));
            let table = Arc::clone(&table);
            handles.push(thread::spawn(move || {
                for batch in rx {
                    batch.into_iter().for_each(|l| table.check_and_drop(l));
                }
            }));
        }
        let mut drains = Vec::with_capacity(REPLACES);
        for g in 2..=REPLACES as u64 + 1 {
            drains.push(slot.replace(table.value(g)));
            if g % 64 == 0 {
                thread::yield_now();
            }
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().expect("stress thread");
        }
        wait_all(drains);
        table.assert_sound();
        assert_eq!(table.drops.load(Ordering::SeqCst), REPLACES, "{path:?}: every retired generation dropped once");
        assert_eq!(slot.in_flight(), 0, "{path:?}");
    }
}

/// Many short-lived threads (thread indices are given back and reused),
/// each leasing, some handing their leases to a long-lived thread that
/// drops them after the taker exited; replaces meanwhile.
#[test]
fn thread_churn_with_leases_outliving_their_thread() {
    for path in paths() {
        const THREADS: usize = 200;
        let table = Table::new(THREADS + 2);
        let slot = Arc::new(slot(path, &table));
        let (keep_tx, keep_rx) = mpsc::channel::<Vec<Lease<Value>>>();
        let table2 = Arc::clone(&table);
        let keeper = thread::spawn(move || {
            let mut kept = Vec::new();
            for batch in keep_rx {
                kept.push(batch);
                if kept.len() > 8 {
                    kept.remove(0).into_iter().for_each(|l| table2.check_and_drop(l));
                }
            }
            kept.into_iter().flatten().for_each(|l| table2.check_and_drop(l));
        });
        let mut drains = Vec::new();
        for t in 0..THREADS {
            let (slot2, keep_tx, table2) = (Arc::clone(&slot), keep_tx.clone(), Arc::clone(&table));
            let churner = thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..50 {
                    let lease = slot2.lease();
                    if i % 2 == 0 {
                        mine.push(lease);
                    } else {
                        table2.check_and_drop(lease);
                    }
                }
                if t % 2 == 0 {
                    keep_tx.send(mine).expect("keeper alive");
                } else {
                    mine.into_iter().for_each(|l| table2.check_and_drop(l));
                }
            });
            if t % 2 == 1 {
                drains.push(slot.replace(table.value(t as u64 / 2 + 2)));
            }
            churner.join().expect("churner");
        }
        drop(keep_tx);
        keeper.join().expect("keeper");
        wait_all(drains);
        table.assert_sound();
        assert_eq!(table.drops.load(Ordering::SeqCst), THREADS / 2, "{path:?}");
    }
}

/// A record-reuse storm across slots: three threads make and drop
/// short-lived slots as fast as they can. Each slot is replaced while a
/// lease on its first generation is out, that lease goes to the next thread
/// to be dropped there, and the slot is dropped while a lease on its second
/// generation is still held. Their records' and heads' cells go back to the
/// process-wide pools and are taken again by the next slots, on whichever
/// thread; meanwhile the main thread replaces a long-lived slot that the
/// storm threads keep leasing, so its records come from the same pools. No
/// value is dropped under a lease, and every one is dropped once.
#[test]
fn record_reuse_storm_across_slots() {
    type Handed = (Arc<Table>, Lease<Value>);
    for path in paths() {
        const THREADS: usize = 3;
        const ROUNDS: usize = 5_000;
        const LONG_REPLACES: usize = 10_000;
        let long_table = Table::new(LONG_REPLACES + 1);
        let long = Arc::new(slot(path, &long_table));
        let start = Arc::new(Barrier::new(THREADS + 1));
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Handed>()).unzip();
        let workers: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(t, received)| {
                let next = senders[(t + 1) % THREADS].clone();
                let (long, long_table, start) = (Arc::clone(&long), Arc::clone(&long_table), Arc::clone(&start));
                thread::spawn(move || {
                    start.wait();
                    let mut tables = Vec::with_capacity(ROUNDS);
                    for _ in 0..ROUNDS {
                        let table = Table::new(2);
                        let short = slot(path, &table);
                        let first = short.lease();
                        let long_lease = long.lease();
                        let drain = short.replace(table.value(2));
                        let second = short.lease();
                        assert_eq!((first.generation(), drain.generation(), second.generation()), (1, 1, 2));
                        assert!(!drain.is_drained(), "{path:?}: a generation drained under a lease");
                        next.send((Arc::clone(&table), first)).expect("the next storm thread is alive");
                        drop(short);
                        table.check_and_drop(second);
                        long_table.check_and_drop(long_lease);
                        while let Ok((table, lease)) = received.try_recv() {
                            table.check_and_drop(lease);
                        }
                        tables.push(table);
                    }
                    (tables, received)
                })
            })
            .collect();
        drop(senders);
        start.wait();
        let drains: Vec<Drain> = (2..=LONG_REPLACES as u64 + 1).map(|g| long.replace(long_table.value(g))).collect();
        let mut tables = Vec::new();
        let mut leftovers = Vec::new();
        for worker in workers {
            let (made, received) = worker.join().expect("storm thread");
            tables.extend(made);
            leftovers.push(received);
        }
        // Every sender is gone with its thread: these iterations end.
        for (table, lease) in leftovers.into_iter().flatten() {
            table.check_and_drop(lease);
        }
        wait_all(drains);
        long_table.assert_sound();
        assert_eq!(long_table.drops.load(Ordering::SeqCst), LONG_REPLACES, "{path:?}");
        assert_eq!(tables.len(), THREADS * ROUNDS);
        for table in &tables {
            table.assert_sound();
            assert_eq!(
                table.drops.load(Ordering::SeqCst),
                2,
                "{path:?}: both generations of a short-lived slot dropped once"
            );
        }
    }
}

/// 100k replaces: every 1,000th generation is pinned by a lease held to the
/// end (so its record cannot be reused), the others drain at once and their
/// records are reused, while another thread leases continuously.
#[test]
fn a_hundred_thousand_replaces_with_pinned_generations() {
    for path in paths() {
        const REPLACES: u64 = 100_000;
        let table = Table::new(REPLACES as usize + 1);
        let slot = Arc::new(slot(path, &table));
        let stop = Arc::new(AtomicBool::new(false));
        let leases = Arc::new(AtomicU64::new(0));
        let reader = {
            let (slot, stop, table, leases) =
                (Arc::clone(&slot), Arc::clone(&stop), Arc::clone(&table), Arc::clone(&leases));
            thread::spawn(move || {
                let mut last = 0;
                while !stop.load(Ordering::Relaxed) {
                    let lease = slot.lease();
                    assert!(lease.generation() >= last, "generations went backwards on one thread");
                    last = lease.generation();
                    table.check_and_drop(lease);
                    leases.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let mut pinned = Vec::new();
        let mut pinned_drains = Vec::new();
        for g in 2..=REPLACES + 1 {
            let pin = (g % 1_000 == 0).then(|| slot.lease());
            let drain = slot.replace(table.value(g));
            if let Some(pin) = pin {
                assert!(!drain.is_drained(), "{path:?}: a pinned generation drained");
                pinned.push(pin);
                pinned_drains.push(drain);
            }
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader");
        table.assert_sound();
        assert!(pinned_drains.iter().all(|d| !d.is_drained() && d.in_flight() == 1), "{path:?}");
        pinned.into_iter().for_each(|l| table.check_and_drop(l));
        wait_all(pinned_drains);
        assert_eq!(table.drops.load(Ordering::SeqCst), REPLACES as usize, "{path:?}");
        assert!(leases.load(Ordering::Relaxed) > 0);
    }
}

/// The litmus test of the barrier: one thread takes leases in a loop while
/// another replaces as fast as it can, so that the leaser's plain updates
/// race the sweep. Before each lease the leaser makes stores that miss the
/// caches: they fill its core's store buffer, so the lease's own counter
/// store reaches memory late (stores commit in order) while its loads run
/// ahead. Without the barrier (`--cfg cutover_unsound_no_barrier`) the
/// sweep can then read the counter before the lease's store lands, and an
/// update in progress is not restarted: the sweep misses the lease, the
/// generation is dropped under it (or its record is reused under it, which
/// corrupts the next generation's counter), and this test fails. With the
/// barrier the leaser's core drains its store buffer, and restarts an
/// update it is in the middle of, before the sweep reads.
///
/// `CUTOVER_LITMUS_ITERATIONS` sets the leaser's iterations (default
/// 20,000), `CUTOVER_LITMUS_MISSES` the cache-missing stores per
/// iteration (default 32).
#[test]
fn plain_updates_are_fenced_by_the_barrier() {
    // Room for 16M generations (the writer stops there, if ever).
    let table = Table::new(16 << 20);
    let slot = Arc::new(slot(LeasePath::AsymmetricFence, &table));
    let leased = Arc::clone(&slot);
    litmus(vec![Arc::clone(&table)], move |_| leased.lease(), |generation| drop(slot.replace(table.value(generation))));
}

/// The litmus test with batched cutovers: the writer cuts 4 slots over
/// with each `CutoverBatch`, whose drains share one barrier issued after
/// the 4 cutovers, while the leaser leases the last slot of the batch (the
/// one whose cutover is closest to the barrier and the sum, so the race is
/// as tight as the single-slot test's; the earlier ones only have more time
/// between their cutover and the barrier, like a writer preempted there).
/// Without the barrier it fails as the single-slot test does.
#[test]
fn batched_cutovers_are_fenced_by_their_shared_barrier() {
    use cutover::CutoverBatch;
    const SLOTS: usize = 2;
    let tables: Vec<Arc<Table>> = (0..SLOTS).map(|_| Table::new(4 << 20)).collect();
    let slots: Arc<Vec<Slot<Value>>> =
        Arc::new(tables.iter().map(|table| slot(LeasePath::AsymmetricFence, table)).collect());
    let leased = Arc::clone(&slots);
    litmus(
        vec![Arc::clone(&tables[SLOTS - 1])],
        move |_| leased[SLOTS - 1].lease(),
        |generation| {
            let mut batch = CutoverBatch::new();
            for (slot, table) in slots.iter().zip(&tables) {
                batch.replace(slot, table.value(generation));
            }
            drop(batch.finish());
        },
    );
}

/// The body of the litmus tests: a leaser thread takes leases of plugin
/// `i % tables.len()` (through `lease`) in its `i`th iteration, while this
/// thread calls `replace_all` with generation 2, 3, ... (each call cuts
/// every plugin over to that generation, its value made from the
/// plugin's table) until the leaser is done or a table is full.
fn litmus(
    tables: Vec<Arc<Table>>,
    lease: impl Fn(usize) -> Lease<Value> + Send + 'static,
    mut replace_all: impl FnMut(u64),
) {
    /// 8 MiB of scratch (2,048 pages), replaced by fresh pages every
    /// `FRESH_EVERY` iterations.
    const SCRATCH_WORDS: usize = 1 << 20;
    const FRESH_EVERY: u64 = 32;
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let iterations = env("CUTOVER_LITMUS_ITERATIONS", 20_000);
    let misses = env("CUTOVER_LITMUS_MISSES", 32);
    let limit = tables.iter().map(|t| t.alive.len() as u64).min().unwrap_or(0).saturating_sub(2);
    let done = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(2));
    // One leaser and one writer: on 2 cores, both run at once.
    let leaser = {
        let (tables, start, done) = (tables.clone(), Arc::clone(&start), Arc::clone(&done));
        thread::spawn(move || {
            let mut scratch: Vec<u64> = Vec::new();
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let mut scribble = |scratch: &mut Vec<u64>| {
                for _ in 0..misses {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let line = (rng as usize % (SCRATCH_WORDS / 8)) * 8;
                    // SAFETY: a volatile store through a valid `&mut`
                    // (volatile, so that it is neither merged nor elided).
                    unsafe { std::ptr::write_volatile(&mut scratch[line], rng) };
                }
            };
            start.wait();
            for i in 1..=iterations {
                if i % FRESH_EVERY == 1 {
                    // Fresh zero pages (a large zeroed allocation is mapped
                    // lazily): the stores below take page faults, and the
                    // kernel's page clearing fills the store buffer.
                    scratch = vec![0u64; SCRATCH_WORDS];
                }
                let plugin = i as usize % tables.len();
                scribble(&mut scratch);
                let lease = lease(plugin);
                // Hold the lease across a cutover or two before checking.
                scribble(&mut scratch);
                tables[plugin].check_and_drop(lease);
                done.store(i, Ordering::Relaxed);
                if tables.iter().any(|t| t.violations.load(Ordering::Relaxed) > 0) {
                    break;
                }
            }
            done.store(u64::MAX, Ordering::Relaxed);
            std::hint::black_box(&scratch);
        })
    };
    start.wait();
    let mut generation = 1;
    while done.load(Ordering::Relaxed) != u64::MAX && generation < limit {
        generation += 1;
        replace_all(generation);
    }
    let leaser = leaser.join();
    let violations: usize = tables.iter().map(|t| t.violations.load(Ordering::Relaxed)).sum();
    eprintln!("litmus: {} rounds of cutovers, {violations} violations", generation - 1);
    assert!(leaser.is_ok(), "the leaser panicked (a corrupted count: see above)");
    tables.iter().for_each(|t| t.assert_sound());
}

/// A signal handler that takes a lease on the thread it interrupted, maybe
/// in the middle of that thread's own lease update, is counted exactly:
/// on the asymmetric-fence path the kernel restarts the interrupted update
/// (plain updates alone would let the interrupted store overwrite the
/// handler's). The handler keeps each lease (`mem::forget`), so every
/// update of the counter matters: after the storm, the retired
/// generation's in-flight count is exactly the leases the thread holds
/// plus the handler's.
#[cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]
#[test]
fn leases_taken_in_signal_handlers_are_counted_exactly() {
    use std::sync::atomic::AtomicPtr;

    const SIGNALS: usize = 10_000;
    static SLOT: AtomicPtr<Slot<Value>> = AtomicPtr::new(std::ptr::null_mut());
    static HANDLED: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn take_and_keep(_: libc::c_int) {
        let slot = SLOT.load(Ordering::SeqCst);
        if !slot.is_null() {
            // SAFETY: the slot outlives the storm (it is unset before drop).
            // The thread already holds its index (no allocation here), and
            // nothing is replaced during the storm (no drain completes here).
            std::mem::forget(unsafe { &*slot }.lease());
            HANDLED.fetch_add(1, Ordering::SeqCst);
        }
    }

    for path in paths() {
        let table = Table::new(2);
        let slot = Box::new(slot(path, &table));
        SLOT.store(std::ptr::addr_of!(*slot).cast_mut(), Ordering::SeqCst);
        HANDLED.store(0, Ordering::SeqCst);
        // SAFETY: installs a handler that only leases (see above) for a
        // real-time signal (queued, never merged), which nothing else in
        // this test binary uses.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = take_and_keep as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            assert_eq!(libc::sigaction(libc::SIGRTMIN(), &action, std::ptr::null_mut()), 0);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let leaser = {
            let (stop, slot) = (Arc::clone(&stop), SLOT.load(Ordering::SeqCst) as usize);
            thread::spawn(move || {
                // SAFETY: as in the handler.
                let slot = unsafe { &*(slot as *const Slot<Value>) };
                // Take this thread's index before the first signal.
                drop(slot.lease());
                // SAFETY: `pthread_self` has no preconditions.
                tx.send(unsafe { libc::pthread_self() } as usize).expect("main thread waits");
                let mut held = Vec::with_capacity(1 << 16);
                while !stop.load(Ordering::Relaxed) {
                    held.push(slot.lease());
                    if held.len() == 1 << 16 {
                        held.truncate(1 << 10);
                    }
                    drop(slot.lease());
                }
                held
            })
        };
        let target = rx.recv().expect("the leaser started") as libc::pthread_t;
        // In batches of 16, each waited for, so that the handlers land at
        // many points of the leaser's loop and never overflow the queue
        // (real-time signals queue; they do not merge).
        for batch in 1..=SIGNALS / 16 {
            for _ in 0..16 {
                // SAFETY: the leaser runs until `stop`, so the thread id is live.
                assert_eq!(unsafe { libc::pthread_kill(target, libc::SIGRTMIN()) }, 0);
            }
            while HANDLED.load(Ordering::SeqCst) < batch * 16 {
                thread::yield_now();
            }
        }
        stop.store(true, Ordering::SeqCst);
        let held = leaser.join().expect("the leaser does not panic");
        let drain = slot.replace(table.value(2));
        assert_eq!(
            drain.in_flight(),
            held.len() + HANDLED.load(Ordering::SeqCst),
            "{path:?}: the count lost or invented a lease (held {}, taken in handlers {})",
            held.len(),
            HANDLED.load(Ordering::SeqCst)
        );
        SLOT.store(std::ptr::null_mut(), Ordering::SeqCst);
        drop(held);
        assert!(!drain.is_drained(), "the handlers' leases are still held");
        table.assert_sound();
        // The handlers' leases are leaked on purpose: generation 1 never drains.
        std::mem::forget(slot);
    }
}

/// A registry's `remove` leaves its barrier to its drain as a replace does
/// (on the asymmetric-fence path; on the atomic path there is none): a
/// removal with nothing in flight ends at the drain's first use or drop;
/// with a lease in flight, racing first uses all count it and the drain
/// completes when it is dropped. Every value is dropped once, none under a
/// lease.
#[test]
fn a_registry_removal_leaves_its_barrier_to_its_drain() {
    use cutover::Registry;
    for path in paths() {
        let registry: Registry<u8, Value> = Registry::new();
        let tables: Vec<Arc<Table>> = (0..3).map(|_| Table::new(1)).collect();
        let slots: Vec<Slot<Value>> = tables.iter().map(|table| slot(path, table)).collect();
        // What the slots got (the asymmetric path falls back where the
        // platform lacks it).
        let deferred = slots[0].lease_path() == LeasePath::AsymmetricFence;
        registry.extend((0..).zip(slots)).expect("distinct keys");

        // Nothing in flight: the first use ends the retirement.
        let drain = registry.remove(&0).expect("registered");
        assert!(registry.lease(&0).is_none(), "{path:?}: removed, yet found");
        assert!(drain.is_drained(), "{path:?}");
        assert_eq!(tables[0].drops.load(Ordering::SeqCst), 1, "{path:?}");

        // A drain dropped unseen ends it too (and until then, on the
        // asymmetric path, the value lives on).
        let drain = registry.remove(&1).expect("registered");
        assert_eq!(tables[1].drops.load(Ordering::SeqCst), usize::from(!deferred), "{path:?}: ended in `remove`");
        drop(drain);
        assert_eq!(tables[1].drops.load(Ordering::SeqCst), 1, "{path:?}: an unseen drain's value");

        // Clones racing for the first use, with one lease in flight.
        let lease = registry.lease(&2).expect("registered");
        let drain = registry.remove(&2).expect("registered");
        let rx = race_first_uses_then_listen(&drain, path);
        tables[2].check_and_drop(lease);
        rx.recv_timeout(DEADLINE).expect("the callback runs when the last lease is dropped");
        assert!(drain.is_drained(), "{path:?}");
        for table in &tables {
            table.assert_sound();
            assert_eq!(table.drops.load(Ordering::SeqCst), 1, "{path:?}: every value dropped once");
        }
    }
}

/// Batched cutovers (`Registry::replace_many`, which starts every drain of
/// the batch after one shared barrier on the asymmetric-fence path) while
/// two threads lease plugins all over the registry, pin some generations
/// across batches and hand some leases to a third thread to drop: every
/// generation drains exactly once, none under a lease.
#[test]
fn batched_cutovers_share_one_barrier_and_count_exactly() {
    use cutover::Registry;
    for path in paths() {
        // More than a barrier's share (256), so batches also end some
        // retirements before their last cutover.
        const PLUGINS: usize = 300;
        const BATCHES: u64 = 200;
        let tables: Vec<Arc<Table>> = (0..PLUGINS).map(|_| Table::new(BATCHES as usize + 1)).collect();
        let registry: Arc<Registry<usize, Value>> = Arc::new(Registry::new());
        registry.extend(tables.iter().enumerate().map(|(key, table)| (key, slot(path, table)))).expect("distinct keys");
        let stop = Arc::new(AtomicBool::new(false));
        let (handed, dropper) = mpsc::channel::<(usize, Lease<Value>)>();
        let mut handles = Vec::new();
        for t in 0..2usize {
            let (registry, stop, tables, handed) =
                (Arc::clone(&registry), Arc::clone(&stop), tables.clone(), handed.clone());
            handles.push(thread::spawn(move || {
                let mut pinned = Vec::new();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    i = i.wrapping_mul(31).wrapping_add(17);
                    let key = i % PLUGINS;
                    let lease = registry.lease(&key).expect("registered");
                    match i % 7 {
                        0 => pinned.push((key, lease)),
                        1 | 2 => handed.send((key, lease)).expect("the dropper is alive"),
                        _ => tables[key].check_and_drop(lease),
                    }
                    if pinned.len() > 32 {
                        for (key, lease) in pinned.drain(..16) {
                            tables[key].check_and_drop(lease);
                        }
                    }
                }
                pinned
            }));
        }
        drop(handed);
        let dropper = {
            let tables = tables.clone();
            thread::spawn(move || {
                for (key, lease) in dropper {
                    tables[key].check_and_drop(lease);
                }
            })
        };
        let mut drains = Vec::with_capacity(PLUGINS * BATCHES as usize);
        let keys: Vec<usize> = (0..PLUGINS).collect();
        for g in 2..=BATCHES + 1 {
            let outcome = registry.replace_many(keys.iter().map(|key| (key, tables[*key].value(g))));
            drains.extend(outcome.into_iter().map(|drain| drain.expect("registered")));
        }
        stop.store(true, Ordering::Relaxed);
        for handle in handles {
            for (key, lease) in handle.join().expect("leasing thread") {
                tables[key].check_and_drop(lease);
            }
        }
        dropper.join().expect("dropping thread");
        wait_all(drains);
        for table in &tables {
            table.assert_sound();
            assert_eq!(table.drops.load(Ordering::SeqCst), BATCHES as usize, "{path:?}: every retired generation once");
        }
        drop(Arc::try_unwrap(registry).expect("the only registry handle"));
        for table in &tables {
            assert_eq!(
                table.drops.load(Ordering::SeqCst),
                BATCHES as usize + 1,
                "{path:?}: the last at the registry's drop"
            );
        }
    }
}

/// A record's cells go back to the process-wide pool with its slot, and a
/// new record of another slot starts from them without having its stripes
/// written (they must come back zeroed): after a slot whose every stripe
/// was leased through and frozen is dropped, slots made from its cells
/// count from zero.
#[test]
fn records_reused_across_slots_start_from_zeroed_stripes() {
    const STRIPES: usize = 8;
    for path in paths() {
        for _ in 0..4 {
            let table = Table::new(3);
            let used = Arc::new(slot_with(path, &table, STRIPES));
            // STRIPES live threads hold distinct thread indices, so every
            // stripe (and on the asymmetric path every owned counter) of
            // both generations is written; the cutover freezes generation 1.
            let start = Arc::new(Barrier::new(STRIPES + 1));
            let replaced = Arc::new(Barrier::new(STRIPES + 1));
            let threads: Vec<_> = (0..STRIPES)
                .map(|_| {
                    let (used, table, start, replaced) =
                        (Arc::clone(&used), Arc::clone(&table), Arc::clone(&start), Arc::clone(&replaced));
                    thread::spawn(move || {
                        let first = used.lease();
                        start.wait();
                        replaced.wait();
                        let second = used.lease();
                        table.check_and_drop(first);
                        table.check_and_drop(second);
                    })
                })
                .collect();
            start.wait();
            let drain = used.replace(table.value(2));
            replaced.wait();
            threads.into_iter().for_each(|t| t.join().expect("leasing thread"));
            wait_all(vec![drain]);
            drop(Arc::try_unwrap(used).ok());
            table.assert_sound();
            assert_eq!(table.drops.load(Ordering::SeqCst), 2, "{path:?}");

            // New slots take the lowest free cells first: the ones just given back.
            let tables: Vec<Arc<Table>> = (0..4).map(|_| Table::new(2)).collect();
            let fresh: Vec<Slot<Value>> = tables.iter().map(|table| slot_with(path, table, STRIPES)).collect();
            for (slot, table) in fresh.iter().zip(&tables) {
                assert_eq!(slot.in_flight(), 0, "{path:?}: a new record counts from zero");
                let lease = slot.lease();
                assert_eq!(slot.in_flight(), 1, "{path:?}");
                let drain = slot.replace(table.value(2));
                assert_eq!(drain.in_flight(), 1, "{path:?}: the new record's count is exact");
                table.check_and_drop(lease);
                assert!(drain.is_drained(), "{path:?}");
                table.assert_sound();
                assert_eq!(table.drops.load(Ordering::SeqCst), 1, "{path:?}");
            }
            drop(fresh);
        }
    }
}

/// Issue 14, item 3: on the asymmetric-fence path a single `replace` leaves
/// its barrier and sweep to the `Drain` it returns, which runs them once, on
/// its first use or its last clone's drop. Whichever comes first, and
/// however many clones race for it, the drain's state is exact: no clone
/// reads the counters before the sweep (it would see nothing in flight), the
/// old value is dropped exactly once and never under a lease, and callbacks
/// registered on a drain that had not ended yet still run.
#[test]
fn a_drain_ends_the_retirement_its_cutover_left_to_it() {
    for path in paths() {
        // Nothing in flight; the first use ends the retirement and drops the value.
        let table = Table::new(6);
        let slot = slot(path, &table);
        let drain = slot.replace(table.value(2));
        assert!(drain.is_drained(), "{path:?}");
        assert_eq!(table.drops.load(Ordering::SeqCst), 1, "{path:?}");

        // A drain dropped unseen ends it too.
        drop(slot.replace(table.value(3)));
        assert_eq!(table.drops.load(Ordering::SeqCst), 2, "{path:?}: an unseen drain's value");

        // Clones racing for the first use, with one lease in flight.
        let lease = slot.lease();
        let drain = slot.replace(table.value(4));
        let rx = race_first_uses_then_listen(&drain, path);
        table.check_and_drop(lease);
        rx.recv_timeout(DEADLINE).expect("the callback runs when the last lease is dropped");
        assert!(drain.is_drained(), "{path:?}");

        // A callback registered first, on a drain nobody else looked at.
        let lease = slot.lease();
        let drain = slot.replace(table.value(5));
        let (tx, rx) = mpsc::channel();
        drain.on_drained(move || tx.send(()).expect("test alive"));
        drop(drain);
        assert!(rx.try_recv().is_err(), "{path:?}: drained under a lease");
        table.check_and_drop(lease);
        rx.recv_timeout(DEADLINE).expect("the callback runs when the last lease is dropped");
        drop(slot);
        table.assert_sound();
        assert_eq!(table.drops.load(Ordering::SeqCst), 5, "{path:?}: every value dropped once");
    }
}
