//! Dev-only: the Rust guest plugins under `plugins/` (WebAssembly components
//! of world `cutover:plugin/scalar-plugin`), built for `wasm32-wasip2` by this
//! crate's build script, and the paths of the built `.wasm` files.
//!
//! Depend on it from tests and benchmarks (`[dev-dependencies]`); building it
//! builds the plugins (`cargo build --release --target wasm32-wasip2` in
//! `plugins/`, into `<target>/wasm-plugins`) and fails with a plain message
//! when the target is not installed (`rustup target add wasm32-wasip2`).
//!
//! ```no_run
//! let text = std::fs::read(test_plugins::TEXT).unwrap();
//! assert!(text.starts_with(b"\0asm"));
//! ```

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
