//! WebAssembly components (the Rust guest plugins of `plugins/`) as SQL
//! functions: every data type, nulls, the implicit argument conversions,
//! volatility, and a component reload under a running query.

use crate::common;

use std::sync::Arc;

use common::{cutovers, within, DEADLINE};
use cutover::{
    host::{DrainOutcome, Host, ReloadOptions},
    PluginId,
};
use cutover_datafusion::HostFunctions;
use cutover_wasm::{WasmPlugin, WasmSource};
use datafusion::{
    arrow::{
        array::{
            Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array,
            RecordBatch, StringArray,
        },
        datatypes::{DataType, Float64Type, Int32Type, Int64Type},
    },
    logical_expr::Volatility,
    prelude::SessionContext,
};
use futures::StreamExt as _;

/// A host serving the given components (plugin id, built component), and a
/// session with their functions.
fn serve(plugins: &[(&str, &str)]) -> (Arc<Host<WasmPlugin>>, HostFunctions<WasmPlugin>, SessionContext) {
    let host: Arc<Host<WasmPlugin>> = Arc::new(Host::new());
    for (id, path) in plugins {
        host.add(PluginId::new(id), &WasmSource::from_file(*path)).unwrap_or_else(|e| panic!("{path} loads: {e}"));
    }
    let functions = HostFunctions::new(Arc::clone(&host));
    let ctx = SessionContext::new();
    functions.register(&ctx);
    (host, functions, ctx)
}

