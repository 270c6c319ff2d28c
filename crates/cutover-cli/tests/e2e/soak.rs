//! End-to-end tests of `cutover soak`: the real binary, its JSON report and
//! its chart.

use crate::common;

use std::process::Command;

use serde_json::Value;

fn soak(args: &[&str]) -> (std::process::ExitStatus, Value, String) {
    let out = Command::new(common::binary()).arg("soak").args(args).arg("--json").output().expect("run cutover soak");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    (out.status, report, stderr)
}

#[test]
fn soak_with_embedded_plugins_reports_no_failed_or_stale_calls() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("soak.svg");
    let (status, r, stderr) =
        soak(&["--threads", "2", "--duration", "2", "--reloads", "6", "--plot", svg.to_str().unwrap()]);
    assert!(status.success(), "{status:?}: {r}\n{stderr}");
    for field in ["calls", "failed", "stale_calls", "reloads", "reload_failures", "generations"] {
        assert!(r[field].is_u64(), "{field} missing in {r}");
    }
    for (field, keys) in [
        ("latency_ns", &["p50", "p99", "max"][..]),
        ("reload_window_latency_ns", &["p50", "p99"][..]),
        ("cutover_ns", &["p50", "p99"][..]),
        ("drain_ns", &["p50", "p99"][..]),
    ] {
        for key in keys {
            assert!(r[field][key].is_u64(), "{field}.{key} missing in {r}");
        }
    }
    assert!(r["calls"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["stale_calls"], 0, "{r}");
    assert_eq!(r["reloads"], 6, "{r}");
    assert_eq!(r["reload_failures"], 0, "{r}");
    assert_eq!(r["generations"], 7, "{r}");
    assert!(r["cutover_ns"]["p50"].as_u64().unwrap() > 0, "{r}");
    assert!(r["latency_ns"]["p50"].as_u64().unwrap() <= r["latency_ns"]["max"].as_u64().unwrap());
    let chart = std::fs::read_to_string(&svg).expect("chart written");
    assert!(chart.contains("<svg") && chart.contains("cutover"), "not an SVG chart");
}

#[test]
fn soak_with_a_plugin_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("calc_v1.wat"), common::math_version(0)).unwrap();
    std::fs::write(dir.path().join("calc_v2.wat"), common::math_version(5)).unwrap();
    std::fs::write(dir.path().join("calc_v3.wat"), common::math_version(9)).unwrap();
    let (status, r, stderr) = soak(&[
        "--plugins",
        dir.path().to_str().unwrap(),
        "--threads",
        "1",
        "--duration",
        "1",
        "--reloads",
        "4",
        "--function",
        "add",
    ]);
    assert!(status.success(), "{status:?}: {r}\n{stderr}");
    assert_eq!(r["function"], "calc.add");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["stale_calls"], 0, "{r}");
    assert_eq!(r["generations"], 5, "{r}");
}

#[test]
fn soak_rejects_a_missing_directory() {
    let out = Command::new(common::binary())
        .args(["soak", "--plugins", "/definitely/not/here", "--duration", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the plugin directory"));
}

/// `mul3`, except that each instance traps from its second batch of 8 rows
/// on (a per-instance row counter): the trial call before the soak passes,
/// and calls during the soak fail as soon as an instance is reused.
const TRAPS_ON_REUSE: &str = r#"(module
  (global $rows (mut i32) (i32.const 0))
  (func (export "mul3") (param $x i64) (result i64)
    global.get $rows
    i32.const 1
    i32.add
    global.set $rows
    global.get $rows
    i32.const 8
    i32.gt_u
    if
      unreachable
    end
    local.get $x
    i64.const 3
    i64.mul))"#;

#[test]
fn soak_exits_non_zero_when_calls_fail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("calc.wat"), TRAPS_ON_REUSE).unwrap();
    let (status, r, stderr) = soak(&[
        "--plugins",
        dir.path().to_str().unwrap(),
        "--threads",
        "1",
        "--duration",
        "1",
        "--reloads",
        "2",
        "--rows",
        "8",
    ]);
    assert!(!status.success(), "failed calls must fail the run: {r}\n{stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["failed"].as_u64().unwrap() > 0, "{r}");
    let first = r["errors"][0].as_str().unwrap_or_default();
    assert!(first.contains("trapped"), "the first error says why: {r}");
}

