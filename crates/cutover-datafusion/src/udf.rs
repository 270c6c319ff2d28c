//! The two DataFusion scalar UDFs of a plugin function:
//!
//! * [`LiveUdf`]: what a session's function registry holds, one per function
//!   and plugin generation. It holds no lease: it carries the signature of
//!   the generation it was made from (so that the SQL planner types the
//!   query consistently) and a way to pin the plugin.
//! * [`PinnedUdf`]: what a query's plan holds once the analyzer rule
//!   ([`PinGenerations`](crate::PinGenerations)) has pinned it, sharing the
//!   query's [`PluginPin`] on one generation. Every batch it evaluates runs
//!   on that generation.

use std::{
    fmt,
    hash::{Hash, Hasher},
    sync::Arc,
};

use arrow_array::ArrayRef;
use cutover::PluginId;
use cutover_wasm::Signature;
use datafusion::{
    arrow::datatypes::{DataType, Field, FieldRef},
    common::Result,
    logical_expr::{ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature as DfSignature},
};

use crate::{
    error::Error,
    pin::{Pinner, PluginPin},
    types::{coerce_args, datafusion_signature},
};

/// What identifies a plugin function, shared by its live and pinned UDFs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FunctionId {
    /// The SQL name, `<plugin id>_<function>`.
    pub(crate) sql_name: String,
    /// The full name in the plugin, `<plugin id>.<function>`.
    pub(crate) function: String,
    /// The plugin.
    pub(crate) plugin: PluginId,
}

/// A plugin function as the function registry holds it: typed by the
/// generation it was made from, pinned to a generation only in a query's
/// plan.
pub(crate) struct LiveUdf {
    pub(crate) id: FunctionId,
    /// The generation whose signature this carries.
    pub(crate) generation: u64,
    pub(crate) signature: Signature,
    df_signature: DfSignature,
    pub(crate) pinner: Arc<dyn Pinner>,
}

impl LiveUdf {
    pub(crate) fn new(id: FunctionId, generation: u64, signature: Signature, pinner: Arc<dyn Pinner>) -> Self {
        let df_signature = datafusion_signature(&signature);
        Self { id, generation, signature, df_signature, pinner }
    }

    /// The pinned version of this function, on `pin` (a pin of its plugin):
    /// refused if that generation does not provide the function or gives it
    /// another signature than the one the query was planned with.
    pub(crate) fn pinned(&self, pin: &Arc<dyn PluginPin>) -> Result<PinnedUdf, Error> {
        match pin.signature(&self.id.function) {
            Some(now) if *now == self.signature => Ok(PinnedUdf {
                id: self.id.clone(),
                signature: self.signature.clone(),
                df_signature: self.df_signature.clone(),
                pin: Arc::clone(pin),
            }),
            Some(now) => Err(Error::SignatureChanged {
                function: self.id.sql_name.clone(),
                plugin: self.id.plugin.clone(),
                planned: self.signature.to_string(),
                planned_generation: self.generation,
                now: now.to_string(),
                generation: pin.generation(),
            }),
            None => Err(Error::FunctionRemoved {
                function: self.id.sql_name.clone(),
                plugin: self.id.plugin.clone(),
                generation: pin.generation(),
                available: pin.function_names().join(", "),
            }),
        }
    }
}

impl fmt::Debug for LiveUdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveUdf")
            .field("name", &self.id.sql_name)
            .field("function", &self.id.function)
            .field("generation", &self.generation)
            .field("signature", &self.signature.to_string())
            .finish()
    }
}

impl PartialEq for LiveUdf {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.generation == other.generation
            && self.signature == other.signature
            && std::ptr::addr_eq(Arc::as_ptr(&self.pinner), Arc::as_ptr(&other.pinner))
    }
}

impl Eq for LiveUdf {}

impl Hash for LiveUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.generation.hash(state);
    }
}

fn return_field(name: &str, signature: &Signature) -> FieldRef {
    Arc::new(Field::new(name, signature.result.data_type(), true))
}

impl ScalarUDFImpl for LiveUdf {
    fn name(&self) -> &str {
        &self.id.sql_name
    }

    fn signature(&self) -> &DfSignature {
        &self.df_signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.signature.result.data_type())
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(return_field(self.name(), &self.signature))
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(coerce_args(self.name(), &self.signature, arg_types)?)
    }

    /// Evaluated only outside a pinned plan (e.g. an expression built with
    /// `SessionContext::create_physical_expr`, which skips the analyzer):
    /// each batch then runs on the generation current when it starts.
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let pin = self.pinner.pin(&self.id.plugin, &self.id.sql_name).map_err(|e| {
            Error::Unavailable { function: self.id.sql_name.clone(), reason: e.to_string() }.into_datafusion()
        })?;
        let pinned = self.pinned(&pin).map_err(|e| {
            Error::Unavailable { function: self.id.sql_name.clone(), reason: e.to_string() }.into_datafusion()
        })?;
        pinned.invoke_with_args(args)
    }
}

/// A plugin function pinned to one generation for one query.
pub(crate) struct PinnedUdf {
    pub(crate) id: FunctionId,
    signature: Signature,
    df_signature: DfSignature,
    pub(crate) pin: Arc<dyn PluginPin>,
}

impl PinnedUdf {
    /// The generation this function runs on.
    pub(crate) fn generation(&self) -> u64 {
        self.pin.generation()
    }
}

impl fmt::Debug for PinnedUdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedUdf")
            .field("name", &self.id.sql_name)
            .field("function", &self.id.function)
            .field("generation", &self.pin.generation())
            .finish()
    }
}

impl PartialEq for PinnedUdf {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && std::ptr::addr_eq(Arc::as_ptr(&self.pin), Arc::as_ptr(&other.pin))
    }
}

impl Eq for PinnedUdf {}

impl Hash for PinnedUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.pin.generation().hash(state);
    }
}

impl ScalarUDFImpl for PinnedUdf {
    fn name(&self) -> &str {
        &self.id.sql_name
    }

    fn signature(&self) -> &DfSignature {
        &self.df_signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.signature.result.data_type())
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(return_field(self.name(), &self.signature))
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(coerce_args(self.name(), &self.signature, arg_types)?)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if self.pin.is_cancelled() {
            return Err(Error::Cancelled {
                function: self.id.sql_name.clone(),
                plugin: self.id.plugin.clone(),
                generation: self.pin.generation(),
            }
            .into());
        }
        let (arrays, rows) = if self.signature.deterministic {
            // All-scalar arguments come as one-row arrays (one call for the
            // batch); DataFusion turns the one-row result back into a scalar.
            let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
            let rows = arrays.first().map_or(args.number_rows, |a| a.len());
            (arrays, rows)
        } else {
            // Not deterministic: every row is its own call, constants or not.
            let rows = args.number_rows;
            let arrays = args.args.iter().map(|v| v.to_array(rows)).collect::<Result<Vec<ArrayRef>>>()?;
            (arrays, rows)
        };
        let out = self.pin.call(&self.id.function, &arrays, rows).map_err(|source| Error::Call {
            function: self.id.sql_name.clone(),
            plugin: self.id.plugin.clone(),
            generation: self.pin.generation(),
            source: Box::new(source),
        })?;
        Ok(ColumnarValue::Array(out))
    }
}
