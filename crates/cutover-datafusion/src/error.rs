//! [`Error`]: what can go wrong planning or running a query on plugin
//! functions, and how it reaches DataFusion.

use cutover::PluginId;
use cutover_wasm::CallError;
use datafusion::error::DataFusionError;

/// Why a query on plugin functions could not be planned or run.
///
/// Planning errors (all but [`Error::Unavailable`], [`Error::Call`] and
/// [`Error::Cancelled`]) reach DataFusion as [`DataFusionError::Plan`];
/// execution errors (those three) as [`DataFusionError::External`] holding this
/// error, so callers can downcast to it (and from [`Error::Call`] to the
/// plugin's [`CallError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The plugin providing the function was removed after the query's SQL
    /// was planned (new queries no longer know the function).
    #[error("function `{function}` is no longer available: its plugin `{plugin}` was removed")]
    PluginRemoved {
        /// The SQL function.
        function: String,
        /// The plugin.
        plugin: PluginId,
    },
    /// The plugin was reloaded after the query's SQL was planned, and the new
    /// generation no longer provides the function.
    #[error(
        "function `{function}` is no longer available: plugin `{plugin}` was reloaded and generation \
         {generation} does not provide it (it provides: {available})"
    )]
    FunctionRemoved {
        /// The SQL function.
        function: String,
        /// The plugin.
        plugin: PluginId,
        /// The generation that lacks it.
        generation: u64,
        /// The functions that generation provides.
        available: String,
    },
    /// The plugin was reloaded between the planning of the query's SQL and
    /// its pinning to a generation, and the new generation changed the
    /// function's signature. Planning the query again uses the new one (a
    /// view defined before the change must be defined again).
    #[error(
        "function `{function}` changed its signature while the query was being planned: it was planned as \
         {planned} (plugin `{plugin}` generation {planned_generation}), generation {generation} has {now}; \
         run the query again"
    )]
    SignatureChanged {
        /// The SQL function.
        function: String,
        /// The plugin.
        plugin: PluginId,
        /// The signature the query was planned with.
        planned: String,
        /// The generation whose signature the query was planned with.
        planned_generation: u64,
        /// The signature of the current generation.
        now: String,
        /// The current generation.
        generation: u64,
    },
    /// A call passes a different number of arguments than the function
    /// takes.
    #[error("function `{function}` takes {signature}: the call passes {given} argument(s)")]
    ArgumentCount {
        /// The SQL function.
        function: String,
        /// Its signature, e.g. `(int64, int64) -> int64`.
        signature: String,
        /// The number of arguments of the call.
        given: usize,
    },
    /// An argument's type does not convert implicitly to the function's
    /// parameter type (the crate docs list the conversions SQL makes).
    #[error(
        "function `{function}` takes {signature}: argument {position} is {given}, which does not convert \
         implicitly; CAST it to the parameter's type"
    )]
    ArgumentType {
        /// The SQL function.
        function: String,
        /// Its signature, e.g. `(int64, int64) -> int64`.
        signature: String,
        /// The argument's position, from 1.
        position: usize,
        /// The argument's type.
        given: datafusion::arrow::datatypes::DataType,
    },
    /// A function was not pinned to a generation and its plugin is gone.
    #[error("function `{function}` cannot run: {reason}")]
    Unavailable {
        /// The SQL function.
        function: String,
        /// Why.
        reason: String,
    },
    /// The plugin function failed (an error, a trap, a time-out...).
    #[error("function `{function}` failed (plugin `{plugin}` generation {generation}): {source}")]
    Call {
        /// The SQL function.
        function: String,
        /// The plugin.
        plugin: PluginId,
        /// The generation the query is pinned to.
        generation: u64,
        /// The plugin's error.
        #[source]
        source: Box<CallError>,
    },
    /// The generation the query is pinned to was retired, and its drain ran
    /// past the host's deadline: the host cancelled the work still running
    /// on it (the *cancel* rung of its escalation ladder).
    #[error(
        "function `{function}` was cancelled: plugin `{plugin}` generation {generation} was retired and this \
         query ran past the host's drain deadline; run the query again (it will use the current generation)"
    )]
    Cancelled {
        /// The SQL function.
        function: String,
        /// The plugin.
        plugin: PluginId,
        /// The retired generation.
        generation: u64,
    },
}

impl Error {
    /// This error as a DataFusion error: planning errors as
    /// [`DataFusionError::Plan`], execution errors as
    /// [`DataFusionError::External`].
    pub fn into_datafusion(self) -> DataFusionError {
        match self {
            Error::Call { .. } | Error::Cancelled { .. } | Error::Unavailable { .. } => {
                DataFusionError::External(Box::new(self))
            }
            _ => DataFusionError::Plan(self.to_string()),
        }
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        e.into_datafusion()
    }
}
