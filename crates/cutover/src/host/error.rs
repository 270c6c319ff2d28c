//! [`ReloadError`]: why a reload, add, remove or rollback did not happen.

use std::fmt;

use crate::{plugin::BoxError, PluginId};

/// The step of a reload transaction that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Loading the new generation ([`PluginSource::load`](crate::plugin::PluginSource::load)).
    Load,
    /// Resolving the plugin's declared dependencies.
    Dependencies,
    /// [`Plugin::link`](crate::plugin::Plugin::link).
    Link,
    /// [`Plugin::init`](crate::plugin::Plugin::init).
    Init,
    /// The discipline's [`before_cutover`](super::ReloadDiscipline::before_cutover) hook.
    Prepare,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Load => "load",
            Step::Dependencies => "dependency resolution",
            Step::Link => "link",
            Step::Init => "init",
            Step::Prepare => "prepare (before cutover)",
        })
    }
}

/// Why a host operation did not happen. In every case, whatever was serving
/// before still serves, unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// A step before the cutover failed (returned an error or panicked); the
    /// new generation was discarded.
    #[error("{plugin}: {step} failed: {cause}{}", serving_note(.serving))]
    Failed {
        /// The plugin.
        plugin: PluginId,
        /// The step that failed.
        step: Step,
        /// The error or panic message.
        cause: String,
        /// The generation still serving (`None` when adding a new plugin).
        serving: Option<u64>,
        /// The error the plugin returned, if it returned one (not a panic).
        #[source]
        source: Option<BoxError>,
    },
    /// Another reload, removal or rollback of the same plugin is building or
    /// cutting over right now. Reloads of one plugin never interleave; retry
    /// when it is done.
    #[error("{plugin}: another reload of this plugin is in progress; retry when it has finished")]
    InProgress {
        /// The plugin.
        plugin: PluginId,
    },
    /// A conditional reload ([`Host::reload_if`](super::Host::reload_if))
    /// expected another generation than the current one: someone else
    /// reloaded (or rolled back) the plugin in between. Nothing was built and
    /// nothing changed.
    #[error("{plugin}: expected generation {expected}, but generation {current} is current (the plugin was reloaded or rolled back in between); nothing was changed: re-read the plugin and decide again")]
    GenerationMismatch {
        /// The plugin.
        plugin: PluginId,
        /// The generation the caller expected to replace.
        expected: u64,
        /// The generation that is current.
        current: u64,
    },
    /// No plugin with this id is loaded.
    #[error("{plugin}: no such plugin is loaded; add it first")]
    NotFound {
        /// The plugin.
        plugin: PluginId,
    },
    /// A plugin with this id is already loaded.
    #[error("{plugin}: a plugin with this id is already loaded; reload it instead")]
    AlreadyExists {
        /// The plugin.
        plugin: PluginId,
    },
    /// The plugin declares a dependency that is not loaded.
    #[error(
        "{plugin}: depends on `{dependency}`, which is not loaded; load `{dependency}` first (or in the same batch)"
    )]
    MissingDependency {
        /// The plugin.
        plugin: PluginId,
        /// The missing dependency.
        dependency: PluginId,
    },
    /// The declared dependencies form a cycle.
    #[error("dependency cycle: {}; break the cycle", cycle_text(.cycle))]
    DependencyCycle {
        /// The plugins on the cycle, in order, the first repeated at the end.
        cycle: Vec<PluginId>,
    },
    /// Other loaded plugins depend on this one.
    #[error("{plugin}: cannot remove, {} depend(s) on it; remove those first", cycle_text(.dependents))]
    DependedOn {
        /// The plugin.
        plugin: PluginId,
        /// The plugins that depend on it.
        dependents: Vec<PluginId>,
    },
    /// There is no previous generation to roll back to.
    #[error("{plugin}: nothing to roll back to; the previous generation has been shut down (reload with keep_warm to keep it)")]
    NoRollback {
        /// The plugin.
        plugin: PluginId,
    },
}

fn serving_note(serving: &Option<u64>) -> String {
    match serving {
        Some(g) => format!("; generation {g} keeps serving"),
        None => "; nothing was added".to_string(),
    }
}

fn cycle_text(ids: &[PluginId]) -> String {
    ids.iter().map(PluginId::as_str).collect::<Vec<_>>().join(" -> ")
}

impl ReloadError {
    /// The step that failed, for [`ReloadError::Failed`].
    pub fn step(&self) -> Option<Step> {
        match self {
            ReloadError::Failed { step, .. } => Some(*step),
            ReloadError::MissingDependency { .. } | ReloadError::DependencyCycle { .. } => Some(Step::Dependencies),
            _ => None,
        }
    }
}
