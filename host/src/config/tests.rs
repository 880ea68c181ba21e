//! The manifest's error texts, one bad manifest at a time, and a good one.

use std::path::Path;

use super::*;

const GOOD: &str = r#"
[source]
url = "postgres://sluice:${PGPASSWORD}@localhost:5432/app"
publication = "sluice_pub"
slot = "sluice_orders"

[nats]
url = "nats://localhost:4222"
stream = "CDC"
subjects = ["cdc.>"]

[[transform]]
name = "mask-pii"
path = "mask.wasm"
config = { columns = { email = "hash" } }

[sink]
name = "json"
path = "json.wasm"
config = { subject-prefix = "cdc" }
"#;

fn dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["mask.wasm", "json.wasm"] {
        std::fs::write(dir.path().join(f), b"").unwrap();
    }
    dir
}

fn env(name: &str) -> Option<String> {
    (name == "PGPASSWORD").then(|| "hunter2".to_owned())
}

fn load(dir: &Path, text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, &dir.join("sluice.toml"), &env)
}

#[test]
fn good_manifest_loads_with_defaults() {
    let d = dir();
    let m = load(d.path(), GOOD).unwrap();
    assert_eq!(m.pipeline.as_str(), "sluice_orders");
    assert_eq!(m.source.conninfo.user, "sluice");
    assert_eq!(m.source.conninfo.dbname, "app");
    assert!(
        !format!("{m:?}").contains("hunter2"),
        "secrets are redacted in Debug"
    );
    assert_eq!(m.position.store, OffsetStoreSpec::Memory);
    assert_eq!(m.position.flush, FlushMode::Connector);
    assert_eq!(m.batch.max_events, 256);
    assert_eq!(m.errors, ErrorPolicy::Stop);
    assert_eq!(m.source.on_ghost_changes, GhostChanges::Refuse);
    assert!(m.nats.metadata_headers);
    let without = edit(
        "url = \"nats://localhost:4222\"",
        "url = \"nats://localhost:4222\"\nmetadata-headers = false",
    );
    assert!(!load(d.path(), &without).unwrap().nats.metadata_headers);
    assert_eq!(m.transforms[0].path, d.path().join("mask.wasm"));
    assert_eq!(m.transforms[0].config, r#"{"columns":{"email":"hash"}}"#);
    assert_eq!(m.sink.config, r#"{"subject-prefix":"cdc"}"#);
    assert_eq!(m.transforms[0].limits, Limits::default());
    assert_eq!(m.transforms[0].wasi, crate::plugin::WasiGrants::NONE);
    let granted = load(
        d.path(),
        &GOOD.replacen(
            "path = \"json.wasm\"",
            "path = \"json.wasm\"\nwasi = [\"random\", \"clocks\"]",
            1,
        ),
    )
    .unwrap();
    use crate::plugin::Capability;
    assert_eq!(
        granted.sink.wasi.iter().collect::<Vec<_>>(),
        [Capability::Clocks, Capability::Random]
    );
}

/// Replaces `from` (which must occur) with `to` in the good manifest.
fn edit(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

#[test]
fn each_mistake_is_reported_with_its_path() {
    let cases: Vec<(String, &str)> = vec![
        (
            edit(
                "url = \"nats://localhost:4222\"",
                "url = \"nats://localhost:4222\"\nmetadata-headers = \"no\"",
            ),
            "nats.metadata-headers: invalid type: string \"no\", expected a boolean",
        ),
        (
            edit("slot = \"sluice_orders\"", "slot = \"Orders\""),
            "source.slot: `Orders` is not a valid replication slot name: use 1 to 63 lower-case letters, digits and underscores",
        ),
        (
            edit("slot = \"sluice_orders\"\n", ""),
            "source.slot: is required but missing",
        ),
        (
            edit(
                "publication = \"sluice_pub\"",
                "publicaton = \"sluice_pub\"",
            ),
            "source.publicaton: unknown key; did you mean `publication`?",
        ),
        (
            edit("${PGPASSWORD}", "${PGPASS}"),
            "source.url: environment variable `PGPASS` is not set",
        ),
        (
            edit("postgres://sluice", "mysql://sluice"),
            "source.url: invalid connection URL: the scheme must be `postgres://` or `postgresql://`",
        ),
        (
            edit("subjects = [\"cdc.>\"]", "subjects = []"),
            "nats.subjects: must list at least one subject the pipeline may publish to",
        ),
        (
            edit("subjects = [\"cdc.>\"]", "subjects = [\"cdc.>.x\"]"),
            "nats.subjects: `cdc.>.x` is not a valid NATS subject pattern: `>` may only be the last token",
        ),
        (
            edit("subjects = [\"cdc.>\"]", "subjects = [\"cdc..x\"]"),
            "nats.subjects: `cdc..x` is not a valid NATS subject pattern: it has an empty token (a leading, trailing or doubled `.`)",
        ),
        (
            edit("stream = \"CDC\"", "stream = \"C.D\""),
            "nats.stream: `C.D` is not a valid stream name: use only letters, digits, `-` and `_`",
        ),
        (
            edit(
                "path = \"mask.wasm\"",
                "path = \"mask.wasm\"\nwasi = [\"clocks\", \"files\"]",
            ),
            "transform[0].wasi: `files` is not a WASI capability: use \"clocks\", \"random\", \"environment\" or \"network\" (Sluice never grants a file system to plugins: no directory is preopened)",
        ),
        (
            edit(
                "path = \"json.wasm\"",
                "path = \"json.wasm\"\nwasi = \"clocks\"",
            ),
            "sink.wasi: invalid type: string \"clocks\", expected a sequence",
        ),
        (
            edit("path = \"mask.wasm\"", "path = \"nope.wasm\""),
            "transform[0].path: plugin file",
        ),
        (
            edit("name = \"json\"", "name = \"mask-pii\""),
            "sink.name: `mask-pii` is used by a transform: names must be unique",
        ),
        (
            edit(
                "[sink]\nname = \"json\"\npath = \"json.wasm\"\nconfig = { subject-prefix = \"cdc\" }\n",
                "",
            ),
            "sink: the [sink] section is required but missing",
        ),
        (
            format!("{GOOD}\n[errors]\npolicy = \"dead-letter\"\n"),
            "errors.dead-letter-subject: is required when errors.policy = \"dead-letter\"",
        ),
        (
            format!(
                "{GOOD}\n[errors]\npolicy = \"dead-letter\"\ndead-letter-subject = \"dlq.orders\"\n"
            ),
            "errors.dead-letter-subject: `dlq.orders` is not among nats.subjects (cdc.>): the pipeline could not publish there",
        ),
        (
            edit(
                "slot = \"sluice_orders\"",
                "slot = \"sluice_orders\"\non-ghost-changes = \"mark\"",
            ),
            "source.ghost-subject: is required when source.on-ghost-changes = \"mark\"",
        ),
        (
            edit(
                "slot = \"sluice_orders\"",
                "slot = \"sluice_orders\"\non-ghost-changes = \"accept\"",
            ),
            "source.on-ghost-changes: `accept` is not a way to handle ghost changes: use \"refuse\" or \"mark\"",
        ),
        (
            edit(
                "slot = \"sluice_orders\"",
                "slot = \"sluice_orders\"\non-ghost-changes = \"mark\"\nghost-subject = \"ghosts.orders\"",
            ),
            "source.ghost-subject: `ghosts.orders` is not among nats.subjects (cdc.>): the pipeline could not publish there",
        ),
        (
            edit(
                "slot = \"sluice_orders\"",
                "slot = \"sluice_orders\"\nghost-subject = \"cdc.ghosts\"",
            ),
            "source.ghost-subject: only applies when source.on-ghost-changes = \"mark\"",
        ),
        (
            format!("{GOOD}\n[errors]\npolicy = \"retry\"\n"),
            "errors.policy: `retry` is not an error policy: use \"stop\", \"dead-letter\" or \"skip\"",
        ),
        (
            format!("{GOOD}\n[position]\nstore = \"file\"\n"),
            "position.store-path: is required when position.store = \"file\"",
        ),
        (
            format!("{GOOD}\n[position]\nmismatch = \"trust-me\"\n"),
            "position.mismatch: unknown variant `trust-me`, expected one of `no-validation`, `trust-offset`, `trust-slot`, `trust-greater-lsn`",
        ),
        (
            format!("{GOOD}\n[position]\nstatus-interval = \"soon\"\n"),
            "position.status-interval: `soon` is not a duration",
        ),
        (
            format!("{GOOD}\n[limits]\nmemory = \"64 lots\"\n"),
            "limits.memory: `64 lots` is not a size: write a whole number with B, KiB, MiB, GiB, KB, MB or GB",
        ),
        (
            format!("{GOOD}\n[metrics]\naddress = \"localhost\"\n"),
            "metrics.address: `localhost` is not a socket address: write e.g. \"127.0.0.1:9187\"",
        ),
        (
            edit(
                "url = \"nats://localhost:4222\"",
                "url = \"nats://localhost:4222\"\ntoken = \"t\"\nuser = \"u\"\npassword = \"p\"",
            ),
            "nats.user: choose one way to authenticate: user and password, token, nkey-seed or credentials",
        ),
        (
            format!(
                "{GOOD}\n[position]\nflush = \"manual\"\n[position.heartbeat]\ninterval = \"10s\"\n"
            ),
            "position.heartbeat: has no effect with position.flush = \"manual\": the host never advances the slot",
        ),
        (
            edit(
                "config = { columns = { email = \"hash\" } }",
                "config = \"columns\"",
            ),
            "transform[0].config: must be a table, found string",
        ),
        (
            format!("{GOOD}\n[sorce]\nurl = \"x\"\n"),
            "sorce: unknown key; did you mean `source`?",
        ),
    ];
    assert!(cases.len() >= 15);
    for (text, expected) in cases {
        let d = dir();
        let err = load(d.path(), &text).expect_err(expected);
        let all = err.to_string();
        assert!(
            err.problems()
                .iter()
                .any(|p| p.to_string().starts_with(expected)),
            "expected a problem starting with\n  {expected}\ngot\n{all}"
        );
    }
}

#[test]
fn all_mistakes_are_reported_at_once_without_secrets() {
    let d = dir();
    let text = edit("slot = \"sluice_orders\"", "slot = \"Bad Slot\"")
        .replace("stream = \"CDC\"", "stream = \"\"")
        .replace(
            "postgres://sluice:${PGPASSWORD}",
            "http://sluice:${PGPASSWORD}",
        );
    let err = load(d.path(), &text).unwrap_err();
    assert_eq!(err.problems().len(), 3, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "manifest {} has 3 problems:",
            d.path().join("sluice.toml").display()
        )),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn syntax_errors_name_the_file() {
    let d = dir();
    let err = load(d.path(), "[source\n").unwrap_err();
    assert!(matches!(err, ManifestError::Syntax { .. }));
    assert!(
        err.to_string().contains("sluice.toml is not valid TOML"),
        "{err}"
    );
}

/// Values that `sluice check` once accepted and `sluice run` then crashed
/// on or silently ignored (issue 16): each is refused with its field and
/// its range.
#[test]
fn values_that_crashed_run_are_refused_with_their_range() {
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{GOOD}\n[position.heartbeat]\ninterval = \"0ms\"\n"),
            "position.heartbeat.interval: `0ms` is out of range: use 100ms to 1day",
        ),
        (
            format!("{GOOD}\n[position]\nstatus-interval = \"500000000000y\"\n"),
            "position.status-interval: `500000000000y` is out of range: use 10ms to 1h",
        ),
        (
            format!("{GOOD}\n[position]\nstatus-interval = \"0s\"\n"),
            "position.status-interval: `0s` is out of range: use 10ms to 1h",
        ),
        (
            format!("{GOOD}\n[log]\nlevel = \"loud\"\n"),
            "log.level: `loud` is not a log level: use trace, debug, info, warn, error or off, or directives like \"info,sluice_host=debug\"",
        ),
        (
            edit(
                "url = \"nats://localhost:4222\"",
                "url = \"nats://localhost:notaport\"",
            ),
            "nats.url[0]: is not a valid URL: NATS server URL is invalid: invalid port number",
        ),
        (
            edit(
                "url = \"nats://localhost:4222\"",
                "url = \"nats://localhost:4222\"\nnkey-seed = \"SUAMALFORMED\"",
            ),
            "nats.nkey-seed: is not a valid NKey seed: write the user seed (`SU…`, 58 characters) that `nsc` or `nk -gen user` printed",
        ),
        (
            format!("{GOOD}\n[pipeline]\nshutdown-timeout = \"0s\"\n"),
            "pipeline.shutdown-timeout: `0s` is out of range: use 100ms to 1h",
        ),
        (
            edit(
                "url = \"nats://localhost:4222\"",
                "url = \"nats://localhost:4222\"\nduplicate-window = \"0s\"",
            ),
            "nats.duplicate-window: `0s` is out of range: use 1s to 7days",
        ),
        (
            edit(
                "url = \"nats://localhost:4222\"",
                "url = \"nats://localhost:4222\"\nmax-in-flight-bytes = 0",
            ),
            "nats.max-in-flight-bytes: `0` is out of range: use 1KiB to 1GiB",
        ),
        (
            format!("{GOOD}\n[batch]\nmax-events = 0\n"),
            "batch.max-events: 0 is out of range: use 1 to 65536",
        ),
        (
            format!("{GOOD}\n[limits]\ndeadline = \"500000000000y\"\n"),
            "limits.deadline: `500000000000y` is out of range: use 1ms to 1h",
        ),
    ];
    for (text, expected) in cases {
        let d = dir();
        let err = load(d.path(), &text).expect_err(expected);
        let problems: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
        assert_eq!(problems, [expected], "{text}");
    }
}

