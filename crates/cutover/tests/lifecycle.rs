//! The seed API: lifecycle states, atomic transitions and `EpochFencedReload`.
#![cfg(not(loom))]

use std::{
    panic::{RefUnwindSafe, UnwindSafe},
    sync::{mpsc, Arc, Barrier, Mutex},
    thread,
    time::Duration,
};

use cutover::{DrainError, EpochFencedReload, LifecycleState, PluginId, PluginIdError, PluginLifecycle};
use LifecycleState::*;

fn lifecycle_in(state: LifecycleState) -> Arc<PluginLifecycle> {
    Arc::new(PluginLifecycle::with_state(PluginId::new("math"), state))
}

#[test]
fn plugin_id_new_parse_display() {
    let id = PluginId::new("math");
    assert_eq!(id.to_string(), "math");
    assert_eq!(id.as_str(), "math");
    assert_eq!(id.clone(), id);
    assert_eq!(format!("{id:?}"), "PluginId(\"math\")");
    assert_eq!(PluginId::parse("math").unwrap(), id);
    assert_eq!(PluginId::parse(""), Err(PluginIdError::Empty));
    assert!(matches!(PluginId::parse("a b"), Err(PluginIdError::BadChar { at: 1, .. })));
    assert!(matches!(PluginId::parse(&"x".repeat(300)), Err(PluginIdError::TooLong { len: 300 })));
    let mut set = std::collections::HashSet::new();
    set.insert(PluginId::new("a"));
    assert!(set.contains(&PluginId::new("a")));
}

#[test]
#[should_panic(expected = "empty")]
fn plugin_id_new_panics_on_empty() {
    let _ = PluginId::new("");
}

#[test]
fn states_are_repr_u8_in_lifecycle_order_and_display_their_names() {
    assert_eq!(LifecycleState::ALL.map(|s| s as u8), [0, 1, 2, 3, 4, 5]);
    assert_eq!(
        LifecycleState::ALL.map(|s| s.to_string()),
        ["Loaded", "Linked", "Initialized", "Active", "Draining", "Removed"]
    );
}

#[test]
fn new_lifecycle_starts_loaded_and_advances_in_order_then_sticks_at_removed() {
    let lc = PluginLifecycle::new(PluginId::new("math"));
    assert_eq!(lc.plugin(), &PluginId::new("math"));
    assert_eq!(lc.state(), Loaded);
    for expected in [Linked, Initialized, Active, Draining, Removed, Removed, Removed] {
        assert_eq!(lc.advance(), expected);
        assert_eq!(lc.state(), expected);
    }
}

#[test]
fn set_overrides_and_returns_previous() {
    let lc = PluginLifecycle::new(PluginId::new("math"));
    assert_eq!(lc.set(Active), Loaded);
    assert_eq!(lc.state(), Active);
    assert_eq!(lc.set(Removed), Active);
    assert_eq!(lc.set(Linked), Removed);
    assert_eq!(lc.state(), Linked);
}

#[test]
fn predicates_for_every_state() {
    for state in LifecycleState::ALL {
        let lc = lifecycle_in(state);
        assert_eq!(lc.is_active(), state == Active, "{state}");
        assert_eq!(lc.is_winding_down(), matches!(state, Draining | Removed), "{state}");
    }
}

#[test]
fn compare_and_set_is_one_transition() {
    let lc = lifecycle_in(Active);
    assert_eq!(lc.compare_and_set(Active, Draining), Ok(()));
    assert_eq!(lc.compare_and_set(Active, Draining), Err(Draining));
    assert_eq!(lc.state(), Draining);
}

#[test]
fn begin_drain_moves_active_to_draining() {
    let lc = lifecycle_in(Active);
    let driver = EpochFencedReload::new(Arc::clone(&lc));
    assert_eq!(driver.begin_drain(), Ok(()));
    assert_eq!(lc.state(), Draining);
    assert!(Arc::ptr_eq(driver.old_lifecycle(), &lc));
}

