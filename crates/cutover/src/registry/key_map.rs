//! The registry's key map: keys to [`Entry`]s, in a hash table whose lookup
//! starts fetching the entry's slot while it compares the key.

use std::{
    borrow::Borrow,
    hash::{BuildHasher, Hash},
    mem::size_of,
    sync::atomic::{AtomicUsize, Ordering},
};

use hashbrown::HashTable;

use crate::slot::{prefetch, Hint, Lease, Slot, SlotRef};

/// A registered slot: a pointer straight to its head (which keeps the slot
/// alive, but does not close it when dropped: the registry closes its slots
/// itself), and where its current generation's lines were when the entry
/// was made (a prefetch hint, `None` for a slot closed before it was added:
/// see "Memory layout" in the module docs).
pub(super) struct Entry<T: ?Sized + Send + Sync + 'static> {
    slot: SlotRef<T>,
    hint: Option<Hint>,
}

// An entry with its hint is 24 bytes: a bucket with a `String` key is 48.
const _: () = assert!(std::mem::size_of::<Entry<u64>>() <= 24);

impl<T: ?Sized + Send + Sync + 'static> Entry<T> {
    pub(super) fn new(slot: Slot<T>) -> Self {
        let slot = slot.into_ref();
        let hint = slot.hint();
        Self { slot, hint }
    }

    /// The same slot with a fresh prefetch hint (after a cutover).
    fn refreshed(&self) -> Self {
        Self { slot: self.slot.clone(), hint: self.slot.hint() }
    }

    /// Start fetching the lines a lease of this entry's slot touches: its
    /// head, and those the hint names. Reads nothing (see [`Hint`]).
    #[inline(always)]
    fn prefetch(&self) {
        self.slot.prefetch_head();
        if let Some(hint) = &self.hint {
            hint.prefetch();
        }
    }

    #[inline]
    pub(super) fn try_lease(&self) -> Option<Lease<T>> {
        self.slot.try_lease()
    }
}

impl<T: ?Sized + Send + Sync + 'static> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Self { slot: self.slot.clone(), hint: self.hint }
    }
}

impl<T: ?Sized + Send + Sync + 'static> std::ops::Deref for Entry<T> {
    type Target = Slot<T>;
    fn deref(&self) -> &Slot<T> {
        self.slot.as_slot()
    }
}

/// Keys to entries: a `hashbrown` table of `(key, entry)` pairs, with the
/// operations the registry needs. The hasher is the registry's (one for
/// every key map it publishes, passed to each operation that hashes), so
/// the lookup's hash, computed before the key map is leased, is the one
/// the map was built with by construction. Its one addition to a
/// `HashMap` is [`lease`](Self::lease): the table's probe hands each
/// candidate pair (one whose 7-bit hash tag matched, almost always the
/// right one) to a closure before comparing keys, and that closure starts
/// the fetch of the entry's slot, so the misses on the key and on the slot
/// overlap instead of following one another.
pub(super) struct KeyMap<K, T: ?Sized + Send + Sync + 'static> {
    table: HashTable<(K, Entry<T>)>,
}

impl<K, T> KeyMap<K, T>
where
    K: Eq + Hash,
    T: ?Sized + Send + Sync + 'static,
{
    /// An empty map with room for `capacity` keys.
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self { table: HashTable::with_capacity(capacity) }
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The entry under `key`, hashed with `hasher` (the registry's).
    pub(super) fn get<Q>(&self, hasher: &impl BuildHasher, key: &Q) -> Option<&Entry<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.find(hasher.hash_one(key), key)
    }

    /// The entry under `key`, whose hash by the registry's hasher is
    /// `hash` (for a caller that has the hash already).
    pub(super) fn find<Q>(&self, hash: u64, key: &Q) -> Option<&Entry<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.table.find(hash, |(k, _)| k.borrow() == key).map(|(_, entry)| entry)
    }

    /// A lease of the slot under `key`, whose hash by the registry's hasher
    /// is `hash` (the per-call path): [`get`](Self::get)
    /// prefetching each candidate's slot before its key is compared.
    #[inline]
    pub(super) fn lease<Q>(&self, hash: u64, key: &Q) -> Option<Lease<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (_, entry) = self.table.find(hash, |(k, entry)| {
            entry.prefetch();
            k.borrow() == key
        })?;
        entry.try_lease()
    }

    pub(super) fn contains_key<Q>(&self, hasher: &impl BuildHasher, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(hasher, key).is_some()
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.table.iter().map(|(key, _)| key)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Entry<T>> {
        self.table.iter().map(|(_, entry)| entry)
    }

    /// Add `key`, which the caller checked is not in the map.
    pub(super) fn insert_new(&mut self, hasher: &impl BuildHasher, key: K, entry: Entry<T>) {
        let hash = hasher.hash_one(&key);
        self.table.insert_unique(hash, (key, entry), |(k, _)| hasher.hash_one(k));
    }

    /// Remove `key` (if present).
    pub(super) fn remove<Q>(&mut self, hasher: &impl BuildHasher, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = hasher.hash_one(key);
        if let Ok(entry) = self.table.find_entry(hash, |(k, _)| k.borrow() == key) {
            entry.remove();
        }
    }
}

