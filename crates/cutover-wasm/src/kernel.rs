//! Row loops: one compiled "kernel" per export per instance, with the
//! export's `TypedFunc` cached so the per-row path is a direct typed call
//! and a push into a pre-sized buffer (no allocation per row).
//!
//! Arities 1 and 2 (any of the 4 types each) use `TypedFunc`; other arities
//! use the dynamically checked `Func::call` with reused buffers.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, PrimitiveArray};
use arrow_buffer::NullBuffer;
use wasmtime::{Func, Store, TypedFunc, Val, WasmTy};

use crate::function::{NativeValue, Signature, ValueType};
use crate::store::StoreState;

/// Result of running a kernel: the column, or the row that failed and why.
pub(crate) type KernelResult = Result<ArrayRef, (usize, wasmtime::Error)>;

/// One export, ready to run on the instance it was made for.
pub(crate) trait Kernel: Send {
    /// Run over `rows` rows; `args` were checked against the signature.
    fn run(&self, store: &mut Store<StoreState<()>>, args: &[ArrayRef], rows: usize) -> KernelResult;
}

macro_rules! by_type {
    ($t:expr, $T:ident => $body:expr) => {
        match $t {
            ValueType::Int32 => {
                type $T = i32;
                $body
            }
            ValueType::Int64 => {
                type $T = i64;
                $body
            }
            ValueType::Float32 => {
                type $T = f32;
                $body
            }
            ValueType::Float64 => {
                type $T = f64;
                $body
            }
            other @ (ValueType::Boolean | ValueType::Utf8 | ValueType::Binary) => {
                return Err(NonNumeric::non_numeric(other))
            }
        }
    };
}

/// The error for a non-numeric type reaching a core-module kernel (never
/// happens: exports are classified numeric at load), in either error shape.
trait NonNumeric {
    fn non_numeric(ty: ValueType) -> Self;
}

impl NonNumeric for wasmtime::Error {
    fn non_numeric(ty: ValueType) -> Self {
        wasmtime::Error::msg(format!("core modules take numeric types only, not {ty}"))
    }
}

impl NonNumeric for (usize, wasmtime::Error) {
    fn non_numeric(ty: ValueType) -> Self {
        (0, wasmtime::Error::non_numeric(ty))
    }
}

/// Build the kernel for `func` with `signature` on `store`.
pub(crate) fn make(
    func: Func,
    signature: &Signature,
    store: &mut Store<StoreState<()>>,
) -> wasmtime::Result<Box<dyn Kernel>> {
    let r = signature.result;
    Ok(match signature.params.as_slice() {
        [a] => {
            by_type!(*a, A => by_type!(r, R => Box::new(K1::<A, R>(func.typed::<A, R>(&*store)?)) as Box<dyn Kernel>))
        }
        [a, b] => by_type!(*a, A => by_type!(*b, B => by_type!(r, R =>
            Box::new(K2::<A, B, R>(func.typed::<(A, B), R>(&*store)?)) as Box<dyn Kernel>))),
        _ => Box::new(Dyn { func, signature: signature.clone() }),
    })
}

fn prim<T: NativeValue>(a: &ArrayRef) -> Result<&PrimitiveArray<T::Arrow>, (usize, wasmtime::Error)> {
    a.as_any().downcast_ref::<PrimitiveArray<T::Arrow>>().ok_or_else(|| {
        (0, wasmtime::Error::msg(format!("argument column of type {} is not a primitive array", a.data_type())))
    })
}

fn finish<R: NativeValue>(values: Vec<R>, nulls: Option<NullBuffer>) -> ArrayRef {
    Arc::new(PrimitiveArray::<R::Arrow>::new(values.into(), nulls))
}

struct K1<A: WasmTy, R: WasmTy>(TypedFunc<A, R>);

