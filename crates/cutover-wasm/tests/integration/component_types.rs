//! Every type mapping between Arrow arrays and the WIT `column` variant, in
//! both directions, nulls included, through the `types` guest plugin
//! (plugins/types): `echo_T` (host → guest → host), `show_T` (what the guest
//! saw, rendered by the guest), `parse_T` (columns the guest built).

use crate::common;

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
};
use common::*;
use cutover_wasm::{PluginFormat, ScalarPluginFn, Signature, ValueType, WasmPlugin};

fn types() -> Arc<WasmPlugin> {
    component(test_plugins::TYPES, "types", test_limits())
}

/// 11 rows of `ty` with nulls and edge values (11: a slice at 3 leaves a
/// validity bitmap that does not start on a byte boundary).
fn sample(ty: ValueType) -> ArrayRef {
    match ty {
        ValueType::Boolean => Arc::new(BooleanArray::from(vec![
            Some(true),
            None,
            Some(false),
            Some(true),
            None,
            Some(false),
            Some(true),
            Some(true),
            Some(false),
            None,
            Some(true),
        ])),
        ValueType::Int32 => Arc::new(Int32Array::from(vec![
            Some(0),
            None,
            Some(-1),
            Some(i32::MAX),
            Some(i32::MIN),
            None,
            Some(7),
            Some(8),
            Some(9),
            None,
            Some(42),
        ])),
        ValueType::Int64 => Arc::new(Int64Array::from(vec![
            Some(0),
            None,
            Some(-1),
            Some(i64::MAX),
            Some(i64::MIN),
            None,
            Some(7),
            Some(1 << 40),
            Some(9),
            None,
            Some(42),
        ])),
        ValueType::Float32 => Arc::new(Float32Array::from(vec![
            Some(0.0),
            None,
            Some(-1.5),
            Some(f32::NAN),
            Some(f32::INFINITY),
            None,
            Some(-0.0),
            Some(f32::MIN_POSITIVE),
            Some(3.25),
            None,
            Some(f32::MAX),
        ])),
        ValueType::Float64 => Arc::new(Float64Array::from(vec![
            Some(0.0),
            None,
            Some(-1.5),
            Some(f64::NAN),
            Some(f64::NEG_INFINITY),
            None,
            Some(-0.0),
            Some(f64::MIN_POSITIVE),
            Some(1e300),
            None,
            Some(0.1),
        ])),
        ValueType::Utf8 => Arc::new(StringArray::from(vec![
            Some(""),
            None,
            Some("é"),
            Some("日本語"),
            Some("a\nb\"c"),
            None,
            Some("🦀"),
            Some("plain"),
            Some(""),
            None,
            Some("last"),
        ])),
        ValueType::Binary => Arc::new(BinaryArray::from(vec![
            Some(&b""[..]),
            None,
            Some(&[0][..]),
            Some(&[0xff, 0, 0x80][..]),
            Some(b"text"),
            None,
            Some(&[1, 2, 3, 4, 5, 6, 7, 8, 9][..]),
            Some(&[0xc3][..]),
            Some(b""),
            None,
            Some(b"z"),
        ])),
    }
}

/// Each row rendered as Rust's `{:?}` renders the value (as the guest's
/// `show_T` does), `None` for null.
fn render(a: &ArrayRef) -> Vec<Option<String>> {
    fn each<'a, A, T: std::fmt::Debug>(a: &'a ArrayRef) -> Vec<Option<String>>
    where
        A: 'static,
        &'a A: IntoIterator<Item = Option<T>>,
    {
        a.as_any()
            .downcast_ref::<A>()
            .expect("array of the expected type")
            .into_iter()
            .map(|v| v.map(|v| format!("{v:?}")))
            .collect()
    }
    match ValueType::from_data_type(a.data_type()).expect("a supported type") {
        ValueType::Boolean => each::<BooleanArray, _>(a),
        ValueType::Int32 => each::<Int32Array, _>(a),
        ValueType::Int64 => each::<Int64Array, _>(a),
        ValueType::Float32 => each::<Float32Array, _>(a),
        ValueType::Float64 => each::<Float64Array, _>(a),
        ValueType::Utf8 => each::<StringArray, _>(a),
        ValueType::Binary => each::<BinaryArray, _>(a),
    }
}

fn strings(a: &ArrayRef) -> Vec<Option<String>> {
    a.as_any().downcast_ref::<StringArray>().expect("utf8 result").iter().map(|v| v.map(str::to_owned)).collect()
}

