//! The floor of a lease (issue 14, item 1): what a lease, its dereference
//! and its release cost on one thread, next to an arc-swap `load()` and to
//! models of the counting alone, in one process.
//!
//! Run with `cargo bench -p cutover --bench lease_floor` (about 20 seconds;
//! `CUTOVER_BENCH_QUICK=1` for a smoke run).
//!
//! Every row runs the same loop: obtain, read the value's `id` through the
//! pointer, release; 10 M times a round, 21 rounds, rows interleaved round
//! by round, the minimum round reported (the steadiest figure of a loop
//! this short on a shared machine). The rows:
//!
//! * **arc-swap `load()` + deref + drop**: the baseline.
//! * **cutover `Slot::lease`**, on the asymmetric-fence path (the default
//!   where available) and on the atomic path (`LeasePath::Atomic`).
//! * **direct call**: a call through a function pointer the compiler cannot
//!   see through, and nothing else: the floor of any indirection.
//! * **Models**, which are *not* lease protocols (no cutover can happen, no
//!   restartable sequence), only their counting on a record reached through
//!   a pointer loaded each time, as a lease reaches its record:
//!   * *plain counters*: the owned path's counting: the record pointer, its
//!     draining byte, a plain load, add and store of the acquisitions, the
//!     value, then the same for the releases (two words, as the owned
//!     counters are);
//!   * *locked counter*: the atomic path's counting: a `lock xadd` up, the
//!     validation load, a `lock xadd` down.
//!
//! The models show where the time goes: the plain counters cost a fraction
//! of an arc-swap load (the store-to-load chain through a counter is
//! renamed away on this CPU: it is not the floor), the locked counter most
//! of one. What a lease costs above the plain model is everything else it
//! does: the thread's counter offset, the restartable sequence's arming
//! store, the path test, the value and generation read, the release's
//! owner test.

use std::{
    hint::black_box,
    ptr::{read_volatile, write_volatile},
    sync::{
        atomic::{compiler_fence, AtomicPtr, AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use arc_swap::ArcSwap;
use cutover::{LeasePath, PluginId, Slot};

#[allow(dead_code)] // the shuffle is for the registry benches
mod common;
use common::{plugin, Plugin};

/// A record of the models: a draining byte and a value pointer in its first
/// line, the counters a line away.
#[repr(C, align(64))]
struct Record {
    draining: u64,
    value: *const Plugin,
    _pad: [u64; 14],
    acquired: u64,
    released: u64,
    shared: AtomicUsize,
}

/// The loop of a cutover row: `n` leases of `slot`, each dereferenced.
fn leases(slot: &Slot<Plugin>) -> impl FnMut(u64) -> u64 + '_ {
    move |n| {
        let mut sum = 0u64;
        for _ in 0..n {
            let lease = slot.lease();
            sum = sum.wrapping_add(black_box(&*lease).id);
        }
        sum
    }
}

/// One row: a name and a loop of `n` operations returning a checksum.
type Row<'a> = (&'static str, Box<dyn FnMut(u64) -> u64 + 'a>);

fn main() {
    let quick = std::env::var_os("CUTOVER_BENCH_QUICK").is_some();
    let (ops, rounds) = if quick { (1_000_000, 3) } else { (10_000_000, 21) };

    let swap = ArcSwap::new(plugin(1));
    let default = Slot::new(PluginId::new("floor"), plugin(1));
    let atomic = Slot::with_lease_path(PluginId::new("floor"), plugin(1), 4, LeasePath::Atomic);
    let value = plugin(1);
    let record = Box::into_raw(Box::new(Record {
        draining: 0,
        value: Arc::as_ptr(&value),
        _pad: [0; 14],
        acquired: 0,
        released: 0,
        shared: AtomicUsize::new(0),
    }));
    // The record pointer and the counters' offset are loaded each time, as
    // a lease loads them (the compiler cannot keep them in registers).
    let current = AtomicPtr::new(record);
    let current: &AtomicPtr<Record> = black_box(&current);
    let direct: fn(&Plugin) -> u64 = black_box(|p: &Plugin| p.id);

    let mut rows: Vec<Row> = vec![
        (
            "arc-swap load() + deref + drop",
            Box::new(|n| {
                let mut sum = 0u64;
                for _ in 0..n {
                    let guard = swap.load();
                    sum = sum.wrapping_add(black_box(&**guard).id);
                }
                sum
            }),
        ),
        ("cutover Slot::lease + deref + drop, default path", Box::new(leases(&default))),
        ("cutover Slot::lease + deref + drop, atomic path", Box::new(leases(&atomic))),
        (
            "direct call (floor)",
            Box::new(|n| {
                let mut sum = 0u64;
                for _ in 0..n {
                    sum = sum.wrapping_add(direct(black_box(&*value)));
                }
                sum
            }),
        ),
        (
            "model: plain counters (the owned path's counting)",
            Box::new(|n| {
                let mut sum = 0u64;
                for _ in 0..n {
                    let r = current.load(Ordering::Acquire);
                    // SAFETY: `r` is the leaked record, alive for the
                    // whole run and only touched by this thread.
                    unsafe {
                        if read_volatile(&(*r).draining) != 0 {
                            continue;
                        }
                        write_volatile(&mut (*r).acquired, read_volatile(&(*r).acquired) + 1);
                        compiler_fence(Ordering::SeqCst);
                        sum = sum.wrapping_add(black_box(&*(*r).value).id);
                        compiler_fence(Ordering::SeqCst);
                        if read_volatile(&(*r).draining) != 0 {
                            continue;
                        }
                        write_volatile(&mut (*r).released, read_volatile(&(*r).released) + 1);
                    }
                }
                sum
            }),
        ),
        (
            "model: locked counter (the atomic path's counting)",
            Box::new(|n| {
                let mut sum = 0u64;
                for _ in 0..n {
                    let r = current.load(Ordering::Acquire);
                    // SAFETY: as above.
                    unsafe {
                        (*r).shared.fetch_add(1, Ordering::SeqCst);
                        if current.load(Ordering::SeqCst) != r {
                            continue;
                        }
                        sum = sum.wrapping_add(black_box(&*(*r).value).id);
                        (*r).shared.fetch_sub(1, Ordering::Release);
                    }
                }
                sum
            }),
        ),
    ];

    println!("lease floor: {ops} operations a round, {rounds} rounds, rows interleaved; minimum round, ns/op");
    println!("default lease path: {:?}", default.lease_path());
    let mut best = vec![f64::MAX; rows.len()];
    for _ in 0..rounds {
        for (i, (_, run)) in rows.iter_mut().enumerate() {
            let start = Instant::now();
            black_box(run(ops));
            best[i] = best[i].min(start.elapsed().as_nanos() as f64 / ops as f64);
        }
    }
    let baseline = best[0];
    println!("| row | ns/op | / arc-swap |");
    println!("|---|---:|---:|");
    for ((name, _), ns) in rows.iter().zip(&best) {
        println!("| {name} | {ns:.2} | {:.2}× |", ns / baseline);
    }
    drop(rows);
    // SAFETY: allocated above with `Box::new`; no row runs any more.
    drop(unsafe { Box::from_raw(record) });
}
