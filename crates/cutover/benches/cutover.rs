//! Side-by-side benchmark of `cutover` against `arc-swap`, `RwLock<Arc<T>>`
//! and the seed's polling drain, all in one process.
//!
//! Run with `cargo bench -p cutover --bench cutover`. Set
//! `CUTOVER_BENCH_QUICK=1` for a short smoke run (numbers are then noisy).
//! The table is printed and also written as markdown to
//! `target/cutover-bench.md`.
//!
//! `CUTOVER_BENCH_ONLY=per-call` (or `latency`, or `registry`, or several,
//! comma-separated)
//! runs only those sections and prints each figure as a machine-readable
//! `RESULT <section>|<row>|<condition>|<value>` line (no tables):
//! `scripts/bench-before-after` runs this file against two commits of the
//! library that way, alternating the two builds. `CUTOVER_BENCH_ROUNDS=N`
//! overrides the number of per-call rounds, `CUTOVER_BENCH_ATTEMPTS=N` the
//! number of times a measurement is made while other processes are busy
//! (default 8 for per-call figures, 4 for latencies).
//!
//! What is measured:
//!
//! * per-call cost (ns/op) of obtain + deref + drop, with 1 and 2 threads,
//!   with and without a writer thread replacing every millisecond: `Slot::lease`
//!   vs. `ArcSwap::load` (Guard), `ArcSwap::load_full`, and `RwLock<Arc<T>>`
//!   read + clone (the seed's approach). Each round runs every candidate once,
//!   interleaved; the figure is the median over the rounds.
//! * drain notification latency: the time from right before the last lease is
//!   dropped on one thread to `Drain::wait_timeout` returning on another, vs. a
//!   plain `Mutex<bool>` + `Condvar`, vs. the seed's `wait_for_drain` polling
//!   every 10 ms and every 100 µs.
//! * `replace` latency while 2 threads lease continuously, vs. `ArcSwap::store`
//!   while 2 threads `load()` continuously; the same `replace` on the
//!   asymmetric-fence path, alone (it leaves its barrier to the `Drain`) and
//!   with the drop of its `Drain` (the barrier included), and the cost of
//!   waking a parked thread (`unpark`), the least a cutover that handed its
//!   barrier to a background thread would pay.
//! * `Registry` lookup + lease with 1 vs. 10,000 plugins, for a fixed key and
//!   for keys rotating over a shuffled list, through `Registry::lease` and
//!   through a `RegistryReader` (one per measuring thread), vs. the same
//!   structure built of `arc-swap` (a swappable map of `ArcSwap`s), read
//!   with `load()` and through `arc_swap::Cache` (the reader's like-for-like
//!   peer). The reader rows need `Registry::reader`; built with
//!   `--cfg cutover_bench_no_reader` (as `scripts/bench-before-after` does
//!   against older commits), the harness leaves them out.

use std::{
    collections::HashMap,
    fmt::Write as _,
    hint::black_box,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Barrier, Condvar, Mutex, RwLock,
    },
    thread,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use cutover::{EpochFencedReload, LeasePath, LifecycleState, PluginId, PluginLifecycle, Registry, Slot};

mod common;
use common::{plugin, shuffle, Plugin, Rng};

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

struct Config {
    /// Length of one measurement run of a per-call benchmark.
    run: Duration,
    /// Rounds of per-call runs (median taken over them).
    rounds: usize,
    /// Samples for the drain notification and condvar latencies.
    drain_samples: usize,
    /// Samples for the 10 ms poll (each costs ~10 ms).
    poll_10ms_samples: usize,
    /// Samples for the 100 µs poll.
    poll_100us_samples: usize,
    /// Samples for `replace` / `store` latency (one per millisecond).
    replace_samples: usize,
}

impl Config {
    fn from_env() -> Self {
        let cfg = if std::env::var_os("CUTOVER_BENCH_QUICK").is_some() {
            Self {
                run: Duration::from_millis(40),
                rounds: 3,
                drain_samples: 200,
                poll_10ms_samples: 10,
                poll_100us_samples: 100,
                replace_samples: 300,
            }
        } else {
            Self {
                run: Duration::from_millis(250),
                rounds: 9,
                drain_samples: 3000,
                poll_10ms_samples: 100,
                poll_100us_samples: 1000,
                replace_samples: 5000,
            }
        };
        cfg.with_rounds_from_env()
    }

    /// `CUTOVER_BENCH_ROUNDS`, if set, replaces the number of rounds.
    fn with_rounds_from_env(mut self) -> Self {
        if let Some(rounds) = std::env::var("CUTOVER_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()) {
            self.rounds = rounds;
        }
        self
    }
}

