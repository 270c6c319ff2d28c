//! The transactions: build, cut over, drain with escalation, retire.

use std::{
    any::Any,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{info, info_span, warn};

use super::{
    deps, DrainOutcome, DrainingGeneration, Escalation, Host, NoDiscipline, PhaseTimings, PluginSnapshot,
    ReloadDiscipline, ReloadError, ReloadKind, ReloadOptions, ReloadReport, Rung, Step, StragglerReport,
};
use crate::{
    lifecycle::{LifecycleState, PluginLifecycle, SharedLifecycle},
    plugin::{BoxError, LinkContext, Plugin, PluginSource},
    sync::{lock, Mutex},
    Drain, Finalize, PluginId, Registry, Slot,
};

/// A generation the host knows: its value and what it registered.
struct Generation<P> {
    generation: u64,
    value: Arc<P>,
    functions: Vec<String>,
    dependencies: Vec<PluginId>,
}

impl<P> Clone for Generation<P> {
    fn clone(&self) -> Self {
        Self {
            generation: self.generation,
            value: Arc::clone(&self.value),
            functions: self.functions.clone(),
            dependencies: self.dependencies.clone(),
        }
    }
}

/// A retired generation, until it is shut down.
struct Retired<P> {
    gen: Generation<P>,
    drain: Drain,
    /// Drained, but kept warm for rollback (not shut down yet).
    warm: bool,
}

struct EntryState<P: Plugin> {
    current: Option<Generation<P>>,
    retired: Vec<Retired<P>>,
    last_error: Option<String>,
    last_reload: Option<ReloadReport>,
    discipline: Arc<dyn ReloadDiscipline<P>>,
}

/// One plugin's control state.
pub(super) struct Entry<P: Plugin> {
    id: PluginId,
    /// Held while building and cutting over; `try_lock` refuses a second.
    busy: Mutex<()>,
    state: Mutex<EntryState<P>>,
}

impl<P: Plugin> Entry<P> {
    fn new(id: PluginId, current: Generation<P>) -> Self {
        Self {
            id,
            busy: Mutex::new(()),
            state: Mutex::new(EntryState {
                current: Some(current),
                retired: Vec::new(),
                last_error: None,
                last_reload: None,
                discipline: Arc::new(NoDiscipline),
            }),
        }
    }

    pub(super) fn set_discipline(&self, discipline: Arc<dyn ReloadDiscipline<P>>) {
        lock(&self.state).discipline = discipline;
    }

    pub(super) fn last_error(&self) -> Option<String> {
        lock(&self.state).last_error.clone()
    }

    pub(super) fn snapshot(&self, plugins: &Registry<PluginId, P>) -> PluginSnapshot {
        let state = lock(&self.state);
        let now = Instant::now();
        let draining = state
            .retired
            .iter()
            .filter(|r| !r.drain.is_drained())
            .map(|r| DrainingGeneration {
                generation: r.gen.generation,
                in_flight: r.drain.in_flight(),
                since_cutover: now.saturating_duration_since(r.drain.cutover_at()),
                cancelled: r.drain.is_cancelled(),
            })
            .collect();
        let current = state.current.as_ref();
        PluginSnapshot {
            id: self.id.clone(),
            generation: current.map_or(0, |c| c.generation),
            state: plugins.lifecycle(&self.id).map_or(LifecycleState::Removed, |l| l.state()),
            in_flight: plugins.in_flight(&self.id).unwrap_or(0),
            draining,
            functions: current.map(|c| c.functions.clone()).unwrap_or_default(),
            last_error: state.last_error.clone(),
            last_reload: state.last_reload.clone(),
            rollback_available: state.retired.last().is_some_and(|r| !r.drain.is_drained() || r.warm),
        }
    }

    fn try_busy(&self) -> Result<crate::sync::MutexGuard<'_, ()>, ReloadError> {
        #[cfg(not(loom))]
        let guard = match self.busy.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        #[cfg(loom)]
        let guard = self.busy.try_lock().ok();
        guard.ok_or_else(|| ReloadError::InProgress { plugin: self.id.clone() })
    }

    fn record(&self, result: &Result<ReloadReport, ReloadError>) {
        let mut state = lock(&self.state);
        match result {
            Ok(report) => {
                state.last_error = None;
                state.last_reload = Some(report.clone());
            }
            // Not failures of the plugin: nothing was attempted.
            Err(ReloadError::InProgress { .. } | ReloadError::GenerationMismatch { .. }) => {}
            Err(e) => state.last_error = Some(e.to_string()),
        }
    }
}

