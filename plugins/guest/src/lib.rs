//! Write cutover scalar-function plugins in Rust.
//!
//! A plugin is a WebAssembly component of world `cutover:plugin/scalar-plugin`
//! (`wit/cutover-plugin.wit` at the root of the cutover repository). This
//! crate holds the `wit-bindgen` bindings for that world and a few helpers,
//! so that a plugin is a type implementing [`Plugin`] and one
//! [`export_plugin!`] line:
//!
//! ```ignore
//! use cutover_guest::{export_plugin, signature, Args, Column, DataType, Plugin, Signature};
//!
//! struct Text;
//!
//! impl Plugin for Text {
//!     fn functions() -> Vec<Signature> {
//!         vec![signature("upper", &[DataType::Utf8], DataType::Utf8)]
//!     }
//!
//!     fn call(name: &str, args: Vec<Column>, _rows: usize) -> Result<Column, String> {
//!         match name {
//!             // Null in, null out: `map` skips null rows.
//!             "upper" => Ok(args.utf8(0)?.map(|s| s.to_uppercase())),
//!             _ => Err(cutover_guest::unknown_function(name)),
//!         }
//!     }
//! }
//!
//! export_plugin!(Text);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the
//! component is `target/wasm32-wasip2/release/<crate>.wasm`.
//!
//! One call carries whole columns (`rows` rows each, in Arrow's layout), so
//! the per-row work happens inside the plugin: read arguments through
//! [`Args`] (typed views: [`Prim`], [`Strs`], [`Bytes`]), build results with
//! the views' `map`, with [`build`], or by editing a column in place (see
//! [`ColumnExt`]).

extern crate self as cutover_guest;

#[doc(hidden)]
pub use wit_bindgen;

/// The `wit-bindgen` bindings of world `cutover:plugin/scalar-plugin`.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "cutover:plugin/scalar-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_scalar_plugin",
        default_bindings_module: "cutover_guest::bindings",
        runtime_path: "cutover_guest::wit_bindgen::rt",
    });
}

pub use bindings::cutover::plugin::host::Level;
pub use bindings::cutover::plugin::types::{
    BooleanColumn, Column, DataType, Float32Column, Float64Column, Int32Column, Int64Column, Signature, VarlenColumn,
};

/// A scalar-function plugin. Implement it and export the type with
/// [`export_plugin!`].
pub trait Plugin {
    /// The functions this plugin provides (called once per generation, at
    /// load). Names must be non-empty, unique and without `.`.
    fn functions() -> Vec<Signature>;

    /// Runs on each new instance before any call, with the plugin's
    /// configuration text (empty when there is none). `Err` fails the load;
    /// the old generation keeps serving.
    fn init(config: &str) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Apply function `name` to `rows` rows. `args` holds one column per
    /// declared parameter, each of `rows` rows and of the declared type.
    /// Return a column of `rows` rows of the declared result type, or `Err`
    /// to fail the call with that message.
    fn call(name: &str, args: Vec<Column>, rows: usize) -> Result<Column, String>;
}

/// Export a [`Plugin`] implementation as the component's `scalar` interface.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ident) => {
        impl $crate::bindings::exports::cutover::plugin::scalar::Guest for $plugin {
            fn functions() -> ::std::vec::Vec<$crate::Signature> {
                <$plugin as $crate::Plugin>::functions()
            }
            fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                <$plugin as $crate::Plugin>::init(&config)
            }
            fn call(
                name: ::std::string::String,
                args: ::std::vec::Vec<$crate::Column>,
                rows: u32,
            ) -> ::std::result::Result<$crate::Column, ::std::string::String> {
                <$plugin as $crate::Plugin>::call(&name, args, rows as usize)
            }
        }
        $crate::bindings::__export_scalar_plugin!($plugin with_types_in $crate::bindings);
    };
}

/// Write `message` to the host's log (tagged with the plugin id there).
pub fn log(level: Level, message: &str) {
    bindings::cutover::plugin::host::log(level, message);
}

/// A deterministic signature: `name(params) -> returns`.
pub fn signature(name: &str, params: &[DataType], returns: DataType) -> Signature {
    Signature { name: name.to_owned(), params: params.to_vec(), returns, deterministic: true }
}

/// The error message for a function name this plugin does not provide.
pub fn unknown_function(name: &str) -> String {
    format!("unknown function `{name}`")
}

