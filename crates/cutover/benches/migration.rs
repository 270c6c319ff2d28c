//! What a lease costs when it is dropped on another thread than the one that
//! took it: the case of an async task that migrates between worker threads
//! while it holds a lease across `.await`.
//!
//! Run with `cargo bench -p cutover --bench migration` (about 40 s;
//! `CUTOVER_BENCH_QUICK=1` for a ~5 s smoke run). The table is printed and
//! written as markdown to `target/migration-bench.md`.
//!
//! On the asymmetric-fence path (rows marked so; the default where
//! available) a lease is a
//! plain increment of a counter the taking thread owns; a lease dropped on
//! another thread cannot touch that counter, so its drop is one atomic
//! increment of a per-generation "remote releases" counter shared by all
//! such drops. On the atomic path (`LeasePath::Atomic`, the fallback) a
//! lease increments a counter ("stripe") private to the thread that takes
//! it, and its drop decrements that same stripe wherever it runs, writing a
//! cache line the taking thread owns. Either way the line moves between
//! cores, as an `Arc`'s shared reference count does on every clone and
//! drop. This harness measures how much that costs, against the same lease
//! taken and dropped on one thread, and against arc-swap in the same run:
//!
//! * **Threads**: thread A takes `BATCH` leases into a vector; either A drops
//!   them itself (*same thread*), or it sends the vector over a bounded
//!   channel to thread B, which drops them and sends the empty vector back
//!   (*migrated*: every lease is dropped on another thread). The figure is
//!   A's wall time per lease over a 200 ms run, median of the rounds. The
//!   arc-swap candidates do the same with `load_full()` (an `Arc`, which can
//!   move; arc-swap's `load()` `Guard` cannot leave its thread, so it has
//!   only a same-thread row). *Pipeline only* moves plain numbers through
//!   the same channels: the floor the migrated rows include.
//! * **Tokio**: a multi-thread runtime with 2 workers runs 64 tasks, each in
//!   a loop: take a lease, await while holding it, deref, drop. *Busy
//!   workers*: the await is `yield_now()`; both workers always have work, so
//!   tasks are rarely stolen. *Woken from outside*: the await is a channel
//!   receive fed by a thread outside the runtime, so a woken task runs on
//!   whichever worker picks it up, and many leases are dropped on the other
//!   worker. The share of leases dropped on another worker is measured and
//!   printed. The figure is wall time per iteration over 200 ms, against the
//!   same loop holding an arc-swap `load_full()` `Arc`, and against the loop
//!   with no pointer at all.

use std::{
    fmt::Write as _,
    hint::black_box,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use cutover::{LeasePath, PluginId, Slot};

/// Leases per vector handed from thread A to thread B.
const BATCH: usize = 1024;

struct Config {
    run: Duration,
    rounds: usize,
}

impl Config {
    fn from_env() -> Self {
        if std::env::var_os("CUTOVER_BENCH_QUICK").is_some() {
            Self { run: Duration::from_millis(40), rounds: 3 }
        } else {
            Self { run: Duration::from_millis(200), rounds: 9 }
        }
    }
}

/// The value behind every pointer.
struct Plugin {
    id: u64,
    _payload: [u64; 3],
}

fn plugin(id: u64) -> Arc<Plugin> {
    Arc::new(Plugin { id, _payload: [id; 3] })
}

/// Something that hands out a handle on the current plugin.
trait Source: Send + Sync + 'static {
    type Handle: std::ops::Deref<Target = Plugin> + Send + 'static;
    fn take(&self) -> Self::Handle;
}

struct Lease(Slot<Plugin>);

impl Source for Lease {
    type Handle = cutover::Lease<Plugin>;
    #[inline]
    fn take(&self) -> Self::Handle {
        self.0.lease()
    }
}

struct LoadFull(ArcSwap<Plugin>);

impl Source for LoadFull {
    type Handle = Arc<Plugin>;
    #[inline]
    fn take(&self) -> Self::Handle {
        self.0.load_full()
    }
}