/// A new generation, built up to `Initialized`.
struct Built<P> {
    value: P,
    lifecycle: SharedLifecycle,
    functions: Vec<String>,
    dependencies: Vec<PluginId>,
    phases: PhaseTimings,
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    format!("panicked: {}", crate::unwind::message(&*payload))
}

/// Run a fallible plugin hook, catching panics, as step `step`.
fn run_step<R>(
    id: &PluginId,
    step: Step,
    serving: Option<u64>,
    f: impl FnOnce() -> Result<R, BoxError>,
) -> Result<R, ReloadError> {
    let failed = |cause: String, source: Option<BoxError>| ReloadError::Failed {
        plugin: id.clone(),
        step,
        cause,
        serving,
        source,
    };
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(failed(e.to_string(), Some(e))),
        Err(payload) => Err(failed(panic_message(payload), None)),
    }
}

/// Run an infallible hook, catching and logging a panic.
fn run_hook(id: &PluginId, hook: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        warn!(target: "cutover::host", plugin = %id, hook, cause = %panic_message(payload), "hook panicked");
    }
}

/// Shut down a generation that will not serve (again), catching panics.
fn shutdown<P: Plugin>(id: &PluginId, value: &P) -> Duration {
    let _span = info_span!("shutdown", plugin = %id).entered();
    let start = Instant::now();
    run_hook(id, "shutdown", || value.shutdown());
    start.elapsed()
}

/// Load a new generation (→ `Loaded`).
fn load<P: Plugin>(
    id: &PluginId,
    source: &dyn PluginSource<P>,
    serving: Option<u64>,
) -> Result<(P, SharedLifecycle, Vec<PluginId>, Duration), ReloadError> {
    let _span = info_span!("load", plugin = %id).entered();
    let start = Instant::now();
    let value = run_step(id, Step::Load, serving, || source.load(id))?;
    let lifecycle = Arc::new(PluginLifecycle::new(id.clone()));
    let dependencies = run_step(id, Step::Dependencies, serving, || Ok(value.dependencies())).inspect_err(|_| {
        shutdown_discarded(id, &value, &lifecycle, false);
    })?;
    Ok((value, lifecycle, dependencies, start.elapsed()))
}

/// Link and init a loaded generation (→ `Linked` → `Initialized`).
fn link_init<P: Plugin>(
    id: &PluginId,
    mut value: P,
    lifecycle: SharedLifecycle,
    dependencies: Vec<PluginId>,
    load: Duration,
    capabilities: &[String],
    serving: Option<u64>,
) -> Result<Built<P>, ReloadError> {
    let mut phases = PhaseTimings { load, ..PhaseTimings::default() };
    let start = Instant::now();
    let mut cx = LinkContext::new(capabilities.iter().cloned());
    let linked = {
        let _span = info_span!("link", plugin = %id).entered();
        run_step(id, Step::Link, serving, || value.link(&mut cx))
    };
    if let Err(e) = linked {
        shutdown_discarded(id, &value, &lifecycle, false);
        return Err(e);
    }
    lifecycle.advance();
    phases.link = start.elapsed();
    let start = Instant::now();
    let initialized = {
        let _span = info_span!("init", plugin = %id).entered();
        run_step(id, Step::Init, serving, || value.init())
    };
    if let Err(e) = initialized {
        // A failed init may have acquired resources: shut down.
        shutdown_discarded(id, &value, &lifecycle, true);
        return Err(e);
    }
    lifecycle.advance();
    phases.init = start.elapsed();
    Ok(Built { value, lifecycle, functions: cx.functions().to_vec(), dependencies, phases })
}

