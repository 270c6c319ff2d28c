//! [`Registry`]: many slots by key, with lookup and lease on the per-call path.
//!
//! # Memory layout
//!
//! A lookup leases the key map (one slot, hot in every thread's cache), finds
//! the key's entry and leases that plugin's slot. With many plugins and
//! lookups spread over them, each step after the hash bucket is a cache (and
//! often TLB) miss, so what the per-call path costs is how many lines it
//! touches, and how far apart they are:
//!
//! * an entry is 24 bytes (a bucket with a `String` key: 48): a pointer
//!   straight to the slot's *head* (the current record pointer and what a
//!   lease reads with it), which also keeps the slot alive, and a prefetch
//!   hint;
//! * heads and generation records are not allocations of their own but
//!   32-byte cells in chunks shared by all slots (see the `record` and
//!   `chunk` modules): the heads of a registry built at once are one dense
//!   array, so are its records' headers, and so are a thread's lease
//!   counters of every plugin, so a lookup's lease touches the head's line,
//!   the header's, a counter that is usually cached, and the value;
//! * the key map holds its own copies of the keys, made together when the
//!   map is built, so they are dense too;
//! * a lookup hashes its key with the registry's hasher (the one every key
//!   map is built with: maps keep none of their own) *before* it leases
//!   the key map, so the hash (SipHash by default: many instructions, all
//!   dependent on one another) is computed while the lease's loads are in
//!   flight, instead of after them; and from the hash and a *probe hint* (where
//!   the current key map's table is, kept by the registry's writers) it
//!   starts fetching the control bytes and the bucket its first probe will
//!   read, so these two misses overlap each other and the key map's lease
//!   instead of following them;
//! * before it even hashes, [`Registry::lease`] starts fetching the lines
//!   its lease of the key map will read after the head (the map's current
//!   record and the map itself), from the key-map slot's prefetch hint,
//!   which the probe hint keeps: each is on a page of its own in every
//!   registry, so with several large registries in turn each was a
//!   first-level TLB miss, one after the other along the lease's chain of
//!   loads; now they overlap (a [`RegistryReader`], which keeps the key
//!   map's lease, skips both the lease and this prefetch);
//! * the key map is a `hashbrown` table whose probe hands each candidate
//!   entry to the lookup before it compares the key: the lookup prefetches
//!   the entry's head and the lines its hint names then, so the misses on
//!   the key and on the slot overlap instead of following one another;
//! * the prefetch hint says where its slot's current record, this thread's
//!   counter in it and the value were when the entry was made. A hint is
//!   only a prefetch address, never dereferenced: after a
//!   [`replace`](Registry::replace) it may point at the previous generation
//!   (a wasted prefetch, no error); every `add`/`extend`/`remove`, which
//!   copies the key map anyway, refreshes the hints of every entry.
//!
//! What this leaves, measured (BENCHMARKS.md, issue 14, item 2): a lookup of
//! a fixed key costs about the same with 10,000 plugins as with one
//! (1.00–1.07× with up to 7 such registries in turn; 1.05–1.09× with 8 to
//! 12, where the pages a round of lookups touches outnumber the first-level
//! TLB's entries, on both lease paths: 1.13–1.18× before the key map's
//! lines were prefetched, about 1.2× before the first probe was; see the
//! `fixed_key` example); lookups spread over 10,000 plugins cost
//! 0.83–0.85× those of a map of `ArcSwap`s through [`Registry::lease`] and
//! 0.77–0.80× through a [`RegistryReader`], which keeps the key map's lease
//! between lookups (the `registry_floor` benchmark's minimum, on the
//! default lease path; 0.88–0.90× and 0.84–0.85× on the atomic path;
//! 3.2–4.5× when each slot and record was an allocation of its own). A
//! registry of 10,000 plugins, each leased from two threads, takes
//! 4.2–4.3 MB: 419–432 bytes per plugin, 64 of them the caller's key and
//! value; a plugin's only allocation of cutover's own is its slot's shared
//! state (64 bytes with the allocator's header), the rest being cells of
//! the chunks and the key map's bucket (the `registry_memory` example).
//! The `registry_floor` benchmark compares the registry with models of the
//! layouts; the model that reaches the map of `ArcSwap`s differs from the
//! registry in where the plugin values are (next to their keys, fetched
//! with them, as in the map of `ArcSwap`s) and in taking no key-map lease.

use std::{
    borrow::Borrow,
    fmt,
    hash::{BuildHasher, Hash, RandomState},
    sync::Arc,
};

use hashbrown::{hash_table, HashTable};