/// The sections `CUTOVER_BENCH_ONLY` asks for (`None`: the full run).
fn only_sections() -> Option<Vec<String>> {
    let only = std::env::var("CUTOVER_BENCH_ONLY").ok()?;
    Some(only.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

const WRITE_PERIOD: Duration = Duration::from_millis(1);
const BATCH: u64 = 256;
const REGISTRY_SIZE: usize = 10_000;

// ---------------------------------------------------------------------------
// The plugin value and the candidates
// ---------------------------------------------------------------------------

// The value behind every pointer is `common::Plugin`, made by `plugin(id)`.

/// One candidate for the per-call benchmark.
trait Candidate: Send + Sync + 'static {
    /// What one measuring thread keeps from one call to the next: a counter
    /// (most candidates), or a reader and its counter.
    type Local<'a>;
    /// A measuring thread's state before its first call.
    fn local(&self) -> Self::Local<'_>;
    /// Obtain, deref and release once. Every candidate's is
    /// `#[inline(always)]`: left to the compiler, whether an `op` is inlined
    /// into the measuring loop differed between candidates and between
    /// builds (an `op` called out of line costs a call and returns through
    /// memory), and moved the ratios by up to 2× (BENCHMARKS.md, issue 14,
    /// session 33).
    fn op(&self, local: &mut Self::Local<'_>) -> u64;
    /// What the writer thread does every millisecond.
    fn write(&self, generation: u64);
}

struct CutoverLease(Slot<Plugin>);

impl Candidate for CutoverLease {
    type Local<'a> = ();
    fn local(&self) {}
    #[inline(always)]
    fn op(&self, (): &mut ()) -> u64 {
        let lease = self.0.lease();
        let v = black_box(&*lease).id;
        drop(lease);
        v
    }
    fn write(&self, generation: u64) {
        drop(self.0.replace(plugin(generation)));
    }
}

/// The floor: an `Arc` held for good, dereferenced (no obtain, no release).
struct DirectCall(Arc<Plugin>);

impl Candidate for DirectCall {
    type Local<'a> = ();
    fn local(&self) {}
    #[inline(always)]
    fn op(&self, (): &mut ()) -> u64 {
        black_box(&*self.0).id
    }
    fn write(&self, _: u64) {}
}

struct ArcSwapLoad(ArcSwap<Plugin>);

impl Candidate for ArcSwapLoad {
    type Local<'a> = ();
    fn local(&self) {}
    #[inline(always)]
    fn op(&self, (): &mut ()) -> u64 {
        let guard = self.0.load();
        let v = black_box(&**guard).id;
        drop(guard);
        v
    }
    fn write(&self, generation: u64) {
        self.0.store(plugin(generation));
    }
}

struct ArcSwapLoadFull(ArcSwap<Plugin>);

impl Candidate for ArcSwapLoadFull {
    type Local<'a> = ();
    fn local(&self) {}
    #[inline(always)]
    fn op(&self, (): &mut ()) -> u64 {
        let full = self.0.load_full();
        let v = black_box(&*full).id;
        drop(full);
        v
    }
    fn write(&self, generation: u64) {
        self.0.store(plugin(generation));
    }
}

struct RwLockClone(RwLock<Arc<Plugin>>);

impl Candidate for RwLockClone {
    type Local<'a> = ();
    fn local(&self) {}
    #[inline(always)]
    fn op(&self, (): &mut ()) -> u64 {
        let cloned = Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let v = black_box(&*cloned).id;
        drop(cloned);
        v
    }
    fn write(&self, generation: u64) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = plugin(generation);
    }
}

/// `Slot::generation()`, a diagnostic: lock-free, through a short lease.
struct SlotGeneration(Slot<Plugin>);

impl Candidate for SlotGeneration {
    type Local<'a> = ();
    fn local(&self) {}
    #[inline(always)]
    fn op(&self, (): &mut ()) -> u64 {
        self.0.generation()
    }
    fn write(&self, generation: u64) {
        drop(self.0.replace(plugin(generation)));
    }
}

/// The counter `i`'s value, then `i` moved on by one, wrapping at `len`.
#[inline]
fn advance(i: &mut usize, len: usize) -> usize {
    let at = *i;
    *i = if at + 1 == len { 0 } else { at + 1 };
    at
}

/// `Registry::lease` by a fixed key, or by keys rotating over `keys`.
///
/// With a fixed key, the lookups rotate over several registries with the
/// same contents (each with its own random hasher seed), so that the figure
/// is an average over seeds rather than the luck of one seed's collisions.
struct RegistryLookup {
    registries: Vec<Registry<String, Plugin>>,
    fixed: Option<String>,
    keys: Vec<String>,
}

impl RegistryLookup {
    /// The `i`th lookup's registry (an index into `registries`) and key;
    /// advances `i`.
    #[inline]
    fn next(&self, i: &mut usize) -> (usize, &str) {
        match &self.fixed {
            Some(key) => (advance(i, self.registries.len()), black_box(key.as_str())),
            None => (0, self.keys[advance(i, self.keys.len())].as_str()),
        }
    }
}

impl Candidate for RegistryLookup {
    type Local<'a> = usize;
    fn local(&self) -> usize {
        0
    }
    #[inline(always)]
    fn op(&self, i: &mut usize) -> u64 {
        let (registry, key) = self.next(i);
        let lease = self.registries[registry].lease(key).expect("registered key");
        let v = black_box(&*lease).id;
        drop(lease);
        v
    }
    fn write(&self, generation: u64) {
        let key = self.fixed.as_deref().unwrap_or(&self.keys[0]);
        for registry in &self.registries {
            drop(registry.replace(key, plugin(generation)).expect("registered key"));
        }
    }
}

/// The same lookups through `RegistryReader::lease`: each measuring thread
/// keeps one reader per registry (the reader keeps the key map's lease from
/// one lookup to the next).
#[cfg(not(cutover_bench_no_reader))]
struct ReaderLookup(RegistryLookup);

#[cfg(not(cutover_bench_no_reader))]
impl Candidate for ReaderLookup {
    type Local<'a> = (usize, Vec<cutover::RegistryReader<'a, String, Plugin, std::hash::RandomState>>);
    fn local(&self) -> Self::Local<'_> {
        (0, self.0.registries.iter().map(Registry::reader).collect())
    }
    #[inline(always)]
    fn op(&self, (i, readers): &mut Self::Local<'_>) -> u64 {
        let (registry, key) = self.0.next(i);
        let lease = readers[registry].lease(key).expect("registered key");
        let v = black_box(&*lease).id;
        drop(lease);
        v
    }
    fn write(&self, generation: u64) {
        self.0.write(generation);
    }
}

/// The same structure built from `arc-swap`: a swappable key map of
/// swappable plugins; lookup = `load()` the map, `get`, `load()` the entry.
struct ArcSwapRegistry {
    map: ArcSwap<HashMap<String, Arc<ArcSwap<Plugin>>>>,
    keys: Vec<String>,
}

impl ArcSwapRegistry {
    fn new(ids: &[usize], keys: Vec<String>) -> Self {
        let map = ids.iter().map(|&i| (format!("plugin-{i}"), Arc::new(ArcSwap::new(plugin(i as u64))))).collect();
        Self { map: ArcSwap::from_pointee(map), keys }
    }

    /// The `i`th lookup's key; advances `i`.
    #[inline]
    fn next(&self, i: &mut usize) -> &str {
        self.keys[advance(i, self.keys.len())].as_str()
    }
}

impl Candidate for ArcSwapRegistry {
    type Local<'a> = usize;
    fn local(&self) -> usize {
        0
    }
    #[inline(always)]
    fn op(&self, i: &mut usize) -> u64 {
        let key = self.next(i);
        let map = self.map.load();
        let entry = map.get(key).expect("registered key").load();
        let v = black_box(&**entry).id;
        drop(entry);
        drop(map);
        v
    }
    fn write(&self, generation: u64) {
        let map = self.map.load();
        let key = map.keys().next().expect("one plugin at least");
        map[key].store(plugin(generation));
    }
}

/// The same map read through `arc_swap::Cache`, which keeps the map's
/// `Arc` from one lookup to the next (checking with one load that it is
/// still current): the like-for-like peer of `RegistryReader`.
struct ArcSwapRegistryCached(ArcSwapRegistry);

/// A measuring thread's cache of the map of `ArcSwap`s.
type MapCache<'a> =
    arc_swap::Cache<&'a ArcSwap<HashMap<String, Arc<ArcSwap<Plugin>>>>, Arc<HashMap<String, Arc<ArcSwap<Plugin>>>>>;

impl Candidate for ArcSwapRegistryCached {
    type Local<'a> = (usize, MapCache<'a>);
    fn local(&self) -> Self::Local<'_> {
        (0, arc_swap::Cache::new(&self.0.map))
    }
    #[inline(always)]
    fn op(&self, (i, cache): &mut Self::Local<'_>) -> u64 {
        let key = self.0.next(i);
        let entry = cache.load().get(key).expect("registered key").load();
        let v = black_box(&**entry).id;
        drop(entry);
        v
    }
    fn write(&self, generation: u64) {
        self.0.write(generation);
    }
}

/// How many registries (hasher seeds) a fixed-key lookup rotates over.
const FIXED_KEY_SEEDS: usize = 8;