/// Discard a new generation that will never serve.
fn shutdown_discarded<P: Plugin>(id: &PluginId, value: &P, lifecycle: &PluginLifecycle, initialized: bool) {
    if initialized {
        shutdown(id, value);
    }
    lifecycle.set(LifecycleState::Removed);
}

fn dependency_graph<P: Plugin>(host: &Host<P>) -> deps::Graph {
    let entries: Vec<_> = lock(&host.entries).values().cloned().collect();
    entries
        .iter()
        .filter_map(|e| lock(&e.state).current.as_ref().map(|c| (e.id.clone(), c.dependencies.clone())))
        .collect()
}

pub(super) fn add_all<P: Plugin>(
    host: &Host<P>,
    sources: Vec<(PluginId, &dyn PluginSource<P>)>,
) -> Result<Vec<ReloadReport>, ReloadError> {
    let _span = info_span!("cutover.add", plugins = sources.len()).entered();
    for (i, (id, _)) in sources.iter().enumerate() {
        if host.plugins.contains(id) || sources[..i].iter().any(|(other, _)| other == id) {
            return Err(ReloadError::AlreadyExists { plugin: id.clone() });
        }
    }
    let mut loaded = Vec::with_capacity(sources.len());
    let discard_loaded = |loaded: &mut Vec<(PluginId, P, SharedLifecycle, Vec<PluginId>, Duration)>| {
        for (id, value, lifecycle, _, _) in loaded.drain(..) {
            shutdown_discarded(&id, &value, &lifecycle, false);
        }
    };
    for (id, source) in &sources {
        match load(id, *source, None) {
            Ok((value, lifecycle, dependencies, took)) => {
                loaded.push((id.clone(), value, lifecycle, dependencies, took))
            }
            Err(e) => {
                discard_loaded(&mut loaded);
                return Err(e);
            }
        }
    }
    let batch: Vec<_> = loaded.iter().map(|(id, _, _, deps, _)| (id.clone(), deps.clone())).collect();
    let order = match deps::order(&batch, &dependency_graph(host)) {
        Ok(order) => order,
        Err(e) => {
            discard_loaded(&mut loaded);
            return Err(e);
        }
    };
    let mut slots: Vec<Option<_>> = loaded.into_iter().map(Some).collect();
    let mut built: Vec<(PluginId, Built<P>)> = Vec::with_capacity(slots.len());
    for i in order {
        let Some((id, value, lifecycle, dependencies, took)) = slots[i].take() else { continue };
        match link_init(&id, value, lifecycle, dependencies, took, &host.capabilities, None) {
            Ok(b) => built.push((id, b)),
            Err(e) => {
                for (id, b) in built {
                    shutdown_discarded(&id, &b.value, &b.lifecycle, true);
                }
                for (id, value, lifecycle, _, _) in slots.into_iter().flatten() {
                    shutdown_discarded(&id, &value, &lifecycle, false);
                }
                return Err(e);
            }
        }
    }
    let mut reports = Vec::with_capacity(built.len());
    let mut entries = Vec::with_capacity(built.len());
    let mut new_slots = Vec::with_capacity(built.len());
    for (id, b) in built {
        let start = Instant::now();
        let value = Arc::new(b.value);
        let slot = Slot::with_lifecycle(id.clone(), Arc::clone(&value), b.lifecycle);
        slot.set_tracking(host.tracking.load(std::sync::atomic::Ordering::Relaxed));
        let generation = Generation { generation: 1, value, functions: b.functions, dependencies: b.dependencies };
        new_slots.push((id.clone(), slot));
        let phases = PhaseTimings { cutover: start.elapsed(), ..b.phases };
        reports.push(ReloadReport {
            plugin: id.clone(),
            kind: ReloadKind::Add,
            previous: None,
            generation: Some(1),
            outcome: DrainOutcome::NothingToDrain,
            phases,
            stragglers: None,
            escalations: Vec::new(),
        });
        entries.push(Arc::new(Entry::new(id, generation)));
    }
    {
        // Registry and entries change together, under the entries lock, so
        // that a concurrent add of the same id cannot leave them disagreeing.
        let mut map = lock(&host.entries);
        if let Some(taken) = entries.iter().find(|e| map.contains_key(&e.id)) {
            let plugin = taken.id.clone();
            drop(map);
            for entry in &entries {
                if let Some(current) = lock(&entry.state).current.take() {
                    shutdown(&entry.id, &*current.value);
                }
            }
            return Err(ReloadError::AlreadyExists { plugin });
        }
        if let Err(e) = host.plugins.extend(new_slots) {
            // Unreachable while every add goes through the entries lock.
            warn!(target: "cutover::host", error = %e, "registry refused an add the host allowed");
            return Err(ReloadError::AlreadyExists { plugin: entries[0].id.clone() });
        }
        for entry in &entries {
            map.insert(entry.id.clone(), Arc::clone(entry));
        }
    }
    for (entry, report) in entries.iter().zip(&reports) {
        lock(&entry.state).last_reload = Some(report.clone());
        info!(target: "cutover::host", plugin = %entry.id, generation = 1, "added");
    }
    for entry in &entries {
        host.notify(&entry.id, ReloadKind::Add, None, Some(1));
    }
    Ok(reports)
}

