//! `text`: string functions over `utf8` columns, null in → null out.
//!
//! - `upper(utf8) -> utf8`, `lower(utf8) -> utf8`: Unicode case mapping
//!   (`str::to_uppercase` / `to_lowercase`); a column of pure ASCII is
//!   converted in place, without a copy.
//! - `length(utf8) -> int32`: the number of characters (Unicode scalar values).
//! - `concat(utf8, utf8) -> utf8`: the two strings joined; null when either is
//!   null (as SQL's `||`).

use cutover_guest::{export_plugin, signature, unknown_function, Args, Column, ColumnExt, DataType, Plugin, View};

struct Text;

/// Map every row with `f`, or, when the whole column is ASCII, apply `ascii`
/// to the data in place (ASCII case mapping keeps every length, so the
/// offsets and validity stay as they are).
fn case_map(mut args: Vec<Column>, ascii: fn(&mut [u8]), f: fn(&str) -> String) -> Result<Column, String> {
    if args.is_empty() {
        return Err("expected 1 argument".into());
    }
    let mut column = args.swap_remove(0).into_utf8()?;
    if column.data.is_ascii() {
        ascii(&mut column.data);
        return Ok(Column::Utf8(column));
    }
    let strs = [Column::Utf8(column)];
    Ok(strs.utf8(0)?.map(f))
}

impl Plugin for Text {
    fn functions() -> Vec<cutover_guest::Signature> {
        use DataType::{Int32, Utf8};
        vec![
            signature("upper", &[Utf8], Utf8),
            signature("lower", &[Utf8], Utf8),
            signature("length", &[Utf8], Int32),
            signature("concat", &[Utf8, Utf8], Utf8),
        ]
    }

    fn call(name: &str, args: Vec<Column>, rows: usize) -> Result<Column, String> {
        match name {
            "upper" => case_map(args, <[u8]>::make_ascii_uppercase, str::to_uppercase),
            "lower" => case_map(args, <[u8]>::make_ascii_lowercase, str::to_lowercase),
            "length" => Ok(args.utf8(0)?.map(|s| i32::try_from(s.chars().count()).unwrap_or(i32::MAX))),
            "concat" => {
                let (a, b) = (args.utf8(0)?, args.utf8(1)?);
                Ok(cutover_guest::build(rows, |i| {
                    let (x, y) = (a.get(i)?, b.get(i)?);
                    let mut s = String::with_capacity(x.len() + y.len());
                    s.push_str(x);
                    s.push_str(y);
                    Some(s)
                }))
            }
            _ => Err(unknown_function(name)),
        }
    }
}

export_plugin!(Text);