/// A registry holding the plugins `ids`, keyed `plugin-{id}`.
fn registry(ids: &[usize]) -> Registry<String, Plugin> {
    let registry = Registry::new();
    registry
        .extend(ids.iter().map(|&i| {
            let key = format!("plugin-{i}");
            let slot = Slot::new(PluginId::new(&key), plugin(i as u64));
            (key, slot)
        }))
        .expect("distinct keys");
    registry
}

/// `REGISTRY_SIZE` lookups cycling over the plugins `ids` (each equally
/// often), shuffled, each key in its own allocation, so every case reads as
/// many key strings.
fn rotating_keys(ids: &[usize]) -> Vec<String> {
    let mut keys: Vec<String> = (0..REGISTRY_SIZE).map(|i| format!("plugin-{}", ids[i % ids.len()])).collect();
    shuffle(&mut keys);
    keys
}

// ---------------------------------------------------------------------------
// A persistent worker pool: the same OS threads run every measurement, so the
// threads' lease stripes (assigned on first lease) stay fixed all along.
// ---------------------------------------------------------------------------

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    senders: Vec<mpsc::Sender<Job>>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl Pool {
    fn new(n: usize) -> Self {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for w in 0..n {
            let (tx, rx) = mpsc::channel::<Job>();
            senders.push(tx);
            handles.push(
                thread::Builder::new()
                    .name(format!("bench-worker-{w}"))
                    .spawn(move || {
                        for job in rx {
                            job();
                        }
                    })
                    .expect("spawn worker"),
            );
        }
        Self { senders, handles }
    }

    fn run(&self, worker: usize, job: Job) {
        self.senders[worker].send(job).expect("worker alive");
    }

    fn shutdown(self) {
        drop(self.senders);
        for handle in self.handles {
            handle.join().expect("worker exited cleanly");
        }
    }
}

// ---------------------------------------------------------------------------
// Per-call cost
// ---------------------------------------------------------------------------

/// The loop each measuring thread runs: returns (ops, elapsed).
fn spin<C: Candidate>(candidate: &C, stop: &AtomicBool, barrier: &Barrier) -> (u64, Duration) {
    let mut i = candidate.local();
    let mut acc = 0u64;
    // Warm up this thread's state (stripe index, arc-swap debt node, caches).
    for _ in 0..BATCH * 16 {
        acc = acc.wrapping_add(candidate.op(&mut i));
    }
    barrier.wait();
    let start = Instant::now();
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..BATCH {
            acc = acc.wrapping_add(candidate.op(&mut i));
        }
        ops += BATCH;
    }
    let elapsed = start.elapsed();
    black_box(acc);
    (ops, elapsed)
}

/// Run `candidate` on `threads` pool workers for `run`, with the calling
/// thread writing every millisecond if `writer`. Returns the mean over the
/// threads of each thread's ns per op.
fn per_op_once<C: Candidate>(pool: &Pool, candidate: &Arc<C>, threads: usize, writer: bool, run: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let (tx, rx) = mpsc::channel();
    for w in 0..threads {
        let (candidate, stop, barrier, tx) =
            (Arc::clone(candidate), Arc::clone(&stop), Arc::clone(&barrier), tx.clone());
        pool.run(
            w,
            Box::new(move || {
                let result = spin(&*candidate, &stop, &barrier);
                tx.send(result).expect("collector alive");
            }),
        );
    }
    drop(tx);
    barrier.wait();
    let deadline = Instant::now() + run;
    let mut generation = 1_000_000;
    if writer {
        while Instant::now() < deadline {
            thread::sleep(WRITE_PERIOD);
            generation += 1;
            candidate.write(generation);
        }
    } else {
        thread::sleep(run);
    }
    stop.store(true, Ordering::Relaxed);
    let per_thread: Vec<f64> = rx.iter().map(|(ops, elapsed)| elapsed.as_nanos() as f64 / ops as f64).collect();
    assert_eq!(per_thread.len(), threads);
    per_thread.iter().sum::<f64>() / threads as f64
}

/// `per_op_once`, repeated (up to 8 times) while another process took more
/// than 15% of a core during the run: the machine is shared.
fn per_op<C: Candidate>(pool: &Pool, candidate: &Arc<C>, threads: usize, writer: bool, run: Duration) -> f64 {
    let mut attempt = 0;
    loop {
        let probe = Interference::start();
        let ns = per_op_once(pool, candidate, threads, writer, run);
        attempt += 1;
        if !probe.noisy() {
            return ns;
        }
        if attempt >= max_attempts(8) {
            NOISY.fetch_add(1, Ordering::Relaxed);
            return ns;
        }
        RETRIED.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(500));
    }
}

/// How many times a noisy measurement is made in all: `default`, or
/// `CUTOVER_BENCH_ATTEMPTS` (1: never repeat, for a machine that is never
/// quiet; the ratios of candidates measured side by side still hold).
fn max_attempts(default: usize) -> usize {
    std::env::var("CUTOVER_BENCH_ATTEMPTS").ok().and_then(|a| a.parse().ok()).map_or(default, |a: usize| a.max(1))
}

static RETRIED: AtomicUsize = AtomicUsize::new(0);
static NOISY: AtomicUsize = AtomicUsize::new(0);

/// CPU used by other processes while a measurement ran, from `/proc/stat`
/// (whole machine, incl. steal) minus `/proc/self/stat` (this process).
struct Interference {
    at: Instant,
    ticks: Option<(u64, u64)>,
}

impl Interference {
    fn start() -> Self {
        Self { at: Instant::now(), ticks: cpu_ticks() }
    }

    /// Other processes' CPU use, in cores (0.5 = half a core), on average.
    fn others(&self) -> f64 {
        // USER_HZ is 100 on Linux.
        self.others_ticks() / 100.0 / self.at.elapsed().as_secs_f64()
    }

    /// Whether other processes used more than 15% of a core, allowing two
    /// ticks of sampling error.
    fn noisy(&self) -> bool {
        self.others_ticks() > 2.0 + 15.0 * self.at.elapsed().as_secs_f64()
    }

    fn others_ticks(&self) -> f64 {
        let (Some((busy0, self0)), Some((busy1, self1))) = (self.ticks, cpu_ticks()) else {
            return 0.0;
        };
        (busy1 - busy0).saturating_sub(self1 - self0) as f64
    }
}

/// (busy ticks of the whole machine, ticks used by this process).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?;
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = me.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14, 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((busy, utime + stime))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// A type-erased per-call measurement, so candidates can be interleaved.
type Measure<'a> = Box<dyn Fn(usize, bool) -> f64 + 'a>;

fn measure<'a, C: Candidate>(pool: &'a Pool, candidate: C, run: Duration) -> Measure<'a> {
    let candidate = Arc::new(candidate);
    Box::new(move |threads, writer| per_op(pool, &candidate, threads, writer, run))
}

