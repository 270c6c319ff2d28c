//! The soak's report: a readable table, or one JSON object.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::Outcome;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// p50/p99/max of durations, in nanoseconds (zeros when empty).
fn duration_percentiles(values: impl Iterator<Item = Duration>) -> Value {
    let mut h: Histogram<u64> = super::histogram();
    for v in values {
        h.saturating_record(nanos(v).max(1));
    }
    percentiles(&h)
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "p50": 0, "p90": 0, "p99": 0, "max": 0, "mean": 0, "count": 0 });
    }
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "max": h.max(),
        "mean": h.mean().round() as u64,
        "count": h.len(),
    })
}

/// The report as one JSON object.
pub(crate) fn json(o: &Outcome) -> Value {
    let s = &o.stats;
    let succeeded: Vec<_> = o.reloads.iter().filter(|r| r.error.is_none()).collect();
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &o.reloads {
        *outcomes.entry(r.outcome.as_str()).or_default() += 1;
    }
    let secs = o.duration.as_secs_f64();
    json!({
        "plugin": o.plugin,
        "function": o.function,
        "versions": o.versions,
        "threads": o.threads,
        "rows_per_call": o.rows,
        "duration_s": secs,
        "calls": s.calls,
        "calls_per_s": if secs > 0.0 { (s.calls as f64 / secs).round() } else { 0.0 },
        "failed": s.failed,
        "wrong_results": s.wrong,
        "stale_calls": s.stale,
        "reloads": succeeded.len(),
        "reloads_attempted": o.reloads.len(),
        "reload_failures": o.reloads.len() - succeeded.len(),
        "reload_outcomes": outcomes,
        "generations": o.final_generation,
        "generations_serving_calls": s.per_generation.len(),
        "calls_per_generation": s.per_generation.iter().map(|(g, n)| (g.to_string(), *n)).collect::<BTreeMap<_, _>>(),
        "latency_ns": percentiles(&s.latency),
        "reload_window_latency_ns": percentiles(&s.reload_window),
        "cutover_ns": duration_percentiles(succeeded.iter().filter_map(|r| r.cutover)),
        "drain_ns": duration_percentiles(succeeded.iter().filter_map(|r| r.drain)),
        "reload_total_ns": duration_percentiles(succeeded.iter().map(|r| r.total)),
        "errors": s.errors,
        "reload_errors": o.reloads.iter().filter_map(|r| r.error.clone()).collect::<Vec<_>>(),
        "reload_log": o.reloads.iter().map(|r| json!({
            "at_ms": r.at.as_secs_f64() * 1e3,
            "generation": r.generation,
            "outcome": r.outcome,
            "cutover_ns": r.cutover.map(nanos),
            "drain_ns": r.drain.map(nanos),
            "total_ns": nanos(r.total),
        })).collect::<Vec<_>>(),
        "ok": s.failed == 0 && s.stale == 0 && s.calls > 0,
    })
}

fn human_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// The report as a table for people.
pub(crate) fn table(o: &Outcome) -> String {
    let j = json(o);
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = String::new();
    let verdict = if j["ok"].as_bool() == Some(true) {
        "PASS: no call failed, none ran on a stale generation"
    } else {
        "FAIL: see failed / stale calls below"
    };
    let _ = writeln!(out, "cutover soak: {} ({} rows per call)", o.function, o.rows);
    let _ = writeln!(
        out,
        "  {} threads for {:.1} s, {} reloads alternating {}",
        o.threads,
        o.duration.as_secs_f64(),
        o.reloads.len(),
        o.versions.join(" / ")
    );
    let _ = writeln!(out);
    let row = |out: &mut String, k: &str, v: String| {
        let _ = writeln!(out, "  {k:<28} {v}");
    };
    row(&mut out, "calls", format!("{} ({}/s)", n(&j["calls"]), j["calls_per_s"].as_f64().unwrap_or(0.0)));
    row(&mut out, "failed", n(&j["failed"]).to_string());
    row(&mut out, "stale calls", n(&j["stale_calls"]).to_string());
    row(&mut out, "reloads", format!("{} succeeded, {} failed", n(&j["reloads"]), n(&j["reload_failures"])));
    let outcomes: Vec<String> = o
        .reloads
        .iter()
        .fold(BTreeMap::<&str, u64>::new(), |mut m, r| {
            *m.entry(r.outcome.as_str()).or_default() += 1;
            m
        })
        .into_iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    row(&mut out, "drain outcomes", if outcomes.is_empty() { "-".into() } else { outcomes.join(", ") });
    row(
        &mut out,
        "generations",
        format!("{} (calls served by {})", n(&j["generations"]), n(&j["generations_serving_calls"])),
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "  {:<28} {:>10} {:>10} {:>10} {:>10}", "", "p50", "p90", "p99", "max");
    for (label, key) in [
        ("call latency", "latency_ns"),
        ("  during reloads", "reload_window_latency_ns"),
        ("cutover (atomic swap)", "cutover_ns"),
        ("drain (cutover → drained)", "drain_ns"),
        ("whole reload transaction", "reload_total_ns"),
    ] {
        let v = &j[key];
        let _ = writeln!(
            out,
            "  {label:<28} {:>10} {:>10} {:>10} {:>10}",
            human_ns(n(&v["p50"])),
            human_ns(n(&v["p90"])),
            human_ns(n(&v["p99"])),
            human_ns(n(&v["max"]))
        );
    }
    if !o.stats.errors.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "  first errors:");
        for e in &o.stats.errors {
            let _ = writeln!(out, "    {e}");
        }
    }
    for e in o.reloads.iter().filter_map(|r| r.error.as_ref()).take(5) {
        let _ = writeln!(out, "  reload error: {e}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{verdict}");
    out
}
