//! The floor of a registry lookup spread over 10,000 plugins (issue 14,
//! item 2): what the memory layout and the kind of counter update cost, apart
//! from everything else a lease does.
//!
//! Run with `cargo bench -p cutover --bench registry_floor` (about 2 minutes;
//! `CUTOVER_BENCH_QUICK=1` for a smoke run).
//!
//! Every row looks up the same 10,000 keys (`plugin-{i}`) in the same
//! shuffled order, in a `HashMap<String, _>` with the standard hasher, and
//! reads the plugin's `id` through the pointer it finds; each row builds its
//! own keys, values and bookkeeping, allocated in the same order (key, value,
//! bookkeeping, plugin after plugin). Each row is measured on 1 thread, then
//! on 2 threads at once (each looking up every key, in the same order; the
//! models keep each thread's counters apart, as stripes or arrays). The
//! rows:
//!
//! * **arc-swap map of `ArcSwap`** (the baseline): `load()` the map, `get`,
//!   `load()` the entry, as in the `cutover` bench's registry section.
//! * **cutover `Registry`**, on the atomic and on the asymmetric-fence path:
//!   the real thing.
//! * **arc-swap map through `arc_swap::Cache`** and **cutover
//!   `RegistryReader`**, on both paths: the same two structures read with
//!   the key map kept per thread between lookups (checked with one load
//!   that it is still current), arc-swap's way and cutover's.
//! * **cutover `Slot`s in a `HashMap`**: the registry's slots, built the same
//!   way, in a plain `HashMap<String, Slot>`: no key-map lease and no
//!   prefetch hint. What the slot lease costs apart from the registry.
//! * **Models**, which are *not* lease protocols (no drain, no cutover: no
//!   writer runs), only their memory traffic:
//!   * *per-record counters*: the layout of session 22, when these models
//!     were written (sessions 23–29 replaced it with what *chunked records,
//!     dense slot cells* models; the real registry rows measure that). The
//!     entry points at a 256-byte shared state whose first word is the
//!     current record; the record
//!     (640 bytes: a header line with the value pointer, then four stripes
//!     128 bytes apart) is a separate allocation; the entry's prefetch hint
//!     names the record, the stripe and the value. The lease increments the
//!     thread's stripe, the release another counter in it.
//!   * *one hop, dense per-thread counters*: the current-record pointer and
//!     the value pointer share one small allocation per plugin, and the
//!     thread's counters for every plugin are one array (16 bytes a plugin:
//!     160 KB for 10,000).
//!   * *two hops, dense per-thread counters*: session 22's two hops (shared
//!     state, then a separate record header holding the value and the
//!     record's counter index) with the counters of the dense layout: which
//!     part of the gap the counters make, which the hops; *prefetched*: the
//!     entry also names the header and the value, which the lookup
//!     prefetches before it loads the current pointer (as the real
//!     registry's entries do);
//!   * *chunked records*: session 22's protocol and hops (shared state, then
//!     record), with records packed densely in chunks shared by all slots:
//!     a record is a 32-byte header (value, generation) in a chunk's first
//!     region and a 32-byte counter cell in each of the next four, every
//!     region 256 records long, so stripe `i` is at `header + (i + 1) *
//!     8 KiB`: reached from the record pointer with one add, as the real
//!     stripes now are. With the slot's *own shared state* (session 22's 256-byte
//!     allocation per slot), or with *dense slot cells* (the current
//!     pointer in a 32-byte cell of one array of all slots, which the entry
//!     points at);
//!   * each with *locked* updates (a `lock xadd`, as on the atomic path, and
//!     the validating load of the current pointer after it) or *plain* ones
//!     (a load and a store, as in the asymmetric-fence path's restartable
//!     sequences);
//!   * *no counting*: the dense layout's lookup and dereference alone.
//!
//! Rows are measured interleaved, round after round (a round: one pass over
//! all keys to warm up, then five timed ones); the table gives the minimum
//! and the median ns per lookup over the timed passes, and each as a ratio
//! to the baseline's. On a shared host, whose neighbours thrash the last
//! level cache, the minimum is the figure to read: a pass no neighbour
//! disturbed. Results and their reading: BENCHMARKS.md, "Issue 14,
//! item 2: the floor".