/// The four conditions each candidate runs under: (threads, writer).
const CONDITIONS: [(usize, bool); 4] = [(1, false), (2, false), (1, true), (2, true)];

fn condition_name((threads, writer): (usize, bool)) -> String {
    format!("{threads} thread{}{}", if threads == 1 { "" } else { "s" }, if writer { " + writer 1/ms" } else { "" })
}

/// Medians, `[candidate][condition]`, running every candidate under every
/// condition once per round, interleaved.
fn run_interleaved(
    names: &[&str],
    measures: &[Measure<'_>],
    conditions: &[(usize, bool)],
    rounds: usize,
) -> Vec<Vec<f64>> {
    // One warm-up round, discarded.
    for m in measures {
        for &(threads, writer) in conditions {
            black_box(m(threads, writer));
        }
    }
    let mut samples = vec![vec![Vec::with_capacity(rounds); conditions.len()]; measures.len()];
    for round in 0..rounds {
        eprint!("\r  round {}/{rounds}", round + 1);
        for (c, m) in measures.iter().enumerate() {
            for (k, &(threads, writer)) in conditions.iter().enumerate() {
                samples[c][k].push(m(threads, writer));
            }
        }
    }
    eprintln!();
    let medians: Vec<Vec<f64>> =
        samples.into_iter().map(|per_cond| per_cond.into_iter().map(|mut s| median(&mut s)).collect()).collect();
    for (name, row) in names.iter().zip(&medians) {
        eprintln!("  {name:<40} {}", row.iter().map(|v| format!("{v:8.1}")).collect::<Vec<_>>().join(" "));
    }
    medians
}

/// Two fresh threads whose stripe indices are congruent modulo the default
/// stripe count (because `stripes - 1` short-lived threads leased in
/// between), leasing `slot` concurrently. Diagnostic for stripe sharing
/// caused by thread churn.
fn colliding_threads_per_op(slot: &Arc<CutoverLease>, run: Duration) -> f64 {
    let cpus = thread::available_parallelism().map_or(4, usize::from);
    let stripes = (cpus * 2).next_power_of_two().clamp(4, 64);
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(3));
    let spawn_leaser = || {
        let (slot, stop, barrier) = (Arc::clone(slot), Arc::clone(&stop), Arc::clone(&barrier));
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            black_box(slot.op(&mut ())); // takes this thread's stripe index
            ready_tx.send(()).expect("spawner alive");
            spin(&*slot, &stop, &barrier)
        });
        ready_rx.recv().expect("leaser started");
        handle
    };
    let first = spawn_leaser();
    for _ in 0..stripes - 1 {
        let slot = Arc::clone(slot);
        thread::spawn(move || black_box(slot.op(&mut ()))).join().expect("short-lived thread");
    }
    let second = spawn_leaser();
    barrier.wait();
    thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    let results = [first.join().expect("leaser"), second.join().expect("leaser")];
    results.iter().map(|(ops, elapsed)| elapsed.as_nanos() as f64 / *ops as f64).sum::<f64>() / 2.0
}

// ---------------------------------------------------------------------------
// Latency distributions
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Dist {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
    /// Other processes' CPU use during the measurement, in cores.
    others: f64,
}

impl Dist {
    fn from_ns(mut ns: Vec<u64>) -> Self {
        ns.sort_unstable();
        let at = |q: f64| ns[((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len()) - 1] as f64;
        Self { n: ns.len(), p50: at(0.50), p99: at(0.99), max: *ns.last().expect("samples") as f64, others: 0.0 }
    }
}

/// Run a latency measurement, again (up to 4 times in all) while another
/// process took more than 15% of a core; keep the quietest.
fn quiet_dist(f: impl Fn() -> Dist) -> Dist {
    let mut best: Option<Dist> = None;
    for _ in 0..max_attempts(4) {
        let probe = Interference::start();
        let mut d = f();
        d.others = probe.others();
        if !probe.noisy() {
            return d;
        }
        RETRIED.fetch_add(1, Ordering::Relaxed);
        if best.is_none_or(|b| d.others < b.others) {
            best = Some(d);
        }
        thread::sleep(Duration::from_millis(500));
    }
    NOISY.fetch_add(1, Ordering::Relaxed);
    best.expect("measured")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Let the waiter block before we release: it announced itself, now give it
/// time to reach the futex wait.
fn settle() {
    thread::sleep(Duration::from_micros(200));
}

/// `Drain::wait_timeout` wake-up after the last lease's drop.
fn drain_notification(samples: usize) -> Dist {
    let slot = Slot::new(PluginId::new("drain-bench"), plugin(0));
    let (drain_tx, drain_rx) = mpsc::channel::<cutover::Drain>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<Instant>();
    let waiter = thread::spawn(move || {
        for drain in drain_rx {
            ready_tx.send(()).expect("main alive");
            drain.wait_timeout(Duration::from_secs(10)).expect("drained");
            let woke = Instant::now();
            done_tx.send(woke).expect("main alive");
        }
    });
    let mut ns = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let lease = slot.lease();
        let drain = slot.replace(plugin(i as u64 + 1));
        drain_tx.send(drain).expect("waiter alive");
        ready_rx.recv().expect("waiter ready");
        settle();
        let released = Instant::now();
        drop(lease);
        let woke = done_rx.recv().expect("waiter woke");
        if i >= samples / 10 {
            ns.push(nanos(woke.saturating_duration_since(released)));
        }
    }
    drop(drain_tx);
    waiter.join().expect("waiter");
    Dist::from_ns(ns)
}

/// The baseline: a `Mutex<bool>` + `Condvar`, notified right after the flag
/// is set.
fn condvar_notification(samples: usize) -> Dist {
    struct Flag {
        done: Mutex<bool>,
        cond: Condvar,
    }
    let (flag_tx, flag_rx) = mpsc::channel::<Arc<Flag>>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<Instant>();
    let waiter = thread::spawn(move || {
        for flag in flag_rx {
            ready_tx.send(()).expect("main alive");
            let mut done = flag.done.lock().expect("flag lock");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !*done {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "condvar wait timed out");
                done = flag.cond.wait_timeout(done, left).expect("flag lock").0;
            }
            drop(done);
            let woke = Instant::now();
            done_tx.send(woke).expect("main alive");
        }
    });
    let mut ns = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let flag = Arc::new(Flag { done: Mutex::new(false), cond: Condvar::new() });
        flag_tx.send(Arc::clone(&flag)).expect("waiter alive");
        ready_rx.recv().expect("waiter ready");
        settle();
        let released = Instant::now();
        *flag.done.lock().expect("flag lock") = true;
        flag.cond.notify_all();
        let woke = done_rx.recv().expect("waiter woke");
        if i >= samples / 10 {
            ns.push(nanos(woke.saturating_duration_since(released)));
        }
    }
    drop(flag_tx);
    waiter.join().expect("waiter");
    Dist::from_ns(ns)
}

