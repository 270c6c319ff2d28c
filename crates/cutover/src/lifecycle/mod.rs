//! The plugin lifecycle and the seed's reload driver.
//!
//! A plugin generation moves through
//! `Loaded → Linked → Initialized → Active → Draining → Removed`
//! ([`LifecycleState`]), one atomic transition at a time
//! ([`PluginLifecycle`]). [`EpochFencedReload`] drives an old generation from
//! `Active` through `Draining` to `Removed` the way the original framework
//! did, minus its races.

mod epoch_fenced;
mod error;
mod plugin_lifecycle;
mod state;

pub use epoch_fenced::EpochFencedReload;
pub use error::DrainError;
pub use plugin_lifecycle::{PluginLifecycle, SharedLifecycle};
pub use state::LifecycleState;
