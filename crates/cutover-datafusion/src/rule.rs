//! Pinning a query to one generation per plugin: the analyzer rule
//! [`PinGenerations`], [`pinned_generations`] of a plan, and
//! [`create_physical_plan`], which plans a query and says what it pinned.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
};

use cutover::PluginId;
use datafusion::{
    common::{
        config::ConfigOptions,
        tree_node::{Transformed, TreeNode, TreeNodeRecursion},
        Result,
    },
    execution::SessionState,
    logical_expr::{expr::ScalarFunction, Expr, LogicalPlan, ScalarUDF},
    optimizer::AnalyzerRule,
    physical_plan::ExecutionPlan,
};

use crate::{
    pin::PluginPin,
    udf::{LiveUdf, PinnedUdf},
};

/// The analyzer rule that pins a query to one generation per plugin.
///
/// It rewrites every live plugin function in a plan (including subqueries)
/// into a function pinned to the generation of its plugin that is current
/// now. All the functions of one plugin in the plan share one pin: one
/// lease on one generation, counted as one query in flight, released when
/// the last plan (logical or physical) or stream holding it is dropped.
/// Functions already pinned are left as they are, so analyzing a plan
/// twice pins it once.
///
/// A pin is refused, and the query fails to plan with an error naming the
/// function ([`Error`](crate::Error)), if the plugin was removed, or was
/// reloaded into a generation that lacks the function or gives it another
/// signature than the one the SQL was planned with.
///
/// [`HostFunctions::register`](crate::HostFunctions::register) adds it to
/// the session; add it yourself only to a `SessionState` you build with
/// `SessionStateBuilder` before binding it (see [`PinGenerations::new`]).
#[derive(Clone, Default)]
pub struct PinGenerations {
    /// Keeps the binding that registered this rule alive while the session
    /// lives, so that changes keep showing up in it.
    _keep_alive: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl fmt::Debug for PinGenerations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinGenerations")
    }
}

impl PinGenerations {
    /// The rule's name, as DataFusion's `EXPLAIN VERBOSE` shows it.
    pub const NAME: &'static str = "cutover_pin_generations";

    /// A rule that pins the live functions of every binding.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn keeping(binding: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        Self { _keep_alive: Some(binding) }
    }
}

impl AnalyzerRule for PinGenerations {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        pin_plan(plan)
    }

    fn name(&self) -> &str {
        Self::NAME
    }
}

/// The pins taken for one plan, by binding and plugin.
type Pins = HashMap<(usize, PluginId), Arc<dyn PluginPin>>;

fn pin_plan(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut pins = Pins::new();
    let plan = plan
        .transform_up_with_subqueries(|node| {
            node.map_expressions(|expr| expr.transform_up(|e| pin_expr(e, &mut pins)))
        })?
        .data;
    Ok(plan)
}

fn pin_expr(expr: Expr, pins: &mut Pins) -> Result<Transformed<Expr>> {
    let Expr::ScalarFunction(call) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let inner = call.func.inner();
    if let Some(pinned) = inner.downcast_ref::<PinnedUdf>() {
        collect(pinned.pin.plugin(), pinned.generation());
        return Ok(Transformed::no(expr));
    }
    let Some(live) = inner.downcast_ref::<LiveUdf>() else {
        return Ok(Transformed::no(expr));
    };
    let key = (Arc::as_ptr(&live.pinner) as *const () as usize, live.id.plugin.clone());
    let pin = match pins.get(&key) {
        Some(pin) => Arc::clone(pin),
        None => {
            let pin = live.pinner.pin(&live.id.plugin, &live.id.sql_name)?;
            collect(pin.plugin(), pin.generation());
            pins.insert(key, Arc::clone(&pin));
            pin
        }
    };
    let pinned = live.pinned(&pin)?;
    let Expr::ScalarFunction(ScalarFunction { args, .. }) = expr else { unreachable!("matched above") };
    let func = Arc::new(ScalarUDF::new_from_impl(pinned));
    Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction { func, args })))
}