/// The seed's way: in-flight work holds a clone of the lifecycle `Arc`, and
/// `EpochFencedReload::wait_for_drain` polls its strong count every `poll`.
/// The release happens at a random phase of the poll period.
fn seed_poll_notification(samples: usize, poll: Duration) -> Dist {
    let (driver_tx, driver_rx) = mpsc::channel::<EpochFencedReload>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<Instant>();
    let waiter = thread::spawn(move || {
        for driver in driver_rx {
            driver.begin_drain().expect("active");
            ready_tx.send(()).expect("main alive");
            // Only the driver's own handle remains once the operation ends.
            driver.wait_for_drain(1, poll, Duration::from_secs(10)).expect("drained");
            let woke = Instant::now();
            driver.finalize();
            done_tx.send(woke).expect("main alive");
        }
    });
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut ns = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let lifecycle = Arc::new(PluginLifecycle::with_state(PluginId::new("seed"), LifecycleState::Active));
        let in_flight = Arc::clone(&lifecycle);
        driver_tx.send(EpochFencedReload::new(lifecycle)).expect("waiter alive");
        ready_rx.recv().expect("waiter ready");
        settle();
        let phase = poll.as_nanos() as u64;
        thread::sleep(Duration::from_nanos(rng.next() % phase.max(1)));
        let released = Instant::now();
        drop(in_flight);
        let woke = done_rx.recv().expect("waiter woke");
        if i >= samples / 10 {
            ns.push(nanos(woke.saturating_duration_since(released)));
        }
    }
    drop(driver_tx);
    waiter.join().expect("waiter");
    Dist::from_ns(ns)
}

/// Latency of `write` (one per millisecond) while `readers` pool threads run
/// `candidate.op` continuously.
fn write_latency<C: Candidate>(
    pool: &Pool,
    candidate: C,
    readers: usize,
    samples: usize,
    write: impl Fn(&C, u64) -> Duration,
) -> Dist {
    let candidate = Arc::new(candidate);
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(readers + 1));
    let (tx, rx) = mpsc::channel();
    for w in 0..readers {
        let (candidate, stop, barrier, tx) =
            (Arc::clone(&candidate), Arc::clone(&stop), Arc::clone(&barrier), tx.clone());
        pool.run(
            w,
            Box::new(move || {
                let result = spin(&*candidate, &stop, &barrier);
                tx.send(result).expect("collector alive");
            }),
        );
    }
    drop(tx);
    barrier.wait();
    let mut ns = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        thread::sleep(WRITE_PERIOD);
        let took = write(&candidate, i as u64);
        if i >= samples / 10 {
            ns.push(nanos(took));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for result in rx {
        black_box(result);
    }
    Dist::from_ns(ns)
}

fn replace_latency(pool: &Pool, readers: usize, samples: usize) -> Dist {
    // The atomic path explicitly (the default is the asymmetric-fence path
    // where available, which has a row of its own).
    timed_replaces(pool, replace_bench_slot(LeasePath::Atomic), readers, samples, Timed::Replace)
}

/// The slot the `replace` rows cut over, on `path`, with the default stripe
/// count.
fn replace_bench_slot(path: LeasePath) -> Slot<Plugin> {
    let stripes = thread::available_parallelism().map_or(4, |n| (2 * n.get()).clamp(4, 64));
    Slot::with_lease_path(PluginId::new("replace-bench"), plugin(0), stripes, path)
}

/// What a timed cutover includes.
#[derive(Clone, Copy)]
enum Timed {
    /// The `replace` call: until every new lease sees the new generation.
    Replace,
    /// The call and the drop of its `Drain`, which on the asymmetric-fence
    /// path issues the barrier and sweeps the old generation's counters.
    ReplaceAndDrain,
}

/// `replace` on a slot made for the asymmetric-fence path, while `readers`
/// threads lease it: the call alone (its barrier is left to the drain), or
/// with the drop of its drain (the barrier included).
fn asymmetric_replace_latency(pool: &Pool, readers: usize, samples: usize, timed: Timed) -> Dist {
    timed_replaces(pool, replace_bench_slot(LeasePath::AsymmetricFence), readers, samples, timed)
}

/// `replace` on `slot` once per write period, timed, while `readers`
/// threads lease it.
fn timed_replaces(pool: &Pool, slot: Slot<Plugin>, readers: usize, samples: usize, timed: Timed) -> Dist {
    write_latency(pool, CutoverLease(slot), readers, samples, |c, g| {
        let value = plugin(g);
        let start = Instant::now();
        let drain = c.0.replace(value);
        let call = start.elapsed();
        drop(black_box(drain));
        match timed {
            Timed::Replace => call,
            Timed::ReplaceAndDrain => start.elapsed(),
        }
    })
}

/// Waking a parked thread (`Thread::unpark`), timed on the waker, while
/// `readers` threads lease: the least a cutover would pay to hand its
/// barrier to a background thread instead of issuing it (issue 14, item 3).
fn unpark_latency(pool: &Pool, readers: usize, samples: usize) -> Dist {
    let stop = Arc::new(AtomicBool::new(false));
    let parked = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                thread::park();
            }
        })
    };
    let waiter = parked.thread().clone();
    let candidate = CutoverLease(Slot::new(PluginId::new("unpark-bench"), plugin(0)));
    let dist = write_latency(pool, candidate, readers, samples, |_, _| {
        let start = Instant::now();
        waiter.unpark();
        start.elapsed()
    });
    stop.store(true, Ordering::Release);
    waiter.unpark();
    parked.join().expect("parked thread");
    dist
}

fn store_latency(pool: &Pool, readers: usize, samples: usize) -> Dist {
    let candidate = ArcSwapLoad(ArcSwap::new(plugin(0)));
    write_latency(pool, candidate, readers, samples, |c, g| {
        let value = plugin(g);
        let start = Instant::now();
        c.0.store(value);
        start.elapsed()
    })
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

struct Report {
    md: String,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        self.md.push_str(s.as_ref());
        self.md.push('\n');
    }
}

fn us(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**NOT met**"
    }
}

// The registry rows' names (the `RESULT` lines and `scripts/bench-before-after`
// use them too).
const REG_ONE_FIXED: &str = "cutover registry, 1 plugin, fixed key";
const REG_ALL_FIXED: &str = "cutover registry, 10,000 plugins, fixed key";
const REG_ONE: &str = "cutover registry, 1 plugin, rotating keys";
const REG_ALL: &str = "cutover registry, 10,000 plugins, rotating over all keys";
const REG_HOT: &str = "cutover registry, 10,000 plugins, rotating over 64 keys";
const READER_ONE_FIXED: &str = "cutover RegistryReader, 1 plugin, fixed key";
const READER_ALL_FIXED: &str = "cutover RegistryReader, 10,000 plugins, fixed key";
#[cfg_attr(cutover_bench_no_reader, allow(dead_code))]
const READER_ONE: &str = "cutover RegistryReader, 1 plugin, rotating keys";
const READER_ALL: &str = "cutover RegistryReader, 10,000 plugins, rotating over all keys";
const MAP_ONE: &str = "arc-swap map of ArcSwap, 1 plugin, rotating keys";
const MAP_ALL: &str = "arc-swap map of ArcSwap, 10,000 plugins, rotating over all keys";
const MAP_HOT: &str = "arc-swap map of ArcSwap, 10,000 plugins, rotating over 64 keys";
const CACHED_ONE: &str = "arc-swap map of ArcSwap through arc_swap::Cache, 1 plugin, rotating keys";
const CACHED_ALL: &str = "arc-swap map of ArcSwap through arc_swap::Cache, 10,000 plugins, rotating over all keys";

