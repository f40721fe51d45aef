//! Throughput of the built-in transform components (add-fields,
//! ecs-jumpcloud) against the same transforms compiled natively, at batch
//! sizes 1, 64 and 1024, on JumpCloud-like JSON events of ~720 bytes; and of
//! the `passthrough` test guest, which does nothing: its time is what the
//! contract itself costs per record (in, out, and the SDK between).
//!
//! Run: `cargo bench -p sluice --bench transform_throughput`
//! (`BENCH_RECORDS=N` sets the records per measurement; default 200000.
//! `BENCH_ONLY=NAME` runs one transform, `BENCH_BATCH=N` one batch size,
//! `BENCH_NATIVE=0` skips the native side (to profile WASM alone).
//! `BENCH_GUEST_DIR=DIR` loads `DIR/NAME.wasm` (`add_fields.wasm`, …)
//! instead of the built-in: an unstripped build for `perf`, or another
//! commit's guests for a before/after; see BENCHMARKS.md.
//! `BENCH_COUNT=1` counts the WebAssembly instructions run per record
//! instead: exact where timings on a shared machine are not, so it tells
//! changes of a few percent apart. Counting slows the guest down, so the
//! rates printed with it mean nothing.)
//!
//! Both sides include building the input records from bytes, as the
//! gateway must; the WASM side also includes copying them into and out of
//! the guest, which is the cost being measured.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sluice::wasm::{self, HostConfig, WasmHost, Worker};
use sluice_sdk::{Record, Transform};

mod common;
use common::event;

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn bench_wasm(worker: &mut Worker, inputs: &[Vec<u8>], batch: usize) -> Duration {
    let start = Instant::now();
    for chunk in inputs.chunks(batch) {
        let records: Vec<_> = chunk
            .iter()
            .map(|d| wasm::input_record(d.clone(), "bench", "2026-01-01T00:00:00Z", None))
            .collect();
        let results = worker.process(&records).expect("wasm batch");
        black_box(results);
    }
    start.elapsed()
}

fn bench_native<T: Transform>(t: &mut T, inputs: &[Vec<u8>], batch: usize) -> Duration {
    let start = Instant::now();
    for chunk in inputs.chunks(batch) {
        let records: Vec<Record> = chunk
            .iter()
            .map(|d| Record {
                data: d.clone(),
                source: "bench".into(),
                received_at: "2026-01-01T00:00:00Z".into(),
                route: None,
                metadata: Vec::new(),
            })
            .collect();
        black_box(sluice_sdk::process_batch(t, records));
    }
    start.elapsed()
}

fn main() {
    let n: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let inputs: Vec<Vec<u8>> = (0..n).map(event).collect();
    let avg = inputs.iter().map(Vec::len).sum::<usize>() / inputs.len();

    let host = WasmHost::new(HostConfig {
        cache_dir: None,
        count_instructions: counting(),
        ..HostConfig::default()
    })
    .expect("host");
    println!("{n} records of {avg} bytes on average, one core");
    let add = vec![("observer.vendor".to_string(), "sluice".to_string())];
    compare::<add_fields::AddFields>(&host, "add-fields", add, &inputs);
    compare::<ecs_jumpcloud::EcsJumpcloud>(&host, "ecs-jumpcloud", Vec::new(), &inputs);
    // A transform that does nothing: the contract's own cost per record.
    compare::<passthrough::Passthrough>(&host, "passthrough", Vec::new(), &inputs);
}

/// Whether `BENCH_COUNT=1` asks for instruction counts.
fn counting() -> bool {
    std::env::var("BENCH_COUNT").is_ok_and(|v| v == "1")
}

/// Prints records/s for the built-in `name` as wasm and natively (`T`).
fn compare<T: Transform>(
    host: &WasmHost,
    name: &str,
    config: Vec<(String, String)>,
    inputs: &[Vec<u8>],
) {
    let n = inputs.len();
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only != name) {
        return;
    }
    let component = match (
        sluice::builtins::find(name),
        std::env::var_os("BENCH_GUEST_DIR"),
    ) {
        (Some(builtin), Some(dir)) => {
            let path = std::path::Path::new(&dir).join(format!("{}.wasm", name.replace('-', "_")));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            host.load(builtin.name, &bytes).expect("load")
        }
        (Some(builtin), None) => host.load(builtin.name, builtin.bytes).expect("load"),
        // The one test guest measured here. BENCH_GUEST_DIR replaces
        // built-ins only, so this is always this build's.
        (None, _) => {
            assert_eq!(name, "passthrough");
            let path = std::path::Path::new(sluice_test_artifacts::PASSTHROUGH_COMPONENT);
            host.load_file(path).expect("load")
        }
    };
    let mut worker = Worker::new(component, config.clone()).expect("instantiate");
    let mut native =
        T::new(sluice_sdk::Config::new(config)).unwrap_or_else(|e| panic!("native {name}: {e}"));

    println!("\n{name}");
    println!(
        "{:>6}  {:>14}  {:>14}  {:>9}",
        "batch", "wasm rec/s", "native rec/s", "slowdown"
    );
    let with_native = std::env::var("BENCH_NATIVE").map_or(true, |v| v != "0");
    let batches = match std::env::var("BENCH_BATCH") {
        Ok(b) => vec![b.parse().expect("BENCH_BATCH is a number")],
        Err(_) => vec![1usize, 64, 1024],
    };
    for batch in batches {
        // Warm up: first calls fault in memory and caches.
        bench_wasm(&mut worker, &inputs[..n.min(5000)], batch);
        if counting() {
            let before = worker.instructions().expect("counting");
            bench_wasm(&mut worker, inputs, batch);
            let run = worker.instructions().expect("counting") - before;
            println!(
                "{batch:>6}  {:>14.0} wasm instructions per record",
                run as f64 / n as f64
            );
            continue;
        }
        let w = rate(n, bench_wasm(&mut worker, inputs, batch));
        if !with_native {
            println!("{batch:>6}  {w:>14.0}");
            continue;
        }
        bench_native(&mut native, &inputs[..n.min(5000)], batch);
        let nat = rate(n, bench_native(&mut native, inputs, batch));
        println!("{batch:>6}  {w:>14.0}  {nat:>14.0}  {:>8.2}x", nat / w);
    }
}
