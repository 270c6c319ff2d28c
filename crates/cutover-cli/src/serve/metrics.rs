//! Prometheus metrics, kept by hand and rendered in the text exposition
//! format (version 0.0.4).
//!
//! * `cutover_calls_total{function, generation}`: calls answered.
//! * `cutover_call_errors_total{function, generation, kind}`: calls that
//!   failed inside the plugin (`trap`, `timeout`, `interrupted`, ...).
//! * `cutover_call_duration_seconds{function}`: a histogram of call latency.
//! * `cutover_reloads_total{plugin, op, outcome}`: host operations by outcome
//!   (`drained`, `cancelled`, `forced`, `abandoned`, `nothing_to_drain`,
//!   `failed`).
//! * `cutover_drain_duration_seconds`: a histogram of drain durations.
//! * `cutover_in_flight{plugin, generation}`: calls in flight, per
//!   generation (current and draining).
//! * `cutover_plugin_generation{plugin}`: each plugin's current generation.
//! * `cutover_http_calls_in_flight`: calls being served over HTTP.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicI64, Ordering},
        Mutex, MutexGuard,
    },
    time::Duration,
};

use crate::plugins::PluginInfo;

/// Upper bounds of the latency histograms, in seconds.
const CALL_BUCKETS: [f64; 12] = [1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
/// Upper bounds of the drain histogram, in seconds.
const DRAIN_BUCKETS: [f64; 10] = [1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, seconds: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| seconds <= b) {
            self.counts[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    calls: BTreeMap<(String, u64), u64>,
    errors: BTreeMap<(String, u64, &'static str), u64>,
    latency: BTreeMap<String, Histogram>,
    reloads: BTreeMap<(String, &'static str, &'static str), u64>,
    drains: Option<Histogram>,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    http_in_flight: AtomicI64,
}

/// Counts one HTTP call in flight while alive.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.http_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Count a call in flight until the returned guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.http_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Record a call of `function` on `generation` that took `took`; `error`
    /// is the failure kind if it failed.
    pub fn call(&self, function: &str, generation: u64, took: Duration, error: Option<&'static str>) {
        let mut inner = self.lock();
        *inner.calls.entry((function.to_owned(), generation)).or_default() += 1;
        if let Some(kind) = error {
            *inner.errors.entry((function.to_owned(), generation, kind)).or_default() += 1;
        }
        inner
            .latency
            .entry(function.to_owned())
            .or_insert_with(|| Histogram::new(&CALL_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// Record a host operation on `plugin` (`op`: add/reload/remove) and its
    /// outcome (a drain outcome, or `failed`); `drain` is how long the drain
    /// took, if there was one.
    pub fn reload(&self, plugin: &str, op: &'static str, outcome: &'static str, drain: Option<Duration>) {
        let mut inner = self.lock();
        *inner.reloads.entry((plugin.to_owned(), op, outcome)).or_default() += 1;
        if let Some(d) = drain {
            inner.drains.get_or_insert_with(|| Histogram::new(&DRAIN_BUCKETS)).observe(d.as_secs_f64());
        }
    }

    /// The exposition text, with per-plugin gauges from `plugins`.
    pub fn render(&self, plugins: &[PluginInfo]) -> String {
        let inner = self.lock();
        let mut out = String::new();
        header(&mut out, "cutover_calls_total", "counter", "Calls answered, by function and generation.");
        for ((f, g), n) in &inner.calls {
            let _ = writeln!(out, "cutover_calls_total{{function=\"{}\",generation=\"{g}\"}} {n}", esc(f));
        }
        header(&mut out, "cutover_call_errors_total", "counter", "Calls that failed in the plugin, by kind.");
        for ((f, g, k), n) in &inner.errors {
            let _ = writeln!(
                out,
                "cutover_call_errors_total{{function=\"{}\",generation=\"{g}\",kind=\"{k}\"}} {n}",
                esc(f)
            );
        }
        header(&mut out, "cutover_call_duration_seconds", "histogram", "Call latency, by function.");
        for (f, h) in &inner.latency {
            h.render(&mut out, "cutover_call_duration_seconds", &format!("function=\"{}\"", esc(f)));
        }
        header(&mut out, "cutover_reloads_total", "counter", "Host operations (add, reload, remove) by outcome.");
        for ((p, op, o), n) in &inner.reloads {
            let _ = writeln!(out, "cutover_reloads_total{{plugin=\"{}\",op=\"{op}\",outcome=\"{o}\"}} {n}", esc(p));
        }
        header(&mut out, "cutover_drain_duration_seconds", "histogram", "Time from a cutover to the end of its drain.");
        inner.drains.clone().unwrap_or_else(|| Histogram::new(&DRAIN_BUCKETS)).render(
            &mut out,
            "cutover_drain_duration_seconds",
            "",
        );
        drop(inner);
        header(&mut out, "cutover_in_flight", "gauge", "Calls in flight, by plugin and generation.");
        for p in plugins.iter().filter(|p| p.generation > 0) {
            let id = esc(&p.id);
            let _ =
                writeln!(out, "cutover_in_flight{{plugin=\"{id}\",generation=\"{}\"}} {}", p.generation, p.in_flight);
            for d in &p.draining {
                let _ = writeln!(
                    out,
                    "cutover_in_flight{{plugin=\"{id}\",generation=\"{}\"}} {}",
                    d.generation, d.in_flight
                );
            }
        }
        header(&mut out, "cutover_plugin_generation", "gauge", "Each plugin's current generation.");
        for p in plugins.iter().filter(|p| p.generation > 0) {
            let _ = writeln!(out, "cutover_plugin_generation{{plugin=\"{}\"}} {}", esc(&p.id), p.generation);
        }
        header(&mut out, "cutover_plugin_load_error", "gauge", "1 if the plugin's last load failed.");
        for p in plugins {
            let _ = writeln!(
                out,
                "cutover_plugin_load_error{{plugin=\"{}\"}} {}",
                esc(&p.id),
                u8::from(p.last_error.is_some())
            );
        }
        header(&mut out, "cutover_http_calls_in_flight", "gauge", "Calls being served over HTTP.");
        let _ = writeln!(out, "cutover_http_calls_in_flight {}", self.http_in_flight.load(Ordering::Relaxed));
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escape a label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.call("math.mul3", 1, Duration::from_micros(20), None);
        m.call("math.mul3", 1, Duration::from_micros(20), Some("trap"));
        m.reload("math", "reload", "drained", Some(Duration::from_millis(2)));
        let text = m.render(&[]);
        assert!(text.contains("cutover_calls_total{function=\"math.mul3\",generation=\"1\"} 2"));
        assert!(text.contains("cutover_call_errors_total{function=\"math.mul3\",generation=\"1\",kind=\"trap\"} 1"));
        assert!(text.contains("cutover_reloads_total{plugin=\"math\",op=\"reload\",outcome=\"drained\"} 1"));
        assert!(text.contains("cutover_drain_duration_seconds_count 1"));
        assert!(text.contains("cutover_call_duration_seconds_bucket{function=\"math.mul3\",le=\"+Inf\"} 2"));
    }
}
