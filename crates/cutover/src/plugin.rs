//! The plugin abstraction: the lifecycle hooks a reload transaction walks.
//!
//! [`Plugin`] is the contract the reload transaction in [`crate::host`]
//! drives; [`PluginSource`] builds new generations for it. Native Rust
//! plugins implement `Plugin` directly (and usually pass a closure as their
//! source); `cutover-wasm` implements both for WebAssembly modules.

use std::{
    collections::{BTreeSet, HashSet},
    sync::{Mutex, OnceLock, PoisonError},
};

use crate::PluginId;

/// A boxed error from plugin code: any error type a plugin wants to return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Builds a new generation of a plugin: the *load* step (→ `Loaded`).
///
/// Implement it for a type that knows where plugins come from (a file, a
/// registry of modules), or pass a closure: it is implemented for every
/// `Fn(&'static PluginId) -> Result<P, BoxError>`, so the natural form
/// compiles as is:
///
/// ```
/// use cutover::{host::Host, plugin::Plugin, PluginId};
///
/// struct Scale(i64);
/// impl Plugin for Scale {}
///
/// let host: Host<Scale> = Host::new();
/// host.add(PluginId::new("math"), &|_| Ok(Scale(2)))?;
/// host.add(PluginId::new("math2"), &|id: &PluginId| Ok(Scale(id.as_str().len() as i64)))?;
/// # Ok::<(), cutover::host::ReloadError>(())
/// ```
///
/// **Why `&'static PluginId`.** A closure passed where a `&dyn PluginSource`
/// is expected gets no signature from that expectation, so Rust infers its
/// argument as a reference with *one* particular lifetime, and a bound over
/// every lifetime (`Fn(&PluginId)`) then fails with "implementation of
/// `FnOnce` is not general enough" unless the argument is annotated
/// (`|_: &PluginId|`). With `'static` in the bound, the unannotated closure
/// is accepted, and so is an annotated one. To hand out a `&'static
/// PluginId`, the closure impl interns ids: each distinct id loaded through
/// a closure source is kept (one small allocation) for the rest of the
/// process. If your program loads an unbounded number of distinct ids,
/// implement `PluginSource` on a type instead: its `load` gets a plain
/// `&PluginId` and nothing is interned.
pub trait PluginSource<P>: Send + Sync {
    /// Load a fresh, not yet linked instance of the plugin `id`.
    fn load(&self, id: &PluginId) -> Result<P, BoxError>;
}

impl<P, F> PluginSource<P> for F
where
    F: Fn(&'static PluginId) -> Result<P, BoxError> + Send + Sync,
{
    fn load(&self, id: &PluginId) -> Result<P, BoxError> {
        self(interned(id))
    }
}

/// `id`, kept for the rest of the process (once per distinct id): see
/// [`PluginSource`].
fn interned(id: &PluginId) -> &'static PluginId {
    static IDS: OnceLock<Mutex<HashSet<&'static PluginId>>> = OnceLock::new();
    let mut ids = IDS.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(&kept) = ids.get(id) {
        return kept;
    }
    let kept: &'static PluginId = Box::leak(Box::new(id.clone()));
    ids.insert(kept);
    kept
}

/// What the *link* step sees: the capabilities the host offers, and where the
/// plugin registers the functions it provides.
#[derive(Debug, Default, Clone)]
pub struct LinkContext {
    capabilities: BTreeSet<String>,
    functions: Vec<String>,
}

impl LinkContext {
    /// A context offering `capabilities`.
    pub fn new<I, S>(capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { capabilities: capabilities.into_iter().map(Into::into).collect(), functions: Vec::new() }
    }

    /// Whether the host offers `capability`.
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.contains(capability)
    }

    /// Require `capability`; an error naming it when the host does not offer it.
    pub fn require(&self, capability: &str) -> Result<(), BoxError> {
        if self.has(capability) {
            Ok(())
        } else {
            Err(format!("the host does not offer the capability `{capability}` this plugin requires").into())
        }
    }

    /// Register a function the plugin provides (e.g. `"math.mul3"`).
    pub fn register_function(&mut self, name: impl Into<String>) {
        self.functions.push(name.into());
    }

    /// The functions registered so far, in registration order.
    pub fn functions(&self) -> &[String] {
        &self.functions
    }
}

/// A plugin generation: the hooks a reload transaction calls, in order
/// `link` (→ `Linked`), `init` (→ `Initialized`), serve (→ `Active`), and
/// after the drain `shutdown` (→ `Removed`).
///
/// Every hook has a no-op default. Hooks may return errors *or panic*: the
/// transaction catches both, discards the new generation and leaves the old
/// one serving.
pub trait Plugin: Send + Sync + 'static {
    /// Link: negotiate capabilities with the host and register the functions
    /// this plugin provides.
    fn link(&mut self, cx: &mut LinkContext) -> Result<(), BoxError> {
        let _ = cx;
        Ok(())
    }

    /// Initialize: run once before the generation serves.
    fn init(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Shut down after the drain (or when a generation that was initialized
    /// is discarded before its cutover). No call is in flight when this runs.
    fn shutdown(&self) {}

    /// Force-stop the calls still running on this generation (the *forced*
    /// rung of the escalation ladder). Return `true` if the engine can
    /// interrupt (e.g. WebAssembly), `false` (the default) if it cannot.
    fn interrupt(&self) -> bool {
        false
    }

    /// Ids of the plugins this one depends on; they are initialized first.
    fn dependencies(&self) -> Vec<PluginId> {
        Vec::new()
    }
}