thread_local! {
    /// Set while [`create_physical_plan`] optimizes on this thread: the
    /// generations the analyzer pinned (or found pinned).
    static COLLECTED: RefCell<Option<BTreeMap<PluginId, u64>>> = const { RefCell::new(None) };
}

fn collect(plugin: &PluginId, generation: u64) {
    COLLECTED.with(|c| {
        if let Some(map) = c.borrow_mut().as_mut() {
            map.insert(plugin.clone(), generation);
        }
    });
}

/// Run `f` collecting the generations pinned on this thread meanwhile.
fn collecting<R>(f: impl FnOnce() -> R) -> (R, BTreeMap<PluginId, u64>) {
    type Collected = Option<BTreeMap<PluginId, u64>>;
    /// Puts the outer collection back (also on unwind), adding ours to it.
    struct Restore(Option<Collected>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                COLLECTED.with(|c| {
                    let mut c = c.borrow_mut();
                    let mine = std::mem::replace(&mut *c, outer);
                    if let (Some(mine), Some(outer)) = (mine, c.as_mut()) {
                        outer.extend(mine);
                    }
                });
            }
        }
    }
    let restore = Restore(Some(COLLECTED.with(|c| c.borrow_mut().replace(BTreeMap::new()))));
    let result = f();
    let mine = COLLECTED.with(|c| c.borrow().clone()).unwrap_or_default();
    drop(restore);
    (result, mine)
}

/// The generation of each plugin whose functions `plan` holds pinned (an
/// analyzed or optimized plan; subqueries included), by plugin id.
///
/// The optimizer may have folded a pinned call on constants into a literal,
/// or pruned it: such a plugin is no longer held by the plan and is not
/// listed. [`create_physical_plan`] reports every plugin the analyzer
/// pinned.
pub fn pinned_generations(plan: &LogicalPlan) -> BTreeMap<PluginId, u64> {
    let mut out = BTreeMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(call) = e {
                    if let Some(pinned) = call.func.inner().downcast_ref::<PinnedUdf>() {
                        out.insert(pinned.pin.plugin().clone(), pinned.generation());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    out
}

/// A physical plan whose plugin functions are pinned, with the generation
/// of each plugin it pinned.
#[derive(Debug)]
pub struct PinnedPlan {
    /// The physical plan. It (and the streams executing it) holds the pins:
    /// dropping it, and them, releases the generations.
    pub plan: Arc<dyn ExecutionPlan>,
    /// The generation of each plugin the query pinned, by plugin id
    /// (including calls the optimizer evaluated at planning time).
    pub generations: BTreeMap<PluginId, u64>,
}

/// Optimize `plan` (analyzer, which pins it, then optimizer) and create its
/// physical plan, as [`SessionState::create_physical_plan`] does, and report
/// the generation of each plugin the analyzer pinned.
///
/// ```
/// # async fn example(ctx: datafusion::prelude::SessionContext) -> datafusion::error::Result<()> {
/// let (state, logical) = ctx.sql("SELECT math_mul3(value) FROM generate_series(1, 3)").await?.into_parts();
/// let planned = cutover_datafusion::create_physical_plan(&state, &logical).await?;
/// println!("pinned: {:?}", planned.generations); // {"math": 1}
/// let batches = datafusion::physical_plan::collect(planned.plan, state.task_ctx()).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// Planning errors, as DataFusion's; a refused pin
/// ([`Error`](crate::Error)) as `DataFusionError::Plan`.
pub async fn create_physical_plan(state: &SessionState, plan: &LogicalPlan) -> Result<PinnedPlan> {
    let (optimized, generations) = collecting(|| state.optimize(plan));
    let optimized = optimized?;
    let plan = state.query_planner().create_physical_plan(&optimized, state).await?;
    Ok(PinnedPlan { plan, generations })
}
