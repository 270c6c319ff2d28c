//! How busy the rest of the machine was during a soak: CPU time used by
//! other processes, from `/proc/stat` (the whole machine, steal included)
//! minus `/proc/self/stat` (this process). Linux only; elsewhere unknown.

use std::time::Instant;

/// Clock ticks per second of `/proc/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A reading taken when the soak began.
pub(crate) struct CpuProbe {
    began: Instant,
    ticks: Option<(u64, u64)>,
}

impl CpuProbe {
    /// Read the counters now.
    pub(crate) fn start() -> Self {
        Self { began: Instant::now(), ticks: ticks() }
    }

    /// The average number of cores other processes kept busy since
    /// [`start`](Self::start) (0.5 = half a core), if it can be known.
    pub(crate) fn other_cores(&self) -> Option<f64> {
        let (busy0, mine0) = self.ticks?;
        let (busy1, mine1) = ticks()?;
        let seconds = self.began.elapsed().as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let others = busy1.saturating_sub(busy0).saturating_sub(mine1.saturating_sub(mine0));
        Some(others as f64 / TICKS_PER_SECOND / seconds)
    }
}

/// (busy ticks of the whole machine, ticks of this process).
fn ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // cpu  user nice system idle iowait irq softirq steal guest guest_nice
    let cpu: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // Busy: everything but idle and iowait; guest time is already in user.
    let busy = cpu.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces): utime is
    // the 12th, stime the 13th.
    let fields: Vec<&str> = me.rsplit_once(')')?.1.split_whitespace().collect();
    let mine = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((busy, mine))
}
