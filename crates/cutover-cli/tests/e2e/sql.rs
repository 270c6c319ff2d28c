//! End-to-end tests of `POST /v1/sql`: the real binary on a loopback port,
//! plugins and data files in temporary directories.

use crate::common;

use std::{io::Write as _, sync::Arc};

use common::{math_version, Server, MATH_V1};
use serde_json::{json, Value};

fn sql(server: &Server, query: &str) -> (u16, Value) {
    let (status, text) = server.post("/v1/sql", &json!({ "sql": query }).to_string());
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_else(|| panic!("no \"error\" string in {body}"))
}

#[test]
fn queries_return_columns_rows_and_the_generations_used() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    let (status, body) = sql(&server, "SELECT value, math_mul3(value) AS tripled FROM generate_series(1, 3)");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"columns": ["value", "tripled"], "rows": [[1, 3], [2, 6], [3, 9]], "generations": {"math": 1}})
    );

    // Several functions, nulls, floats; a query without plugin functions
    // uses no generation.
    let (status, body) = sql(
        &server,
        "SELECT math_add(1, NULL) AS a, math_half(3.0) AS h, math_add(value, 10) AS s FROM generate_series(5, 5)",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([[null, 1.5, 15]]), "{body}");
    let (status, body) = sql(&server, "SELECT 'x' AS s, 2.5 AS f, true AS b, DATE '2024-01-31' AS d");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"columns": ["s", "f", "b", "d"], "rows": [["x", 2.5, true, "2024-01-31"]], "generations": {}})
    );
}

#[test]
fn every_error_status() {
    let server = Server::start(&[("math.wat", MATH_V1)], &["--sql-max-rows", "5"]);

    // 400: bad bodies, SQL that does not parse or plan, statements.
    for (body, needle) in [
        ("{\"sql\": ", "not valid JSON"),
        ("{}", "{\"sql\""),
        ("{\"sql\": 5}", "must be a string"),
        ("{\"sql\": \"  \"}", "empty"),
    ] {
        let (status, text) = server.post("/v1/sql", body);
        assert_eq!(status, 400, "{body}: {text}");
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert!(error_of(&reply).contains(needle), "{body}: {reply}");
    }
    for (query, needle) in [
        ("SELEC 1", "SELEC"),
        ("SELECT nope_mul3(1)", "nope_mul3"),
        ("SELECT math_nope(1)", "math_nope"),
        ("SELECT * FROM nowhere", "nowhere"),
        ("SELECT math_mul3(1, 2)", "math_mul3"),
        ("CREATE TABLE t AS SELECT 1", "not supported"),
        ("SET datafusion.execution.batch_size = 1", "not supported"),
    ] {
        let (status, body) = sql(&server, query);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(error_of(&body).contains(needle), "{query}: {body}, expected {needle:?}");
    }

    // 500: the plugin traps while the query runs; the server keeps serving.
    let (status, body) = sql(&server, "SELECT math_boom(CAST(value AS INT)) FROM generate_series(0, 3)");
    assert_eq!(status, 500, "{body}");
    assert!(error_of(&body).contains("math_boom") && error_of(&body).contains("trap"), "{body}");
    let (status, body) = sql(&server, "SELECT math_mul3(2) AS six");
    assert_eq!((status, &body["rows"]), (200, &json!([[6]])), "{body}");

    // 413: more rows than --sql-max-rows (5); exactly 5 is fine.
    let (status, body) = sql(&server, "SELECT value FROM generate_series(1, 6)");
    assert_eq!(status, 413, "{body}");
    assert!(error_of(&body).contains("more than 5 rows"), "{body}");
    let (status, body) = sql(&server, "SELECT value FROM generate_series(1, 5)");
    assert_eq!((status, body["rows"].as_array().map(Vec::len)), (200, Some(5)), "{body}");
}

#[test]
fn a_query_past_the_timeout_is_cancelled_and_releases_its_generation() {
    let server = Server::start(&[("math.wat", MATH_V1)], &["--sql-timeout-ms", "300"]);
    // Ten billion rows: minutes of work, far past 300 ms.
    let (status, body) = sql(&server, "SELECT sum(math_mul3(value)) FROM generate_series(1, 10000000000)");
    assert_eq!(status, 504, "{body}");
    assert!(error_of(&body).contains("300 ms"), "{body}");
    server.wait_for("the cancelled query to release generation 1", |s| {
        s.plugin("math").is_some_and(|p| p["queries_in_flight"] == 0 && p["in_flight"] == 0)
    });
    // The generation drains at once on a reload: nothing holds it.
    let (status, text) = server.post("/v1/plugins/math/reload", "");
    assert_eq!(status, 200, "{text}");
    let (status, body) = sql(&server, "SELECT math_mul3(1) AS x");
    assert_eq!((status, &body["generations"]), (200, &json!({"math": 2})), "{body}");
}

