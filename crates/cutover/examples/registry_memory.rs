//! How much memory a registry of many plugins takes: the resident set's
//! growth (Linux `/proc/self/statm`) while `N` plugins (default 10,000) are
//! added, per plugin, with every plugin leased once from each of two
//! threads (so each thread's lease counters are touched, as in service).
//!
//! Run: `cargo run --release -p cutover --example registry_memory [N
//! [STRIPES [RELOADS [dyn]]]]` (STRIPES: the slots' lease counters per
//! record, as `Slot::with_stripes` takes them, `default` or absent for
//! `Slot::new`'s, which grows with the CPUs; RELOADS: how many times each
//! plugin is replaced, each drain awaited, after the leases; default 0;
//! `dyn`: the values are trait objects, `Arc<dyn Any + Send + Sync>`, as
//! plugins usually are, rather than `Arc<u64>`).
//!
//! On glibc it also prints two exact counts (`mallinfo2`), where the
//! resident figure moves by whole pages and with what the threads touch:
//! the growth of the main arena's allocations (chunks with their headers
//! and rounding to the size classes: the slots' shared states, the pages
//! of slot heads, the keys and the values), and of the blocks mapped
//! directly (the record chunks, whose lease counters become resident only
//! when a thread leases through them, and, at this size, the key map's
//! table).
//!
//! The figure includes the keys (`plugin-{i}`, about 32 bytes each with
//! their allocation), the plugin values (8 bytes each, in an `Arc`), the
//! key map and everything cutover keeps per plugin. BENCHMARKS.md (issue 14,
//! item 2) records it.

use std::{any::Any, sync::Arc, thread};

use cutover::{PluginId, Registry, Slot};

/// Resident bytes of this process (Linux), or `None` elsewhere.
fn resident() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Heap bytes in use (glibc): the main arena's allocated chunks (with their
/// headers) and the blocks mapped directly; `None` elsewhere.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap() -> Option<[usize; 2]> {
    // SAFETY: `mallinfo2` only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    Some([info.uordblks, info.hblkhd])
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap() -> Option<[usize; 2]> {
    None
}

/// What registering the plugins grew.
struct Grown {
    resident: usize,
    heap: Option<[usize; 2]>,
}

fn main() {
    let plugins: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(10_000).max(1);
    let stripes: Option<usize> = std::env::args().nth(2).and_then(|n| n.parse().ok());
    let reloads: u64 = std::env::args().nth(3).and_then(|n| n.parse().ok()).unwrap_or(0);
    let fat = std::env::args().nth(4).as_deref() == Some("dyn");
    let Some(Grown { resident: grown, heap }) = (if fat {
        // A trait object, as plugin registries usually hold: a fat value
        // pointer in each generation's record header.
        measure(plugins, stripes, reloads, |n| -> Arc<dyn Any + Send + Sync> { Arc::new(n) })
    } else {
        measure(plugins, stripes, reloads, Arc::new)
    }) else {
        println!("resident memory is only read on Linux (/proc/self/statm)");
        return;
    };
    let stripes = stripes.map_or_else(|| "default".to_owned(), |n| n.to_string());
    let values = if fat { ", dyn values" } else { "" };
    println!(
        "{plugins} plugins ({stripes} stripes, {reloads} reloads each{values}): resident memory grew by {:.2} MB, {} bytes per plugin",
        grown as f64 / 1e6,
        grown / plugins
    );
    if let Some([allocated, mapped]) = heap {
        println!(
            "  allocated (main arena) grew by {:.2} MB, {} bytes per plugin; mapped blocks by {:.2} MB",
            allocated as f64 / 1e6,
            allocated / plugins,
            mapped as f64 / 1e6
        );
    }
}

/// What grew while `plugins` plugins whose values `value` makes are
/// registered, leased from two threads and reloaded `reloads` times.
fn measure<T: ?Sized + Send + Sync + 'static>(
    plugins: usize,
    stripes: Option<usize>,
    reloads: u64,
    value: impl Fn(u64) -> Arc<T>,
) -> Option<Grown> {
    let keys: Vec<String> = (0..plugins).map(|i| format!("plugin-{i}")).collect();
    let slot = |key: &String| match stripes {
        Some(stripes) => Slot::with_stripes(PluginId::new(key), value(0), stripes),
        None => Slot::new(PluginId::new(key), value(0)),
    };
    let before = resident()?;
    let heap_before = heap();
    let registry = Registry::new();
    registry.extend(keys.iter().map(|key| (key.clone(), slot(key)))).expect("distinct keys");
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for key in &keys {
                    assert!(registry.lease(key.as_str()).is_some());
                }
            });
        }
    });
    for reload in 1..=reloads {
        for key in &keys {
            let drain = registry.replace(key.as_str(), value(reload)).expect("the plugin is registered");
            assert!(drain.is_drained(), "nothing is in flight, so the drain is done at once");
        }
    }
    let after = resident().unwrap_or(before);
    let heap = heap().zip(heap_before).map(|(after, before)| [0, 1].map(|i| after[i].saturating_sub(before[i])));
    Some(Grown { resident: after.saturating_sub(before), heap })
}
