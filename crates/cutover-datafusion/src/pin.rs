//! A query's hold on one plugin generation: [`PluginPin`], and the per
//! generation count of the queries holding one ([`QueryCounts`]).

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex, MutexGuard},
};

use arrow_array::ArrayRef;
use cutover::{host::Host, Lease, PluginId};
use cutover_wasm::{CallError, Signature};

use crate::{error::Error, plugin::FunctionPlugin};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One query's lease on one generation of one plugin, shared by every
/// pinned function of that plugin in the query's plan (logical and
/// physical) and released when the last of them is dropped.
pub(crate) trait PluginPin: Send + Sync + fmt::Debug {
    /// The plugin.
    fn plugin(&self) -> &PluginId;
    /// The generation held.
    fn generation(&self) -> u64;
    /// The signature of `function` in this generation.
    fn signature(&self, function: &str) -> Option<&Signature>;
    /// The full names of this generation's functions.
    fn function_names(&self) -> Vec<String>;
    /// Call `function` on this generation.
    fn call(&self, function: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError>;
    /// Whether the host asked the work on this generation to stop (the
    /// *cancel* rung of a drain that ran past its deadline).
    fn is_cancelled(&self) -> bool;
}

/// Takes pins: what a live function needs of its binding, type-erased over
/// the plugin type.
pub(crate) trait Pinner: Send + Sync + fmt::Debug {
    /// Lease the current generation of `plugin` for one query. `function`
    /// names the SQL function in errors.
    fn pin(&self, plugin: &PluginId, function: &str) -> Result<Arc<dyn PluginPin>, Error>;
}

/// Queries in flight per plugin and generation.
#[derive(Debug, Default)]
pub(crate) struct QueryCounts {
    counts: Mutex<HashMap<PluginId, BTreeMap<u64, usize>>>,
}

impl QueryCounts {
    fn begin(&self, plugin: &PluginId, generation: u64) {
        *lock(&self.counts).entry(plugin.clone()).or_default().entry(generation).or_default() += 1;
    }

    fn end(&self, plugin: &PluginId, generation: u64) {
        let mut counts = lock(&self.counts);
        if let Some(generations) = counts.get_mut(plugin) {
            if let Some(n) = generations.get_mut(&generation) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    generations.remove(&generation);
                }
            }
            if generations.is_empty() {
                counts.remove(plugin);
            }
        }
    }

    pub(crate) fn get(&self, plugin: &PluginId, generation: u64) -> usize {
        lock(&self.counts).get(plugin).and_then(|g| g.get(&generation)).copied().unwrap_or(0)
    }

    pub(crate) fn all(&self) -> BTreeMap<PluginId, BTreeMap<u64, usize>> {
        lock(&self.counts).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The pin of a `Host<P>`'s plugin: a [`Lease`], counted as one query.
pub(crate) struct HostPin<P: FunctionPlugin> {
    plugin: PluginId,
    generation: u64,
    counts: Arc<QueryCounts>,
    lease: Lease<P>,
}

impl<P: FunctionPlugin> HostPin<P> {
    /// Pin the current generation of `plugin` in `host`.
    pub(crate) fn take(
        host: &Host<P>,
        counts: &Arc<QueryCounts>,
        plugin: &PluginId,
        function: &str,
    ) -> Result<Self, Error> {
        let lease = host
            .lease(plugin)
            .ok_or_else(|| Error::PluginRemoved { function: function.to_owned(), plugin: plugin.clone() })?;
        let generation = lease.generation();
        counts.begin(plugin, generation);
        tracing::debug!(target: "cutover::datafusion", plugin = %plugin, generation, "query pinned a generation");
        Ok(Self { plugin: plugin.clone(), generation, counts: Arc::clone(counts), lease })
    }
}

impl<P: FunctionPlugin> fmt::Debug for HostPin<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostPin").field("plugin", &self.plugin).field("generation", &self.generation).finish()
    }
}

impl<P: FunctionPlugin> PluginPin for HostPin<P> {
    fn plugin(&self) -> &PluginId {
        &self.plugin
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn signature(&self, function: &str) -> Option<&Signature> {
        self.lease.function_signature(function)
    }

    fn function_names(&self) -> Vec<String> {
        self.lease.function_signatures().into_iter().map(|(name, _)| name).collect()
    }

    #[inline]
    fn call(&self, function: &str, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError> {
        self.lease.call_function(function, args, rows)
    }

    #[inline]
    fn is_cancelled(&self) -> bool {
        self.lease.is_cancelled()
    }
}

impl<P: FunctionPlugin> Drop for HostPin<P> {
    fn drop(&mut self) {
        // The count goes first, then (as the fields drop) the lease: a
        // generation is never drained while still counted.
        self.counts.end(&self.plugin, self.generation);
        tracing::debug!(target: "cutover::datafusion", plugin = %self.plugin, generation = self.generation,
                        "query released a generation");
    }
}