#[test]
fn soak_with_one_version_says_it_reloads_the_same_version() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("calc.wat"), common::math_version(0)).unwrap();
    let out = Command::new(common::binary())
        .args(["soak", "--plugins"])
        .arg(dir.path())
        .args(["--threads", "1", "--duration", "1", "--reloads", "3"])
        .output()
        .expect("run cutover soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("3 reloads of the same version, calc.wat"), "{stdout}");
    assert!(!stdout.contains("alternating"), "{stdout}");
    assert!(stdout.contains("generations                  4 (the first + 3 successful reloads)"), "{stdout}");
    assert!(stdout.contains("cutover (swap + drain start)"), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");
}

/// Copy built components into a new directory: (file name, component).
fn component_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, from) in files {
        std::fs::copy(from, dir.path().join(name)).unwrap_or_else(|e| panic!("copy {from}: {e}"));
    }
    dir
}

#[test]
fn soak_reloads_component_versions_and_checks_each_versions_results() {
    let dir = component_dir(&[("math_v1.wasm", test_plugins::MATH_V1), ("math_v2.wasm", test_plugins::MATH_V2)]);
    let (status, r, stderr) = soak(&[
        "--plugins",
        dir.path().to_str().unwrap(),
        "--threads",
        "2",
        "--duration",
        "3",
        "--reloads",
        "2",
        "--rows",
        "256",
    ]);
    assert!(status.success(), "{status:?}: {r}\n{stderr}");
    assert_eq!(r["plugin"], "math", "{r}");
    assert_eq!(r["function"], "math.mul3", "{r}");
    assert_eq!(r["versions"], serde_json::json!(["math_v1.wasm", "math_v2.wasm"]), "{r}");
    assert!(r["calls"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["stale_calls"], 0, "{r}");
    assert_eq!(r["reload_failures"], 0, "{r}");
    // Reloads still running when the time is up are not counted (compiling
    // a component takes a while on a busy machine); every call of every
    // generation was checked against its version's results (failed: 0).
    let reloads = r["reloads"].as_u64().unwrap();
    assert!(reloads >= 1, "{r}");
    assert_eq!(r["generations"].as_u64(), Some(reloads + 1), "{r}");
}

#[test]
fn soak_generates_strings_for_utf8_parameters() {
    let dir = component_dir(&[("text.wasm", test_plugins::TEXT)]);
    for function in ["upper", "concat", "length"] {
        let (status, r, stderr) = soak(&[
            "--plugins",
            dir.path().to_str().unwrap(),
            "--threads",
            "1",
            "--duration",
            "1",
            "--reloads",
            "2",
            "--function",
            function,
        ]);
        assert!(status.success(), "{function}: {status:?}: {r}\n{stderr}");
        assert_eq!(r["function"], format!("text.{function}"), "{r}");
        assert_eq!(r["failed"], 0, "{function}: {r}");
        assert!(r["calls"].as_u64().unwrap() > 0, "{function}: {r}");
    }
}

#[test]
fn soak_counts_component_results_that_differ_from_the_version_as_failed() {
    // `types.instance_calls` returns how many calls its instance served
    // before: the trial call (an instance's first) sees 0, later calls on a
    // reused instance do not, so the soak must count them as failed.
    let dir = component_dir(&[("types.wasm", test_plugins::TYPES)]);
    let (status, r, stderr) = soak(&[
        "--plugins",
        dir.path().to_str().unwrap(),
        "--threads",
        "1",
        "--duration",
        "1",
        "--reloads",
        "1",
        "--function",
        "instance_calls",
    ]);
    assert_eq!(status.code(), Some(1), "{r}\n{stderr}");
    assert!(r["failed"].as_u64().unwrap() > 0, "{r}");
    let first = r["errors"][0].as_str().unwrap_or_default();
    assert!(first.contains("does not compute"), "the first error says why: {r}");
}