/// A reload; with `expected`, only from that generation (checked under the
/// plugin's `busy` exclusion, before anything is built).
pub(super) fn reload<P: Plugin>(
    host: &Host<P>,
    id: &PluginId,
    expected: Option<u64>,
    source: &dyn PluginSource<P>,
    options: &ReloadOptions,
) -> Result<ReloadReport, ReloadError> {
    let entry = host.entry(id)?;
    let _span = info_span!("cutover.reload", plugin = %id).entered();
    let result = reload_entry(host, &entry, expected, source, options);
    entry.record(&result);
    match &result {
        Err(e @ ReloadError::GenerationMismatch { .. }) => {
            info!(target: "cutover::host", plugin = %id, error = %e, "conditional reload refused");
        }
        Err(e) => {
            warn!(target: "cutover::host", plugin = %id, error = %e, "reload failed; the old generation keeps serving")
        }
        Ok(_) => {}
    }
    result
}

fn reload_entry<P: Plugin>(
    host: &Host<P>,
    entry: &Arc<Entry<P>>,
    expected: Option<u64>,
    source: &dyn PluginSource<P>,
    options: &ReloadOptions,
) -> Result<ReloadReport, ReloadError> {
    let id = &entry.id;
    let busy = entry.try_busy()?;
    let (old, discipline) = {
        let state = lock(&entry.state);
        let old = state.current.clone().ok_or_else(|| ReloadError::NotFound { plugin: id.clone() })?;
        (old, Arc::clone(&state.discipline))
    };
    if let Some(expected) = expected.filter(|&g| g != old.generation) {
        return Err(ReloadError::GenerationMismatch { plugin: id.clone(), expected, current: old.generation });
    }
    let serving = Some(old.generation);
    let (value, lifecycle, dependencies, took) = load(id, source, serving)?;
    let mut graph = dependency_graph(host);
    graph.remove(id);
    if let Err(e) = deps::order(&[(id.clone(), dependencies.clone())], &graph) {
        shutdown_discarded(id, &value, &lifecycle, false);
        return Err(e);
    }
    let mut built = link_init(id, value, lifecycle, dependencies, took, &host.capabilities, serving)?;
    let start = Instant::now();
    let prepared = {
        let _span = info_span!("prepare", plugin = %id).entered();
        run_step(id, Step::Prepare, serving, || discipline.before_cutover(&old.value, &mut built.value))
    };
    if let Err(e) = prepared {
        shutdown_discarded(id, &built.value, &built.lifecycle, true);
        return Err(e);
    }
    built.phases.prepare = start.elapsed();
    let new = Generation {
        generation: 0,
        value: Arc::new(built.value),
        functions: built.functions,
        dependencies: built.dependencies,
    };
    cut_over(host, entry, busy, old, new, built.lifecycle, built.phases, ReloadKind::Reload, options)
}