#[test]
fn queries_follow_reloads_additions_and_removals() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    let query = "SELECT math_mul3(value) AS y FROM generate_series(1, 2)";
    assert_eq!(sql(&server, query).1, json!({"columns": ["y"], "rows": [[3], [6]], "generations": {"math": 1}}));

    server.write("math.wat", &math_version(1));
    server.wait_generation("math", 2);
    assert_eq!(
        sql(&server, query).1,
        json!({"columns": ["y"], "rows": [[1_000_003], [1_000_006]], "generations": {"math": 2}})
    );

    server
        .write("geo.wat", r#"(module (func (export "neg") (param i64) (result i64) i64.const 0 local.get 0 i64.sub))"#);
    server.wait_generation("geo", 1);
    let (status, body) = sql(&server, "SELECT geo_neg(math_mul3(2)) AS z");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([[-1_000_006]]));
    assert_eq!(body["generations"], json!({"geo": 1, "math": 2}));

    std::fs::remove_file(server.path("geo.wat")).unwrap();
    server.wait_for("geo removed", |s| s.plugin("geo").is_none());
    let (status, body) = sql(&server, "SELECT geo_neg(1)");
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("geo_neg"), "{body}");
}

#[test]
fn data_files_are_tables() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("people.csv"), "name,age\nada,36\nalan,41\n").unwrap();
    std::fs::write(data.path().join("notes.txt"), "not a table").unwrap();
    write_parquet(&data.path().join("scores.parquet"));
    let server = Server::start(&[("math.wat", MATH_V1)], &["--data", data.path().to_str().unwrap()]);

    let (status, body) = sql(&server, "SELECT name, math_mul3(age) AS a FROM people ORDER BY name");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([["ada", 108], ["alan", 123]]));
    let (status, body) = sql(
        &server,
        "SELECT p.name, math_add(s.score, 1) AS next FROM people p JOIN scores s ON p.name = s.name ORDER BY p.name",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"columns": ["name", "next"], "rows": [["ada", 11], ["alan", 21]], "generations": {"math": 1}})
    );
    let (status, body) = sql(&server, "SELECT * FROM notes");
    assert_eq!(status, 400, "{body}");
}

#[test]
fn an_unreadable_data_directory_fails_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--plugins"])
        .arg(dir.path())
        .args(["--data", "/definitely/not/here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("data directory"), "{stderr}");
}

#[test]
fn the_plugin_listing_counts_queries_in_flight_per_generation() {
    let server =
        Server::start(&[("math.wat", MATH_V1)], &["--sql-timeout-ms", "600000", "--drain-deadline-ms", "600000"]);
    let math = server.plugin("math").unwrap();
    assert_eq!(math["queries_in_flight"], 0, "{math}");

    // A long query, on a connection the test closes to cancel it.
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    let body = json!({"sql": "SELECT sum(math_mul3(value)) FROM generate_series(1, 10000000000)"}).to_string();
    write!(
        conn,
        "POST /v1/sql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    server.wait_for("the query in flight on generation 1", |s| {
        s.plugin("math").is_some_and(|p| p["queries_in_flight"] == 1)
    });

    // A reload: generation 2 serves, generation 1 drains while the query
    // holds it.
    server.write("math.wat", &math_version(1));
    server.wait_generation("math", 2);
    let math = server.plugin("math").unwrap();
    assert_eq!(math["queries_in_flight"], 0, "{math}");
    assert_eq!(math["draining"], json!([{"generation": 1, "in_flight": 1, "queries_in_flight": 1}]), "{math}");

    // The client goes away: the query is cancelled and generation 1 drains.
    drop(conn);
    server.wait_for("generation 1 drained", |s| s.plugin("math").is_some_and(|p| p["draining"] == json!([])));
    let (status, body) = sql(&server, "SELECT math_mul3(1) AS x");
    assert_eq!((status, &body["rows"]), (200, &json!([[1_000_003]])), "{body}");
}

/// A Parquet file with `name` (utf8) and `score` (int64).
fn write_parquet(path: &std::path::Path) {
    use datafusion::arrow::{
        array::{ArrayRef, Int64Array, RecordBatch, StringArray},
        datatypes::{DataType, Field, Schema},
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("score", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec!["ada", "alan"])) as ArrayRef,
            Arc::new(Int64Array::from(vec![10, 20])) as ArrayRef,
        ],
    )
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}