use crate::{
    slot::{CutoverBatch, Drain, Finalize, Lease, Slot},
    sync::{lock, Mutex},
    PluginId, SharedLifecycle,
};

/// Why a registry change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No plugin is registered under the key.
    #[error("no plugin is registered under {key}: add it first, or check the name")]
    NotFound {
        /// The key, as `Debug` prints it.
        key: String,
    },
    /// A plugin is already registered under the key.
    #[error("a plugin is already registered under {key}: replace it, or remove it first")]
    AlreadyExists {
        /// The key, as `Debug` prints it.
        key: String,
    },
}

mod key_map;
mod reader;

use key_map::{Entry, KeyMap, ProbeHint};
pub use reader::RegistryReader;

/// Many hot-swappable plugins by key (a plugin id, a function name...).
///
/// The per-call path, [`Registry::lease`], takes a lease on the current
/// key map (itself a [`Slot`], replaced copy-on-write by `add`/`remove`),
/// looks the key up and leases that plugin's slot: no lock, and no shared
/// cache line written, however many threads call. A thread that looks up
/// in a loop can keep the key map's lease between calls with a
/// [`reader`](Self::reader).
///
/// * [`add`](Self::add) makes a new plugin visible to every lookup that starts
///   after it returns.
/// * [`replace`](Self::replace) is [`Slot::replace`] on one entry;
///   [`replace_many`](Self::replace_many) is that on many, their drains
///   started together (one barrier on the asymmetric-fence lease path).
/// * [`remove`](Self::remove) unlinks the entry and retires its current
///   generation: lookups starting after it returns find nothing; the
///   returned [`Drain`] completes when the operations in flight end.
///
/// Changes to the key map are serialized by a lock; lookups never take it.
/// `add` and `remove` copy the key map (O(n)), so load many plugins at once
/// with [`extend`](Self::extend).
///
/// # What runs where
///
/// * A lookup ([`lease`](Self::lease), and every other read) never drops a
///   plugin value, runs a drain callback or frees a key map: an old key map
///   whose last reader was a lookup is freed by the next change to the
///   registry (or by its drop), on that thread.
/// * A change never drops a plugin value, a slot or a key map while holding
///   the registry's lock, so a plugin whose `Drop` adds, replaces or removes
///   plugins in the same registry does not deadlock. (A value is dropped on
///   the thread that ends its drain: the caller of `replace`/`remove` when
///   nothing is in flight, else the last lease's drop.)
///
/// ```
/// use std::sync::Arc;
/// use cutover::{PluginId, Registry};
///
/// let registry: Registry<String, dyn Fn(i64) -> i64 + Send + Sync> = Registry::new();
/// registry.add("double".to_string(), PluginId::new("double"), Arc::new(|x| x * 2)).unwrap();
/// assert_eq!(registry.lease("double").map(|f| f(21)), Some(42));
/// registry.replace("double", Arc::new(|x| x + x + 1)).unwrap();
/// assert_eq!(registry.lease("double").map(|f| f(21)), Some(43));
/// registry.remove("double").unwrap().wait();
/// assert!(registry.lease("double").is_none());
/// ```
pub struct Registry<K, T: ?Sized + Send + Sync + 'static, S = RandomState>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    map: Slot<KeyMap<K, T>>,
    /// The hasher of every key map: kept here, not in the maps, so that a
    /// lookup hashes its key before it leases the key map (see
    /// [`Registry::lease`]).
    hasher: S,
    /// Where the current key map's table is, for the prefetch of a lookup's
    /// first probe (see [`ProbeHint`]).
    probe: ProbeHint,
    write: Mutex<()>,
}

impl<K, T> Registry<K, T>
where
    K: Eq + Hash + Clone + fmt::Debug + Send + Sync + 'static,
    T: ?Sized + Send + Sync + 'static,
{
    /// An empty registry.
    pub fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }
}

impl<K, T> Default for Registry<K, T>
where
    K: Eq + Hash + Clone + fmt::Debug + Send + Sync + 'static,
    T: ?Sized + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, T, S> Registry<K, T, S>
