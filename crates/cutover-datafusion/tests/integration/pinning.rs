//! One generation per query, drain = queries: the semantics, each
//! synchronised with channels and gates (no sleeps, no timing thresholds).

use crate::common;

use std::sync::Arc;

use common::*;
use cutover::{
    host::{DrainOutcome, ReloadKind, ReloadOptions},
    PluginId,
};
use cutover_datafusion::{create_physical_plan, pinned_generations, Error, PinGenerations};
use datafusion::{error::DataFusionError, physical_plan::collect};
use futures::StreamExt as _;

fn math_id() -> PluginId {
    PluginId::new("math")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_running_through_a_reload_sees_only_the_old_version_and_later_ones_only_the_new() {
    let (host, functions, ctx) = setup();
    let (_watch, mut changes) = cutovers(&host);
    let sql = "SELECT value, math_mul3(value) FROM generate_series(1, 100000)";

    // The long query: planned (pinned) and started on generation 1.
    let mut running = ctx.sql(sql).await.unwrap().execute_stream().await.unwrap();
    let mut old = vec![running.next().await.expect("a first batch").unwrap()];
    assert_eq!(functions.queries_in_flight(&math_id(), 1), 1);

    // Reload to version 2, mid-query.
    let reload = reload_in_background(&host, 2, None);
    let change = within("the cutover", changes.recv()).await.unwrap();
    assert_eq!((change.kind, change.generation), (ReloadKind::Reload, Some(2)));

    // A query started after the cutover: only version 2.
    let new = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    assert_eq!(column(&new).len(), 100_000);
    assert_eq!(versions(&new), [2].into());

    // The running query goes on: only version 1, to the last row.
    while let Some(batch) = running.next().await {
        old.push(batch.unwrap());
    }
    assert_eq!(column(&old).len(), 100_000);
    assert_eq!(versions(&old), [1].into());
    drop(running);

    let report = within("the reload", reload).await.unwrap().unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(functions.queries_in_flight(&math_id(), 1), 0);
}

/// Start a query held inside its first batch (the gated function), then
/// reload: the old generation must not drain while the query runs.
async fn held_query_then_reload(
    ctx: &datafusion::prelude::SessionContext,
    host: &Arc<cutover::host::Host<cutover_datafusion::NativePlugin>>,
    control: &GateControl,
    shutdowns: std::sync::mpsc::Sender<i64>,
) -> (
    tokio::task::JoinHandle<datafusion::error::Result<Vec<datafusion::arrow::array::RecordBatch>>>,
    tokio::task::JoinHandle<Result<cutover::host::ReloadReport, cutover::host::ReloadError>>,
) {
    let (_watch, mut changes) = cutovers(host);
    let df = ctx.sql("SELECT value, math_gated(value) FROM generate_series(1, 50000)").await.unwrap();
    let query = tokio::spawn(df.collect());
    tokio::task::block_in_place(|| control.wait_entered());
    let reload = reload_in_background(host, 2, Some(shutdowns));
    within("the cutover", changes.recv()).await.unwrap();
    (query, reload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_generation_drains_exactly_when_the_query_finishes() {
    let host = Arc::new(cutover::host::Host::new());
    let (gate, control) = Gate::new();
    let (shutdown_tx, shutdowns) = std::sync::mpsc::channel();
    host.add(math_id(), &math(1, Some(gate), Some(shutdown_tx.clone()))).unwrap();
    let functions = cutover_datafusion::HostFunctions::new(Arc::clone(&host));
    let ctx = datafusion::prelude::SessionContext::new();
    functions.register(&ctx);

    let (query, reload) = held_query_then_reload(&ctx, &host, &control, shutdown_tx).await;
    // The query is inside a batch on generation 1: it holds it.
    let snapshot = host.snapshot(&math_id()).unwrap();
    assert_eq!(snapshot.generation, 2);
    assert_eq!(snapshot.draining.iter().map(|d| (d.generation, d.in_flight)).collect::<Vec<_>>(), [(1, 1)]);
    assert_eq!(functions.queries_in_flight(&math_id(), 1), 1);
    assert!(!reload.is_finished(), "the reload returned while a query held the old generation");
    assert!(shutdowns.try_recv().is_err(), "generation 1 was shut down under a running query");

    control.open();
    let results = within("the query", query).await.unwrap().unwrap();
    assert_eq!(versions(&results), [1].into());
    let report = within("the reload", reload).await.unwrap().unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(shutdowns.recv_timeout(DEADLINE), Ok(1), "generation 1 shut down after the drain");
    assert_eq!(functions.queries_in_flight(&math_id(), 1), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_generation_drains_when_the_query_fails() {
    let (shutdown_tx, shutdowns) = std::sync::mpsc::channel();
    let (host, functions, ctx) = setup_with(Some(shutdown_tx.clone()));
    let feed = feed_table(&ctx, "feed");
    let (_watch, mut changes) = cutovers(&host);
    let plan = ctx.sql("SELECT math_fail(x) FROM feed").await.unwrap().create_physical_plan().await.unwrap();
    assert_eq!(functions.queries_in_flight(&math_id(), 1), 1);
    let query = tokio::spawn(collect(plan, ctx.task_ctx()));
    feed.send(batch_from(1)).unwrap();
    let reload = reload_in_background(&host, 2, Some(shutdown_tx));
    within("the cutover", changes.recv()).await.unwrap();
    assert!(!reload.is_finished());

    let mut failing = batch_from(1);
    failing[7] = -1;
    feed.send(failing).unwrap(); // the plugin function fails on this batch
    let err = within("the query", query).await.unwrap().unwrap_err();
    let message = err.to_string();
    assert!(message.contains("math_fail") && message.contains("negative input"), "{message}");
    assert!(message.contains("generation 1"), "{message}");
    assert_eq!(within("the reload", reload).await.unwrap().unwrap().outcome, DrainOutcome::Drained);
    assert_eq!(shutdowns.recv_timeout(DEADLINE), Ok(1));
    drop(feed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_generation_drains_when_the_query_is_cancelled() {
    let (shutdown_tx, shutdowns) = std::sync::mpsc::channel();
    let (host, functions, ctx) = setup_with(Some(shutdown_tx.clone()));
    let feed = feed_table(&ctx, "feed");
    let (_watch, mut changes) = cutovers(&host);
    let (first_tx, mut first_rx) = tokio::sync::mpsc::unbounded_channel();
    let df = ctx.sql("SELECT x, math_mul3(x) FROM feed").await.unwrap();
    // The query's task: it reports its first batch, then waits for more.
    let query = tokio::spawn(async move {
        let mut stream = df.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            let _ = first_tx.send(versions(&[batch?]));
        }
        Ok::<_, DataFusionError>(())
    });
    feed.send(batch_from(1)).unwrap();
    assert_eq!(within("the first batch", first_rx.recv()).await.unwrap(), [1].into());
    let reload = reload_in_background(&host, 2, Some(shutdown_tx));
    within("the cutover", changes.recv()).await.unwrap();
    assert_eq!(functions.queries_in_flight(&math_id(), 1), 1);
    assert!(!reload.is_finished());
    assert!(shutdowns.try_recv().is_err());

    // Cancel it, as a time-out or a client disconnect would.
    query.abort();
    let ended = within("the cancelled query", query).await;
    assert!(ended.unwrap_err().is_cancelled());
    assert_eq!(within("the reload", reload).await.unwrap().unwrap().outcome, DrainOutcome::Drained);
    assert_eq!(shutdowns.recv_timeout(DEADLINE), Ok(1));
    assert_eq!(functions.queries_in_flight(&math_id(), 1), 0);
    drop(feed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_generation_drains_when_the_stream_is_dropped_unfinished() {
    let (shutdown_tx, shutdowns) = std::sync::mpsc::channel();
    let (host, functions, ctx) = setup_with(Some(shutdown_tx.clone()));
    let (_watch, mut changes) = cutovers(&host);
    let mut stream = ctx
        .sql("SELECT value, math_mul3(value) FROM generate_series(1, 1000000000)")
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    assert_eq!(versions(&[stream.next().await.unwrap().unwrap()]), [1].into());
    let reload = reload_in_background(&host, 2, Some(shutdown_tx));
    within("the cutover", changes.recv()).await.unwrap();
    assert_eq!(functions.queries_in_flight(&math_id(), 1), 1);
    assert!(!reload.is_finished());

    drop(stream); // a billion rows to go: dropped unfinished
    assert_eq!(within("the reload", reload).await.unwrap().unwrap().outcome, DrainOutcome::Drained);
    assert_eq!(shutdowns.recv_timeout(DEADLINE), Ok(1));
    assert_eq!(functions.queries_in_flight(&math_id(), 1), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_holds_its_generation_until_dropped_and_an_unexecuted_dataframe_holds_none() {
    let (host, functions, ctx) = setup();
    // A DataFrame only plans the SQL: nothing pinned yet.
    let df = ctx.sql("SELECT math_mul3(value), math_add(value, 1) FROM generate_series(1, 3)").await.unwrap();
    assert!(functions.all_queries_in_flight().is_empty());
    // Planning it pins once per plugin, whatever the number of its functions.
    let plan = df.create_physical_plan().await.unwrap();
    assert_eq!(functions.queries_in_flight(&math_id(), 1), 1);
    assert_eq!(host.snapshot(&math_id()).unwrap().in_flight, 1);
    drop(plan); // never executed
    assert!(functions.all_queries_in_flight().is_empty());
    assert_eq!(host.snapshot(&math_id()).unwrap().in_flight, 0);
    // So a reload now drains at once.
    let report = host.reload(&math_id(), &math(2, None, None), &ReloadOptions::default().deadline(DEADLINE)).unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_of_a_plugin_in_a_query_runs_on_one_generation_subqueries_included() {
    let (host, _functions, ctx) = setup();
    host.reload(&math_id(), &math(2, None, None), &ReloadOptions::default().deadline(DEADLINE)).unwrap();
    let sql = "SELECT math_mul3(value) AS a, (SELECT max(math_add(value, 0)) FROM generate_series(1, 2)) AS b \
               FROM generate_series(1, 2) WHERE math_mul3(value) > 0";
    let (state, logical) = ctx.sql(sql).await.unwrap().into_parts();
    let planned = create_physical_plan(&state, &logical).await.unwrap();
    assert_eq!(planned.generations, [(math_id(), 2)].into());
    let batches = collect(planned.plan, state.task_ctx()).await.unwrap();
    let mut a = column(&batches);
    a.sort();
    assert_eq!(a, [3 + 2_000_000, 6 + 2_000_000]);

    // The analyzed plan says the same; analyzing twice pins once.
    let analyzed = state.analyzer().execute_and_check(logical, state.config_options(), |_, _| {}).unwrap();
    assert_eq!(pinned_generations(&analyzed), [(math_id(), 2)].into());
    let again = PinGenerations::new();
    let twice = datafusion::optimizer::AnalyzerRule::analyze(&again, analyzed.clone(), state.config_options()).unwrap();
    assert_eq!(twice, analyzed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_change_applies_to_new_queries_only() {
    let (host, _functions, ctx) = setup();
    let planned_before = ctx.sql("SELECT math_mul3(value) FROM generate_series(1, 2)").await.unwrap();
    let pinned_before = ctx
        .sql("SELECT math_mul3(value) FROM generate_series(1, 2)")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    // Version 2 changes mul3 to f64 -> f64, in a thread (the pinned plan
    // holds generation 1 until it runs).
    let (_watch, mut changes) = cutovers(&host);
    let reload = {
        let host = Arc::clone(&host);
        tokio::task::spawn_blocking(move || {
            let v2 = |_: &PluginId| {
                Ok(cutover_datafusion::NativePlugin::new([cutover_wasm::NativeFn::unary("math.mul3", |x: f64| {
                    x * 3.5
                })]))
            };
            host.reload(&PluginId::new("math"), &v2, &ReloadOptions::default().deadline(DEADLINE))
        })
    };
    within("the cutover", changes.recv()).await.unwrap();

    // New queries are planned against the new signature.
    let new = ctx.sql("SELECT math_mul3(value) FROM generate_series(1, 2)").await.unwrap().collect().await.unwrap();
    let new: Vec<f64> =
        new[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::Float64Array>().unwrap().values().to_vec();
    assert_eq!(new, [3.5, 7.0]);
    // The query pinned before keeps the old function.
    let old = collect(pinned_before, ctx.task_ctx()).await.unwrap();
    let mut old = column(&old);
    old.sort();
    assert_eq!(old, [3 + 1_000_000, 6 + 1_000_000]);
    // A query whose SQL was planned against the old signature but pinned
    // after the change is refused, naming the function.
    let err = planned_before.collect().await.unwrap_err();
    assert!(err.to_string().contains("math_mul3") && err.to_string().contains("changed its signature"), "{err}");
    assert!(matches!(err.find_root(), DataFusionError::Plan(_)), "{err:?}");
    assert_eq!(within("the reload", reload).await.unwrap().unwrap().outcome, DrainOutcome::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_makes_functions_unknown_to_new_queries_while_running_ones_finish() {
    let (host, functions, ctx) = setup();
    let (_watch, mut changes) = cutovers(&host);
    let mut running = ctx
        .sql("SELECT value, math_mul3(value) FROM generate_series(1, 20000)")
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    let mut seen = vec![running.next().await.unwrap().unwrap()];
    let remove = {
        let host = Arc::clone(&host);
        tokio::task::spawn_blocking(move || {
            host.remove(&PluginId::new("math"), &ReloadOptions::default().deadline(DEADLINE))
        })
    };
    let change = within("the removal", changes.recv()).await.unwrap();
    assert_eq!(change.kind, ReloadKind::Remove);

    let err = ctx.sql("SELECT math_mul3(1)").await.unwrap_err();
    assert!(err.to_string().contains("math_mul3"), "{err}");
    assert!(functions.functions().is_empty());

    while let Some(batch) = running.next().await {
        seen.push(batch.unwrap());
    }
    assert_eq!(column(&seen).len(), 20_000);
    assert_eq!(versions(&seen), [1].into());
    drop(running);
    let report = within("the removal", remove).await.unwrap().unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);

    // Added back: known again, with no action on the session.
    host.add(math_id(), &math(7, None, None)).unwrap();
    let back =
        ctx.sql("SELECT value, math_mul3(value) FROM generate_series(1, 3)").await.unwrap().collect().await.unwrap();
    assert_eq!(versions(&back), [7].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_racing_a_planned_query_is_a_planning_error_naming_the_function() {
    let (host, _functions, ctx) = setup();
    let df = ctx.sql("SELECT math_mul3(1)").await.unwrap();
    host.remove(&math_id(), &ReloadOptions::default().deadline(DEADLINE)).unwrap();
    let err = df.collect().await.unwrap_err();
    assert!(err.to_string().contains("math_mul3") && err.to_string().contains("removed"), "{err}");
    assert_eq!(host.snapshot(&math_id()), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn additions_show_up_and_builtin_names_are_not_overridden() {
    let (host, functions, ctx) = setup();
    let geo = |_: &PluginId| {
        Ok(cutover_datafusion::NativePlugin::new([cutover_wasm::NativeFn::unary("geo.double", |x: i64| 2 * x)]))
    };
    host.add(PluginId::new("geo"), &geo).unwrap();
    let out = column(&ctx.sql("SELECT geo_double(21)").await.unwrap().collect().await.unwrap());
    assert_eq!(out, [42]);
    let names: Vec<String> = functions.functions().into_iter().map(|f| f.sql_name).collect();
    assert_eq!(names, ["geo_double", "math_add", "math_fail", "math_gated", "math_mul3"]);

    // A plugin `arrow` with a function `cast` would be `arrow_cast`, a
    // DataFusion built-in: it is not overridden.
    let arrow = |_: &PluginId| {
        Ok(cutover_datafusion::NativePlugin::new([cutover_wasm::NativeFn::unary("arrow.cast", |x: i64| x)]))
    };
    let before = ctx.state().scalar_functions().get("arrow_cast").cloned();
    assert!(before.is_some());
    host.add(PluginId::new("arrow"), &arrow).unwrap();
    assert_eq!(ctx.state().scalar_functions().get("arrow_cast").cloned(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_drain_fails_the_query_with_a_clear_error() {
    // A reload whose drain deadline passes cancels the work still running
    // on the old generation: pinned functions stop the query.
    let (host, _functions, ctx) = setup();
    let feed = feed_table(&ctx, "feed");
    let (first_tx, mut first_rx) = tokio::sync::mpsc::unbounded_channel();
    let df = ctx.sql("SELECT x, math_mul3(x) FROM feed").await.unwrap();
    let query = tokio::spawn(async move {
        let mut stream = df.execute_stream().await?;
        let mut n = 0;
        while let Some(batch) = stream.next().await {
            let _ = first_tx.send(batch?.num_rows());
            n += 1;
        }
        Ok::<_, DataFusionError>(n)
    });
    feed.send(batch_from(1)).unwrap();
    within("the first batch", first_rx.recv()).await.unwrap();
    let reload = {
        let host = Arc::clone(&host);
        tokio::task::spawn_blocking(move || {
            let options = ReloadOptions::default()
                .deadline(std::time::Duration::ZERO)
                .cancel(true, DEADLINE)
                .force(false, std::time::Duration::ZERO);
            host.reload(&PluginId::new("math"), &math(2, None, None), &options)
        })
    };
    // Wait until the drain was cancelled (the snapshot says so; the host
    // has no event for it).
    within("the cancellation", async {
        while !host.snapshot(&math_id()).unwrap().draining.iter().any(|d| d.cancelled) {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await;
    feed.send(batch_from(1)).unwrap();
    let err = within("the query", query).await.unwrap().unwrap_err();
    let root = err.find_root();
    let DataFusionError::External(inner) = root else { panic!("not external: {err:?}") };
    assert!(matches!(inner.downcast_ref::<Error>(), Some(Error::Cancelled { generation: 1, .. })), "{err}");
    assert_eq!(within("the reload", reload).await.unwrap().unwrap().outcome, DrainOutcome::Cancelled);
    drop(feed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_function_evaluated_outside_a_query_runs_each_batch_on_the_current_generation() {
    use datafusion::{
        arrow::{
            array::{Int64Array, RecordBatch},
            datatypes::{DataType, Field, Schema},
        },
        common::DFSchema,
        execution::FunctionRegistry as _,
        prelude::col,
    };
    let (host, functions, ctx) = setup();
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
    let udf = ctx.udf("math_mul3").unwrap();
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
    // No analyzer here: the expression is not pinned.
    let expr = ctx.create_physical_expr(udf.call(vec![col("x")]), &df_schema).unwrap();
    let eval = |expr: &Arc<dyn datafusion::physical_plan::PhysicalExpr>| {
        let out = expr.evaluate(&batch).unwrap().into_array(2).unwrap();
        out.as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()
    };
    assert_eq!(eval(&expr), [1_000_003, 1_000_006]);
    assert!(functions.all_queries_in_flight().is_empty(), "nothing held between batches");
    host.reload(&math_id(), &math(2, None, None), &ReloadOptions::default().deadline(DEADLINE)).unwrap();
    assert_eq!(eval(&expr), [2_000_003, 2_000_006]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binding_lives_as_long_as_its_sessions_and_no_longer() {
    let (host, functions, ctx) = setup();
    assert_eq!(host.subscriber_count(), 1);
    drop(functions); // the session keeps the binding, and it keeps following the host
    host.reload(&math_id(), &math(2, None, None), &ReloadOptions::default().deadline(DEADLINE)).unwrap();
    let out =
        ctx.sql("SELECT value, math_mul3(value) FROM generate_series(1, 2)").await.unwrap().collect().await.unwrap();
    assert_eq!(versions(&out), [2].into());
    assert_eq!(host.subscriber_count(), 1);
    drop(ctx); // nothing else holds the session: the binding goes, and unsubscribes
    assert_eq!(host.subscriber_count(), 0);
}
