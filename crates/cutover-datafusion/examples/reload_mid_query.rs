//! A long query runs while its function is reloaded twice under it; short
//! queries run between the reloads. Every query reports the versions that
//! computed its rows: the long one only ever sees the version it was planned
//! with, each short one the version current when it was planned; the old
//! generation drains when the long query ends.
//!
//! `cargo run --release -p cutover-datafusion --example reload_mid_query`

use std::{
    collections::BTreeSet,
    sync::{mpsc, Arc},
    time::Instant,
};

use cutover::{
    host::{Host, HostChange, ReloadOptions},
    plugin::BoxError,
    PluginId,
};
use cutover_datafusion::{HostFunctions, NativePlugin};
use cutover_wasm::NativeFn;
use datafusion::{
    arrow::{
        array::{AsArray, RecordBatch},
        datatypes::Int64Type,
    },
    error::Result,
    prelude::SessionContext,
};
use futures::StreamExt as _;

/// Version `k` of plugin `demo`: `mul3(x) = 3x + k * 1_000_000`, so every
/// result says which version computed it.
fn demo(k: i64) -> impl Fn(&PluginId) -> Result<NativePlugin, BoxError> + Send + Sync {
    move |_| Ok(NativePlugin::new([NativeFn::unary("demo.mul3", move |x: i64| 3 * x + k * 1_000_000)]))
}

/// The versions that computed a batch of `value, demo_mul3(value)`.
fn versions(batch: &RecordBatch) -> BTreeSet<i64> {
    let x = batch.column(0).as_primitive::<Int64Type>().values();
    let y = batch.column(1).as_primitive::<Int64Type>().values();
    x.iter().zip(y.iter()).map(|(x, y)| (y - 3 * x) / 1_000_000).collect()
}

async fn short_query(ctx: &SessionContext, label: &str) -> Result<()> {
    let batches = ctx.sql("SELECT value, demo_mul3(value) FROM generate_series(1, 100000)").await?.collect().await?;
    let seen: BTreeSet<i64> = batches.iter().flat_map(versions).collect();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    println!("{label:<34} {rows:>10} rows, versions {seen:?}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let host = Arc::new(Host::new());
    let id = PluginId::new("demo");
    host.add(id.clone(), &demo(1)).expect("add demo v1");
    let functions = HostFunctions::new(Arc::clone(&host));
    let ctx = SessionContext::new();
    functions.register(&ctx);
    let (cut_tx, cut_rx) = mpsc::channel();
    let _watch = host.subscribe(move |c: &HostChange| {
        let _ = cut_tx.send(c.generation);
    });
    let reload = |k: i64| {
        let (host, id) = (Arc::clone(&host), id.clone());
        let thread = std::thread::spawn(move || {
            let report = host.reload(&id, &demo(k), &ReloadOptions::default()).expect("reload");
            (report, Instant::now())
        });
        let generation = cut_rx.recv().expect("cutover").expect("a generation");
        println!("-- reload to version {k}: cut over to generation {generation}");
        thread
    };

    println!("long query: SELECT value, demo_mul3(value) FROM generate_series(1, 20000000), read batch by batch\n");
    let started = Instant::now();
    let mut long =
        ctx.sql("SELECT value, demo_mul3(value) FROM generate_series(1, 20000000)").await?.execute_stream().await?;
    let (mut rows, mut seen) = (0usize, BTreeSet::new());
    let read = |batch: RecordBatch, rows: &mut usize, seen: &mut BTreeSet<i64>| {
        *rows += batch.num_rows();
        seen.extend(versions(&batch));
    };
    for _ in 0..200 {
        let Some(batch) = long.next().await else { break };
        read(batch?, &mut rows, &mut seen);
    }
    println!("{:<34} {rows:>10} rows so far, versions {seen:?}", "long query (planned on generation 1)");
    short_query(&ctx, "short query before any reload").await?;

    let first = reload(2);
    println!("   queries in flight: {:?}", functions.all_queries_in_flight());
    short_query(&ctx, "short query after reload 1").await?;
    for _ in 0..200 {
        let Some(batch) = long.next().await else { break };
        read(batch?, &mut rows, &mut seen);
    }
    println!("{:<34} {rows:>10} rows so far, versions {seen:?}", "long query");

    let second = reload(3);
    let (report, _) = second.join().expect("reload thread");
    println!("   reload to version 3 returned: generation 2 had no query left ({})", report.outcome);
    short_query(&ctx, "short query after reload 2").await?;

    while let Some(batch) = long.next().await {
        read(batch?, &mut rows, &mut seen);
    }
    let ended = Instant::now();
    drop(long);
    println!("{:<34} {rows:>10} rows in {:.2?}, versions {seen:?}", "long query finished", ended - started);
    // The stream released generation 1 with its last batch (or would have
    // when dropped): the reload to version 2 returns then.
    let (report, returned) = first.join().expect("reload thread");
    let when = if returned <= ended { "as".to_owned() } else { format!("{:.2?} after", returned - ended) };
    println!(
        "   reload to version 2 returned {when} the long query ended: generation 1 {} and removed",
        report.outcome
    );
    assert_eq!(seen, [1].into(), "the long query saw only version 1");
    println!("   queries in flight: {:?}", functions.all_queries_in_flight());
    Ok(())
}
