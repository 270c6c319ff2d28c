use cutover::{PluginId, Registry, Slot};
use std::{hint::black_box, sync::Arc, time::Instant};
struct P {
    id: u64,
}
fn reg(ids: &[usize]) -> Registry<String, P> {
    let r = Registry::new();
    r.extend(ids.iter().map(|&i| {
        let k = format!("plugin-{i}");
        (k.clone(), Slot::new(PluginId::new(&k), Arc::new(P { id: i as u64 })))
    }))
    .unwrap();
    r
}
fn time(r: &Registry<String, P>, key: &str) -> f64 {
    let n = 20_000_000u64;
    let mut acc = 0;
    for _ in 0..100000 {
        acc += r.lease(black_box(key)).unwrap().id;
    }
    let t = Instant::now();
    for _ in 0..n {
        acc += r.lease(black_box(key)).unwrap().id;
    }
    black_box(acc);
    t.elapsed().as_nanos() as f64 / n as f64
}
fn main() {
    let all: Vec<usize> = (0..10_000).collect();
    for _ in 0..4 {
        let one = reg(&[1234]);
        let big = reg(&all);
        let keys = ["plugin-1234", "plugin-17", "plugin-9999"];
        let a: Vec<String> = keys.iter().map(|k| format!("{:.1}", time(&big, k))).collect();
        println!("one {:.1}  big {:?}", time(&one, "plugin-1234"), a);
    }
}