pub(super) fn rollback<P: Plugin>(
    host: &Host<P>,
    id: &PluginId,
    options: &ReloadOptions,
) -> Result<ReloadReport, ReloadError> {
    let entry = host.entry(id)?;
    let _span = info_span!("cutover.rollback", plugin = %id).entered();
    let result = (|| {
        let busy = entry.try_busy()?;
        let (old, target) = {
            let state = lock(&entry.state);
            let old = state.current.clone().ok_or_else(|| ReloadError::NotFound { plugin: id.clone() })?;
            let target = state
                .retired
                .last()
                .filter(|r| !r.drain.is_drained() || r.warm)
                .map(|r| r.gen.clone())
                .ok_or_else(|| ReloadError::NoRollback { plugin: id.clone() })?;
            (old, target)
        };
        let lifecycle = Arc::new(PluginLifecycle::with_state(id.clone(), LifecycleState::Initialized));
        cut_over(host, &entry, busy, old, target, lifecycle, PhaseTimings::default(), ReloadKind::Rollback, options)
    })();
    entry.record(&result);
    result
}

/// The cutover and everything after it. `busy` is released right after the
/// cutover, so that the drain does not block the next reload or a rollback.
#[allow(clippy::too_many_arguments)]
fn cut_over<P: Plugin>(
    host: &Host<P>,
    entry: &Arc<Entry<P>>,
    busy: crate::sync::MutexGuard<'_, ()>,
    old: Generation<P>,
    mut new: Generation<P>,
    lifecycle: SharedLifecycle,
    mut phases: PhaseTimings,
    kind: ReloadKind,
    options: &ReloadOptions,
) -> Result<ReloadReport, ReloadError> {
    let id = &entry.id;
    let discipline = Arc::clone(&lock(&entry.state).discipline);
    // The entry's state is locked across the cutover, so that snapshots and
    // rollbacks never see the registry and the entry disagree.
    let mut state = lock(&entry.state);
    let start = Instant::now();
    let drain = {
        let _span = info_span!("cutover", plugin = %id).entered();
        host.plugins
            .replace_with(id, Arc::clone(&new.value), lifecycle, Finalize::Manual)
            .map_err(|_| ReloadError::NotFound { plugin: id.clone() })?
    };
    phases.cutover = start.elapsed();
    new.generation = drain.generation() + 1;
    let generation = new.generation;
    state.current = Some(new.clone());
    // Only the newest retired generation is a rollback target; older warm
    // ones can go now.
    retire_warm(entry, &mut state);
    state.retired.push(Retired { gen: old.clone(), drain: drain.clone(), warm: false });
    drop(state);
    info!(target: "cutover::host", plugin = %id, from = old.generation, to = generation, ?kind, "cut over");
    drop(busy);
    run_hook(id, "at_cutover", || discipline.at_cutover(&old.value, &new.value));
    drop(new);
    host.notify(id, kind, Some(old.generation), Some(generation));

    let (outcome, stragglers, escalations) =
        drain_and_retire(entry, &drain, old.generation, &*old.value, options, options.keep_warm, &mut phases);
    Ok(ReloadReport {
        plugin: id.clone(),
        kind,
        previous: Some(old.generation),
        generation: Some(generation),
        outcome,
        phases,
        stragglers,
        escalations,
    })
}

