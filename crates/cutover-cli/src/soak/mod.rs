//! `cutover soak`: calls under continuous reload, measured.
//!
//! N threads call one plugin function as fast as they can for the duration,
//! while K reloads, spread evenly over it, cycle the plugin through its
//! versions (with a single version, each reload loads that version again)
//! through the host's reload transaction. Every call is timed and
//! checked:
//!
//! * **failed**: the call returned an error, found no plugin, or returned a
//!   result different from what the version serving its generation computes
//!   (each version is run once beforehand to get the expected results);
//! * **stale**: the call began after a cutover to generation G had returned
//!   (published by the reload discipline's `at_cutover` hook, which runs
//!   right after the cutover) yet its lease had a generation below G.
//!
//! Both must be 0; the command exits non-zero otherwise.

mod machine;
mod plot;
mod report;

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
};
use cutover::{
    host::{Host, ReloadDiscipline, ReloadOptions},
    PluginId,
};
use cutover_wasm::{Signature, ValueType, WasmPlugin, WasmSource};
use hdrhistogram::Histogram;

use crate::plugins::{config_path_for, plugin_id_for, read_config};

const DEFAULT_V1: &str = include_str!("plugins/math_v1.wat");
const DEFAULT_V2: &str = include_str!("plugins/math_v2.wat");

/// Flags of `cutover soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// A directory whose `.wat`/`.wasm` files (core modules or components)
    /// are versions of one plugin, used in file-name order; a version's
    /// `<stem>.config` file, if any, is its configuration text (default: two
    /// versions of a math plugin embedded in the binary).
    #[arg(long, value_name = "DIR", value_parser = crate::parse_dir)]
    pub plugins: Option<PathBuf>,
    /// Calling threads.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub threads: u32,
    /// How long to call, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_duration)]
    pub duration: f64,
    /// Reloads, spread evenly over the duration, cycling through the
    /// versions (with one version, each reload loads it again).
    #[arg(long, value_name = "K", default_value_t = 20)]
    pub reloads: u32,
    /// Rows per call (each call applies the function to a batch).
    #[arg(long, value_name = "ROWS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rows: u32,
    /// The function to call (export name, e.g. `mul3`); default `mul3` if
    /// every version has it, else the first function all versions share.
    #[arg(long, value_name = "NAME")]
    pub function: Option<String>,
    /// How long a reload waits for the old generation's calls before
    /// escalating, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub drain_deadline_ms: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG chart of latency, cutovers, drains and generation shares.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!("the duration must be more than 0 and at most 86400 seconds, got {s}"))
    }
}

/// One version of the plugin.
struct Version {
    name: String,
    source: WasmSource,
    expected: ArrayRef,
}

/// Shared between the callers, the reloader and the discipline.
struct Timeline {
    start: Instant,
    /// The lowest generation a call beginning now may see: published right
    /// after each cutover.
    floor: AtomicU64,
    /// The generation the reload in progress will create.
    pending: AtomicU64,
    reloading: AtomicBool,
    stop: AtomicBool,
    /// (time since start, new generation) of each cutover.
    cutovers: Mutex<Vec<(Duration, u64)>>,
    /// (time since start, drained generation) of each drain completion.
    drains: Mutex<Vec<(Duration, u64)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Publishes each cutover (and drain) the moment the transaction reaches it.
struct Marker(Arc<Timeline>);

impl ReloadDiscipline<WasmPlugin> for Marker {
    fn at_cutover(&self, _old: &WasmPlugin, _new: &WasmPlugin) {
        let g = self.0.pending.load(Ordering::Acquire);
        self.0.floor.fetch_max(g, Ordering::AcqRel);
        lock(&self.0.cutovers).push((self.0.start.elapsed(), g));
    }

    fn after_drain(&self, _old: &WasmPlugin) {
        let g = self.0.pending.load(Ordering::Acquire).saturating_sub(1);
        lock(&self.0.drains).push((self.0.start.elapsed(), g));
    }
}

/// Per-window data, for the plot.
#[derive(Clone)]
pub(crate) struct Window {
    pub(crate) latency: Histogram<u32>,
    /// (generation, calls) served in the window.
    pub(crate) generations: Vec<(u64, u64)>,
}

impl Window {
    fn new() -> Self {
        Self { latency: window_histogram(), generations: Vec::new() }
    }
}

fn window_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 10_000_000_000, 2).unwrap_or_else(|_| unreachable!("valid bounds"))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// What one calling thread measured.
struct Stats {
    calls: u64,
    failed: u64,
    wrong: u64,
    stale: u64,
    latency: Histogram<u64>,
    reload_window: Histogram<u64>,
    per_generation: BTreeMap<u64, u64>,
    windows: Vec<Window>,
    errors: Vec<String>,
}