impl<K, T> KeyMap<K, T>
where
    K: Eq + Hash + Clone,
    T: ?Sized + Send + Sync + 'static,
{
    /// A copy for the next key map, with room for `extra` more keys and
    /// every entry's prefetch hint refreshed (a change copies the map
    /// anyway; replaces leave hints stale). The keys are cloned one after
    /// another, so they end up close together.
    pub(super) fn copy(&self, hasher: &impl BuildHasher, extra: usize) -> Self {
        let mut next = Self::with_capacity(self.len() + extra);
        for (key, entry) in self.table.iter() {
            next.insert_new(hasher, key.clone(), entry.refreshed());
        }
        next
    }
}

/// Where the current key map's table is, so that a lookup can start fetching
/// the lines its first probe reads (the control bytes of its hash's group,
/// and the bucket there) from its hash alone, before it has leased the key
/// map: the two misses then overlap each other and the lease instead of
/// following it and one another. And where the key map's own generation
/// record and the map were (the key-map slot's [`Hint`]), so that a lookup
/// starts fetching those before it has hashed its key, instead of one after
/// the other as the lease's loads reach them: with several large registries
/// in turn each is on a page of its own, a miss in the first-level TLB
/// (BENCHMARKS.md, issue 14, item 2, session 34).
///
/// Addresses only, never turned back into references: a hint is written by
/// the registry's writer as it publishes a key map, and read without
/// synchronisation (`Relaxed`; `std` atomics even under loom, as they are
/// not part of the protocol). A lookup that reads a hint of another map,
/// or half of each, or one whose table was freed, costs a useless prefetch,
/// which cannot fault, and nothing else. It relies on `hashbrown`'s layout
/// (buckets stored downwards from the control bytes, the first group probed
/// at `hash & (buckets - 1)`); if a release changed that, the prefetches
/// would only miss (the `probe_hint_names_the_lines_the_first_probe_reads`
/// test checks it).
#[derive(Default)]
pub(super) struct ProbeHint {
    /// The address of the control bytes (where bucket 0 ends); 0: no hint.
    ctrl: AtomicUsize,
    /// The number of buckets, less one.
    mask: AtomicUsize,
    /// The key-map slot's hint, as [`Hint::to_words`] (`[0, 0]`: none).
    map: [AtomicUsize; 2],
}

impl ProbeHint {
    /// Point the hint at `map`'s table and at `slot_hint`, the key-map
    /// slot's hint for the generation that serves `map`. Under the
    /// registry's write lock, once `map` is published.
    pub(super) fn set<K, T: ?Sized + Send + Sync + 'static>(&self, map: &KeyMap<K, T>, slot_hint: Option<Hint>) {
        let (ctrl, mask) = map.table_address().unwrap_or((0, 0));
        self.ctrl.store(ctrl, Ordering::Relaxed);
        self.mask.store(mask, Ordering::Relaxed);
        for (word, value) in self.map.iter().zip(Hint::to_words(slot_hint)) {
            word.store(value, Ordering::Relaxed);
        }
    }

    /// The key-map slot's hint, as last [`set`](Self::set) (or a mixture of
    /// two: see [`Hint::from_words`]); `None` before the first change.
    #[inline(always)]
    fn map_hint(&self) -> Option<Hint> {
        Hint::from_words(self.map.each_ref().map(|word| word.load(Ordering::Relaxed)))
    }

    /// Start fetching the lines a lease of the key map reads after its head:
    /// the current record's header and the map's (not this thread's
    /// counter, which would take a thread-local load to find, and whose
    /// load overlaps the header's anyway). Reads nothing (see [`Hint`]).
    #[inline(always)]
    pub(super) fn prefetch_map(&self) {
        if let Some(hint) = self.map_hint() {
            hint.prefetch_shared();
        }
    }

    /// Start fetching the lines a lookup of `hash` probes first, with
    /// buckets of `(K, Entry<T>)`. Reads nothing (see [`Hint`]).
    #[inline(always)]
    pub(super) fn prefetch<K, T: ?Sized + Send + Sync + 'static>(&self, hash: u64) {
        let ctrl = self.ctrl.load(Ordering::Relaxed);
        if ctrl != 0 {
            let (group, bucket) = first_probe::<(K, Entry<T>)>(ctrl, self.mask.load(Ordering::Relaxed), hash);
            prefetch(std::ptr::without_provenance(group));
            prefetch(std::ptr::without_provenance(bucket));
            prefetch(std::ptr::without_provenance(bucket.wrapping_add(size_of::<(K, Entry<T>)>() - 1)));
        }
    }
}

