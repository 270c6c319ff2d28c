//! Change notifications: `Host::subscribe`.
#![cfg(not(loom))]

use std::{
    sync::{mpsc, Arc, Mutex},
    thread,
    time::Duration,
};

use cutover::{
    host::{Host, HostChange, ReloadKind, ReloadOptions},
    plugin::{BoxError, Plugin},
    PluginId,
};

struct P(u64);
impl Plugin for P {}

fn source(version: u64) -> impl Fn(&PluginId) -> Result<P, BoxError> + Send + Sync {
    move |_: &PluginId| Ok(P(version))
}

fn failing(_: &PluginId) -> Result<P, BoxError> {
    Err("no".into())
}

const WAIT: Duration = Duration::from_secs(30);

fn change(plugin: &str, kind: ReloadKind, previous: Option<u64>, generation: Option<u64>) -> HostChange {
    HostChange { plugin: PluginId::new(plugin), kind, previous, generation }
}

#[test]
fn every_committed_change_is_delivered_once_and_failures_are_not() {
    let host: Host<P> = Host::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let subscription = host.subscribe(move |c: &HostChange| log.lock().unwrap().push(c.clone()));
    assert_eq!(host.subscriber_count(), 1);
    let (a, b) = (PluginId::new("a"), PluginId::new("b"));
    let options = ReloadOptions::default().deadline(WAIT);

    host.add_all(vec![(a.clone(), &source(1) as _), (b.clone(), &source(1) as _)]).unwrap();
    host.reload(&a, &source(2), &options).unwrap();
    // A failed reload or add commits nothing and is not delivered.
    host.reload(&a, &failing, &options).unwrap_err();
    host.add(PluginId::new("c"), &failing).unwrap_err();
    host.add(a.clone(), &source(9)).unwrap_err(); // already exists
    host.reload(&a, &source(3), &options.clone().keep_warm(true)).unwrap();
    host.rollback(&a, &options).unwrap();
    host.remove(&b, &options).unwrap();

    assert_eq!(
        *seen.lock().unwrap(),
        [
            change("a", ReloadKind::Add, None, Some(1)),
            change("b", ReloadKind::Add, None, Some(1)),
            change("a", ReloadKind::Reload, Some(1), Some(2)),
            change("a", ReloadKind::Reload, Some(2), Some(3)),
            change("a", ReloadKind::Rollback, Some(3), Some(4)),
            change("b", ReloadKind::Remove, Some(1), None),
        ]
    );

    drop(subscription);
    assert_eq!(host.subscriber_count(), 0);
    host.reload(&a, &source(5), &options).unwrap();
    assert_eq!(seen.lock().unwrap().len(), 6, "no delivery after unsubscribing");
}

#[test]
fn the_change_is_visible_in_the_callback() {
    let host = Arc::new(Host::<P>::new());
    let observed = Arc::new(Mutex::new(Vec::new()));
    let (weak, log) = (Arc::downgrade(&host), Arc::clone(&observed));
    let _subscription = host.subscribe(move |c: &HostChange| {
        // Calling back into the host is allowed: no host lock is held.
        let host = weak.upgrade().expect("host alive");
        let now = host.lease(&c.plugin).map(|l| (l.generation(), l.0));
        log.lock().unwrap().push((c.generation, now));
    });
    let id = PluginId::new("a");
    let options = ReloadOptions::default().deadline(WAIT);
    host.add(id.clone(), &source(10)).unwrap();
    host.reload(&id, &source(20), &options).unwrap();
    host.remove(&id, &options).unwrap();
    assert_eq!(*observed.lock().unwrap(), [(Some(1), Some((1, 10))), (Some(2), Some((2, 20))), (None, None)]);
}

#[test]
fn delivered_before_the_drain_so_a_subscriber_can_release_the_old_generation() {
    // The subscriber holds a lease on the current generation, as a registry
    // of pinned values would; it lets go when told about the cutover. If the
    // notification came after the drain, the reload would wait for ever.
    let host = Arc::new(Host::<P>::new());
    let id = PluginId::new("a");
    host.add(id.clone(), &source(1)).unwrap();
    let held = Arc::new(Mutex::new(host.lease(&id)));
    let (weak, slot) = (Arc::downgrade(&host), Arc::clone(&held));
    let _subscription = host.subscribe(move |c: &HostChange| {
        let host = weak.upgrade().expect("host alive");
        *slot.lock().unwrap() = host.lease(&c.plugin);
    });
    let (done_tx, done_rx) = mpsc::channel();
    let reloader = {
        let (host, id) = (Arc::clone(&host), id.clone());
        thread::spawn(move || {
            let report = host.reload(&id, &source(2), &ReloadOptions::default().deadline(WAIT));
            done_tx.send(()).unwrap();
            report
        })
    };
    done_rx.recv_timeout(WAIT).expect("the reload waited for a lease only the subscriber could release");
    let report = reloader.join().unwrap().unwrap();
    assert_eq!(report.outcome, cutover::host::DrainOutcome::Drained);
    assert_eq!(held.lock().unwrap().as_ref().map(|l| l.generation()), Some(2));
}

#[test]
fn a_panicking_subscriber_is_contained() {
    let host: Host<P> = Host::new();
    let count = Arc::new(Mutex::new(0));
    let _bad = host.subscribe(|_: &HostChange| panic!("subscriber bug"));
    let counter = Arc::clone(&count);
    let _good = host.subscribe(move |_: &HostChange| *counter.lock().unwrap() += 1);
    let id = PluginId::new("a");
    host.add(id.clone(), &source(1)).unwrap();
    host.reload(&id, &source(2), &ReloadOptions::default().deadline(WAIT)).unwrap();
    assert_eq!(*count.lock().unwrap(), 2);
    assert_eq!(host.lease(&id).unwrap().0, 2);
}

#[test]
fn a_subscription_does_not_keep_the_host_alive() {
    let host: Host<P> = Host::new();
    let subscription = host.subscribe(|_: &HostChange| {});
    drop(host);
    drop(subscription); // must not touch the freed host
}