/// The variants of a sample a mapping must get right: as is, sliced (validity
/// and offsets not starting at 0), without nulls, all null, empty.
fn variants(ty: ValueType) -> Vec<(&'static str, ArrayRef)> {
    let full = sample(ty);
    let no_nulls = arrow_select_non_null(&full);
    let all_null = arrow_array::new_null_array(&ty.data_type(), 9);
    vec![
        ("with nulls", full.clone()),
        ("sliced at 3", full.slice(3, 8)),
        ("sliced at 8", full.slice(8, 3)),
        ("without nulls", no_nulls),
        ("all null", all_null),
        ("empty", full.slice(0, 0)),
    ]
}

/// The non-null rows of `a` (no arrow-select dependency: via render/parse
/// of the typed arrays).
fn arrow_select_non_null(a: &ArrayRef) -> ArrayRef {
    let keep: Vec<usize> = (0..a.len()).filter(|&i| a.is_valid(i)).collect();
    let pick = |i: &usize| a.slice(*i, 1);
    let parts: Vec<ArrayRef> = keep.iter().map(pick).collect();
    let refs: Vec<&dyn Array> = parts.iter().map(|p| p.as_ref()).collect();
    arrow_concat(&refs)
}

fn arrow_concat(parts: &[&dyn Array]) -> ArrayRef {
    let ty = ValueType::from_data_type(parts[0].data_type()).unwrap();
    macro_rules! concat {
        ($A:ty) => {{
            let values: Vec<_> = parts
                .iter()
                .flat_map(|p| p.as_any().downcast_ref::<$A>().unwrap().iter().collect::<Vec<_>>())
                .collect();
            Arc::new(<$A>::from(values)) as ArrayRef
        }};
    }
    match ty {
        ValueType::Boolean => concat!(BooleanArray),
        ValueType::Int32 => concat!(Int32Array),
        ValueType::Int64 => concat!(Int64Array),
        ValueType::Float32 => concat!(Float32Array),
        ValueType::Float64 => concat!(Float64Array),
        ValueType::Utf8 => concat!(StringArray),
        ValueType::Binary => concat!(BinaryArray),
    }
}

#[test]
fn echo_round_trips_every_type_nulls_included() {
    let plugin = types();
    for ty in ValueType::ALL {
        for (what, input) in variants(ty) {
            let rows = input.len();
            let out = plugin.invoke(&format!("types.echo_{ty}"), std::slice::from_ref(&input), rows).unwrap();
            assert_eq!(out.data_type(), &ty.data_type(), "{ty} {what}");
            assert_eq!(out.len(), rows, "{ty} {what}");
            assert_eq!(out.null_count(), input.null_count(), "{ty} {what}");
            assert_eq!(render(&out), render(&input), "{ty} {what}");
        }
    }
}

#[test]
fn the_guest_sees_every_value_and_null_the_host_sends() {
    let plugin = types();
    for ty in ValueType::ALL {
        for (what, input) in variants(ty) {
            let rows = input.len();
            let out = plugin.invoke(&format!("types.show_{ty}"), std::slice::from_ref(&input), rows).unwrap();
            assert_eq!(strings(&out), render(&input), "show_{ty} {what}");
        }
    }
}

#[test]
fn columns_the_guest_builds_arrive_as_arrow_arrays_nulls_included() {
    let plugin = types();
    let text: ArrayRef = Arc::new(StringArray::from(vec![Some("true"), None, Some("nope"), Some("false"), Some("-7")]));
    let cases: [(ValueType, Vec<Option<&str>>); 7] = [
        (ValueType::Boolean, vec![Some("true"), None, None, Some("false"), None]),
        (ValueType::Int32, vec![None, None, None, None, Some("-7")]),
        (ValueType::Int64, vec![None, None, None, None, Some("-7")]),
        (ValueType::Float32, vec![None, None, None, None, Some("-7.0")]),
        (ValueType::Float64, vec![None, None, None, None, Some("-7.0")]),
        (ValueType::Utf8, vec![Some("\"true\""), None, Some("\"nope\""), Some("\"false\""), Some("\"-7\"")]),
        (
            ValueType::Binary,
            vec![
                Some("[116, 114, 117, 101]"),
                None,
                Some("[110, 111, 112, 101]"),
                Some("[102, 97, 108, 115, 101]"),
                Some("[45, 55]"),
            ],
        ),
    ];
    for (ty, expected) in cases {
        let out = plugin.call(&format!("types.parse_{ty}"), std::slice::from_ref(&text)).unwrap();
        assert_eq!(out.data_type(), &ty.data_type());
        let expected: Vec<Option<String>> = expected.into_iter().map(|v| v.map(str::to_owned)).collect();
        assert_eq!(render(&out), expected, "parse_{ty}");
    }
    // Floats and ints from text: the full range and specials.
    let text: ArrayRef = Arc::new(StringArray::from(vec!["NaN", "inf", "-0", "9223372036854775807"]));
    let out = plugin.call("types.parse_float64", std::slice::from_ref(&text)).unwrap();
    assert_eq!(
        render(&out),
        [Some("NaN"), Some("inf"), Some("-0.0"), Some("9.223372036854776e18")].map(|s| s.map(str::to_owned))
    );
    let out = plugin.call("types.parse_int64", &[text]).unwrap();
    assert_eq!(render(&out), [None, None, Some("0".into()), Some(i64::MAX.to_string())]);
}