/// The registry rows' medians, `[row][condition]`, with each row's name and
/// the row it is compared with (its structure's 1-plugin case).
struct RegRows {
    rows: Vec<(&'static str, &'static str)>,
    medians: Vec<Vec<f64>>,
}

impl RegRows {
    /// The medians of the row named `name`, if it was measured (the reader
    /// rows are not in a build against a library without `Registry::reader`).
    fn get(&self, name: &str) -> Option<&[f64]> {
        self.rows.iter().position(|(row, _)| *row == name).map(|i| self.medians[i].as_slice())
    }
}

/// The conditions of the registry rows: 1 and 2 threads, no writer.
const REG_CONDITIONS: [(usize, bool); 2] = [(1, false), (2, false)];

/// Measure the registry rows, interleaved.
fn registry_lookups(pool: &Pool, cfg: &Config) -> RegRows {
    eprintln!("registry lookup + lease (ns/op; 1t, 2t):");
    // Every key is `plugin-{id}`; the single plugin is `plugin-1234`, the
    // fixed key in the big registry too, so both hash and compare the same
    // string.
    let one = [1234];
    let all: Vec<usize> = (0..REGISTRY_SIZE).collect();
    let hot: Vec<usize> = (0..64).map(|k| k * (REGISTRY_SIZE / 64)).collect();
    let cutover_reg = |ids: &[usize], fixed: Option<&str>, keys: Vec<String>| RegistryLookup {
        registries: (0..if fixed.is_some() { FIXED_KEY_SEEDS } else { 1 }).map(|_| registry(ids)).collect(),
        fixed: fixed.map(String::from),
        keys,
    };
    let fixed = Some("plugin-1234");
    #[rustfmt::skip]
    let mut rows: Vec<(&str, &str, Measure<'_>)> = vec![
        (REG_ONE_FIXED, REG_ONE_FIXED, measure(pool, cutover_reg(&one, fixed, Vec::new()), cfg.run)),
        (REG_ALL_FIXED, REG_ONE_FIXED, measure(pool, cutover_reg(&all, fixed, Vec::new()), cfg.run)),
        (REG_ONE, REG_ONE, measure(pool, cutover_reg(&one, None, rotating_keys(&one)), cfg.run)),
        (REG_ALL, REG_ONE, measure(pool, cutover_reg(&all, None, rotating_keys(&all)), cfg.run)),
        (REG_HOT, REG_ONE, measure(pool, cutover_reg(&all, None, rotating_keys(&hot)), cfg.run)),
    ];
    #[cfg(not(cutover_bench_no_reader))]
    #[rustfmt::skip]
    rows.extend([
        (READER_ONE_FIXED, READER_ONE_FIXED, measure(pool, ReaderLookup(cutover_reg(&one, fixed, Vec::new())), cfg.run)),
        (READER_ALL_FIXED, READER_ONE_FIXED, measure(pool, ReaderLookup(cutover_reg(&all, fixed, Vec::new())), cfg.run)),
        (READER_ONE, READER_ONE, measure(pool, ReaderLookup(cutover_reg(&one, None, rotating_keys(&one))), cfg.run)),
        (READER_ALL, READER_ONE, measure(pool, ReaderLookup(cutover_reg(&all, None, rotating_keys(&all))), cfg.run)),
    ]);
    #[rustfmt::skip]
    rows.extend([
        (MAP_ONE, MAP_ONE, measure(pool, ArcSwapRegistry::new(&one, rotating_keys(&one)), cfg.run)),
        (MAP_ALL, MAP_ONE, measure(pool, ArcSwapRegistry::new(&all, rotating_keys(&all)), cfg.run)),
        (MAP_HOT, MAP_ONE, measure(pool, ArcSwapRegistry::new(&all, rotating_keys(&hot)), cfg.run)),
        (CACHED_ONE, CACHED_ONE, measure(pool, ArcSwapRegistryCached(ArcSwapRegistry::new(&one, rotating_keys(&one))), cfg.run)),
        (CACHED_ALL, CACHED_ONE, measure(pool, ArcSwapRegistryCached(ArcSwapRegistry::new(&all, rotating_keys(&all))), cfg.run)),
    ]);
    let names: Vec<&str> = rows.iter().map(|(name, _, _)| *name).collect();
    let (rows, measures): (Vec<_>, Vec<_>) = rows.into_iter().map(|(name, base, m)| ((name, base), m)).unzip();
    let medians = run_interleaved(&names, &measures, &REG_CONDITIONS, cfg.rounds);
    RegRows { rows, medians }
}

/// The sections named in `CUTOVER_BENCH_ONLY`, as `RESULT` lines.
fn run_only(pool: &Pool, cfg: &Config, only: &[String]) {
    let result = |section: &str, row: &str, condition: &str, value: f64| {
        println!("RESULT {section}|{row}|{condition}|{value:.3}");
    };
    if only.iter().any(|s| s == "per-call") {
        eprintln!("per-call cost (ns/op; 1t, 2t, 1t+writer, 2t+writer):");
        let names = ["cutover Slot::lease + deref + drop", "arc-swap load() + deref + drop", "direct call (floor)"];
        let measures: Vec<Measure<'_>> = vec![
            measure(pool, CutoverLease(Slot::new(PluginId::new("bench"), plugin(0))), cfg.run),
            measure(pool, ArcSwapLoad(ArcSwap::new(plugin(0))), cfg.run),
            measure(pool, DirectCall(plugin(0)), cfg.run),
        ];
        let per_call = run_interleaved(&names, &measures, &CONDITIONS, cfg.rounds);
        for (name, row) in names.iter().zip(&per_call) {
            for (&condition, &ns) in CONDITIONS.iter().zip(row) {
                result("per-call", name, &condition_name(condition), ns);
            }
        }
    }
    if only.iter().any(|s| s == "registry") {
        let reg = registry_lookups(pool, cfg);
        for ((name, _), row) in reg.rows.iter().zip(&reg.medians) {
            for (&condition, &ns) in REG_CONDITIONS.iter().zip(row) {
                result("registry", name, &condition_name(condition), ns);
            }
        }
    }
    if only.iter().any(|s| s == "latency") {
        eprintln!("drain notification, replace latency...");
        let rows = [
            ("drain: last lease drop → wait_timeout returns", quiet_dist(|| drain_notification(cfg.drain_samples))),
            ("drain: Mutex<bool> + Condvar (baseline)", quiet_dist(|| condvar_notification(cfg.drain_samples))),
            ("write: replace, 2 threads leasing", quiet_dist(|| replace_latency(pool, 2, cfg.replace_samples))),
            (
                "write: arc-swap store, 2 threads load() (baseline)",
                quiet_dist(|| store_latency(pool, 2, cfg.replace_samples)),
            ),
            ("write: replace, no readers", quiet_dist(|| replace_latency(pool, 0, cfg.replace_samples / 5))),
            (
                "write: replace, asymmetric-fence path, 2 threads leasing",
                quiet_dist(|| asymmetric_replace_latency(pool, 2, cfg.replace_samples, Timed::Replace)),
            ),
            (
                "write: replace + drop its Drain (the barrier), asymmetric-fence path, 2 threads leasing",
                quiet_dist(|| asymmetric_replace_latency(pool, 2, cfg.replace_samples, Timed::ReplaceAndDrain)),
            ),
            (
                "write: unpark a parked thread, 2 threads leasing",
                quiet_dist(|| unpark_latency(pool, 2, cfg.replace_samples)),
            ),
        ];
        for (name, d) in rows {
            result("latency", name, "p50", d.p50);
            result("latency", name, "p99", d.p99);
            result("latency", name, "max", d.max);
        }
    }
}

