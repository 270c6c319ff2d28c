//! Reloading every plugin of a registry at once (issue 14, item 3): a loop
//! of `Registry::replace` against one `Registry::replace_many`, on both
//! lease paths, while 2 threads lease plugins all over the registry.
//!
//! On the asymmetric-fence path each `replace`'s drain pays one
//! process-wide barrier (`membarrier`, issued when the host first looks at
//! the `Drain` or drops it: here at the drop, inside the timed region); a
//! `replace_many` pays one per 256 cutovers.
//! On the atomic path the two are the same loop, which this checks too.
//!
//! For each of the four candidates (path × loop/batch), interleaved, `ROUNDS`
//! rounds of "cut all N plugins over" (N = 10,000; `CUTOVER_BENCH_PLUGINS`
//! changes it), keeping the drains as a host that waits for them would: the
//! wall time of a round per plugin, median over the rounds. (What the
//! readers manage meanwhile is not reported: on 2 cores the writer shares a
//! core with them, so it measures the scheduler more than the barrier.)
//!
//! Run: `cargo bench -p cutover --bench mass_reload` (`CUTOVER_BENCH_ROUNDS`
//! sets the rounds, default 30). BENCHMARKS.md records the figures.

use std::{
    hint::black_box,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Barrier,
    },
    thread,
    time::{Duration, Instant},
};

use cutover::{LeasePath, PluginId, Registry, Slot};

#[allow(dead_code)] // `shuffle` is not used here
mod common;
use common::{plugin, Plugin, Rng};

#[derive(Clone, Copy, PartialEq)]
enum How {
    Loop,
    Batch,
}

struct Candidate {
    path: LeasePath,
    how: How,
    registry: Arc<Registry<usize, Plugin>>,
    keys: Vec<usize>,
    generation: u64,
}

impl Candidate {
    fn new(path: LeasePath, how: How, plugins: usize) -> Self {
        let registry = Arc::new(Registry::new());
        registry
            .extend((0..plugins).map(|key| {
                let slot = Slot::with_lease_path(PluginId::new("mass-reload"), plugin(0), 4, path);
                (key, slot)
            }))
            .expect("distinct keys");
        Self { path, how, registry, keys: (0..plugins).collect(), generation: 0 }
    }

    fn name(&self) -> String {
        let path = match self.path {
            LeasePath::AsymmetricFence => "asymmetric",
            LeasePath::Atomic => "atomic",
        };
        let how = match self.how {
            How::Loop => "loop of replace",
            How::Batch => "replace_many",
        };
        format!("{path}, {how}")
    }

    /// One round: every plugin cut over. Returns the ns per plugin.
    fn round(&mut self) -> f64 {
        self.generation += 1;
        let stop = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(3));
        let readers: Vec<_> = (0..2u64)
            .map(|t| {
                let (registry, stop, start) = (Arc::clone(&self.registry), Arc::clone(&stop), Arc::clone(&start));
                let plugins = self.keys.len();
                thread::spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                    start.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let lease = registry.lease(&rng.below(plugins)).expect("registered");
                        black_box(lease.id);
                    }
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        let generation = self.generation;
        match self.how {
            How::Loop => {
                // The drains are kept, as a host that waits for them would,
                // and as `replace_many` returns them.
                let drains: Vec<_> =
                    self.keys.iter().map(|key| self.registry.replace(key, plugin(generation))).collect();
                drop(drains);
            }
            How::Batch => {
                let outcome = self.registry.replace_many(self.keys.iter().map(|key| (key, plugin(generation))));
                drop(outcome);
            }
        }
        let took = began.elapsed();
        stop.store(true, Ordering::Relaxed);
        readers.into_iter().for_each(|r| r.join().expect("reader"));
        took.as_nanos() as f64 / self.keys.len() as f64
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("mass_reload: bench");
        return;
    }
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let plugins = env("CUTOVER_BENCH_PLUGINS", 10_000).max(1);
    let rounds = env("CUTOVER_BENCH_ROUNDS", 30).max(1);
    let mut candidates: Vec<Candidate> = [LeasePath::AsymmetricFence, LeasePath::Atomic]
        .into_iter()
        .flat_map(|path| [How::Loop, How::Batch].map(|how| Candidate::new(path, how, plugins)))
        .collect();
    let asymmetric = Slot::with_lease_path(PluginId::new("probe"), plugin(0), 4, LeasePath::AsymmetricFence)
        .lease_path()
        == LeasePath::AsymmetricFence;
    // Warm up: every record allocated once, every thread's counters touched.
    for c in &mut candidates {
        c.round();
    }
    let mut results: Vec<Vec<f64>> = candidates.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (c, times) in candidates.iter_mut().zip(&mut results) {
            times.push(c.round());
        }
        thread::sleep(Duration::from_millis(5));
    }
    println!("mass reload: {plugins} plugins cut over per round, 2 threads leasing, {rounds} rounds (medians)");
    if !asymmetric {
        println!("(the asymmetric-fence path is not available here: its rows are the atomic path's)");
    }
    let medians: Vec<f64> = results.iter_mut().map(|times| median(times)).collect();
    println!("| candidate | per plugin | vs. the loop on its path | vs. the atomic path's loop |");
    println!("|---|---:|---:|---:|");
    for (i, (c, time)) in candidates.iter().zip(&medians).enumerate() {
        let (own_loop, atomic_loop) = (medians[i - i % 2], medians[2]);
        println!("| {} | {:.2} µs | {:.2}× | {:.2}× |", c.name(), time / 1e3, time / own_loop, time / atomic_loop);
    }
}
