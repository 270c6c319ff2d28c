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
//! * `cutover_plugin_load_error{plugin}`: 1 if the plugin's last load
//!   failed (its previous generation, if any, keeps serving), else 0.
//! * `cutover_http_calls_in_flight`: calls being served over HTTP.
//! * `cutover_http_connections`: open HTTP connections.
//! * `cutover_http_requests_in_progress`: requests in handling, as counted
//!   against `--max-requests` (scrapes of `/metrics` are not counted).
//! * `cutover_http_rejected_total{reason}`: requests and connections
//!   refused by a limit (`connections`, `requests`, `plugin_busy`,
//!   `body_too_large`, `body_timeout`, `too_many_rows`, `head_too_large`).
//! * `cutover_plugin_file_reads_total`: plugin files read (and hashed); it
//!   does not move while nothing changes on disk.
//!
//! Series are kept only for what is alive: per-generation series of a
//! generation that is neither current nor draining, and every series of a
//! removed plugin, are dropped ([`Metrics::retain_alive`]), so label
//! cardinality is bounded by the plugins and generations alive.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicI64, AtomicUsize, Ordering},
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
    /// Per function, per generation: looked up by `&str` on the call path
    /// (no allocation once the series exists).
    calls: BTreeMap<String, BTreeMap<u64, u64>>,
    errors: BTreeMap<(String, u64, &'static str), u64>,
    latency: BTreeMap<String, Histogram>,
    reloads: BTreeMap<(String, &'static str, &'static str), u64>,
    drains: Option<Histogram>,
    rejected: BTreeMap<&'static str, u64>,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    http_in_flight: AtomicI64,
    connections: AtomicI64,
    requests: AtomicUsize,
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

    /// The count of requests in handling: the server's `--max-requests`
    /// limit is checked against it, and it is rendered as the
    /// `cutover_http_requests_in_progress` gauge.
    pub fn requests_in_progress(&self) -> &AtomicUsize {
        &self.requests
    }

    /// Record a call of `function` on `generation` that took `took`; `error`
    /// is the failure kind if it failed.
    pub fn call(&self, function: &str, generation: u64, took: Duration, error: Option<&'static str>) {
        let mut inner = self.lock();
        match inner.calls.get_mut(function) {
            Some(by_generation) => *by_generation.entry(generation).or_default() += 1,
            None => {
                inner.calls.insert(function.to_owned(), BTreeMap::from([(generation, 1)]));
            }
        }
        if let Some(kind) = error {
            *inner.errors.entry((function.to_owned(), generation, kind)).or_default() += 1;
        }
        match inner.latency.get_mut(function) {
            Some(histogram) => histogram.observe(took.as_secs_f64()),
            None => {
                let mut histogram = Histogram::new(&CALL_BUCKETS);
                histogram.observe(took.as_secs_f64());
                inner.latency.insert(function.to_owned(), histogram);
            }
        }
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

    /// Count a request or connection refused by a limit.
    pub fn rejected(&self, reason: &'static str) {
        *self.lock().rejected.entry(reason).or_default() += 1;
    }

    /// Count an open connection (`+1`) or a closed one (`-1`).
    pub fn connections(&self, delta: i64) {
        self.connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// Drop every series of plugin `plugin` (it was removed).
    pub fn forget_plugin(&self, plugin: &str) {
        let mut inner = self.lock();
        inner.reloads.retain(|(p, _, _), _| p != plugin);
        let prefix = format!("{plugin}.");
        inner.calls.retain(|f, _| !f.starts_with(&prefix));
        inner.errors.retain(|(f, _, _), _| !f.starts_with(&prefix));
        inner.latency.retain(|f, _| !f.starts_with(&prefix));
    }

    /// Keep only the series of what is alive in `plugins`: per-generation
    /// series of current or draining generations, function series of
    /// loaded plugins, reload series of listed plugins.
    pub fn retain_alive(&self, plugins: &[PluginInfo]) {
        let alive = |f: &str, g: Option<u64>| {
            plugins.iter().any(|p| {
                f.len() > p.id.len()
                    && f.starts_with(p.id.as_str())
                    && f.as_bytes()[p.id.len()] == b'.'
                    && g.is_none_or(|g| p.generation == g || p.draining.iter().any(|d| d.generation == g))
            })
        };
        let mut inner = self.lock();
        for (f, by_generation) in &mut inner.calls {
            by_generation.retain(|g, _| alive(f, Some(*g)));
        }
        inner.calls.retain(|_, by_generation| !by_generation.is_empty());
        inner.errors.retain(|(f, g, _), _| alive(f, Some(*g)));
        inner.latency.retain(|f, _| alive(f, None));
        inner.reloads.retain(|(p, _, _), _| plugins.iter().any(|i| &i.id == p));
    }

    /// The exposition text, with per-plugin gauges from `plugins`.
    pub fn render(&self, plugins: &[PluginInfo], file_reads: u64) -> String {
        self.retain_alive(plugins);
        let inner = self.lock();
        let mut out = String::new();
        header(&mut out, "cutover_calls_total", "counter", "Calls answered, by function and generation.");
        for ((f, g), n) in inner.calls.iter().flat_map(|(f, m)| m.iter().map(move |(g, n)| ((f, g), n))) {
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
        header(&mut out, "cutover_http_rejected_total", "counter", "Requests and connections refused by a limit.");
        for (reason, n) in &inner.rejected {
            let _ = writeln!(out, "cutover_http_rejected_total{{reason=\"{reason}\"}} {n}");
        }
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
        header(&mut out, "cutover_http_requests_in_progress", "gauge", "Requests in handling (not counting /metrics).");
        let _ = writeln!(out, "cutover_http_requests_in_progress {}", self.requests.load(Ordering::Relaxed));
        header(&mut out, "cutover_http_connections", "gauge", "Open HTTP connections.");
        let _ = writeln!(out, "cutover_http_connections {}", self.connections.load(Ordering::Relaxed));
        header(&mut out, "cutover_plugin_file_reads_total", "counter", "Plugin files read and hashed.");
        let _ = writeln!(out, "cutover_plugin_file_reads_total {file_reads}");
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
        let math = |generation| PluginInfo {
            id: "math".into(),
            generation,
            state: "Active".into(),
            in_flight: 0,
            draining: Vec::new(),
            functions: vec!["math.mul3".into()],
            signatures: Vec::new(),
            last_error: None,
            path: String::new(),
            format: None,
            kind: None,
            config_path: None,
            reloading: None,
        };
        let text = m.render(&[math(1)], 0);
        assert!(text.contains("cutover_calls_total{function=\"math.mul3\",generation=\"1\"} 2"));
        assert!(text.contains("cutover_call_errors_total{function=\"math.mul3\",generation=\"1\",kind=\"trap\"} 1"));
        assert!(text.contains("cutover_reloads_total{plugin=\"math\",op=\"reload\",outcome=\"drained\"} 1"));
        assert!(text.contains("cutover_drain_duration_seconds_count 1"));
        assert!(text.contains("cutover_call_duration_seconds_bucket{function=\"math.mul3\",le=\"+Inf\"} 2"));

        // Generation 2 replaced 1: generation 1's series are gone.
        m.call("math.mul3", 2, Duration::from_micros(20), None);
        let text = m.render(&[math(2)], 0);
        assert!(!text.contains("generation=\"1\""), "{text}");
        assert!(text.contains("cutover_calls_total{function=\"math.mul3\",generation=\"2\"} 1"), "{text}");
        // Removed: nothing of it is left.
        m.forget_plugin("math");
        let text = m.render(&[], 0);
        assert!(!text.contains("math"), "{text}");
    }
}
