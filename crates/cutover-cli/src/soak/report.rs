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
        "calls_over_1ms": calls_over(&s.latency, SLOW_NS),
        "other_cpu_cores": o.other_cores.map(|c| (c * 100.0).round() / 100.0),
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

/// What counts as a slow call in the report: 1 ms.
const SLOW_NS: u64 = 1_000_000;

/// Calls that took more than `ns`.
fn calls_over(h: &Histogram<u64>, ns: u64) -> u64 {
    h.len().saturating_sub(h.count_between(0, ns))
}

/// `1 reload`, `2 reloads`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The reloads, as the header says them: which versions, in what order.
fn reload_plan(o: &Outcome) -> String {
    let n = plural(o.reloads.len() as u64, "reload");
    match o.versions.as_slice() {
        [one] => format!("{n} of the same version, {one} (each loads it again)"),
        [a, b] => format!("{n} alternating {a} / {b}"),
        all => format!("{n} cycling through {}", all.join(" / ")),
    }
}

/// A hint when the slowest call is far above the slowest call during a
/// reload: the reloads did not cause it, so say what likely did.
fn slow_call_note(o: &Outcome) -> Option<String> {
    let s = &o.stats;
    let (max, window_max) = (s.latency.max(), s.reload_window.max());
    if s.reload_window.is_empty() || max < 4 * window_max.max(1) {
        return None;
    }
    let slow = calls_over(&s.latency, SLOW_NS);
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cause = match o.other_cores {
        Some(busy) if busy >= 0.25 => format!(
            "other processes kept {busy:.1} of this machine's {cores} cores busy during the run: a calling thread \
             preempted by them is the likely cause, not the reloads"
        ),
        Some(busy) => format!(
            "the rest of the machine was quiet ({busy:.2} cores used by other processes); the reloads did not cause it"
        ),
        None => "the reloads did not cause it (how busy the machine was is unknown here)".to_owned(),
    };
    Some(format!(
        "note: the slowest call ({}) took {:.0}× the slowest call during a reload ({}); {} ({:.4}%) took over 1 ms; \
         {cause}.",
        human_ns(max),
        max as f64 / window_max.max(1) as f64,
        human_ns(window_max),
        plural(slow, "call"),
        slow as f64 * 100.0 / s.calls.max(1) as f64,
    ))
}

