//! Shared by the benchmarks: medians and percentiles, interleaved ratio
//! measurement, and the reload-under-load round.
#![allow(dead_code)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array};
use cutover::host::{Host, ReloadOptions};
use cutover::PluginId;
use cutover_wasm::{WasmPlugin, WasmSource};

/// Whether the benchmark `name` should run: `cargo bench ... -- FILTER` runs
/// those whose name contains FILTER (as criterion does for its own).
pub fn wanted(name: &str) -> bool {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    filter.is_none_or(|f| name.contains(&f))
}

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The 99th percentile of `v` (0 when empty).
pub fn p99(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// Seconds per call of each of `candidates`, measured interleaved (`rounds`
/// rounds; in each, every candidate runs `batch` times in a row), so that all
/// see the same machine state; the median over rounds of each candidate's
/// per-call time.
pub fn interleaved(rounds: usize, batch: usize, candidates: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); candidates.len()];
    for _ in 0..rounds {
        for (c, t) in candidates.iter_mut().zip(&mut times) {
            let start = Instant::now();
            for _ in 0..batch {
                c();
            }
            t.push(start.elapsed().as_secs_f64() / batch as f64);
        }
    }
    times.into_iter().map(median).collect()
}

/// One round of reload under load: 2 threads call `function` on `rows`-row
/// Int64 batches through the host, 2 s steady, then `reloads` reloads through
/// `Host::reload` alternating `sources[0]`, `sources[1]`.
pub struct ReloadRound {
    pub failures: u64,
    pub steady_p99_ns: u64,
    pub reloading_p99_ns: u64,
    pub steady_calls: usize,
    pub reloading_calls: usize,
    pub reload_time: Duration,
    pub build_time: Duration,
}

pub fn reload_round(
    id: &str,
    function: &str,
    first: &WasmSource,
    sources: [&WasmSource; 2],
    rows: usize,
    reloads: usize,
) -> ReloadRound {
    let id = PluginId::new(id);
    let host: Arc<Host<WasmPlugin>> = Arc::new(Host::new());
    host.add(id.clone(), first).unwrap();
    let phase = Arc::new(AtomicU64::new(0)); // 0 warm-up, 1 steady, 2 reloading, 3 stop
    let failures = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(3));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (host, phase, failures, start, stop) =
                (host.clone(), phase.clone(), failures.clone(), start.clone(), stop.clone());
            let (id, function) = (id.clone(), function.to_owned());
            std::thread::spawn(move || {
                let column: ArrayRef = Arc::new(Int64Array::from((0..rows as i64).collect::<Vec<_>>()));
                let (mut steady, mut reloading) = (Vec::with_capacity(1 << 20), Vec::with_capacity(1 << 20));
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    let p = phase.load(Ordering::Relaxed);
                    let t = Instant::now();
                    let ok = host
                        .lease(&id)
                        .is_some_and(|p| black_box(p.invoke(&function, std::slice::from_ref(&column), rows)).is_ok());
                    let ns = t.elapsed().as_nanos() as u64;
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    match p {
                        1 => steady.push(ns),
                        2 => reloading.push(ns),
                        _ => {}
                    }
                }
                (steady, reloading)
            })
        })
        .collect();
    start.wait();
    std::thread::sleep(Duration::from_millis(300)); // warm-up (benchmark pacing, not synchronisation)
    phase.store(1, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    phase.store(2, Ordering::Relaxed);
    let t = Instant::now();
    let mut build_time = Duration::ZERO;
    for i in 0..reloads {
        let report = host.reload(&id, sources[i % 2], &ReloadOptions::default()).expect("reload");
        build_time += report.phases.load + report.phases.link + report.phases.init;
    }
    let reload_time = t.elapsed();
    phase.store(3, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (mut steady, mut reloading) = (Vec::new(), Vec::new());
    for c in callers {
        let (s, r) = c.join().unwrap();
        steady.extend(s);
        reloading.extend(r);
    }
    ReloadRound {
        failures: failures.load(Ordering::Relaxed),
        steady_calls: steady.len(),
        reloading_calls: reloading.len(),
        steady_p99_ns: p99(steady),
        reloading_p99_ns: p99(reloading),
        reload_time,
        build_time,
    }
}

/// Run `rounds` reload rounds and print each and the verdict line.
pub fn report_reload_rounds(
    what: &str,
    rounds: usize,
    mut round: impl FnMut() -> ReloadRound,
    reloads: usize,
    rows: usize,
) {
    let mut ratios = Vec::new();
    let mut failed = 0;
    for n in 1..=rounds {
        let r = round();
        failed += r.failures;
        let ratio = r.reloading_p99_ns as f64 / r.steady_p99_ns as f64;
        ratios.push(ratio);
        println!(
            "round {n}: {reloads} reloads in {:.2} s (load+link+init {:.2} ms/reload on the reloading thread), \
             failed calls {}, steady p99 {:.2} us ({} calls), p99 during reloads {:.2} us ({} calls), ratio {ratio:.3}",
            r.reload_time.as_secs_f64(),
            r.build_time.as_secs_f64() * 1e3 / reloads as f64,
            r.failures,
            r.steady_p99_ns as f64 / 1e3,
            r.steady_calls,
            r.reloading_p99_ns as f64 / 1e3,
            r.reloading_calls,
        );
    }
    println!(
        "\nRESULT {what} reload under load (2 callers x {rows} rows, {reloads} reloads through the host, {rounds} rounds): \
         failed calls {failed}, p99 ratio median {:.3} (rounds: {}) (target <= 1.5, 0 failed)\n",
        median(ratios.clone()),
        ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(", ")
    );
}