impl Stats {
    fn new() -> Self {
        Self {
            calls: 0,
            failed: 0,
            wrong: 0,
            stale: 0,
            latency: histogram(),
            reload_window: histogram(),
            per_generation: BTreeMap::new(),
            windows: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn error(&mut self, message: String) {
        self.failed += 1;
        if self.errors.len() < 5 {
            self.errors.push(message);
        }
    }

    fn merge(&mut self, other: Stats) {
        self.calls += other.calls;
        self.failed += other.failed;
        self.wrong += other.wrong;
        self.stale += other.stale;
        let _ = self.latency.add(&other.latency);
        let _ = self.reload_window.add(&other.reload_window);
        for (g, n) in other.per_generation {
            *self.per_generation.entry(g).or_default() += n;
        }
        if self.windows.len() < other.windows.len() {
            self.windows.resize_with(other.windows.len(), Window::new);
        }
        for (mine, theirs) in self.windows.iter_mut().zip(other.windows) {
            let _ = mine.latency.add(&theirs.latency);
            for (g, n) in theirs.generations {
                bump(&mut mine.generations, g, n);
            }
        }
        for e in other.errors {
            if self.errors.len() < 5 {
                self.errors.push(e);
            }
        }
    }
}

fn bump(generations: &mut Vec<(u64, u64)>, g: u64, n: u64) {
    match generations.iter_mut().find(|(h, _)| *h == g) {
        Some((_, count)) => *count += n,
        None => generations.push((g, n)),
    }
}

/// One reload, as the reloader saw it.
#[derive(Debug, Clone)]
pub(crate) struct ReloadRecord {
    /// Time since start when it began.
    pub(crate) at: Duration,
    /// The generation it created (if it succeeded).
    pub(crate) generation: Option<u64>,
    pub(crate) outcome: String,
    pub(crate) cutover: Option<Duration>,
    pub(crate) drain: Option<Duration>,
    pub(crate) total: Duration,
    pub(crate) error: Option<String>,
}

/// Everything a soak measured, for the report and the plot.
pub(crate) struct Outcome {
    pub(crate) plugin: String,
    pub(crate) function: String,
    pub(crate) versions: Vec<String>,
    pub(crate) threads: u32,
    pub(crate) rows: u32,
    pub(crate) duration: Duration,
    pub(crate) window: Duration,
    pub(crate) stats: StatsView,
    pub(crate) reloads: Vec<ReloadRecord>,
    pub(crate) cutovers: Vec<(Duration, u64)>,
    pub(crate) drains: Vec<(Duration, u64)>,
    pub(crate) final_generation: u64,
    /// Cores other processes kept busy on average during the run, if known.
    pub(crate) other_cores: Option<f64>,
}

/// The merged measurements.
pub(crate) struct StatsView {
    pub(crate) calls: u64,
    pub(crate) failed: u64,
    pub(crate) wrong: u64,
    pub(crate) stale: u64,
    pub(crate) latency: Histogram<u64>,
    pub(crate) reload_window: Histogram<u64>,
    pub(crate) per_generation: BTreeMap<u64, u64>,
    pub(crate) windows: Vec<Window>,
    pub(crate) errors: Vec<String>,
}

/// Run `cutover soak`.
///
/// # Errors
/// The plugins could not be read or loaded, or the chart not written.
pub fn run(args: SoakArgs) -> anyhow::Result<ExitCode> {
    let (id, sources) = match &args.plugins {
        Some(dir) => versions_from_dir(dir)?,
        None => (
            PluginId::new("math"),
            vec![
                ("math_v1.wat (embedded)".to_owned(), WasmSource::from_wat(DEFAULT_V1)),
                ("math_v2.wat (embedded)".to_owned(), WasmSource::from_wat(DEFAULT_V2)),
            ],
        ),
    };
    // Ready (linked and initialized): a component's functions are known
    // only once it is linked.
    let mut loaded = Vec::new();
    for (name, source) in sources {
        let plugin = source.load_ready(&id).with_context(|| format!("cannot load plugin version {name}"))?;
        loaded.push((name, source, plugin));
    }
    let plugins: Vec<(&String, &WasmPlugin)> = loaded.iter().map(|(name, _, plugin)| (name, plugin)).collect();
    let (function, signature) = pick_function(&id, &plugins, args.function.as_deref())?;
    let args_columns = arguments(&signature, args.rows as usize);
    let mut versions = Vec::new();
    for (name, source, plugin) in loaded {
        let expected = plugin
            .call(&function, &args_columns)
            .with_context(|| format!("the trial call of {function} on version {name} failed"))?;
        versions.push(Version { name, source, expected });
    }

    let outcome = soak(&args, &id, &function, &args_columns, &versions)?;
    if let Some(path) = &args.plot {
        plot::write(path, &outcome)
            .map_err(|e| anyhow::anyhow!("cannot write the chart to `{}`: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report::json(&outcome))?);
    } else {
        print!("{}", report::table(&outcome));
        if let Some(path) = &args.plot {
            println!("chart written to {}", path.display());
        }
    }
    let ok = outcome.stats.failed == 0 && outcome.stats.stale == 0 && outcome.stats.calls > 0;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The versions in `dir`, in file-name order, each with its `.config` file
/// if it has one, and the plugin id (the first file's stem without a
/// `_vN`/`-vN` suffix).
fn versions_from_dir(dir: &Path) -> anyhow::Result<(PluginId, Vec<(String, WasmSource)>)> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read the plugin directory `{}`", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && plugin_id_for(p).is_some())
        .collect();
    paths.sort();
    let Some(first) = paths.first() else {
        bail!("no .wat or .wasm plugin files in `{}`", dir.display());
    };
    let stem = plugin_id_for(first).map(|id| id.to_string()).unwrap_or_default();
    let base = match stem.rsplit_once(['_', '-']) {
        Some((base, v))
            if !base.is_empty() && v.len() > 1 && v.starts_with('v') && v[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            base.to_owned()
        }
        _ => stem.clone(),
    };
    let id = PluginId::parse(&base).with_context(|| format!("`{base}` is not a valid plugin id"))?;
    let sources = paths
        .iter()
        .map(|p| -> anyhow::Result<(String, WasmSource)> {
            let mut name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let mut source = WasmSource::from_file(p);
            let config_path = config_path_for(p);
            if let Some(config) = read_config(&config_path).map_err(anyhow::Error::msg)? {
                let config_name = config_path.file_name().map(|n| n.to_string_lossy().into_owned());
                name = format!("{name} + {}", config_name.unwrap_or_default());
                source = source.with_config(config);
            }
            Ok((name, source))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((id, sources))
}

/// The function to call: `wanted`, else `mul3`, else the first one every
/// version has; it must have the same signature in every version.
fn pick_function(
    id: &PluginId,
    plugins: &[(&String, &WasmPlugin)],
    wanted: Option<&str>,
) -> anyhow::Result<(String, Signature)> {
    let Some((_, first)) = plugins.first() else {
        bail!("no plugin versions to soak");
    };
    let common = |f: &str| -> Option<Signature> {
        let sig = first.signature(f)?;
        plugins.iter().all(|(_, p)| p.signature(f) == Some(sig)).then(|| sig.clone())
    };
    let full = |export: &str| format!("{id}.{export}");
    if let Some(w) = wanted {
        let name = if w.starts_with(&format!("{id}.")) { w.to_owned() } else { full(w) };
        return match common(&name) {
            Some(sig) => Ok((name, sig)),
            None => bail!(
                "the function `{name}` is not provided, with one signature, by every version; the first version provides: {}",
                first.functions().join(", ")
            ),
        };
    }
    if let Some(sig) = common(&full("mul3")) {
        return Ok((full("mul3"), sig));
    }
    let mut names = first.functions().to_vec();
    names.sort();
    names
        .into_iter()
        .find_map(|n| common(&n).map(|s| (n, s)))
        .ok_or_else(|| anyhow::anyhow!("no function is provided, with the same signature, by every version"))
}

/// Deterministic argument columns of `rows` rows for `signature`.
fn arguments(signature: &Signature, rows: usize) -> Vec<ArrayRef> {
    signature
        .params
        .iter()
        .enumerate()
        .map(|(i, ty)| -> ArrayRef {
            let ints = (0..rows).map(|r| (r % 1000) as i64 + 1 + i as i64);
            let floats = (0..rows).map(|r| (r % 1000) as f64 * 0.5 + 1.0 + i as f64);
            match ty {
                ValueType::Int32 => Arc::new(Int32Array::from(ints.map(|v| v as i32).collect::<Vec<_>>())),
                ValueType::Int64 => Arc::new(Int64Array::from(ints.collect::<Vec<_>>())),
                ValueType::Float32 => Arc::new(Float32Array::from(floats.map(|v| v as f32).collect::<Vec<_>>())),
                ValueType::Float64 => Arc::new(Float64Array::from(floats.collect::<Vec<_>>())),
                ValueType::Boolean => Arc::new(BooleanArray::from(ints.map(|v| v % 2 == 0).collect::<Vec<_>>())),
                ValueType::Utf8 => Arc::new(StringArray::from(ints.map(|v| format!("s{v}")).collect::<Vec<_>>())),
                ValueType::Binary => {
                    let values: Vec<Vec<u8>> = ints.map(|v| v.to_le_bytes().to_vec()).collect();
                    Arc::new(BinaryArray::from_iter_values(values))
                }
            }
        })
        .collect()
}

fn soak(
    args: &SoakArgs,
    id: &PluginId,
    function: &str,
    columns: &[ArrayRef],
    versions: &[Version],
) -> anyhow::Result<Outcome> {
    let duration = Duration::from_secs_f64(args.duration);
    // 100 ms windows, or wider for long runs (at most ~1000 windows).
    let window = Duration::from_millis(100).max(duration / 1000);
    let host: Arc<Host<WasmPlugin>> = Arc::new(Host::new());
    host.add(id.clone(), &versions[0].source).context("cannot add the plugin to the host")?;
    let timeline = Arc::new(Timeline {
        start: Instant::now(),
        floor: AtomicU64::new(1),
        pending: AtomicU64::new(1),
        reloading: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        cutovers: Mutex::new(Vec::new()),
        drains: Mutex::new(Vec::new()),
    });
    host.set_discipline(id, Arc::new(Marker(Arc::clone(&timeline))))?;
    let expected: Arc<Vec<ArrayRef>> = Arc::new(versions.iter().map(|v| Arc::clone(&v.expected)).collect());

    let progress = progress_bar(duration, args.json);
    let cpu = machine::CpuProbe::start();
    let (stats, reloads) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.threads)
            .map(|_| {
                let host = Arc::clone(&host);
                let timeline = Arc::clone(&timeline);
                let expected = Arc::clone(&expected);
                let columns = columns.to_vec();
                scope.spawn(move || caller(&host, id, function, &columns, &expected, &timeline, window))
            })
            .collect();
        let reloader = {
            let host = Arc::clone(&host);
            let timeline = Arc::clone(&timeline);
            let options = ReloadOptions::default().deadline(Duration::from_millis(args.drain_deadline_ms));
            scope.spawn(move || reloader(&host, id, versions, args.reloads, duration, &options, &timeline))
        };
        let tick = Duration::from_millis(100);
        loop {
            let elapsed = timeline.start.elapsed();
            if elapsed >= duration {
                break;
            }
            if let Some(bar) = &progress {
                bar.set_position(elapsed.as_millis() as u64);
                let gen = host.lease(id).map_or(0, |l| l.generation());
                bar.set_message(format!("generation {gen}, {} cutovers", lock(&timeline.cutovers).len()));
            }
            std::thread::sleep(tick.min(duration - elapsed));
        }
        timeline.stop.store(true, Ordering::Release);
        let mut total = Stats::new();
        for w in workers {
            match w.join() {
                Ok(s) => total.merge(s),
                Err(_) => total.error("a calling thread panicked".into()),
            }
        }
        let reloads = reloader.join().unwrap_or_default();
        (total, reloads)
    });
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let other_cores = cpu.other_cores();
    let final_generation = host.lease(id).map_or(0, |l| l.generation());
    let cutovers = lock(&timeline.cutovers).clone();
    let drains = lock(&timeline.drains).clone();
    Ok(Outcome {
        plugin: id.to_string(),
        function: function.to_owned(),
        versions: versions.iter().map(|v| v.name.clone()).collect(),
        threads: args.threads,
        rows: args.rows,
        duration,
        window,
        stats: StatsView {
            calls: stats.calls,
            failed: stats.failed,
            wrong: stats.wrong,
            stale: stats.stale,
            latency: stats.latency,
            reload_window: stats.reload_window,
            per_generation: stats.per_generation,
            windows: stats.windows,
            errors: stats.errors,
        },
        reloads,
        cutovers,
        drains,
        final_generation,
        other_cores,
    })
}

fn progress_bar(duration: Duration, json: bool) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || json && !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    let style = indicatif::ProgressStyle::with_template("soak {bar:40.cyan/blue} {elapsed_precise} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// One calling thread: call until told to stop; time and check every call.
fn caller(
    host: &Host<WasmPlugin>,
    id: &PluginId,
    function: &str,
    columns: &[ArrayRef],
    expected: &[ArrayRef],
    timeline: &Timeline,
    window: Duration,
) -> Stats {
    let mut stats = Stats::new();
    let window_ns = window.as_nanos().max(1);
    while !timeline.stop.load(Ordering::Acquire) {
        // Read the floor *before* the call begins: a cutover published by
        // then had returned before this call began.
        let floor = timeline.floor.load(Ordering::Acquire);
        let in_reload = timeline.reloading.load(Ordering::Acquire);
        let began = Instant::now();
        let result = host.lease(id).map(|lease| {
            let generation = lease.generation();
            let result = lease.call(function, columns);
            drop(lease);
            (generation, result)
        });
        let ns = began.elapsed().as_nanos() as u64;
        stats.calls += 1;
        stats.latency.saturating_record(ns);
        if in_reload || timeline.reloading.load(Ordering::Acquire) {
            stats.reload_window.saturating_record(ns);
        }
        let index = (began.saturating_duration_since(timeline.start).as_nanos() / window_ns) as usize;
        if stats.windows.len() <= index {
            stats.windows.resize_with(index + 1, Window::new);
        }
        let w = &mut stats.windows[index];
        w.latency.saturating_record(ns);
        match result {
            None => stats.error(format!("plugin `{id}` was not loaded")),
            Some((generation, result)) => {
                bump(&mut w.generations, generation, 1);
                *stats.per_generation.entry(generation).or_default() += 1;
                if generation < floor {
                    stats.stale += 1;
                }
                match result {
                    Err(e) => stats.error(e.to_string()),
                    Ok(array) => {
                        let version = ((generation.max(1) - 1) % expected.len() as u64) as usize;
                        if array.as_ref() != expected[version].as_ref() {
                            stats.wrong += 1;
                            stats.error(format!(
                                "generation {generation} returned a result that version {} does not compute",
                                version + 1
                            ));
                        }
                    }
                }
            }
        }
    }
    stats
}

/// The reloading thread: `reloads` reloads spread over `duration`,
/// cycling through the versions; generation g runs version (g - 1) mod n.
fn reloader(
    host: &Host<WasmPlugin>,
    id: &PluginId,
    versions: &[Version],
    reloads: u32,
    duration: Duration,
    options: &ReloadOptions,
    timeline: &Timeline,
) -> Vec<ReloadRecord> {
    let mut records = Vec::new();
    let mut generation = 1u64;
    for i in 0..reloads {
        let at = duration.mul_f64(f64::from(i + 1) / f64::from(reloads + 1));
        loop {
            let now = timeline.start.elapsed();
            if timeline.stop.load(Ordering::Acquire) {
                return records;
            }
            if now >= at {
                break;
            }
            std::thread::sleep((at - now).min(Duration::from_millis(20)));
        }
        let next = generation + 1;
        let version = &versions[((next - 1) % versions.len() as u64) as usize];
        timeline.pending.store(next, Ordering::Release);
        timeline.reloading.store(true, Ordering::Release);
        let began = Instant::now();
        let result = host.reload(id, &version.source, options);
        let total = began.elapsed();
        timeline.reloading.store(false, Ordering::Release);
        let at = began.saturating_duration_since(timeline.start);
        records.push(match result {
            Ok(report) => {
                generation = report.generation.unwrap_or(next);
                ReloadRecord {
                    at,
                    generation: report.generation,
                    outcome: report.outcome.as_str().to_owned(),
                    cutover: Some(report.phases.cutover),
                    drain: report.phases.drain,
                    total,
                    error: None,
                }
            }
            Err(e) => ReloadRecord {
                at,
                generation: None,
                outcome: "failed".into(),
                cutover: None,
                drain: None,
                total,
                error: Some(e.to_string()),
            },
        });
    }
    records
}
