//! A profiling target: the benchmark's fixed-key registry rows, alone.
//!
//! Builds 8 registries of 1 plugin and as many of 10,000 plugins (as
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
//! prefetches its first probe (session 30), the edge is at 7-8 registries
//! and the step past it about 1.1x rather than 1.2x (1.06-1.13x; with 8
//! registries 1.00-1.12x, session 31); through a reader, at 8-9.
//!
//! Session 34 counted what a round touches (`scripts/lookup-pages`): over 8
//! registries, 86 distinct pages and 110 lines with 10,000 plugins each,
//! against 12 pages and 95 lines with 1 plugin each (the stack left out).
//! The lines fit the first-level cache either way; the pages do not fit the
//! first-level TLB (72 entries on this CPU, an AMD Zen 4): the edge is the
//! TLB's. About 10 pages per lookup, 4 of them the key map's lease (its
//! head, record, counter and the map), reached one after another. Since
//! `Registry::lease` prefetches the record and the map from a hint before
//! hashing, the step past the edge is 1.07-1.08x (from 1.13-1.15x), with 8
//! to 12 registries alike.
//!
//! Run: `cargo run --release -p cutover --example fixed_key [ROUNDS] [one|many]
//! [registries=N] [reader] [trace]`: ROUNDS timed passes of each set (default 40);
//! `one` or `many` times only that set (for a profiler); `registries=N`
//! rotates over N registries of each size instead of 8, to find the edge;
//! `reader` looks up through a `RegistryReader` of each registry instead of
//! `Registry::lease` (no key-map lease per lookup, so fewer lines and pages
//! per lookup, and the edge further out). `trace` runs one round of the
//! `many` set (or `one`) between two marker stores, for
//! `scripts/lookup-pages`, which counts the pages and lines a round touches
//! under valgrind.

use std::{
    hash::RandomState,
    hint::black_box,
    io::Write,
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use cutover::{PluginId, Registry, RegistryReader, Slot};

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;
use common::{plugin, Plugin};

/// Registries (hasher seeds) a round rotates over, unless `registries=N`
/// says otherwise.
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

/// ns per lookup over one pass of `lookups` lookups of `key`, rotating
/// over `registries`, through `Registry::lease` or (with `readers`) a
/// `RegistryReader` of each.
fn pass(
    registries: &[Registry<String, Plugin>],
    readers: Option<&mut [RegistryReader<'_, String, Plugin, RandomState>]>,
    key: &str,
    lookups: usize,
) -> f64 {
    let start = Instant::now();
    let mut sum = 0u64;
    match readers {
        None => {
            for i in 0..lookups {
                let registry = &registries[i % registries.len()];
                let lease = registry.lease(black_box(key)).expect("registered key");
                sum = sum.wrapping_add(black_box(&*lease).id);
            }
        }
        Some(readers) => {
            for i in 0..lookups {
                let n = readers.len();
                let lease = readers[i % n].lease(black_box(key)).expect("registered key");
                sum = sum.wrapping_add(black_box(&*lease).id);
            }
        }
    }
    black_box(sum);
    start.elapsed().as_nanos() as f64 / lookups as f64
}

/// Written just before and just after the traced round (`trace`), so that
/// `scripts/lookup-pages` finds the round's accesses in valgrind's trace.
static MARKER: AtomicUsize = AtomicUsize::new(0);

/// `trace`: one warm round of lookups (one per registry) of the `only` set
/// between two stores to [`MARKER`], whose address goes to stderr first, in
/// one write, among valgrind's lines.
fn trace(
    registries: &[Registry<String, Plugin>],
    mut readers: Option<Vec<RegistryReader<'_, String, Plugin, RandomState>>>,
) {
    let round = registries.len();
    pass(registries, readers.as_deref_mut(), "plugin-1234", 3 * round);
    let line = format!("\nMARKER {:x}\n", std::ptr::addr_of!(MARKER).addr());
    std::io::stderr().write_all(line.as_bytes()).expect("stderr");
    MARKER.store(black_box(1), Ordering::Relaxed);
    pass(registries, readers.as_deref_mut(), "plugin-1234", round);
    MARKER.store(black_box(2), Ordering::Relaxed);
}

/// One reader of each registry, if `wanted`.
fn readers(
    registries: &[Registry<String, Plugin>],
    wanted: bool,
) -> Option<Vec<RegistryReader<'_, String, Plugin, RandomState>>> {
    wanted.then(|| registries.iter().map(Registry::reader).collect())
}

fn main() {
    let mut rounds = 40;
    let (mut only, mut registries, mut through_readers, mut traced) = (None, SEEDS, false, false);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "one" | "many" => only = Some(arg),
            "reader" => through_readers = true,
            "trace" => traced = true,
            _ => match (arg.strip_prefix("registries="), arg.parse::<usize>()) {
                (Some(n), _) => registries = n.parse::<usize>().expect("registries=N takes a number").max(1),
                (None, Ok(n)) => rounds = n.max(1),
                _ => panic!("unknown argument {arg:?}: see the example's docs"),
            },
        }
    }
    if traced {
        let set: Vec<_> =
            (0..registries).map(|_| registry(if only.as_deref() == Some("one") { 1 } else { 10_000 })).collect();
        return trace(&set, readers(&set, through_readers));
    }
    let one: Vec<_> = (0..registries).map(|_| registry(1)).collect();
    let many: Vec<_> = (0..registries).map(|_| registry(10_000)).collect();
    let (mut one_readers, mut many_readers) = (readers(&one, through_readers), readers(&many, through_readers));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    // `one` or `many` times only that set (for a profiler); the ratio then
    // compares it with itself.
    for _ in 0..rounds {
        if only.as_deref() != Some("many") {
            a.push(pass(&one, one_readers.as_deref_mut(), "plugin-1234", LOOKUPS));
        }
        if only.as_deref() != Some("one") {
            b.push(pass(&many, many_readers.as_deref_mut(), "plugin-1234", LOOKUPS));
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
    let how = if through_readers { "RegistryReader::lease" } else { "Registry::lease" };
    println!("fixed key through {how}, {registries} registries in turn, {rounds} rounds of {LOOKUPS} lookups:");
    println!("  1 plugin:       min {a_min:.1} ns, median {a_med:.1} ns");
    println!("  10,000 plugins: min {b_min:.1} ns, median {b_med:.1} ns");
    println!("  10,000 / 1:     min {:.2}x, median {:.2}x", b_min / a_min, b_med / a_med);
}
