//! The plugin runtime against real components: the example plugins built by
//! `scripts/build-plugins`, run through wasmtime exactly as the pipeline
//! runs them, and the `sluice plugin` commands run as a user would.

use std::cell::RefCell;
use std::process::Command;
use std::time::Duration;

use crate::support::arbitrary::batch_strategy;
use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sluice_host::lsn::Lsn;
use sluice_host::model::{Batch, Event, LogicalMessage, Relation, Truncate, Value};
use sluice_host::plugin::{Limits, PluginSpec};

// ---------------------------------------------------------------------------
// Property: passthrough returns exactly its input through the Wasm boundary.

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
}

#[test]
fn a_component_that_imports_an_unknown_interface_is_refused_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    // The clock fixture, importing an interface no host provides instead.
    let fixture = repo_root().join("tests/fixtures/wasi-clock/clock.wat");
    let text = std::fs::read_to_string(&fixture).unwrap().replace(
        "wasi:clocks/monotonic-clock@0.2.0",
        "wasi:keyvalue/store@0.2.0",
    );
    let path = dir.path().join("clock.wasm");
    std::fs::write(&path, wat::parse_str(&text).unwrap()).unwrap();
    let expected = "plugin \"clock\" imports interfaces the host does not provide: \
                    wasi:keyvalue/store@0.2.0 (Sluice provides sluice:plugin and WASI 0.2's io, \
                    cli, clocks, random, sockets and filesystem)";

    let runtime = runtime(dir.path());
    let err = runtime
        .load_transform(PluginSpec::from_path(&path))
        .unwrap_err();
    assert_eq!(err.to_string(), expected);

    let (ok, stdout, stderr) = sluice(&["plugin", "inspect", path.to_str().unwrap()], dir.path());
    assert!(!ok, "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr, format!("error: {expected}\n"));
}

/// A WASI import alone is no error (componentize-py and componentize-js
/// components import all of WASI): `inspect` says which grants it can use.
#[test]
fn cli_inspect_lists_the_wasi_grants_a_component_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = repo_root().join("tests/fixtures/wasi-clock/clock.wat");
    let path = dir.path().join("clock.wasm");
    std::fs::write(&path, wat::parse_file(&fixture).unwrap()).unwrap();
    // The fixture's exports have the transform world's names, not its types.
    let (ok, stdout, stderr) = sluice(&["plugin", "inspect", path.to_str().unwrap()], dir.path());
    assert!(!ok, "{stdout}{stderr}");
    assert!(
        stderr.starts_with("error: plugin \"clock\" does not match the transform world"),
        "{stderr}"
    );

    let python = plugin_path("py-mask");
    let (ok, stdout, stderr) = sluice(
        &["plugin", "inspect", python.to_str().unwrap()],
        &shared_xdg_cache(),
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout
            .ends_with("wasi: clocks (refused unless granted), network (refused unless granted)\n"),
        "{stdout}"
    );
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
    crate::support::keep_log("plugins", &output.stderr);
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
             imports: sluice:plugin/host@0.1.0, sluice:plugin/types@0.1.0\n",
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

// ---------------------------------------------------------------------------
// The example plugins, through the runtime.

/// `public.users (id int4 key, email text, name text, ssn text)` and
/// `audit.log (id int4 key, status text)`.
fn two_tables() -> Vec<Relation> {
    let mut id = column("id", 23, "int4");
    id.is_key = true;
    vec![
        relation(
            16384,
            "public",
            "users",
            vec![
                id.clone(),
                column("email", 25, "text"),
                column("name", 25, "text"),
                column("ssn", 25, "text"),
            ],
        ),
        relation(
            16390,
            "audit",
            "log",
            vec![id, column("status", 25, "text")],
        ),
    ]
}

fn user(id: i64, email: &str) -> Vec<Value> {
    vec![
        Value::Int(id),
        Value::Text(email.into()),
        Value::Text("Ada".into()),
        Value::Text("123-45-6789".into()),
    ]
}

fn lsns(batch: &Batch) -> Vec<u64> {
    batch.events.iter().map(|e| e.lsn().0).collect()
}