fn main() {
    let cfg = Config::from_env();
    let started = Instant::now();
    let pool = Pool::new(2);
    let mut r = Report { md: String::new() };
    let cpus = thread::available_parallelism().map_or(0, usize::from);
    if let Some(only) = only_sections() {
        run_only(&pool, &cfg, &only);
        pool.shutdown();
        return;
    }

    // --- Per-call cost -----------------------------------------------------
    eprintln!("per-call cost (ns/op; 1t, 2t, 1t+writer, 2t+writer):");
    let names = [
        "cutover Slot::lease + deref + drop",
        "arc-swap load() + deref + drop",
        "arc-swap load_full() + deref + drop",
        "RwLock<Arc<T>> read + clone (seed)",
        "direct call: deref of a held Arc (floor)",
    ];
    let measures: Vec<Measure<'_>> = vec![
        measure(&pool, CutoverLease(Slot::new(PluginId::new("bench"), plugin(0))), cfg.run),
        measure(&pool, ArcSwapLoad(ArcSwap::new(plugin(0))), cfg.run),
        measure(&pool, ArcSwapLoadFull(ArcSwap::new(plugin(0))), cfg.run),
        measure(&pool, RwLockClone(RwLock::new(plugin(0))), cfg.run),
        measure(&pool, DirectCall(plugin(0)), cfg.run),
    ];
    let per_call = run_interleaved(&names, &measures, &CONDITIONS, cfg.rounds);
    drop(measures);

    // --- Registry ------------------------------------------------------------
    let reg = registry_lookups(&pool, &cfg);

    // --- Diagnostics -----------------------------------------------------------
    eprintln!("diagnostics:");
    let diag_names = ["Slot::generation() (through a short lease)"];
    let diag_measures: Vec<Measure<'_>> =
        vec![measure(&pool, SlotGeneration(Slot::new(PluginId::new("bench"), plugin(0))), cfg.run)];
    let diag = run_interleaved(&diag_names, &diag_measures, &[(1, false), (2, false)], cfg.rounds.div_ceil(3));
    drop(diag_measures);
    let colliding = {
        let slot = Arc::new(CutoverLease(Slot::new(PluginId::new("bench"), plugin(0))));
        let mut runs: Vec<f64> =
            (0..cfg.rounds.div_ceil(3)).map(|_| colliding_threads_per_op(&slot, cfg.run)).collect();
        median(&mut runs)
    };
    eprintln!("  lease, 2 fresh threads on one stripe      {colliding:8.1}");

    // --- Latencies -------------------------------------------------------------
    eprintln!("drain notification...");
    let drain = quiet_dist(|| drain_notification(cfg.drain_samples));
    let condvar = quiet_dist(|| condvar_notification(cfg.drain_samples));
    eprintln!("seed polls...");
    let poll_10ms = quiet_dist(|| seed_poll_notification(cfg.poll_10ms_samples, Duration::from_millis(10)));
    let poll_100us = quiet_dist(|| seed_poll_notification(cfg.poll_100us_samples, Duration::from_micros(100)));
    eprintln!("replace / store latency...");
    let replace_busy = quiet_dist(|| replace_latency(&pool, 2, cfg.replace_samples));
    let store_busy = quiet_dist(|| store_latency(&pool, 2, cfg.replace_samples));
    let replace_idle = quiet_dist(|| replace_latency(&pool, 0, cfg.replace_samples / 5));
    let store_idle = quiet_dist(|| store_latency(&pool, 0, cfg.replace_samples / 5));
    let replace_asymmetric = quiet_dist(|| asymmetric_replace_latency(&pool, 2, cfg.replace_samples, Timed::Replace));
    let replace_asymmetric_drain =
        quiet_dist(|| asymmetric_replace_latency(&pool, 2, cfg.replace_samples, Timed::ReplaceAndDrain));
    let unpark = quiet_dist(|| unpark_latency(&pool, 2, cfg.replace_samples));
    pool.shutdown();

    // --- Tables ----------------------------------------------------------------
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    r.line("# cutover benchmark results");
    r.line("");
    r.line(format!(
        "`cargo bench -p cutover --bench cutover` — {cpus} CPUs ({cpu}), {} rounds × {} ms per per-call figure (median), total {:.0} s.",
        cfg.rounds,
        cfg.run.as_millis(),
        started.elapsed().as_secs_f64()
    ));
    r.line("");
    r.line(format!(
        "Interference guard: a measurement during which other processes used more than 15% of a core was repeated \
         ({} repeats; /proc/stat ticks, ±2 ticks); {} measurement(s) stayed noisy after all retries and were kept.",
        RETRIED.load(Ordering::Relaxed),
        NOISY.load(Ordering::Relaxed)
    ));
    r.line("");
    r.line("## Per call: obtain + deref + drop (ns/op per thread; ratio vs. arc-swap `load()` in the same condition)");
    r.line("");
    let mut header = String::from("| candidate |");
    let mut rule = String::from("|---|");
    for &c in &CONDITIONS {
        let _ = write!(header, " {} |", condition_name(c));
        rule.push_str("---:|");
    }
    r.line(header);
    r.line(rule);
    for (name, row) in names.iter().zip(&per_call) {
        let mut line = format!("| {name} |");
        for (k, v) in row.iter().enumerate() {
            let _ = write!(line, " {v:.1} ({:.2}×) |", v / per_call[1][k]);
        }
        r.line(line);
    }
    r.line("");
    r.line("## Registry lookup + lease (ns/op per thread; ratio vs. the 1-plugin case of the same structure and key pattern)");
    r.line("");
    r.line("| lookup | 1 thread | 2 threads |");
    r.line("|---|---:|---:|");
    for ((name, base), row) in reg.rows.iter().zip(&reg.medians) {
        let base = reg.get(base).expect("every row's base is measured");
        r.line(format!(
            "| {name} | {:.1} ({:.2}×) | {:.1} ({:.2}×) |",
            row[0],
            row[0] / base[0],
            row[1],
            row[1] / base[1]
        ));
    }
    for (label, num, den) in [
        ("cutover vs. arc-swap structure, 10,000 plugins, rotating over all keys", REG_ALL, MAP_ALL),
        ("cutover vs. arc-swap structure, 10,000 plugins, rotating over 64 keys", REG_HOT, MAP_HOT),
        ("cutover RegistryReader vs. arc-swap structure, 10,000 plugins, rotating over all keys", READER_ALL, MAP_ALL),
        ("cutover RegistryReader vs. arc-swap structure through arc_swap::Cache, 10,000 plugins, rotating over all keys", READER_ALL, CACHED_ALL),
    ] {
        if let (Some(num), Some(den)) = (reg.get(num), reg.get(den)) {
            r.line(format!("| {label} | {:.2}× | {:.2}× |", num[0] / den[0], num[1] / den[1]));
        }
    }
    r.line(format!("| for scale: Slot::lease alone | {:.1} | {:.1} |", per_call[0][0], per_call[0][1]));
    r.line("");
    r.line("## Latency (p50 / p99 / max)");
    r.line("");
    r.line("| what | samples | p50 | p99 | max | ratio vs. baseline (p50 / p99) | other processes' CPU |");
    r.line("|---|---:|---:|---:|---:|---:|---:|");
    let row = |r: &mut Report, name: &str, d: Dist, base: Option<Dist>| {
        let ratio = base.map_or("baseline".to_string(), |b| format!("{:.2}× / {:.2}×", d.p50 / b.p50, d.p99 / b.p99));
        r.line(format!(
            "| {name} | {} | {} | {} | {} | {ratio} | {:.0}% of a core |",
            d.n,
            us(d.p50),
            us(d.p99),
            us(d.max),
            d.others * 100.0
        ));
    };
    row(&mut r, "drain: Mutex<bool> + Condvar notify (baseline)", condvar, None);
    row(&mut r, "drain: cutover last lease drop → `wait_timeout` returns", drain, Some(condvar));
    row(&mut r, "drain: seed `wait_for_drain`, 10 ms poll", poll_10ms, Some(condvar));
    row(&mut r, "drain: seed `wait_for_drain`, 100 µs poll", poll_100us, Some(condvar));
    row(&mut r, "write: arc-swap `store`, 2 threads `load()` (baseline)", store_busy, None);
    row(&mut r, "write: cutover `replace`, 2 threads leasing", replace_busy, Some(store_busy));
    row(&mut r, "write: arc-swap `store`, no readers (baseline)", store_idle, None);
    row(&mut r, "write: cutover `replace`, no readers", replace_idle, Some(store_idle));
    row(
        &mut r,
        "write: cutover `replace`, asymmetric-fence path, 2 threads leasing",
        replace_asymmetric,
        Some(store_busy),
    );
    row(
        &mut r,
        "write: cutover `replace` + drop of its `Drain` (the barrier), asymmetric-fence path, 2 threads leasing",
        replace_asymmetric_drain,
        Some(store_busy),
    );
    row(&mut r, "write: wake a parked thread (`unpark`), 2 threads leasing", unpark, Some(store_busy));
    r.line("");
    r.line("## Diagnostics");
    r.line("");
    r.line("| what | 1 thread | 2 threads |");
    r.line("|---|---:|---:|");
    r.line(format!("| {} | {:.1} | {:.1} |", diag_names[0], diag[0][0], diag[0][1]));
    r.line(format!(
        "| Slot::lease, 2 fresh threads whose stripe indices collide (thread churn) | — | {colliding:.1} ({:.2}× the 2-thread lease) |",
        colliding / per_call[0][1]
    ));
    r.line("");
    r.line("## Targets");
    r.line("");
    r.line("| target | measured | verdict |");
    r.line("|---|---|---|");
    for (k, label) in [(0, "1 thread"), (1, "2 threads")] {
        let ratio = per_call[0][k] / per_call[1][k];
        r.line(format!(
            "| lease + release ≤ arc-swap `load()` + drop, {label} (ratio ≤ 1.0) | {ratio:.2}× ({:.1} vs {:.1} ns) | {} |",
            per_call[0][k],
            per_call[1][k],
            verdict(ratio <= 1.0)
        ));
    }
    let p50_ratio = drain.p50 / condvar.p50;
    r.line(format!(
        "| drain notification p50 ≤ 2× Mutex+Condvar | {p50_ratio:.2}× ({} vs {}) | {} |",
        us(drain.p50),
        us(condvar.p50),
        verdict(p50_ratio <= 2.0)
    ));
    r.line(format!("| drain notification p99 ≤ 100 µs | {} | {} |", us(drain.p99), verdict(drain.p99 <= 100_000.0)));
    r.line(format!(
        "| `replace` p99 ≤ 5 µs while 2 threads lease | {} ({:.2}× arc-swap `store` p99 {}) | {} |",
        us(replace_busy.p99),
        replace_busy.p99 / store_busy.p99,
        us(store_busy.p99),
        verdict(replace_busy.p99 <= 5_000.0)
    ));
    for (label, num, den, limit) in [
        ("registry 10,000 vs 1 plugin ≤ 1.1×, fixed key", REG_ALL_FIXED, REG_ONE_FIXED, 1.1),
        ("registry 10,000 vs 1 plugin ≤ 1.1×, rotating over all keys", REG_ALL, REG_ONE, 1.1),
        ("registry 10,000 vs 1 plugin ≤ 1.1×, rotating over 64 keys", REG_HOT, REG_ONE, 1.1),
        (
            "registry 10,000 vs 1 plugin ≤ 1.1×, fixed key, through a `RegistryReader`",
            READER_ALL_FIXED,
            READER_ONE_FIXED,
            1.1,
        ),
        (
            "registry, 10,000 plugins, all keys ≤ 1.0× the arc-swap map of `ArcSwap`, `Registry::lease`",
            REG_ALL,
            MAP_ALL,
            1.0,
        ),
        (
            "registry, 10,000 plugins, all keys ≤ 1.0× the arc-swap map of `ArcSwap`, through a `RegistryReader`",
            READER_ALL,
            MAP_ALL,
            1.0,
        ),
    ] {
        let (Some(num), Some(den)) = (reg.get(num), reg.get(den)) else { continue };
        for (k, threads) in [(0, "1 thread"), (1, "2 threads")] {
            let ratio = num[k] / den[k];
            r.line(format!(
                "| {label}, {threads} | {ratio:.2}× ({:.1} vs {:.1} ns) | {} |",
                num[k],
                den[k],
                verdict(ratio <= limit)
            ));
        }
    }

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("cutover-bench.md");
    match std::fs::write(&path, &r.md) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
