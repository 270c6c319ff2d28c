//! Plugin identifiers.

use std::{fmt, sync::Arc};

/// The longest plugin id accepted, in bytes.
pub const MAX_PLUGIN_ID_LEN: usize = 256;

/// The name of a plugin, e.g. `"math"`: non-empty, at most
/// [`MAX_PLUGIN_ID_LEN`] bytes, no whitespace or control characters.
///
/// Cloning is cheap (a reference-counted string).
///
/// ```
/// use cutover::PluginId;
/// let id = PluginId::new("math");
/// assert_eq!(id.to_string(), "math");
/// assert!(PluginId::parse("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginId(Arc<str>);

/// Why a string is not a valid [`PluginId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginIdError {
    /// The id was empty.
    #[error("plugin id is empty: give the plugin a name such as \"math\"")]
    Empty,
    /// The id was longer than [`MAX_PLUGIN_ID_LEN`].
    #[error("plugin id is {len} bytes long; the limit is {MAX_PLUGIN_ID_LEN}: use a shorter name")]
    TooLong {
        /// The length of the rejected id, in bytes.
        len: usize,
    },
    /// The id contained whitespace or a control character.
    #[error("plugin id {id:?} contains whitespace or a control character at byte {at}: use letters, digits, '_', '-' or '.'")]
    BadChar {
        /// The rejected id.
        id: String,
        /// Byte offset of the first offending character.
        at: usize,
    },
}

impl PluginId {
    /// Make an id from a string known to be valid.
    ///
    /// # Panics
    /// If `id` is not valid (empty, too long, or containing whitespace or a
    /// control character); use [`PluginId::parse`] for untrusted input.
    #[track_caller]
    pub fn new(id: &str) -> Self {
        match Self::parse(id) {
            Ok(id) => id,
            Err(e) => panic!("PluginId::new: {e}"),
        }
    }

    /// Parse an id, returning an error instead of panicking.
    ///
    /// # Errors
    /// [`PluginIdError`] when `id` is empty, longer than
    /// [`MAX_PLUGIN_ID_LEN`], or contains whitespace or a control character.
    pub fn parse(id: &str) -> Result<Self, PluginIdError> {
        if id.is_empty() {
            return Err(PluginIdError::Empty);
        }
        if id.len() > MAX_PLUGIN_ID_LEN {
            return Err(PluginIdError::TooLong { len: id.len() });
        }
        if let Some((at, _)) = id.char_indices().find(|(_, c)| c.is_whitespace() || c.is_control()) {
            return Err(PluginIdError::BadChar { id: id.to_owned(), at });
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginId({:?})", &*self.0)
    }
}

impl std::str::FromStr for PluginId {
    type Err = PluginIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for PluginId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for PluginId {
    fn borrow(&self) -> &str {
        &self.0
    }
}