#[test]
fn filter_drops_the_configured_events() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let input = batch(
        7,
        two_tables(),
        vec![
            insert(0, 1, user(1, "a@example.com")),
            insert(1, 2, vec![Value::Int(1), Value::Text("draft".into())]),
            insert(1, 3, vec![Value::Int(2), Value::Text("done".into())]),
            delete(0, 4, user(1, "a@example.com")),
            Event::Truncate(Truncate {
                relations: vec![0, 1],
                cascade: false,
                restart_identity: false,
                lsn: Lsn(5),
            }),
        ],
    );
    let run = |config: &str| {
        let mut filter = runtime
            .load_transform(spec("filter", config))
            .unwrap()
            .instantiate()
            .unwrap();
        filter.transform(input.clone()).unwrap()
    };

    let output = run(r#"{"drop": {"where": {"column": "status", "equals": "draft"}}}"#);
    assert_eq!(lsns(&output), [1, 3, 4, 5]);

    let output = run(r#"{"keep": {"tables": ["public.users"]}}"#);
    assert_eq!(lsns(&output), [1, 4, 5]);
    // The truncate is narrowed to the table that passes.
    let Event::Truncate(t) = &output.events[2] else {
        panic!("{output:?}")
    };
    assert_eq!(
        t.relations
            .iter()
            .map(|&r| output.relations[r as usize].name.as_str())
            .collect::<Vec<_>>(),
        ["users"]
    );

    let output = run(r#"{"drop": {"operations": ["delete", "truncate"]}}"#);
    assert_eq!(lsns(&output), [1, 2, 3]);
    assert_eq!(
        runtime.counters().get("filter", "events_filtered"),
        1 + 2 + 2
    );
}

#[test]
fn mask_hashes_redacts_and_drops_columns() {
    use sha2::{Digest, Sha256};
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let mut mask = runtime
        .load_transform(spec(
            "mask",
            r#"{"columns": {"email": "hash", "name": "redact", "ssn": "drop"}, "salt": "pepper"}"#,
        ))
        .unwrap()
        .instantiate()
        .unwrap();
    let input = batch(
        7,
        two_tables(),
        vec![
            insert(0, 1, user(1, "ada@example.com")),
            update(
                0,
                2,
                None,
                vec![
                    Value::Int(1),
                    Value::UnchangedToast,
                    Value::Null,
                    Value::Text("000-00-0000".into()),
                ],
            ),
            insert(1, 3, vec![Value::Int(1), Value::Text("ok".into())]),
        ],
    );
    let output = mask.transform(input).unwrap();

    let users = &output.relations[0];
    let columns: Vec<_> = users
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_oid))
        .collect();
    assert_eq!(columns, [("id", 23), ("email", 25), ("name", 25)]);
    assert_eq!(
        output.relations[1],
        two_tables()[1],
        "audit.log has none of the columns"
    );

    let hash = format!("{:x}", Sha256::digest(b"pepperada@example.com"));
    let rows: Vec<_> = output
        .events
        .iter()
        .map(|e| match e {
            Event::Row(r) => r.new.clone().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        rows,
        [
            vec![Value::Int(1), Value::Text(hash), Value::Text("***".into())],
            vec![Value::Int(1), Value::UnchangedToast, Value::Null],
            vec![Value::Int(1), Value::Text("ok".into())],
        ]
    );
    assert_eq!(runtime.counters().get("mask", "values_hashed"), 1);
    assert_eq!(runtime.counters().get("mask", "values_redacted"), 1);
}

/// One insert into `public.users` and one logical message.
fn sink_input() -> Batch {
    let mut input = batch(
        9,
        two_tables(),
        vec![
            insert(0, 0x100, user(1, "ada@example.com")),
            Event::Message(LogicalMessage {
                transactional: true,
                prefix: "app".into(),
                content: b"{}".to_vec(),
                lsn: Lsn(0x150),
            }),
        ],
    );
    input.commit_lsn = Lsn(0x200);
    input.commit_time = 86_400_000_000;
    input
}

#[test]
fn json_sink_writes_one_envelope_per_event() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let mut sink = runtime
        .load_sink(spec("json-sink", r#"{"subject-prefix": "db1"}"#))
        .unwrap()
        .instantiate()
        .unwrap();
    let messages = sink.encode(sink_input()).unwrap();
    let shown: Vec<_> = messages
        .iter()
        .map(|m| (m.subject.as_str(), std::str::from_utf8(&m.payload).unwrap()))
        .collect();
    assert_eq!(
        shown,
        [
            (
                "db1.public.users",
                r#"{"op":"c","source":{"schema":"public","table":"users","lsn":"0/100","commit_lsn":"0/200","xid":9,"commit_time":"1970-01-02T00:00:00Z","commit_time_us":86400000000},"before":null,"after":{"id":1,"email":"ada@example.com","name":"Ada","ssn":"123-45-6789"}}"#
            ),
            (
                "db1.messages",
                r#"{"op":"m","source":{"lsn":"0/150","commit_lsn":"0/200","xid":9,"commit_time":"1970-01-02T00:00:00Z","commit_time_us":86400000000},"message":{"prefix":"app","transactional":true,"content":"e30="}}"#
            ),
        ]
    );
}

#[test]
fn msgpack_sink_decodes_to_the_json_sinks_envelope() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let mut json = runtime
        .load_sink(spec("json-sink", "{}"))
        .unwrap()
        .instantiate()
        .unwrap();
    let mut msgpack = runtime
        .load_sink(spec("msgpack-sink", "{}"))
        .unwrap()
        .instantiate()
        .unwrap();
    // Only the row: a message's content is base64 text in JSON but binary
    // in MessagePack, by design.
    let mut input = sink_input();
    input.events.truncate(1);
    let from_json = json.encode(input.clone()).unwrap();
    let from_msgpack = msgpack.encode(input).unwrap();
    assert_eq!(from_json.len(), 1);
    assert_eq!(from_msgpack.len(), 1);
    assert_eq!(from_msgpack[0].subject, "cdc.public.users");
    assert_eq!(from_msgpack[0].subject, from_json[0].subject);
    let decoded: serde_json::Value = rmp_serde::from_slice(&from_msgpack[0].payload).unwrap();
    let expected: serde_json::Value = serde_json::from_slice(&from_json[0].payload).unwrap();
    assert_eq!(decoded, expected);
}

#[test]
fn cli_runs_a_chain_into_a_sink() {
    let cache = tempfile::tempdir().unwrap();
    let (filter, mask, sink) = (
        plugin_path("filter"),
        plugin_path("mask"),
        plugin_path("json-sink"),
    );
    let (ok, stdout, stderr) = sluice(
        &[
            "plugin",
            "run",
            "--transform",
            filter.to_str().unwrap(),
            "--transform",
            mask.to_str().unwrap(),
            "--sink",
            sink.to_str().unwrap(),
            "--config",
            r#"filter={"keep": {"tables": ["public.customers"], "operations": ["insert", "delete"]}}"#,
            "--config",
            r#"mask={"columns": {"email": "redact", "name": "drop"}}"#,
            "--input",
            "examples/events.json",
        ],
        cache.path(),
    );
    assert!(ok, "{stderr}");
    // The sample's customers insert (email redacted, name dropped) and
    // delete; the update, the other tables and the messages are filtered.
    assert_eq!(
        stdout,
        concat!(
            r#"{"subject":"cdc.public.customers","headers":[],"payload":{"op":"c","source":{"schema":"public","table":"customers","lsn":"0/16B3600","commit_lsn":"0/16B3748","xid":750,"commit_time":"2023-11-14T22:13:20Z","commit_time_us":1700000000000000},"before":null,"after":{"id":1,"email":"***","balance":"1234.50","active":true,"created":"2023-11-14T22:13:10Z"}},"event":0}"#,
            "\n",
            r#"{"subject":"cdc.public.customers","headers":[],"payload":{"op":"d","source":{"schema":"public","table":"customers","lsn":"0/16B3900","commit_lsn":"0/16B39A0","xid":751,"commit_time":"2023-11-14T22:14:20Z","commit_time_us":1700000060000000},"before":{"id":-9223372036854775808,"email":null,"balance":null,"active":null,"created":null},"after":null},"event":0}"#,
            "\n",
        )
    );
}

#[test]
fn cli_names_the_plugin_at_fault() {
    let cache = tempfile::tempdir().unwrap();
    let sink = plugin_path("json-sink");
    let (ok, _, stderr) = sluice(
        &[
            "plugin",
            "run",
            "--transform",
            sink.to_str().unwrap(),
            "--input",
            "examples/events.json",
        ],
        cache.path(),
    );
    assert!(!ok);
    assert_eq!(
        stderr,
        "error: plugin \"json-sink\" is a sink component, not a transform\n"
    );

    let passthrough = plugin_path("passthrough");
    let (ok, _, stderr) = sluice(
        &[
            "plugin",
            "run",
            "--transform",
            passthrough.to_str().unwrap(),
            "--config",
            "mask={}",
            "--input",
            "-",
        ],
        cache.path(),
    );
    assert!(!ok);
    assert_eq!(
        stderr,
        "error: --config mask: no plugin is named \"mask\" (a plugin is named after its file stem; the plugins are: passthrough)\n"
    );
}

// ---------------------------------------------------------------------------
// Contained failures (the `misbehave` fixture). Each asserts the exact error
// text, and that the same handle serves the next call with a new instance.

fn misbehave(name: &str, config: &str, limits: Limits) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        ..spec_with("misbehave", config, limits)
    }
}

