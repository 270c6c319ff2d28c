//! A hot reload under load, end to end: callers on several threads keep
//! calling a plugin while it is replaced 1,000 times; every call succeeds,
//! no call that starts after a cutover runs on an older generation, and
//! every retired generation is dropped exactly once, as soon as it drains.
//!
//! Then the same cutover the way the original framework's
//! `EpochFencedReload` protocol does it, for comparison.
//!
//! Run: `cargo run --release -p cutover --example reload`

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Barrier,
    },
    thread,
    time::{Duration, Instant},
};

use cutover::{EpochFencedReload, LifecycleState, PluginId, PluginLifecycle, Slot};

/// A "plugin": a scalar function, versioned.
trait Scalar: Send + Sync {
    fn call(&self, x: i64) -> i64;
    fn version(&self) -> u64;
}

struct Affine {
    version: u64,
    drops: Arc<AtomicUsize>,
}

impl Scalar for Affine {
    fn call(&self, x: i64) -> i64 {
        x * 3 + self.version as i64
    }
    fn version(&self) -> u64 {
        self.version
    }
}

impl Drop for Affine {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() {
    const THREADS: usize = 2;
    const RELOADS: u64 = 1_000;
    let drops = Arc::new(AtomicUsize::new(0));
    let slot: Arc<Slot<dyn Scalar>> =
        Arc::new(Slot::new(PluginId::new("math"), Arc::new(Affine { version: 1, drops: Arc::clone(&drops) })));
    let published = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(THREADS + 1));

    let callers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (slot, published, stop, barrier) =
                (Arc::clone(&slot), Arc::clone(&published), Arc::clone(&stop), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let (mut calls, mut stale) = (0u64, 0u64);
                while !stop.load(Ordering::Acquire) {
                    let floor = published.load(Ordering::Acquire);
                    let plugin = slot.lease();
                    stale += u64::from(plugin.generation() < floor);
                    assert_eq!(plugin.call(1), 3 + plugin.version() as i64);
                    calls += 1;
                }
                (calls, stale)
            })
        })
        .collect();

    barrier.wait();
    let start = Instant::now();
    let mut worst_drain = Duration::ZERO;
    for version in 2..=RELOADS + 1 {
        let drain = slot.replace(Arc::new(Affine { version, drops: Arc::clone(&drops) }));
        published.store(version, Ordering::Release);
        let t = Instant::now();
        drain.wait_timeout(Duration::from_secs(10)).expect("callers never hold a lease for long");
        worst_drain = worst_drain.max(t.elapsed());
        assert_eq!(drain.lifecycle().state(), LifecycleState::Removed);
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Release);
    let (calls, stale) = callers.into_iter().map(|c| c.join().unwrap()).fold((0, 0), |(a, b), (c, s)| (a + c, b + s));

    println!("lease-based cutover: {RELOADS} reloads under {THREADS} calling threads in {elapsed:.2?}");
    println!("  calls: {calls}, failed: 0, stale: {stale}");
    println!("  retired generations dropped: {} of {RELOADS}", drops.load(Ordering::Relaxed));
    println!("  slowest drain notification after cutover: {worst_drain:.2?}");
    assert_eq!(stale, 0);
    assert_eq!(drops.load(Ordering::Relaxed), RELOADS as usize);

    // The original protocol, as `EpochFencedReload` keeps it.
    let old = Arc::new(PluginLifecycle::with_state(PluginId::new("math"), LifecycleState::Active));
    let driver = EpochFencedReload::new(Arc::clone(&old));
    driver.begin_drain().expect("Active → Draining");
    let new = PluginLifecycle::new(PluginId::new("math"));
    while new.advance() != LifecycleState::Active {}
    let t = Instant::now();
    driver.wait_for_drain(2, Duration::from_millis(10), Duration::from_secs(1)).expect("drained");
    driver.finalize();
    println!("EpochFencedReload: old plugin {} after a polled wait of {:.2?}", old.state(), t.elapsed());
}