where
    K: Eq + Hash + Clone + fmt::Debug + Send + Sync + 'static,
    T: ?Sized + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// An empty registry hashing keys with `hasher` (the one instance, for
    /// every key map the registry publishes: it is never cloned).
    pub fn with_hasher(hasher: S) -> Self {
        Self {
            map: Slot::with_deferred_completion(PluginId::new("cutover.registry"), Arc::new(KeyMap::with_capacity(0))),
            hasher,
            probe: ProbeHint::default(),
            write: Mutex::new(()),
        }
    }

    /// Lease the plugin registered under `key`: the per-call path. `None` if
    /// there is none. Lock-free; never drops a value, runs a callback or
    /// frees a key map (see [`Slot::lease`] and, on this type, "What runs
    /// where").
    #[inline]
    pub fn lease<Q>(&self, key: &Q) -> Option<Lease<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // The key map's record and map, fetched before the hash (see
        // "Memory layout" in the module docs).
        self.probe.prefetch_map();
        let hash = self.hash_and_prefetch(key);
        self.map.lease().lease(hash, key)
    }

    /// The start of every lookup ([`lease`](Self::lease), a reader's): the
    /// key's hash, and the prefetch of the lines the table's first probe
    /// will read. Before the key map is leased (or checked current): the
    /// hash needs only the key and the registry's hasher, so the processor
    /// computes it while the key map's lease is still loading (a hasher
    /// kept in the map would wait for the map's address), and
    /// the prefetch needs only the hash (see "Memory layout" in the module
    /// docs).
    #[inline(always)]
    fn hash_and_prefetch<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        let hash = self.hasher.hash_one(key);
        self.probe.prefetch::<K, T>(hash);
        hash
    }

    /// Lookups for one thread's loop: a [`RegistryReader`] keeps the key
    /// map's lease from one lookup to the next, checking with one load that
    /// no change replaced it, so a lookup costs the plugin's lease and the
    /// hash probe only (BENCHMARKS.md, issue 14, item 2).
    pub fn reader(&self) -> RegistryReader<'_, K, T, S> {
        RegistryReader::new(self)
    }

    /// Whether a plugin is registered under `key`.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.lease().contains_key(&self.hasher, key)
    }

    /// The current generation of the plugin under `key`.
    pub fn generation<Q>(&self, key: &Q) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.lease().get(&self.hasher, key).and_then(|slot| slot.try_generation())
    }

    /// The current generation's lifecycle of the plugin under `key`.
    pub fn lifecycle<Q>(&self, key: &Q) -> Option<SharedLifecycle>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.lease().get(&self.hasher, key).and_then(|slot| slot.try_lifecycle())
    }

    /// Turn straggler tracking on or off for every plugin registered now
    /// (see [`Slot::set_tracking`]; plugins added later start with it off).
    pub fn set_tracking(&self, on: bool) {
        self.map.lease().values().for_each(|slot| slot.set_tracking(on));
    }

    /// The registered keys, in no particular order.
    pub fn keys(&self) -> Vec<K> {
        self.map.lease().keys().cloned().collect()
    }

    /// How many plugins are registered.
    pub fn len(&self) -> usize {
        self.map.lease().len()
    }

    /// Whether no plugin is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Register `value` under `key` as generation 1 of plugin `id`.
    ///
    /// # Errors
    /// [`RegistryError::AlreadyExists`] if `key` is taken; nothing changes.
    pub fn add(&self, key: K, id: PluginId, value: Arc<T>) -> Result<(), RegistryError> {
        self.add_slot(key, Slot::new(id, value))
    }

    /// Register a slot built by the caller (e.g. with a supplied lifecycle).
    ///
    /// # Errors
    /// [`RegistryError::AlreadyExists`] if `key` is taken; nothing changes
    /// (the slot is dropped, retiring its value).
    pub fn add_slot(&self, key: K, slot: Slot<T>) -> Result<(), RegistryError> {
        self.extend([(key, slot)])
    }

    /// Register many plugins in one cutover of the key map.
    ///
    /// # Errors
    /// [`RegistryError::AlreadyExists`] naming the first key that is taken
    /// (or repeated); nothing changes.
    pub fn extend(&self, entries: impl IntoIterator<Item = (K, Slot<T>)>) -> Result<(), RegistryError> {
        // Collected before the lock: the iterator is the caller's code.
        let incoming: Vec<(K, Slot<T>)> = entries.into_iter().collect();
        let replaced = {
            let _write = lock(&self.write);
            let current = self.map.current();
            // Repeats within the batch are found with a set (hashing with
            // the registry's hasher), so a batch of n costs O(n), not O(n²);
            // each key is hashed once, for the set and the key map.
            let taken = {
                let mut seen = HashTable::<&K>::with_capacity(incoming.len());
                incoming.iter().find(|(key, _)| {
                    let hash = self.hasher.hash_one(key);
                    let repeated = match seen.entry(hash, |seen| *seen == key, |seen| self.hasher.hash_one(seen)) {
                        hash_table::Entry::Occupied(_) => true,
                        hash_table::Entry::Vacant(vacant) => {
                            vacant.insert(key);
                            false
                        }
                    };
                    repeated || current.find(hash, key).is_some()
                })
            };
            if let Some((key, _)) = taken {
                let err = RegistryError::AlreadyExists { key: format!("{key:?}") };
                drop(_write);
                // The refused slots (and their values) go after the lock.
                drop(incoming);
                return Err(err);
            }
            let mut next = current.copy(&self.hasher, incoming.len());
            for (key, slot) in incoming {
                next.insert_new(&self.hasher, key, Entry::new(slot));
            }
            (self.publish(next), current)
        };
        self.after_change(replaced);
        Ok(())
    }

    /// Publish `next` as the key map (under the registry's lock) and point
    /// the probe hint at it; returns the old map's drain.
    fn publish(&self, next: KeyMap<K, T>) -> Drain {
        let next = Arc::new(next);
        let drain = self.map.replace(Arc::clone(&next));
        self.probe.set(&next, self.map.hint());
        drain
    }

    /// The end of every change, after the registry's lock is released: drop
    /// what the change replaced (the old key map's drain handle and our
    /// reference to it) and complete the old key maps whose last reader was a
    /// lookup.
    fn after_change(&self, replaced: impl Sized) {
        drop(replaced);
        self.map.run_deferred();
    }

    /// Cut the plugin under `key` over to `value`; see [`Slot::replace`].
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] if nothing is registered under `key`.
    pub fn replace<Q>(&self, key: &Q, value: Arc<T>) -> Result<Drain, RegistryError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + fmt::Debug + ?Sized,
    {
        self.with_slot(key, |slot| slot.try_replace(value, None, Finalize::OnDrain))
    }

    /// Like [`replace`](Self::replace), with the new generation's lifecycle
    /// and the old one's finalization; see [`Slot::replace_with`].
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] if nothing is registered under `key`.
    pub fn replace_with<Q>(
        &self,
        key: &Q,
        value: Arc<T>,
        lifecycle: SharedLifecycle,
        finalize: Finalize,
    ) -> Result<Drain, RegistryError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + fmt::Debug + ?Sized,
    {
        self.with_slot(key, |slot| slot.try_replace(value, Some(lifecycle), finalize))
    }

    /// Cut several plugins over at once: each entry as
    /// [`replace`](Self::replace) would, in order, with the drains of all of
    /// them started together.
    ///
    /// On the asymmetric-fence lease path ([`LeasePath::AsymmetricFence`](crate::LeasePath::AsymmetricFence))
    /// every cutover pays one process-wide barrier (`membarrier`, some
    /// microseconds, and an interrupt to every CPU running one of the
    /// process's threads); here up to 256 of them share one, so reloading
    /// many plugins costs a barrier per 256 instead of one each
    /// (BENCHMARKS.md, issue 14, item 3). On the atomic path this is exactly a loop of `replace`.
    ///
    /// The outcome of each entry is at its position in the returned vector:
    /// its [`Drain`], or [`RegistryError::NotFound`] (then that entry
    /// changed nothing). It is not a transaction across plugins: each
    /// cutover is published by its own atomic swap, so a lookup running
    /// meanwhile may see some plugins already cut over and others not; once
    /// this returns, every lookup sees every new generation. Drains with
    /// nothing in flight have completed (their values dropped) when it
    /// returns, as with `replace`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cutover::{PluginId, Registry};
    ///
    /// let registry: Registry<String, u32> = Registry::new();
    /// for name in ["a", "b"] {
    ///     registry.add(name.to_string(), PluginId::new(name), Arc::new(1)).unwrap();
    /// }
    /// let outcome = registry.replace_many([("a", Arc::new(2)), ("nope", Arc::new(2)), ("b", Arc::new(3))]);
    /// assert!(outcome[0].as_ref().is_ok_and(|drain| drain.is_drained()));
    /// assert!(outcome[1].is_err());
    /// assert_eq!(registry.lease("b").map(|v| *v), Some(3));
    /// ```
    pub fn replace_many<'k, Q>(
        &self,
        entries: impl IntoIterator<Item = (&'k Q, Arc<T>)>,
    ) -> Vec<Result<Drain, RegistryError>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + fmt::Debug + ?Sized + 'k,
    {
        // Collected first: the iterator is the caller's code, and must not
        // run while the batch holds retirements begun and not ended.
        let incoming: Vec<(&Q, Arc<T>)> = entries.into_iter().collect();
        // Each entry's outcome: cut over (its drain is the batch's next), or
        // refused with its key. The values of keys not found are dropped
        // after the batch has ended (a value's `Drop` is the caller's code;
        // should one panic inside the batch, the batch's own drop still ends
        // what it began). The key map's lease is not a lock: a value dropped
        // by the batch may change the registry.
        let mut refused = Vec::new();
        let mut batch = CutoverBatch::new();
        let map = self.map.lease();
        let outcomes: Vec<Result<(), &Q>> = incoming
            .into_iter()
            .map(|(key, value)| match map.get(&self.hasher, key) {
                Some(slot) => batch.try_replace(slot, value, None, Finalize::OnDrain).map(drop).ok_or(key),
                None => {
                    refused.push(value);
                    Err(key)
                }
            })
            .collect();
        let mut drains = batch.finish().into_iter();
        drop(map);
        drop(refused);
        self.map.run_deferred();
        outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(()) => Ok(drains.next().expect("the batch returns one drain per cutover, in order")),
                Err(key) => Err(RegistryError::NotFound { key: format!("{key:?}") }),
            })
            .collect()
    }

    /// Operations in flight on the current generation of the plugin under
    /// `key` (a snapshot).
    pub fn in_flight<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.lease().get(&self.hasher, key).map(|slot| slot.in_flight())
    }

    /// Run `f` on the slot under `key`, without holding the registry's lock
    /// (`f` may drop values); `f` returns `None` if the slot was closed by a
    /// concurrent removal.
    fn with_slot<Q, R>(&self, key: &Q, f: impl FnOnce(&Slot<T>) -> Option<R>) -> Result<R, RegistryError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + fmt::Debug + ?Sized,
    {
        let not_found = || RegistryError::NotFound { key: format!("{key:?}") };
        let entry = self.map.lease().get(&self.hasher, key).cloned().ok_or_else(not_found)?;
        let out = f(&entry).ok_or_else(not_found);
        drop(entry);
        self.map.run_deferred();
        out
    }

    /// Unregister the plugin under `key` and retire its current generation.
    /// Lookups that start after this returns find nothing; the returned
    /// [`Drain`] completes when the operations in flight on it end. On the
    /// asymmetric-fence path the barrier is left to that drain, as
    /// [`Slot::replace`]'s is (see [`LeasePath::AsymmetricFence`](crate::LeasePath::AsymmetricFence)): with
    /// nothing in flight, the value is dropped on the drain's first use or
    /// drop rather than in this call.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] if nothing is registered under `key`.
    pub fn remove<Q>(&self, key: &Q) -> Result<Drain, RegistryError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + fmt::Debug + ?Sized,
    {
        self.remove_with(key, Finalize::OnDrain)
    }

    /// Like [`remove`](Self::remove), choosing how the retired generation is
    /// finalized.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] if nothing is registered under `key`.
    pub fn remove_with<Q>(&self, key: &Q, finalize: Finalize) -> Result<Drain, RegistryError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + fmt::Debug + ?Sized,
    {
        let not_found = || RegistryError::NotFound { key: format!("{key:?}") };
        let (slot, replaced) = {
            let _write = lock(&self.write);
            let current = self.map.current();
            let slot = current.get(&self.hasher, key).ok_or_else(not_found)?.clone();
            let mut next = current.copy(&self.hasher, 0);
            next.remove(&self.hasher, key);
            (slot, (self.publish(next), current))
        };
        // Lookups still holding the old key map may reach `slot` until they
        // finish; once closed, it answers them with `None`. Closed after the
        // lock: if nothing is in flight, this (or, on the asymmetric-fence
        // path, the drain's first use or drop) drops the plugin's value.
        let drain = slot.close(finalize).ok_or_else(not_found);
        drop(slot);
        self.after_change(replaced);
        drain
    }
}

impl<K, T, S> Drop for Registry<K, T, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    T: ?Sized + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Retire every registered plugin's current generation, as dropping
    /// its `Slot` would (entries do not close their slots when dropped).
    fn drop(&mut self) {
        // One batch: on the asymmetric-fence path the closes share one
        // barrier instead of paying one each.
        let current = self.map.current();
        let mut batch = CutoverBatch::new();
        for entry in current.values() {
            batch.close(entry, Finalize::OnDrain);
        }
        drop(batch.finish());
    }
}

impl<K, T, S> fmt::Debug for Registry<K, T, S>
where
    K: Eq + Hash + Clone + fmt::Debug + Send + Sync + 'static,
    T: ?Sized + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("keys", &self.keys()).finish()
    }
}
