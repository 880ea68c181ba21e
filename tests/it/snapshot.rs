//! Snapshots end to end: a real PostgreSQL with writers running throughout,
//! a real nats-server, the example plugins, and the `sluice` binary.
//!
//! The check is the one a consumer cares about: replaying the stream in
//! order reproduces the table, and no change is lost, repeated, or shown
//! with a value older than one shown before it. Every writer transaction
//! increments one row's `v`, so for every row the stream must show its
//! snapshot value and then exactly `+1` per update.
//!
//! - An initial snapshot with concurrent writers, two tables read in
//!   parallel, in chunks.
//! - The host killed (SIGKILL) mid-snapshot and restarted: the snapshot
//!   resumes after the last stored chunk under a new point, same outcome.
//! - `initial-only` copies and exits 0 without streaming.
//! - Bad `source.snapshot` settings are refused with the manifest path.
//! - A backfill (`sluice backfill`) of a table while ~1,000 updates a
//!   second hit it: the stream never pauses, and replaying it reproduces
//!   the table (`BACKFILL_ROWS`, default 500,000 rows: about 20 s).
//! - The host killed (SIGKILL) mid-backfill and restarted: the backfill
//!   resumes after its last stored key, not from the first, same outcome.
//!
//! Sizes (environment variables, for quicker runs while iterating):
//! `SNAPSHOT_ROWS` (default 1,000,000), `KILL_ROWS` (200,000),
//! `BACKFILL_ROWS` (500,000), `BACKFILL_KILL_ROWS` (300,000). Writers run at about 1,000 transactions a
//! second throughout.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;

use crate::support::metrics::{free_address, get, sample, scrape};
use crate::support::nats::{NatsServer, stream_len};
use crate::support::pipeline::{
    ManifestParts, Pipeline, parse_lsn, passthrough_then_json, signal, sluice_binary, wait_exit,
};
use crate::support::postgres::PgCluster;
use crate::support::wait_until;

/// The size of a test's large table: `var` from the environment, or
/// `default`.
fn rows(var: &str, default: i64) -> i64 {
    std::env::var(var)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// A pipeline over `items` (large) and `small`, with a file offset store.
fn snapshot_pipeline(
    pg: &PgCluster,
    nats: &NatsServer,
    name: &str,
    mode: &str,
    chunk_rows: usize,
    n: i64,
) -> Pipeline {
    let p = Pipeline::with(
        pg,
        nats,
        name,
        &["items", "small", "marker"],
        ManifestParts {
            plugins: passthrough_then_json(),
            position: "store = \"file\"\nstore-path = \"offset.json\"".into(),
            source: format!("snapshot = \"{mode}\""),
            extra: format!("[snapshot]\nchunk-rows = {chunk_rows}\nparallel-tables = 2\n"),
            nats: "duplicate-window = \"10m\"".into(),
            ..ManifestParts::default()
        },
    );
    pg.psql(
        &p.db,
        &format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);
             INSERT INTO items SELECT g, 0, 'note ' || g FROM generate_series(1, {n}) g;
             CREATE TABLE small (a text, b int, v int NOT NULL, PRIMARY KEY (a, b));
             INSERT INTO small SELECT 'k' || (g % 7), g, 0 FROM generate_series(1, 2000) g;
             CREATE TABLE marker (id int PRIMARY KEY);
             ANALYZE items;"
        ),
    );
    p
}

