//! Shared helpers for the integration tests (included with `mod common;`).
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
