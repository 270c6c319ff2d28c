//! cutover-datafusion benchmarks, each side by side with its baseline in
//! the same run:
//!
//! 1. `SELECT <fn>(value) FROM generate_series(1, 10000000)`, streamed to
//!    the end: a native Rust function through cutover-datafusion (a
//!    `NativePlugin` in a `Host`, pinned per query) against the same
//!    `NativeFn` registered directly as a plain DataFusion UDF (target:
//!    ≤ 1.05×); the WebAssembly plugins against the native one, with the
//!    same function `mul3(x) = 3x`: a core module (called per row) and a
//!    component (the Rust guest `plugins/math-v1`, called per batch with
//!    whole columns); and the query without a function, for scale.
//!    Rounds interleave the variants (order rotated each round); the figure
//!    is the median over the rounds.
//! 2. Drain after the last query: a query's physical plan pins generation
//!    G; a reload cuts over to G+1 and waits for G's drain; the plan is
//!    dropped (the query ends). Measured from just before that drop to (a)
//!    G's shutdown hook running (the drain completed and the reload shut G
//!    down) and (b) the reload returning; p50/p99 over many repetitions.
//!
//! Run: `cargo bench -p cutover-datafusion --bench datafusion`
//! (`CUTOVER_BENCH_QUICK=1` for a short smoke run).

use std::{
    hint::black_box,
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use arrow_array::ArrayRef;
use cutover::{
    host::{DrainOutcome, Host, HostChange, ReloadOptions},
    plugin::BoxError,
    PluginId,
};
use cutover_datafusion::{HostFunctions, NativePlugin};
use cutover_wasm::{NativeFn, ScalarPluginFn, WasmPlugin, WasmSource};
use datafusion::{
    arrow::datatypes::DataType,
    common::Result,
    logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility},
    prelude::SessionContext,
};
use futures::StreamExt as _;

const ROWS: u64 = 10_000_000;
const WAT: &str = r#"(module
  (func (export "mul3") (param i64) (result i64) local.get 0 i64.const 3 i64.mul))"#;

fn mul3() -> NativeFn {
    NativeFn::unary("bench.mul3", |x: i64| x.wrapping_mul(3))
}

/// The same `NativeFn`, registered directly as a plain DataFusion UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Plain {
    signature: Signature,
    #[allow(clippy::struct_field_names)]
    name: String,
}

impl ScalarUDFImpl for Plain {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        thread_local!(static F: NativeFn = mul3());
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let rows = arrays.first().map_or(args.number_rows, |a| a.len());
        let out =
            F.with(|f| f.invoke(&arrays, rows)).map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
        Ok(ColumnarValue::Array(out))
    }
}

async fn run(ctx: &SessionContext, sql: &str) -> Duration {
    let start = Instant::now();
    let mut stream = ctx.sql(sql).await.unwrap().execute_stream().await.unwrap();
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        rows += black_box(batch.unwrap()).num_rows() as u64;
    }
    let took = start.elapsed();
    assert_eq!(rows, ROWS);
    took
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn query_cost(quick: bool) {
    let ctx = SessionContext::new();
    ctx.register_udf(ScalarUDF::new_from_impl(Plain {
        signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
        name: "plain_mul3".into(),
    }));
    let native: Arc<Host<NativePlugin>> = Arc::new(Host::new());
    native
        .add(PluginId::new("bench"), &|_: &PluginId| -> Result<NativePlugin, BoxError> {
            Ok(NativePlugin::new([mul3()]))
        })
        .unwrap();
    HostFunctions::new(Arc::clone(&native)).register(&ctx);
    let wasm: Arc<Host<WasmPlugin>> = Arc::new(Host::new());
    wasm.add(PluginId::new("math"), &WasmSource::from_wat(WAT)).unwrap();
    wasm.add(PluginId::new("comp"), &WasmSource::from_file(test_plugins::MATH_V1)).unwrap();
    HostFunctions::new(Arc::clone(&wasm)).register(&ctx);

    let variants = [
        ("no function: SELECT value", format!("SELECT value FROM generate_series(1, {ROWS})")),
        ("plain DataFusion UDF (baseline)", format!("SELECT plain_mul3(value) FROM generate_series(1, {ROWS})")),
        ("cutover-datafusion, native", format!("SELECT bench_mul3(value) FROM generate_series(1, {ROWS})")),
        ("cutover-datafusion, wasm module", format!("SELECT math_mul3(value) FROM generate_series(1, {ROWS})")),
        ("cutover-datafusion, wasm component", format!("SELECT comp_mul3(value) FROM generate_series(1, {ROWS})")),
    ];
    let rounds = if quick { 3 } else { 11 };
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut native_ratios = Vec::new();
    let mut wasm_ratios = Vec::new();
    let mut component_ratios = Vec::new();
    for round in 0..=rounds {
        let mut this = vec![0.0; variants.len()];
        for i in 0..variants.len() {
            let v = (i + round) % variants.len();
            this[v] = run(&ctx, &variants[v].1).await.as_secs_f64() * 1e3;
        }
        if round == 0 {
            continue; // warm-up
        }
        native_ratios.push(this[2] / this[1]);
        wasm_ratios.push(this[3] / this[2]);
        component_ratios.push(this[4] / this[2]);
        for (t, x) in times.iter_mut().zip(this) {
            t.push(x);
        }
    }
    println!("## Query cost: SELECT <fn>(value) FROM generate_series(1, {ROWS}) ({rounds} rounds, median)\n");
    println!("| variant | ms (median) | min | max |");
    println!("|---|---:|---:|---:|");
    for ((name, _), t) in variants.iter().zip(times.iter_mut()) {
        let (min, max) = (t.iter().copied().fold(f64::MAX, f64::min), t.iter().copied().fold(0.0, f64::max));
        println!("| {name} | {:.1} | {min:.1} | {max:.1} |", median(t));
    }
    println!();
    println!(
        "* cutover native / plain UDF: **{:.3}×** (median of per-round ratios; ratio of medians {:.3}×)",
        median(&mut native_ratios),
        median(&mut times[2].clone()) / median(&mut times[1].clone())
    );
    println!("* wasm module / cutover native: **{:.2}×** (median of per-round ratios)", median(&mut wasm_ratios));
    println!(
        "* wasm component / cutover native: **{:.2}×** (median of per-round ratios)",
        median(&mut component_ratios)
    );
    println!();
}