/// Same thread: take `BATCH` handles, deref them, drop them, repeat.
fn same_thread<S: Source>(source: &S, run: Duration) -> f64 {
    let mut batch = Vec::with_capacity(BATCH);
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < run {
        for _ in 0..BATCH {
            let h = source.take();
            black_box(h.id);
            batch.push(h);
        }
        batch.clear();
        n += BATCH as u64;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// arc-swap `load()` (a thread-bound `Guard`), same thread, same batching.
fn guard_same_thread(source: &ArcSwap<Plugin>, run: Duration) -> f64 {
    let mut batch = Vec::with_capacity(BATCH);
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < run {
        for _ in 0..BATCH {
            let g = source.load();
            black_box(g.id);
            batch.push(g);
        }
        batch.clear();
        n += BATCH as u64;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// For scale: take, deref and drop one at a time (the usual per-call path,
/// one handle alive at a time); `op` does all three.
fn one_at_a_time(op: impl Fn() -> u64, run: Duration) -> f64 {
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < run {
        for _ in 0..BATCH {
            black_box(op());
        }
        n += BATCH as u64;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Migrated: A takes and derefs, B drops. `make` builds a batch's items, so
/// the same pipeline carries handles or plain numbers.
fn pipeline<T: Send + 'static>(run: Duration, mut make: impl FnMut(&mut Vec<T>)) -> f64 {
    let (full_tx, full_rx) = mpsc::sync_channel::<Vec<T>>(2);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<T>>(4);
    for _ in 0..3 {
        empty_tx.send(Vec::with_capacity(BATCH)).expect("the channel is open");
    }
    let dropper = thread::spawn(move || {
        while let Ok(mut batch) = full_rx.recv() {
            batch.clear(); // every handle dropped here, on thread B
            if empty_tx.send(batch).is_err() {
                break;
            }
        }
    });
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < run {
        let mut batch = empty_rx.recv().expect("the dropper runs");
        make(&mut batch);
        full_tx.send(batch).expect("the dropper runs");
        n += BATCH as u64;
    }
    let elapsed = start.elapsed();
    drop(full_tx);
    dropper.join().expect("the dropper did not panic");
    elapsed.as_nanos() as f64 / n as f64
}

fn migrated<S: Source>(source: &Arc<S>, run: Duration) -> f64 {
    pipeline(run, |batch| {
        for _ in 0..BATCH {
            let h = source.take();
            black_box(h.id);
            batch.push(h);
        }
    })
}

fn pipeline_only(run: Duration) -> f64 {
    let mut i = 0u64;
    pipeline(run, |batch| {
        for _ in 0..BATCH {
            i += 1;
            batch.push(black_box(i));
        }
    })
}

/// What a tokio run measured.
struct TokioRun {
    ns_per_iteration: f64,
    migrated_share: f64,
}

/// 64 tasks on 2 workers: take, `yield_now().await` holding it, deref, drop.
fn tokio_loop<H: std::ops::Deref<Target = Plugin> + Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    run: Duration,
    take: impl Fn() -> Option<H> + Send + Sync + 'static,
) -> TokioRun {
    let take = Arc::new(take);
    let stop = Arc::new(AtomicBool::new(false));
    let iterations = Arc::new(AtomicU64::new(0));
    let moved = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (take, stop, iterations, moved) =
                (Arc::clone(&take), Arc::clone(&stop), Arc::clone(&iterations), Arc::clone(&moved));
            runtime.spawn(async move {
                let (mut n, mut m) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let on = thread::current().id();
                    let handle = take();
                    tokio::task::yield_now().await;
                    if let Some(h) = &handle {
                        black_box(h.id);
                    }
                    m += u64::from(thread::current().id() != on);
                    drop(handle);
                    n += 1;
                }
                iterations.fetch_add(n, Ordering::Relaxed);
                moved.fetch_add(m, Ordering::Relaxed);
            })
        })
        .collect();
    thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for t in tasks {
            t.await.expect("no task panicked");
        }
    });
    let elapsed = start.elapsed();
    let n = iterations.load(Ordering::Relaxed).max(1);
    TokioRun {
        ns_per_iteration: elapsed.as_nanos() as f64 / n as f64,
        migrated_share: moved.load(Ordering::Relaxed) as f64 / n as f64,
    }
}

