//! Arrow arrays ↔ the WIT `column` variant, a whole column per call.
//!
//! Arguments are lowered from borrowed views of the Arrow buffers ([`ArgColumn`]):
//! wasmtime copies each buffer straight into the guest's memory. Only what
//! Arrow lays out differently is materialized first: `boolean` values (bits
//! → one `bool` per row), offsets of a sliced varlen array (rebased to
//! start at 0), and a validity bitmap that does not start on a byte boundary.
//!
//! Results are lifted into the generated owned [`Column`] (one copy out of
//! the guest's memory), checked against the contract, and handed to Arrow
//! without another copy (`Vec` → `Buffer`).

use std::sync::Arc;

use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, BinaryArray, BooleanArray, GenericByteArray, PrimitiveArray, StringArray,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use wasmtime::component::{ComponentType, Lower};

use super::bindings::cutover::plugin::types::{Column, DataType, VarlenColumn};
use crate::function::ValueType;

/// A fixed-width argument column (`boolean`, `int32`, `int64`, `float32`,
/// `float64`), borrowed.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub(crate) struct PrimArg<'a, V> {
    values: &'a [V],
    validity: Option<&'a [u8]>,
}

/// A variable-length argument column (`utf8`, `binary`), borrowed.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
pub(crate) struct VarlenArg<'a> {
    offsets: &'a [u32],
    data: &'a [u8],
    validity: Option<&'a [u8]>,
}

