//! [`ReloadDiscipline`]: per-kind hooks around the reload protocol.

use crate::plugin::BoxError;

/// Hooks a host runs around a reload, for what differs by kind of plugin
/// (the original framework's "per-kind reload discipline"): a storage
/// backend, an index and a background job each hand over differently.
///
/// The transaction calls them in this order:
///
/// 1. load, link and init the new generation;
/// 2. [`before_cutover`](Self::before_cutover)`(old, new)`: prepare the new
///    generation from the old one (e.g. open the index the old one persisted).
///    The last step that may fail: an error or panic here discards the new
///    generation and leaves the old one serving. It must not leave the old
///    generation changed in a way that stops it serving;
/// 3. the cutover;
/// 4. [`at_cutover`](Self::at_cutover)`(old, new)`: right after it (e.g. tell a
///    background job to stop at its next checkpoint and hand the checkpoint
///    to its successor);
/// 5. the drain of the old generation;
/// 6. [`after_drain`](Self::after_drain)`(old)`: nothing runs on `old` any
///    more; then it is shut down and finalized.
///
/// Every hook defaults to doing nothing. Panics in `at_cutover` and
/// `after_drain` are caught and logged (the cutover has happened by then).
pub trait ReloadDiscipline<P: ?Sized>: Send + Sync {
    /// Prepare `new` from `old`, before the cutover.
    ///
    /// # Errors
    /// Any error aborts the reload; `old` keeps serving.
    fn before_cutover(&self, old: &P, new: &mut P) -> Result<(), BoxError> {
        let _ = (old, new);
        Ok(())
    }

    /// Right after the cutover; `new` already serves.
    fn at_cutover(&self, old: &P, new: &P) {
        let _ = (old, new);
    }

    /// After the old generation drained, before it is shut down.
    fn after_drain(&self, old: &P) {
        let _ = old;
    }
}

/// The default discipline: no hooks.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDiscipline;

impl<P: ?Sized> ReloadDiscipline<P> for NoDiscipline {}
