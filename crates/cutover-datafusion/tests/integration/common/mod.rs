//! Test helpers: a versioned native plugin whose results say which version
//! computed them, a gate that holds a batch inside a plugin function, a
//! table fed batch by batch by the test, and waiting with a deadline.

#![allow(dead_code)]

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use cutover::{
    host::{Host, HostChange, ReloadError, ReloadOptions, ReloadReport},
    plugin::BoxError,
    PluginId,
};
use cutover_datafusion::{HostFunctions, NativePlugin};
use cutover_wasm::{CallError, NativeFn, Signature, ValueType};
use datafusion::{
    arrow::{
        array::{ArrayRef, AsArray, Int64Array, RecordBatch},
        datatypes::{DataType, Field, Int64Type, Schema, SchemaRef},
    },
    catalog::streaming::StreamingTable,
    execution::TaskContext,
    physical_plan::{stream::RecordBatchStreamAdapter, streaming::PartitionStream, SendableRecordBatchStream},
    prelude::SessionContext,
};
use tokio::sync::mpsc;

/// The deadline for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Version `k` of `math.mul3`: `3x + k * 1_000_000`.
pub fn mul3(k: i64, x: i64) -> i64 {
    3 * x + k * 1_000_000
}

/// The version that computed `mul3(x) = y`.
pub fn version_of(x: i64, y: i64) -> i64 {
    (y - 3 * x) / 1_000_000
}

/// A gate that holds the first call of a plugin function inside its batch
/// until the test opens it.
#[derive(Default)]
pub struct Gate {
    entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    open: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// The test's side of a [`Gate`].
pub struct GateControl {
    entered: std::sync::mpsc::Receiver<()>,
    open: std::sync::mpsc::Sender<()>,
}

impl Gate {
    /// A closed gate and its control.
    pub fn new() -> (Arc<Gate>, GateControl) {
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (open_tx, open_rx) = std::sync::mpsc::channel();
        let gate = Gate { entered: Mutex::new(Some(entered_tx)), open: Mutex::new(Some(open_rx)) };
        (Arc::new(gate), GateControl { entered: entered_rx, open: open_tx })
    }

    /// Called in a batch: the first caller says it entered and waits for
    /// the gate to open; later callers pass.
    fn pass(&self) {
        let entered = self.entered.lock().unwrap().take();
        if let Some(entered) = entered {
            let _ = entered.send(());
            let open = self.open.lock().unwrap().take();
            if let Some(open) = open {
                let _ = open.recv_timeout(DEADLINE);
            }
        }
    }
}

impl GateControl {
    /// Wait (blocking, with the deadline) until a batch is held in the gate.
    pub fn wait_entered(&self) {
        self.entered.recv_timeout(DEADLINE).expect("no batch entered the gated function");
    }

    /// Let the held batch go on.
    pub fn open(&self) {
        let _ = self.open.send(());
    }
}

/// Version `k` of plugin `math`: `mul3`, `add(x, y) = x + y + k * 1e6`,
/// `fail(x)` (an error for negative x, else x), and `gated(x) = mul3(x)`
/// whose first batch waits in `gate`. Its shutdown reports `k` on
/// `shutdowns`.
pub fn math(
    k: i64,
    gate: Option<Arc<Gate>>,
    shutdowns: Option<std::sync::mpsc::Sender<i64>>,
) -> impl Fn(&PluginId) -> Result<NativePlugin, BoxError> + Send + Sync {
    move |_| {
        let gate = gate.clone();
        let gated =
            NativeFn::new("math.gated", Signature::new([ValueType::Int64], ValueType::Int64), move |args, _| {
                if let Some(gate) = &gate {
                    gate.pass();
                }
                let x = args[0].as_primitive::<Int64Type>();
                Ok(Arc::new(x.unary::<_, Int64Type>(|x| mul3(k, x))) as ArrayRef)
            });
        let fail = NativeFn::new("math.fail", Signature::new([ValueType::Int64], ValueType::Int64), |args, _| {
            let x = args[0].as_primitive::<Int64Type>();
            if x.iter().flatten().any(|x| x < 0) {
                return Err(CallError::Native { function: String::new(), message: "negative input".into() });
            }
            Ok(Arc::clone(&args[0]))
        });
        let plugin = NativePlugin::new([
            NativeFn::unary("math.mul3", move |x: i64| mul3(k, x)),
            NativeFn::binary("math.add", move |x: i64, y: i64| x + y + k * 1_000_000),
            fail,
            gated,
        ]);
        Ok(match shutdowns.clone() {
            Some(tx) => plugin.on_shutdown(move || {
                let _ = tx.send(k);
            }),
            None => plugin,
        })
    }
}

/// A host with `math` version 1 and a session with its functions.
pub fn setup() -> (Arc<Host<NativePlugin>>, HostFunctions<NativePlugin>, SessionContext) {
    setup_with(None)
}

/// [`setup`], with version 1's shutdown reported on `shutdowns`.
pub fn setup_with(
    shutdowns: Option<std::sync::mpsc::Sender<i64>>,
) -> (Arc<Host<NativePlugin>>, HostFunctions<NativePlugin>, SessionContext) {
    let host = Arc::new(Host::new());
    host.add(PluginId::new("math"), &math(1, None, shutdowns)).expect("add math");
    let functions = HostFunctions::new(Arc::clone(&host));
    let ctx = SessionContext::new();
    functions.register(&ctx);
    (host, functions, ctx)
}

/// The first column of `batches` as i64s.
pub fn column(batches: &[RecordBatch]) -> Vec<i64> {
    batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().iter().flatten().collect::<Vec<_>>()).collect()
}

