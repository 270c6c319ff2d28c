// The `math` plugin, shared by math-v1 and math-v2, which differ only in
// `OFFSET` (so every result tells which version computed it):
//
// - `mul3(int64) -> int64`: x * 3 + OFFSET (wrapping);
// - `add(int64, int64) -> int64`: a + b + OFFSET (wrapping), null when either
//   is null.

use cutover_guest::{and_validity, export_plugin, signature, unknown_function, Args, Column, ColumnExt, DataType};
use cutover_guest::{Int64Column, Plugin};

struct Math;

impl Plugin for Math {
    fn functions() -> Vec<cutover_guest::Signature> {
        use DataType::Int64;
        vec![signature("mul3", &[Int64], Int64), signature("add", &[Int64, Int64], Int64)]
    }

    fn call(name: &str, mut args: Vec<Column>, rows: usize) -> Result<Column, String> {
        match name {
            "mul3" => {
                // In place: the argument's buffer becomes the result, with
                // the same validity (null in, null out).
                let mut column = args.pop().ok_or("expected 1 argument")?.into_int64()?;
                for v in &mut column.values {
                    *v = v.wrapping_mul(3).wrapping_add(OFFSET);
                }
                Ok(Column::Int64(column))
            }
            "add" => {
                let (a, b) = (args.int64(0)?, args.int64(1)?);
                let values = a.values.iter().zip(b.values).map(|(x, y)| x.wrapping_add(*y).wrapping_add(OFFSET)).collect();
                Ok(Column::Int64(Int64Column { values, validity: and_validity(rows, &[a.validity, b.validity]) }))
            }
            _ => Err(unknown_function(name)),
        }
    }
}

export_plugin!(Math);