/// Where the fixture's `panic!` whose message starts with `message` is, as
/// `file:line:column` (the form Rust's panic messages use), read from the
/// fixture's source so that the exact error texts below survive edits.
fn misbehave_panic_site(message: &str) -> String {
    let file = "tests/fixtures/misbehave/src/lib.rs";
    let source = std::fs::read_to_string(repo_root().join(file)).unwrap();
    let needle = format!("panic!(\"{message}");
    let (line, text) = source
        .lines()
        .enumerate()
        .find(|(_, text)| text.contains(&needle))
        .unwrap_or_else(|| panic!("no `{needle}` in {file}"));
    let column = text.find(&needle).unwrap() + 1;
    format!("{file}:{}:{column}", line + 1)
}

#[test]
fn a_panic_is_reported_with_its_message_and_location() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let mut transform = runtime
        .load_transform(misbehave("mask", r#"{"on": "trap"}"#, Limits::default()))
        .unwrap()
        .instantiate()
        .unwrap();
    let err = transform.transform(six_column_batch(1, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "plugin \"mask\" trapped: panicked at {}: misbehave: told to trap",
            misbehave_panic_site("misbehave: told to trap\"")
        )
    );
}

#[test]
fn a_trap_is_contained_and_the_instance_replaced() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let config = r#"{"on": "trap-when", "column": "id", "equals": 3}"#;
    let mut transform = runtime
        .load_transform(misbehave("mask", config, Limits::default()))
        .unwrap()
        .instantiate()
        .unwrap();
    let good = six_column_batch(1, 2); // ids 0 and 1
    let bad = six_column_batch(2, 5); // ids 0 to 4

    assert_eq!(transform.transform(good.clone()).unwrap(), good);
    let err = transform.transform(bad.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "plugin \"mask\" trapped: panicked at {}: misbehave: told to trap on event 3",
            misbehave_panic_site("misbehave: told to trap on event")
        )
    );
    // The batch comes back for the error policy.
    assert_eq!(*err.input, bad);
    assert_eq!(transform.transform(good.clone()).unwrap(), good);
    assert_eq!(transform.instances_started(), 2);
}

