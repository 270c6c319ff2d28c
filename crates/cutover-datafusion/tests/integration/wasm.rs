//! WebAssembly plugins in SQL: the same pinning as native ones, and plugin
//! errors (traps) as execution errors.

use crate::common;

use std::sync::Arc;

use common::{column, cutovers, within, DEADLINE};
use cutover::{
    host::{DrainOutcome, Host, ReloadOptions},
    PluginId,
};
use cutover_datafusion::{Error, HostFunctions};
use cutover_wasm::{CallError, WasmPlugin, WasmSource};
use datafusion::{error::DataFusionError, physical_plan::collect, prelude::SessionContext};

fn module(k: i64) -> WasmSource {
    WasmSource::from_wat(&format!(
        r#"(module
  (func (export "mul3") (param i64) (result i64)
    local.get 0 i64.const 3 i64.mul i64.const {} i64.add)
  (func (export "boom") (param i64) (result i64)
    local.get 0 i64.eqz
    if unreachable end
    local.get 0))"#,
        k * 1_000_000
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_function_is_pinned_like_a_native_one() {
    let host: Arc<Host<WasmPlugin>> = Arc::new(Host::new());
    let id = PluginId::new("math");
    host.add(id.clone(), &module(1)).unwrap();
    let ctx = SessionContext::new();
    let functions = HostFunctions::new(Arc::clone(&host));
    functions.register(&ctx);
    let (_watch, mut changes) = cutovers(&host);

    let sql = "SELECT math_mul3(value) FROM generate_series(1, 3) ORDER BY 1";
    let pinned = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
    let reload = {
        let (host, id) = (Arc::clone(&host), id.clone());
        tokio::task::spawn_blocking(move || host.reload(&id, &module(2), &ReloadOptions::default().deadline(DEADLINE)))
    };
    within("the cutover", changes.recv()).await.unwrap();
    assert_eq!(column(&ctx.sql(sql).await.unwrap().collect().await.unwrap()), [2_000_003, 2_000_006, 2_000_009]);
    assert_eq!(functions.queries_in_flight(&id, 1), 1);
    assert_eq!(column(&collect(pinned, ctx.task_ctx()).await.unwrap()), [1_000_003, 1_000_006, 1_000_009]);
    assert_eq!(within("the reload", reload).await.unwrap().unwrap().outcome, DrainOutcome::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_an_execution_error_naming_the_function_and_generation() {
    let host: Arc<Host<WasmPlugin>> = Arc::new(Host::new());
    host.add(PluginId::new("math"), &module(1)).unwrap();
    let ctx = SessionContext::new();
    HostFunctions::new(Arc::clone(&host)).register(&ctx);

    let err =
        ctx.sql("SELECT math_boom(value - 1) FROM generate_series(1, 3)").await.unwrap().collect().await.unwrap_err();
    let DataFusionError::External(inner) = err.find_root() else { panic!("not an execution error: {err:?}") };
    let Some(Error::Call { function, generation: 1, source, .. }) = inner.downcast_ref::<Error>() else {
        panic!("not a call error: {err}")
    };
    assert_eq!(function, "math_boom");
    assert!(matches!(**source, CallError::Trap { .. }), "{source}");
    // The session keeps working.
    assert_eq!(column(&ctx.sql("SELECT math_boom(5)").await.unwrap().collect().await.unwrap()), [5]);
}
