//! Running code that must not unwind into its caller: a plugin value's
//! `Drop`, a drain callback or waker, a plugin hook.

use std::{
    any::Any,
    panic::{catch_unwind, AssertUnwindSafe},
};

/// Run `f`, catching a panic. `Err` carries the panic's message.
///
/// Also safe while the thread is already unwinding (e.g. inside a `Lease`'s
/// drop during a panic): a panic contained in `catch_unwind` does not abort.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let msg = message(&*payload);
        discard(payload);
        msg
    })
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string())
}

/// Drop a panic payload, whose own `Drop` may panic too: that second panic is
/// caught and its payload leaked rather than dropped.
fn discard(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}