#[test]
fn begin_drain_from_each_non_active_state_fails_and_changes_nothing() {
    for state in LifecycleState::ALL.into_iter().filter(|s| *s != Active) {
        let lc = lifecycle_in(state);
        let driver = EpochFencedReload::new(Arc::clone(&lc));
        assert_eq!(driver.begin_drain(), Err(DrainError::NotActive { current: state }));
        assert_eq!(lc.state(), state);
    }
}

#[test]
fn wait_for_drain_returns_at_or_under_threshold() {
    let lc = lifecycle_in(Draining);
    let driver = EpochFencedReload::new(Arc::clone(&lc));
    // Two handles: ours and the driver's.
    assert_eq!(driver.wait_for_drain(2, Duration::from_millis(1), Duration::ZERO), Ok(()));
    assert_eq!(driver.wait_for_drain(3, Duration::from_millis(1), Duration::ZERO), Ok(()));
    drop(lc);
    assert_eq!(driver.wait_for_drain(1, Duration::ZERO, Duration::ZERO), Ok(()));
}

#[test]
fn wait_for_drain_times_out_with_the_observed_strong_count() {
    let lc = lifecycle_in(Draining);
    let in_flight = Arc::clone(&lc);
    let driver = EpochFencedReload::new(Arc::clone(&lc));
    let max_wait = Duration::from_millis(20);
    match driver.wait_for_drain(1, Duration::from_millis(1), max_wait) {
        Err(DrainError::Timeout { waited, strong_count }) => {
            assert_eq!(strong_count, 3);
            assert!(waited >= max_wait, "gave up after {waited:?}, before max_wait");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(in_flight);
}

#[test]
fn wait_for_drain_succeeds_after_another_thread_drops_its_clone() {
    let lc = lifecycle_in(Active);
    let driver = EpochFencedReload::new(Arc::clone(&lc));
    let (go, wait) = mpsc::channel::<()>();
    let holder = {
        let clone = Arc::clone(&lc);
        thread::spawn(move || {
            wait.recv().unwrap();
            drop(clone);
        })
    };
    drop(lc);
    driver.begin_drain().unwrap();
    assert!(Arc::strong_count(driver.old_lifecycle()) == 2);
    go.send(()).unwrap();
    assert_eq!(driver.wait_for_drain(1, Duration::from_millis(1), Duration::from_secs(60)), Ok(()));
    holder.join().unwrap();
    driver.finalize();
    assert_eq!(driver.old_lifecycle().state(), Removed);
}

#[test]
fn finalize_removes_from_every_state_as_the_seed_documents() {
    for state in LifecycleState::ALL {
        // Another handle is held and no drain was shown: removed regardless.
        let lc = lifecycle_in(state);
        let driver = EpochFencedReload::new(Arc::clone(&lc));
        driver.finalize();
        assert_eq!(lc.state(), Removed, "finalize from {state}");
        driver.finalize();
        assert_eq!(lc.state(), Removed, "finalize is idempotent at Removed");
        assert_eq!(driver.try_finalize(), Ok(()));
    }
}

#[test]
fn try_finalize_refuses_unless_drained_and_says_why() {
    for state in [Loaded, Linked, Initialized, Active] {
        let lc = lifecycle_in(state);
        let driver = EpochFencedReload::new(Arc::clone(&lc));
        assert_eq!(driver.try_finalize(), Err(DrainError::NotDraining { current: state }));
        assert_eq!(lc.state(), state, "a refusal changes nothing");
    }
    // Draining, another handle held, nothing shown: refused.
    let lc = lifecycle_in(Draining);
    let driver = EpochFencedReload::new(Arc::clone(&lc));
    assert_eq!(driver.try_finalize(), Err(DrainError::NotDrained { current: Draining }));
    assert_eq!(lc.state(), Draining);
    // Shown drained by a wait made while Draining: removed, idempotent.
    driver.wait_for_drain(2, Duration::ZERO, Duration::ZERO).unwrap();
    assert_eq!(driver.try_finalize(), Ok(()));
    assert_eq!(lc.state(), Removed);
    assert_eq!(driver.try_finalize(), Ok(()));
    // Draining, and the driver holds the only handle: drained by definition.
    let driver = EpochFencedReload::new(lifecycle_in(Draining));
    assert_eq!(driver.try_finalize(), Ok(()));
    assert_eq!(driver.old_lifecycle().state(), Removed);
    // The refusals say what to do.
    let e = DrainError::NotDrained { current: Draining };
    assert!(e.to_string().contains("wait") && e.to_string().contains("finalize"), "{e}");
    let e = DrainError::NotDraining { current: Active };
    assert!(e.to_string().contains("Active") && e.to_string().contains("begin_drain"), "{e}");
}

/// Issue 12, item 7: before the fix, a `wait_for_drain` that succeeded while
/// the plugin was still `Active` marked it drained for good, so
/// `try_finalize` removed it after `begin_drain` although an operation had
/// captured it in between.
#[test]
fn a_wait_before_the_drain_began_shows_nothing() {
    let lc = lifecycle_in(Active);
    let driver = EpochFencedReload::new(Arc::clone(&lc));
    assert_eq!(driver.wait_for_drain(2, Duration::ZERO, Duration::ZERO), Ok(()), "the seed returns Ok in any state");
    let captured = Arc::clone(&lc); // an operation captures the still-Active plugin
    driver.begin_drain().unwrap();
    assert_eq!(driver.try_finalize(), Err(DrainError::NotDrained { current: Draining }));
    assert_eq!(lc.state(), Draining);
    drop(captured);
    driver.wait_for_drain(2, Duration::ZERO, Duration::ZERO).unwrap();
    assert_eq!(driver.try_finalize(), Ok(()));
}

/// A drain shown, then the state set back to `Active` and drained again: the
/// second `begin_drain` starts a new drain, which must be shown anew.
#[test]
fn begin_drain_forgets_an_earlier_drain() {
    let lc = lifecycle_in(Active);
    let driver = EpochFencedReload::new(Arc::clone(&lc));
    driver.begin_drain().unwrap();
    driver.wait_for_drain(2, Duration::ZERO, Duration::ZERO).unwrap();
    lc.set(Active);
    let captured = Arc::clone(&lc);
    driver.begin_drain().unwrap();
    assert_eq!(driver.try_finalize(), Err(DrainError::NotDrained { current: Draining }));
    drop(captured);
}

#[test]
fn a_failed_begin_drain_keeps_a_shown_drain() {
    let lc = lifecycle_in(Active);
    let driver = EpochFencedReload::new(Arc::clone(&lc));
    driver.begin_drain().unwrap();
    driver.wait_for_drain(2, Duration::ZERO, Duration::ZERO).unwrap();
    assert_eq!(driver.begin_drain(), Err(DrainError::NotActive { current: Draining }));
    assert_eq!(driver.try_finalize(), Ok(()));
}

#[test]
fn begin_drain_racing_finalize_ends_removed_whichever_wins() {
    let rounds = if cfg!(miri) { 3 } else { 2_000 };
    let (mut drain_won, mut finalize_won) = (0, 0);
    for _ in 0..rounds {
        let lc = lifecycle_in(Active);
        let barrier = Arc::new(Barrier::new(2));
        let drainer = {
            let driver = EpochFencedReload::new(Arc::clone(&lc));
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                driver.begin_drain()
            })
        };
        let finalizer = {
            let driver = EpochFencedReload::new(Arc::clone(&lc));
            thread::spawn(move || {
                barrier.wait();
                driver.finalize();
            })
        };
        let drained = drainer.join().unwrap();
        finalizer.join().unwrap();
        assert_eq!(lc.state(), Removed);
        match drained {
            Ok(()) => drain_won += 1,
            Err(DrainError::NotActive { current: Removed }) => finalize_won += 1,
            Err(e) => panic!("begin_drain racing finalize: {e:?}"),
        }
    }
    assert_eq!(drain_won + finalize_won, rounds);
}