fn drain_latency(quick: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let host: Arc<Host<NativePlugin>> = Arc::new(Host::new());
    let id = PluginId::new("bench");
    let shutdown_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let source = {
        let shutdown_at = Arc::clone(&shutdown_at);
        move |_: &PluginId| -> Result<NativePlugin, BoxError> {
            let shutdown_at = Arc::clone(&shutdown_at);
            Ok(NativePlugin::new([mul3()]).on_shutdown(move || {
                *shutdown_at.lock().unwrap() = Some(Instant::now());
            }))
        }
    };
    host.add(id.clone(), &source).unwrap();
    let ctx = SessionContext::new();
    HostFunctions::new(Arc::clone(&host)).register(&ctx);
    let (cut_tx, cut_rx) = mpsc::channel();
    let _watch = host.subscribe(move |c: &HostChange| {
        let _ = cut_tx.send(c.generation);
    });
    let source = Arc::new(source);
    let n = if quick { 50 } else { 1000 };
    let (mut to_shutdown, mut to_return) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let plan = runtime.block_on(async {
            let plan = ctx
                .sql("SELECT bench_mul3(value) FROM generate_series(1, 10)")
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
            plan
        });
        let reload = {
            let (host, id, source) = (Arc::clone(&host), id.clone(), Arc::clone(&source));
            std::thread::spawn(move || {
                let report = host.reload(&id, &*source, &ReloadOptions::default()).unwrap();
                (report, Instant::now())
            })
        };
        cut_rx.recv().unwrap();
        // Let the reload thread block in the drain wait (as it would while a
        // long query runs) before the query ends.
        std::thread::sleep(Duration::from_micros(300));
        *shutdown_at.lock().unwrap() = None;
        let ended = Instant::now();
        drop(plan);
        let (report, returned) = reload.join().unwrap();
        assert_eq!(report.outcome, DrainOutcome::Drained);
        let shut = shutdown_at.lock().unwrap().expect("the old generation was shut down");
        to_shutdown.push(shut.saturating_duration_since(ended));
        to_return.push(returned.saturating_duration_since(ended));
    }
    println!("## Drain after the last query ends ({n} reloads)\n");
    println!("| from the last query's plan dropped to | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    for (name, v) in
        [("old generation shut down (drain done)", &mut to_shutdown), ("the reload returns", &mut to_return)]
    {
        let max = *v.iter().max().unwrap();
        println!("| {name} | {:.1?} | {:.1?} | {max:.1?} |", percentile(v, 0.5), percentile(v, 0.99));
    }
    println!();
}

fn main() {
    let quick = std::env::var_os("CUTOVER_BENCH_QUICK").is_some();
    println!("load average before: {}\n", loadavg());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(query_cost(quick));
    drop(runtime);
    drain_latency(quick);
    println!("load average after: {}", loadavg());
}
