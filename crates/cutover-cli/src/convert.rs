//! JSON values ↔ Arrow columns, by a scalar function's [`Signature`].
//!
//! A call's arguments arrive as `{"args": [[...], ...]}`: one JSON array per
//! argument (a column). [`parse_call_body`] checks the shape and [`columns`]
//! converts each column to the Arrow type the function expects; every
//! problem is a [`ConvertError`] whose message names the argument (by its
//! zero-based index), the row and the value at fault (the HTTP layer answers
//! it with 400). [`to_json`] turns a result column back into JSON values.
//!
//! | type | JSON value (both directions) | Arrow array |
//! |---|---|---|
//! | `boolean` | `true` / `false` | `BooleanArray` |
//! | `int32`, `int64` | an integer in the type's range (`2.0` is accepted as 2) | `Int32Array`, `Int64Array` |
//! | `float32`, `float64` | a number (non-finite results are returned as `null`) | `Float32Array`, `Float64Array` |
//! | `utf8` | a string | `StringArray` |
//! | `binary` | a string of standard, padded base64 (RFC 4648 §4: `"AAE="`) | `BinaryArray` |
//!
//! `null` is a null row of any type, in arguments and results.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
};
use base64::Engine as _;
use cutover_wasm::{Signature, ValueType};
use serde_json::Value;

/// Standard base64 with padding, padding required when decoding.
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why a call body or its argument columns could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The body is not JSON.
    #[error("the request body is not valid JSON: {0}")]
    Json(String),
    /// The body is JSON but not an object.
    #[error("the request body must be a JSON object such as {{\"args\": [[1, 2, 3]]}}")]
    NotObject,
    /// The object has no `args` member.
    #[error("the request body has no \"args\": send {{\"args\": [[...], ...]}} with one array per argument")]
    MissingArgs,
    /// `args` is not an array of arrays.
    #[error("\"args\" must be an array with one array (column) per argument; {0}")]
    ArgsShape(String),
    /// Wrong number of argument columns.
    #[error("`{function}` takes {expected} argument(s) ({signature}), got {got}")]
    ArgCount {
        /// The function called.
        function: String,
        /// Its signature, e.g. `(i64) -> i64`.
        signature: String,
        /// Expected count.
        expected: usize,
        /// Given count.
        got: usize,
    },
    /// Columns of different lengths.
    #[error(
        "argument columns must all have the same length: argument 0 has {first} value(s), argument {index} has {got}"
    )]
    Lengths {
        /// Length of the first column.
        first: usize,
        /// The first column with a different length.
        index: usize,
        /// Its length.
        got: usize,
    },
    /// A column has more rows than the server accepts per call.
    #[error("argument {index} has more than {max} rows; the server accepts at most {max} rows per call (--max-rows)")]
    TooManyRows {
        /// Zero-based argument index.
        index: usize,
        /// The limit.
        max: usize,
    },
    /// A value of the wrong JSON type, or one that does not fit the type.
    #[error("argument {index} of `{function}` is {ty}: value {value} at row {row} {problem}")]
    Value {
        /// The function called.
        function: String,
        /// Zero-based argument index.
        index: usize,
        /// Zero-based row.
        row: usize,
        /// The expected type (`boolean`, `int32`, ..., `binary`).
        ty: ValueType,
        /// The offending value, as JSON.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Parse a call body `{"args": [[...], ...]}` into its raw columns, with no
/// limit on rows (see [`parse_call_body_limited`]).
///
/// # Errors
/// [`ConvertError`] for malformed JSON, a non-object body, a missing `args`,
/// or `args` that is not an array of arrays.
#[cfg_attr(not(test), allow(dead_code))]
pub fn parse_call_body(body: &[u8]) -> Result<Vec<Vec<Value>>, ConvertError> {
    parse_call_body_limited(body, usize::MAX)
}

/// Parse a call body `{"args": [[...], ...]}` into its raw columns, refusing
/// a column of more than `max_rows` values as soon as the parser reaches
/// it (memory stays bounded by the limit, not by the body).
///
/// # Errors
/// [`ConvertError`] for malformed JSON, a non-object body, a missing `args`,
/// `args` that is not an array of arrays, or [`ConvertError::TooManyRows`].
pub fn parse_call_body_limited(body: &[u8], max_rows: usize) -> Result<Vec<Vec<Value>>, ConvertError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => ConvertError::NotObject,
            Err(e) => ConvertError::Json(e.to_string()),
        });
    }
    let failure = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde::de::DeserializeSeed::deserialize(limited::Body { max_rows, failure: &failure }, &mut de)
        .and_then(|args| de.end().map(|()| args));
    match (parsed, failure.into_inner()) {
        (_, Some(typed)) => Err(typed),
        (Ok(Some(args)), None) => Ok(args),
        (Ok(None), None) => Err(ConvertError::MissingArgs),
        (Err(e), None) => Err(ConvertError::Json(e.to_string())),
    }
}