/// 64 tasks on 2 workers, each in a loop: take, await a token sent from a
/// thread outside the runtime (so the woken task runs on whichever worker
/// picks it up), deref, drop.
fn tokio_woken_from_outside<H: std::ops::Deref<Target = Plugin> + Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    run: Duration,
    take: impl Fn() -> Option<H> + Send + Sync + 'static,
) -> TokioRun {
    let take = Arc::new(take);
    let iterations = Arc::new(AtomicU64::new(0));
    let moved = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        senders.push(tx);
        let (take, iterations, moved) = (Arc::clone(&take), Arc::clone(&iterations), Arc::clone(&moved));
        tasks.push(runtime.spawn(async move {
            let (mut n, mut m) = (0u64, 0u64);
            loop {
                let on = thread::current().id();
                let handle = take();
                if rx.recv().await.is_none() {
                    break;
                }
                if let Some(h) = &handle {
                    black_box(h.id);
                }
                m += u64::from(thread::current().id() != on);
                drop(handle);
                n += 1;
            }
            iterations.fetch_add(n, Ordering::Relaxed);
            moved.fetch_add(m, Ordering::Relaxed);
        }));
    }
    let start = Instant::now();
    let feeder = thread::spawn(move || {
        while start.elapsed() < run {
            for tx in &senders {
                if tx.blocking_send(()).is_err() {
                    return;
                }
            }
        }
        // Dropping the senders ends the tasks.
    });
    feeder.join().expect("the feeder did not panic");
    runtime.block_on(async {
        for t in tasks {
            t.await.expect("no task panicked");
        }
    });
    let elapsed = start.elapsed();
    let n = iterations.load(Ordering::Relaxed).max(1);
    TokioRun {
        ns_per_iteration: elapsed.as_nanos() as f64 / n as f64,
        migrated_share: moved.load(Ordering::Relaxed) as f64 / n as f64,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// CPU ticks of the whole machine (busy, incl. steal) and of this process.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = cpu.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = me.rsplit_once(')')?.1.split_whitespace().collect();
    let mine = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((busy, mine))
}

/// One row: the label and the per-round figures.
struct Row {
    label: &'static str,
    values: Vec<f64>,
}

