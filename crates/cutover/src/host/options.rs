//! [`ReloadOptions`]: the drain deadline and the escalation ladder.

use std::time::Duration;

/// How a reload (or removal, or rollback) waits for the old generation's
/// drain, and what it does when the deadline passes.
///
/// The escalation ladder, in order, each rung only if the previous one did
/// not end the drain:
///
/// 1. wait up to [`deadline`](Self::deadline) for the drain;
/// 2. **report** the stragglers (how many operations are still in flight,
///    and how old the oldest is) in a `tracing` warning and in the report;
/// 3. **cancel**: set the generation's cancellation flag, which cooperative
///    plugin code sees as [`Lease::is_cancelled`](crate::Lease::is_cancelled),
///    and wait up to [`cancel_grace`](Self::cancel_grace);
/// 4. **force**: ask the plugin to interrupt its running calls
///    ([`Plugin::interrupt`](crate::plugin::Plugin::interrupt); WebAssembly
///    can, native code cannot) and wait up to [`force_grace`](Self::force_grace);
/// 5. **abandon**: return, leaving the generation draining in the
///    background, still tracked; it is shut down and finalized when it
///    drains.
///
/// The outcome is one of [`DrainOutcome`](super::DrainOutcome). Every rung
/// climbed after the first is a `tracing` warning on the target
/// `cutover::host` ("drain deadline passed", "drain escalated: calls in
/// flight cancelled", "drain escalated: interrupting calls in flight",
/// "drain abandoned; finishing in the background"), with the plugin, the
/// generation and the operations in flight, and is listed in the report's
/// `escalations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOptions {
    /// How long to wait for the drain before escalating. Default 30 s.
    pub deadline: Duration,
    /// Whether to set the cancellation flag at the deadline. Default on.
    pub cancel: bool,
    /// How long to wait after cancelling. Default 1 s.
    pub cancel_grace: Duration,
    /// Whether to force-stop running calls if cancelling did not end the
    /// drain. Default on.
    pub force: bool,
    /// How long to wait after forcing. Default 1 s.
    pub force_grace: Duration,
    /// Keep the old generation warm (initialized, not shut down) after it
    /// drains, so that [`Host::rollback`](super::Host::rollback) can return
    /// to it until the next reload. Default off: the old generation can be
    /// rolled back to only while it is still draining.
    pub keep_warm: bool,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            cancel: true,
            cancel_grace: Duration::from_secs(1),
            force: true,
            force_grace: Duration::from_secs(1),
            keep_warm: false,
        }
    }
}

impl ReloadOptions {
    /// Set the drain deadline.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Enable or disable the cancel rung, with its grace period.
    pub fn cancel(mut self, enabled: bool, grace: Duration) -> Self {
        self.cancel = enabled;
        self.cancel_grace = grace;
        self
    }

    /// Enable or disable the force rung, with its grace period.
    pub fn force(mut self, enabled: bool, grace: Duration) -> Self {
        self.force = enabled;
        self.force_grace = grace;
        self
    }

    /// Keep the old generation warm for rollback after it drains.
    pub fn keep_warm(mut self, keep: bool) -> Self {
        self.keep_warm = keep;
        self
    }
}