/// The WIT name of a data type (`int64`, `utf8`, ...).
pub fn type_name(ty: DataType) -> &'static str {
    match ty {
        DataType::Boolean => "boolean",
        DataType::Int32 => "int32",
        DataType::Int64 => "int64",
        DataType::Float32 => "float32",
        DataType::Float64 => "float64",
        DataType::Utf8 => "utf8",
        DataType::Binary => "binary",
    }
}

fn bit(validity: Option<&[u8]>, i: usize) -> bool {
    validity.is_none_or(|v| v.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
}

/// Methods on [`Column`].
pub trait ColumnExt: Sized {
    /// The column's type.
    fn data_type(&self) -> DataType;
    /// Its number of rows.
    fn rows(&self) -> usize;
    /// The `int64` column, to edit in place (e.g. map `values` and return it
    /// with the same validity); `Err` for another type.
    fn into_int64(self) -> Result<Int64Column, String>;
    /// The `float64` column, to edit in place; `Err` for another type.
    fn into_float64(self) -> Result<Float64Column, String>;
    /// The `utf8` column, to edit in place; `Err` for another type.
    fn into_utf8(self) -> Result<VarlenColumn, String>;
}

fn wrong_type(expected: DataType, got: DataType) -> String {
    format!("expected a {} column, got {}", type_name(expected), type_name(got))
}

impl ColumnExt for Column {
    fn data_type(&self) -> DataType {
        match self {
            Column::Boolean(_) => DataType::Boolean,
            Column::Int32(_) => DataType::Int32,
            Column::Int64(_) => DataType::Int64,
            Column::Float32(_) => DataType::Float32,
            Column::Float64(_) => DataType::Float64,
            Column::Utf8(_) => DataType::Utf8,
            Column::Binary(_) => DataType::Binary,
        }
    }

    fn rows(&self) -> usize {
        match self {
            Column::Boolean(c) => c.values.len(),
            Column::Int32(c) => c.values.len(),
            Column::Int64(c) => c.values.len(),
            Column::Float32(c) => c.values.len(),
            Column::Float64(c) => c.values.len(),
            Column::Utf8(c) | Column::Binary(c) => c.offsets.len().saturating_sub(1),
        }
    }

    fn into_int64(self) -> Result<Int64Column, String> {
        match self {
            Column::Int64(c) => Ok(c),
            other => Err(wrong_type(DataType::Int64, other.data_type())),
        }
    }

    fn into_float64(self) -> Result<Float64Column, String> {
        match self {
            Column::Float64(c) => Ok(c),
            other => Err(wrong_type(DataType::Float64, other.data_type())),
        }
    }

    fn into_utf8(self) -> Result<VarlenColumn, String> {
        match self {
            Column::Utf8(c) => Ok(c),
            other => Err(wrong_type(DataType::Utf8, other.data_type())),
        }
    }
}

/// A read-only view of one column: row `i` is `get(i)`, `None` when null.
pub trait View {
    /// The value type of a row.
    type Item;
    /// Number of rows.
    fn len(&self) -> usize;
    /// Whether there are no rows.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Row `i`; `None` when it is null (or out of range).
    fn get(&self, i: usize) -> Option<Self::Item>;

    /// Apply `f` to every non-null row; null rows stay null.
    fn map<R: IntoColumn>(&self, mut f: impl FnMut(Self::Item) -> R) -> Column {
        build(self.len(), |i| self.get(i).map(&mut f))
    }
}

/// A view of a fixed-width column (`boolean`, `int32`, `int64`, `float32`,
/// `float64`).
#[derive(Debug, Clone, Copy)]
pub struct Prim<'a, T> {
    /// The values, one per row (a null row's value is meaningless).
    pub values: &'a [T],
    /// The validity bitmap, `None` when every row holds a value.
    pub validity: Option<&'a [u8]>,
}

impl<T: Copy> View for Prim<'_, T> {
    type Item = T;
    fn len(&self) -> usize {
        self.values.len()
    }
    fn get(&self, i: usize) -> Option<T> {
        if bit(self.validity, i) {
            self.values.get(i).copied()
        } else {
            None
        }
    }
}

/// A view of a `utf8` column.
#[derive(Debug, Clone, Copy)]
pub struct Strs<'a> {
    offsets: &'a [u32],
    data: &'a str,
    validity: Option<&'a [u8]>,
}

