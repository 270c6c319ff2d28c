//! 4 clients run queries continuously while the plugin is reloaded 50
//! times: no query fails, and every query's results come from one version,
//! the one of the generation it pinned.

use crate::common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
};

use common::*;
use cutover::{
    host::{DrainOutcome, ReloadOptions},
    PluginId,
};
use cutover_datafusion::create_physical_plan;
use datafusion::{
    arrow::{array::AsArray, datatypes::Int64Type},
    physical_plan::collect,
};

const CLIENTS: usize = 4;
const RELOADS: i64 = 50;
const ROWS: i64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_clients_query_through_fifty_reloads_each_query_on_one_version() {
    let (host, functions, ctx) = setup();
    let stop = Arc::new(AtomicBool::new(false));
    // Completed queries per generation; each reload waits for one on the
    // generation it retires, so every generation serves queries.
    let done = Arc::new((Mutex::new(BTreeMap::<i64, usize>::new()), Condvar::new()));
    let sql = format!("SELECT value, math_mul3(value), math_add(value, 0) FROM generate_series(1, {ROWS})");

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (ctx, stop, done, sql) = (ctx.clone(), Arc::clone(&stop), Arc::clone(&done), sql.clone());
            tokio::spawn(async move {
                let mut versions_seen = std::collections::BTreeSet::new();
                // At least one query per client, then until the reloads are done.
                loop {
                    let (state, logical) = ctx.sql(&sql).await.expect("plan").into_parts();
                    let planned = create_physical_plan(&state, &logical).await.expect("physical plan");
                    let generation = planned.generations[&PluginId::new("math")] as i64;
                    let batches = collect(planned.plan, state.task_ctx()).await.unwrap_or_else(|e| {
                        panic!("client {client}: a query failed: {e}");
                    });
                    let (x, mul3) = (column(&batches), column2(&batches));
                    assert_eq!(x.len() as i64, ROWS, "client {client}: rows");
                    let used = versions(&batches);
                    // Generation g serves version g (each reload loads the next).
                    assert_eq!(used, [generation].into(), "client {client}: one query, one version");
                    let add: Vec<i64> = batches
                        .iter()
                        .flat_map(|b| b.column(2).as_primitive::<Int64Type>().values().to_vec())
                        .collect();
                    let add_versions: std::collections::BTreeSet<i64> =
                        x.iter().zip(&add).map(|(x, y)| (y - x) / 1_000_000).collect();
                    assert_eq!(add_versions, used, "client {client}: both functions on one generation");
                    assert_eq!(mul3.len(), add.len());
                    versions_seen.insert(generation);
                    *done.0.lock().unwrap().entry(generation).or_default() += 1;
                    done.1.notify_all();
                    if stop.load(Ordering::Acquire) {
                        return versions_seen;
                    }
                }
            })
        })
        .collect();

    let reloads = {
        let (host, done) = (Arc::clone(&host), Arc::clone(&done));
        tokio::task::spawn_blocking(move || {
            let options = ReloadOptions::default().deadline(DEADLINE);
            (2..=RELOADS + 1)
                .map(|k| {
                    let (served, _) = done
                        .1
                        .wait_timeout_while(done.0.lock().unwrap(), DEADLINE, |d| !d.contains_key(&(k - 1)))
                        .unwrap();
                    assert!(served.contains_key(&(k - 1)), "no query completed on generation {}", k - 1);
                    drop(served);
                    host.reload(&PluginId::new("math"), &math(k, None, None), &options).expect("reload")
                })
                .collect::<Vec<_>>()
        })
    };
    let reports = within("50 reloads", reloads).await.unwrap();
    stop.store(true, Ordering::Release);
    let mut all_seen = std::collections::BTreeSet::new();
    for client in clients {
        all_seen.extend(within("a client", client).await.unwrap());
    }

    assert_eq!(reports.len(), RELOADS as usize);
    assert!(reports.iter().all(|r| r.outcome == DrainOutcome::Drained), "every old generation drained");
    assert_eq!(host.snapshot(&PluginId::new("math")).unwrap().generation, RELOADS as u64 + 1);
    assert!(functions.all_queries_in_flight().is_empty(), "every pin released");
    let served = done.0.lock().unwrap();
    for generation in 1..=RELOADS {
        assert!(served.contains_key(&generation), "no query on generation {generation}: {served:?}");
    }
    assert!(all_seen.iter().all(|g| (1..=RELOADS + 1).contains(g)), "{all_seen:?}");
}