/// Writers that keep changing `items` and `small` until stopped: updates
/// (`v = v + 1`), inserts of new ids and deletes, each its own transaction.
struct Writers {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writers {
    /// Writers over `n` initial rows, at most `per_second` transactions a
    /// second when given.
    async fn paced(pg: &PgCluster, db: &str, n: i64, per_second: Option<u64>) -> Writers {
        let (client, conn) = tokio_postgres::connect(&pg.superuser_url(db), tokio_postgres::NoTls)
            .await
            .expect("connect the writer");
        tokio::spawn(conn);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s, d) = (stop.clone(), done.clone());
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            let mut x: u64 = 0x2545_f491_4f6c_dd1d;
            let mut next_id = n + 1;
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                // xorshift: cheap, deterministic, good enough to scatter.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let id = (x % n as u64) as i64 + 1;
                let sql = match i % 20 {
                    0 => format!("INSERT INTO items VALUES ({next_id}, 0, 'new')"),
                    1 => format!("DELETE FROM items WHERE id = {id}"),
                    2 => format!(
                        "UPDATE small SET v = v + 1 WHERE a = 'k{}' AND b = {}",
                        id % 7,
                        id % 2000 + 1
                    ),
                    3 => format!(
                        "BEGIN; UPDATE items SET v = v + 1 WHERE id = {id}; UPDATE items SET v = v + 1, note = 'x' WHERE id = {}; COMMIT",
                        (id * 7919) % n + 1
                    ),
                    _ => format!("UPDATE items SET v = v + 1 WHERE id = {id}"),
                };
                if i.is_multiple_of(20) {
                    next_id += 1;
                }
                client
                    .batch_execute(&sql)
                    .await
                    .expect("a writer statement");
                i += 1;
                if let Some(rate) = per_second {
                    tokio::time::sleep_until(started + Duration::from_micros(i * 1_000_000 / rate))
                        .await;
                }
                d.store(i, Ordering::SeqCst);
            }
        });
        Writers { stop, done, task }
    }

    /// Waits until the writers have committed `n` more transactions (at
    /// 1,000 a second, about `n` ms of writing).
    async fn write_more(&self, n: u64) {
        let target = self.done.load(Ordering::SeqCst) + n;
        let what = format!("{n} more writer transactions");
        wait_until(what, Duration::from_secs(60), || async {
            self.done.load(Ordering::SeqCst) >= target
        })
        .await;
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the writer task");
        self.done.load(Ordering::SeqCst)
    }
}

/// The stored offset record, as JSON (`Null` when none is stored yet).
fn offset(p: &Pipeline) -> serde_json::Value {
    let path = p.manifest.parent().unwrap().join("offset.json");
    std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn snapshot_complete(p: &Pipeline) -> bool {
    offset(p)["snapshot"]["tables"]
        .as_array()
        .is_some_and(|t| !t.is_empty() && t.iter().all(|t| t["done"] == true))
}

fn snapshot_rows_stored(p: &Pipeline) -> u64 {
    offset(p)["snapshot"]["tables"].as_array().map_or(0, |t| {
        t.iter().map(|t| t["rows"].as_u64().unwrap_or(0)).sum()
    })
}

/// One message of the stream, as the JSON sink wrote it.
#[derive(Debug)]
struct Change {
    table: String,
    op: String,
    key: String,
    row: Option<serde_json::Value>,
}

/// Every message of `stream`, in order.
async fn read_changes(js: &jetstream::Context, stream: &str) -> Vec<Change> {
    let handle = js.get_stream(stream).await.expect("look up the stream");
    let count = stream_len(js, stream).await as usize;
    let consumer = handle
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("consume").take(count);
    let mut out = Vec::with_capacity(count);
    while let Some(m) = messages.next().await {
        let m = m.expect("a message");
        let body: serde_json::Value = serde_json::from_slice(&m.payload).expect("JSON");
        let op = body["op"].as_str().expect("op").to_owned();
        if op == "m" {
            continue;
        }
        let table = body["source"]["table"].as_str().expect("table").to_owned();
        let image = if op == "d" {
            &body["before"]
        } else {
            &body["after"]
        };
        let key = match table.as_str() {
            "small" => format!("{}/{}", image["a"], image["b"]),
            _ => image["id"].to_string(),
        };
        out.push(Change {
            table,
            op: op.clone(),
            key,
            row: (op != "d").then(|| image.clone()),
        });
    }
    out
}

/// Replays `changes` in order, checking that each row's `v` never goes
/// back and that every update is exactly one step on from what the stream
/// showed before (none lost, none repeated). `strict`: every update
/// concerns a row the stream already showed (no resume happened). Returns
/// the final rows per table.
fn replay(
    changes: &[Change],
    strict: bool,
) -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
    let mut tables: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
    for (i, c) in changes.iter().enumerate() {
        if c.table == "marker" {
            // Markers only say how far the stream got.
            continue;
        }
        let rows = tables.entry(c.table.clone()).or_default();
        let v = |row: &serde_json::Value| row["v"].as_i64().expect("v");
        match c.op.as_str() {
            "r" => {
                let row = c.row.clone().unwrap();
                if let Some(old) = rows.get(&c.key) {
                    assert!(
                        v(&row) >= v(old),
                        "message {i}: {} {} read with v = {} after v = {}",
                        c.table,
                        c.key,
                        v(&row),
                        v(old)
                    );
                }
                rows.insert(c.key.clone(), row);
            }
            "c" => {
                let row = c.row.clone().unwrap();
                if strict {
                    assert!(
                        !rows.contains_key(&c.key),
                        "message {i}: {} {} inserted twice",
                        c.table,
                        c.key
                    );
                }
                rows.insert(c.key.clone(), row);
            }
            "u" => {
                let row = c.row.clone().unwrap();
                match rows.get(&c.key) {
                    Some(old) => assert_eq!(
                        v(&row),
                        v(old) + 1,
                        "message {i}: {} {} updated to v = {} after v = {}: a change was lost or repeated",
                        c.table,
                        c.key,
                        v(&row),
                        v(old)
                    ),
                    None => assert!(
                        !strict,
                        "message {i}: {} {} updated before the stream showed it",
                        c.table, c.key
                    ),
                }
                rows.insert(c.key.clone(), row);
            }
            "d" => {
                rows.remove(&c.key);
            }
            other => panic!("message {i}: unexpected op {other}"),
        }
    }
    tables
}

