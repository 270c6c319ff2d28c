//! `types`: exercises every type mapping, in both directions, nulls included.
//!
//! For each data type T (`boolean`, `int32`, `int64`, `float32`, `float64`,
//! `utf8`, `binary`):
//! - `echo_T(T) -> T` returns its argument unchanged (values and validity);
//! - `show_T(T) -> utf8` renders each row as Rust's `{:?}` does, so the host
//!   can check what the plugin saw (null rows stay null);
//! - `parse_T(utf8) -> T` builds a T column from text (`true`, `-7`, `1.5`,
//!   `NaN`, ...; `utf8` is the text itself and `binary` its bytes), so the
//!   host can check columns built by the plugin (null rows stay null, a row
//!   that does not parse is null).
//!
//! And `rows() -> int64` (no arguments: every row holds `rows`), and the
//! non-deterministic `instance_calls(boolean) -> int64` (how many calls this
//! instance served before, in every row).

use std::cell::Cell;

use cutover_guest::{
    build, export_plugin, unknown_function, Args, Binary, Column, DataType, IntoColumn, Plugin, Signature, View,
};

const TYPES: [(&str, DataType); 7] = [
    ("boolean", DataType::Boolean),
    ("int32", DataType::Int32),
    ("int64", DataType::Int64),
    ("float32", DataType::Float32),
    ("float64", DataType::Float64),
    ("utf8", DataType::Utf8),
    ("binary", DataType::Binary),
];

thread_local! {
    static CALLS: Cell<i64> = const { Cell::new(0) };
}

fn show<V: View>(view: V) -> Column
where
    V::Item: std::fmt::Debug,
{
    view.map(|v| format!("{v:?}"))
}

fn parse<T: std::str::FromStr + IntoColumn>(args: &[Column]) -> Result<Column, String> {
    Ok(args.utf8(0)?.map_opt(|s| s.parse::<T>().ok()))
}

/// `map`, with `f` deciding nulls too.
trait MapOpt: View {
    fn map_opt<R: IntoColumn>(&self, mut f: impl FnMut(Self::Item) -> Option<R>) -> Column {
        build(self.len(), |i| f(self.get(i)?))
    }
}
impl<V: View> MapOpt for V {}

struct Types;

impl Plugin for Types {
    fn functions() -> Vec<Signature> {
        let mut out = Vec::new();
        for (name, ty) in TYPES {
            let sig = |prefix: &str, params: &[DataType], returns| Signature {
                name: format!("{prefix}_{name}"),
                params: params.to_vec(),
                returns,
                deterministic: true,
            };
            out.push(sig("echo", &[ty], ty));
            out.push(sig("show", &[ty], DataType::Utf8));
            out.push(sig("parse", &[DataType::Utf8], ty));
        }
        out.push(cutover_guest::signature("rows", &[], DataType::Int64));
        out.push(Signature {
            name: "instance_calls".into(),
            params: vec![DataType::Boolean],
            returns: DataType::Int64,
            deterministic: false,
        });
        out
    }

    fn call(name: &str, mut args: Vec<Column>, rows: usize) -> Result<Column, String> {
        let calls = CALLS.with(|c| c.replace(c.get() + 1));
        Ok(match name {
            n if n.starts_with("echo_") => args.pop().ok_or("expected 1 argument")?,
            "show_boolean" => show(args.boolean(0)?),
            "show_int32" => show(args.int32(0)?),
            "show_int64" => show(args.int64(0)?),
            "show_float32" => show(args.float32(0)?),
            "show_float64" => show(args.float64(0)?),
            "show_utf8" => show(args.utf8(0)?),
            "show_binary" => show(args.binary(0)?),
            "parse_boolean" => parse::<bool>(&args)?,
            "parse_int32" => parse::<i32>(&args)?,
            "parse_int64" => parse::<i64>(&args)?,
            "parse_float32" => parse::<f32>(&args)?,
            "parse_float64" => parse::<f64>(&args)?,
            "parse_utf8" => args.utf8(0)?.map(|s| s),
            "parse_binary" => args.utf8(0)?.map(|s| Binary(s.as_bytes())),
            "rows" => build(rows, |_| Some(rows as i64)),
            "instance_calls" => build(rows, |_| Some(calls)),
            _ => return Err(unknown_function(name)),
        })
    }
}

export_plugin!(Types);
