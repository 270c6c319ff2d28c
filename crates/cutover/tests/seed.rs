//! The original driver's documented behaviours, as its users relied on them:
//! these tests use only the seed API (`PluginLifecycle`, `LifecycleState`,
//! `EpochFencedReload`, `DrainError`), written as code ported from the
//! original would be, changed only in its imports.
#![cfg(not(loom))]

use std::{sync::Arc, time::Duration};

use cutover::{DrainError, EpochFencedReload, LifecycleState, PluginId, PluginLifecycle};

fn lifecycle() -> Arc<PluginLifecycle> {
    Arc::new(PluginLifecycle::new(PluginId::new("scalar.math")))
}

fn active() -> Arc<PluginLifecycle> {
    let lc = lifecycle();
    lc.set(LifecycleState::Active);
    lc
}

#[test]
fn lifecycle_starts_loaded() {
    assert_eq!(lifecycle().state(), LifecycleState::Loaded);
}

#[test]
fn advance_walks_every_state_and_sticks_at_removed() {
    let lc = lifecycle();
    assert_eq!(lc.advance(), LifecycleState::Linked);
    assert_eq!(lc.advance(), LifecycleState::Initialized);
    assert_eq!(lc.advance(), LifecycleState::Active);
    assert_eq!(lc.advance(), LifecycleState::Draining);
    assert_eq!(lc.advance(), LifecycleState::Removed);
    assert_eq!(lc.advance(), LifecycleState::Removed);
    assert_eq!(lc.state(), LifecycleState::Removed);
}

#[test]
fn set_overrides_the_state() {
    let lc = lifecycle();
    lc.set(LifecycleState::Draining);
    assert_eq!(lc.state(), LifecycleState::Draining);
    lc.set(LifecycleState::Loaded);
    assert_eq!(lc.state(), LifecycleState::Loaded);
}

#[test]
fn begin_drain_moves_active_to_draining() {
    let lc = active();
    let driver = EpochFencedReload::new(lc.clone());
    driver.begin_drain().unwrap();
    assert_eq!(lc.state(), LifecycleState::Draining);
}

#[test]
fn begin_drain_rejects_a_plugin_that_is_not_active() {
    for state in [
        LifecycleState::Loaded,
        LifecycleState::Linked,
        LifecycleState::Initialized,
        LifecycleState::Draining,
        LifecycleState::Removed,
    ] {
        let lc = lifecycle();
        lc.set(state);
        let driver = EpochFencedReload::new(lc.clone());
        match driver.begin_drain() {
            Err(DrainError::NotActive { current }) => assert_eq!(current, state),
            other => panic!("begin_drain from {state:?}: expected NotActive, got {other:?}"),
        }
        assert_eq!(lc.state(), state);
    }
}

#[test]
fn wait_for_drain_returns_at_once_at_or_under_the_threshold() {
    let lc = active();
    let driver = EpochFencedReload::new(lc.clone());
    driver.begin_drain().unwrap();
    // `lc` and the driver's own handle: 2.
    driver.wait_for_drain(2, Duration::from_millis(10), Duration::from_secs(1)).unwrap();
    driver.wait_for_drain(5, Duration::from_millis(10), Duration::from_secs(1)).unwrap();
    drop(lc);
    driver.wait_for_drain(1, Duration::from_millis(10), Duration::from_secs(1)).unwrap();
}

#[test]
fn wait_for_drain_times_out_with_the_observed_strong_count() {
    let lc = active();
    let driver = EpochFencedReload::new(lc.clone());
    let in_flight = lc.clone();
    driver.begin_drain().unwrap();
    match driver.wait_for_drain(1, Duration::from_millis(1), Duration::from_millis(20)) {
        Err(DrainError::Timeout { strong_count, .. }) => assert_eq!(strong_count, 3),
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(in_flight);
}

#[test]
fn finalize_right_after_begin_drain_removes() {
    let lc = active();
    let driver = EpochFencedReload::new(lc.clone());
    let _still_held = lc.clone();
    driver.begin_drain().unwrap();
    driver.finalize();
    assert_eq!(lc.state(), LifecycleState::Removed);
}

#[test]
fn finalize_is_idempotent_at_removed() {
    let lc = active();
    let driver = EpochFencedReload::new(lc.clone());
    driver.begin_drain().unwrap();
    driver.finalize();
    driver.finalize();
    driver.finalize();
    assert_eq!(lc.state(), LifecycleState::Removed);
}

#[test]
fn end_to_end_reload() {
    let old = active();
    let host_handle = old.clone();
    let driver = EpochFencedReload::new(old.clone());

    driver.begin_drain().unwrap();
    assert_eq!(old.state(), LifecycleState::Draining);

    let new = lifecycle();
    new.advance();
    new.advance();
    new.advance();
    assert_eq!(new.state(), LifecycleState::Active);

    drop(host_handle);
    // `old` (ours) and the driver's: 2.
    driver.wait_for_drain(2, Duration::from_millis(1), Duration::from_secs(1)).unwrap();
    driver.finalize();
    assert_eq!(old.state(), LifecycleState::Removed);
    assert_eq!(driver.old_lifecycle().state(), LifecycleState::Removed);
}