/// The table's rows as JSON objects keyed like [`Change::key`].
async fn table_rows(
    pg: &'static PgCluster,
    db: &str,
    table: &str,
) -> BTreeMap<String, serde_json::Value> {
    let key = if table == "small" {
        "format('\"%s\"/%s', a, b)"
    } else {
        "id::text"
    };
    let out = pg
        .sql(
            db,
            &format!("SELECT {key} || E'\\t' || row_to_json(t)::text FROM {table} t"),
        )
        .await;
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, json) = l.split_once('\t').expect("key and row");
            (k.to_owned(), serde_json::from_str(json).expect("row JSON"))
        })
        .collect()
}

/// Waits until the stream holds a message on `subject`.
async fn wait_for_subject(
    js: &jetstream::Context,
    p: &Pipeline,
    subject: &str,
    what: &str,
    timeout: Duration,
) {
    let stream = js.get_stream(&p.stream).await.expect("the stream");
    wait_until(what, timeout, || {
        let stream = stream.clone();
        async move {
            stream
                .get_last_raw_message_by_subject(subject)
                .await
                .is_ok()
        }
    })
    .await;
}

/// Writes a marker row and waits until the stream holds it: everything
/// committed before is in the stream then.
async fn wait_for_marker(pg: &PgCluster, p: &Pipeline, js: &jetstream::Context) {
    let stream = js.get_stream(&p.stream).await.expect("the stream");
    let last = |stream: jetstream::stream::Stream| async move {
        stream
            .get_last_raw_message_by_subject("cdc.public.marker")
            .await
            .ok()
            .filter(|m| String::from_utf8_lossy(&m.payload).contains("\"op\":\"c\""))
            .map(|m| m.sequence)
    };
    let before = last(stream.clone()).await;
    pg.psql(
        &p.db,
        "INSERT INTO marker SELECT COALESCE(max(id), 0) + 1 FROM marker",
    );
    wait_until(
        "the marker row to reach the stream",
        Duration::from_secs(300),
        || {
            let stream = stream.clone();
            async move { last(stream).await > before }
        },
    )
    .await;
}

/// Asserts that replaying the stream reproduces `items` and `small`.
async fn assert_stream_reproduces_tables(
    pg: &'static PgCluster,
    p: &Pipeline,
    js: &jetstream::Context,
    strict: bool,
) {
    assert_stream_reproduces(pg, p, js, strict, &["items", "small"]).await;
}