/// The streaming parser behind [`parse_call_body_limited`]: serde seeds
/// that stop at the first shape error or at the row limit, recording the
/// typed error in `failure`.
mod limited {
    use std::{cell::RefCell, fmt};

    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::Value;

    use super::ConvertError;

    type Failure<'a> = &'a RefCell<Option<ConvertError>>;

    fn fail<E: de::Error>(failure: Failure<'_>, e: ConvertError) -> E {
        *failure.borrow_mut() = Some(e);
        E::custom("invalid call body")
    }

    /// What a JSON value is, from the visitor method that saw it.
    macro_rules! not_an_array {
        ($($method:ident($($ty:ty)?) => $kind:literal),* $(,)?) => {$(
            fn $method<E: de::Error>(self, $(_: $ty)?) -> Result<Self::Value, E> {
                Err(self.wrong($kind))
            }
        )*};
    }

    pub(super) struct Body<'a> {
        pub(super) max_rows: usize,
        pub(super) failure: Failure<'a>,
    }

    impl<'de> DeserializeSeed<'de> for Body<'_> {
        type Value = Option<Vec<Vec<Value>>>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Body<'_> {
        type Value = Option<Vec<Vec<Value>>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut args = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "args" {
                    args = Some(map.next_value_seed(Args { max_rows: self.max_rows, failure: self.failure })?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(args)
        }
    }

    struct Args<'a> {
        max_rows: usize,
        failure: Failure<'a>,
    }

    impl Args<'_> {
        fn wrong<E: de::Error>(&self, kind: &str) -> E {
            fail(self.failure, ConvertError::ArgsShape(format!("got {kind}")))
        }
    }

    impl<'de> DeserializeSeed<'de> for Args<'_> {
        type Value = Vec<Vec<Value>>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Args<'_> {
        type Value = Vec<Vec<Value>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of arrays")
        }
        not_an_array! {
            visit_bool(bool) => "a boolean", visit_i64(i64) => "a number", visit_u64(u64) => "a number",
            visit_f64(f64) => "a number", visit_str(&str) => "a string", visit_unit() => "null",
        }
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong("an object"))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut columns = Vec::new();
            let failure = self.failure;
            while let Some(column) =
                seq.next_element_seed(Column { index: columns.len(), max_rows: self.max_rows, failure })?
            {
                columns.push(column);
            }
            Ok(columns)
        }
    }

    struct Column<'a> {
        index: usize,
        max_rows: usize,
        failure: Failure<'a>,
    }

    impl Column<'_> {
        fn wrong<E: de::Error>(&self, kind: &str) -> E {
            fail(self.failure, ConvertError::ArgsShape(format!("argument {} is {kind}, not an array", self.index)))
        }
    }

    impl<'de> DeserializeSeed<'de> for Column<'_> {
        type Value = Vec<Value>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Column<'_> {
        type Value = Vec<Value>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array")
        }
        not_an_array! {
            visit_bool(bool) => "a boolean", visit_i64(i64) => "a number", visit_u64(u64) => "a number",
            visit_f64(f64) => "a number", visit_str(&str) => "a string", visit_unit() => "null",
        }
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong("an object"))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max_rows).min(4096));
            while let Some(value) = seq.next_element::<Value>()? {
                if values.len() == self.max_rows {
                    return Err(fail(
                        self.failure,
                        ConvertError::TooManyRows { index: self.index, max: self.max_rows },
                    ));
                }
                values.push(value);
            }
            Ok(values)
        }
    }
}

/// Convert raw columns to the Arrow columns `function` (with `signature`)
/// expects: count, equal lengths, values of the right JSON type that fit the
/// type (see the module docs), `null`s.
///
/// # Errors
/// [`ConvertError`] naming the argument, the row and the value at fault.
pub fn columns(function: &str, signature: &Signature, raw: &[Vec<Value>]) -> Result<Vec<ArrayRef>, ConvertError> {
    if raw.len() != signature.params.len() {
        return Err(ConvertError::ArgCount {
            function: function.to_owned(),
            signature: signature.to_string(),
            expected: signature.params.len(),
            got: raw.len(),
        });
    }
    if let Some(first) = raw.first() {
        if let Some((index, column)) = raw.iter().enumerate().find(|(_, c)| c.len() != first.len()) {
            return Err(ConvertError::Lengths { first: first.len(), index, got: column.len() });
        }
    }
    raw.iter()
        .zip(&signature.params)
        .enumerate()
        .map(|(index, (column, &ty))| column_of(function, index, ty, column))
        .collect()
}