#[test]
fn a_large_batch_maps_in_one_call() {
    let plugin = types();
    let rows = 8192;
    let input: ArrayRef = Arc::new(StringArray::from_iter(
        (0..rows).map(|i| (i % 7 != 0).then(|| format!("row {i} {}", "é".repeat(i % 5)))),
    ));
    let out = plugin.invoke("types.echo_utf8", std::slice::from_ref(&input), rows).unwrap();
    assert_eq!(render(&out), render(&input));
    let calls =
        plugin.invoke("types.instance_calls", &[Arc::new(BooleanArray::from(vec![true; rows])) as ArrayRef], rows);
    assert_eq!(calls.unwrap().len(), rows);
}

#[test]
fn a_function_without_arguments_gets_the_row_count() {
    let plugin = types();
    for rows in [0, 1, 5, 1000] {
        let out = plugin.invoke("types.rows", &[], rows).unwrap();
        let out = out.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(out.values().to_vec(), vec![rows as i64; rows]);
    }
}

#[test]
fn signatures_come_from_functions_with_their_determinism() {
    let plugin = types();
    assert_eq!(plugin.format(), PluginFormat::Component);
    assert_eq!(plugin.functions().len(), 7 * 3 + 2);
    for ty in ValueType::ALL {
        assert_eq!(plugin.signature(&format!("types.echo_{ty}")), Some(&Signature::new([ty], ty)));
        assert_eq!(plugin.signature(&format!("show_{ty}")), Some(&Signature::new([ty], ValueType::Utf8)));
        assert_eq!(plugin.signature(&format!("types.parse_{ty}")), Some(&Signature::new([ValueType::Utf8], ty)));
    }
    let calls = plugin.signature("types.instance_calls").unwrap();
    assert!(!calls.deterministic);
    assert_eq!(calls, &Signature::new([ValueType::Boolean], ValueType::Int64).with_deterministic(false));
    assert_eq!(plugin.signature("types.rows"), Some(&Signature::new([], ValueType::Int64)));
    let listed: Vec<(&str, String)> = plugin.signatures().map(|(n, s)| (n, s.to_string())).take(2).collect();
    assert_eq!(
        listed,
        [("types.echo_boolean", "(boolean) -> boolean".into()), ("types.show_boolean", "(boolean) -> utf8".into())]
    );
    // Handles, as a query engine takes them.
    let f = plugin.function("types.echo_binary").unwrap();
    assert_eq!(f.name(), "types.echo_binary");
    assert_eq!(f.signature().result.data_type(), arrow_schema::DataType::Binary);
}

#[test]
fn arguments_of_the_wrong_type_or_length_are_refused_before_the_call() {
    let plugin = types();
    let ints: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
    let e = plugin.call("types.echo_utf8", std::slice::from_ref(&ints)).unwrap_err();
    assert!(matches!(e, cutover_wasm::CallError::ArgType { index: 0, .. }), "{e}");
    let e = plugin.invoke("types.echo_int64", &[ints], 3).unwrap_err();
    assert!(matches!(e, cutover_wasm::CallError::LengthMismatch { .. }), "{e}");
    let e = plugin.invoke("types.echo_int64", &[], 3).unwrap_err();
    assert!(matches!(e, cutover_wasm::CallError::ArgCount { .. }), "{e}");
}
