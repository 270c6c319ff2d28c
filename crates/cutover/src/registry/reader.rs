//! [`RegistryReader`]: a registry's per-call path for one thread's hot loop,
//! keeping the key map's lease from one lookup to the next.

use std::{
    borrow::Borrow,
    fmt,
    hash::{BuildHasher, Hash},
};

use super::{key_map::KeyMap, Registry};
use crate::slot::Lease;

/// Lookups in a [`Registry`] that keep the key map's lease between calls:
/// made by [`Registry::reader`], for a thread (or task) that looks plugins up
/// in a loop.
///
/// [`Registry::lease`] leases the current key map, looks the key up, leases
/// the plugin and drops the key map's lease: two lease operations on every
/// call besides the plugin's. A reader keeps the key map's lease and, on
/// each call, only checks with one load ([`Slot::is_current`](crate::Slot::is_current))
/// that no `add`, `extend` or `remove` has replaced the key map since; if one
/// has, it leases the new one first. It is the same idea as `arc-swap`'s
/// `Cache`.
///
/// # Guarantees
///
/// * Every lookup answers exactly as [`Registry::lease`] would at that
///   instant: a change that returned before the lookup began (in the
///   happens-before sense) is always seen, and a plugin removed is never
///   found after its `remove` returned.
/// * Replacing a plugin ([`Registry::replace`], `replace_many`) does not
///   touch the key map, so it costs a reader nothing; the next lookup leases
///   the new generation.
///
/// # Limitations
///
/// * Between its lookups, a reader holds on to the key map it last used,
///   until its next lookup after a change, or its drop. That map holds
///   memory only: its entries keep no plugin generation alive, so a removed
///   plugin's [`Drain`](crate::Drain) completes and its value is dropped as
///   soon as its own leases are gone, whatever readers hold. A key map
///   released by a reader is freed by the registry's next change (or its
///   drop), on that thread, as one released by a lookup is.
/// * A reader borrows its registry and needs `&mut self` to look up: keep one
///   per thread or task. It may be sent to another thread.
///
/// ```
/// use std::sync::Arc;
/// use cutover::{PluginId, Registry};
///
/// let registry: Registry<String, u32> = Registry::new();
/// registry.add("a".to_string(), PluginId::new("a"), Arc::new(1)).unwrap();
/// let mut reader = registry.reader();
/// assert_eq!(reader.lease("a").map(|v| *v), Some(1));
///
/// // Changes are seen by the reader's next lookup.
/// registry.add("b".to_string(), PluginId::new("b"), Arc::new(2)).unwrap();
/// registry.replace("a", Arc::new(10)).unwrap();
/// assert_eq!(reader.lease("b").map(|v| *v), Some(2));
/// assert_eq!(reader.lease("a").map(|v| *v), Some(10));
/// registry.remove("a").unwrap().wait();
/// assert!(reader.lease("a").is_none());
/// ```
pub struct RegistryReader<'r, K, T, S>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    T: ?Sized + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    registry: &'r Registry<K, T, S>,
    map: Lease<KeyMap<K, T>>,
}

impl<'r, K, T, S> RegistryReader<'r, K, T, S>
where
    K: Eq + Hash + Clone + fmt::Debug + Send + Sync + 'static,
    T: ?Sized + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    pub(super) fn new(registry: &'r Registry<K, T, S>) -> Self {
        Self { registry, map: registry.map.lease() }
    }

    /// Lease the plugin registered under `key`, as [`Registry::lease`] does;
    /// `None` if there is none. Lock-free; never drops a plugin value, runs
    /// a callback or frees a key map.
    #[inline]
    pub fn lease<Q>(&mut self, key: &Q) -> Option<Lease<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.registry.hash_and_prefetch(key);
        self.current().lease(hash, key)
    }

    /// Whether a plugin is registered under `key`.
    pub fn contains<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let registry = self.registry;
        self.current().contains_key(&registry.hasher, key)
    }

    /// The registry this reader looks up.
    pub fn registry(&self) -> &'r Registry<K, T, S> {
        self.registry
    }

    /// The current key map, leased again if a change replaced it.
    #[inline(always)]
    fn current(&mut self) -> &KeyMap<K, T> {
        if !self.registry.map.is_current(&self.map) {
            self.refresh();
        }
        &self.map
    }

    /// Lease the key map a change published. The old lease is dropped after
    /// the new one is taken; its drop never frees the old map (the key
    /// map's slot defers completions to the registry's writers).
    #[cold]
    #[inline(never)]
    fn refresh(&mut self) {
        self.map = self.registry.map.lease();
    }
}

impl<K, T, S> fmt::Debug for RegistryReader<'_, K, T, S>
where
    K: Eq + Hash + Clone + fmt::Debug + Send + Sync + 'static,
    T: ?Sized + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryReader").field("key_map_generation", &self.map.generation()).finish()
    }
}
