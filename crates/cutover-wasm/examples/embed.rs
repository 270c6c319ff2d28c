//! Embedding `cutover-wasm` in your own program: load a directory of
//! WebAssembly plugins into a `cutover::host::Host`, call their functions
//! over Arrow arrays, reload one (a good version, then a broken one that is
//! refused while the old generation keeps serving), and read the snapshots.
//!
//! Run: `cargo run -p cutover-wasm --example embed` (it writes two plugins
//! to a scratch directory and edits them there), or
//! `cargo run -p cutover-wasm --example embed -- DIR` to load your own
//! directory (its files are only read, never changed).
//!
//! The types used here are the stable entry points of the embedding API:
//! `cutover::host::{Host, ReloadOptions, ReloadReport, PluginSnapshot,
//! ReloadError}`, `cutover::{Lease, PluginId}` and `cutover_wasm::{WasmSource,
//! WasmPlugin, WasmLimits, LoadError, CallError}`.

use std::{
    error::Error,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arrow_array::{cast::AsArray, types::Int64Type, ArrayRef, Int64Array};
use cutover::{
    host::{Host, ReloadOptions},
    plugin::PluginSource,
    PluginId,
};
use cutover_wasm::{WasmLimits, WasmPlugin, WasmSource};

type BoxError = Box<dyn Error + Send + Sync>;

/// `math.wat`, version 1: `mul3(x) = 3x`, `add(a, b) = a + b`.
const MATH_V1: &str = r#"(module
  (func (export "init") (result i32) i32.const 0)
  (func (export "mul3") (param i64) (result i64) local.get 0 i64.const 3 i64.mul)
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add))
"#;

/// `math.wat`, version 2: `mul3(x) = 3x + 1`.
const MATH_V2: &str = r#"(module
  (func (export "init") (result i32) i32.const 0)
  (func (export "mul3") (param i64) (result i64) local.get 0 i64.const 3 i64.mul i64.const 1 i64.add)
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add))
"#;

/// `math.wat`, broken: `i64.const` lacks its operand (line 3).
const MATH_BROKEN: &str =
    "(module\n  (func (export \"mul3\") (param i64) (result i64)\n    local.get 0 i64.const i64.mul))\n";

/// `geo.wat`: `area(w, h) = w * h`.
const GEO: &str = r#"(module
  (func (export "area") (param i64 i64) (result i64) local.get 0 local.get 1 i64.mul))
"#;

/// One WebAssembly plugin per `.wat`/`.wasm` file of `dir`, with the file
/// stem as its id, sorted by id.
fn sources(dir: &Path, limits: &WasmLimits) -> Result<Vec<(PluginId, WasmSource)>, BoxError> {
    let mut sources = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("cannot read the plugin directory `{}`: {e}", dir.display()))? {
        let path = entry?.path();
        let is_plugin = matches!(path.extension().and_then(|e| e.to_str()), Some("wat" | "wasm"));
        if !is_plugin || !path.is_file() {
            continue;
        }
        // A file source re-reads the file on every (re)load; load errors
        // name the path. Its id is the file stem (`math.wat` → `math`).
        let source = WasmSource::from_file(&path).with_limits(limits.clone());
        let id = source.id().ok_or_else(|| format!("`{}`: the file stem is not a valid plugin id", path.display()))?;
        sources.push((id, source));
    }
    sources.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(sources)
}

/// Call `function` of plugin `id` over `args`, on whatever generation serves
/// now; the generation and the result column.
fn call(
    host: &Host<WasmPlugin>,
    id: &PluginId,
    function: &str,
    args: &[ArrayRef],
) -> Result<(u64, Vec<Option<i64>>), BoxError> {
    // The lease pins one generation for the whole call: a reload that cuts
    // over meanwhile does not affect it, and the old generation is not shut
    // down until the lease is dropped.
    let lease = host.lease(id).ok_or_else(|| format!("no plugin `{id}` is loaded"))?;
    let result = lease.call(function, args)?;
    let values = result.as_primitive::<Int64Type>().iter().collect();
    Ok((lease.generation(), values))
}

/// `[3, null, 21]`.
fn show(values: &[Option<i64>]) -> String {
    let items: Vec<String> = values.iter().map(|v| v.map_or("null".to_owned(), |v| v.to_string())).collect();
    format!("[{}]", items.join(", "))
}

