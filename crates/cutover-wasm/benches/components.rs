//! Benchmarks of component plugins (Rust guests built for wasm32-wasip2,
//! plugins/), each side by side with its baseline in the same run:
//!
//! 1. `math.mul3` over an 8,192-row Int64 column through the full host path
//!    (`Host::lease` + `invoke`) vs a native Rust loop building the same
//!    `Int64Array` (target: ≤ 4×), and vs the per-row core-module path (the
//!    WAT `math.mul3` through the same host path; target: ≥ 10× faster);
//! 2. `text.upper` over 8,192 short ASCII strings vs native
//!    `str::to_uppercase` building a `StringArray` (target: ≤ 4×);
//! 3. reload under load: 2 threads calling `math.mul3` (64 rows) while the
//!    component is reloaded 100 times, v1/v2 alternating (targets: 0 failed
//!    calls, p99 during reloads ≤ 1.5× steady p99).
//!
//! Run: `cargo bench -p cutover-wasm --bench components`

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, Int64Array, StringArray};
use common::{interleaved, reload_round, report_reload_rounds, wanted};
use criterion::{criterion_group, criterion_main, Criterion};
use cutover::host::Host;
use cutover::PluginId;
use cutover_wasm::{WasmPlugin, WasmSource};

const ROWS: usize = 8192;
const WAT_V1: &str = include_str!("../tests/plugins/math_v1.wat");

fn host_with(id: &str, source: &WasmSource) -> Host<WasmPlugin> {
    let host = Host::new();
    host.add(PluginId::new(id), source).unwrap();
    host
}

/// The full host path: registry lookup + lease, function lookup, instance
/// checkout, the call, Arrow output.
fn call(host: &Host<WasmPlugin>, id: &PluginId, function: &str, column: &ArrayRef) -> ArrayRef {
    host.lease(id).unwrap().invoke(function, std::slice::from_ref(column), column.len()).unwrap()
}

fn native_mul3(a: &Int64Array) -> ArrayRef {
    let values: Vec<i64> = a.values().iter().map(|x| x.wrapping_mul(3)).collect();
    Arc::new(Int64Array::new(values.into(), a.nulls().cloned()))
}

fn native_upper(a: &StringArray) -> ArrayRef {
    Arc::new(a.iter().map(|s| s.map(str::to_uppercase)).collect::<StringArray>())
}

/// Native with the guest's own shortcut (an all-ASCII column is uppercased
/// in one pass over the data), for context.
fn native_upper_ascii(a: &StringArray) -> ArrayRef {
    let mut data = a.value_data().to_vec();
    data.make_ascii_uppercase();
    Arc::new(StringArray::new(a.offsets().clone(), data.into(), a.nulls().cloned()))
}

/// 8,192 short ASCII strings: lowercase words of 3–14 characters with digits.
fn words() -> StringArray {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    StringArray::from_iter_values((0..ROWS).map(|i| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = 3 + (state % 12) as usize;
        let word: String = (0..len).map(|k| (b'a' + ((state >> (k * 5)) % 26) as u8) as char).collect();
        format!("{word}{}", i % 100)
    }))
}

