//! Load errors name where the module came from: the file path of a file
//! source, or the name given with `WasmSource::with_name`, never `<anon>`.

use std::path::PathBuf;

use cutover::PluginId;
use cutover_wasm::{LoadError, WasmSource};

/// Text that does not parse: `i32.const` without its operand, on line 3.
const BROKEN: &str = "(module\n  (func (export \"f\") (result i32)\n    i32.const))\n";

/// A fresh directory under Cargo's per-target temporary directory.
fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("source_name-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

fn load_error(source: &WasmSource) -> LoadError {
    match source.load_plugin(&PluginId::new("broken")) {
        Ok(_) => panic!("the broken module loaded"),
        Err(e) => e,
    }
}

#[test]
fn a_parse_error_of_a_file_names_its_path_line_and_column() {
    let path = scratch("file").join("broken.wat");
    std::fs::write(&path, BROKEN).unwrap();
    let source = WasmSource::from_file(&path);
    assert_eq!(source.name(), Some(path.display().to_string().as_str()));
    let err = load_error(&source);
    assert!(matches!(err, LoadError::Parse { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&format!("{}:3:", path.display())), "no path:line in: {message}");
    assert!(!message.contains("<anon>"), "{message}");
}

#[test]
fn bytes_named_with_with_name_are_named_in_parse_errors() {
    let source = WasmSource::from_bytes(BROKEN).with_name("plugins/math.wat");
    assert_eq!(source.name(), Some("plugins/math.wat"));
    let message = load_error(&source).to_string();
    assert!(message.contains("plugins/math.wat:3:"), "{message}");
    assert!(!message.contains("<anon>"), "{message}");
}

#[test]
fn non_utf8_garbage_in_a_file_names_the_path() {
    let path = scratch("garbage").join("garbage.wasm");
    std::fs::write(&path, b"\x00\x01\xffgarbage").unwrap();
    let err = load_error(&WasmSource::from_file(&path));
    assert!(matches!(err, LoadError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn a_binary_that_fails_validation_names_its_source() {
    let source = WasmSource::from_bytes(b"\0asm\x01\x00\x00\x00\x01\x05".to_vec()).with_name("plugins/truncated.wasm");
    let err = load_error(&source);
    assert!(matches!(err, LoadError::Validate { .. }), "{err:?}");
    assert!(err.to_string().contains("`plugins/truncated.wasm`"), "{err}");
}

#[test]
fn unnamed_bytes_still_load_and_fail_as_before() {
    let source = WasmSource::from_wat(BROKEN);
    assert_eq!(source.name(), None);
    assert!(matches!(load_error(&source), LoadError::Parse { .. }));
}
