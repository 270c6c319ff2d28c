//! A registry lookup never frees anything: not an old key map, not the
//! entries in it (issue 12, item 3). Checked with a counting allocator, in a
//! test binary of its own.
#![cfg(not(loom))]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    hash::{Hash, Hasher},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread,
};

use cutover::{PluginId, Registry};

thread_local! {
    /// Set while this thread is inside `Registry::lease`.
    static IN_LOOKUP: Cell<bool> = const { Cell::new(false) };
    /// Run once by the next hash of a `Key` on this thread.
    static DURING_HASH: Cell<Option<Box<dyn FnOnce()>>> = const { Cell::new(None) };
}

/// Deallocations made while `IN_LOOKUP` was set.
static FREED_IN_LOOKUP: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if IN_LOOKUP.try_with(Cell::get).unwrap_or(false) {
            FREED_IN_LOOKUP.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A key whose hashing can run a hook, to pause a lookup mid-way.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Key(&'static str);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if let Some(hook) = DURING_HASH.with(Cell::take) {
            IN_LOOKUP.with(|f| f.set(false));
            hook();
            IN_LOOKUP.with(|f| f.set(true));
        }
        self.0.hash(state);
    }
}

/// Before the fix, a lookup that held the key map while a change replaced
/// it ended that map's drain when it let go: it freed the old map (and the
/// entries only it still held) on the caller's thread.
#[test]
fn a_lookup_racing_a_change_frees_no_key_map() {
    let registry: Arc<Registry<Key, u64>> = Arc::new(Registry::new());
    registry.add(Key("a"), PluginId::new("a"), Arc::new(1)).unwrap();
    let (change, changes) = mpsc::channel::<mpsc::Sender<()>>();
    let writer = {
        let registry = Arc::clone(&registry);
        thread::spawn(move || {
            // Each request: change the registry (a new key map) while the
            // lookup that asked holds the old one.
            for (key, done) in ["b", "c"].into_iter().cycle().zip(changes) {
                registry.add(Key(key), PluginId::new(key), Arc::new(2)).unwrap();
                let removed = registry.remove(&Key(key)).unwrap();
                removed.wait();
                done.send(()).unwrap();
            }
        })
    };
    for _ in 0..if cfg!(miri) { 2 } else { 20 } {
        let change = change.clone();
        DURING_HASH.with(|h| {
            h.set(Some(Box::new(move || {
                let (done, wait) = mpsc::channel();
                change.send(done).unwrap();
                wait.recv().unwrap();
            })))
        });
        let before = FREED_IN_LOOKUP.load(Ordering::SeqCst);
        IN_LOOKUP.with(|f| f.set(true));
        let lease = registry.lease(&Key("a"));
        IN_LOOKUP.with(|f| f.set(false));
        assert_eq!(lease.as_deref(), Some(&1));
        assert_eq!(FREED_IN_LOOKUP.load(Ordering::SeqCst), before, "the lookup freed memory (an old key map)");
    }
    drop(change);
    writer.join().unwrap();
    // The old maps were freed by the writer side: by the next change, or now.
    assert_eq!(registry.len(), 1);
}

/// A reader that finds the key map replaced drops its lease of the old one
/// and leases the new one: that refresh frees nothing either, even when the
/// reader held the old map's last lease (issue 14, item 2).
#[test]
fn a_reader_refreshing_after_a_change_frees_no_key_map() {
    let registry: Registry<Key, u64> = Registry::new();
    registry.add(Key("a"), PluginId::new("a"), Arc::new(1)).unwrap();
    let mut reader = registry.reader();
    for (round, key) in ["b", "c"].into_iter().cycle().take(if cfg!(miri) { 2 } else { 20 }).enumerate() {
        // The reader holds the current key map; two changes retire it (and
        // the map between), so the reader holds the only lease of its map.
        registry.add(Key(key), PluginId::new(key), Arc::new(2)).unwrap();
        registry.remove(&Key(key)).unwrap().wait();
        let before = FREED_IN_LOOKUP.load(Ordering::SeqCst);
        IN_LOOKUP.with(|f| f.set(true));
        let lease = reader.lease(&Key("a"));
        let missing = reader.lease(&Key(key));
        IN_LOOKUP.with(|f| f.set(false));
        assert_eq!(lease.as_deref(), Some(&1));
        assert!(missing.is_none(), "round {round}: a removed key was found");
        assert_eq!(FREED_IN_LOOKUP.load(Ordering::SeqCst), before, "round {round}: the refresh freed memory");
    }
    drop(reader);
    assert_eq!(registry.len(), 1);
}
