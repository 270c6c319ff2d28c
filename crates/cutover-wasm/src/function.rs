//! The host-side scalar-function interface: [`ScalarPluginFn`], its
//! [`Signature`] and [`ValueType`]s, and [`NativeFn`] for Rust functions.

use std::fmt;
use std::sync::Arc;

use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray};
use arrow_schema::DataType;

use crate::error::CallError;

/// The type of a column's values: a plugin's parameter and result types.
///
/// Each maps to one Arrow array type ([`data_type`](Self::data_type)) and
/// has the name of the WIT `data-type` case ([`name`](Self::name)), which is
/// also how it displays. Core WebAssembly modules use the four numeric types
/// only; components use all seven.
///
/// | `ValueType` | WIT `data-type` | Arrow array | core module type |
/// |---|---|---|---|
/// | `Boolean` | `boolean` | `BooleanArray` | — |
/// | `Int32` | `int32` | `Int32Array` | `i32` |
/// | `Int64` | `int64` | `Int64Array` | `i64` |
/// | `Float32` | `float32` | `Float32Array` | `f32` |
/// | `Float64` | `float64` | `Float64Array` | `f64` |
/// | `Utf8` | `utf8` | `StringArray` | — |
/// | `Binary` | `binary` | `BinaryArray` | — |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// WIT `boolean` / Arrow `Boolean`.
    Boolean,
    /// WIT `int32` / `i32` / Arrow `Int32`.
    Int32,
    /// WIT `int64` / `i64` / Arrow `Int64`.
    Int64,
    /// WIT `float32` / `f32` / Arrow `Float32`.
    Float32,
    /// WIT `float64` / `f64` / Arrow `Float64`.
    Float64,
    /// WIT `utf8` / Arrow `Utf8` (`StringArray`: 32-bit offsets, UTF-8 data).
    Utf8,
    /// WIT `binary` / Arrow `Binary` (`BinaryArray`: 32-bit offsets).
    Binary,
}

impl ValueType {
    /// Every value type, in the order of the WIT `data-type` enum.
    pub const ALL: [ValueType; 7] = [
        ValueType::Boolean,
        ValueType::Int32,
        ValueType::Int64,
        ValueType::Float32,
        ValueType::Float64,
        ValueType::Utf8,
        ValueType::Binary,
    ];

    /// The Arrow data type of a column of this type.
    pub fn data_type(self) -> DataType {
        match self {
            ValueType::Boolean => DataType::Boolean,
            ValueType::Int32 => DataType::Int32,
            ValueType::Int64 => DataType::Int64,
            ValueType::Float32 => DataType::Float32,
            ValueType::Float64 => DataType::Float64,
            ValueType::Utf8 => DataType::Utf8,
            ValueType::Binary => DataType::Binary,
        }
    }

    /// The value type of an Arrow data type, if it is one of the seven.
    pub fn from_data_type(data_type: &DataType) -> Option<Self> {
        match data_type {
            DataType::Boolean => Some(ValueType::Boolean),
            DataType::Int32 => Some(ValueType::Int32),
            DataType::Int64 => Some(ValueType::Int64),
            DataType::Float32 => Some(ValueType::Float32),
            DataType::Float64 => Some(ValueType::Float64),
            DataType::Utf8 => Some(ValueType::Utf8),
            DataType::Binary => Some(ValueType::Binary),
            _ => None,
        }
    }

    /// The value type of a core WebAssembly value type, if it is numeric.
    pub fn from_val_type(ty: &wasmtime::ValType) -> Option<Self> {
        match ty {
            wasmtime::ValType::I32 => Some(ValueType::Int32),
            wasmtime::ValType::I64 => Some(ValueType::Int64),
            wasmtime::ValType::F32 => Some(ValueType::Float32),
            wasmtime::ValType::F64 => Some(ValueType::Float64),
            _ => None,
        }
    }

