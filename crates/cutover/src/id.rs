//! Plugin identifiers.
//!
//! A [`PluginId`] is two words. An id of up to 15 bytes (7 on 32-bit
//! targets), which is most of them, is stored in those words; a longer one
//! is a reference-counted string. So a slot, which keeps its id, allocates
//! nothing for it in the common case, and cloning a short id (as events and
//! errors do) is a copy.

use std::{
    cmp::Ordering,
    fmt,
    hash::{Hash, Hasher},
    mem::size_of,
    ptr::{self, NonNull},
    sync::Arc,
};

/// The longest plugin id accepted, in bytes.
pub const MAX_PLUGIN_ID_LEN: usize = 256;

/// The name of a plugin, e.g. `"math"`: non-empty, at most
/// [`MAX_PLUGIN_ID_LEN`] bytes, no whitespace or control characters.
///
/// Two words; cloning is cheap: an id of up to 15 bytes (7 on 32-bit
/// targets) is stored inline, so a clone is a copy; a longer one is a
/// reference-counted string. Compares, orders and hashes as its string.
///
/// ```
/// use cutover::PluginId;
/// let id = PluginId::new("math");
/// assert_eq!(id.to_string(), "math");
/// assert!(PluginId::parse("").is_err());
/// ```
pub struct PluginId(Repr);

/// The bytes of a machine word.
const WORD: usize = size_of::<usize>();

/// The longest id stored inline: all of [`Repr`] but its tag byte.
const INLINE: usize = 2 * WORD - 1;

/// A [`PluginId`]'s two words, one of:
///
/// * `inline`, an id of at most [`INLINE`] bytes: its bytes, zeros, and in
///   the last byte (the *tag*) its length, which is not zero (an id is never
///   empty);
/// * `shared`, a longer id: the raw parts of the `Arc<str>` that holds it,
///   with the length stored little-endian, so that the last byte in memory
///   is the length's most significant byte, which is zero (a length is at
///   most [`MAX_PLUGIN_ID_LEN`]).
///
/// So the tag byte tells them apart. It is read as part of `shared.len_le`,
/// which both representations initialise with plain bytes (the pointer's
/// bytes are never read as an integer).
#[repr(C)]
#[derive(Clone, Copy)]
union Repr {
    inline: [u8; 2 * WORD],
    shared: SharedStr,
}

/// The raw parts of an `Arc<str>` (see [`Repr`]).
#[repr(C)]
#[derive(Clone, Copy)]
struct SharedStr {
    ptr: NonNull<u8>,
    len_le: usize,
}

const _: () = assert!(size_of::<Repr>() == 2 * WORD && MAX_PLUGIN_ID_LEN >> (8 * (WORD - 1)) == 0);

// SAFETY: a `PluginId` is an immutable string, either inline or behind an
// `Arc<str>` (which is `Send + Sync`) of which it owns one strong count.
unsafe impl Send for PluginId {}
// SAFETY: as above; `&PluginId` only reads the string.
unsafe impl Sync for PluginId {}

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
        Ok(Self::store(id))
    }

    /// Store a valid id: inline if it fits, else in an `Arc<str>`.
    fn store(id: &str) -> Self {
        if id.len() <= INLINE {
            let mut inline = [0u8; 2 * WORD];
            inline[..id.len()].copy_from_slice(id.as_bytes());
            // Not zero: a valid id is not empty.
            inline[INLINE] = id.len() as u8;
            Self(Repr { inline })
        } else {
            let shared = Arc::<str>::from(id);
            let len_le = shared.len().to_le();
            let ptr =
                NonNull::new(Arc::into_raw(shared).cast::<u8>().cast_mut()).expect("an `Arc`'s pointer is not null");
            Self(Repr { shared: SharedStr { ptr, len_le } })
        }
    }

    /// The tag byte (see [`Repr`]): the length of an inline id, 0 for a
    /// shared one.
    #[inline]
    fn tag(&self) -> u8 {
        // SAFETY: both representations initialise these bytes as plain
        // bytes (see `Repr`); `len_le`'s last byte in memory is the tag.
        unsafe { self.0.shared.len_le }.to_ne_bytes()[WORD - 1]
    }

    /// The `Arc<str>` a shared id holds a count of (not to be dropped: see
    /// `Drop` and `Clone`).
    ///
    /// # Safety
    /// `self` is a shared id (`tag() == 0`).
    unsafe fn shared_str(&self) -> *const str {
        // SAFETY: the caller says `shared` is the representation.
        let SharedStr { ptr, len_le } = unsafe { self.0.shared };
        ptr::slice_from_raw_parts(ptr.as_ptr().cast_const(), usize::from_le(len_le)) as *const str
    }

    /// The id as a string slice.
    #[inline]
    pub fn as_str(&self) -> &str {
        match self.tag() {
            0 => {
                // SAFETY: a shared id: its `Arc<str>`, of which `self` owns
                // a strong count, lives at least as long as `self`.
                unsafe { &*self.shared_str() }
            }
            len => {
                // SAFETY: an inline id: its first `len` bytes are the bytes
                // of the `&str` it was made from (`store`), a whole string,
                // so valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(&self.0.inline[..usize::from(len)]) }
            }
        }
    }
}

