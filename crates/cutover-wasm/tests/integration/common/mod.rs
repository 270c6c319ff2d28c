//! Shared helpers for the integration tests (the `common` module of the one test binary).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array};
use cutover::PluginId;
use cutover_wasm::{WasmLimits, WasmPlugin, WasmSource};

/// Path of a fixture plugin.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/plugins").join(name)
}

/// A plugin id.
pub fn id(s: &str) -> PluginId {
    PluginId::new(s)
}

/// Small, fast limits for tests.
pub fn test_limits() -> WasmLimits {
    WasmLimits::default().prewarm_instances(2)
}

/// Load a fixture ready to serve, as plugin `math`.
pub fn ready(file: &str, limits: WasmLimits) -> Arc<WasmPlugin> {
    let source = WasmSource::from_file(fixture(file)).with_limits(limits);
    Arc::new(source.load_ready(&id("math")).expect("fixture loads"))
}

/// An Int64 column.
pub fn i64s(v: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

/// The values of an Int64 column.
pub fn as_i64(a: &ArrayRef) -> Vec<Option<i64>> {
    a.as_any().downcast_ref::<Int64Array>().expect("Int64 result").iter().collect()
}

/// Load a Rust guest component (a `test_plugins` path) ready to serve as
/// plugin `id`.
pub fn component(path: &str, id_: &str, limits: WasmLimits) -> Arc<WasmPlugin> {
    let source = WasmSource::from_file(path).with_limits(limits);
    Arc::new(source.load_ready(&id(id_)).unwrap_or_else(|e| panic!("{path} loads: {e}")))
}

/// Run `f` with every `tracing` event (target, level, fields, message)
/// written to a string, which is returned.
pub fn capture_logs(f: impl FnOnce()) -> String {
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}
