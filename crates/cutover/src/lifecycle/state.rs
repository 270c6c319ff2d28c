//! The lifecycle states and their order.

use std::fmt;

/// Where a plugin generation is in its life.
///
/// The order is `Loaded → Linked → Initialized → Active → Draining → Removed`;
/// [`PluginLifecycle::advance`](super::PluginLifecycle::advance) steps along
/// it and stays at `Removed`.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum LifecycleState {
    /// The code is loaded (parsed, compiled) but not yet linked.
    Loaded = 0,
    /// Capabilities are negotiated and the plugin's functions registered.
    Linked = 1,
    /// The plugin's own initialization has run; it is ready to serve.
    Initialized = 2,
    /// New operations go to this generation.
    Active = 3,
    /// A newer generation took over; operations already in flight finish here.
    Draining = 4,
    /// Drained and shut down; nothing runs here any more. Sticky.
    Removed = 5,
}

impl LifecycleState {
    /// Every state, in lifecycle order.
    pub const ALL: [LifecycleState; 6] =
        [Self::Loaded, Self::Linked, Self::Initialized, Self::Active, Self::Draining, Self::Removed];

    /// The state after this one (`Removed` stays `Removed`).
    pub const fn next(self) -> Self {
        match self {
            Self::Loaded => Self::Linked,
            Self::Linked => Self::Initialized,
            Self::Initialized => Self::Active,
            Self::Active => Self::Draining,
            Self::Draining | Self::Removed => Self::Removed,
        }
    }

    /// The state's name, as printed by `Display` (e.g. `"Active"`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Loaded => "Loaded",
            Self::Linked => "Linked",
            Self::Initialized => "Initialized",
            Self::Active => "Active",
            Self::Draining => "Draining",
            Self::Removed => "Removed",
        }
    }

    pub(crate) const fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Loaded,
            1 => Self::Linked,
            2 => Self::Initialized,
            3 => Self::Active,
            4 => Self::Draining,
            _ => Self::Removed,
        }
    }
}

impl fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