#[test]
fn an_endless_loop_hits_the_deadline() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let limits = Limits {
        deadline: Duration::from_millis(100),
        ..Limits::default()
    };
    let mut transform = runtime
        .load_transform(misbehave("slow", r#"{"on": "loop"}"#, limits))
        .unwrap()
        .instantiate()
        .unwrap();
    for attempt in 1..=2 {
        let err = transform.transform(six_column_batch(1, 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin \"slow\" exceeded its 100 ms deadline"
        );
        // Each attempt ran on a fresh instance: the looping one was dropped.
        assert_eq!(transform.instances_started(), attempt);
    }
    // The host and its other plugins carry on.
    let mut passthrough = runtime
        .load_transform(spec("passthrough", "{}"))
        .unwrap()
        .instantiate()
        .unwrap();
    let input = six_column_batch(1, 3);
    assert_eq!(passthrough.transform(input.clone()).unwrap(), input);
}

#[test]
fn the_call_after_a_deadline_runs_on_a_fresh_instance() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let limits = Limits {
        deadline: Duration::from_millis(100),
        ..Limits::default()
    };
    let config = r#"{"on": "loop-when", "column": "id", "equals": 3}"#;
    let mut transform = runtime
        .load_transform(misbehave("slow", config, limits))
        .unwrap()
        .instantiate()
        .unwrap();
    let good = six_column_batch(1, 2); // ids 0 and 1
    let bad = six_column_batch(2, 5); // ids 0 to 4

    assert_eq!(transform.transform(good.clone()).unwrap(), good);
    let err = transform.transform(bad.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"slow\" exceeded its 100 ms deadline"
    );
    assert_eq!(*err.input, bad);
    assert_eq!(transform.transform(good.clone()).unwrap(), good);
    assert_eq!(transform.instances_started(), 2);
}

#[test]
fn the_call_after_the_memory_cap_runs_on_a_fresh_instance() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let limits = Limits {
        memory: 16 << 20,
        ..Limits::default()
    };
    let config = r#"{"on": "alloc-when", "column": "id", "equals": 3}"#;
    let mut transform = runtime
        .load_transform(misbehave("hog", config, limits))
        .unwrap()
        .instantiate()
        .unwrap();
    let good = six_column_batch(1, 2);
    let bad = six_column_batch(2, 5);

    assert_eq!(transform.transform(good.clone()).unwrap(), good);
    let err = transform.transform(bad.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"hog\" exceeded its memory limit of 16 MiB"
    );
    assert_eq!(*err.input, bad);
    // The new instance starts with fresh memory, well under the cap.
    assert_eq!(transform.transform(good.clone()).unwrap(), good);
    assert_eq!(transform.instances_started(), 2);
}