/// Wait for `drain`, climbing the escalation ladder.
fn escalate<P: Plugin>(
    drain: &Drain,
    old: &P,
    options: &ReloadOptions,
) -> (DrainOutcome, Option<StragglerReport>, Vec<Escalation>) {
    let mut escalations = Vec::new();
    if drain.wait_timeout(options.deadline).is_ok() {
        return (DrainOutcome::Drained, None, escalations);
    }
    let cutover = drain.cutover_at();
    let since = |t: Instant| t.saturating_duration_since(cutover);
    let now = Instant::now();
    let tracked = drain.stragglers();
    let stragglers = StragglerReport {
        generation: drain.generation(),
        in_flight: drain.in_flight(),
        oldest_at_least: since(now),
        oldest_at_most: now.saturating_duration_since(drain.lifecycle_activated_at()),
        oldest: tracked.first().map(|s| s.age),
        threads: tracked.into_iter().filter_map(|s| s.thread).collect(),
    };
    escalations.push(Escalation { rung: Rung::Report, after: since(now) });
    warn!(target: "cutover::host", plugin = %drain.plugin(), generation = stragglers.generation,
          in_flight = stragglers.in_flight, oldest_at_least = ?stragglers.oldest_at_least,
          "drain deadline passed");
    if options.cancel {
        drain.cancel();
        warn!(target: "cutover::host", plugin = %drain.plugin(), generation = stragglers.generation,
              in_flight = drain.in_flight(), grace = ?options.cancel_grace,
              "drain escalated: calls in flight cancelled");
        escalations.push(Escalation { rung: Rung::Cancel, after: since(Instant::now()) });
        if drain.wait_timeout(options.cancel_grace).is_ok() {
            return (DrainOutcome::Cancelled, Some(stragglers), escalations);
        }
    }
    if options.force {
        warn!(target: "cutover::host", plugin = %drain.plugin(), generation = stragglers.generation,
              in_flight = drain.in_flight(), grace = ?options.force_grace,
              "drain escalated: interrupting calls in flight");
        escalations.push(Escalation { rung: Rung::Force, after: since(Instant::now()) });
        if old.interrupt() && drain.wait_timeout(options.force_grace).is_ok() {
            return (DrainOutcome::Forced, Some(stragglers), escalations);
        }
    }
    escalations.push(Escalation { rung: Rung::Abandon, after: since(Instant::now()) });
    (DrainOutcome::Abandoned, Some(stragglers), escalations)
}

/// Wait for `drain` with the escalation ladder, then retire its generation:
/// now if the drain ended, or, if abandoned, when it ends (on a thread of
/// its own, not on the caller's thread whose lease ended it).
fn drain_and_retire<P: Plugin>(
    entry: &Arc<Entry<P>>,
    drain: &Drain,
    generation: u64,
    old: &P,
    options: &ReloadOptions,
    keep_warm: bool,
    phases: &mut PhaseTimings,
) -> (DrainOutcome, Option<StragglerReport>, Vec<Escalation>) {
    let (outcome, stragglers, escalations) = {
        let _span = info_span!("drain", plugin = %entry.id, generation).entered();
        escalate(drain, old, options)
    };
    if outcome == DrainOutcome::Abandoned {
        warn!(target: "cutover::host", plugin = %entry.id, generation, in_flight = drain.in_flight(), "drain abandoned; finishing in the background");
        let entry = Arc::clone(entry);
        drain.on_drained(move || {
            let retire = move |entry: &Entry<P>| {
                finish_retired(entry, &mut lock(&entry.state), generation, false);
            };
            let background = Arc::clone(&entry);
            let spawned = std::thread::Builder::new().name("cutover-retire".into()).spawn(move || retire(&background));
            if spawned.is_err() {
                // No thread to be had: retire here rather than never.
                retire(&entry);
            }
        });
    } else {
        phases.drain = drain.drained_at().map(|t| t.saturating_duration_since(drain.cutover_at()));
        phases.shutdown = finish_retired(entry, &mut lock(&entry.state), generation, keep_warm);
    }
    (outcome, stragglers, escalations)
}