use std::{
    collections::HashMap,
    hint::black_box,
    sync::{
        atomic::{AtomicPtr, AtomicU64, Ordering},
        Arc, Barrier,
    },
    thread,
    time::Instant,
};

use arc_swap::ArcSwap;
use cutover::{LeasePath, PluginId, Registry, Slot};

mod common;
use common::{plugin, shuffle, Plugin};

const PLUGINS: usize = 10_000;

/// Timed passes over all keys per row and round, after one to warm up.
const PASSES: usize = 5;

fn key(i: usize) -> String {
    format!("plugin-{i}")
}

/// The lookup order: every key once, shuffled as in the `cutover` bench.
fn lookup_order() -> Vec<String> {
    let mut keys: Vec<String> = (0..PLUGINS).map(key).collect();
    shuffle(&mut keys);
    keys
}

/// How a row is built (for its turn in each round).
type Build = fn() -> Box<dyn Row>;

/// One row: look `key` up and read the plugin's id, on benchmark thread
/// `thread` (0 or 1: the models keep that thread's counters apart).
trait Row: Sync {
    fn lookup(&self, key: &str, thread: usize) -> u64;

    /// Benchmark thread `thread`'s lookups: by default [`lookup`](Self::lookup);
    /// a row whose lookups keep per-thread state (a cache, a reader) makes
    /// that state here. Every row is called through one dynamic call per
    /// lookup, whichever way.
    fn looker(&self, thread: usize) -> Box<dyn FnMut(&str) -> u64 + '_> {
        Box::new(move |key| self.lookup(key, thread))
    }
}

/// How many threads a model keeps counters for.
const THREADS: usize = 2;

struct ArcSwapMap(ArcSwap<HashMap<String, Arc<ArcSwap<Plugin>>>>);

impl ArcSwapMap {
    fn new() -> Self {
        let map = (0..PLUGINS).map(|i| (key(i), Arc::new(ArcSwap::new(plugin(i as u64))))).collect();
        Self(ArcSwap::from_pointee(map))
    }
}

impl Row for ArcSwapMap {
    #[inline]
    fn lookup(&self, key: &str, _thread: usize) -> u64 {
        let map = self.0.load();
        let entry = map.get(key).expect("registered key").load();
        black_box(&**entry).id
    }
}

/// The baseline's structure read through `arc_swap::Cache`, which keeps
/// the key map's `Arc` per thread and checks with one load that it is still
/// current: `arc-swap`'s own answer to what [`cutover::RegistryReader`]
/// does, so the fair baseline for the reader rows.
struct ArcSwapMapCached(ArcSwapMap);

impl Row for ArcSwapMapCached {
    fn lookup(&self, key: &str, thread: usize) -> u64 {
        self.0.lookup(key, thread)
    }

    fn looker(&self, _thread: usize) -> Box<dyn FnMut(&str) -> u64 + '_> {
        let mut cache = arc_swap::Cache::new(&self.0 .0);
        Box::new(move |key| {
            let entry = cache.load().get(key).expect("registered key").load();
            black_box(&**entry).id
        })
    }
}

struct CutoverRegistry(Registry<String, Plugin>);

impl CutoverRegistry {
    fn new(path: LeasePath) -> Self {
        let registry = Registry::new();
        registry
            .extend((0..PLUGINS).map(|i| {
                let key = key(i);
                let slot = Slot::with_lease_path(PluginId::new(&key), plugin(i as u64), 4, path);
                (key, slot)
            }))
            .expect("distinct keys");
        Self(registry)
    }
}

impl Row for CutoverRegistry {
    #[inline]
    fn lookup(&self, key: &str, _thread: usize) -> u64 {
        let lease = self.0.lease(key).expect("registered key");
        black_box(&*lease).id
    }
}

/// The registry read through a [`cutover::RegistryReader`] per thread,
/// which keeps the key map's lease between lookups.
struct CutoverReader(CutoverRegistry);

