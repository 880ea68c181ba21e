//! What a plugin costs in each language: the mask and the JSON sink in
//! Rust, Python, JavaScript and C (where written), run through the same
//! runtime. Per component: its size, loading it from a warm disk cache (as
//! after a restart), instantiating it (+ `init`), and events per second at
//! batch 256. Prints figures; asserts nothing.
//!
//! Run with `cargo bench -p sluice-host --bench languages` (after
//! `scripts/build-plugins`); `-- py` runs only the labels containing "py".

// The tests' support (tests/it/support/); a benchmark uses a part of it.
#[allow(dead_code)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use sluice_host::model::Batch;
use sluice_host::plugin::{Limits, PluginRuntime, PluginSpec, RuntimeConfig};
use support::{plugin_path, six_column_batch};

/// Each throughput figure measures at least this long.
const MEASURE: Duration = Duration::from_secs(3);
const BATCH: usize = 256;
const MASK_CONFIG: &str = r#"{"columns": {"email": "hash", "name": "redact"}}"#;

/// (language, mask component, JSON sink component).
const LANGUAGES: [(&str, &str, Option<&str>); 4] = [
    ("Rust", "mask", Some("json-sink")),
    ("Python", "py-mask", Some("py-json-sink")),
    ("JavaScript", "js-mask", Some("js-json-sink")),
    ("C", "c-mask", None),
];

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let cache = tempfile::tempdir().expect("a temp dir");
    let config = || RuntimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..RuntimeConfig::default()
    };
    let runtime = PluginRuntime::new(config()).expect("runtime");
    let engine_only = time_each(10, || {
        black_box(PluginRuntime::new(config()).expect("runtime"));
    });

    println!(
        "plugins by language (6-column rows; mask hashes `email`, redacts `name`; batch {BATCH})"
    );
    println!(
        "  {:<26} {:>9} {:>12} {:>12} {:>13}",
        "component", "size", "load (cache)", "instantiate", "events/s"
    );
    for (language, mask, sink) in LANGUAGES {
        for (name, is_sink) in [(Some(mask), false), (sink, true)] {
            let Some(name) = name else { continue };
            let label = format!("{language} {name}");
            if !label.contains(&filter) && !name.contains(&filter) {
                continue;
            }
            let spec = PluginSpec {
                config: if is_sink {
                    "{}".into()
                } else {
                    MASK_CONFIG.into()
                },
                limits: Limits {
                    memory: 256 << 20,
                    deadline: Duration::from_secs(30),
                    ..Limits::default()
                },
                ..PluginSpec::from_path(plugin_path(name))
            };
            let size = std::fs::metadata(&spec.path).expect("built").len();
            // Compile once into the disk cache, then time loads from it
            // with a fresh engine each time, minus the engine's start-up.
            load(&runtime, &spec, is_sink);
            let loads = time_each(5, || {
                let fresh = PluginRuntime::new(config()).expect("runtime");
                load(&fresh, &spec, is_sink);
                assert_eq!(fresh.cache_stats().compiled, 0, "the disk cache was cold");
            });
            let load_time = loads.saturating_sub(engine_only);
            let (instantiate, rate) = if is_sink {
                let plugin = runtime.load_sink(spec.clone()).expect("loads");
                let per = time_each(50, || {
                    black_box(plugin.instantiate().expect("instantiates"));
                });
                let mut sink = plugin.instantiate().expect("instantiates");
                let rate = throughput(|batch| {
                    black_box(sink.encode(batch).expect("encodes"));
                });
                (per, rate)
            } else {
                let plugin = runtime.load_transform(spec.clone()).expect("loads");
                let per = time_each(50, || {
                    black_box(plugin.instantiate().expect("instantiates"));
                });
                let mut transform = plugin.instantiate().expect("instantiates");
                let rate = throughput(|batch| {
                    black_box(transform.transform(batch).expect("transforms"));
                });
                (per, rate)
            };
            println!(
                "  {:<26} {:>9} {:>9.1} ms {:>9.3} ms {:>13.0}",
                label,
                human(size),
                load_time.as_secs_f64() * 1e3,
                instantiate.as_secs_f64() * 1e3,
                rate
            );
        }
    }
}

fn load(runtime: &PluginRuntime, spec: &PluginSpec, is_sink: bool) {
    if is_sink {
        black_box(runtime.load_sink(spec.clone()).expect("loads"));
    } else {
        black_box(runtime.load_transform(spec.clone()).expect("loads"));
    }
}

/// Events per second of `run` over fresh batches of [`BATCH`] events;
/// batches are built before the clock starts.
fn throughput(mut run: impl FnMut(Batch)) -> f64 {
    for i in 0..8 {
        run(six_column_batch(i, BATCH));
    }
    let (mut events, mut elapsed) = (0usize, Duration::ZERO);
    while elapsed < MEASURE {
        let batches: Vec<Batch> = (0..16).map(|i| six_column_batch(i, BATCH)).collect();
        let start = Instant::now();
        for batch in batches {
            run(batch);
        }
        elapsed += start.elapsed();
        events += 16 * BATCH;
    }
    events as f64 / elapsed.as_secs_f64()
}

fn time_each(iterations: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{} KB", bytes.div_ceil(1024))
    }
}