/// Retire the generations kept warm (they stop being rollback targets).
fn retire_warm<P: Plugin>(entry: &Entry<P>, state: &mut EntryState<P>) {
    let warm: Vec<_> = state.retired.iter().filter(|r| r.warm).map(|r| r.gen.generation).collect();
    for generation in warm {
        finish_retired(entry, state, generation, false);
    }
}

/// A retired generation has drained: run `after_drain`, shut it down unless
/// its value still serves (rolled back to) or it is kept warm, finalize its
/// lifecycle, forget it. Returns the shutdown time if it was shut down.
fn finish_retired<P: Plugin>(
    entry: &Entry<P>,
    state: &mut EntryState<P>,
    generation: u64,
    keep_warm: bool,
) -> Option<Duration> {
    let index = state.retired.iter().position(|r| r.gen.generation == generation)?;
    let retired = &state.retired[index];
    if !retired.warm {
        let discipline = Arc::clone(&state.discipline);
        let value = Arc::clone(&retired.gen.value);
        run_hook(&entry.id, "after_drain", || discipline.after_drain(&value));
    }
    if keep_warm && !retired.warm {
        state.retired[index].warm = true;
        return None;
    }
    let retired = state.retired.remove(index);
    let still_serves = state.current.as_ref().is_some_and(|c| Arc::ptr_eq(&c.value, &retired.gen.value))
        || state.retired.iter().any(|r| Arc::ptr_eq(&r.gen.value, &retired.gen.value));
    let took = (!still_serves).then(|| shutdown(&entry.id, &*retired.gen.value));
    if let Err(e) = retired.drain.finalize() {
        warn!(target: "cutover::host", plugin = %entry.id, generation, error = %e, "could not finalize");
    }
    took
}

pub(super) fn remove<P: Plugin>(
    host: &Host<P>,
    id: &PluginId,
    options: &ReloadOptions,
) -> Result<ReloadReport, ReloadError> {
    let entry = host.entry(id)?;
    let _span = info_span!("cutover.remove", plugin = %id).entered();
    let busy = entry.try_busy()?;
    let dependents = deps::dependents(id, &dependency_graph(host));
    if !dependents.is_empty() {
        return Err(ReloadError::DependedOn { plugin: id.clone(), dependents });
    }
    let mut state = lock(&entry.state);
    let old = state.current.take().ok_or_else(|| ReloadError::NotFound { plugin: id.clone() })?;
    let start = Instant::now();
    let drain =
        host.plugins.remove_with(id, Finalize::Manual).map_err(|_| ReloadError::NotFound { plugin: id.clone() })?;
    lock(&host.entries).remove(id);
    let mut phases = PhaseTimings { cutover: start.elapsed(), ..PhaseTimings::default() };
    state.retired.push(Retired { gen: old.clone(), drain: drain.clone(), warm: false });
    drop(state);
    drop(busy);
    host.notify(id, ReloadKind::Remove, Some(old.generation), None);
    // Warm generations of a removed plugin go too.
    retire_warm(&entry, &mut lock(&entry.state));
    let (outcome, stragglers, escalations) =
        drain_and_retire(&entry, &drain, old.generation, &*old.value, options, false, &mut phases);
    info!(target: "cutover::host", plugin = %id, generation = old.generation, %outcome, "removed");
    Ok(ReloadReport {
        plugin: id.clone(),
        kind: ReloadKind::Remove,
        previous: Some(old.generation),
        generation: None,
        outcome,
        phases,
        stragglers,
        escalations,
    })
}
