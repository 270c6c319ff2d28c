//! Captures `tracing` events in tests: the fields of the events of one target
//! and level emitted on the current thread while a closure runs.

use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing_subscriber::{layer::Context, prelude::*, Layer};

/// One event: its fields, as (name, value) pairs, in order.
pub type Event = Vec<(String, String)>;

#[derive(Default)]
struct Fields(Event);
impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_string(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
}

struct Capture {
    target: &'static str,
    level: tracing::Level,
    events: Arc<Mutex<Vec<Event>>>,
}
impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() == self.target && *meta.level() == self.level {
            let mut fields = Fields::default();
            event.record(&mut fields);
            self.events.lock().unwrap().push(fields.0);
        }
    }
}

/// Run `f` with a subscriber capturing the events of `target` at `level`
/// emitted on this thread; returns what `f` returned, and the events.
pub fn during<R>(target: &'static str, level: tracing::Level, f: impl FnOnce() -> R) -> (R, Vec<Event>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let capture = Capture { target, level, events: Arc::clone(&events) };
    // With one subscriber alive, `tracing` decides a callsite's interest
    // from the registering thread's default alone: a callsite first hit by a
    // test running beside this one (no subscriber) would cache "never" and
    // hide its events from ours. A second subscriber, kept for the process,
    // makes every registration ask all of them.
    static BESIDE: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    BESIDE.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
    let out = tracing::subscriber::with_default(tracing_subscriber::registry().with(capture), f);
    let events = events.lock().unwrap().clone();
    (out, events)
}

/// The value of field `name` of `event`, as it was recorded.
pub fn field(event: &[(String, String)], name: &str) -> Option<String> {
    event.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}
