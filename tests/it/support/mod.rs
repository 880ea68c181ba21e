//! Helpers shared by the integration tests and the benchmarks: where the
//! example plugins live (building them on first use), a runtime with a
//! private cache, and batch builders; the servers and the `sluice run`
//! harness are the submodules.
//!
//! The benchmarks (`host/benches/`) include this tree with
//! `#[path = "../../tests/it/support/mod.rs"] mod support;` and use a part
//! of it, so they allow `dead_code` on that one item; the test binary uses
//! all of it.

pub(crate) mod arbitrary;
pub(crate) mod creds;
pub(crate) mod ha;
pub(crate) mod metrics;
pub(crate) mod nats;
pub(crate) mod pipeline;
pub(crate) mod postgres;
pub(crate) mod test_decoding;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sluice_host::lsn::Lsn;
use sluice_host::model::{
    Batch, Column, Event, Operation, Relation, ReplicaIdentity, RowChange, Value,
};
use sluice_host::plugin::{Limits, PluginRuntime, PluginSpec, RuntimeConfig};

/// How often [`wait_until`] and [`wait_until_blocking`] test their condition.
const POLL: Duration = Duration::from_millis(50);

/// What a wait's condition returns: `bool` (done or not yet), or `Option<T>`
/// (`Some(value)` when done, and the wait returns the value).
pub(crate) trait Outcome {
    type Value;
    fn done(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn done(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn done(self) -> Option<T> {
        self
    }
}

/// Tests `cond` every 50 ms until it is done and returns its value, or panics
/// after `timeout` with "timed out after … waiting for {what}". `what` is
/// formatted only then, so it may show a log as it is then (see [`Lazy`]).
/// The one way tests wait for something: never a fixed sleep.
pub(crate) async fn wait_until<O, F, Fut>(
    what: impl Display,
    timeout: Duration,
    cond: F,
) -> O::Value
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    match poll_until(timeout, cond).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// [`wait_until`] without the panic: `None` after `timeout`, for a test that
/// gathers its own evidence of what went wrong before failing.
pub(crate) async fn poll_until<O, F, Fut>(timeout: Duration, mut cond: F) -> Option<O::Value>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = cond().await.done() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for code outside the async runtime (threads, server
/// start-up): the same polling, blocking the thread in between.
pub(crate) fn wait_until_blocking<O: Outcome>(
    what: impl Display,
    timeout: Duration,
    mut cond: impl FnMut() -> O,
) -> O::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = cond().done() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A description computed when it is shown, e.g. when a wait times out:
/// `Lazy(|| format!("… the log:\n{}", log.text()))`.
pub(crate) struct Lazy<F>(pub(crate) F);

impl<F: Fn() -> String> Display for Lazy<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&(self.0)())
    }
}

/// `what`, followed by the file `log` as it is when shown.
pub(crate) fn with_log<'a>(what: &'a str, log: &'a Path) -> impl Display + 'a {
    Lazy(move || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        format!("{what}; {}:\n{text}", log.display())
    })
}

/// `<prefix>_<pid>_<n>`, with `n` counting up in this process: a name no
/// other test uses, for the databases, slots and roles that every area's
/// tests create in one shared cluster (and for temporary directories).
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}

/// Where the tests keep the stderr of the `sluice` processes they start
/// (`<target>/tmp/test-logs/`), so that `scripts/test` can look through
/// them after the run for a host that panicked.
pub(crate) fn log_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-logs");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Keeps `stderr`, the output of a finished `sluice` process, in
/// [`log_dir`] as `<name>_<pid>_<n>.log` (unless it is empty).
pub(crate) fn keep_log(name: &str, stderr: &[u8]) {
    if stderr.is_empty() {
        return;
    }
    let path = log_dir().join(format!("{}.log", unique(name)));
    std::fs::write(&path, stderr).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A file for the stderr of a `sluice` process that a test reads at `at`:
/// created in [`log_dir`] as `<name>_<pid>_<n>.log`, with `at` a symbolic
/// link to it (replacing an earlier one), so the log outlives the test's
/// temporary folder.
pub(crate) fn kept_log_file(name: &str, at: &Path) -> std::fs::File {
    let path = log_dir().join(format!("{}.log", unique(name)));
    let file =
        std::fs::File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    // A restarted process starts a new log, as `File::create` would.
    let _ = std::fs::remove_file(at);
    std::os::unix::fs::symlink(&path, at)
        .unwrap_or_else(|e| panic!("link {} to {}: {e}", at.display(), path.display()));
    file
}

/// The repository's root folder.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// The component `build/plugins/<name>.wasm`, built by `scripts/build-plugins`
/// (once per test process) when it is missing.
pub(crate) fn plugin_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let path = repo_root()
        .join("build/plugins")
        .join(format!("{name}.wasm"));
    if !path.exists() {
        let built = BUILT.get_or_init(|| {
            let status = Command::new(repo_root().join("scripts/build-plugins"))
                .current_dir(repo_root())
                .status()
                .map_err(|e| format!("cannot run scripts/build-plugins: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("scripts/build-plugins failed: {status}"))
            }
        });
        if let Err(e) = built {
            panic!("{e}");
        }
    }
    assert!(
        path.exists(),
        "{} is missing after scripts/build-plugins",
        path.display()
    );
    path
}

/// A runtime whose disk cache lives in `cache` (the tests' own temp dir).
pub(crate) fn runtime(cache: &Path) -> PluginRuntime {
    PluginRuntime::new(RuntimeConfig {
        cache_dir: Some(cache.to_owned()),
        ..RuntimeConfig::default()
    })
    .expect("the runtime starts")
}

/// The `XDG_CACHE_HOME` every test process shares, so that components that
/// take seconds to compile (the Python and JavaScript ones: 12–18 MB) are
/// compiled once per build of the host, not once per test. The runtime's
/// cache writes entries atomically, so test processes may share it.
pub(crate) fn shared_xdg_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("xdg-cache")
}

