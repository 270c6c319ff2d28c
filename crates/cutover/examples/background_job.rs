//! Per-kind reload discipline, worked example 3: a background job.
//!
//! A job works through a log of numbered items on its own thread, in
//! batches; between two batches is a *checkpoint* (the number of the next
//! item). A new generation is built paused; at the cutover, the old job is
//! told to stop at its next checkpoint, and the new one resumes from that
//! checkpoint. No item is lost or done twice, however many reloads land
//! while it runs.
//!
//! The items arrive over time, as in a real log: the driver makes them
//! available in steps (a *watermark* the job may not pass), and reloads to
//! the next version only after the current one has reported, over a
//! channel, a checkpoint at least `MIN_PER_VERSION` items past where it
//! started. So every version does work on every run, by construction, not by
//! timing luck; where exactly each handover lands (how far past that
//! checkpoint the old version got before the cutover) varies from run to
//! run.
//!
//! Run: `cargo run -p cutover --example background_job`

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Condvar, Mutex,
    },
    thread,
};

use cutover::{
    host::{Host, ReloadDiscipline, ReloadOptions},
    plugin::{BoxError, Plugin},
    PluginId,
};

/// Items between two checkpoints.
const BATCH: u64 = 1_000;

/// A checkpoint a job reached: `version` has done every item below `next`.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint {
    /// The job version that reached it.
    pub version: u32,
    /// The next item to do.
    pub next: u64,
}

/// The log the jobs work through, and where their results go.
pub struct Work {
    /// Items are `0..total`.
    pub total: u64,
    /// Items below the watermark are available; a job waits at it.
    watermark: Mutex<u64>,
    available: Condvar,
    /// Each item, as it is done, tagged with the job version that did it.
    pub done: Mutex<Vec<(u64, u32)>>,
    /// Every checkpoint a job reaches is reported here.
    progress: Mutex<mpsc::Sender<Checkpoint>>,
}

impl Work {
    /// A log of `total` items, none available yet; checkpoints go to `progress`.
    pub fn new(total: u64, progress: mpsc::Sender<Checkpoint>) -> Self {
        Self {
            total,
            watermark: Mutex::new(0),
            available: Condvar::new(),
            done: Mutex::new(Vec::new()),
            progress: Mutex::new(progress),
        }
    }

    /// Make the items below `watermark` available.
    pub fn make_available(&self, watermark: u64) {
        let mut w = self.watermark.lock().unwrap();
        *w = (*w).max(watermark.min(self.total));
        self.available.notify_all();
    }

    /// Wait until item `next` is available or `stop` is set; the watermark.
    fn wait_for(&self, next: u64, stop: &AtomicBool) -> u64 {
        let mut w = self.watermark.lock().unwrap();
        while *w <= next && !stop.load(Ordering::Acquire) {
            w = self.available.wait(w).unwrap();
        }
        *w
    }

    fn report(&self, checkpoint: Checkpoint) {
        let _ = self.progress.lock().unwrap().send(checkpoint);
    }
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
            // Between two batches is a checkpoint: stop there if asked.
            while next < work.total && !stop.load(Ordering::Acquire) {
                let watermark = work.wait_for(next, &stop);
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let end = (next + BATCH).min(watermark);
                let mut done = work.done.lock().unwrap();
                done.extend((next..end).map(|item| (item, version)));
                drop(done);
                next = end;
                work.report(Checkpoint { version, next });
            }
            next
        });
        *self.worker.lock().unwrap() = Some(handle);
    }

    /// Stop at the next checkpoint; the item to resume from.
    pub fn stop_at_checkpoint(&self) -> u64 {
        self.stop.store(true, Ordering::Release);
        // Wake the worker if it waits for items (under the lock, so the
        // wake-up cannot fall between its check of `stop` and its wait).
        let _guard = self.work.watermark.lock().unwrap();
        self.work.available.notify_all();
        drop(_guard);
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

/// Each version does at least this many items before the next reload.
const MIN_PER_VERSION: u64 = 5_000;

/// Run `versions` versions of the job over `total` items: version 1 starts,
/// and each later one is reloaded in once its predecessor reported a
/// checkpoint `MIN_PER_VERSION` items past where it started. Returns the
/// done items, tagged with the version that did each.
pub fn run(total: u64, versions: u32) -> Vec<(u64, u32)> {
    let (tx, progress) = mpsc::channel();
    let work = Arc::new(Work::new(total, tx));
    let host = Host::new();
    let id = PluginId::new("job");
    host.add(id.clone(), &version(1, &work)).unwrap();
    host.set_discipline(&id, Arc::new(JobDiscipline)).unwrap();
    host.lease(&id).unwrap().resume_from(0);

    // Where the serving version started, and the next checkpoint it must reach.
    let step = total / u64::from(versions);
    let mut started_at = 0;
    for v in 1..versions {
        work.make_available(step * u64::from(v));
        let target = (started_at + MIN_PER_VERSION).min(step * u64::from(v));
        // Wait for the serving version `v` to report that checkpoint.
        let reached = loop {
            let c = progress.recv().expect("the job stopped reporting progress");
            if c.version == v && c.next >= target {
                break c.next;
            }
        };
        let report = host.reload(&id, &version(v + 1, &work), &ReloadOptions::default()).unwrap();
        // The handover happened at the cutover (version `v` has stopped):
        // version `v + 1` resumed from the checkpoint after its last item.
        started_at = work.done.lock().unwrap().iter().filter(|(_, by)| *by <= v).count() as u64;
        println!(
            "reload to version {} (generation {}): requested at checkpoint {reached}, handed over at checkpoint {started_at}",
            v + 1,
            report.generation.unwrap_or(0)
        );
    }
    work.make_available(total);
    loop {
        let c = progress.recv().expect("the job stopped reporting progress");
        if c.next == total {
            break;
        }
    }
    host.remove(&id, &ReloadOptions::default()).unwrap();
    let done = work.done.lock().unwrap().clone();
    done
}

fn main() {
    let versions = 5;
    let done = run(100_000, versions);
    let items: Vec<u64> = done.iter().map(|(item, _)| *item).collect();
    assert!(items.iter().copied().eq(0..100_000), "an item was lost or done twice");
    println!("{} items done, each exactly once, in order:", done.len());
    for v in 1..=versions {
        let mine: Vec<u64> = done.iter().filter(|(_, by)| *by == v).map(|(item, _)| *item).collect();
        match (mine.first(), mine.last()) {
            (Some(first), Some(last)) => {
                println!("  version {v}: items {first}..={last} ({} items)", mine.len())
            }
            _ => println!("  version {v}: no items"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_works_and_no_item_is_lost_or_done_twice() {
        let versions = 8;
        let done = run(80_000, versions);
        let items: Vec<u64> = done.iter().map(|(item, _)| *item).collect();
        assert_eq!(items, (0..80_000).collect::<Vec<_>>(), "every item exactly once, in order");
        // Versions took over in order, each from where the last one stopped,
        // and each did at least MIN_PER_VERSION items.
        assert!(done.windows(2).all(|w| w[0].1 <= w[1].1));
        for v in 1..=versions {
            let n = done.iter().filter(|(_, by)| *by == v).count() as u64;
            assert!(n >= MIN_PER_VERSION.min(80_000 / u64::from(versions)), "version {v} did {n} items");
        }
    }
}
