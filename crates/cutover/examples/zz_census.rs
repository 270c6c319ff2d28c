//! scratch
use cutover::{PluginId, Registry, Slot};
use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        atomic::{AtomicBool, AtomicIsize, Ordering},
        Arc,
    },
};
extern "C" {
    fn malloc_usable_size(p: *mut u8) -> usize;
}
struct Census;
static ON: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static BIG: AtomicIsize = AtomicIsize::new(0);
unsafe impl GlobalAlloc for Census {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if ON.load(Ordering::Relaxed) {
            let u = unsafe { malloc_usable_size(p) } as isize + 8;
            if l.size() >= 4096 {
                BIG.fetch_add(u, Ordering::Relaxed);
            } else {
                LIVE.fetch_add(u, Ordering::Relaxed);
            }
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if ON.load(Ordering::Relaxed) {
            let u = unsafe { malloc_usable_size(p) } as isize + 8;
            if l.size() >= 4096 {
                BIG.fetch_add(u, Ordering::Relaxed);
            } else {
                LIVE.fetch_add(u, Ordering::Relaxed);
            }
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if ON.load(Ordering::Relaxed) {
            let u = unsafe { malloc_usable_size(p) } as isize + 8;
            if l.size() >= 4096 {
                BIG.fetch_sub(u, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(u, Ordering::Relaxed);
            }
        }
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static A: Census = Census;
fn resident() -> usize {
    std::fs::read_to_string("/proc/self/statm").unwrap().split_whitespace().nth(1).unwrap().parse::<usize>().unwrap()
        * 4096
}
fn main() {
    let n = 10_000;
    let keys: Vec<String> = (0..n).map(|i| format!("plugin-{i}")).collect();
    let before = resident();
    ON.store(true, Ordering::SeqCst);
    let registry = Registry::new();
    registry.extend(keys.iter().map(|key| (key.clone(), Slot::new(PluginId::new(key), Arc::new(0u64))))).unwrap();
    let mid = resident();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for k in &keys {
                    assert!(registry.lease(k.as_str()).is_some());
                }
            });
        }
    });
    ON.store(false, Ordering::SeqCst);
    let after = resident();
    println!(
        "small live {} B/plugin, big live {} B/plugin; rss after extend {} B/plugin, after leases {} B/plugin",
        LIVE.load(Ordering::SeqCst) / n as isize,
        BIG.load(Ordering::SeqCst) / n as isize,
        (mid - before) / n,
        (after - before) / n
    );
}
