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
                mul3_in_place(&mut column.values);
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

/// `v = 3v + OFFSET` (wrapping) for every value, two at a time with
/// WebAssembly SIMD.
///
/// Written as a shift and two adds, not a multiply: WebAssembly's
/// `i64x2.mul` has no x86-64 instruction before AVX-512, so Cranelift
/// emulates it with 32-bit multiplies and the loop runs about 2× slower than
/// the scalar one, while `i64x2.shl` and `i64x2.add` are one instruction
/// each. LLVM would fold `(v << 1) + v` back into `v * 3`; taking the shift
/// count through `black_box` keeps it a shift. (Measured in BENCHMARKS.md,
/// "Components": the scalar `wrapping_mul` loop made the whole call
/// about 1.2× slower.)
#[target_feature(enable = "simd128")]
fn mul3_in_place(values: &mut [i64]) {
    use core::arch::wasm32::{i64x2_add, i64x2_shl, i64x2_splat, v128, v128_load, v128_store};

    let shift = core::hint::black_box(1u32);
    let offset = i64x2_splat(OFFSET);
    // Last pair first: the host has just copied the column in, front to
    // back, so its end is what the cache still holds; and the host copies
    // the result out front to back, so ending on the front leaves that in
    // the cache for it (about 4% of the call, measured).
    let (pairs, tail) = values.as_chunks_mut::<2>();
    for pair in pairs.iter_mut().rev() {
        let p = pair.as_mut_ptr().cast::<v128>();
        // SAFETY: `pair` is two `i64`s, 16 writable bytes we borrow
        // exclusively; `v128_load`/`v128_store` allow any alignment.
        unsafe {
            let v = v128_load(p);
            v128_store(p, i64x2_add(i64x2_add(i64x2_shl(v, shift), v), offset));
        }
    }
    for v in tail {
        *v = v.wrapping_mul(3).wrapping_add(OFFSET);
    }
}