/// Asserts that replaying the stream reproduces `tables`.
async fn assert_stream_reproduces(
    pg: &'static PgCluster,
    p: &Pipeline,
    js: &jetstream::Context,
    strict: bool,
    tables: &[&str],
) {
    let changes = read_changes(js, &p.stream).await;
    let replayed = replay(&changes, strict);
    for &table in tables {
        let expected = table_rows(pg, &p.db, table).await;
        let got = replayed.get(table).cloned().unwrap_or_default();
        assert_eq!(
            got.len(),
            expected.len(),
            "{table}: the stream reproduces {} rows, the table has {}",
            got.len(),
            expected.len()
        );
        for (k, row) in &expected {
            assert_eq!(got.get(k), Some(row), "{table} row {k}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_initial_snapshot_with_writers_running_reproduces_the_tables() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let cache = tempfile::tempdir().unwrap();
    let n = rows("SNAPSHOT_ROWS", 1_000_000);
    let p = snapshot_pipeline(pg, &nats, "snapinit", "initial", 5_000, n);
    let writers = Writers::paced(pg, &p.db, n, Some(1_000)).await;
    let started = std::time::Instant::now();
    let mut child = p.start(cache.path());
    wait_until(
        "the snapshot to complete",
        Duration::from_secs(600),
        || async { snapshot_complete(&p) },
    )
    .await;
    let took = started.elapsed();
    // Keep writing a little while streaming, then stop.
    writers.write_more(500).await;
    let written = writers.stop().await;
    eprintln!(
        "snapshot of {n} + 2000 rows took {took:?} (sluice start-up included); {written} writer transactions"
    );
    wait_for_marker(pg, &p, &js).await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    assert_stream_reproduces_tables(pg, &p, &js, true).await;
    assert!(written > 0, "the writers ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_killed_midway_resumes_and_reproduces_the_tables() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let cache = tempfile::tempdir().unwrap();
    let n = rows("KILL_ROWS", 200_000);
    let p = snapshot_pipeline(pg, &nats, "snapkill", "initial", 2_000, n);
    let writers = Writers::paced(pg, &p.db, n, Some(1_000)).await;
    let mut child = p.start(cache.path());
    let third = (n / 3) as u64;
    wait_until(
        "a third of the snapshot to be stored",
        Duration::from_secs(600),
        || async { snapshot_rows_stored(&p) >= third },
    )
    .await;
    signal(&child, "-KILL");
    let _ = wait_exit(&mut child, Duration::from_secs(30));
    assert!(
        !snapshot_complete(&p),
        "the snapshot finished before the kill; make it larger"
    );
    let before = snapshot_rows_stored(&p);
    // The writers keep going while the host is down and after it is back.
    writers.write_more(500).await;
    let mut child = p.start(cache.path());
    wait_until(
        "the resumed snapshot to complete",
        Duration::from_secs(600),
        || async { snapshot_complete(&p) },
    )
    .await;
    let written = writers.stop().await;
    wait_for_marker(pg, &p, &js).await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let record = offset(&p);
    let items = record["snapshot"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "items")
        .unwrap()
        .clone();
    eprintln!(
        "{before} snapshot rows stored before the kill; {written} writer transactions; items: {items}"
    );
    assert_stream_reproduces_tables(pg, &p, &js, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_only_copies_the_tables_and_exits() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let cache = tempfile::tempdir().unwrap();
    let n = rows("SNAPSHOT_ROWS", 1_000_000).min(100_000);
    let p = snapshot_pipeline(pg, &nats, "snaponly", "initial-only", 50_000, n);
    let mut child = p.start(cache.path());
    let status = wait_exit(&mut child, Duration::from_secs(300));
    assert!(status.success(), "sluice exited with {status}");
    assert!(snapshot_complete(&p));
    let stored = stream_len(&js, &p.stream).await;
    assert_eq!(stored, n as u64 + 2000, "every row once, nothing else");
    assert_stream_reproduces_tables(pg, &p, &js, true).await;
    // A second run has nothing to do and says so by exiting at once.
    let mut child = p.start(cache.path());
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    assert_eq!(stream_len(&js, &p.stream).await, stored);
}

#[test]
fn a_snapshot_mode_needs_a_durable_store_and_a_known_name() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("sluice.toml");
    std::fs::write(
        &manifest,
        r#"
[source]
url = "postgres://u@localhost/db"
publication = "p"
slot = "s"
snapshot = "initial"

[snapshot]
chunk-rows = 0

[nats]
url = "nats://localhost:4222"
stream = "S"
subjects = ["cdc.>"]

[sink]
name = "json"
path = "json.wasm"
"#,
    )
    .unwrap();
    let out = Command::new(sluice_binary())
        .args(["check", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    crate::support::keep_log("snapshot", &out.stderr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("source.snapshot") && stderr.contains("needs a durable position.store"),
        "{stderr}"
    );
    assert!(
        stderr.contains("snapshot.chunk-rows") && stderr.contains("out of range"),
        "{stderr}"
    );
    std::fs::write(
        &manifest,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("\"initial\"", "\"sometimes\""),
    )
    .unwrap();
    let out = Command::new(sluice_binary())
        .args(["check", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    crate::support::keep_log("snapshot", &out.stderr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("source.snapshot") && stderr.contains("`sometimes` is not a snapshot mode"),
        "{stderr}"
    );
}

/// A pipeline over `items` (`n` rows, written before the pipeline exists,
/// so that only a backfill brings them into the stream) and `marker` (one
/// row), reading backfills in chunks of `chunk_rows`; `parts.extra` is
/// added after the `[snapshot]` table.
fn backfill_pipeline(
    pg: &PgCluster,
    nats: &NatsServer,
    name: &str,
    chunk_rows: usize,
    parts: ManifestParts,
    n: i64,
) -> Pipeline {
    let p = Pipeline::with(
        pg,
        nats,
        name,
        &["items", "marker"],
        ManifestParts {
            plugins: passthrough_then_json(),
            extra: format!("[snapshot]\nchunk-rows = {chunk_rows}\n\n{}", parts.extra),
            ..parts
        },
    );
    pg.psql(
        &p.db,
        &format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);
             INSERT INTO items SELECT g, 0, 'note ' || g FROM generate_series(1, {n}) g;
             CREATE TABLE marker (id int PRIMARY KEY);
             INSERT INTO marker VALUES (1);
             CREATE TABLE small (a text, b int, v int NOT NULL, PRIMARY KEY (a, b));"
        ),
    );
    p
}

/// Runs `sluice backfill MANIFEST TABLE [ARGS…]`.
fn backfill(p: &Pipeline, table: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(sluice_binary())
        .args(["backfill", p.manifest.to_str().unwrap(), table])
        .args(args)
        .output()
        .unwrap();
    crate::support::keep_log("snapshot", &out.stderr);
    out
}

/// Runs `sluice backfill MANIFEST TABLE [ARGS…]`, which must succeed; its
/// output.
fn request_backfill(p: &Pipeline, table: &str, args: &[&str]) -> String {
    let out = backfill(p, table, args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_under_a_thousand_updates_a_second_reproduces_the_table() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let cache = tempfile::tempdir().unwrap();
    let n = rows("BACKFILL_ROWS", 500_000);
    let p = backfill_pipeline(pg, &nats, "backfill", 5000, ManifestParts::default(), n);
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    let writers = Writers::paced(pg, &p.db, n, Some(1_000)).await;
    writers.write_more(1_000).await;
    let started = std::time::Instant::now();
    let said = request_backfill(&p, "items", &[]);
    assert!(said.contains("backfill of items requested at"), "{said}");
    // Backfills run one after the other: once the marker table's backfill
    // shows, the one of `items` is complete.
    request_backfill(&p, "public.marker", &[]);
    wait_for_subject(
        &js,
        &p,
        "cdc.public.marker",
        "the backfills to complete",
        Duration::from_secs(600),
    )
    .await;
    let took = started.elapsed();
    let written = writers.stop().await;
    eprintln!("backfill of {n} rows took {took:?} with {written} writer transactions running");
    pg.psql(&p.db, "INSERT INTO marker VALUES (2)");
    let stream = js.get_stream(&p.stream).await.unwrap();
    wait_until(
        "the last change to reach the stream",
        Duration::from_secs(120),
        || {
            let stream = stream.clone();
            async move {
                stream
                    .get_last_raw_message_by_subject("cdc.public.marker")
                    .await
                    .is_ok_and(|m| String::from_utf8_lossy(&m.payload).contains("\"op\":\"c\""))
            }
        },
    )
    .await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    assert_stream_reproduces(pg, &p, &js, false, &["items"]).await;
    // An unknown table is refused by the command, naming it.
    let out = backfill(&p, "nope", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("public.nope"), "{stderr}");
}

/// The backfills the stored offset record holds (empty when none).
fn stored_backfills(p: &Pipeline) -> Vec<serde_json::Value> {
    offset(p)["backfills"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_killed_midway_resumes_after_its_last_stored_key() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let cache = tempfile::tempdir().unwrap();
    let metrics = free_address();
    let n = rows("BACKFILL_KILL_ROWS", 300_000);
    let p = backfill_pipeline(
        pg,
        &nats,
        "bfkill",
        2000,
        ManifestParts {
            position: "store = \"file\"\nstore-path = \"offset.json\"".into(),
            nats: "duplicate-window = \"10m\"".into(),
            extra: format!("[metrics]\naddress = \"{metrics}\"\n"),
            ..ManifestParts::default()
        },
        n,
    );
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    let writers = Writers::paced(pg, &p.db, n, Some(1_000)).await;
    request_backfill(&p, "items", &[]);
    let third = (n / 3) as u64;
    wait_until(
        "a third of the backfill to be stored",
        Duration::from_secs(600),
        || async {
            stored_backfills(&p)
                .first()
                .and_then(|b| b["rows"].as_u64())
                .is_some_and(|rows| rows >= third)
        },
    )
    .await;
    signal(&child, "-KILL");
    let _ = wait_exit(&mut child, Duration::from_secs(30));
    let killed_at = stored_backfills(&p);
    assert_eq!(
        killed_at.len(),
        1,
        "the backfill finished before the kill; make it larger: {killed_at:?}"
    );
    let before = killed_at[0]["rows"].as_u64().unwrap();
    assert!(killed_at[0]["after"].is_array(), "{killed_at:?}");
    assert_eq!(killed_at[0]["table"], "items");
    // The writers keep going while the host is down and after it is back.
    writers.write_more(500).await;
    let mut child = p.start(cache.path());
    wait_until(
        "the resumed backfill to complete",
        Duration::from_secs(600),
        || async { offset(&p)["commit_end_lsn"].is_string() && stored_backfills(&p).is_empty() },
    )
    .await;
    let written = writers.stop().await;
    wait_for_marker(pg, &p, &js).await;
    // Rows the restarted host read: the rest of the table after the stored
    // key (and new rows), not the table again from its first key.
    let metric = scrape(metrics);
    let resumed_rows = sample(
        &metric,
        "sluice_snapshot_rows_total{table=\"public.items\"}",
    )
    .unwrap_or_else(|| panic!("no backfill rows counted: {metric}")) as u64;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let changes = read_changes(&js, &p.stream).await;
    let reads = changes
        .iter()
        .filter(|c| c.table == "items" && c.op == "r")
        .count() as u64;
    eprintln!(
        "{before} backfill rows stored before the kill ({}); {resumed_rows} read after the restart; {reads} reads in the stream; {written} writer transactions",
        killed_at[0]
    );
    assert!(
        resumed_rows > 0 && resumed_rows + before / 2 < n as u64,
        "the restarted host read {resumed_rows} rows of {n}, {before} of which were stored before the kill: the backfill started over"
    );
    assert!(
        reads < n as u64 + before / 2,
        "{reads} reads of {n} rows in the stream: the backfill started over"
    );
    assert_stream_reproduces(pg, &p, &js, false, &["items"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn when_needed_re_snapshots_once_the_offsets_wal_is_gone() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let cache = tempfile::tempdir().unwrap();
    let p = snapshot_pipeline(pg, &nats, "snapneed", "when-needed", 1_000, 5_000);
    let mut child = p.start(cache.path());
    wait_until("the snapshot", Duration::from_secs(120), || async {
        snapshot_complete(&p)
    })
    .await;
    pg.psql(&p.db, "UPDATE items SET v = v + 1 WHERE id <= 10");
    wait_for_marker(pg, &p, &js).await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let first_point = offset(&p)["snapshot"]["tables"][0]["point"].clone();
    let stored = parse_lsn(offset(&p)["commit_end_lsn"].as_str().unwrap());

    // While the host is down: changes, then the slot moves on without it
    // until the WAL the offset needs is gone.
    pg.psql(
        &p.db,
        "UPDATE items SET v = v + 1 WHERE id <= 100;
         INSERT INTO items VALUES (1000000, 0, 'in the gap')",
    );
    let slot = &p.slot;
    wait_until(
        "the slot's restart_lsn to pass the offset",
        Duration::from_secs(60),
        || async {
            pg.psql(&p.db, "CHECKPOINT");
            pg.psql(
                &p.db,
                &format!("SELECT pg_replication_slot_advance('{slot}', pg_current_wal_lsn())"),
            );
            let r = pg.psql(
                &p.db,
                &format!("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
            );
            parse_lsn(&r) > stored
        },
    )
    .await;

    let mut child = p.start(cache.path());
    wait_until(
        "the re-snapshot to complete",
        Duration::from_secs(120),
        || async {
            snapshot_complete(&p) && offset(&p)["snapshot"]["tables"][0]["point"] != first_point
        },
    )
    .await;
    pg.psql(&p.db, "UPDATE items SET v = v + 1 WHERE id <= 5");
    wait_for_marker(pg, &p, &js).await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    // The re-snapshot shows the rows as they are now: the gap's updates and
    // insert are in the stream again, as reads.
    assert_stream_reproduces_tables(pg, &p, &js, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_is_refused_until_the_slot_has_its_starting_point() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let p = Pipeline::with(
        pg,
        &nats,
        "backslot",
        &["items"],
        ManifestParts {
            plugins: passthrough_then_json(),
            ..ManifestParts::default()
        },
    );
    pg.psql(
        &p.db,
        "CREATE TABLE items (id bigint PRIMARY KEY);
         CREATE PUBLICATION pub_backslot FOR TABLE items;",
    );
    // A transaction holding an xid: creating a slot waits for it to end.
    let (holder, conn) = tokio_postgres::connect(&pg.superuser_url(&p.db), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    holder
        .batch_execute("BEGIN; SELECT txid_current();")
        .await
        .unwrap();
    let creator = {
        let db = p.db.clone();
        let sql = format!(
            "SELECT 1 FROM pg_create_logical_replication_slot('{}', 'pgoutput')",
            p.slot
        );
        tokio::task::spawn_blocking(move || PgCluster::shared().psql(&db, &sql))
    };
    let in_creation = format!(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND confirmed_flush_lsn IS NULL",
        p.slot
    );
    wait_until(
        "the slot to be in creation",
        Duration::from_secs(30),
        || async { pg.psql(&p.db, &in_creation) == "1" },
    )
    .await;
    let out = backfill(&p, "items", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "replication slot \"{}\" is still being created",
            p.slot
        )),
        "{stderr}"
    );

    holder.batch_execute("COMMIT").await.unwrap();
    creator.await.unwrap();
    request_backfill(&p, "items", &[]);
    pg.psql(
        &p.db,
        &format!("SELECT pg_drop_replication_slot('{}')", p.slot),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_reads_only_the_rows_its_condition_selects() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let cache = tempfile::tempdir().unwrap();
    let metrics = free_address();
    let p = Pipeline::with(
        pg,
        &nats,
        "backwhere",
        &["items", "marker"],
        ManifestParts {
            plugins: passthrough_then_json(),
            extra: format!("[snapshot]\nchunk-rows = 3\n\n[metrics]\naddress = \"{metrics}\"\n"),
            ..ManifestParts::default()
        },
    );
    pg.psql(
        &p.db,
        "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);
         INSERT INTO items SELECT g, 0, 'note ' || g FROM generate_series(1, 1000) g;
         CREATE TABLE marker (id int PRIMARY KEY);
         INSERT INTO marker VALUES (1);",
    );
    // Before the pipeline has a slot, a request could never be seen: refused.
    let early = backfill(&p, "items", &[]);
    assert!(!early.status.success());
    let stderr = String::from_utf8_lossy(&early.stderr);
    assert!(
        stderr.contains(&format!(
            "replication slot \"{}\" does not exist in this database",
            p.slot
        )) && stderr.contains("start `sluice run` first"),
        "{stderr}"
    );
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    request_backfill(&p, "items", &["--where", "id % 100 = 7"]);
    request_backfill(&p, "marker", &[]);
    // Generous: the walsender decodes the whole cluster's WAL, which the
    // other tests of this binary fill at the same time.
    wait_for_subject(
        &js,
        &p,
        "cdc.public.marker",
        "the backfills",
        Duration::from_secs(300),
    )
    .await;
    wait_until(
        "the snapshot rows metric to count the backfill",
        Duration::from_secs(30),
        || async move {
            get(metrics, "/metrics").is_some_and(|(_, body)| {
                body.contains("sluice_snapshot_rows_total{table=\"public.items\"} 10")
            })
        },
    )
    .await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let changes = read_changes(&js, &p.stream).await;
    let ids: Vec<&str> = changes
        .iter()
        .filter(|c| c.table == "items")
        .inspect(|c| assert_eq!(c.op, "r"))
        .map(|c| c.key.as_str())
        .collect();
    // Ten rows, in key order, over four chunks of at most three.
    let expected: Vec<String> = (0..10).map(|i| (i * 100 + 7).to_string()).collect();
    assert_eq!(ids, expected);
}
