//! Property test: the loader never panics or hangs on random or mutated input.

use crate::common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
};
use common::*;
use cutover_wasm::{ValueType, WasmLimits, WasmSource};
use proptest::prelude::*;

fn valid_module() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| wat::parse_file(fixture("math_v1.wat")).unwrap())
}

fn limits() -> WasmLimits {
    WasmLimits::default()
        .prewarm_instances(1)
        .init_timeout(Duration::from_millis(100))
        .call_timeout(Duration::from_millis(100))
        .max_memory_bytes(1 << 20)
}

fn column(ty: ValueType) -> ArrayRef {
    match ty {
        ValueType::Int32 => Arc::new(Int32Array::from(vec![Some(0), None, Some(-1), Some(i32::MAX)])),
        ValueType::Int64 => Arc::new(Int64Array::from(vec![Some(0), None, Some(-1), Some(i64::MIN)])),
        ValueType::Float32 => Arc::new(Float32Array::from(vec![Some(0.0), None, Some(-1.5), Some(f32::NAN)])),
        ValueType::Float64 => Arc::new(Float64Array::from(vec![Some(0.0), None, Some(-1.5), Some(f64::INFINITY)])),
        ValueType::Boolean => Arc::new(BooleanArray::from(vec![Some(true), None, Some(false), Some(true)])),
        ValueType::Utf8 => Arc::new(StringArray::from(vec![Some(""), None, Some("é"), Some("x")])),
        ValueType::Binary => Arc::new(BinaryArray::from(vec![Some(&b""[..]), None, Some(&[0xff][..]), Some(b"x")])),
    }
}

/// Load; if it loads, call every function once. Errors are fine; panics and
/// hangs are not.
fn exercise(bytes: Vec<u8>) {
    let Ok(plugin) = WasmSource::from_bytes(bytes).with_limits(limits()).load_ready(&id("fz")) else {
        return;
    };
    for name in plugin.functions().to_vec() {
        let sig = plugin.signature(&name).unwrap().clone();
        let args: Vec<ArrayRef> = sig.params.iter().map(|t| column(*t)).collect();
        let _ = plugin.invoke(&name, &args, 4);
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutate(mut bytes: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(i, x) => {
                if !bytes.is_empty() {
                    bytes[i % len] ^= x.max(1);
                }
            }
            Mutation::Insert(i, x) => bytes.insert(i % (bytes.len() + 1), x),
            Mutation::Remove(i) => {
                if !bytes.is_empty() {
                    bytes.remove(i % len);
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Flip(i, x)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Insert(i, x)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        exercise(bytes);
    }

    #[test]
    fn random_bytes_with_wasm_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = b"\0asm\x01\x00\x00\x00".to_vec();
        bytes.extend(tail);
        exercise(bytes);
    }

    #[test]
    fn mutated_modules_never_panic(ms in proptest::collection::vec(mutation(), 1..6)) {
        exercise(mutate(valid_module().to_vec(), &ms));
    }

    #[test]
    fn mutated_text_never_panics(ms in proptest::collection::vec(mutation(), 1..4)) {
        let text = std::fs::read(fixture("math_v1.wat")).unwrap();
        exercise(mutate(text, &ms));
    }
}