#[test]
fn racing_begin_drain_through_separate_drivers_has_exactly_one_winner() {
    let (n, rounds) = if cfg!(miri) { (4, 2) } else { (8, 50) };
    for _ in 0..rounds {
        let lc = lifecycle_in(Active);
        let barrier = Arc::new(Barrier::new(n));
        let results: Vec<_> = (0..n)
            .map(|_| {
                let driver = EpochFencedReload::new(Arc::clone(&lc));
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    barrier.wait();
                    driver.begin_drain()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        for r in results.iter().filter(|r| r.is_err()) {
            assert_eq!(r, &Err(DrainError::NotActive { current: Draining }));
        }
        assert_eq!(lc.state(), Draining);
    }
}

#[test]
fn driver_is_send_sync_unpin_and_unwind_safe() {
    fn assert_traits<T: Send + Sync + Unpin + UnwindSafe + RefUnwindSafe>() {}
    assert_traits::<EpochFencedReload>();
    assert_traits::<PluginLifecycle>();
}

#[test]
fn errors_say_what_happened_and_what_to_do() {
    let e = DrainError::NotActive { current: Draining };
    assert!(e.to_string().contains("Draining") && e.to_string().contains("wait"), "{e}");
    let e = DrainError::Timeout { waited: Duration::from_secs(1), strong_count: 3 };
    assert!(e.to_string().contains('3') && e.to_string().contains("cancel"), "{e}");
}

/// Collects `(plugin, from, to)` of every lifecycle transition event.
mod capture {
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing_subscriber::{layer::Context, prelude::*, Layer};

    #[derive(Default)]
    struct Fields(Vec<(String, String)>);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_string(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push((field.name().to_string(), value.to_string()));
        }
    }

    /// Every captured event, as its `(field, value)` pairs.
    pub type Events = Arc<Mutex<Vec<Vec<(String, String)>>>>;

    pub struct Capture(pub Events);
    impl<S: tracing::Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if event.metadata().target() == "cutover::lifecycle" {
                let mut fields = Fields::default();
                event.record(&mut fields);
                self.0.lock().unwrap().push(fields.0);
            }
        }
    }

    /// Every captured event at `WARN` level, as its `(field, value)` pairs.
    pub struct Warnings(pub Events);
    impl<S: tracing::Subscriber> Layer<S> for Warnings {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if event.metadata().target() == "cutover::lifecycle" && *event.metadata().level() == tracing::Level::WARN {
                let mut fields = Fields::default();
                event.record(&mut fields);
                self.0.lock().unwrap().push(fields.0);
            }
        }
    }

    pub fn warnings(events: Events) -> impl tracing::Subscriber {
        tracing_subscriber::registry().with(Warnings(events))
    }

    pub fn subscriber(events: Events) -> impl tracing::Subscriber {
        tracing_subscriber::registry().with(Capture(events))
    }
}

