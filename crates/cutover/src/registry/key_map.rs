//! The registry's key map: keys to [`Entry`]s, in a hash table whose lookup
//! starts fetching the entry's slot while it compares the key.

use std::{
    borrow::Borrow,
    hash::{BuildHasher, Hash},
};

use hashbrown::HashTable;

use crate::slot::{Hint, Lease, Slot, SlotRef};

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

/// Keys to entries: a `hashbrown` table of `(key, entry)` pairs and the
/// hasher, with the operations the registry needs. Its one addition to a
/// `HashMap` is [`lease`](Self::lease): the table's probe hands each
/// candidate pair (one whose 7-bit hash tag matched, almost always the
/// right one) to a closure before comparing keys, and that closure starts
/// the fetch of the entry's slot, so the misses on the key and on the slot
/// overlap instead of following one another.
pub(super) struct KeyMap<K, T: ?Sized + Send + Sync + 'static, S> {
    table: HashTable<(K, Entry<T>)>,
    hasher: S,
}

impl<K, T, S> KeyMap<K, T, S>
where
    K: Eq + Hash,
    T: ?Sized + Send + Sync + 'static,
    S: BuildHasher,
{
    /// An empty map with room for `capacity` keys.
    pub(super) fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        Self { table: HashTable::with_capacity(capacity), hasher }
    }

    pub(super) fn hasher(&self) -> &S {
        &self.hasher
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The entry under `key`.
    pub(super) fn get<Q>(&self, key: &Q) -> Option<&Entry<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        self.table.find(hash, |(k, _)| k.borrow() == key).map(|(_, entry)| entry)
    }

    /// A lease of the slot under `key`, whose hash by this map's hasher (or
    /// a clone of it) is `hash` (the per-call path): [`get`](Self::get)
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

    pub(super) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.table.iter().map(|(key, _)| key)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Entry<T>> {
        self.table.iter().map(|(_, entry)| entry)
    }

    /// Add `key`, which the caller checked is not in the map.
    pub(super) fn insert_new(&mut self, key: K, entry: Entry<T>) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(&key);
        self.table.insert_unique(hash, (key, entry), |(k, _)| hasher.hash_one(k));
    }

    /// Remove `key` (if present).
    pub(super) fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        if let Ok(entry) = self.table.find_entry(hash, |(k, _)| k.borrow() == key) {
            entry.remove();
        }
    }
}

impl<K, T, S> KeyMap<K, T, S>
where
    K: Eq + Hash + Clone,
    T: ?Sized + Send + Sync + 'static,
    S: BuildHasher + Clone,
{
    /// A copy for the next key map, with room for `extra` more keys and
    /// every entry's prefetch hint refreshed (a change copies the map
    /// anyway; replaces leave hints stale). The keys are cloned one after
    /// another, so they end up close together.
    pub(super) fn copy(&self, extra: usize) -> Self {
        let mut next = Self::with_capacity_and_hasher(self.len() + extra, self.hasher.clone());
        for (key, entry) in self.table.iter() {
            next.insert_new(key.clone(), entry.refreshed());
        }
        next
    }
}
