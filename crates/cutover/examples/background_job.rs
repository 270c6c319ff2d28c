//! Per-kind reload discipline, worked example 3: a background job.
//!
//! A job works through numbered items on its own thread. A new generation
//! is built paused; at the cutover, the old job is told to stop at its next
//! checkpoint (between two items), and the new one resumes from that
//! checkpoint. No item is lost or done twice, however many reloads land
//! while it runs.
//!
//! Run: `cargo run -p cutover --example background_job`

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
};

use cutover::{
    host::{Host, ReloadDiscipline, ReloadOptions},
    plugin::{BoxError, Plugin},
    PluginId,
};

/// Where finished items go, and how many there are.
pub struct Work {
    /// Items are `0..total`.
    pub total: u64,
    /// Each item, as it is done, tagged with the job version that did it.
    pub done: Mutex<Vec<(u64, u32)>>,
    /// Told when the last item is done.
    pub finished: Mutex<Option<mpsc::Sender<()>>>,
}

/// One generation of the job.
pub struct Job {
    version: u32,
    work: Arc<Work>,
    stop: Arc<AtomicBool>,
    worker: Mutex<Option<thread::JoinHandle<u64>>>,
}

impl Job {
    /// A paused job of `version` over `work`.
    pub fn new(version: u32, work: Arc<Work>) -> Self {
        Self { version, work, stop: Arc::new(AtomicBool::new(false)), worker: Mutex::new(None) }
    }

    /// Start working from item `checkpoint`.
    pub fn resume_from(&self, checkpoint: u64) {
        let (work, stop, version) = (Arc::clone(&self.work), Arc::clone(&self.stop), self.version);
        let handle = thread::spawn(move || {
            let mut next = checkpoint;
            // Between two items is a checkpoint: stop there if asked.
            while next < work.total && !stop.load(Ordering::Acquire) {
                work.done.lock().unwrap().push((next, version));
                next += 1;
            }
            if next == work.total {
                if let Some(tx) = work.finished.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
            next
        });
        *self.worker.lock().unwrap() = Some(handle);
    }

    /// Stop at the next checkpoint; the item to resume from.
    pub fn stop_at_checkpoint(&self) -> u64 {
        self.stop.store(true, Ordering::Release);
        match self.worker.lock().unwrap().take() {
            Some(worker) => worker.join().unwrap_or(0),
            None => 0,
        }
    }
}

impl Plugin for Job {
    fn shutdown(&self) {
        self.stop_at_checkpoint();
    }
}

/// Hand the checkpoint from the old job to the new one at the cutover.
pub struct JobDiscipline;

impl ReloadDiscipline<Job> for JobDiscipline {
    fn at_cutover(&self, old: &Job, new: &Job) {
        new.resume_from(old.stop_at_checkpoint());
    }
}

fn version(v: u32, work: &Arc<Work>) -> impl Fn(&PluginId) -> Result<Job, BoxError> + Send + Sync {
    let work = Arc::clone(work);
    move |_| Ok(Job::new(v, Arc::clone(&work)))
}

fn main() {
    let (tx, rx) = mpsc::channel();
    let work = Arc::new(Work { total: 100_000, done: Mutex::new(Vec::new()), finished: Mutex::new(Some(tx)) });
    let host = Host::new();
    let id = PluginId::new("job");
    host.add(id.clone(), &version(1, &work)).unwrap();
    host.set_discipline(&id, Arc::new(JobDiscipline)).unwrap();
    host.lease(&id).unwrap().resume_from(0);
    for v in 2..=5 {
        host.reload(&id, &version(v, &work), &ReloadOptions::default()).unwrap();
    }
    rx.recv().unwrap();
    let done = work.done.lock().unwrap();
    let by_version = (1..=5).map(|v| done.iter().filter(|(_, by)| *by == v).count()).collect::<Vec<_>>();
    println!("{} items done, by versions 1..=5: {by_version:?}", done.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_item_is_lost_or_done_twice_across_reloads() {
        let (tx, rx) = mpsc::channel();
        let work = Arc::new(Work { total: 50_000, done: Mutex::new(Vec::new()), finished: Mutex::new(Some(tx)) });
        let host = Host::new();
        let id = PluginId::new("job");
        host.add(id.clone(), &version(1, &work)).unwrap();
        host.set_discipline(&id, Arc::new(JobDiscipline)).unwrap();
        host.lease(&id).unwrap().resume_from(0);
        for v in 2..=8 {
            host.reload(&id, &version(v, &work), &ReloadOptions::default()).unwrap();
        }
        rx.recv().unwrap();
        host.remove(&id, &ReloadOptions::default()).unwrap();
        let done = work.done.lock().unwrap();
        let items: Vec<u64> = done.iter().map(|(item, _)| *item).collect();
        assert_eq!(items, (0..50_000).collect::<Vec<_>>(), "every item exactly once, in order");
        // Versions took over in order.
        assert!(done.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
