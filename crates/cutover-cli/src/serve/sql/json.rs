//! Query results as JSON rows: Arrow record batches → `[[v, ...], ...]`.
//!
//! Booleans, integers and strings map to JSON booleans, numbers and
//! strings; floats to numbers, non-finite floats to `null` (JSON has no
//! NaN or infinity); nulls to `null`. Every other type (dates, timestamps,
//! decimals, binary, nested types) is its Arrow display string, e.g.
//! `"2024-01-31"` or `"12.50"`, so no value loses precision.

use arrow_array::{cast::AsArray, types::*, Array, RecordBatch};
use datafusion::arrow::{
    datatypes::DataType,
    error::ArrowError,
    util::display::{ArrayFormatter, FormatOptions},
};
use serde_json::Value;

use crate::convert::{float, float32};

/// Append the rows of `batch` to `rows`, one JSON array per row.
///
/// # Errors
/// A column whose values cannot be formatted.
pub fn append_rows(batch: &RecordBatch, rows: &mut Vec<Vec<Value>>) -> Result<(), ArrowError> {
    let first = rows.len();
    rows.extend((0..batch.num_rows()).map(|_| Vec::with_capacity(batch.num_columns())));
    for column in batch.columns() {
        for (row, value) in rows[first..].iter_mut().zip(column_values(column.as_ref())?) {
            row.push(value);
        }
    }
    Ok(())
}

fn collect<T>(array: impl IntoIterator<Item = Option<T>>, f: impl Fn(T) -> Value) -> Vec<Value> {
    array.into_iter().map(|v| v.map_or(Value::Null, &f)).collect()
}

/// The values of one column.
fn column_values(array: &dyn Array) -> Result<Vec<Value>, ArrowError> {
    Ok(match array.data_type() {
        DataType::Null => vec![Value::Null; array.len()],
        DataType::Boolean => collect(array.as_boolean(), Value::Bool),
        DataType::Int8 => collect(array.as_primitive::<Int8Type>(), Value::from),
        DataType::Int16 => collect(array.as_primitive::<Int16Type>(), Value::from),
        DataType::Int32 => collect(array.as_primitive::<Int32Type>(), Value::from),
        DataType::Int64 => collect(array.as_primitive::<Int64Type>(), Value::from),
        DataType::UInt8 => collect(array.as_primitive::<UInt8Type>(), Value::from),
        DataType::UInt16 => collect(array.as_primitive::<UInt16Type>(), Value::from),
        DataType::UInt32 => collect(array.as_primitive::<UInt32Type>(), Value::from),
        DataType::UInt64 => collect(array.as_primitive::<UInt64Type>(), Value::from),
        DataType::Float16 => collect(array.as_primitive::<Float16Type>(), |x| float(x.to_f64())),
        DataType::Float32 => collect(array.as_primitive::<Float32Type>(), float32),
        DataType::Float64 => collect(array.as_primitive::<Float64Type>(), float),
        DataType::Utf8 => collect(array.as_string::<i32>(), Value::from),
        DataType::LargeUtf8 => collect(array.as_string::<i64>(), Value::from),
        DataType::Utf8View => collect(array.as_string_view(), Value::from),
        _ => {
            let options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(array, &options)?;
            (0..array.len())
                .map(|i| if array.is_null(i) { Value::Null } else { Value::String(formatter.value(i).to_string()) })
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Date32Array, Float64Array, Int64Array, StringArray};
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_of_mixed_columns() {
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("i", Arc::new(Int64Array::from(vec![Some(1), None]))),
            ("f", Arc::new(Float64Array::from(vec![Some(0.5), Some(f64::NAN)]))),
            ("s", Arc::new(StringArray::from(vec![Some("a"), None]))),
            ("d", Arc::new(Date32Array::from(vec![Some(0), None]))),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut rows = vec![vec![json!("earlier")]];
        append_rows(&batch, &mut rows).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![json!("earlier")],
                vec![json!(1), json!(0.5), json!("a"), json!("1970-01-01")],
                vec![Value::Null, Value::Null, Value::Null, Value::Null]
            ]
        );
    }
}
