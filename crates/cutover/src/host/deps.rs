//! Dependency checks: missing dependencies, cycles, and initialization order.

use std::collections::{HashMap, HashSet};

use super::ReloadError;
use crate::PluginId;

/// The dependency graph: plugin → the plugins it depends on.
pub(crate) type Graph = HashMap<PluginId, Vec<PluginId>>;

/// Order `batch` (new or reloaded plugins with their declared dependencies)
/// so that every plugin comes after its dependencies, which must be in the
/// batch or in `existing`. Returns indices into `batch`.
pub(crate) fn order(batch: &[(PluginId, Vec<PluginId>)], existing: &Graph) -> Result<Vec<usize>, ReloadError> {
    let mut graph: Graph = existing.clone();
    for (id, deps) in batch {
        graph.insert(id.clone(), deps.clone());
    }
    for (id, deps) in batch {
        if let Some(dependency) = deps.iter().find(|d| !graph.contains_key(*d)) {
            return Err(ReloadError::MissingDependency { plugin: id.clone(), dependency: dependency.clone() });
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        return Err(ReloadError::DependencyCycle { cycle });
    }
    // Depth-first post-order over the batch: dependencies first.
    let index: HashMap<&PluginId, usize> = batch.iter().enumerate().map(|(i, (id, _))| (id, i)).collect();
    let mut done = HashSet::new();
    let mut out = Vec::with_capacity(batch.len());
    fn visit<'a>(
        id: &'a PluginId,
        graph: &'a Graph,
        index: &HashMap<&PluginId, usize>,
        done: &mut HashSet<&'a PluginId>,
        out: &mut Vec<usize>,
    ) {
        if !done.insert(id) {
            return;
        }
        for dep in graph.get(id).into_iter().flatten() {
            visit(dep, graph, index, done, out);
        }
        if let Some(&i) = index.get(id) {
            out.push(i);
        }
    }
    for (id, _) in batch {
        visit(id, &graph, &index, &mut done, &mut out);
    }
    Ok(out)
}

/// A cycle in `graph`, as a path whose last element repeats the first.
fn find_cycle(graph: &Graph) -> Option<Vec<PluginId>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    fn dfs(
        id: &PluginId,
        graph: &Graph,
        marks: &mut HashMap<PluginId, Mark>,
        path: &mut Vec<PluginId>,
    ) -> Option<Vec<PluginId>> {
        match marks.get(id) {
            Some(Mark::Done) => return None,
            Some(Mark::OnPath) => {
                let start = path.iter().position(|p| p == id).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(id.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(id.clone(), Mark::OnPath);
        path.push(id.clone());
        for dep in graph.get(id).into_iter().flatten() {
            if let Some(cycle) = dfs(dep, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(id.clone(), Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    let mut ids: Vec<&PluginId> = graph.keys().collect();
    ids.sort();
    for id in ids {
        if let Some(cycle) = dfs(id, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

/// The plugins in `graph` that depend on `id`.
pub(crate) fn dependents(id: &PluginId, graph: &Graph) -> Vec<PluginId> {
    let mut out: Vec<PluginId> = graph
        .iter()
        .filter(|(other, deps)| *other != id && deps.contains(id))
        .map(|(other, _)| other.clone())
        .collect();
    out.sort();
    out
}
