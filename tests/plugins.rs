//! The plugin runtime against real components: the example plugins built by
//! `scripts/build-plugins`, run through wasmtime exactly as the pipeline
//! runs them, and the `sluice plugin` commands run as a user would.

mod support;

use std::cell::RefCell;
use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sluice_host::lsn::Lsn;
use sluice_host::model::{
    Batch, Event, Interval, LogicalMessage, Operation, Relation, ReplicaIdentity, RowChange,
    Truncate, Value,
};
use sluice_host::plugin::{Limits, PluginSpec};
use support::*;

// ---------------------------------------------------------------------------
// Property: passthrough returns exactly its input through the Wasm boundary.

fn value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        8 => ".{0,40}",
        1 => Just(String::new()),
        1 => (any::<char>(), 1usize..4).prop_map(|(c, n)| c.to_string().repeat((1 << 20) / c.len_utf8() * n / 3)),
    ];
    prop_oneof![
        Just(Value::Null),
        Just(Value::UnchangedToast),
        any::<bool>().prop_map(Value::Boolean),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0), any::<i64>()].prop_map(Value::Int),
        prop_oneof![
            Just(f64::NAN),
            Just(-f64::NAN),
            Just(f64::from_bits(0x7ff0_0000_dead_beef)),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(f64::MIN_POSITIVE),
            any::<f64>()
        ]
        .prop_map(Value::Float),
        "-?[0-9]{1,30}(\\.[0-9]{1,20})?|NaN|Infinity|-Infinity".prop_map(Value::Numeric),
        text.clone().prop_map(Value::Text),
        prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..64).prop_map(Value::Bytes),
        text.clone().prop_map(Value::Json),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}".prop_map(Value::Uuid),
        prop_oneof![Just(i32::MIN), Just(i32::MAX), any::<i32>()].prop_map(Value::Date),
        any::<i64>().prop_map(Value::Time),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()].prop_map(Value::Timestamp),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()].prop_map(Value::Timestamptz),
        (any::<i32>(), any::<i32>(), any::<i64>()).prop_map(|(months, days, microseconds)| {
            Value::Interval(Interval {
                months,
                days,
                microseconds,
            })
        }),
        text.prop_map(Value::Other),
    ]
}

fn relation_strategy() -> impl Strategy<Value = Relation> {
    let identity = prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ];
    let column = (
        "[a-zA-Z_äö]{1,12}",
        any::<u32>(),
        "[a-z0-9\\[\\]. ]{1,16}",
        any::<i32>(),
        any::<bool>(),
    )
        .prop_map(|(name, type_oid, type_name, type_modifier, is_key)| {
            sluice_host::model::Column {
                name,
                type_oid,
                type_name,
                type_modifier,
                is_key,
            }
        });
    (
        any::<u32>(),
        ".{0,10}",
        ".{0,10}",
        identity,
        prop::collection::vec(column, 0..6),
    )
        .prop_map(|(oid, schema, name, replica_identity, columns)| Relation {
            oid,
            schema,
            name,
            replica_identity,
            columns,
        })
}

fn event_for(relations: Vec<Relation>) -> impl Strategy<Value = Event> {
    let count = relations.len() as u32;
    let widths: Vec<usize> = relations.iter().map(|r| r.columns.len()).collect();
    let row = (0..count, any::<u64>(), 0..4u8).prop_flat_map(move |(relation, lsn, op)| {
        let width = widths[relation as usize];
        let values = move || prop::collection::vec(value(), width..=width);
        (prop::option::of(values()), values()).prop_map(move |(old, new)| {
            let (op, old, new) = match op {
                0 => (Operation::Insert, None, Some(new)),
                1 => (Operation::Update, old, Some(new)),
                2 => (Operation::Delete, Some(new), None),
                _ => (Operation::Read, None, Some(new)),
            };
            Event::Row(RowChange {
                op,
                relation,
                lsn: Lsn(lsn),
                old,
                new,
            })
        })
    });
    let truncate = (
        prop::collection::vec(0..count, 0..3),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(relations, cascade, restart_identity, lsn)| {
            Event::Truncate(Truncate {
                relations,
                cascade,
                restart_identity,
                lsn: Lsn(lsn),
            })
        });
    let message = (
        any::<bool>(),
        ".{0,20}",
        prop::collection::vec(any::<u8>(), 0..100),
        any::<u64>(),
    )
        .prop_map(|(transactional, prefix, content, lsn)| {
            Event::Message(LogicalMessage {
                transactional,
                prefix,
                content,
                lsn: Lsn(lsn),
            })
        });
    prop_oneof![6 => row, 1 => truncate, 1 => message]
}

fn batch_strategy() -> impl Strategy<Value = Batch> {
    prop::collection::vec(relation_strategy(), 1..4).prop_flat_map(|relations| {
        let events = prop::collection::vec(event_for(relations.clone()), 0..12);
        (
            any::<u32>(),
            any::<u64>(),
            any::<i64>(),
            any::<bool>(),
            any::<bool>(),
            events,
        )
            .prop_map(
                move |(xid, commit_lsn, commit_time, first, last, events)| Batch {
                    xid,
                    commit_lsn: Lsn(commit_lsn),
                    commit_time,
                    first,
                    last,
                    relations: relations.clone(),
                    events,
                },
            )
    })
}