    /// The WIT `data-type` name: `boolean`, `int32`, `int64`, `float32`,
    /// `float64`, `utf8`, `binary` (as `GET /v1/plugins` lists signatures).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Boolean => "boolean",
            ValueType::Int32 => "int32",
            ValueType::Int64 => "int64",
            ValueType::Float32 => "float32",
            ValueType::Float64 => "float64",
            ValueType::Utf8 => "utf8",
            ValueType::Binary => "binary",
        }
    }

    /// The value type named `name` (a WIT `data-type` name, see [`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The core WebAssembly spelling (`i32`, `i64`, `f32`, `f64`) of a
    /// numeric type; `None` for `boolean`, `utf8` and `binary`, which core
    /// modules cannot take.
    pub fn wasm_name(self) -> Option<&'static str> {
        match self {
            ValueType::Int32 => Some("i32"),
            ValueType::Int64 => Some("i64"),
            ValueType::Float32 => Some("f32"),
            ValueType::Float64 => Some("f64"),
            ValueType::Boolean | ValueType::Utf8 | ValueType::Binary => None,
        }
    }

    /// Whether this is one of the four numeric types core modules can use.
    pub fn is_numeric(self) -> bool {
        self.wasm_name().is_some()
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scalar function's argument types, result type and determinism.
///
/// Displays as `(int64, int64) -> int64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    /// Argument types, in order.
    pub params: Vec<ValueType>,
    /// Result type.
    pub result: ValueType,
    /// Whether equal arguments always give equal results, so that a query
    /// engine may fold constant calls or cache results. Core modules' functions
    /// are deterministic (`true`); a component declares it per function.
    pub deterministic: bool,
}

impl Signature {
    /// A deterministic signature with `params` and `result`.
    pub fn new(params: impl Into<Vec<ValueType>>, result: ValueType) -> Self {
        Self { params: params.into(), result, deterministic: true }
    }

    /// The same signature with [`deterministic`](Self::deterministic) set.
    #[must_use]
    pub fn with_deterministic(mut self, deterministic: bool) -> Self {
        self.deterministic = deterministic;
        self
    }

    /// Check `args` against this signature: count, Arrow types, and that every
    /// column has `rows` rows. `function` names the function in errors.
    pub fn check_args(&self, function: &str, args: &[ArrayRef], rows: usize) -> Result<(), CallError> {
        if args.len() != self.params.len() {
            return Err(CallError::ArgCount {
                function: function.to_owned(),
                expected: self.params.len(),
                got: args.len(),
            });
        }
        for (index, (arg, ty)) in args.iter().zip(&self.params).enumerate() {
            let expected = ty.data_type();
            if arg.data_type() != &expected {
                return Err(CallError::ArgType {
                    function: function.to_owned(),
                    index,
                    expected,
                    got: arg.data_type().clone(),
                });
            }
            if arg.len() != rows {
                return Err(CallError::LengthMismatch {
                    function: function.to_owned(),
                    index,
                    expected: rows,
                    got: arg.len(),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, p) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{p}")?;
        }
        write!(f, ") -> {}", self.result)
    }
}

/// A scalar function the host can call over whole Arrow columns: WebAssembly
/// functions ([`WasmFunction`](crate::WasmFunction),
/// [`SlotFunction`](crate::SlotFunction)) and native Rust functions
/// ([`NativeFn`]) alike. A query engine (e.g. a DataFusion UDF wrapper) can
/// call [`invoke`](Self::invoke) directly.
///
/// Null semantics depend on the kind of function:
/// - core WebAssembly modules and [`NativeFn::unary`]/[`NativeFn::binary`]:
///   null in → null out. If any argument is null at row `i`, the result is
///   null at row `i` (and the function is not called for that row);
/// - WebAssembly components see every row with its validity and decide their
///   own nulls (a function may map null to a value, or a value to null);
/// - [`NativeFn::new`]: the body decides.
pub trait ScalarPluginFn: Send + Sync {
    /// Full name, e.g. `math.mul3`.
    fn name(&self) -> &str;

    /// Argument and result types.
    fn signature(&self) -> &Signature;

    /// Apply the function to `rows` rows of equally long argument columns,
    /// each the Arrow array of its [`ValueType`] in the signature
    /// ([`ValueType::data_type`]); one column of `rows` rows of the result
    /// type out. One call is one batch: a component is entered once per call,
    /// a core module once per non-null row.
    fn invoke(&self, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError>;
}

/// A Rust number type usable in [`NativeFn::unary`] / [`NativeFn::binary`]:
/// `i32`, `i64`, `f32`, `f64`.
pub trait NativeValue: arrow_buffer::ArrowNativeType + Copy + Default + Send + Sync + 'static {
    /// The Arrow primitive type of columns of this type.
    type Arrow: ArrowPrimitiveType<Native = Self>;
    /// The matching [`ValueType`].
    const TYPE: ValueType;
}

macro_rules! native_value {
    ($($t:ty => $a:ty, $v:ident;)*) => {$(
        impl NativeValue for $t {
            type Arrow = $a;
            const TYPE: ValueType = ValueType::$v;
        }
    )*};
}
native_value! {
    i32 => Int32Type, Int32;
    i64 => Int64Type, Int64;
    f32 => Float32Type, Float32;
    f64 => Float64Type, Float64;
}

type NativeBody = dyn Fn(&[ArrayRef], usize) -> Result<ArrayRef, CallError> + Send + Sync;

/// A native Rust scalar function behind the same [`ScalarPluginFn`] trait as
/// WebAssembly ones.
///
/// ```
/// use cutover_wasm::{NativeFn, ScalarPluginFn};
/// use arrow_array::{Array, ArrayRef, Int64Array};
/// use std::sync::Arc;
///
/// let mul3 = NativeFn::unary("native.mul3", |x: i64| x * 3);
/// let col: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(5)]));
/// let out = mul3.invoke(&[col], 3).unwrap();
/// let out = out.as_any().downcast_ref::<Int64Array>().unwrap();
/// assert_eq!(out.iter().collect::<Vec<_>>(), vec![Some(3), None, Some(15)]);
/// ```
#[derive(Clone)]
pub struct NativeFn {
    name: String,
    signature: Signature,
    body: Arc<NativeBody>,
}

impl fmt::Debug for NativeFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeFn").field("name", &self.name).field("signature", &self.signature).finish_non_exhaustive()
    }
}