impl Row for CutoverReader {
    fn lookup(&self, key: &str, thread: usize) -> u64 {
        self.0.lookup(key, thread)
    }

    fn looker(&self, _thread: usize) -> Box<dyn FnMut(&str) -> u64 + '_> {
        let mut reader = self.0 .0.reader();
        Box::new(move |key| {
            let lease = reader.lease(key).expect("registered key");
            black_box(&*lease).id
        })
    }
}

/// The registry's slots without the registry: a plain `HashMap` of
/// `Slot`s, looked up and leased (no key-map lease, no prefetch hint). How
/// much of the registry's cost is the slot lease itself.
struct SlotMap(HashMap<String, Slot<Plugin>>);

impl SlotMap {
    fn new() -> Self {
        Self(
            (0..PLUGINS)
                .map(|i| {
                    let key = key(i);
                    let slot = Slot::with_lease_path(PluginId::new(&key), plugin(i as u64), 4, LeasePath::Atomic);
                    (key, slot)
                })
                .collect(),
        )
    }
}

impl Row for SlotMap {
    #[inline]
    fn lookup(&self, key: &str, _thread: usize) -> u64 {
        let lease = self.0.get(key).expect("registered key").lease();
        black_box(&*lease).id
    }
}

/// A counter update: a locked read-modify-write, or a plain load and store.
#[derive(Clone, Copy, PartialEq)]
enum Update {
    Locked,
    Plain,
}

impl Update {
    #[inline(always)]
    fn bump(self, counter: &AtomicU64) {
        match self {
            Update::Locked => {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            Update::Plain => counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed),
        }
    }

    /// A modelled lease around `read`: count it on `acquired`, validate
    /// (locked updates only, as the atomic path does after its increment)
    /// that the record is `still_current`, read, count the release on
    /// `released`.
    #[inline(always)]
    fn lease(
        self,
        acquired: &AtomicU64,
        released: &AtomicU64,
        still_current: impl FnOnce() -> bool,
        read: impl FnOnce() -> u64,
    ) -> u64 {
        self.bump(acquired);
        if self == Update::Locked {
            assert!(still_current());
        }
        let id = read();
        self.bump(released);
        id
    }
}

