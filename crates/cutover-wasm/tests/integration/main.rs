//! The integration tests of cutover-wasm, as one test binary (each linked
//! binary carries wasmtime: one binary links once and keeps CI's disk and
//! time small). Each module is one area; run one with
//! `cargo test -p cutover-wasm --test integration <module>::`.

mod common;

mod bad_input;
mod component_bad_input;
mod component_reload;
mod component_types;
mod components;
mod format;
mod fuzz;
mod host;
mod reload;
mod source_name;