#[test]
fn each_transition_emits_a_tracing_event_with_plugin_from_and_to() {
    let events = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(capture::subscriber(Arc::clone(&events)), || {
        let lc = lifecycle_in(Active);
        EpochFencedReload::new(Arc::clone(&lc)).begin_drain().unwrap();
    });
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1);
    let get = |k: &str| events[0].iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("plugin").as_deref(), Some("math"));
    assert_eq!(get("from").as_deref(), Some("Active"));
    assert_eq!(get("to").as_deref(), Some("Draining"));
}

#[test]
fn finalize_warns_when_it_removes_a_plugin_never_shown_drained() {
    let events = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(capture::warnings(Arc::clone(&events)), || {
        // Forced: begin_drain, then finalize at once with an operation in flight.
        let lc = lifecycle_in(Active);
        let in_flight = Arc::clone(&lc);
        let driver = EpochFencedReload::new(Arc::clone(&lc));
        driver.begin_drain().unwrap();
        driver.finalize();
        assert_eq!(lc.state(), Removed);
        drop(in_flight);
        // Shown drained: no warning. Only the driver's handle left: none either.
        let lc = lifecycle_in(Active);
        let driver = EpochFencedReload::new(Arc::clone(&lc));
        driver.begin_drain().unwrap();
        driver.wait_for_drain(2, Duration::ZERO, Duration::ZERO).unwrap();
        driver.finalize();
        EpochFencedReload::new(lifecycle_in(Active)).finalize();
    });
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let get = |k: &str| events[0].iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("plugin").as_deref(), Some("math"));
    assert_eq!(get("from").as_deref(), Some("Draining"));
    // Ours, the one in flight, the driver's.
    assert_eq!(get("strong_count").as_deref(), Some("3"));
}