impl Clone for PluginId {
    #[inline]
    fn clone(&self) -> Self {
        if self.tag() == 0 {
            // SAFETY: a shared id owns a strong count of this `Arc<str>`, so
            // it is live; the copy made below owns the new count.
            unsafe { Arc::increment_strong_count(self.shared_str()) };
        }
        Self(self.0)
    }
}

impl Drop for PluginId {
    #[inline]
    fn drop(&mut self) {
        if self.tag() == 0 {
            // SAFETY: a shared id owns one strong count of this `Arc<str>`
            // (from `store` or `clone`), given back here once.
            drop(unsafe { Arc::from_raw(self.shared_str()) });
        }
    }
}

impl PartialEq for PluginId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for PluginId {}

impl PartialOrd for PluginId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PluginId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for PluginId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PluginId({:?})", self.as_str())
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
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for PluginId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::hash_map::DefaultHasher,
        hash::{Hash, Hasher},
    };

    use super::{PluginId, INLINE, MAX_PLUGIN_ID_LEN};

    fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
        let mut hasher = DefaultHasher::new();
        value.hash(&mut hasher);
        hasher.finish()
    }

    /// Ids of the lengths around each limit (a word's edges, the inline
    /// limit, the maximum), inline and shared, and with multi-byte
    /// characters ending around the inline limit.
    fn samples() -> Vec<String> {
        let lengths = [1, 2, 7, 8, 9, 14, 15, 16, 17, 64, MAX_PLUGIN_ID_LEN - 1, MAX_PLUGIN_ID_LEN];
        let mut ids: Vec<String> = lengths.iter().map(|&len| "abcdefghij".repeat(26)[..len].to_owned()).collect();
        ids.extend(["é", "plugin-ü", "ééééééé", "éééééééx", "ééééééééé", "日本語のプラグイン"].map(String::from));
        ids
    }

    #[test]
    fn an_id_reads_back_as_its_string_inline_or_shared() {
        for text in samples() {
            let id = PluginId::new(&text);
            assert_eq!(id.as_str(), text);
            assert_eq!((id.tag() != 0), text.len() <= INLINE, "{text:?}");
            assert_eq!(id.to_string(), text);
            assert_eq!(format!("{id:?}"), format!("PluginId({text:?})"));
            let clone = id.clone();
            drop(id);
            assert_eq!(clone.as_str(), text, "a clone outlives the original");
        }
    }

    #[test]
    fn ids_compare_order_and_hash_as_their_strings() {
        let texts = samples();
        let ids: Vec<PluginId> = texts.iter().map(|t| PluginId::new(t)).collect();
        for (a, ta) in ids.iter().zip(&texts) {
            assert_eq!(hash_of(a), hash_of(ta.as_str()), "Borrow<str> needs equal hashes");
            for (b, tb) in ids.iter().zip(&texts) {
                assert_eq!(a == b, ta == tb);
                assert_eq!(a.cmp(b), ta.cmp(tb));
            }
        }
    }

    #[test]
    fn a_shared_id_counts_its_clones_across_threads() {
        let long = "x".repeat(INLINE + 1);
        let id = PluginId::new(&long);
        let clones: Vec<PluginId> = (0..8).map(|_| id.clone()).collect();
        std::thread::scope(|scope| {
            for clone in clones {
                scope.spawn(move || assert_eq!(clone.as_str(), "x".repeat(INLINE + 1)));
            }
        });
        // SAFETY (test): `id` is shared; only `id` itself still counts.
        let strong = unsafe {
            let arc = std::mem::ManuallyDrop::new(std::sync::Arc::from_raw(id.shared_str()));
            std::sync::Arc::strong_count(&arc)
        };
        assert_eq!(strong, 1);
    }
}
