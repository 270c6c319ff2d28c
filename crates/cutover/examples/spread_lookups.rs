//! A profiling target: registry lookups spread over many plugins.
//!
//! Builds a [`Registry`] of `N` plugins (default 10,000, as in the benchmark)
//! and looks them all up in a shuffled order, many times; prints the cost
//! per lookup + lease. Run it under a sampling profiler to see where a
//! spread-key lookup spends its time (BENCHMARKS.md, "Issue 14, item 2,
//! session 21"):
//!
//! ```text
//! cargo build --release -p cutover --example spread_lookups
//! perf record -e cpu-clock -F 10000 target/release/examples/spread_lookups
//! perf report --no-children
//! ```
//!
//! Run: `cargo run --release -p cutover --example spread_lookups [N] [reader]`
//! (`reader`: look up through a [`RegistryReader`](cutover::RegistryReader)
//! instead of [`Registry::lease`]).

use std::{hint::black_box, sync::Arc, time::Instant};

use cutover::{PluginId, Registry, Slot};

// The benchmarks' key shuffle, so that this profiles the lookup order of
// their spread-key rows (the module's plugin value is theirs, unused here).
#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::shuffle;

struct Plugin {
    id: u64,
}

fn main() {
    let plugins: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(10_000).max(1);
    let through_reader = std::env::args().nth(2).is_some_and(|a| a == "reader");
    let registry = Registry::new();
    registry
        .extend((0..plugins).map(|i| {
            let key = format!("plugin-{i}");
            let slot = Slot::new(PluginId::new(&key), Arc::new(Plugin { id: i as u64 }));
            (key, slot)
        }))
        .expect("distinct keys");
    // Every key once per pass, in a fixed shuffled order.
    let mut keys: Vec<String> = (0..plugins).map(|i| format!("plugin-{i}")).collect();
    shuffle(&mut keys);
    let passes = (20_000_000 / plugins).max(1);
    let start = Instant::now();
    let mut sum = 0u64;
    if through_reader {
        let mut reader = registry.reader();
        for _ in 0..passes {
            for key in &keys {
                let lease = reader.lease(key.as_str()).expect("every key is registered");
                sum = sum.wrapping_add(black_box(&*lease).id);
            }
        }
    } else {
        for _ in 0..passes {
            for key in &keys {
                let lease = registry.lease(key.as_str()).expect("every key is registered");
                sum = sum.wrapping_add(black_box(&*lease).id);
            }
        }
    }
    let per_lookup = start.elapsed().as_nanos() as f64 / (passes * plugins) as f64;
    black_box(sum);
    let how = if through_reader { "RegistryReader::lease" } else { "Registry::lease" };
    println!("{plugins} plugins, {} lookups through {how}: {per_lookup:.1} ns per lookup + lease", passes * plugins);
}
