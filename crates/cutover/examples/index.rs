//! Per-kind reload discipline, worked example 2: an index.
//!
//! Before the cutover, the old generation persists its contents and the new
//! one opens the persisted bytes, so the new index serves everything the old
//! one held from its first call. If persisting or opening fails, the reload
//! is aborted and the old index keeps serving.
//!
//! Run: `cargo run -p cutover --example index`

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use cutover::{
    host::{Host, ReloadDiscipline, ReloadOptions},
    plugin::{BoxError, Plugin},
    PluginId,
};

/// A key → value index whose format differs between versions.
pub struct Index {
    /// The on-disk format version this generation writes and reads.
    pub format: u32,
    entries: RwLock<BTreeMap<String, u64>>,
}

impl Index {
    /// An empty index writing format `format`.
    pub fn new(format: u32) -> Self {
        Self { format, entries: RwLock::new(BTreeMap::new()) }
    }

    /// Insert or update `key`.
    pub fn insert(&self, key: &str, value: u64) {
        self.entries.write().unwrap().insert(key.to_string(), value);
    }

    /// Look `key` up.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.entries.read().unwrap().get(key).copied()
    }

    /// Serialize: `format` then `key=value` lines.
    pub fn persist(&self) -> Vec<u8> {
        let mut out = format!("format {}\n", self.format);
        for (k, v) in self.entries.read().unwrap().iter() {
            out.push_str(&format!("{k}={v}\n"));
        }
        out.into_bytes()
    }

    /// Load persisted bytes of any format up to ours.
    pub fn open(&mut self, bytes: &[u8]) -> Result<(), BoxError> {
        let text = std::str::from_utf8(bytes)?;
        let mut lines = text.lines();
        let format: u32 =
            lines.next().and_then(|l| l.strip_prefix("format ")).ok_or("missing format header")?.parse()?;
        if format > self.format {
            return Err(format!("persisted format {format} is newer than this index's {}", self.format).into());
        }
        let entries = self.entries.get_mut().map_err(|_| "index lock poisoned")?;
        for line in lines {
            let (k, v) = line.split_once('=').ok_or_else(|| format!("bad line {line:?}"))?;
            entries.insert(k.to_string(), v.parse()?);
        }
        Ok(())
    }
}

impl Plugin for Index {}

/// Persist on the old generation, open on the new one, before the cutover.
pub struct IndexDiscipline;

impl ReloadDiscipline<Index> for IndexDiscipline {
    fn before_cutover(&self, old: &Index, new: &mut Index) -> Result<(), BoxError> {
        new.open(&old.persist())
    }
}

fn main() {
    let host = Host::new();
    let id = PluginId::new("index");
    host.add(id.clone(), &|_| Ok(Index::new(1))).unwrap();
    host.set_discipline(&id, Arc::new(IndexDiscipline)).unwrap();
    host.lease(&id).unwrap().insert("answer", 42);
    host.reload(&id, &|_| Ok(Index::new(2)), &ReloadOptions::default()).unwrap();
    let index = host.lease(&id).unwrap();
    println!("format {} index has answer = {:?}", index.format, index.get("answer"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_format(format: u32) -> impl Fn(&PluginId) -> Result<Index, BoxError> + Send + Sync {
        move |_| Ok(Index::new(format))
    }

    #[test]
    fn the_new_index_opens_what_the_old_one_persisted() {
        let host = Host::new();
        let id = PluginId::new("index");
        host.add(id.clone(), &with_format(1)).unwrap();
        host.set_discipline(&id, Arc::new(IndexDiscipline)).unwrap();
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            host.lease(&id).unwrap().insert(key, i as u64);
        }
        host.reload(&id, &with_format(2), &ReloadOptions::default()).unwrap();
        let index = host.lease(&id).unwrap();
        assert_eq!((index.format, index.generation()), (2, 2));
        assert_eq!([index.get("a"), index.get("b"), index.get("c")], [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn an_index_that_cannot_open_the_persisted_bytes_aborts_the_reload() {
        let host = Host::new();
        let id = PluginId::new("index");
        host.add(id.clone(), &with_format(3)).unwrap();
        host.set_discipline(&id, Arc::new(IndexDiscipline)).unwrap();
        host.lease(&id).unwrap().insert("kept", 7);
        // A downgrade to format 2 cannot read format 3.
        let err = host.reload(&id, &with_format(2), &ReloadOptions::default()).unwrap_err();
        assert!(err.to_string().contains("newer than this index"), "{err}");
        let index = host.lease(&id).unwrap();
        assert_eq!((index.format, index.get("kept")), (3, Some(7)));
    }
}
