//! JSON numbers ↔ Arrow columns, by a scalar function's [`Signature`].
//!
//! A call's arguments arrive as `{"args": [[...], ...]}`: one JSON array per
//! argument (a column), numbers or `null`. [`parse_call_body`] checks the
//! shape and [`columns`] converts each column to the Arrow type the function
//! expects; every problem is a [`ConvertError`] whose message says exactly
//! what is wrong (the HTTP layer answers it with 400).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array};
use cutover_wasm::{Signature, ValueType};
use serde_json::Value;

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
    /// A value that is not a number (or null), or does not fit the type.
    #[error("argument {index} of `{function}` is {ty}: value {value} at row {row} {problem}")]
    Value {
        /// The function called.
        function: String,
        /// Zero-based argument index.
        index: usize,
        /// Zero-based row.
        row: usize,
        /// The expected type (`int32`, `int64`, `float32`, `float64`).
        ty: ValueType,
        /// The offending value, as JSON.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An argument of a type that cannot be given as JSON yet.
    #[error("argument {index} of `{function}` is {ty}, which cannot be passed as JSON yet (numbers only)")]
    Unsupported {
        /// The function called.
        function: String,
        /// Zero-based argument index.
        index: usize,
        /// The argument's type.
        ty: ValueType,
    },
}

/// Parse a call body `{"args": [[...], ...]}` into its raw columns.
///
/// # Errors
/// [`ConvertError`] for malformed JSON, a non-object body, a missing `args`,
/// or `args` that is not an array of arrays.
pub fn parse_call_body(body: &[u8]) -> Result<Vec<Vec<Value>>, ConvertError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ConvertError::Json(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(ConvertError::NotObject);
    };
    let args = object.remove("args").ok_or(ConvertError::MissingArgs)?;
    let Value::Array(args) = args else {
        return Err(ConvertError::ArgsShape(format!("got {}", kind(&args))));
    };
    args.into_iter()
        .enumerate()
        .map(|(i, column)| match column {
            Value::Array(values) => Ok(values),
            other => Err(ConvertError::ArgsShape(format!("argument {i} is {}, not an array", kind(&other)))),
        })
        .collect()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Convert raw columns to the Arrow columns `function` (with `signature`)
/// expects: count, equal lengths, numeric values that fit the type, `null`s.
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
                    // `2.0` is accepted as 2; `2.5` is not an integer.
                    None => match n.as_f64() {
                        Some(f) if f.fract() == 0.0 && f >= min as f64 && f <= max as f64 => Ok(Some(f as i64)),
                        Some(f) if f.fract() == 0.0 => Err(bad(row, v, "is out of range")),
                        _ => Err(bad(row, v, "is not an integer")),
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
        ValueType::Boolean | ValueType::Utf8 | ValueType::Binary => {
            return Err(ConvertError::Unsupported { function: function.to_owned(), index, ty })
        }
    })
}

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

/// A result column as JSON values: numbers, `null` for nulls (and for
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
    collect::<Int32Array, i32>(array, Value::from)
        .or_else(|| collect::<Int64Array, i64>(array, Value::from))
        .or_else(|| collect::<Float32Array, f32>(array, |v| float(f64::from(v))))
        .or_else(|| collect::<Float64Array, f64>(array, float))
        .unwrap_or_else(|| vec![Value::Null; array.len()])
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sig(params: &[ValueType], result: ValueType) -> Signature {
        Signature::new(params.to_vec(), result)
    }

    #[test]
    fn round_trip_with_nulls() {
        let raw = parse_call_body(br#"{"args": [[1, null, 3], [0.5, 1, null]]}"#).unwrap();
        let cols = columns("m.f", &sig(&[ValueType::Int64, ValueType::Float64], ValueType::Int64), &raw).unwrap();
        assert_eq!(to_json(cols[0].as_ref()), vec![json!(1), json!(null), json!(3)]);
        assert_eq!(to_json(cols[1].as_ref()), vec![json!(0.5), json!(1.0), json!(null)]);
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
}
