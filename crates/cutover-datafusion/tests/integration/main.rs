//! The integration tests of cutover-datafusion, as one test binary (each
//! linked binary carries DataFusion and wasmtime: one binary links once and
//! keeps CI's disk and time small). Each module is one area; run one with
//! `cargo test -p cutover-datafusion --test integration <module>::`.

mod common;

mod components;
mod pinning;
mod reload_under_load;
mod wasm;