/// The second column of `batches` as i64s.
pub fn column2(batches: &[RecordBatch]) -> Vec<i64> {
    batches.iter().flat_map(|b| b.column(1).as_primitive::<Int64Type>().iter().flatten().collect::<Vec<_>>()).collect()
}

/// The versions of `mul3` that computed batches of `x, math_mul3(x)` (rows
/// come in any order).
pub fn versions(batches: &[RecordBatch]) -> std::collections::BTreeSet<i64> {
    column(batches).into_iter().zip(column2(batches)).map(|(x, y)| version_of(x, y)).collect()
}

/// Rows per batch (DataFusion's default batch size: smaller batches from a
/// streaming source are held back to be coalesced).
pub const BATCH: i64 = 8192;

/// A full batch of values: `start, start + 1, ...`.
pub fn batch_from(start: i64) -> Vec<i64> {
    (start..start + BATCH).collect()
}

/// Await `future`, failing the test after the deadline.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Cutover notifications of `host`, as generations.
pub fn cutovers<P: cutover::plugin::Plugin>(
    host: &Host<P>,
) -> (cutover::host::Subscription, mpsc::UnboundedReceiver<HostChange>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let subscription = host.subscribe(move |c: &HostChange| {
        let _ = tx.send(c.clone());
    });
    (subscription, rx)
}

/// Reload `math` to version `k` on a blocking thread.
pub fn reload_in_background(
    host: &Arc<Host<NativePlugin>>,
    k: i64,
    shutdowns: Option<std::sync::mpsc::Sender<i64>>,
) -> tokio::task::JoinHandle<Result<ReloadReport, ReloadError>> {
    let host = Arc::clone(host);
    tokio::task::spawn_blocking(move || {
        host.reload(&PluginId::new("math"), &math(k, None, shutdowns), &ReloadOptions::default().deadline(DEADLINE))
    })
}

/// A one-column (`x BIGINT`) table whose single partition streams the
/// batches sent to the returned sender, and ends when it is dropped. It can
/// be scanned once.
pub fn feed_table(ctx: &SessionContext, name: &str) -> mpsc::UnboundedSender<Vec<i64>> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let (tx, rx) = mpsc::unbounded_channel();
    let partition = Arc::new(Feed { schema: Arc::clone(&schema), rx: Mutex::new(Some(rx)) });
    let table = StreamingTable::try_new(schema, vec![partition]).expect("streaming table");
    ctx.register_table(name, Arc::new(table)).expect("register feed");
    tx
}

#[derive(Debug)]
struct Feed {
    schema: SchemaRef,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<i64>>>>,
}

impl PartitionStream for Feed {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let rx = self.rx.lock().unwrap().take();
        let schema = Arc::clone(&self.schema);
        let batches = futures::stream::unfold((rx, schema.clone()), |(rx, schema)| async move {
            let mut rx = rx?;
            let values = rx.recv().await?;
            let batch =
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(values))]).map_err(Into::into);
            Some((batch, (Some(rx), schema)))
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, batches))
    }
}