/// The addresses of the first group of control bytes a probe for `hash`
/// reads, and of the bucket at its start, in a `hashbrown` table of `B`
/// whose control bytes are at `ctrl`, with `mask + 1` buckets.
#[inline(always)]
fn first_probe<B>(ctrl: usize, mask: usize, hash: u64) -> (usize, usize) {
    let pos = (hash as usize) & mask;
    (ctrl.wrapping_add(pos), ctrl.wrapping_sub((pos + 1).wrapping_mul(size_of::<B>())))
}

impl<K, T: ?Sized + Send + Sync + 'static> KeyMap<K, T> {
    /// Where this map's table is: the address of its control bytes and its
    /// bucket mask, found from the address of an occupied bucket; `None`
    /// for an empty map.
    fn table_address(&self) -> Option<(usize, usize)> {
        let index = self.table.iter_buckets().next()?;
        let bucket: *const (K, Entry<T>) = self.table.get_bucket(index)?;
        Some((bucket.addr().wrapping_add((index + 1) * size_of::<(K, Entry<T>)>()), self.table.num_buckets() - 1))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::{collections::hash_map::DefaultHasher, hash::BuildHasherDefault};

    use super::*;
    use crate::PluginId;

    /// The hint's addresses are the ones `hashbrown` reads: every occupied
    /// bucket is where the hint's layout says, and most keys (all but
    /// those displaced by a collision) sit in the group their hash probes
    /// first.
    #[test]
    fn probe_hint_names_the_lines_the_first_probe_reads() {
        type Bucket = (String, Entry<u64>);
        let hasher = BuildHasherDefault::<DefaultHasher>::default();
        const KEYS: usize = if cfg!(miri) { 100 } else { 1000 };
        let mut map: KeyMap<String, u64> = KeyMap::with_capacity(KEYS);
        for i in 0..KEYS {
            let key = format!("plugin-{i}");
            map.insert_new(
                &hasher,
                key.clone(),
                Entry::new(Slot::new(PluginId::new(&key), std::sync::Arc::new(i as u64))),
            );
        }
        let (ctrl, mask) = map.table_address().expect("a full map");
        assert_eq!(mask + 1, map.table.num_buckets());
        for index in map.table.iter_buckets() {
            let bucket: *const Bucket = map.table.get_bucket(index).unwrap();
            assert_eq!(bucket.addr(), ctrl - (index + 1) * size_of::<Bucket>());
        }
        let mut first_group = 0;
        for i in 0..KEYS {
            let key = format!("plugin-{i}");
            let hash = hasher.hash_one(key.as_str());
            let index = map.table.find_bucket_index(hash, |(k, _)| *k == key).unwrap();
            let (group, bucket) = first_probe::<Bucket>(ctrl, mask, hash);
            let start = group - ctrl;
            assert_eq!(bucket, ctrl - (start + 1) * size_of::<Bucket>());
            if (index.wrapping_sub(start) & mask) < 16 {
                first_group += 1;
            }
        }
        assert!(first_group * 10 >= KEYS * 9, "{first_group} of {KEYS} keys in their first group");
        // A key map does not close its slots (the registry does): close
        // them, so that each slot and its generation are freed.
        for entry in map.values() {
            drop(entry.close(crate::slot::Finalize::OnDrain));
        }
    }

    /// The key-map hint follows every change: after each, it names the
    /// key-map slot's current record and the current map, as the slot's own
    /// hint does; a registry no change has touched has none.
    #[test]
    fn the_key_map_hint_names_the_current_record_and_map() {
        type Registry = crate::Registry<String, u64>;
        let registry = Registry::new();
        let probed = |registry: &Registry| registry.probe.map_hint().map(|hint| hint.addresses());
        let check = |registry: &Registry| {
            let hint = probed(registry).expect("a change sets the hint");
            assert_eq!(Some(hint), registry.map.hint().map(|hint| hint.addresses()));
            assert_eq!(hint.1, std::sync::Arc::as_ptr(&registry.map.current()).addr());
        };
        assert!(probed(&registry).is_none(), "no change published a map yet");
        for i in 0..5u64 {
            let key = format!("plugin-{i}");
            registry.add(key.clone(), PluginId::new(&key), std::sync::Arc::new(i)).unwrap();
            check(&registry);
        }
        let more = (5..10u64).map(|i| {
            let key = format!("plugin-{i}");
            (key.clone(), Slot::new(PluginId::new(&key), std::sync::Arc::new(i)))
        });
        registry.extend(more).unwrap();
        check(&registry);
        registry.remove("plugin-3").unwrap().wait();
        check(&registry);
        assert_eq!(registry.lease("plugin-7").map(|lease| *lease), Some(7));
    }
}