impl<'a> Strs<'a> {
    /// A view of `column` (checks that its data is UTF-8).
    pub fn new(column: &'a VarlenColumn) -> Result<Self, String> {
        let data = std::str::from_utf8(&column.data).map_err(|e| format!("utf8 column is not UTF-8: {e}"))?;
        Ok(Self { offsets: &column.offsets, data, validity: column.validity.as_deref() })
    }
}

impl<'a> View for Strs<'a> {
    type Item = &'a str;
    fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    fn get(&self, i: usize) -> Option<&'a str> {
        if !bit(self.validity, i) {
            return None;
        }
        let (start, end) = (*self.offsets.get(i)? as usize, *self.offsets.get(i + 1)? as usize);
        self.data.get(start..end)
    }
}

/// A view of a `binary` column.
#[derive(Debug, Clone, Copy)]
pub struct Bytes<'a> {
    offsets: &'a [u32],
    data: &'a [u8],
    validity: Option<&'a [u8]>,
}

impl<'a> Bytes<'a> {
    /// A view of `column`.
    pub fn new(column: &'a VarlenColumn) -> Self {
        Self { offsets: &column.offsets, data: &column.data, validity: column.validity.as_deref() }
    }
}

impl<'a> View for Bytes<'a> {
    type Item = &'a [u8];
    fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    fn get(&self, i: usize) -> Option<&'a [u8]> {
        if !bit(self.validity, i) {
            return None;
        }
        let (start, end) = (*self.offsets.get(i)? as usize, *self.offsets.get(i + 1)? as usize);
        self.data.get(start..end)
    }
}

/// Typed access to the argument columns of a call.
pub trait Args {
    /// Argument `i` as a `boolean` column.
    fn boolean(&self, i: usize) -> Result<Prim<'_, bool>, String>;
    /// Argument `i` as an `int32` column.
    fn int32(&self, i: usize) -> Result<Prim<'_, i32>, String>;
    /// Argument `i` as an `int64` column.
    fn int64(&self, i: usize) -> Result<Prim<'_, i64>, String>;
    /// Argument `i` as a `float32` column.
    fn float32(&self, i: usize) -> Result<Prim<'_, f32>, String>;
    /// Argument `i` as a `float64` column.
    fn float64(&self, i: usize) -> Result<Prim<'_, f64>, String>;
    /// Argument `i` as a `utf8` column.
    fn utf8(&self, i: usize) -> Result<Strs<'_>, String>;
    /// Argument `i` as a `binary` column.
    fn binary(&self, i: usize) -> Result<Bytes<'_>, String>;
}

fn arg(args: &[Column], i: usize) -> Result<&Column, String> {
    args.get(i).ok_or_else(|| format!("missing argument {i} (got {} arguments)", args.len()))
}

macro_rules! prim_arg {
    ($($method:ident => $case:ident: $t:ty),*) => {$(
        fn $method(&self, i: usize) -> Result<Prim<'_, $t>, String> {
            match arg(self, i)? {
                Column::$case(c) => Ok(Prim { values: &c.values, validity: c.validity.as_deref() }),
                other => Err(format!("argument {i}: {}", wrong_type(DataType::$case, other.data_type()))),
            }
        }
    )*};
}

impl Args for [Column] {
    prim_arg!(boolean => Boolean: bool, int32 => Int32: i32, int64 => Int64: i64, float32 => Float32: f32,
              float64 => Float64: f64);

    fn utf8(&self, i: usize) -> Result<Strs<'_>, String> {
        match arg(self, i)? {
            Column::Utf8(c) => Strs::new(c).map_err(|e| format!("argument {i}: {e}")),
            other => Err(format!("argument {i}: {}", wrong_type(DataType::Utf8, other.data_type()))),
        }
    }

    fn binary(&self, i: usize) -> Result<Bytes<'_>, String> {
        match arg(self, i)? {
            Column::Binary(c) => Ok(Bytes::new(c)),
            other => Err(format!("argument {i}: {}", wrong_type(DataType::Binary, other.data_type()))),
        }
    }
}

/// Builds a validity bitmap row by row.
#[derive(Debug, Default, Clone)]
pub struct ValidityBuilder {
    bytes: Vec<u8>,
    len: usize,
    nulls: usize,
}