/// `text` wrapped at `width` columns, the first line after `first`, the
/// others after `rest`.
fn wrap(text: &str, first: &str, rest: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(rest);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
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
    let _ = writeln!(out, "  {} threads for {:.1} s, {}", o.threads, o.duration.as_secs_f64(), reload_plan(o));
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
    let (generations, serving) = (n(&j["generations"]), n(&j["generations_serving_calls"]));
    let served =
        if serving == generations { "each served calls".to_owned() } else { format!("{serving} of them served calls") };
    row(
        &mut out,
        "generations",
        format!("{generations} (the first + {}); {served}", plural(n(&j["reloads"]), "successful reload")),
    );
    let slow = n(&j["calls_over_1ms"]);
    row(
        &mut out,
        "calls over 1 ms",
        format!("{slow} ({:.4}% of calls)", slow as f64 * 100.0 / n(&j["calls"]).max(1) as f64),
    );
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    row(
        &mut out,
        "other processes' CPU",
        match j["other_cpu_cores"].as_f64() {
            Some(busy) => format!("{busy:.2} of {cores} cores on average during the run"),
            None => "unknown (no /proc/stat)".to_owned(),
        },
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "  {:<28} {:>10} {:>10} {:>10} {:>10}", "", "p50", "p90", "p99", "max");
    for (label, key) in [
        ("call latency", "latency_ns"),
        ("  during reloads", "reload_window_latency_ns"),
        ("cutover (swap + drain start)", "cutover_ns"),
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
    if let Some(note) = slow_call_note(o) {
        let _ = writeln!(out);
        out.push_str(&wrap(&note, "  ", "        ", 100));
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

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use super::{reload_plan, slow_call_note, table, wrap};
    use crate::soak::{histogram, Outcome, ReloadRecord, StatsView};

    /// A run of 1,000 calls at 2 µs, one of them `slowest_ns`; calls during
    /// reloads at most `reload_max_ns`.
    fn outcome(versions: &[&str], slowest_ns: u64, reload_max_ns: u64, other_cores: Option<f64>) -> Outcome {
        let mut latency = histogram();
        latency.record_n(2_000, 999).unwrap();
        latency.record(slowest_ns).unwrap();
        let mut reload_window = histogram();
        reload_window.record_n(2_000, 99).unwrap();
        reload_window.record(reload_max_ns).unwrap();
        let reload = ReloadRecord {
            at: Duration::from_millis(500),
            generation: Some(2),
            outcome: "drained".into(),
            cutover: Some(Duration::from_micros(5)),
            drain: Some(Duration::from_micros(30)),
            total: Duration::from_millis(5),
            error: None,
        };
        Outcome {
            plugin: "math".into(),
            function: "math.mul3".into(),
            versions: versions.iter().map(|v| (*v).to_owned()).collect(),
            threads: 2,
            rows: 64,
            duration: Duration::from_secs(1),
            window: Duration::from_millis(100),
            stats: StatsView {
                calls: 1_000,
                failed: 0,
                wrong: 0,
                stale: 0,
                latency,
                reload_window,
                per_generation: BTreeMap::from([(1, 500), (2, 500)]),
                windows: Vec::new(),
                errors: Vec::new(),
            },
            reloads: vec![reload],
            cutovers: vec![(Duration::from_millis(505), 2)],
            drains: vec![(Duration::from_millis(506), 1)],
            final_generation: 2,
            other_cores,
        }
    }

    #[test]
    fn the_header_says_how_versions_are_reloaded() {
        assert_eq!(
            reload_plan(&outcome(&["a.wat"], 3_000, 3_000, None)),
            "1 reload of the same version, a.wat (each loads it again)"
        );
        assert_eq!(
            reload_plan(&outcome(&["a.wat", "b.wat"], 3_000, 3_000, None)),
            "1 reload alternating a.wat / b.wat"
        );
        assert_eq!(
            reload_plan(&outcome(&["a.wat", "b.wat", "c.wat"], 3_000, 3_000, None)),
            "1 reload cycling through a.wat / b.wat / c.wat"
        );
    }

    #[test]
    fn a_slowest_call_far_above_the_reload_window_gets_a_note() {
        // 50 ms against 1 ms during reloads, on a busy machine.
        let busy = slow_call_note(&outcome(&["a", "b"], 50_000_000, 1_000_000, Some(1.2))).expect("a note");
        assert!(busy.contains("50.0 ms") && busy.contains("1.0 ms"), "{busy}");
        assert!(busy.contains("1 call (0.1000%) took over 1 ms"), "{busy}");
        assert!(busy.contains("other processes kept 1.2"), "{busy}");
        let quiet = slow_call_note(&outcome(&["a", "b"], 50_000_000, 1_000_000, Some(0.01))).expect("a note");
        assert!(quiet.contains("quiet"), "{quiet}");
        // Comparable maxima: no note.
        assert_eq!(slow_call_note(&outcome(&["a", "b"], 2_000_000, 1_000_000, Some(1.2))), None);
        // The table carries it, wrapped.
        let t = table(&outcome(&["a", "b"], 50_000_000, 1_000_000, Some(1.2)));
        assert!(t.contains("  note: the slowest call"), "{t}");
        assert!(t.lines().all(|l| l.chars().count() <= 100), "{t}");
    }

    #[test]
    fn the_table_labels_say_what_was_measured() {
        let t = table(&outcome(&["a", "b"], 3_000, 3_000, Some(0.1)));
        assert!(t.contains("cutover (swap + drain start)"), "{t}");
        assert!(
            t.contains("generations                  2 (the first + 1 successful reload); each served calls"),
            "{t}"
        );
        assert!(t.contains("calls over 1 ms              0 (0.0000% of calls)"), "{t}");
        assert!(!t.contains("note:"), "{t}");
    }

    #[test]
    fn notes_wrap_at_the_width_with_indents() {
        let text = "note: the slowest call took far longer than the slowest call during a reload; the reloads did not cause it.";
        let wrapped = wrap(text, "  ", "        ", 40);
        for line in wrapped.lines() {
            assert!(line.chars().count() <= 40, "{line:?}");
        }
        assert!(wrapped.starts_with("  note: "));
        assert!(wrapped.lines().skip(1).all(|l| l.starts_with("        ") && !l[8..].starts_with(' ')));
        assert_eq!(wrapped.split_whitespace().collect::<Vec<_>>(), text.split_whitespace().collect::<Vec<_>>());
    }
}