impl<A: WasmTy + NativeValue, R: WasmTy + NativeValue> Kernel for K1<A, R> {
    fn run(&self, store: &mut Store<StoreState<()>>, args: &[ArrayRef], rows: usize) -> KernelResult {
        let a = prim::<A>(&args[0])?;
        let nulls = a.nulls().cloned();
        let xs = &a.values()[..rows];
        let mut out: Vec<R> = Vec::with_capacity(rows);
        match &nulls {
            None => {
                for (i, &x) in xs.iter().enumerate() {
                    out.push(self.0.call(&mut *store, x).map_err(|e| (i, e))?);
                }
            }
            Some(n) => {
                for (i, &x) in xs.iter().enumerate() {
                    out.push(if n.is_valid(i) {
                        self.0.call(&mut *store, x).map_err(|e| (i, e))?
                    } else {
                        R::default()
                    });
                }
            }
        }
        Ok(finish(out, nulls))
    }
}

struct K2<A: WasmTy, B: WasmTy, R: WasmTy>(TypedFunc<(A, B), R>);

impl<A: WasmTy + NativeValue, B: WasmTy + NativeValue, R: WasmTy + NativeValue> Kernel for K2<A, B, R> {
    fn run(&self, store: &mut Store<StoreState<()>>, args: &[ArrayRef], rows: usize) -> KernelResult {
        let a = prim::<A>(&args[0])?;
        let b = prim::<B>(&args[1])?;
        let nulls = NullBuffer::union(a.nulls(), b.nulls());
        let xs = &a.values()[..rows];
        let ys = &b.values()[..rows];
        let mut out: Vec<R> = Vec::with_capacity(rows);
        for (i, (&x, &y)) in xs.iter().zip(ys).enumerate() {
            let valid = nulls.as_ref().is_none_or(|n| n.is_valid(i));
            out.push(if valid { self.0.call(&mut *store, (x, y)).map_err(|e| (i, e))? } else { R::default() });
        }
        Ok(finish(out, nulls))
    }
}

/// Any other arity: `Func::call` with checked `Val`s, buffers reused across rows.
struct Dyn {
    func: Func,
    signature: Signature,
}

fn val_at(a: &ArrayRef, ty: ValueType, i: usize) -> Result<Val, (usize, wasmtime::Error)> {
    Ok(match ty {
        ValueType::Int32 => Val::I32(prim::<i32>(a)?.value(i)),
        ValueType::Int64 => Val::I64(prim::<i64>(a)?.value(i)),
        ValueType::Float32 => Val::F32(prim::<f32>(a)?.value(i).to_bits()),
        ValueType::Float64 => Val::F64(prim::<f64>(a)?.value(i).to_bits()),
        other @ (ValueType::Boolean | ValueType::Utf8 | ValueType::Binary) => {
            return Err((i, wasmtime::Error::non_numeric(other)))
        }
    })
}

impl Kernel for Dyn {
    fn run(&self, store: &mut Store<StoreState<()>>, args: &[ArrayRef], rows: usize) -> KernelResult {
        let mut nulls: Option<NullBuffer> = None;
        for a in args {
            nulls = NullBuffer::union(nulls.as_ref(), a.nulls());
        }
        let mut params: Vec<Val> = Vec::with_capacity(args.len());
        let mut result = [Val::I32(0)];
        by_type!(self.signature.result, R => {
            let mut out: Vec<R> = Vec::with_capacity(rows);
            for i in 0..rows {
                if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                    out.push(R::default());
                    continue;
                }
                params.clear();
                for (a, ty) in args.iter().zip(&self.signature.params) {
                    params.push(val_at(a, *ty, i)?);
                }
                self.func.call(&mut *store, &params, &mut result).map_err(|e| (i, e))?;
                out.push(from_val::<R>(&result[0]).ok_or_else(|| (i, wasmtime::Error::msg("result of unexpected type")))?);
            }
            Ok(finish(out, nulls))
        })
    }
}

trait FromVal: Sized {
    fn from_val(v: &Val) -> Option<Self>;
}
impl FromVal for i32 {
    fn from_val(v: &Val) -> Option<Self> {
        v.i32()
    }
}
impl FromVal for i64 {
    fn from_val(v: &Val) -> Option<Self> {
        v.i64()
    }
}
impl FromVal for f32 {
    fn from_val(v: &Val) -> Option<Self> {
        v.f32()
    }
}
impl FromVal for f64 {
    fn from_val(v: &Val) -> Option<Self> {
        v.f64()
    }
}

fn from_val<R: FromVal>(v: &Val) -> Option<R> {
    R::from_val(v)
}
