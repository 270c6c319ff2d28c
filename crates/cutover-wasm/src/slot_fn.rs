//! [`SlotFunction`]: a [`ScalarPluginFn`] that follows reloads.

use std::sync::Arc;

use arrow_array::ArrayRef;
use cutover::Slot;

use crate::error::CallError;
use crate::function::{ScalarPluginFn, Signature};
use crate::plugin::WasmPlugin;

/// A [`ScalarPluginFn`] on a function of whatever generation a
/// [`Slot<WasmPlugin>`] serves at call time: each [`invoke`](ScalarPluginFn::invoke)
/// takes a lease, looks the function up and runs it on the leased
/// generation. This is what a query engine registers: reloads are invisible
/// to it, as long as the function keeps its signature (otherwise calls fail
/// with [`CallError::SignatureChanged`]).
pub struct SlotFunction {
    slot: Arc<Slot<WasmPlugin>>,
    name: String,
    signature: Signature,
}

impl std::fmt::Debug for SlotFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotFunction").field("name", &self.name).field("signature", &self.signature).finish()
    }
}

impl SlotFunction {
    /// A handle on `function` (full name `<id>.<export>`) of `slot`, with the
    /// signature of the generation serving now.
    pub fn new(slot: Arc<Slot<WasmPlugin>>, function: &str) -> Result<Self, CallError> {
        let lease = slot.lease();
        let signature = lease.signature(function).cloned().ok_or_else(|| CallError::UnknownFunction {
            name: function.to_owned(),
            available: lease.functions().join(", "),
        })?;
        drop(lease);
        Ok(Self { slot, name: function.to_owned(), signature })
    }
}

impl ScalarPluginFn for SlotFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn invoke(&self, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, CallError> {
        let lease = self.slot.lease();
        match lease.signature(&self.name) {
            Some(s) if *s == self.signature => {}
            Some(s) => {
                return Err(CallError::SignatureChanged {
                    function: self.name.clone(),
                    message: format!("was {}, now {s}", self.signature),
                })
            }
            None => {
                return Err(CallError::UnknownFunction {
                    name: self.name.clone(),
                    available: lease.functions().join(", "),
                })
            }
        }
        lease.invoke(&self.name, args, rows)
    }
}