/// A runtime over [`shared_xdg_cache`]'s compiled-component cache.
pub(crate) fn shared_runtime() -> PluginRuntime {
    runtime(&shared_xdg_cache().join("sluice"))
}

/// A spec for an example plugin with a configuration and default limits.
pub(crate) fn spec(name: &str, config: &str) -> PluginSpec {
    PluginSpec {
        config: config.to_owned(),
        ..PluginSpec::from_path(plugin_path(name))
    }
}

/// A spec with explicit limits.
pub(crate) fn spec_with(name: &str, config: &str, limits: Limits) -> PluginSpec {
    PluginSpec {
        limits,
        ..spec(name, config)
    }
}

pub(crate) fn column(name: &str, type_oid: u32, type_name: &str) -> Column {
    Column {
        name: name.into(),
        type_oid,
        type_name: type_name.into(),
        type_modifier: -1,
        is_key: false,
    }
}

pub(crate) fn relation(oid: u32, schema: &str, name: &str, columns: Vec<Column>) -> Relation {
    Relation {
        oid,
        schema: schema.into(),
        name: name.into(),
        replica_identity: ReplicaIdentity::Default,
        columns,
    }
}

pub(crate) fn batch(xid: u32, relations: Vec<Relation>, events: Vec<Event>) -> Batch {
    Batch {
        xid,
        commit_lsn: Lsn(0x1000 + u64::from(xid) * 0x100),
        commit_time: 1_700_000_000_000_000,
        first: true,
        last: true,
        relations,
        events,
    }
}

pub(crate) fn insert(relation: u32, lsn: u64, new: Vec<Value>) -> Event {
    Event::Row(RowChange {
        op: Operation::Insert,
        relation,
        lsn: Lsn(lsn),
        old: None,
        new: Some(new),
    })
}

pub(crate) fn update(relation: u32, lsn: u64, old: Option<Vec<Value>>, new: Vec<Value>) -> Event {
    Event::Row(RowChange {
        op: Operation::Update,
        relation,
        lsn: Lsn(lsn),
        old,
        new: Some(new),
    })
}

pub(crate) fn delete(relation: u32, lsn: u64, old: Vec<Value>) -> Event {
    Event::Row(RowChange {
        op: Operation::Delete,
        relation,
        lsn: Lsn(lsn),
        old: Some(old),
        new: None,
    })
}

/// The benchmark's row shape: `(id int8, amount numeric, name text, email
/// text, created timestamptz, active bool)`.
pub(crate) fn six_column_relation() -> Relation {
    let mut id = column("id", 20, "int8");
    id.is_key = true;
    relation(
        16384,
        "public",
        "orders",
        vec![
            id,
            column("amount", 1700, "numeric"),
            column("name", 25, "text"),
            column("email", 25, "text"),
            column("created", 1184, "timestamptz"),
            column("active", 16, "bool"),
        ],
    )
}

/// A batch of `rows` inserts of [`six_column_relation`].
pub(crate) fn six_column_batch(xid: u32, rows: usize) -> Batch {
    let events = (0..rows)
        .map(|i| {
            let i = i as i64;
            insert(
                0,
                0x1000 + i as u64,
                vec![
                    Value::Int(i),
                    Value::Numeric(format!("{}.{:02}", i * 3, i % 100)),
                    Value::Text(format!("customer {i}")),
                    Value::Text(format!("customer{i}@example.com")),
                    Value::Timestamptz(1_700_000_000_000_000 + i),
                    Value::Boolean(i % 2 == 0),
                ],
            )
        })
        .collect();
    batch(xid, vec![six_column_relation()], events)
}

/// `batch` with every float replaced by a text holding its bit pattern, so
/// that `==` compares floats bitwise (NaN payloads included).
pub(crate) fn floats_as_bits(mut batch: Batch) -> Batch {
    let fix = |values: &mut Option<Vec<Value>>| {
        for v in values.iter_mut().flatten() {
            if let Value::Float(f) = v {
                *v = Value::Other(format!("\u{0}f64:{:016x}", f.to_bits()));
            }
        }
    };
    for event in &mut batch.events {
        if let Event::Row(row) = event {
            fix(&mut row.old);
            fix(&mut row.new);
        }
    }
    batch
}
