//! What a reload did: [`ReloadReport`], and what a plugin looks like now:
//! [`PluginSnapshot`].

use std::{fmt, time::Duration};

use crate::{LifecycleState, PluginId};

/// How the old generation's drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DrainOutcome {
    /// There was no old generation (an add).
    NothingToDrain,
    /// Every operation finished before the deadline.
    Drained,
    /// The operations finished after their cancellation flag was set.
    Cancelled,
    /// The operations were force-stopped by the plugin engine.
    Forced,
    /// The operations were still running after every rung; the generation is
    /// left draining in the background, still tracked, and is shut down and
    /// finalized when it drains.
    Abandoned,
}

impl DrainOutcome {
    /// The outcome's name, e.g. `"drained"` (lower case, for metrics labels).
    pub fn as_str(self) -> &'static str {
        match self {
            DrainOutcome::NothingToDrain => "nothing_to_drain",
            DrainOutcome::Drained => "drained",
            DrainOutcome::Cancelled => "cancelled",
            DrainOutcome::Forced => "forced",
            DrainOutcome::Abandoned => "abandoned",
        }
    }
}

impl fmt::Display for DrainOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of host operation a report describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReloadKind {
    /// A new plugin was added.
    Add,
    /// A new generation replaced the current one.
    Reload,
    /// The previous generation was made current again.
    Rollback,
    /// The plugin was removed.
    Remove,
}

/// How long each phase of a host operation took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTimings {
    /// Loading the new generation (`→ Loaded`).
    pub load: Duration,
    /// Linking it (`→ Linked`).
    pub link: Duration,
    /// Initializing it (`→ Initialized`).
    pub init: Duration,
    /// The discipline's `before_cutover` hook.
    pub prepare: Duration,
    /// The cutover itself (the atomic swap and the start of the drain).
    pub cutover: Duration,
    /// From the cutover to the end of the drain; `None` if it did not end
    /// (abandoned) or there was nothing to drain.
    pub drain: Option<Duration>,
    /// Shutting the old generation down.
    pub shutdown: Option<Duration>,
}

/// Who was still in flight when the drain deadline passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StragglerReport {
    /// The draining generation.
    pub generation: u64,
    /// Operations still in flight on it.
    pub in_flight: usize,
    /// Every straggler began before the cutover, so the oldest is at least
    /// this old.
    pub oldest_at_least: Duration,
    /// ...and at most this old: the generation's age.
    pub oldest_at_most: Duration,
    /// With straggler tracking on ([`Host::set_straggler_tracking`](super::Host::set_straggler_tracking)):
    /// the exact age of the oldest.
    pub oldest: Option<Duration>,
    /// With straggler tracking on: the threads the stragglers run on (by
    /// name; unnamed threads are left out), oldest first.
    pub threads: Vec<String>,
}

/// One rung of the escalation ladder that was climbed, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalation {
    /// The rung.
    pub rung: Rung,
    /// Time since the cutover when the rung was taken.
    pub after: Duration,
}

/// A rung of the escalation ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rung {
    /// The deadline passed; stragglers reported.
    Report,
    /// The cancellation flag was set.
    Cancel,
    /// The plugin was asked to interrupt its running calls.
    Force,
    /// The drain was left running in the background.
    Abandon,
}

/// What a host operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// The plugin.
    pub plugin: PluginId,
    /// What was done.
    pub kind: ReloadKind,
    /// The generation that was current before (`None` for an add).
    pub previous: Option<u64>,
    /// The generation current after (`None` for a removal).
    pub generation: Option<u64>,
    /// How the previous generation's drain ended.
    pub outcome: DrainOutcome,
    /// Per-phase durations.
    pub phases: PhaseTimings,
    /// The stragglers, if the deadline passed.
    pub stragglers: Option<StragglerReport>,
    /// The escalation rungs climbed, in order.
    pub escalations: Vec<Escalation>,
}

/// A generation still draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainingGeneration {
    /// The generation.
    pub generation: u64,
    /// Operations in flight on it.
    pub in_flight: usize,
    /// Time since its cutover.
    pub since_cutover: Duration,
    /// Whether its cancellation flag is set.
    pub cancelled: bool,
}

/// One plugin, as a host sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSnapshot {
    /// The plugin.
    pub id: PluginId,
    /// The current generation (from 1).
    pub generation: u64,
    /// The current generation's lifecycle state (`Active`).
    pub state: LifecycleState,
    /// Operations in flight on the current generation.
    pub in_flight: usize,
    /// Generations still draining, oldest first.
    pub draining: Vec<DrainingGeneration>,
    /// The functions the current generation registered.
    pub functions: Vec<String>,
    /// The error of the last failed reload, cleared by a successful one.
    pub last_error: Option<String>,
    /// The last completed host operation on this plugin.
    pub last_reload: Option<ReloadReport>,
    /// Whether [`Host::rollback`](super::Host::rollback) has a generation to
    /// return to.
    pub rollback_available: bool,
}