fn main() {
    // `cargo bench` passes `--bench`; ignore every argument.
    let config = Config::from_env();
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let ticks_before = cpu_ticks();
    let began = Instant::now();

    // The atomic path's rows: explicit, as the default is the other path
    // where available.
    let lease = Arc::new(Lease(Slot::with_lease_path(PluginId::new("bench"), plugin(1), 8, LeasePath::Atomic)));
    let asymmetric =
        Arc::new(Lease(Slot::with_lease_path(PluginId::new("bench"), plugin(1), 8, LeasePath::AsymmetricFence)));
    let load_full = Arc::new(LoadFull(ArcSwap::new(plugin(1))));
    let guard = ArcSwap::new(plugin(1));

    let mut rows = [
        Row { label: "cutover lease, same thread", values: Vec::new() },
        Row { label: "cutover lease, dropped on another thread", values: Vec::new() },
        Row { label: "arc-swap load_full(), same thread", values: Vec::new() },
        Row { label: "arc-swap load_full(), dropped on another thread", values: Vec::new() },
        Row { label: "arc-swap load() Guard, same thread (cannot move)", values: Vec::new() },
        Row { label: "pipeline only (numbers, no pointer)", values: Vec::new() },
        Row { label: "for scale: cutover lease, one at a time (take, drop)", values: Vec::new() },
        Row { label: "for scale: arc-swap load(), one at a time (take, drop)", values: Vec::new() },
        Row { label: "cutover lease (asymmetric-fence path), same thread", values: Vec::new() },
        Row { label: "cutover lease (asymmetric-fence path), dropped on another thread", values: Vec::new() },
    ];
    // Warm-up round, discarded.
    same_thread(&*lease, config.run / 4);
    migrated(&lease, config.run / 4);
    for _ in 0..config.rounds {
        rows[0].values.push(same_thread(&*lease, config.run));
        rows[1].values.push(migrated(&lease, config.run));
        rows[2].values.push(same_thread(&*load_full, config.run));
        rows[3].values.push(migrated(&load_full, config.run));
        rows[4].values.push(guard_same_thread(&guard, config.run));
        rows[5].values.push(pipeline_only(config.run));
        rows[6].values.push(one_at_a_time(|| black_box(&*lease.take()).id, config.run));
        rows[7].values.push(one_at_a_time(|| black_box(&**guard.load()).id, config.run));
        rows[8].values.push(same_thread(&*asymmetric, config.run));
        rows[9].values.push(migrated(&asymmetric, config.run));
    }

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    let slot = Arc::new(Slot::new(PluginId::new("bench"), plugin(1)));
    let swap = Arc::new(ArcSwap::new(plugin(1)));
    let mut tokio_rows: Vec<(&str, Vec<TokioRun>)> = vec![
        ("busy workers: cutover lease held across yield_now().await", Vec::new()),
        ("busy workers: arc-swap load_full() held across yield_now().await", Vec::new()),
        ("busy workers: no pointer (yield_now().await only)", Vec::new()),
        ("woken from outside: cutover lease held across recv().await", Vec::new()),
        ("woken from outside: arc-swap load_full() held across recv().await", Vec::new()),
        ("woken from outside: no pointer (recv().await only)", Vec::new()),
    ];
    for _ in 0..config.rounds {
        let s = Arc::clone(&slot);
        tokio_rows[0].1.push(tokio_loop(&runtime, config.run, move || Some(s.lease())));
        let a = Arc::clone(&swap);
        tokio_rows[1].1.push(tokio_loop(&runtime, config.run, move || Some(a.load_full())));
        tokio_rows[2].1.push(tokio_loop(&runtime, config.run, || None::<Arc<Plugin>>));
        let s = Arc::clone(&slot);
        tokio_rows[3].1.push(tokio_woken_from_outside(&runtime, config.run, move || Some(s.lease())));
        let a = Arc::clone(&swap);
        tokio_rows[4].1.push(tokio_woken_from_outside(&runtime, config.run, move || Some(a.load_full())));
        tokio_rows[5].1.push(tokio_woken_from_outside(&runtime, config.run, || None::<Arc<Plugin>>));
    }
    drop(runtime);

    let other_cpu = match (ticks_before, cpu_ticks()) {
        (Some((b0, m0)), Some((b1, m1))) => {
            let ticks_per_s = 100.0; // USER_HZ on Linux
            let others = b1.saturating_sub(b0).saturating_sub(m1.saturating_sub(m0)) as f64 / ticks_per_s;
            format!("{:.0}% of a core on average", others / began.elapsed().as_secs_f64() * 100.0)
        }
        _ => "unknown (no /proc/stat)".to_owned(),
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "`cargo bench -p cutover --bench migration` — {cpus} CPUs, {} rounds × {} ms per figure (median), total {:.0} s; \
         other processes used {other_cpu} during the run.\n",
        config.rounds,
        config.run.as_millis(),
        began.elapsed().as_secs_f64()
    );
    let _ = writeln!(out, "### Threads: take + deref + drop, ns per lease (A's wall time; batches of {BATCH})\n");
    let _ = writeln!(out, "| candidate | ns/op | vs. same-thread lease | vs. arc-swap, same placement |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let medians: Vec<f64> = rows.iter_mut().map(|r| median(&mut r.values)).collect();
    let vs_arcswap = [
        Some(medians[2]),
        Some(medians[3]),
        Some(medians[2]),
        Some(medians[3]),
        Some(medians[2]),
        None,
        Some(medians[7]),
        None,
        Some(medians[2]),
        Some(medians[3]),
    ];
    for (i, row) in rows.iter().enumerate() {
        let against = vs_arcswap[i].map_or("—".to_owned(), |b| format!("{:.2}×", medians[i] / b));
        let _ = writeln!(out, "| {} | {:.1} | {:.2}× | {against} |", row.label, medians[i], medians[i] / medians[0]);
    }
    let _ = writeln!(
        out,
        "\nMigration cost per lease (migrated − same thread): cutover {:+.1} ns (asymmetric-fence path {:+.1} ns), \
         arc-swap load_full() {:+.1} ns; the pipeline alone costs {:.1} ns.\n",
        medians[1] - medians[0],
        medians[9] - medians[8],
        medians[3] - medians[2],
        medians[5]
    );
    let _ = writeln!(out, "### Tokio: 64 tasks on 2 workers, ns per iteration (take, await, deref, drop)\n");
    let _ = writeln!(
        out,
        "| scenario: candidate | ns/iteration | vs. arc-swap load_full(), same scenario | dropped on another worker |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let tokio_medians: Vec<(f64, f64)> = tokio_rows
        .iter()
        .map(|(_, runs)| {
            let mut ns: Vec<f64> = runs.iter().map(|r| r.ns_per_iteration).collect();
            let mut share: Vec<f64> = runs.iter().map(|r| r.migrated_share).collect();
            (median(&mut ns), median(&mut share))
        })
        .collect();
    for (i, (label, _)) in tokio_rows.iter().enumerate() {
        let (ns, share) = tokio_medians[i];
        // Against the arc-swap row of the same scenario.
        let baseline = tokio_medians[if i < 3 { 1 } else { 4 }].0;
        let _ = writeln!(out, "| {label} | {ns:.1} | {:.2}× | {:.1}% |", ns / baseline, share * 100.0);
    }
    print!("{out}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/migration-bench.md");
    if let Err(e) = std::fs::write(&path, &out) {
        eprintln!("could not write {}: {e}", path.display());
    }
}
