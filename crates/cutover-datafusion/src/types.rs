//! How a plugin function's [`Signature`] meets DataFusion's types: the
//! DataFusion signature of a plugin function ([`datafusion_signature`]) and
//! the argument conversions SQL may make implicitly ([`coerce_args`]).
//!
//! A plugin function is called with columns of exactly its declared types
//! (its [`ValueType`]s, as Arrow's `Boolean`, `Int32`, `Int64`, `Float32`,
//! `Float64`, `Utf8` and `Binary`). SQL hands it whatever the query holds,
//! so DataFusion casts each argument to the declared type when the
//! conversion is one SQL users expect to be implicit:
//!
//! | declared | accepted (cast to the declared type) |
//! |---|---|
//! | `int32`, `int64` | any integer (signed or unsigned); a value out of range fails the query |
//! | `float32`, `float64` | any integer, float or decimal |
//! | `utf8` | `Utf8`, `LargeUtf8`, `Utf8View` |
//! | `binary` | `Binary`, `LargeBinary`, `BinaryView`, `FixedSizeBinary` |
//! | `boolean` | `Boolean` |
//!
//! `NULL` converts to every type, and a dictionary-encoded argument as its
//! values do. Anything else (a string to a number, a float to an integer, a
//! number to a string, ...) is a planning error naming the function, the
//! argument and the declared signature: write the `CAST` you mean.

use cutover_wasm::{Signature, ValueType};
use datafusion::{
    arrow::datatypes::DataType,
    logical_expr::{Signature as DfSignature, Volatility},
};

use crate::error::Error;

/// The DataFusion signature of a plugin function. Arguments are converted
/// by [`coerce_args`] (a user-defined signature); a function without
/// parameters is nullary. A deterministic function is immutable (same
/// arguments, same result: the optimizer may fold a call on constants,
/// within a query a pinned function is a pure function of its generation);
/// one that is not (a component may say so per function) is volatile, and
/// called once per row group with no folding.
pub(crate) fn datafusion_signature(signature: &Signature) -> DfSignature {
    let volatility = if signature.deterministic { Volatility::Immutable } else { Volatility::Volatile };
    if signature.params.is_empty() {
        DfSignature::nullary(volatility)
    } else {
        DfSignature::user_defined(volatility)
    }
}

/// The types the arguments of a call of `function` (SQL name, for errors)
/// are cast to: `signature`'s parameter types, if each argument type
/// converts (see the [module docs](self)).
pub(crate) fn coerce_args(function: &str, signature: &Signature, given: &[DataType]) -> Result<Vec<DataType>, Error> {
    if given.len() != signature.params.len() {
        return Err(Error::ArgumentCount {
            function: function.to_owned(),
            signature: signature.to_string(),
            given: given.len(),
        });
    }
    given
        .iter()
        .zip(&signature.params)
        .enumerate()
        .map(|(index, (from, to))| {
            if converts(from, *to) {
                Ok(to.data_type())
            } else {
                Err(Error::ArgumentType {
                    function: function.to_owned(),
                    signature: signature.to_string(),
                    position: index + 1,
                    given: from.clone(),
                })
            }
        })
        .collect()
}

/// Whether an argument of type `from` converts implicitly to `to`.
fn converts(from: &DataType, to: ValueType) -> bool {
    use DataType as D;
    match from {
        D::Null => true,
        D::Dictionary(_, values) => converts(values, to),
        _ => match to {
            ValueType::Boolean => matches!(from, D::Boolean),
            ValueType::Int32 | ValueType::Int64 => from.is_integer(),
            ValueType::Float32 | ValueType::Float64 => from.is_numeric(),
            ValueType::Utf8 => matches!(from, D::Utf8 | D::LargeUtf8 | D::Utf8View),
            ValueType::Binary => matches!(from, D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        use DataType as D;
        let sig = Signature::new([ValueType::Int32, ValueType::Utf8, ValueType::Binary], ValueType::Float32);
        let want = vec![D::Int32, D::Utf8, D::Binary];
        assert_eq!(coerce_args("f", &sig, &[D::Int64, D::Utf8View, D::BinaryView]).unwrap(), want);
        assert_eq!(coerce_args("f", &sig, &[D::UInt8, D::LargeUtf8, D::FixedSizeBinary(4)]).unwrap(), want);
        assert_eq!(coerce_args("f", &sig, &[D::Null, D::Null, D::Null]).unwrap(), want);
        let dict = D::Dictionary(Box::new(D::Int32), Box::new(D::Utf8));
        assert_eq!(coerce_args("f", &sig, &[D::Int32, dict, D::Binary]).unwrap(), want);

        let err = coerce_args("f", &sig, &[D::Float64, D::Utf8, D::Binary]).unwrap_err().to_string();
        assert!(
            err.contains("argument 1") && err.contains("Float64") && err.contains("(int32, utf8, binary)"),
            "{err}"
        );
        assert!(coerce_args("f", &sig, &[D::Int32, D::Int64, D::Binary]).is_err(), "no number to string");
        assert!(coerce_args("f", &sig, &[D::Int32, D::Utf8, D::Utf8]).is_err(), "no string to binary");
        assert!(coerce_args("f", &sig, &[D::Int32]).unwrap_err().to_string().contains("passes 1 argument"));

        let floats = Signature::new([ValueType::Float64, ValueType::Boolean], ValueType::Float64);
        assert!(coerce_args("g", &floats, &[D::Decimal128(10, 2), D::Boolean]).is_ok());
        assert!(coerce_args("g", &floats, &[D::Int64, D::Int64]).is_err(), "no number to boolean");
    }

    #[test]
    fn volatility_follows_determinism() {
        let sig = Signature::new([ValueType::Int64], ValueType::Int64);
        assert_eq!(datafusion_signature(&sig).volatility, Volatility::Immutable);
        assert_eq!(datafusion_signature(&sig.with_deterministic(false)).volatility, Volatility::Volatile);
        let nullary = datafusion_signature(&Signature::new([], ValueType::Int64));
        assert_eq!(nullary.type_signature, datafusion::logical_expr::TypeSignature::Nullary);
    }
}
