//! The instance pool of one generation.
//!
//! wasmtime `Store`s are single-threaded (`&mut` to call), so each call checks
//! an instance (its own `Store` + `Instance` + cached typed functions) out of
//! the pool, runs on it without any lock held, and checks it back in.
//!
//! The free list is sharded: one small `Mutex<Vec<_>>` per available core,
//! each thread preferring its own shard (assigned round-robin on the thread's
//! first call). A lock is held only to pop or push one pointer, never during
//! a call, so concurrent calls do not serialize. When a thread's shard is
//! empty it steals from the others (`try_lock`, skipping busy ones), and only
//! when every shard is empty does the caller create a new instance.
//!
//! An instance whose call trapped, timed out or was interrupted is dropped,
//! never checked back in; so is any instance beyond `max_idle_instances`, or
//! checked in after the generation shut down.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A sharded free list of `T`.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    shards: Box<[Mutex<Vec<T>>]>,
    idle: AtomicUsize,
    max_idle: usize,
    closed: AtomicBool,
}

fn shard_hint() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static HINT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    HINT.with(|h| *h)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a Vec half-updated in a way
    // that matters here; keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Pool<T> {
    /// A pool with `shards` shards (at least 1) keeping at most `max_idle` items.
    pub(crate) fn new(shards: usize, max_idle: usize) -> Self {
        let shards = (0..shards.max(1)).map(|_| Mutex::new(Vec::new())).collect();
        Self { shards, idle: AtomicUsize::new(0), max_idle, closed: AtomicBool::new(false) }
    }

    fn own(&self) -> usize {
        shard_hint() % self.shards.len()
    }

    /// Take an idle item, preferring this thread's shard.
    pub(crate) fn checkout(&self) -> Option<T> {
        let own = self.own();
        if let Some(item) = lock(&self.shards[own]).pop() {
            self.idle.fetch_sub(1, Ordering::Relaxed);
            return Some(item);
        }
        let n = self.shards.len();
        for k in 1..n {
            let shard = &self.shards[(own + k) % n];
            let popped = match shard.try_lock() {
                Ok(mut v) => v.pop(),
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().pop(),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(item) = popped {
                self.idle.fetch_sub(1, Ordering::Relaxed);
                return Some(item);
            }
        }
        None
    }

    /// Return an item to this thread's shard (dropped if the pool is full or closed).
    pub(crate) fn checkin(&self, item: T) {
        self.put(self.own(), item);
    }

    /// Add an item to shard `index % shards` (prewarming spreads over shards).
    pub(crate) fn put(&self, index: usize, item: T) {
        if self.closed.load(Ordering::Acquire) || self.idle.load(Ordering::Relaxed) >= self.max_idle {
            return;
        }
        self.idle.fetch_add(1, Ordering::Relaxed);
        lock(&self.shards[index % self.shards.len()]).push(item);
        if self.closed.load(Ordering::Acquire) {
            self.clear();
        }
    }

    /// Close the pool and drop every idle item.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.clear();
    }

    fn clear(&self) {
        for shard in self.shards.iter() {
            let drained: Vec<T> = std::mem::take(&mut *lock(shard));
            self.idle.fetch_sub(drained.len(), Ordering::Relaxed);
            drop(drained);
        }
    }

    /// Idle items right now.
    pub(crate) fn idle(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    /// Number of shards.
    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }
}