/// A prefetch into every cache level; never faults, whatever the address.
#[inline(always)]
fn prefetch<P>(p: *const P) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` (SSE, baseline on x86-64) only hints the cache; it
    // reads nothing the program can observe and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Two counters of one thread, 128 bytes from the next thread's.
#[repr(C, align(128))]
struct StripeModel {
    acquired: AtomicU64,
    released: AtomicU64,
}

/// A generation record as laid out in session 22: a header line, then the stripes.
#[repr(C, align(128))]
struct RecordModel {
    value: Arc<Plugin>,
    stripes: [StripeModel; 4],
}

/// A slot's shared state (256 bytes, as the real one with its `Arc` header
/// and writer lock): the current record (`R`) first, then cold fields.
#[repr(C, align(64))]
struct SharedModel<R> {
    current: AtomicPtr<R>,
    _cold: [u64; 31],
}

impl<R> SharedModel<R> {
    /// Allocated before its record, as a real slot's shared state is; the
    /// record is published with [`publish`](Self::publish).
    fn empty() -> Arc<Self> {
        Arc::new(Self { current: AtomicPtr::default(), _cold: [0; 31] })
    }

    fn publish(&self, record: &Arc<R>) {
        self.current.store(Arc::as_ptr(record).cast_mut(), Ordering::Release);
    }
}

struct PerRecordEntry {
    shared: Arc<SharedModel<RecordModel>>,
    /// Prefetch addresses only (never dereferenced), as integers.
    hint_record: usize,
    hint_value: usize,
    /// Keeps the record `shared.current` points at alive.
    _record: Arc<RecordModel>,
}

struct PerRecord {
    map: HashMap<String, PerRecordEntry>,
    update: Update,
    _values: Vec<Arc<Plugin>>,
}

impl PerRecord {
    fn new(update: Update) -> Self {
        let mut map = HashMap::with_capacity(PLUGINS);
        let mut values = Vec::with_capacity(PLUGINS);
        for i in 0..PLUGINS {
            let key = key(i);
            let value = plugin(i as u64);
            let shared = SharedModel::empty();
            let record = Arc::new(RecordModel {
                value: Arc::clone(&value),
                stripes: std::array::from_fn(|_| StripeModel {
                    acquired: AtomicU64::new(0),
                    released: AtomicU64::new(0),
                }),
            });
            shared.publish(&record);
            let entry = PerRecordEntry {
                shared,
                hint_record: Arc::as_ptr(&record) as usize,
                hint_value: Arc::as_ptr(&value) as usize,
                _record: record,
            };
            map.insert(key, entry);
            values.push(value);
        }
        Self { map, update, _values: values }
    }
}

impl Row for PerRecord {
    #[inline]
    fn lookup(&self, key: &str, thread: usize) -> u64 {
        let entry = self.map.get(key).expect("registered key");
        prefetch(entry.hint_record as *const u8);
        // The thread's stripe.
        prefetch((entry.hint_record + 128 * (thread + 1)) as *const u8);
        prefetch(entry.hint_value as *const u8);
        let record = entry.shared.current.load(Ordering::Acquire);
        // SAFETY: the entry keeps its record alive, and it is never replaced.
        let record = unsafe { &*record };
        let stripe = &record.stripes[thread];
        self.update.lease(
            &stripe.acquired,
            &stripe.released,
            || std::ptr::eq(entry.shared.current.load(Ordering::SeqCst), record),
            || black_box(&*record.value).id,
        )
    }
}

/// Every thread's counter array: two counters (acquired, released) per
/// plugin, each thread's in its own allocation.
fn counter_arrays() -> [Box<[AtomicU64]>; THREADS] {
    std::array::from_fn(|_| (0..2 * PLUGINS).map(|_| AtomicU64::new(0)).collect())
}

/// A record header alone: the value and the record's index into every
/// thread's counter array.
struct HeaderModel {
    value: Arc<Plugin>,
    index: usize,
}

struct SplitEntry {
    shared: Arc<SharedModel<HeaderModel>>,
    /// Prefetch addresses only (never dereferenced), as integers.
    hint_header: usize,
    hint_value: usize,
    /// Keeps the header `shared.current` points at alive.
    _header: Arc<HeaderModel>,
}

/// Today's two hops (shared state, then the record), with the counters moved
/// out into dense per-thread arrays: which half of the gap is the counters'.
struct Split {
    map: HashMap<String, SplitEntry>,
    counters: [Box<[AtomicU64]>; THREADS],
    update: Update,
    /// Whether a lookup prefetches the header and the value (as the real
    /// registry's entries do) before it loads the current pointer.
    hinted: bool,
}

impl Split {
    fn new(update: Update, hinted: bool) -> Self {
        let mut map = HashMap::with_capacity(PLUGINS);
        for i in 0..PLUGINS {
            let key = key(i);
            let value = plugin(i as u64);
            let shared = SharedModel::empty();
            let hint_value = Arc::as_ptr(&value) as usize;
            let header = Arc::new(HeaderModel { value, index: i });
            shared.publish(&header);
            let hint_header = Arc::as_ptr(&header) as usize;
            map.insert(key, SplitEntry { shared, hint_header, hint_value, _header: header });
        }
        Self { map, counters: counter_arrays(), update, hinted }
    }
}

impl Row for Split {
    #[inline]
    fn lookup(&self, key: &str, thread: usize) -> u64 {
        let entry = self.map.get(key).expect("registered key");
        let counters = &self.counters[thread];
        if self.hinted {
            prefetch(entry.hint_header as *const u8);
            prefetch(entry.hint_value as *const u8);
        }
        let header = entry.shared.current.load(Ordering::Acquire);
        // SAFETY: the entry keeps its header alive, and it is never replaced.
        let header = unsafe { &*header };
        self.update.lease(
            &counters[2 * header.index],
            &counters[2 * header.index + 1],
            || std::ptr::eq(entry.shared.current.load(Ordering::SeqCst), header),
            || black_box(&*header.value).id,
        )
    }
}

/// One plugin's hot line in the dense layout: the current record and what
/// a lease reads from it, side by side.
struct DenseLine {
    current: AtomicPtr<Plugin>,
    index: usize,
}

struct Dense {
    map: HashMap<String, Arc<DenseLine>>,
    /// Each thread's counters for every plugin: acquired, released.
    counters: [Box<[AtomicU64]>; THREADS],
    update: Option<Update>,
    _values: Vec<Arc<Plugin>>,
}

impl Dense {
    fn new(update: Option<Update>) -> Self {
        let mut map = HashMap::with_capacity(PLUGINS);
        let mut values = Vec::with_capacity(PLUGINS);
        for i in 0..PLUGINS {
            let key = key(i);
            let value = plugin(i as u64);
            let line = Arc::new(DenseLine { current: AtomicPtr::new(Arc::as_ptr(&value).cast_mut()), index: i });
            map.insert(key, line);
            values.push(value);
        }
        Self { map, counters: counter_arrays(), update, _values: values }
    }
}

impl Row for Dense {
    #[inline]
    fn lookup(&self, key: &str, thread: usize) -> u64 {
        let line = self.map.get(key).expect("registered key");
        let counters = &self.counters[thread];
        let value = line.current.load(Ordering::Acquire);
        // SAFETY: the value is kept alive by `_values`.
        let read = || black_box(unsafe { &*value }).id;
        match self.update {
            None => read(),
            Some(update) => update.lease(
                &counters[2 * line.index],
                &counters[2 * line.index + 1],
                || line.current.load(Ordering::SeqCst) == value,
                read,
            ),
        }
    }
}

/// Records per chunk, and the bytes between a chunk's regions: a record's
/// 32-byte header in region 0, its stripe `i` counters 32 bytes in region
/// `i + 1`, so stripe `i` is at `header + (i + 1) * REGION`, as session 22's
/// `record + first + i * 128`: no load, no arithmetic beyond an add.
const CHUNK_RECORDS: usize = 256;
const REGION: usize = CHUNK_RECORDS * 32;
/// Header region plus four stripes, as session 22's records had.
const REGIONS: usize = 5;

/// A 32-byte record header in a chunk: the value, the generation.
#[repr(C, align(32))]
struct ChunkHeader {
    value: *const Plugin,
    generation: u64,
}

/// A 32-byte counter cell of one stripe of one record.
#[repr(C, align(32))]
struct ChunkStripe {
    shared: AtomicU64,
    acquired: AtomicU64,
    released: AtomicU64,
}

/// A 32-byte slot cell: the current record, and (unused here) the slot's
/// other hot fields.
#[repr(C, align(32))]
struct SlotCell {
    current: AtomicPtr<ChunkHeader>,
    _hot: [u64; 3],
}

/// Where a chunked model's slot state lives.
enum SlotState {
    /// Today's 256-byte shared state, one allocation per slot.
    Own(Arc<SharedModel<ChunkHeader>>),
    /// A 32-byte cell in a dense array of all slots' cells.
    Cell(*const SlotCell),
}

struct ChunkEntry {
    slot: SlotState,
    /// Prefetch addresses only: the header and the value.
    hint_header: usize,
    hint_value: usize,
}

// SAFETY: the pointers are into allocations the row owns, read-only apart
// from the atomics.
unsafe impl Send for ChunkEntry {}
// SAFETY: as above.
unsafe impl Sync for ChunkEntry {}

/// Record headers and their counters in shared chunks (a record is 32 bytes
/// in each of five regions: 160 bytes, against 640), the slot state either
/// as in session 22 or in dense 32-byte cells.
struct Chunked {
    map: HashMap<String, ChunkEntry>,
    _chunks: Vec<Box<[ChunkRegion]>>,
    _cells: Box<[SlotCell]>,
    _values: Vec<Arc<Plugin>>,
    update: Update,
}

/// One region of a chunk: 256 cells of 32 bytes.
#[repr(C, align(4096))]
struct ChunkRegion([[u64; 4]; CHUNK_RECORDS]);

impl Chunked {
    fn new(update: Update, cells: bool) -> Self {
        let mut map = HashMap::with_capacity(PLUGINS);
        let mut values = Vec::with_capacity(PLUGINS);
        let slot_cells: Box<[SlotCell]> = (0..if cells { PLUGINS } else { 0 })
            .map(|_| SlotCell { current: AtomicPtr::default(), _hot: [0; 3] })
            .collect();
        let mut chunks: Vec<Box<[ChunkRegion]>> = Vec::new();
        for i in 0..PLUGINS {
            let key = key(i);
            let value = plugin(i as u64);
            if i % CHUNK_RECORDS == 0 {
                chunks.push((0..REGIONS).map(|_| ChunkRegion([[0; 4]; CHUNK_RECORDS])).collect());
            }
            let chunk = chunks.last_mut().expect("a chunk").as_mut_ptr();
            // SAFETY: cell `i % 256` of region 0 of the chunk: ours, 32 bytes.
            let header = unsafe { chunk.cast::<u8>().add(32 * (i % CHUNK_RECORDS)).cast::<ChunkHeader>() };
            // SAFETY: as above; nothing else refers to it yet.
            unsafe { header.write(ChunkHeader { value: Arc::as_ptr(&value), generation: 1 }) };
            let slot = if cells {
                let cell = &slot_cells[i];
                cell.current.store(header, Ordering::Release);
                SlotState::Cell(cell)
            } else {
                let shared = SharedModel::empty();
                shared.current.store(header, Ordering::Release);
                SlotState::Own(shared)
            };
            let entry = ChunkEntry { slot, hint_header: header as usize, hint_value: Arc::as_ptr(&value) as usize };
            map.insert(key, entry);
            values.push(value);
        }
        Self { map, _chunks: chunks, _cells: slot_cells, _values: values, update }
    }
}

impl Row for Chunked {
    #[inline]
    fn lookup(&self, key: &str, thread: usize) -> u64 {
        let entry = self.map.get(key).expect("registered key");
        prefetch(entry.hint_header as *const u8);
        prefetch((entry.hint_header + (thread + 1) * REGION) as *const u8);
        prefetch(entry.hint_value as *const u8);
        let current = match &entry.slot {
            SlotState::Own(shared) => &shared.current,
            // SAFETY: the row owns the cells.
            SlotState::Cell(cell) => unsafe { &(**cell).current },
        };
        let header = current.load(Ordering::Acquire);
        // SAFETY: the stripe cell of this thread, in the header's chunk.
        let stripe = unsafe { &*header.cast::<u8>().add((thread + 1) * REGION).cast::<ChunkStripe>() };
        self.update.lease(
            &stripe.acquired,
            &stripe.released,
            || current.load(Ordering::SeqCst) == header,
            // SAFETY: the header and its value live as long as the row.
            || black_box(unsafe { &*(*header).value }).id,
        )
    }
}

fn main() {
    let quick = std::env::var_os("CUTOVER_BENCH_QUICK").is_some();
    let rounds = if quick { 5 } else { 80 };
    let order = lookup_order();
    let rows: [(&str, Build); 20] = [
        ("arc-swap map of ArcSwap (baseline)", || Box::new(ArcSwapMap::new())),
        ("cutover Registry, atomic path", || Box::new(CutoverRegistry::new(LeasePath::Atomic))),
        ("cutover Registry, asymmetric-fence path", || Box::new(CutoverRegistry::new(LeasePath::AsymmetricFence))),
        ("arc-swap map of ArcSwap through arc_swap::Cache", || Box::new(ArcSwapMapCached(ArcSwapMap::new()))),
        ("cutover RegistryReader, atomic path", || Box::new(CutoverReader(CutoverRegistry::new(LeasePath::Atomic)))),
        ("cutover RegistryReader, asymmetric-fence path", || {
            Box::new(CutoverReader(CutoverRegistry::new(LeasePath::AsymmetricFence)))
        }),
        ("cutover Slots in a HashMap (no key-map lease, no hint), atomic path", || Box::new(SlotMap::new())),
        ("model: per-record counters, locked", || Box::new(PerRecord::new(Update::Locked))),
        ("model: per-record counters, plain", || Box::new(PerRecord::new(Update::Plain))),
        ("model: chunked records, own shared state, locked", || Box::new(Chunked::new(Update::Locked, false))),
        ("model: chunked records, own shared state, plain", || Box::new(Chunked::new(Update::Plain, false))),
        ("model: chunked records, dense slot cells, locked", || Box::new(Chunked::new(Update::Locked, true))),
        ("model: chunked records, dense slot cells, plain", || Box::new(Chunked::new(Update::Plain, true))),
        ("model: two hops, dense per-thread counters, locked", || Box::new(Split::new(Update::Locked, false))),
        ("model: two hops, dense per-thread counters, plain", || Box::new(Split::new(Update::Plain, false))),
        ("model: two hops prefetched, dense per-thread counters, locked", || {
            Box::new(Split::new(Update::Locked, true))
        }),
        ("model: two hops prefetched, dense per-thread counters, plain", || Box::new(Split::new(Update::Plain, true))),
        ("model: one hop, dense per-thread counters, locked", || Box::new(Dense::new(Some(Update::Locked)))),
        ("model: one hop, dense per-thread counters, plain", || Box::new(Dense::new(Some(Update::Plain)))),
        ("model: no counting (lookup + deref)", || Box::new(Dense::new(None))),
    ];
    for threads in 1..=THREADS {
        let samples = measure(&rows, &order, rounds, threads);
        report(&rows, samples, threads);
    }
}

/// Every row's per-pass ns per lookup, on `threads` threads at once (all
/// the threads' passes pooled).
fn measure(rows: &[(&str, Build)], order: &[String], rounds: usize, threads: usize) -> Vec<Vec<f64>> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds * PASSES * threads); rows.len()];
    for _ in 0..rounds {
        for ((_, build), samples) in rows.iter().zip(&mut samples) {
            // Built afresh for its turn and freed after it, so that every
            // row gets much the same memory from the allocator: where a
            // structure lands moves these figures more than its layout does.
            let row = build();
            let start = Barrier::new(threads);
            let passes: Vec<Vec<f64>> = thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|thread| {
                        let (row, start) = (&row, &start);
                        scope.spawn(move || {
                            let mut sum = 0u64;
                            let mut lookup = row.looker(thread);
                            start.wait();
                            for key in order {
                                sum = sum.wrapping_add(lookup(key));
                            }
                            let mut passes = Vec::with_capacity(PASSES);
                            for _ in 0..PASSES {
                                let began = Instant::now();
                                for key in order {
                                    sum = sum.wrapping_add(lookup(key));
                                }
                                passes.push(began.elapsed().as_nanos() as f64 / PLUGINS as f64);
                            }
                            black_box(sum);
                            passes
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().expect("benchmark thread")).collect()
            });
            samples.extend(passes.into_iter().flatten());
        }
    }
    samples
}

/// Print one table: minimum and median per row, and as ratios to row 0's.
fn report(rows: &[(&str, Build)], mut samples: Vec<Vec<f64>>, threads: usize) {
    let stats: Vec<(f64, f64)> = samples
        .iter_mut()
        .map(|s| {
            s.sort_by(f64::total_cmp);
            (s[0], s[s.len() / 2])
        })
        .collect();
    let (base_min, base_median) = stats[0];
    let passes = samples[0].len();
    let plural = if threads == 1 { "" } else { "s" };
    println!("registry lookup + lease, 10,000 plugins, keys spread, {threads} thread{plural} ({passes} passes):");
    println!("| row | min ns | min / baseline | median ns | median / baseline |");
    println!("|---|---:|---:|---:|---:|");
    for ((name, _), (min, median)) in rows.iter().zip(&stats) {
        println!("| {name} | {min:.0} | {:.2}× | {median:.0} | {:.2}× |", min / base_min, median / base_median);
    }
}
