//! Builds the guest plugins under `plugins/` (a separate Cargo workspace) for
//! `wasm32-wasip2`, in release mode, into their own target directory
//! (`<target>/wasm-plugins`, so the inner cargo never waits on the outer
//! one's lock), and copies the components into `OUT_DIR` for the constants
//! of `src/lib.rs`. Fails with a plain message if the target is missing.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// (constant, file stem of the built component, what it is)
const PLUGINS: &[(&str, &str, &str)] = &[
    ("TEXT", "text", "`text`: `upper`, `lower`, `length`, `concat` over utf8."),
    ("GEO", "geo", "`geo`: `haversine_km` over float64 × 4."),
    ("MATH_V1", "math_v1", "`math` version 1: `mul3(x) = 3x`, `add(a, b) = a + b` over int64."),
    ("MATH_V2", "math_v2", "`math` version 2: `mul3(x) = 3x + 1,000,000`, `add(a, b) = a + b + 1,000,000`."),
    ("TYPES", "types", "`types`: `echo_*`, `show_*`, `parse_*` for every data type, `rows`, `instance_calls`."),
    ("MISBEHAVE", "misbehave", "`misbehave`: one contract violation per function; `init` misbehaves on request."),
    ("FUNCTIONS_TRAP", "functions_trap", "Broken: `functions` traps."),
    ("FUNCTIONS_EMPTY_NAME", "functions_empty_name", "Broken: `functions` returns an empty name."),
    ("FUNCTIONS_REPEATED", "functions_repeated", "Broken: `functions` returns a name twice."),
    ("FUNCTIONS_DOTTED", "functions_dotted", "Broken: `functions` returns a name containing `.`."),
    ("OTHER_WORLD", "other_world", "Broken: a component of another world."),
    ("EXTRA_IMPORT", "extra_import", "Broken: imports an interface the host does not provide."),
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    let plugins = root.join("plugins");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    // Any change under wit/ or plugins/ (cargo scans directories
    // recursively; a hand build into plugins/target only costs a no-op rerun).
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    check_target_installed();

    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
    .join("wasm-plugins");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&plugins)
        .args(["build", "--release", "--locked", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings must not leak into the guest build (flags for
    // the host target, clippy as the compiler, a target directory, ...).
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let output = command.output().unwrap_or_else(|e| fail(&format!("cannot run cargo: {e}")));
    if !output.status.success() {
        fail(&format!(
            "building the guest plugins (cd plugins && cargo build --release --target {TARGET}) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }

    let built = target_dir.join(TARGET).join("release");
    let mut constants = String::new();
    for (constant, stem, doc) in PLUGINS {
        let file = format!("{stem}.wasm");
        let copy = out.join(&file);
        std::fs::copy(built.join(&file), &copy)
            .unwrap_or_else(|e| fail(&format!("the build did not produce {}: {e}", built.join(&file).display())));
        let _ = writeln!(constants, "/// {doc}\npub const {constant}: &str = {:?};", copy.display().to_string());
    }
    let _ = writeln!(
        constants,
        "/// Every plugin: (file stem, path).\npub const ALL: &[(&str, &str)] = &[{}];",
        PLUGINS.iter().map(|(c, s, _)| format!("({s:?}, {c})")).collect::<Vec<_>>().join(", ")
    );
    std::fs::write(out.join("plugins.rs"), constants)
        .unwrap_or_else(|e| fail(&format!("cannot write plugins.rs: {e}")));
}

/// The target's standard library must be installed (`rustup target add`).
fn check_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |sysroot: &Option<PathBuf>| {
        sysroot.as_ref().is_some_and(|s| s.join("lib/rustlib").join(TARGET).join("lib").is_dir())
    };
    if !installed(&sysroot) {
        // A fresh machine: install it the way the README says, once, so
        // that `cargo test --workspace` is all a newcomer runs.
        println!("cargo:warning=installing the Rust target {TARGET} (rustup target add {TARGET})");
        let added = Command::new("rustup")
            .args(["target", "add", TARGET])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if added && installed(&sysroot) {
            return;
        }
    }
    if !installed(&sysroot) {
        fail(&format!(
            "the Rust target {TARGET} is not installed, and the tests need the guest plugins under plugins/ built \
             for it. Install it with:\n\n    rustup target add {TARGET}\n"
        ));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("{message}");
}
