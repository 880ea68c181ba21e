//! Plugin runtime benchmark: events per second through real components, and
//! what it costs to get an instance. Prints figures; asserts nothing.
//!
//! Run with `cargo bench -p sluice-host --bench plugins`.

// The tests' support (tests/it/support/); a benchmark uses a part of it.
#[allow(dead_code)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use sluice_host::model::Batch;
use sluice_host::plugin::{PluginRuntime, PluginSpec, RuntimeConfig};
use support::{plugin_path, six_column_batch, spec};

/// Each throughput figure measures at least this long.
const MEASURE: Duration = Duration::from_secs(2);

fn main() {
    // `cargo bench --bench plugins -- json` runs only the figures whose
    // label contains "json" (handy under `perf record`).
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let wanted = |label: &str| label.contains(&filter);

    let cache = tempfile::tempdir().expect("a temp dir");
    let runtime = support::runtime(cache.path());
    let passthrough = runtime
        .load_transform(spec("passthrough", "{}"))
        .expect("passthrough loads");
    let json_sink = runtime
        .load_sink(spec("json-sink", "{}"))
        .expect("json-sink loads");
    let msgpack_sink = runtime
        .load_sink(spec("msgpack-sink", "{}"))
        .expect("msgpack-sink loads");

    println!(
        "plugin runtime benchmark (6-column rows: int8, numeric, text, text, timestamptz, bool)"
    );
    for batch_size in [256, 1] {
        let label = format!("passthrough → json-sink, batch {batch_size:>3}");
        if wanted(&label) {
            let mut transform = passthrough.instantiate().expect("passthrough starts");
            let mut sink = json_sink.instantiate().expect("json-sink starts");
            let rate = throughput(batch_size, |batch| {
                let batch = transform.transform(batch).expect("passthrough");
                black_box(sink.encode(batch).expect("json-sink"));
            });
            println!("  {label}: {rate:>10.0} events/s");
        }

        // Each stage alone, to tell where the time goes.
        let label = format!("passthrough only, batch {batch_size:>3}");
        if wanted(&label) {
            let mut transform = passthrough.instantiate().expect("passthrough starts");
            let rate = throughput(batch_size, |batch| {
                black_box(transform.transform(batch).expect("passthrough"));
            });
            println!("  {label}: {rate:>10.0} events/s");
        }
        for (name, plugin) in [("json-sink", &json_sink), ("msgpack-sink", &msgpack_sink)] {
            let label = format!("{name} only, batch {batch_size:>3}");
            if wanted(&label) {
                let mut sink = plugin.instantiate().expect("sink starts");
                let rate = throughput(batch_size, |batch| {
                    black_box(sink.encode(batch).expect("sink"));
                });
                println!("  {label}: {rate:>10.0} events/s");
            }
        }
    }
    if !wanted("instantiate load compile") {
        return;
    }

    // Instantiation from the InstancePre (including `init`).
    let per = time_each(2000, || {
        black_box(passthrough.instantiate().expect("instantiates"));
    });
    println!(
        "  instantiate + init from InstancePre: {:>8.1} µs",
        micros(per)
    );

    // Loading from the disk cache, as after a restart: a new runtime (new
    // engine, empty memory cache) over a warm cache folder. The engine's own
    // start-up is measured separately and subtracted.
    let config = || RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..RuntimeConfig::default()
    };
    let path = plugin_path("passthrough");
    let engine_only = time_each(20, || {
        black_box(PluginRuntime::new(config()).expect("runtime"));
    });
    let with_load = time_each(20, || {
        let runtime = PluginRuntime::new(config()).expect("runtime");
        black_box(
            runtime
                .load_transform(PluginSpec::from_path(&path))
                .expect("loads"),
        );
        assert_eq!(runtime.cache_stats().compiled, 0, "the disk cache was cold");
    });
    println!("  engine start-up: {:>8.1} µs", micros(engine_only));
    println!(
        "  load passthrough from the disk cache: {:>8.1} µs",
        micros(with_load.saturating_sub(engine_only))
    );
    let compile = time_each(5, || {
        let runtime = PluginRuntime::new(RuntimeConfig {
            cache_dir: None,
            ..RuntimeConfig::default()
        })
        .expect("runtime");
        black_box(
            runtime
                .load_transform(PluginSpec::from_path(&path))
                .expect("compiles"),
        );
    });
    println!(
        "  compile passthrough (no cache, incl. engine): {:>8.1} ms",
        compile.as_secs_f64() * 1e3
    );
}

/// Events per second of `run` over fresh batches of `batch_size` events;
/// batches are built before the clock starts.
fn throughput(batch_size: usize, mut run: impl FnMut(Batch)) -> f64 {
    let per_round = (65_536 / batch_size).max(1);
    // Warm up (page in the instance's memory, grow its heap).
    for batch in make(per_round.min(64), batch_size) {
        run(batch);
    }
    let (mut events, mut elapsed) = (0usize, Duration::ZERO);
    while elapsed < MEASURE {
        let batches = make(per_round, batch_size);
        let start = Instant::now();
        for batch in batches {
            run(batch);
        }
        elapsed += start.elapsed();
        events += per_round * batch_size;
    }
    events as f64 / elapsed.as_secs_f64()
}

fn make(count: usize, batch_size: usize) -> Vec<Batch> {
    (0..count)
        .map(|i| six_column_batch(i as u32, batch_size))
        .collect()
}

fn time_each(iterations: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