#[test]
fn passthrough_returns_every_value_unchanged() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let plugin = runtime.load_transform(spec("passthrough", "{}")).unwrap();
    let transform = RefCell::new(plugin.instantiate().unwrap());
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&batch_strategy(), |batch| {
            let output = transform
                .borrow_mut()
                .transform(batch.clone())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(floats_as_bits(output), floats_as_bits(batch));
            Ok(())
        })
        .unwrap();
    // No call failed, so the first instance served every case.
    assert_eq!(transform.borrow().instances_started(), 1);
}

// ---------------------------------------------------------------------------
// Loading: the disk cache, and files that are not components.

#[test]
fn a_warm_disk_cache_does_not_compile_and_a_corrupt_entry_is_recompiled() {
    use sluice_host::plugin::CacheStats;
    let cache = tempfile::tempdir().unwrap();
    let input = six_column_batch(1, 3);

    let cold = runtime(cache.path());
    cold.load_transform(spec("passthrough", "{}")).unwrap();
    cold.load_transform(spec("passthrough", "{}")).unwrap();
    assert_eq!(
        cold.cache_stats(),
        CacheStats {
            compiled: 1,
            memory_hits: 1,
            ..CacheStats::default()
        }
    );
    drop(cold);

    // A restart: a new runtime (new engine) over the same folder.
    let warm = runtime(cache.path());
    let mut transform = warm
        .load_transform(spec("passthrough", "{}"))
        .unwrap()
        .instantiate()
        .unwrap();
    assert_eq!(
        warm.cache_stats(),
        CacheStats {
            disk_hits: 1,
            ..CacheStats::default()
        }
    );
    assert_eq!(transform.transform(input.clone()).unwrap(), input);
    drop((transform, warm));

    // Flip bytes in every entry: the runtime notices, recompiles, and works.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let repaired = runtime(cache.path());
    let mut transform = repaired
        .load_transform(spec("passthrough", "{}"))
        .unwrap()
        .instantiate()
        .unwrap();
    assert_eq!(
        repaired.cache_stats(),
        CacheStats {
            compiled: 1,
            rejected: 1,
            ..CacheStats::default()
        }
    );
    assert_eq!(transform.transform(input.clone()).unwrap(), input);

    // And the rewritten entry is good again.
    let again = runtime(cache.path());
    again.load_transform(spec("passthrough", "{}")).unwrap();
    assert_eq!(
        again.cache_stats(),
        CacheStats {
            disk_hits: 1,
            ..CacheStats::default()
        }
    );
}

#[test]
fn files_that_are_not_components_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());

    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "hello, I am text").unwrap();
    let err = runtime
        .load_transform(PluginSpec::from_path(&text))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not a WebAssembly file (it does not start with the `\\0asm` magic bytes)",
            text.display()
        )
    );

    // The smallest valid core module: magic and version 1, no sections.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = runtime.load_sink(PluginSpec::from_path(&core)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is a core WebAssembly module, not a component: build it as a component \
             (e.g. wit-bindgen with wasm-component-ld, or `wasm-tools component new`)",
            core.display()
        )
    );

    let missing = dir.path().join("missing.wasm");
    let err = runtime
        .load_transform(PluginSpec::from_path(&missing))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot read plugin file {}", missing.display())
    );
    assert!(err.is_transient());
}

// ---------------------------------------------------------------------------
// The command line.

fn sluice(args: &[&str], cache: &std::path::Path) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env("SLUICE_LOG", "warn")
        .current_dir(repo_root())
        .output()
        .expect("sluice runs");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn cli_inspects_a_transform() {
    let cache = tempfile::tempdir().unwrap();
    let path = plugin_path("passthrough");
    let (ok, stdout, stderr) = sluice(&["plugin", "inspect", path.to_str().unwrap()], cache.path());
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "file: {}\nworld: transform (sluice:plugin/transform@0.1.0)\nexports: init, transform\n\
             imports: sluice:plugin/types@0.1.0\n",
            path.display()
        )
    );
}

#[test]
fn cli_inspect_explains_what_is_wrong() {
    let cache = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = sluice(&["plugin", "inspect", "examples/events.json"], cache.path());
    assert!(!ok);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "error: examples/events.json is not a WebAssembly file (it does not start with the `\\0asm` magic bytes)\n"
    );
}

#[test]
fn cli_runs_passthrough_over_the_sample() {
    let cache = tempfile::tempdir().unwrap();
    let path = plugin_path("passthrough");
    let (ok, stdout, stderr) = sluice(
        &[
            "plugin",
            "run",
            "--transform",
            path.to_str().unwrap(),
            "--input",
            "examples/events.json",
        ],
        cache.path(),
    );
    assert!(ok, "{stderr}");
    let sample: Vec<Batch> = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("examples/events.json")).unwrap(),
    )
    .unwrap();
    let expected: String = sample
        .iter()
        .map(|b| serde_json::to_string(b).unwrap() + "\n")
        .collect();
    assert_eq!(stdout, expected);
}