#[test]
fn allocating_past_the_cap_is_contained() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let limits = Limits {
        memory: 16 << 20,
        ..Limits::default()
    };
    let mut transform = runtime
        .load_transform(misbehave("hog", r#"{"on": "alloc"}"#, limits))
        .unwrap()
        .instantiate()
        .unwrap();
    for attempt in 1..=2 {
        let err = transform.transform(six_column_batch(1, 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin \"hog\" exceeded its memory limit of 16 MiB"
        );
        assert_eq!(transform.instances_started(), attempt);
    }
}

#[test]
fn init_and_input_errors_are_the_plugins_own() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let err = runtime
        .load_transform(misbehave(
            "misbehave",
            r#"{"init": "fail"}"#,
            Limits::default(),
        ))
        .unwrap()
        .instantiate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"misbehave\" rejected its configuration: misbehave: told to fail init"
    );

    let err = runtime
        .load_transform(misbehave(
            "misbehave",
            r#"{"on": "explode"}"#,
            Limits::default(),
        ))
        .unwrap()
        .instantiate()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("plugin \"misbehave\" rejected its configuration: "),
        "{err}"
    );

    let config = r#"{"fail-on": {"column": "id", "equals": 3}}"#;
    let mut transform = runtime
        .load_transform(misbehave("picky", config, Limits::default()))
        .unwrap()
        .instantiate()
        .unwrap();
    let err = transform.transform(six_column_batch(1, 5)).unwrap_err();
    assert_eq!(err.error.event_index(), Some(3));
    assert!(
        err.to_string()
            .starts_with("plugin \"picky\" could not process event 3: "),
        "{err}"
    );
    // A plugin error is not a crash: the instance stays.
    let good = six_column_batch(2, 2);
    assert_eq!(transform.transform(good.clone()).unwrap(), good);
    assert_eq!(transform.instances_started(), 1);
}

#[test]
fn a_component_of_the_other_world_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let err = runtime.load_transform(spec("json-sink", "{}")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"json-sink\" is a sink component, not a transform"
    );
    let err = runtime.load_sink(spec("passthrough", "{}")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"passthrough\" is a transform component, not a sink"
    );
}

#[test]
fn logs_and_counters_reach_the_host() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(cache.path());
    let mut transform = runtime
        .load_transform(misbehave("chatty", r#"{"log": true}"#, Limits::default()))
        .unwrap()
        .instantiate()
        .unwrap();
    for xid in 0..3 {
        transform.transform(six_column_batch(xid, 2)).unwrap();
    }
    assert_eq!(runtime.counters().get("chatty", "batches"), 3);
}

#[test]
fn fuel_bounds_work_not_time() {
    use sluice_host::plugin::{EngineConfig, PluginRuntime, RuntimeConfig};
    let cache = tempfile::tempdir().unwrap();
    let metered = PluginRuntime::new(RuntimeConfig {
        engine: EngineConfig {
            fuel: true,
            ..EngineConfig::default()
        },
        cache_dir: Some(cache.path().to_owned()),
    })
    .unwrap();
    let limits = Limits {
        fuel: Some(10_000_000),
        ..Limits::default()
    };
    let mut transform = metered
        .load_transform(misbehave("spinner", r#"{"on": "loop"}"#, limits))
        .unwrap()
        .instantiate()
        .unwrap();
    let err = transform.transform(six_column_batch(1, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"spinner\" ran out of fuel (10000000 units per call)"
    );

    // Fuel limits need an engine that meters fuel.
    let unmetered = runtime(cache.path());
    let err = unmetered
        .load_transform(misbehave("spinner", "{}", limits))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"spinner\" asks for a fuel limit, but fuel metering is disabled for this host"
    );
}
