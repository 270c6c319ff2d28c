//! Per-kind reload discipline, worked example 1: a storage backend.
//!
//! A new generation opens a fresh instance of the store (seeing the data on
//! "disk" now); cursors opened on the old generation keep reading the
//! snapshot they opened until they are closed. A cursor holds a `Lease`, so
//! the old generation's drain, and its shutdown, wait for the last cursor.
//!
//! Run: `cargo run -p cutover --example storage_backend`

use std::{
    sync::{Arc, Mutex},
    thread,
};

use cutover::{
    host::{Host, ReloadOptions},
    plugin::{BoxError, LinkContext, Plugin},
    Lease, PluginId,
};

/// The data on "disk", which the host's operator may change at any time.
#[derive(Default)]
pub struct Disk(Mutex<Vec<String>>);

/// One open instance of the store: an immutable snapshot of the disk.
pub struct Storage {
    rows: Vec<String>,
}

impl Plugin for Storage {
    fn link(&mut self, cx: &mut LinkContext) -> Result<(), BoxError> {
        cx.register_function("storage.scan");
        Ok(())
    }
}

/// Opens a fresh instance from `disk`: the storage discipline's *load*.
pub fn source(disk: Arc<Disk>) -> impl Fn(&PluginId) -> Result<Storage, BoxError> + Send + Sync {
    move |_| Ok(Storage { rows: disk.0.lock().map_err(|_| "disk lock poisoned")?.clone() })
}

/// A cursor over the generation it was opened on.
pub struct Cursor {
    storage: Lease<Storage>,
    next: usize,
}

impl Cursor {
    /// Open a cursor on the current generation of `id`.
    pub fn open(host: &Host<Storage>, id: &PluginId) -> Option<Cursor> {
        Some(Cursor { storage: host.lease(id)?, next: 0 })
    }

    /// The generation this cursor reads.
    pub fn generation(&self) -> u64 {
        self.storage.generation()
    }
}

impl Iterator for Cursor {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        let row = self.storage.rows.get(self.next).cloned();
        self.next += 1;
        row
    }
}

fn main() {
    let disk = Arc::new(Disk::default());
    disk.0.lock().unwrap().extend(["alpha".to_string(), "beta".to_string()]);
    let host = Arc::new(Host::new());
    let id = PluginId::new("storage");
    host.add(id.clone(), &source(Arc::clone(&disk))).unwrap();

    let mut old_cursor = Cursor::open(&host, &id).unwrap();
    println!("old cursor (generation {}) reads {:?}", old_cursor.generation(), old_cursor.next());
    disk.0.lock().unwrap().push("gamma".to_string());

    let reload = {
        let (host, id, disk) = (Arc::clone(&host), id.clone(), Arc::clone(&disk));
        thread::spawn(move || host.reload(&id, &source(disk), &ReloadOptions::default()))
    };
    // Wait for the cutover: new cursors read the fresh instance.
    let new_cursor = loop {
        let c = Cursor::open(&host, &id).unwrap();
        if c.generation() == 2 {
            break c;
        }
        thread::yield_now();
    };
    println!("new cursor (generation {}) reads {:?}", new_cursor.generation(), new_cursor.collect::<Vec<_>>());
    println!("old cursor still reads {:?}", old_cursor.by_ref().collect::<Vec<_>>());
    drop(old_cursor); // the drain completes only now
    let report = reload.join().unwrap().unwrap();
    println!("reload finished: {} after {:?}", report.outcome, report.phases.drain.unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover::host::DrainOutcome;

    #[test]
    fn old_cursors_keep_reading_their_instance_until_closed() {
        let disk = Arc::new(Disk::default());
        disk.0.lock().unwrap().push("v1-row".into());
        let host = Arc::new(Host::new());
        let id = PluginId::new("storage");
        host.add(id.clone(), &source(Arc::clone(&disk))).unwrap();
        let mut old = Cursor::open(&host, &id).unwrap();
        *disk.0.lock().unwrap() = vec!["v2-row-a".into(), "v2-row-b".into()];

        let reload = {
            let (host, id, disk) = (Arc::clone(&host), id.clone(), Arc::clone(&disk));
            thread::spawn(move || host.reload(&id, &source(disk), &ReloadOptions::default()))
        };
        while Cursor::open(&host, &id).unwrap().generation() != 2 {
            thread::yield_now();
        }
        // The drain waits for the old cursor.
        let snap = host.snapshot(&id).unwrap();
        assert_eq!(snap.draining.len(), 1);
        assert_eq!(snap.draining[0].in_flight, 1);
        // New cursors see the fresh instance; the old one its own snapshot.
        assert_eq!(Cursor::open(&host, &id).unwrap().collect::<Vec<_>>(), ["v2-row-a", "v2-row-b"]);
        assert_eq!(old.next().as_deref(), Some("v1-row"));
        assert_eq!(old.next(), None);
        drop(old);
        let report = reload.join().unwrap().unwrap();
        assert_eq!(report.outcome, DrainOutcome::Drained);
        assert!(host.snapshot(&id).unwrap().draining.is_empty());
    }
}