fn column_of(function: &str, index: usize, ty: ValueType, values: &[Value]) -> Result<ArrayRef, ConvertError> {
    let bad = |row: usize, value: &Value, problem: &'static str| ConvertError::Value {
        function: function.to_owned(),
        index,
        row,
        ty,
        value: truncate(value.to_string()),
        problem,
    };
    let ints = |min: i64, max: i64| -> Result<Vec<Option<i64>>, ConvertError> {
        values
            .iter()
            .enumerate()
            .map(|(row, v)| match v {
                Value::Null => Ok(None),
                Value::Number(n) => match n.as_i64() {
                    Some(i) if (min..=max).contains(&i) => Ok(Some(i)),
                    Some(_) => Err(bad(row, v, "is out of range")),
                    None if n.is_u64() => Err(bad(row, v, "is out of range")),
                    // `2.0` is accepted as 2; `2.5` is not an integer. The
                    // range check is exact: `i64::MAX as f64` rounds up to
                    // 2^63, which is out of range, so compare in i64 after
                    // an exact conversion of floats in [-2^63, 2^63).
                    None => match n.as_f64() {
                        Some(f) if f.fract() != 0.0 || !f.is_finite() => Err(bad(row, v, "is not an integer")),
                        #[allow(clippy::cast_possible_truncation)]
                        Some(f) if (-TWO_POW_63..TWO_POW_63).contains(&f) && (min..=max).contains(&(f as i64)) => {
                            Ok(Some(f as i64))
                        }
                        _ => Err(bad(row, v, "is out of range")),
                    },
                },
                _ => Err(bad(row, v, "is not a number or null")),
            })
            .collect()
    };
    let floats = || -> Result<Vec<Option<f64>>, ConvertError> {
        values
            .iter()
            .enumerate()
            .map(|(row, v)| match v {
                Value::Null => Ok(None),
                Value::Number(n) => n.as_f64().map(Some).ok_or_else(|| bad(row, v, "is not a number")),
                _ => Err(bad(row, v, "is not a number or null")),
            })
            .collect()
    };
    Ok(match ty {
        ValueType::Boolean => Arc::new(
            values
                .iter()
                .enumerate()
                .map(|(row, v)| match v {
                    Value::Null => Ok(None),
                    Value::Bool(b) => Ok(Some(*b)),
                    _ => Err(bad(row, v, "is not a boolean or null")),
                })
                .collect::<Result<BooleanArray, ConvertError>>()?,
        ),
        ValueType::Int32 => Arc::new(Int32Array::from(
            ints(i64::from(i32::MIN), i64::from(i32::MAX))?
                .into_iter()
                .map(|v| v.and_then(|v| i32::try_from(v).ok()))
                .collect::<Vec<_>>(),
        )),
        ValueType::Int64 => Arc::new(Int64Array::from(ints(i64::MIN, i64::MAX)?)),
        #[allow(clippy::cast_possible_truncation)]
        ValueType::Float32 => {
            Arc::new(Float32Array::from(floats()?.into_iter().map(|v| v.map(|v| v as f32)).collect::<Vec<_>>()))
        }
        ValueType::Float64 => Arc::new(Float64Array::from(floats()?)),
        ValueType::Utf8 => Arc::new(
            values
                .iter()
                .enumerate()
                .map(|(row, v)| match v {
                    Value::Null => Ok(None),
                    Value::String(s) => Ok(Some(s.as_str())),
                    _ => Err(bad(row, v, "is not a string or null")),
                })
                .collect::<Result<StringArray, ConvertError>>()?,
        ),
        ValueType::Binary => {
            let decoded = values
                .iter()
                .enumerate()
                .map(|(row, v)| match v {
                    Value::Null => Ok(None),
                    Value::String(s) => BASE64
                        .decode(s)
                        .map(Some)
                        .map_err(|_| bad(row, v, "is not standard padded base64 (such as \"AAE=\")")),
                    _ => Err(bad(row, v, "is not a base64 string or null")),
                })
                .collect::<Result<Vec<Option<Vec<u8>>>, ConvertError>>()?;
            Arc::new(decoded.iter().map(Option::as_deref).collect::<BinaryArray>())
        }
    })
}

/// 2^63, the first float above `i64::MAX`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