/// One TOML line that sets the field of `range` to `value`, in the
/// section it belongs to.
fn manifest_with(field: &str, value: &str) -> String {
    let (section, key) = field.rsplit_once('.').unwrap();
    match section {
        // Keys of a section GOOD already has go right after its header.
        "nats" => edit(
            "url = \"nats://localhost:4222\"",
            &format!("url = \"nats://localhost:4222\"\n{key} = {value}"),
        ),
        _ => format!("{GOOD}\n[{section}]\n{key} = {value}\n"),
    }
}

/// A value of a declared range written as the manifest would hold it,
/// `delta` units beyond (or inside) the bound `at`.
fn written(range: &ranges::Declared, at: u64, delta: i128) -> (String, bool) {
    use ranges::Declared;
    let (min, max) = match range {
        Declared::Duration(r) => (r.min.as_nanos() as i128, r.max.as_nanos() as i128),
        Declared::Size(r) => (i128::from(r.min), i128::from(r.max)),
        Declared::Count(r) => (i128::from(r.min), i128::from(r.max)),
    };
    let base = if at == 0 { min } else { max };
    // What a manifest can hold: no negative durations, TOML integers.
    let v = match range {
        Declared::Duration(_) => (base + delta).max(0),
        Declared::Size(_) | Declared::Count(_) => {
            (base + delta).clamp(i64::MIN.into(), i64::MAX.into())
        }
    };
    let text = match range {
        Declared::Duration(_) => format!("\"{v}ns\""),
        Declared::Size(_) | Declared::Count(_) => v.to_string(),
    };
    (text, (min..=max).contains(&v))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// Every declared range, at and beyond each bound (and far beyond):
    /// reading the manifest never panics, accepts the values inside and
    /// refuses those outside with the field's path.
    #[test]
    fn every_range_is_checked_at_and_beyond_its_bounds(
        which in 0..ranges::ALL.len(),
        at in 0u64..2,
        delta in proptest::prop_oneof![
            -2i128..=2,
            proptest::prelude::Just(i128::from(i64::MAX)),
            proptest::prelude::Just(-i128::from(i64::MAX)),
            -1_000_000_000i128..1_000_000_000,
        ],
    ) {
        let range = &ranges::ALL[which];
        let field = match range {
            ranges::Declared::Duration(r) => r.field,
            ranges::Declared::Size(r) => r.field,
            ranges::Declared::Count(r) => r.field,
        };
        let (value, inside) = written(range, at, delta);
        let d = dir();
        let text = manifest_with(field, &value);
        let result = std::panic::catch_unwind(|| load(d.path(), &text));
        proptest::prop_assert!(result.is_ok(), "reading {field} = {value} panicked");
        match result.unwrap() {
            Ok(_) => proptest::prop_assert!(inside, "{field} = {value} was accepted"),
            Err(e) => {
                proptest::prop_assert!(!inside, "{field} = {value} was refused: {e}");
                let problems = e.problems();
                proptest::prop_assert_eq!(problems.len(), 1, "{}", e);
                proptest::prop_assert_eq!(&problems[0].path, field);
                proptest::prop_assert!(problems[0].message.contains("is out of range: use "), "{}", e);
            }
        }
    }
}

#[test]
fn ghost_changes_may_be_marked_on_a_permitted_subject() {
    let d = dir();
    let text = GOOD.replace(
        "slot = \"sluice_orders\"",
        "slot = \"sluice_orders\"\non-ghost-changes = \"mark\"\nghost-subject = \"cdc.ghosts\"",
    );
    let m = load(d.path(), &text).unwrap();
    assert_eq!(
        m.source.on_ghost_changes,
        GhostChanges::Mark {
            subject: "cdc.ghosts".into()
        }
    );
    let text = GOOD.replace(
        "slot = \"sluice_orders\"",
        "slot = \"sluice_orders\"\non-ghost-changes = \"refuse\"",
    );
    assert_eq!(
        load(d.path(), &text).unwrap().source.on_ghost_changes,
        GhostChanges::Refuse
    );
}
