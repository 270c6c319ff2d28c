//! End-to-end tests of the `cutover` binary, as one test binary (each linked
//! binary carries DataFusion and wasmtime: one binary links once and keeps
//! CI's disk and time small). Each module is one area; run one with
//! `cargo test -p cutover-cli --test e2e <module>::`.

mod common;

mod serve;
mod serve_components;
mod serve_limits;
mod serve_reload;
mod serve_security;
mod serve_watch;
mod soak;
mod sql;