fn column(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

/// What `run` saw, for the test.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // read by the test
struct Seen {
    ids: Vec<String>,
    before: (u64, Vec<Option<i64>>),
    after: (u64, Vec<Option<i64>>),
    broken_error: Option<String>,
    after_broken: Option<(u64, Vec<Option<i64>>)>,
}

/// The whole embedding: load `dir`, call, reload, read snapshots. With
/// `edit`, `dir/math.wat` is rewritten to show a reload picking up a new
/// version and refusing a broken one.
fn run(dir: &Path, edit: bool) -> Result<Seen, BoxError> {
    // 1. Limits for every plugin: 200 ms per call, 2 s for `init` (which
    //    runs once per prewarmed instance), 2 prewarmed instances.
    let limits = WasmLimits::default()
        .call_timeout(Duration::from_millis(200))
        .init_timeout(Duration::from_secs(2))
        .prewarm_instances(2);

    // 2. Load the directory: every plugin is loaded, linked and initialized,
    //    all or nothing, in dependency order.
    let host: Host<WasmPlugin> = Host::new();
    let sources = sources(dir, &limits)?;
    let batch: Vec<(PluginId, &dyn PluginSource<WasmPlugin>)> =
        sources.iter().map(|(id, source)| (id.clone(), source as &dyn PluginSource<WasmPlugin>)).collect();
    host.add_all(batch)?;
    let ids: Vec<String> = host.ids().iter().map(ToString::to_string).collect();
    println!("loaded {} plugin(s) from {}: {}", ids.len(), dir.display(), ids.join(", "));
    for snapshot in host.snapshots() {
        println!("  {} generation {}: {}", snapshot.id, snapshot.generation, snapshot.functions.join(", "));
    }

    // 3. Call over Arrow arrays: one column per argument, nulls propagate.
    let math = PluginId::new("math");
    let x: [ArrayRef; 1] = [Arc::new(Int64Array::from(vec![Some(1), None, Some(7)]))];
    let before = call(&host, &math, "math.mul3", &x)?;
    println!("math.mul3([1, null, 7]) = {}  (generation {})", show(&before.1), before.0);
    if host.contains(&PluginId::new("geo")) {
        let (g, area) = call(&host, &PluginId::new("geo"), "geo.area", &[column(&[2, 3]), column(&[10, 10])])?;
        println!("geo.area([2, 3], [10, 10]) = {}  (generation {g})", show(&area));
    }

    // 4. Reload: build the new generation from the file as it is now, cut
    //    over, drain the old one (deadline 5 s), shut it down.
    let source = &sources.iter().find(|(id, _)| *id == math).ok_or("no `math` plugin in the directory")?.1;
    let options = ReloadOptions::default().deadline(Duration::from_secs(5));
    if edit {
        fs::write(dir.join("math.wat"), MATH_V2)?;
    }
    let report = host.reload(&math, source, &options)?;
    println!(
        "reloaded math: generation {} → {}, old generation {} (load {:.1?}, cutover {:.1?})",
        report.previous.unwrap_or(0),
        report.generation.unwrap_or(0),
        report.outcome,
        report.phases.load,
        report.phases.cutover
    );
    let after = call(&host, &math, "math.mul3", &x)?;
    println!("math.mul3([1, null, 7]) = {}  (generation {})", show(&after.1), after.0);

    // 5. A broken version is refused; the old generation keeps serving and
    //    the error (naming the file, line and column) is kept.
    let (mut broken_error, mut after_broken) = (None, None);
    if edit {
        fs::write(dir.join("math.wat"), MATH_BROKEN)?;
        let err = host.reload(&math, source, &options).expect_err("the broken version must be refused");
        println!("reload refused: {err}");
        broken_error = Some(err.to_string());
        let still = call(&host, &math, "math.mul3", &x)?;
        println!("math.mul3([1, null, 7]) = {}  (generation {}, still serving)", show(&still.1), still.0);
        after_broken = Some(still);
    }

    // 6. Snapshots: what a health endpoint or a metrics exporter reads.
    for s in host.snapshots() {
        let last = s.last_reload.as_ref().map(|r| format!("{:?} → {}", r.kind, r.outcome)).unwrap_or_default();
        println!(
            "snapshot {}: generation {}, {:?}, {} in flight, {} draining, last operation {last}, last error: {}",
            s.id,
            s.generation,
            s.state,
            s.in_flight,
            s.draining.len(),
            s.last_error.as_deref().map_or("none", |e| e.lines().next().unwrap_or(e)),
        );
    }

    // 7. Shut down: remove every plugin (drain, shut down, finalize).
    for id in host.ids() {
        host.remove(&id, &options)?;
    }
    Ok(Seen { ids, before, after, broken_error, after_broken })
}

/// A scratch directory with `math.wat` (version 1) and `geo.wat`.
fn scratch_dir(tag: &str) -> Result<PathBuf, BoxError> {
    let dir = std::env::temp_dir().join(format!("cutover-embed-{tag}-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("math.wat"), MATH_V1)?;
    fs::write(dir.join("geo.wat"), GEO)?;
    Ok(dir)
}

fn main() -> Result<(), BoxError> {
    match std::env::args_os().nth(1) {
        Some(dir) => {
            run(Path::new(&dir), false)?;
        }
        None => {
            let dir = scratch_dir("example")?;
            let result = run(&dir, true);
            let _ = fs::remove_dir_all(&dir);
            result?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedding_walkthrough_loads_calls_reloads_and_refuses_a_broken_version() {
        let dir = scratch_dir("test").unwrap();
        let seen = run(&dir, true);
        let _ = fs::remove_dir_all(&dir);
        let seen = seen.unwrap();
        assert_eq!(seen.ids, ["geo", "math"]);
        assert_eq!(seen.before, (1, vec![Some(3), None, Some(21)]));
        assert_eq!(seen.after, (2, vec![Some(4), None, Some(22)]));
        let err = seen.broken_error.expect("the broken version was refused");
        assert!(err.contains("load failed") && err.contains("math.wat:3:"), "{err}");
        assert_eq!(seen.after_broken, Some((2, vec![Some(4), None, Some(22)])));
    }
}