impl NativeFn {
    /// A function over whole columns. Arguments are checked against
    /// `signature` before `body` runs; `body` must return a column of
    /// `rows` rows of the result type (checked).
    pub fn new<F>(name: impl Into<String>, signature: Signature, body: F) -> Self
    where
        F: Fn(&[ArrayRef], usize) -> Result<ArrayRef, CallError> + Send + Sync + 'static,
    {
        Self { name: name.into(), signature, body: Arc::new(body) }
    }

    /// A one-argument function applied row by row (nulls propagate).
    pub fn unary<A: NativeValue, R: NativeValue>(
        name: impl Into<String>,
        f: impl Fn(A) -> R + Send + Sync + 'static,
    ) -> Self {
        Self::new(name, Signature::new([A::TYPE], R::TYPE), move |args, _rows| {
            let a = downcast::<A>(&args[0])?;
            let out: PrimitiveArray<R::Arrow> = a.unary(&f);
            Ok(Arc::new(out) as ArrayRef)
        })
    }

    /// A two-argument function applied row by row (nulls propagate).
    pub fn binary<A: NativeValue, B: NativeValue, R: NativeValue>(
        name: impl Into<String>,
        f: impl Fn(A, B) -> R + Send + Sync + 'static,
    ) -> Self {
        Self::new(name, Signature::new([A::TYPE, B::TYPE], R::TYPE), move |args, _rows| {
            let a = downcast::<A>(&args[0])?;
            let b = downcast::<B>(&args[1])?;
            let nulls = arrow_buffer::NullBuffer::union(a.nulls(), b.nulls());
            let values: Vec<R> = a.values().iter().zip(b.values().iter()).map(|(&x, &y)| f(x, y)).collect();
            let out = PrimitiveArray::<R::Arrow>::new(values.into(), nulls);
            Ok(Arc::new(out) as ArrayRef)
        })
    }
}

fn downcast<T: NativeValue>(array: &ArrayRef) -> Result<&PrimitiveArray<T::Arrow>, CallError> {
    // The signature check ran first, so this only fails for exotic arrays
    // that report a primitive data type without being a PrimitiveArray.
    array.as_any().downcast_ref::<PrimitiveArray<T::Arrow>>().ok_or_else(|| CallError::Native {
        function: String::new(),
        message: format!("argument column of type {} is not a primitive array", array.data_type()),
    })
}

impl ScalarPluginFn for NativeFn {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn invoke(&self, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError> {
        self.signature.check_args(&self.name, args, rows)?;
        let out = (self.body)(args, rows).map_err(|e| match e {
            CallError::Native { function, message } if function.is_empty() => {
                CallError::Native { function: self.name.clone(), message }
            }
            other => other,
        })?;
        if out.data_type() != &self.signature.result.data_type() || out.len() != rows {
            return Err(CallError::Native {
                function: self.name.clone(),
                message: format!(
                    "returned {} rows of {}, expected {rows} rows of {}",
                    out.len(),
                    out.data_type(),
                    self.signature.result.data_type()
                ),
            });
        }
        Ok(out)
    }
}
