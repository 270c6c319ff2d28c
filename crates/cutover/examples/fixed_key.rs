//! A profiling target: the benchmark's fixed-key registry rows, alone.
//!
//! Builds `SEEDS` registries of 1 plugin and as many of 10,000 plugins (as
//! the `cutover` benchmark's fixed-key rows do with 8: several hasher
//! seeds, so that the figure does not hang on one seed's collisions), then
//! looks up `"plugin-1234"` in each registry in turn, alternating between
//! the two sets round after round, and prints the minimum and median ns
//! per lookup and lease of each and their ratio: the benchmark's "10,000 vs
//! 1 plugin, fixed key" (BENCHMARKS.md, issue 14, item 2, session 24).
//!
//! What it showed: the ratio is 1.0x up to a number of registries and
//! about 1.2x from there on, whatever the number. Past that edge the
//! lines and pages a round of lookups touches no longer stay cached; the
//! 1-plugin registries, whose cells and tables are neighbours, never get
//! there. The edge moved from between 8 and 10 registries to between 6 and
//! 7 when records and heads became cells of shared chunks. Since a lookup
//! prefetches its first probe (session 30), the step past the edge is
//! about 1.1x rather than 1.2x (1.07-1.12x with 8 registries, session 31).
//! Edit `SEEDS` to find the edge.
//!
//! Run: `cargo run --release -p cutover --example fixed_key [ROUNDS [one|many]]`

use std::{hint::black_box, time::Instant};

use cutover::{PluginId, Registry, Slot};

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::{plugin, Plugin};

/// Registries (hasher seeds) a round rotates over.
const SEEDS: usize = 8;
/// Lookups per timed pass.
const LOOKUPS: usize = 2_000_000;

fn registry(plugins: usize) -> Registry<String, Plugin> {
    let registry = Registry::new();
    registry
        .extend((0..plugins).map(|i| {
            let id = if plugins == 1 { 1234 } else { i };
            let key = format!("plugin-{id}");
            (key.clone(), Slot::new(PluginId::new(&key), plugin(id as u64)))
        }))
        .expect("distinct keys");
    registry
}

/// ns per lookup over one pass of [`LOOKUPS`] lookups of `key`, rotating
/// over `registries`.
fn pass(registries: &[Registry<String, Plugin>], key: &str) -> f64 {
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..LOOKUPS {
        let registry = &registries[i % registries.len()];
        let lease = registry.lease(black_box(key)).expect("registered key");
        sum = sum.wrapping_add(black_box(&*lease).id);
    }
    black_box(sum);
    start.elapsed().as_nanos() as f64 / LOOKUPS as f64
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(40).max(1);
    let one: Vec<_> = (0..SEEDS).map(|_| registry(1)).collect();
    let many: Vec<_> = (0..SEEDS).map(|_| registry(10_000)).collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    // A third argument, `one` or `many`, times only that set (for a
    // profiler); the ratio then compares it with itself.
    let only = std::env::args().nth(2);
    for _ in 0..rounds {
        if only.as_deref() != Some("many") {
            a.push(pass(&one, "plugin-1234"));
        }
        if only.as_deref() != Some("one") {
            b.push(pass(&many, "plugin-1234"));
        }
    }
    if a.is_empty() {
        a.clone_from(&b);
    } else if b.is_empty() {
        b.clone_from(&a);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };
    let ((a_min, a_med), (b_min, b_med)) = (stats(&mut a), stats(&mut b));
    println!("fixed key, {SEEDS} registries in turn, {rounds} rounds of {LOOKUPS} lookups:");
    println!("  1 plugin:       min {a_min:.1} ns, median {a_med:.1} ns");
    println!("  10,000 plugins: min {b_min:.1} ns, median {b_med:.1} ns");
    println!("  10,000 / 1:     min {:.2}x, median {:.2}x", b_min / a_min, b_med / a_med);
}
