//! `cutover`: the reference host for hot-reloadable WebAssembly plugins.
//!
//! * `cutover serve --listen ADDR --plugins DIR`: serve every `.wat`/`.wasm`
//!   plugin in DIR over HTTP, reloading them as the files change.
//! * `cutover soak`: call a plugin from several threads while reloading it
//!   continuously, and report latency, cutover and drain times, and whether
//!   any call failed or ran on a stale generation.

mod convert;
mod plugins;
mod serve;
mod soak;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Zero-downtime hot reload of WebAssembly plugins: a reference host and a
/// soak test.
#[derive(Debug, Parser)]
#[command(name = "cutover", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the plugins in a directory over HTTP, reloading them as files change.
    Serve(Box<serve::ServeArgs>),
    /// Call a plugin from several threads while reloading it, and report.
    Soak(soak::SoakArgs),
}

/// Parse a `--listen` address (`127.0.0.1:8080`, `[::1]:0`, `localhost:8080`).
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("`{s}` is not an address to listen on (e.g. 127.0.0.1:8080): {e}"))?
        .next()
        .ok_or_else(|| format!("`{s}` resolves to no address"))
}

/// Parse a directory argument (only non-empty is checked here; readability
/// is checked by the command, with a precise message).
pub(crate) fn parse_dir(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        Err("the directory must not be empty".into())
    } else {
        Ok(PathBuf::from(s))
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_tracing("info,cutover::slot=warn,cranelift=warn,wasmtime=warn");
            serve::run(*args)
        }
        Command::Soak(args) => {
            init_tracing("warn,cranelift=warn,wasmtime=warn");
            soak::run(args)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