fn truncate(mut s: String) -> String {
    const MAX: usize = 64;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// A result column as JSON values (see the module docs): booleans, numbers,
/// strings, base64 strings for `binary`; `null` for nulls (and for
/// non-finite floats, which JSON cannot represent).
pub fn to_json(array: &dyn Array) -> Vec<Value> {
    fn collect<A, T>(array: &dyn Array, f: impl Fn(T) -> Value) -> Option<Vec<Value>>
    where
        A: 'static,
        for<'a> &'a A: IntoIterator<Item = Option<T>>,
    {
        let a = array.as_any().downcast_ref::<A>()?;
        Some(a.into_iter().map(|v| v.map_or(Value::Null, &f)).collect())
    }
    collect::<BooleanArray, bool>(array, Value::Bool)
        .or_else(|| collect::<Int32Array, i32>(array, Value::from))
        .or_else(|| collect::<Int64Array, i64>(array, Value::from))
        .or_else(|| collect::<Float32Array, f32>(array, float32))
        .or_else(|| collect::<Float64Array, f64>(array, float))
        .or_else(|| {
            let a = array.as_any().downcast_ref::<StringArray>()?;
            Some(a.iter().map(|v| v.map_or(Value::Null, Value::from)).collect())
        })
        .or_else(|| {
            let a = array.as_any().downcast_ref::<BinaryArray>()?;
            Some(a.iter().map(|v| v.map_or(Value::Null, |b| Value::String(BASE64.encode(b)))).collect())
        })
        .unwrap_or_else(|| vec![Value::Null; array.len()])
}

/// A JSON number for `v`; `null` when it is not finite.
pub(crate) fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// A JSON number for `v` written with `v`'s own shortest digits (`0.1`, not
/// the `0.10000000149011612` of `f64::from(v)`); `null` when not finite.
pub(crate) fn float32(v: f32) -> Value {
    // `f32`'s `Display` is the shortest decimal that reads back as `v`; as
    // an `f64`, that decimal prints back the same (it has at most 9
    // significant digits, and `f64` keeps 15).
    float(v.to_string().parse().unwrap_or_else(|_| f64::from(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sig(params: &[ValueType], result: ValueType) -> Signature {
        Signature::new(params.to_vec(), result)
    }

    #[test]
    fn float32_results_keep_their_own_digits() {
        let a =
            Float32Array::from(vec![Some(0.1f32), Some(-2.5), None, Some(f32::NAN), Some(16_777_217.0), Some(1e-45)]);
        let got = serde_json::to_string(&to_json(&a)).unwrap();
        assert_eq!(got, "[0.1,-2.5,null,null,16777216.0,1e-45]");
    }

    #[test]
    fn round_trip_with_nulls() {
        let raw = parse_call_body(br#"{"args": [[1, null, 3], [0.5, 1, null]]}"#).unwrap();
        let cols = columns("m.f", &sig(&[ValueType::Int64, ValueType::Float64], ValueType::Int64), &raw).unwrap();
        assert_eq!(to_json(cols[0].as_ref()), vec![json!(1), json!(null), json!(3)]);
        assert_eq!(to_json(cols[1].as_ref()), vec![json!(0.5), json!(1.0), json!(null)]);
    }

    #[test]
    fn every_type_round_trips_with_nulls() {
        let cases = [
            (ValueType::Boolean, json!([true, null, false])),
            (ValueType::Int32, json!([i32::MIN, null, i32::MAX])),
            (ValueType::Int64, json!([i64::MIN, null, 7])),
            (ValueType::Float32, json!([0.5, null, -2.0])),
            (ValueType::Float64, json!([1.25, null, 1e300])),
            (ValueType::Utf8, json!(["héllo", null, "", "日本"])),
            (ValueType::Binary, json!(["AAE=", null, "", "/w==", "aGVsbG8="])),
        ];
        for (ty, values) in cases {
            let raw = values.as_array().unwrap().clone();
            let cols = columns("t.echo", &sig(&[ty], ty), std::slice::from_ref(&raw)).unwrap();
            assert_eq!(cols[0].data_type(), &ty.data_type(), "{ty}");
            assert_eq!(cols[0].null_count(), 1, "{ty}");
            assert_eq!(to_json(cols[0].as_ref()), raw, "{ty}");
        }
        let bytes = columns("t.echo", &sig(&[ValueType::Binary], ValueType::Binary), &[vec![json!("AAH/")]]).unwrap();
        let bytes = bytes[0].as_any().downcast_ref::<BinaryArray>().unwrap();
        assert_eq!(bytes.value(0), [0, 1, 255]);
    }

    #[test]
    fn wrong_json_types_name_the_argument() {
        let s = sig(&[ValueType::Int64, ValueType::Boolean, ValueType::Utf8, ValueType::Binary], ValueType::Utf8);
        let run = |args: Value| {
            let raw: Vec<Vec<Value>> = serde_json::from_value(args).unwrap();
            columns("t.f", &s, &raw).unwrap_err()
        };
        for (args, index, needle) in [
            (json!([["1"], [true], ["a"], ["AA=="]]), 0, "not a number"),
            (json!([[1], [1], ["a"], ["AA=="]]), 1, "not a boolean"),
            (json!([[1], ["true"], ["a"], ["AA=="]]), 1, "not a boolean"),
            (json!([[1], [true], [5], ["AA=="]]), 2, "not a string"),
            (json!([[1], [true], [["a"]], ["AA=="]]), 2, "not a string"),
            (json!([[1], [true], ["a"], [[0, 1]]]), 3, "not a base64 string"),
            (json!([[1], [true], ["a"], ["AA"]]), 3, "not standard padded base64"),
            (json!([[1], [true], ["a"], ["A-_="]]), 3, "not standard padded base64"),
        ] {
            let e = run(args.clone());
            assert!(matches!(e, ConvertError::Value { index: i, .. } if i == index), "{args}: {e:?}");
            let message = e.to_string();
            assert!(message.contains(&format!("argument {index} ")), "{args}: {message}");
            assert!(message.contains(needle), "{args}: {message}");
        }
    }

    #[test]
    fn shape_errors() {
        assert!(matches!(parse_call_body(b"{"), Err(ConvertError::Json(_))));
        assert_eq!(parse_call_body(b"[1]"), Err(ConvertError::NotObject));
        assert_eq!(parse_call_body(b"{}"), Err(ConvertError::MissingArgs));
        assert!(matches!(parse_call_body(br#"{"args": 1}"#), Err(ConvertError::ArgsShape(_))));
        assert!(matches!(parse_call_body(br#"{"args": [1]}"#), Err(ConvertError::ArgsShape(_))));
    }

    #[test]
    fn value_errors() {
        let s = sig(&[ValueType::Int32, ValueType::Int32], ValueType::Int32);
        let run = |body: &[u8]| columns("m.f", &s, &parse_call_body(body).unwrap());
        assert!(matches!(run(br#"{"args": [[1]]}"#), Err(ConvertError::ArgCount { .. })));
        assert!(matches!(run(br#"{"args": [[1], [1, 2]]}"#), Err(ConvertError::Lengths { .. })));
        assert!(matches!(run(br#"{"args": [["x"], [1]]}"#), Err(ConvertError::Value { .. })));
        assert!(matches!(run(br#"{"args": [[1.5], [1]]}"#), Err(ConvertError::Value { .. })));
        assert!(matches!(run(br#"{"args": [[4294967296], [1]]}"#), Err(ConvertError::Value { .. })));
        assert!(run(br#"{"args": [[-2147483648], [2147483647]]}"#).is_ok());
        assert!(run(br#"{"args": [[2.0], [1e3]]}"#).is_ok());
        assert!(matches!(run(br#"{"args": [[1e10], [1]]}"#), Err(ConvertError::Value { .. })));
    }

    #[test]
    fn floats_just_past_i64_are_out_of_range() {
        let s = sig(&[ValueType::Int64], ValueType::Int64);
        let run = |body: &[u8]| columns("m.f", &s, &parse_call_body(body).unwrap());
        for body in
            [&br#"{"args": [[9.223372036854776e18]]}"#[..], br#"{"args": [[-9.3e18]]}"#, br#"{"args": [[1e300]]}"#]
        {
            assert!(matches!(run(body), Err(ConvertError::Value { problem: "is out of range", .. })), "{body:?}");
        }
        let ok = run(br#"{"args": [[-9.223372036854775808e18, 9.2233720368547748e18]]}"#).unwrap();
        assert_eq!(to_json(ok[0].as_ref()), vec![json!(i64::MIN), json!(9_223_372_036_854_774_784_i64)]);
    }

    #[test]
    fn row_limit_stops_the_parser() {
        assert!(parse_call_body_limited(br#"{"args": [[1, 2, 3]]}"#, 3).is_ok());
        assert_eq!(
            parse_call_body_limited(br#"{"args": [[1], [1, 2, 3, 4]]}"#, 3),
            Err(ConvertError::TooManyRows { index: 1, max: 3 })
        );
        assert!(matches!(parse_call_body(br#"{"args": [[1]]} x"#), Err(ConvertError::Json(_))));
        assert_eq!(parse_call_body(br#"{"x": [1], "args": [[1]]}"#), Ok(vec![vec![json!(1)]]));
    }
}