/// Run `sql` into one batch.
async fn one_batch(ctx: &SessionContext, sql: &str) -> RecordBatch {
    let batches = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.unwrap();
    let schema = batches[0].schema();
    datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// The error of a query that must fail to plan (DataFusion checks
/// argument types when the SQL is planned, or at the latest when the
/// analyzer coerces them).
async fn plan_error(ctx: &SessionContext, sql: &str) -> String {
    match ctx.sql(sql).await {
        Err(e) => e.to_string(),
        Ok(df) => df.create_physical_plan().await.map(|_| ()).expect_err(sql).to_string(),
    }
}

fn strings(a: &ArrayRef) -> Vec<Option<String>> {
    a.as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect()
}

fn owned(v: &[Option<&str>]) -> Vec<Option<String>> {
    v.iter().map(|s| s.map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_functions_over_utf8_with_nulls() {
    let (_host, _functions, ctx) = serve(&[("text", test_plugins::TEXT)]);
    let rows = "(VALUES (1, 'abc'), (2, NULL), (3, 'straße'), (4, '')) AS t(id, s)";
    let out = one_batch(
        &ctx,
        &format!(
            "SELECT text_upper(s) AS u, text_length(s) AS n, text_concat(s, '!') AS c, text_lower(text_upper(s)) AS l \
             FROM {rows} ORDER BY id"
        ),
    )
    .await;
    let types: Vec<DataType> = out.schema().fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(types, [DataType::Utf8, DataType::Int32, DataType::Utf8, DataType::Utf8]);
    assert_eq!(strings(out.column(0)), owned(&[Some("ABC"), None, Some("STRASSE"), Some("")]));
    let n: Vec<Option<i32>> = out.column(1).as_primitive::<Int32Type>().iter().collect();
    assert_eq!(n, [Some(3), None, Some(6), Some(0)]);
    assert_eq!(strings(out.column(2)), owned(&[Some("abc!"), None, Some("straße!"), Some("!")]));
    assert_eq!(strings(out.column(3)), owned(&[Some("abc"), None, Some("strasse"), Some("")]));

    // Other string encodings (views, as Parquet reads strings; large
    // strings) are converted to utf8 for the plugin.
    let out = one_batch(
        &ctx,
        &format!(
            "SELECT text_upper(arrow_cast(s, 'Utf8View')) AS v, text_upper(arrow_cast(s, 'LargeUtf8')) AS l, \
             text_upper(NULL) AS z FROM {rows} ORDER BY id"
        ),
    )
    .await;
    for column in 0..2 {
        assert_eq!(strings(out.column(column)), owned(&[Some("ABC"), None, Some("STRASSE"), Some("")]));
    }
    assert_eq!(out.column(2).null_count(), 4);

    // A number is not a string: a planning error naming the function.
    let err = plan_error(&ctx, "SELECT text_upper(42)").await;
    assert!(
        err.contains("text_upper") && err.contains("argument 1 is Int64") && err.contains("(utf8) -> utf8"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_haversine_km_over_float64_with_nulls_and_integer_arguments() {
    let (_host, _functions, ctx) = serve(&[("geo", test_plugins::GEO)]);
    let out = one_batch(
        &ctx,
        "SELECT geo_haversine_km(48.8566, 2.3522, 51.5074, -0.1278) AS paris_london, \
                geo_haversine_km(0, 0, 0, 1) AS one_degree, \
                geo_haversine_km(NULL, 0, 0, 1) AS unknown",
    )
    .await;
    assert!(out.schema().fields().iter().all(|f| f.data_type() == &DataType::Float64));
    let km = |c: usize| out.column(c).as_primitive::<Float64Type>().iter().next().unwrap();
    let paris_london = km(0).unwrap();
    assert!((paris_london - 343.5).abs() < 1.0, "Paris–London is about 343.5 km, got {paris_london}");
    let one_degree = km(1).unwrap();
    assert!((one_degree - 111.195).abs() < 0.01, "a degree on the equator is about 111.195 km, got {one_degree}");
    assert_eq!(km(2), None);

    // Over a column: one call per batch, every row computed.
    let out =
        one_batch(&ctx, "SELECT geo_haversine_km(0, 0, 0, value) AS d FROM generate_series(0, 9999) ORDER BY d").await;
    let distances = out.column(0).as_primitive::<Float64Type>();
    assert_eq!((distances.len(), distances.null_count()), (10_000, 0));
    assert_eq!(distances.value(0), 0.0, "the distance at longitude 0 (and 360, ...)");
}

/// One column per data type, each with nulls.
fn every_type() -> RecordBatch {
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("b", Arc::new(BooleanArray::from(vec![Some(true), None, Some(false), Some(true)]))),
        ("i32", Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(0), None, Some(7)]))),
        ("i64", Arc::new(Int64Array::from(vec![None, Some(i64::MAX), Some(-1), Some(0)]))),
        ("f32", Arc::new(Float32Array::from(vec![Some(1.5), None, Some(-0.0), Some(f32::INFINITY)]))),
        ("f64", Arc::new(Float64Array::from(vec![Some(f64::MIN_POSITIVE), Some(1e300), None, Some(-2.5)]))),
        ("s", Arc::new(StringArray::from(vec![Some("é"), Some(""), Some("日本語"), None]))),
        (
            "bin",
            Arc::new(BinaryArray::from(vec![Some(&[0xff_u8, 0, 0x80][..]), None, Some(&b""[..]), Some(&b"z"[..])])),
        ),
    ];
    RecordBatch::try_from_iter(columns).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_type_round_trips_through_sql_nulls_included() {
    let (_host, functions, ctx) = serve(&[("types", test_plugins::TYPES)]);
    let input = every_type();
    ctx.register_batch("t", input.clone()).unwrap();

    // The signatures, as SQL sees them.
    let signature = |name: &str| functions.functions().into_iter().find(|f| f.sql_name == name).unwrap().signature;
    assert_eq!(signature("types_echo_float32").to_string(), "(float32) -> float32");
    assert_eq!(signature("types_show_binary").to_string(), "(binary) -> utf8");

    let out = one_batch(
        &ctx,
        "SELECT types_echo_boolean(b), types_echo_int32(i32), types_echo_int64(i64), types_echo_float32(f32), \
                types_echo_float64(f64), types_echo_utf8(s), types_echo_binary(bin) FROM t",
    )
    .await;
    for (i, field) in input.schema().fields().iter().enumerate() {
        assert_eq!(out.schema().field(i).data_type(), field.data_type(), "column {}", field.name());
        assert_eq!(out.column(i).as_ref(), input.column(i).as_ref(), "column {}", field.name());
    }

    // What the plugin saw, and columns the plugin built.
    let out = one_batch(
        &ctx,
        "SELECT types_show_boolean(b), types_show_int32(i32), types_show_binary(bin), \
                types_parse_int64(types_show_int64(i64)), types_parse_boolean('nope') FROM t",
    )
    .await;
    assert_eq!(strings(out.column(0)), owned(&[Some("true"), None, Some("false"), Some("true")]));
    assert_eq!(strings(out.column(1)), owned(&[Some("-2147483648"), Some("0"), None, Some("7")]));
    assert_eq!(strings(out.column(2)), owned(&[Some("[255, 0, 128]"), None, Some("[]"), Some("[122]")]));
    assert_eq!(out.column(3).as_ref(), input.column(2).as_ref());
    assert_eq!(out.column(4).null_count(), 4, "a row that does not parse is null");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_and_other_encodings_convert_to_the_declared_types() {
    let (_host, _functions, ctx) = serve(&[("types", test_plugins::TYPES)]);
    let out = one_batch(
        &ctx,
        "SELECT types_show_int32(42), types_show_float32(1.5), types_show_float64(3), \
                types_show_binary(X'00ff'), types_show_binary(arrow_cast(X'01', 'BinaryView')), \
                types_show_int64(arrow_cast(9, 'UInt8')), types_show_utf8(NULL), types_show_boolean(1 < 2)",
    )
    .await;
    let shown: Vec<Option<String>> = out.columns().iter().map(|c| strings(c).remove(0)).collect();
    assert_eq!(
        shown,
        owned(&[Some("42"), Some("1.5"), Some("3.0"), Some("[0, 255]"), Some("[1]"), Some("9"), None, Some("true")])
    );

    // An integer argument out of the parameter's range fails the query
    // (it is never wrapped or nulled).
    let err = ctx.sql("SELECT types_echo_int32(5000000000)").await.unwrap().collect().await.unwrap_err();
    assert!(err.to_string().contains("5000000000"), "{err}");

    // Conversions SQL does not make implicitly are planning errors naming
    // the function, the argument and the signature.
    for (sql, argument) in [
        ("SELECT types_echo_int32('7')", "argument 1 is Utf8"),
        ("SELECT types_echo_int64(1.5)", "argument 1 is Float64"),
        ("SELECT types_echo_boolean(1)", "argument 1 is Int64"),
        ("SELECT types_echo_binary('x')", "argument 1 is Utf8"),
    ] {
        let message = plan_error(&ctx, sql).await;
        assert!(message.contains("types_echo_") && message.contains(argument), "{sql}: {message}");
    }
    let err = plan_error(&ctx, "SELECT types_echo_int64(1, 2)").await;
    assert!(err.contains("(int64) -> int64") && err.contains("passes 2 argument"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_is_not_deterministic_is_volatile_and_called_per_row() {
    let (_host, _functions, ctx) = serve(&[("types", test_plugins::TYPES)]);
    let volatility = |name: &str| ctx.state().scalar_functions()[name].signature().volatility;
    assert_eq!(volatility("types_instance_calls"), Volatility::Volatile);
    assert_eq!(volatility("types_echo_int64"), Volatility::Immutable);
    // A constant argument is not folded at planning; every row gets a value.
    let out = one_batch(&ctx, "SELECT types_instance_calls(true) FROM generate_series(1, 5)").await;
    assert_eq!((out.num_rows(), out.column(0).null_count()), (5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_reload_mid_query_keeps_the_query_on_its_generation() {
    let (host, functions, ctx) = serve(&[("math", test_plugins::MATH_V1)]);
    let id = PluginId::new("math");
    let (_watch, mut changes) = cutovers(&host);
    // math v1: mul3(x) = 3x, add(a, b) = a + b; v2 adds 1,000,000 to both.
    let version = |x: i64, y: i64| (y - 3 * x) / 1_000_000 + 1;
    let sql = "SELECT value, math_mul3(value), math_add(value, 0) - value FROM generate_series(1, 100000)";
    let versions = |batches: &[RecordBatch]| {
        let mut seen = std::collections::BTreeSet::new();
        for b in batches {
            let (x, y, z) = (
                b.column(0).as_primitive::<Int64Type>(),
                b.column(1).as_primitive::<Int64Type>(),
                b.column(2).as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                seen.insert(version(x.value(i), y.value(i)));
                seen.insert(z.value(i) / 1_000_000 + 1); // add: the same generation
            }
        }
        seen
    };

    let mut running = ctx.sql(sql).await.unwrap().execute_stream().await.unwrap();
    let mut old = vec![running.next().await.expect("a first batch").unwrap()];
    assert_eq!(functions.queries_in_flight(&id, 1), 1);

    let reload = {
        let (host, id) = (Arc::clone(&host), id.clone());
        tokio::task::spawn_blocking(move || {
            host.reload(
                &id,
                &WasmSource::from_file(test_plugins::MATH_V2),
                &ReloadOptions::default().deadline(DEADLINE),
            )
        })
    };
    assert_eq!(within("the cutover", changes.recv()).await.unwrap().generation, Some(2));

    let new = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    assert_eq!(new.iter().map(RecordBatch::num_rows).sum::<usize>(), 100_000);
    assert_eq!(versions(&new), [2].into(), "a query planned after the cutover runs on math v2 only");

    while let Some(batch) = running.next().await {
        old.push(batch.unwrap());
    }
    assert_eq!(old.iter().map(RecordBatch::num_rows).sum::<usize>(), 100_000);
    assert_eq!(versions(&old), [1].into(), "the query planned before runs on math v1 to its last row");
    drop(running);

    let report = within("the reload", reload).await.unwrap().unwrap();
    assert_eq!(report.outcome, DrainOutcome::Drained);
    assert_eq!(functions.queries_in_flight(&id, 1), 0);
}