/// The WIT `column` variant, borrowed: the argument type of `call`.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(variant)]
pub(crate) enum ArgColumn<'a> {
    #[component(name = "boolean")]
    Boolean(PrimArg<'a, bool>),
    #[component(name = "int32")]
    Int32(PrimArg<'a, i32>),
    #[component(name = "int64")]
    Int64(PrimArg<'a, i64>),
    #[component(name = "float32")]
    Float32(PrimArg<'a, f32>),
    #[component(name = "float64")]
    Float64(PrimArg<'a, f64>),
    #[component(name = "utf8")]
    Utf8(VarlenArg<'a>),
    #[component(name = "binary")]
    Binary(VarlenArg<'a>),
}

/// What an argument needs materialized before it can be borrowed.
#[derive(Default)]
pub(crate) struct Scratch {
    bools: Vec<bool>,
    offsets: Option<Vec<u32>>,
    validity: Option<Buffer>,
}

/// The WIT `data-type` of a [`ValueType`].
#[cfg(test)]
pub(crate) fn wit_type(ty: ValueType) -> DataType {
    match ty {
        ValueType::Boolean => DataType::Boolean,
        ValueType::Int32 => DataType::Int32,
        ValueType::Int64 => DataType::Int64,
        ValueType::Float32 => DataType::Float32,
        ValueType::Float64 => DataType::Float64,
        ValueType::Utf8 => DataType::Utf8,
        ValueType::Binary => DataType::Binary,
    }
}

/// The [`ValueType`] of a WIT `data-type`.
pub(crate) fn value_type(ty: DataType) -> ValueType {
    match ty {
        DataType::Boolean => ValueType::Boolean,
        DataType::Int32 => ValueType::Int32,
        DataType::Int64 => ValueType::Int64,
        DataType::Float32 => ValueType::Float32,
        DataType::Float64 => ValueType::Float64,
        DataType::Utf8 => ValueType::Utf8,
        DataType::Binary => ValueType::Binary,
    }
}

fn column_type(column: &Column) -> ValueType {
    match column {
        Column::Boolean(_) => ValueType::Boolean,
        Column::Int32(_) => ValueType::Int32,
        Column::Int64(_) => ValueType::Int64,
        Column::Float32(_) => ValueType::Float32,
        Column::Float64(_) => ValueType::Float64,
        Column::Utf8(_) => ValueType::Utf8,
        Column::Binary(_) => ValueType::Binary,
    }
}

/// Fill `scratch` with what `array` (checked to be of type `ty`) needs
/// materialized. Returns an error message for an array whose Arrow type
/// matches but whose concrete type does not (never for arrays built by
/// `arrow-array`).
pub(crate) fn prepare(array: &dyn Array, ty: ValueType, scratch: &mut Scratch) -> Result<(), String> {
    if let Some(nulls) = array.nulls().filter(|n| n.null_count() > 0) {
        if nulls.offset() % 8 != 0 {
            scratch.validity = Some(nulls.inner().sliced());
        }
    }
    match ty {
        ValueType::Boolean => {
            let a = downcast::<BooleanArray>(array)?;
            scratch.bools = a.values().iter().collect();
        }
        ValueType::Utf8 => rebase(downcast::<StringArray>(array)?.value_offsets(), scratch),
        ValueType::Binary => rebase(downcast::<BinaryArray>(array)?.value_offsets(), scratch),
        ValueType::Int32 | ValueType::Int64 | ValueType::Float32 | ValueType::Float64 => {}
    }
    Ok(())
}

fn rebase(offsets: &[i32], scratch: &mut Scratch) {
    let first = offsets.first().copied().unwrap_or(0);
    if first != 0 {
        // Arrow offsets are non-negative and non-decreasing: no underflow.
        scratch.offsets = Some(offsets.iter().map(|&o| (o - first) as u32).collect());
    }
}

fn downcast<A: 'static>(array: &dyn Array) -> Result<&A, String> {
    array
        .as_any()
        .downcast_ref::<A>()
        .ok_or_else(|| format!("a column of Arrow type {} is not a {}", array.data_type(), std::any::type_name::<A>()))
}

/// The validity to lower: `None` when no row is null.
fn validity<'a>(array: &'a dyn Array, scratch: &'a Scratch) -> Option<&'a [u8]> {
    let nulls = array.nulls().filter(|n| n.null_count() > 0)?;
    if let Some(shifted) = &scratch.validity {
        return Some(shifted.as_slice());
    }
    let bytes = nulls.len().div_ceil(8);
    Some(&nulls.validity()[nulls.offset() / 8..][..bytes])
}

fn prim<'a, T: ArrowPrimitiveType>(
    array: &'a dyn Array,
    scratch: &'a Scratch,
) -> Result<PrimArg<'a, T::Native>, String> {
    let a = downcast::<PrimitiveArray<T>>(array)?;
    Ok(PrimArg { values: a.values(), validity: validity(array, scratch) })
}

fn varlen<'a>(offsets: &'a [i32], data: &'a [u8], array: &'a dyn Array, scratch: &'a Scratch) -> VarlenArg<'a> {
    let (first, last) = (offsets.first().copied().unwrap_or(0), offsets.last().copied().unwrap_or(0));
    let data = &data[first as usize..last as usize];
    let offsets: &[u32] = match &scratch.offsets {
        Some(rebased) => rebased,
        // Offsets starting at 0 are non-negative i32s: the same bits as u32s.
        None => bytes_as_u32(offsets),
    };
    VarlenArg { offsets, data, validity: validity(array, scratch) }
}

/// Reinterpret non-negative `i32`s as `u32`s (same size, alignment and, for
/// values ≥ 0, bits).
fn bytes_as_u32(offsets: &[i32]) -> &[u32] {
    // SAFETY: i32 and u32 have the same size and alignment, every bit pattern
    // is a valid u32, and the slice's length and lifetime are kept.
    unsafe { std::slice::from_raw_parts(offsets.as_ptr().cast::<u32>(), offsets.len()) }
}

/// Borrow `array` (of type `ty`, prepared into `scratch`) as a WIT column.
pub(crate) fn arg<'a>(array: &'a dyn Array, ty: ValueType, scratch: &'a Scratch) -> Result<ArgColumn<'a>, String> {
    Ok(match ty {
        ValueType::Boolean => {
            ArgColumn::Boolean(PrimArg { values: &scratch.bools, validity: validity(array, scratch) })
        }
        ValueType::Int32 => ArgColumn::Int32(prim::<Int32Type>(array, scratch)?),
        ValueType::Int64 => ArgColumn::Int64(prim::<Int64Type>(array, scratch)?),
        ValueType::Float32 => ArgColumn::Float32(prim::<Float32Type>(array, scratch)?),
        ValueType::Float64 => ArgColumn::Float64(prim::<Float64Type>(array, scratch)?),
        ValueType::Utf8 => {
            let a = downcast::<StringArray>(array)?;
            ArgColumn::Utf8(varlen(a.value_offsets(), a.value_data(), array, scratch))
        }
        ValueType::Binary => {
            let a = downcast::<BinaryArray>(array)?;
            ArgColumn::Binary(varlen(a.value_offsets(), a.value_data(), array, scratch))
        }
    })
}

/// Check a returned `validity` against `rows` and make it Arrow's.
fn nulls(validity: Option<Vec<u8>>, rows: usize) -> Result<Option<NullBuffer>, String> {
    let Some(bytes) = validity else { return Ok(None) };
    let need = rows.div_ceil(8);
    if bytes.len() < need {
        return Err(format!("the validity bitmap has {} byte(s); {rows} rows need {need}", bytes.len()));
    }
    let nulls = NullBuffer::new(BooleanBuffer::new(Buffer::from_vec(bytes), 0, rows));
    Ok((nulls.null_count() > 0).then_some(nulls))
}

fn check_rows(got: usize, rows: usize) -> Result<(), String> {
    if got != rows {
        return Err(format!("it has {got} rows, expected {rows}"));
    }
    Ok(())
}

fn primitive<T: ArrowPrimitiveType>(
    values: Vec<T::Native>,
    validity: Option<Vec<u8>>,
    rows: usize,
) -> Result<ArrayRef, String> {
    check_rows(values.len(), rows)?;
    let nulls = nulls(validity, rows)?;
    Ok(Arc::new(PrimitiveArray::<T>::new(ScalarBuffer::from(values), nulls)))
}

/// Check a returned varlen column's offsets: `rows + 1` entries, starting
/// at 0, never decreasing, within the data and within Arrow's 32-bit offsets.
fn offsets(column: &VarlenColumn, rows: usize) -> Result<OffsetBuffer<i32>, String> {
    let o = &column.offsets;
    if o.len() != rows + 1 {
        return Err(format!("it has {} offsets; {rows} rows need {} (rows + 1)", o.len(), rows + 1));
    }
    if o[0] != 0 {
        return Err(format!("its offsets start at {}, not 0", o[0]));
    }
    if let Some(i) = o.windows(2).position(|w| w[1] < w[0]) {
        return Err(format!("its offsets run backwards at row {i}: {} then {}", o[i], o[i + 1]));
    }
    let last = o[rows];
    if last as usize > column.data.len() {
        return Err(format!("its last offset is {last}, past the end of its {} data bytes", column.data.len()));
    }
    if i32::try_from(last).is_err() {
        return Err(format!("its data is {last} bytes, more than Arrow's 32-bit offsets can address"));
    }
    // All offsets are ≤ last ≤ i32::MAX: the cast is exact. (In-place collect:
    // no allocation.)
    let converted: Vec<i32> = column.offsets.iter().map(|&x| x as i32).collect();
    // Non-empty, starting at 0, non-decreasing: OffsetBuffer::new's checks pass.
    Ok(OffsetBuffer::new(ScalarBuffer::from(converted)))
}

fn byte_array<T: arrow_array::types::ByteArrayType<Offset = i32>>(
    column: VarlenColumn,
    rows: usize,
) -> Result<ArrayRef, String> {
    let offsets = offsets(&column, rows)?;
    let nulls = nulls(column.validity, rows)?;
    let data = Buffer::from_vec(column.data);
    // `try_new` checks UTF-8 for `utf8` (the offsets were checked above).
    match GenericByteArray::<T>::try_new(offsets.clone(), data.clone(), nulls) {
        Ok(array) => Ok(Arc::new(array)),
        Err(e) => Err(utf8_problem(&offsets, &data).unwrap_or_else(|| format!("it is not a valid Arrow array: {e}"))),
    }
}

/// Which row of a varlen column is not UTF-8, and where.
fn utf8_problem(offsets: &OffsetBuffer<i32>, data: &[u8]) -> Option<String> {
    for (row, w) in offsets.windows(2).enumerate() {
        let value = &data[w[0] as usize..w[1] as usize];
        if let Err(e) = std::str::from_utf8(value) {
            return Some(format!(
                "its row {row} is not UTF-8 (invalid byte at offset {} of the row's {} bytes)",
                e.valid_up_to(),
                value.len()
            ));
        }
    }
    None
}

/// Check a returned column against the declared type and `rows`, and make
/// it an Arrow array. The error says what was wrong.
pub(crate) fn result(column: Column, expected: ValueType, rows: usize) -> Result<ArrayRef, String> {
    let got = column_type(&column);
    if got != expected {
        return Err(format!("it is a {got} column, but the function is declared to return {expected}"));
    }
    match column {
        Column::Boolean(c) => {
            check_rows(c.values.len(), rows)?;
            let nulls = nulls(c.validity, rows)?;
            Ok(Arc::new(BooleanArray::new(BooleanBuffer::from_iter(c.values), nulls)))
        }
        Column::Int32(c) => primitive::<Int32Type>(c.values, c.validity, rows),
        Column::Int64(c) => primitive::<Int64Type>(c.values, c.validity, rows),
        Column::Float32(c) => primitive::<Float32Type>(c.values, c.validity, rows),
        Column::Float64(c) => primitive::<Float64Type>(c.values, c.validity, rows),
        Column::Utf8(c) => byte_array::<arrow_array::types::Utf8Type>(c, rows),
        Column::Binary(c) => byte_array::<arrow_array::types::BinaryType>(c, rows),
    }
}