fn mul3(c: &mut Criterion) {
    if !wanted("mul3_8192_int64") {
        return;
    }
    let id = PluginId::new("math");
    let component = host_with("math", &WasmSource::from_file(test_plugins::MATH_V1));
    let module = host_with("math", &WasmSource::from_wat(WAT_V1));
    let input = Int64Array::from((0..ROWS as i64).map(|x| x * 7 - 5000).collect::<Vec<_>>());
    let column: ArrayRef = Arc::new(input.clone());
    assert_eq!(call(&component, &id, "math.mul3", &column).as_ref(), native_mul3(&input).as_ref());
    assert_eq!(call(&module, &id, "math.mul3", &column).as_ref(), native_mul3(&input).as_ref());

    let mut group = c.benchmark_group("mul3_8192_int64");
    group.bench_function("native_loop", |b| b.iter(|| native_mul3(black_box(&input))));
    group.bench_function("component_host_lease_invoke", |b| {
        b.iter(|| call(&component, &id, "math.mul3", black_box(&column)))
    });
    group.bench_function("module_per_row_host_lease_invoke", |b| {
        b.iter(|| call(&module, &id, "math.mul3", black_box(&column)))
    });
    group.finish();

    let t = interleaved(
        200,
        20,
        &mut [
            &mut || drop(black_box(native_mul3(black_box(&input)))),
            &mut || drop(black_box(call(&component, &id, "math.mul3", &column))),
            &mut || drop(black_box(call(&module, &id, "math.mul3", &column))),
        ],
    );
    let (native, comp, per_row) = (t[0], t[1], t[2]);
    // The fixed cost of one call (lease, checkout, crossing into the guest
    // and back), on one row.
    let one: ArrayRef = Arc::new(Int64Array::from(vec![7]));
    let f = interleaved(
        200,
        200,
        &mut [&mut || drop(black_box(call(&component, &id, "math.mul3", &one))), &mut || {
            drop(black_box(call(&module, &id, "math.mul3", &one)))
        }],
    );
    println!(
        "\nRESULT mul3 8192xInt64: native loop {:.2} us, component (host lease + invoke) {:.2} us, \
         module per-row (host lease + invoke) {:.2} us; component/native {:.2}x (target <= 4), \
         module/component {:.1}x faster (target >= 10); one row: component {:.2} us, module {:.2} us\n",
        native * 1e6,
        comp * 1e6,
        per_row * 1e6,
        comp / native,
        per_row / comp,
        f[0] * 1e6,
        f[1] * 1e6,
    );
}

fn upper(c: &mut Criterion) {
    if !wanted("upper_8192_ascii") {
        return;
    }
    let id = PluginId::new("text");
    let text = host_with("text", &WasmSource::from_file(test_plugins::TEXT));
    let input = words();
    let column: ArrayRef = Arc::new(input.clone());
    let expected = native_upper(&input);
    assert_eq!(call(&text, &id, "text.upper", &column).as_ref(), expected.as_ref());
    assert_eq!(native_upper_ascii(&input).as_ref(), expected.as_ref());
    // The same strings with one non-ASCII row: the guest maps every row.
    let mixed: ArrayRef = Arc::new(
        input
            .iter()
            .enumerate()
            .map(|(i, s)| s.map(|s| if i == 0 { "é".to_owned() } else { s.to_owned() }))
            .collect::<StringArray>(),
    );

    let mut group = c.benchmark_group("upper_8192_ascii");
    group.bench_function("native_to_uppercase", |b| b.iter(|| native_upper(black_box(&input))));
    group.bench_function("component_host_lease_invoke", |b| {
        b.iter(|| call(&text, &id, "text.upper", black_box(&column)))
    });
    group.finish();

    let t = interleaved(
        200,
        10,
        &mut [
            &mut || drop(black_box(native_upper(black_box(&input)))),
            &mut || drop(black_box(call(&text, &id, "text.upper", &column))),
            &mut || drop(black_box(native_upper_ascii(black_box(&input)))),
            &mut || drop(black_box(call(&text, &id, "text.upper", &mixed))),
        ],
    );
    let (native, comp, native_ascii, comp_mixed) = (t[0], t[1], t[2], t[3]);
    println!(
        "\nRESULT upper 8192 short ASCII strings: native str::to_uppercase {:.2} us, component (host lease + invoke) \
         {:.2} us, ratio {:.2}x (target <= 4); for context: native one-pass ASCII {:.2} us (component {:.2}x that), \
         component with one non-ASCII row (every row mapped in the guest) {:.2} us ({:.2}x native)\n",
        native * 1e6,
        comp * 1e6,
        comp / native,
        native_ascii * 1e6,
        comp / native_ascii,
        comp_mixed * 1e6,
        comp_mixed / native,
    );
}

fn reload_under_load(_c: &mut Criterion) {
    if !wanted("reload_under_load") {
        return;
    }
    const ROUNDS: usize = 5;
    const RELOADS: usize = 100;
    const CALL_ROWS: usize = 64;
    let (v1, v2) = (WasmSource::from_file(test_plugins::MATH_V1), WasmSource::from_file(test_plugins::MATH_V2));
    report_reload_rounds(
        "components",
        ROUNDS,
        || reload_round("math", "math.mul3", &v1, [&v2, &v1], CALL_ROWS, RELOADS),
        RELOADS,
        CALL_ROWS,
    );
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = mul3, upper, reload_under_load }
criterion_main!(benches);