impl ValidityBuilder {
    /// A builder with room for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        Self { bytes: Vec::with_capacity(rows.div_ceil(8)), len: 0, nulls: 0 }
    }

    /// Append a row: `true` when it holds a value.
    pub fn push(&mut self, valid: bool) {
        if self.len.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if valid {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 1 << (self.len % 8);
        } else {
            self.nulls += 1;
        }
        self.len += 1;
    }

    /// The bitmap, or `None` when no row is null.
    pub fn finish(self) -> Option<Vec<u8>> {
        (self.nulls > 0).then_some(self.bytes)
    }
}

/// The validity of a row-wise combination of columns: a row is valid when it
/// is valid in every one of `validities` (`None` entries: all valid). `None`
/// when no row is null.
///
/// ```ignore
/// let (a, b) = (args.int64(0)?, args.int64(1)?);
/// let values = a.values.iter().zip(b.values).map(|(x, y)| x.wrapping_add(*y)).collect();
/// Ok(Column::Int64(Int64Column { values, validity: and_validity(rows, &[a.validity, b.validity]) }))
/// ```
pub fn and_validity(rows: usize, validities: &[Option<&[u8]>]) -> Option<Vec<u8>> {
    let mut present = validities.iter().flatten();
    let first = present.next()?;
    let bytes = rows.div_ceil(8);
    let mut out: Vec<u8> = (0..bytes).map(|i| first.get(i).copied().unwrap_or(0)).collect();
    for v in present {
        for (o, b) in out.iter_mut().zip(v.iter().chain(std::iter::repeat(&0))) {
            *o &= b;
        }
    }
    Some(out)
}

/// A Rust value that can fill one row of a result column.
pub trait IntoColumn: Sized {
    /// Build a column from `rows` rows.
    fn collect_column(rows: usize, values: impl Iterator<Item = Option<Self>>) -> Column;
}

macro_rules! prim_into_column {
    ($($t:ty => $case:ident($record:ident)),*) => {$(
        impl IntoColumn for $t {
            fn collect_column(rows: usize, values: impl Iterator<Item = Option<Self>>) -> Column {
                let mut out = Vec::with_capacity(rows);
                let mut validity = ValidityBuilder::with_capacity(rows);
                for v in values {
                    validity.push(v.is_some());
                    out.push(v.unwrap_or_default());
                }
                Column::$case($record { values: out, validity: validity.finish() })
            }
        }
    )*};
}

prim_into_column!(bool => Boolean(BooleanColumn), i32 => Int32(Int32Column), i64 => Int64(Int64Column),
                  f32 => Float32(Float32Column), f64 => Float64(Float64Column));

fn varlen<B: AsRef<[u8]>>(rows: usize, values: impl Iterator<Item = Option<B>>) -> VarlenColumn {
    let mut offsets = Vec::with_capacity(rows + 1);
    let mut data = Vec::new();
    let mut validity = ValidityBuilder::with_capacity(rows);
    offsets.push(0);
    for v in values {
        validity.push(v.is_some());
        if let Some(v) = v {
            data.extend_from_slice(v.as_ref());
        }
        offsets.push(data.len() as u32);
    }
    VarlenColumn { offsets, data, validity: validity.finish() }
}

impl IntoColumn for String {
    fn collect_column(rows: usize, values: impl Iterator<Item = Option<Self>>) -> Column {
        Column::Utf8(varlen(rows, values))
    }
}

impl IntoColumn for &str {
    fn collect_column(rows: usize, values: impl Iterator<Item = Option<Self>>) -> Column {
        Column::Utf8(varlen(rows, values))
    }
}

/// A `binary` result value (a plain `Vec<u8>` would be ambiguous).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Binary<B>(pub B);

impl<B: AsRef<[u8]>> IntoColumn for Binary<B> {
    fn collect_column(rows: usize, values: impl Iterator<Item = Option<Self>>) -> Column {
        Column::Binary(varlen(rows, values.map(|v| v.map(|b| b.0))))
    }
}

/// Build a result column of `rows` rows: row `i` is `row(i)`, null when it
/// returns `None` (so `?` on argument views propagates nulls).
///
/// ```ignore
/// // (a, b) -> a + b, null when either is null
/// let (a, b) = (args.int64(0)?, args.int64(1)?);
/// Ok(build(rows, |i| Some(a.get(i)?.wrapping_add(b.get(i)?))))
/// ```
pub fn build<R: IntoColumn>(rows: usize, mut row: impl FnMut(usize) -> Option<R>) -> Column {
    R::collect_column(rows, (0..rows).map(&mut row))
}
