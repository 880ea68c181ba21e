//! Failover: multi-host source URLs, failover slots and streaming across a
//! PostgreSQL 17 promotion (issue 15, DESIGN.md §3 "Failover").
//!
//! The PostgreSQL 17 tests start a primary and a physical standby of it
//! (`support/ha.rs`); they skip, saying why, when PostgreSQL 17 and 18 are
//! not installed under /opt/sluice-pg (`scripts/install-deps` installs
//! them). What is asserted is what a user sees: the rows in the JetStream
//! stream against the rows on the promoted server, the exit status and the
//! error text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::ha::{HaOptions, HaPair, ha_available};
use crate::support::nats::{NatsServer, read_stream};
use crate::support::pipeline::{Host, ManifestParts, Pipeline, signal, sluice_binary, wait_exit};
use crate::support::postgres::PgCluster;
use crate::support::{wait_until, with_log};
use sluice_host::replication::setup::connect_sql;
use sluice_host::replication::{ConnInfo, ReplicationConnection};

/// Prints why a PostgreSQL 17 test does not run; `true` when it may.
pub(crate) fn ha_or_skip(test: &str) -> bool {
    match ha_available() {
        Ok(()) => true,
        Err(reason) => {
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

pub(crate) fn json(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload).unwrap()
}

/// The ghost-range marker, once it is in the stream (the wait names
/// sluice's log at `log`).
async fn ghost_marker(
    js: &async_nats::jetstream::Context,
    log: &Path,
) -> crate::support::nats::StoredMessage {
    wait_until(
        with_log("the ghost marker", log),
        Duration::from_secs(120),
        || async {
            read_stream(js, "FO")
                .await
                .into_iter()
                .find(|m| m.subject == "cdc.ghosts")
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_first_host_is_skipped_and_the_role_is_checked() {
    let pg = PgCluster::shared();
    let db = pg.create_database("multihost");
    let dead = crate::support::postgres::unused_port();
    let url = format!(
        "postgres://postgres@127.0.0.1:{dead},127.0.0.1:{}/{db}?sslmode=disable&target_session_attrs=primary",
        pg.port()
    );
    let info = ConnInfo::parse(&url).unwrap();
    let repl = ReplicationConnection::connect(&info).await.unwrap();
    assert_eq!(repl.conninfo().port, pg.port(), "the live host was taken");
    assert_eq!(
        repl.server_major(),
        Some(pg.server_version_num() / 10_000),
        "the major version from the server's ParameterStatus"
    );
    repl.close().await;
    let sql = connect_sql(&info).await.unwrap();
    let row = sql
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), db);

    // Only a primary is there: asking for a standby finds none, and says
    // what each host was.
    let standby_url = url.replace("=primary", "=standby");
    let info = ConnInfo::parse(&standby_url).unwrap();
    let err = ReplicationConnection::connect(&info).await.unwrap_err();
    let text = err.to_string();
    assert!(err.is_transient(), "{text}");
    assert!(text.contains("target_session_attrs=standby"), "{text}");
    assert!(text.contains("a primary"), "{text}");
    let err = connect_sql(&info).await.unwrap_err().to_string();
    assert!(err.contains("target_session_attrs=standby"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_true_on_postgresql_15_is_a_clear_error() {
    let pg = PgCluster::shared();
    if pg.server_version_num() >= 170_000 {
        // There it is no error: the PostgreSQL 17 tests below use it.
        eprintln!(
            "skipping failover_true_on_postgresql_15_is_a_clear_error: the server under test is PostgreSQL 17 or later"
        );
        return;
    }
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let parts = ManifestParts {
        source: "failover = true".into(),
        ..ManifestParts::default()
    };
    let p = Pipeline::with(pg, &nats, "fo15", &["items"], parts);
    pg.psql(&p.db, "CREATE TABLE items (id int PRIMARY KEY, email text)");
    let out = p
        .command(cache.path())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    crate::support::keep_log("failover", &out.stderr);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("source.failover = true, but the server is PostgreSQL 15"),
        "{stderr}"
    );
    assert!(stderr.contains("PostgreSQL 17 or later"), "{stderr}");
}

/// A manifest for `sluice run` against the pair, publishing `items`.
pub(crate) fn ha_manifest(dir: &Path, url: &str, nats: &NatsServer, store: &str) -> PathBuf {
    let store = match store {
        "file" => format!(
            "store = \"file\"\nstore-path = \"{}\"",
            dir.join("offset.json").display()
        ),
        _ => "store = \"memory\"".to_owned(),
    };
    let text = format!(
        r#"
[source]
url = "{url}"
publication = "pub_fo"
slot = "slot_fo"
create-publication = ["public.items"]

[position]
status-interval = "100ms"
{store}

[nats]
url = "{nats}"
stream = "FO"
subjects = ["cdc.>"]

{plugins}

[pipeline]
shutdown-timeout = "10s"
"#,
        nats = nats.url(),
        plugins = crate::support::pipeline::passthrough_then_json(),
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `sluice run` with its log in `dir/sluice.log`.
pub(crate) fn start_sluice(manifest: &Path, dir: &Path) -> Host {
    let log = crate::support::kept_log_file("failover", &dir.join("sluice.log"));
    Command::new(sluice_binary())
        .args(["run", manifest.to_str().unwrap()])
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Host)
        .expect("start sluice run")
}

pub(crate) fn sluice_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("sluice.log")).unwrap_or_default()
}

/// Runs SQL on the server at `port` over TCP; `Err` with psql's message.
fn psql_at(port: u16, sql: &str) -> Result<String, String> {
    let out = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", "app", "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Commits 100-row transactions (ids `t*100 ..= t*100+99`) to whichever
/// port `primary` names, until `stop`; a transaction whose commit failed is
/// tried again, and moved past when the server already has it.
pub(crate) struct Writer {
    pub(crate) primary: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    /// The next transaction number.
    next: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn start(port: u16) -> Writer {
        let primary = Arc::new(AtomicU16::new(port));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let (p, s, n) = (primary.clone(), stop.clone(), next.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let t = n.load(Ordering::Relaxed);
                let sql = format!(
                    "INSERT INTO items SELECT g, 'x' FROM generate_series({}, {}) g",
                    t * 100,
                    t * 100 + 99
                );
                match psql_at(p.load(Ordering::Relaxed), &sql) {
                    Ok(_) => {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.contains("duplicate key") => {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Writer {
            primary,
            stop,
            next,
            thread: Some(thread),
        }
    }

    pub(crate) fn transactions(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    pub(crate) fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// The `id`s in the stream, with how often each occurs.
pub(crate) async fn stream_ids(js: &async_nats::jetstream::Context) -> BTreeMap<i64, usize> {
    let mut ids = BTreeMap::new();
    for m in read_stream(js, "FO").await {
        if let Some(id) = json(&m.payload)["after"]["id"].as_i64() {
            *ids.entry(id).or_insert(0) += 1;
        }
    }
    ids
}

pub(crate) async fn max_stream_id(js: &async_nats::jetstream::Context) -> i64 {
    stream_ids(js)
        .await
        .keys()
        .next_back()
        .copied()
        .unwrap_or(-1)
}

/// How long after `since` JetStream stored the first message with an `id`
/// of at least `id` (by its own clock, on this machine): the time it took
/// Sluice, not the test's polling of the whole stream.
async fn first_published_since(
    js: &async_nats::jetstream::Context,
    id: u64,
    since: std::time::SystemTime,
) -> Duration {
    let id = i64::try_from(id).unwrap();
    let first = read_stream(js, "FO")
        .await
        .into_iter()
        .find(|m| json(&m.payload)["after"]["id"].as_i64() >= Some(id))
        .expect("a message from the new primary");
    let stored = js
        .get_stream("FO")
        .await
        .unwrap()
        .get_raw_message(first.sequence)
        .await
        .unwrap()
        .time;
    let since = since.duration_since(std::time::UNIX_EPOCH).unwrap();
    let nanos = stored.unix_timestamp_nanos() - i128::try_from(since.as_nanos()).unwrap();
    Duration::from_nanos(u64::try_from(nanos).expect("stored after the kill"))
}

/// The acceptance test of issue 15: kill -9 the primary, promote the
/// standby, and every row of the new primary's history is in the stream
/// exactly once, nothing else.
async fn streaming_continues_across_a_promotion(store: &str) {
    let pair = HaPair::start("app", HaOptions::default());
    pair.primary.psql(
        "app",
        "CREATE TABLE items (id bigint PRIMARY KEY, email text)",
    );
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = ha_manifest(dir.path(), &pair.url("app", "primary"), &nats, store);
    // Heartbeats into a table outside the publication: they must reach the
    // new primary after the failover.
    pair.primary
        .psql("app", "CREATE TABLE beats (id bigserial PRIMARY KEY)");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(
        "\n[position.heartbeat]\ninterval = \"300ms\"\nsql = \"INSERT INTO beats DEFAULT VALUES\"\n",
    );
    std::fs::write(&manifest, text).unwrap();
    let mut host = start_sluice(&manifest, dir.path());
    pair.primary.wait_for(
        "app",
        "SELECT count(*) FROM pg_replication_slots
          WHERE slot_name = 'slot_fo' AND active AND confirmed_flush_lsn IS NOT NULL AND failover",
        "1",
        Duration::from_secs(60),
    );
    let writer = Writer::start(pair.primary.port);
    wait_until(
        "2000 rows in the stream",
        Duration::from_secs(120),
        || async { max_stream_id(&js).await >= 2000 },
    )
    .await;
    pair.wait_synced("slot_fo", Duration::from_secs(120));
    // Let a few more transactions through after the sync, so that the
    // synced copy lags behind what the stream holds.
    let before_kill = writer.transactions();
    wait_until("more transactions", Duration::from_secs(60), || async {
        writer.transactions() >= before_kill + 5
    })
    .await;

    let mut pair = pair;
    let killed = std::time::SystemTime::now();
    pair.primary.kill();
    pair.standby.promote();
    let first_new = writer.transactions();
    writer.primary.store(pair.standby.port, Ordering::Relaxed);
    wait_until(
        "a row written on the new primary in the stream",
        Duration::from_secs(120),
        || async { max_stream_id(&js).await >= i64::try_from(first_new * 100).unwrap() + 100 },
    )
    .await;
    eprintln!(
        "failover ({store}): {:?} from kill -9 to the first message from the new primary",
        first_published_since(&js, first_new * 100, killed).await
    );
    let beats = |pg: &crate::support::ha::Node| -> u64 {
        pg.psql("app", "SELECT count(*) FROM beats")
            .parse()
            .unwrap()
    };
    let beats_now = beats(&pair.standby);
    wait_until(
        "heartbeats on the new primary",
        Duration::from_secs(60),
        || async { beats(&pair.standby) >= beats_now + 3 },
    )
    .await;
    let after = writer.transactions();
    wait_until("20 more transactions", Duration::from_secs(60), || async {
        writer.transactions() >= after + 20
    })
    .await;
    writer.finish();

    let truth: Vec<i64> = pair
        .standby
        .psql("app", "SELECT id FROM items ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let last = *truth.last().unwrap();
    wait_until(
        "the last row in the stream",
        Duration::from_secs(120),
        || async { max_stream_id(&js).await >= last },
    )
    .await;
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(30));
    let log = sluice_log(dir.path());
    assert!(status.success(), "sluice failed: {status}\n{log}");
    let ids = stream_ids(&js).await;
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "rows in the stream more than once: {twice:?}"
    );
    let streamed: Vec<i64> = ids.keys().copied().collect();
    let missing: Vec<_> = truth.iter().filter(|i| !ids.contains_key(i)).collect();
    let ghosts: Vec<_> = streamed
        .iter()
        .filter(|i| truth.binary_search(i).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "rows missing from the stream: {missing:?}"
    );
    assert!(ghosts.is_empty(), "rows the new primary lacks: {ghosts:?}");
    eprintln!(
        "failover ({store}): {} rows, {} before the kill, all exactly once",
        truth.len(),
        first_new * 100
    );
    assert!(log.contains("promoted"), "{log}");
    let absorbed: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("promoted"))
        .filter(|l| l.contains("skipped transactions the server replayed"))
        .collect();
    eprintln!("failover ({store}): replayed transactions absorbed: {absorbed:?}");
    if store == "file" {
        let offset = std::fs::read_to_string(dir.path().join("offset.json")).unwrap();
        let record: serde_json::Value = serde_json::from_str(&offset).unwrap();
        assert_eq!(record["timeline"], 2, "{offset}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_continues_across_a_promotion_with_the_memory_store() {
    if ha_or_skip("streaming_continues_across_a_promotion_with_the_memory_store") {
        streaming_continues_across_a_promotion("memory").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_continues_across_a_promotion_with_the_file_store() {
    if ha_or_skip("streaming_continues_across_a_promotion_with_the_file_store") {
        streaming_continues_across_a_promotion("file").await;
    }
}

/// Without `synchronized_standby_slots`, the old primary streams what its
/// standby never got: after the promotion those rows are ghosts, and
/// sluice refuses, naming the range.
#[tokio::test(flavor = "multi_thread")]
async fn ghost_changes_after_a_promotion_are_refused() {
    if !ha_or_skip("ghost_changes_after_a_promotion_are_refused") {
        return;
    }
    let mut pair = HaPair::start(
        "app",
        HaOptions {
            synchronized_standby_slots: false,
            ..HaOptions::default()
        },
    );
    pair.primary.psql(
        "app",
        "CREATE TABLE items (id bigint PRIMARY KEY, email text)",
    );
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = ha_manifest(dir.path(), &pair.url("app", "primary"), &nats, "memory");
    let check = Command::new(sluice_binary())
        .args(["check", manifest.to_str().unwrap()])
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .output()
        .unwrap();
    crate::support::keep_log("failover", &check.stderr);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("synchronized_standby_slots is empty"),
        "sluice check did not warn: {said}"
    );
    let mut host = start_sluice(&manifest, dir.path());
    pair.primary.wait_for(
        "app",
        "SELECT count(*) FROM pg_replication_slots
          WHERE slot_name = 'slot_fo' AND active AND confirmed_flush_lsn IS NOT NULL",
        "1",
        Duration::from_secs(60),
    );
    pair.primary.psql(
        "app",
        "INSERT INTO items SELECT g, 'x' FROM generate_series(0, 99) g",
    );
    pair.wait_synced("slot_fo", Duration::from_secs(120));
    wait_until("the first rows", Duration::from_secs(60), || async {
        max_stream_id(&js).await >= 99
    })
    .await;
    // The standby goes away; the primary commits rows sluice streams.
    pair.standby.stop();
    pair.primary.psql(
        "app",
        "INSERT INTO items SELECT g, 'ghost' FROM generate_series(100, 199) g",
    );
    wait_until("the ghost rows", Duration::from_secs(60), || async {
        max_stream_id(&js).await >= 199
    })
    .await;
    pair.primary.kill();
    pair.standby.start();
    pair.standby.promote();
    let status = wait_exit(&mut host, Duration::from_secs(120));
    let log = sluice_log(dir.path());
    assert!(!status.success(), "{log}");
    assert!(log.contains("ghost changes"), "{log}");
    assert!(log.contains("promoted to timeline 2"), "{log}");
    assert!(log.contains("synchronized_standby_slots"), "{log}");
}

/// A slot made without FAILOVER (by hand, or by an older sluice) is
/// altered at start-up on PostgreSQL 17.
#[tokio::test(flavor = "multi_thread")]
async fn an_existing_slot_becomes_a_failover_slot_on_17() {
    if !ha_or_skip("an_existing_slot_becomes_a_failover_slot_on_17") {
        return;
    }
    let pair = HaPair::start("app", HaOptions::default());
    pair.primary.psql(
        "app",
        "CREATE TABLE items (id bigint PRIMARY KEY, email text)",
    );
    pair.primary.psql(
        "app",
        "SELECT pg_create_logical_replication_slot('slot_fo', 'pgoutput')",
    );
    assert_eq!(
        pair.primary.psql(
            "app",
            "SELECT failover FROM pg_replication_slots WHERE slot_name = 'slot_fo'"
        ),
        "f"
    );
    let nats = NatsServer::launch();
    let dir = tempfile::tempdir().unwrap();
    let manifest = ha_manifest(dir.path(), &pair.url("app", "primary"), &nats, "memory");
    let mut host = start_sluice(&manifest, dir.path());
    pair.primary.wait_for(
        "app",
        "SELECT count(*) FROM pg_replication_slots
          WHERE slot_name = 'slot_fo' AND active AND failover",
        "1",
        Duration::from_secs(60),
    );
    signal(&host, "-TERM");
    assert!(wait_exit(&mut host, Duration::from_secs(30)).success());
}

/// A standby that never synced the slot (`sync_replication_slots = off`):
/// after its promotion the slot is missing there, and sluice refuses,
/// naming it, instead of starting a new slot that would skip changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_before_the_slot_is_synced_is_refused() {
    if !ha_or_skip("a_promotion_before_the_slot_is_synced_is_refused") {
        return;
    }
    let mut pair = HaPair::start(
        "app",
        HaOptions {
            sync_replication_slots: false,
            ..HaOptions::default()
        },
    );
    pair.primary.psql(
        "app",
        "CREATE TABLE items (id bigint PRIMARY KEY, email text)",
    );
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = ha_manifest(dir.path(), &pair.url("app", "primary"), &nats, "memory");
    let mut host = start_sluice(&manifest, dir.path());
    pair.primary.wait_for(
        "app",
        "SELECT count(*) FROM pg_replication_slots
          WHERE slot_name = 'slot_fo' AND active AND confirmed_flush_lsn IS NOT NULL",
        "1",
        Duration::from_secs(60),
    );
    pair.primary.psql(
        "app",
        "INSERT INTO items SELECT g, 'x' FROM generate_series(0, 99) g",
    );
    wait_until("the rows", Duration::from_secs(60), || async {
        max_stream_id(&js).await >= 99
    })
    .await;
    pair.primary.kill();
    pair.standby.promote();
    let status = wait_exit(&mut host, Duration::from_secs(120));
    let log = sluice_log(dir.path());
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("replication slot \"slot_fo\" does not exist on the promoted server"),
        "{log}"
    );
}

/// The start-up path: the host is down during the failover; with a
/// `file` offset, start-up reads the new timeline's history, finds the
/// offset at or below the switch point and the synced slot, and streams
/// on without loss or duplicates.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_after_a_promotion_continues_from_the_offset() {
    if !ha_or_skip("a_restart_after_a_promotion_continues_from_the_offset") {
        return;
    }
    let mut pair = HaPair::start("app", HaOptions::default());
    pair.primary.psql(
        "app",
        "CREATE TABLE items (id bigint PRIMARY KEY, email text)",
    );
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = ha_manifest(dir.path(), &pair.url("app", "primary"), &nats, "file");
    let mut host = start_sluice(&manifest, dir.path());
    pair.primary.wait_for(
        "app",
        "SELECT count(*) FROM pg_replication_slots
          WHERE slot_name = 'slot_fo' AND active AND confirmed_flush_lsn IS NOT NULL",
        "1",
        Duration::from_secs(60),
    );
    pair.primary.psql(
        "app",
        "INSERT INTO items SELECT g, 'x' FROM generate_series(0, 999) g",
    );
    wait_until("the first rows", Duration::from_secs(60), || async {
        max_stream_id(&js).await >= 999
    })
    .await;
    pair.wait_synced("slot_fo", Duration::from_secs(120));
    signal(&host, "-TERM");
    assert!(wait_exit(&mut host, Duration::from_secs(30)).success());
    pair.primary.kill();
    pair.standby.promote();
    pair.standby.psql(
        "app",
        "INSERT INTO items SELECT g, 'y' FROM generate_series(1000, 1999) g",
    );
    let mut host = start_sluice(&manifest, dir.path());
    wait_until(
        "the rows of the new primary",
        Duration::from_secs(120),
        || async { max_stream_id(&js).await >= 1999 },
    )
    .await;
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(30));
    let log = sluice_log(dir.path());
    assert!(status.success(), "{log}");
    assert!(log.contains("promoted from timeline 1 to 2"), "{log}");
    let ids = stream_ids(&js).await;
    assert_eq!(ids.len(), 2000, "every row");
    assert!(ids.values().all(|n| *n == 1), "every row exactly once");
}

/// `ha_manifest` with the file store, `coll` published too, and ghost
/// changes marked on `cdc.ghosts`.
fn ghost_manifest(dir: &Path, url: &str, nats: &NatsServer) -> PathBuf {
    let path = ha_manifest(dir, url, nats, "file");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "create-publication = [\"public.items\"]",
        "create-publication = [\"public.items\", \"public.coll\"]\non-ghost-changes = \"mark\"\nghost-subject = \"cdc.ghosts\"",
    );
    // Long enough for the restart at the end to meet the marker again.
    let text = text.replace(
        "subjects = [\"cdc.>\"]",
        "subjects = [\"cdc.>\"]\nduplicate-window = \"10m\"",
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn lsn(text: &str) -> sluice_host::lsn::Lsn {
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// PostgreSQL's "usable byte position" of an LSN: WAL bytes without the
/// page headers, which is what a WAL record's size is counted in, for WAL
/// pages of `page` and segments of `segment` bytes.
fn wal_byte_pos(l: sluice_host::lsn::Lsn, page: u64, segment: u64) -> u64 {
    const LONG: u64 = 40;
    const SHORT: u64 = 24;
    let usable_in_segment = (page - LONG) + (segment / page - 1) * (page - SHORT);
    let (segments, offset) = (l.0 / segment, l.0 % segment);
    let (pages, in_page) = (offset / page, offset % page);
    segments * usable_in_segment
        + if pages == 0 {
            in_page - LONG
        } else {
            (page - LONG) + (pages - 1) * (page - SHORT) + in_page - SHORT
        }
}

/// Writes logical messages (prefix `pad`, which sluice publishes like any
/// other) on `node` until its next WAL record starts at `target`: the
/// promoted server then writes the next statements at the very LSNs the old
/// primary wrote the ghosts at. A record of a non-transactional message is
/// 24 bytes of header, 2 (or 5, past 255 bytes) of data header, 24 of
/// message header, the prefix with its NUL and the content, 8-aligned.
fn align_wal(node: &crate::support::ha::Node, target: sluice_host::lsn::Lsn) {
    let setting = |name: &str| -> u64 {
        node.psql(
            "app",
            &format!("SELECT setting::bigint * CASE unit WHEN 'B' THEN 1 WHEN 'kB' THEN 1024 WHEN 'MB' THEN 1048576 ELSE 1 END FROM pg_settings WHERE name = '{name}'"),
        )
        .parse()
        .unwrap()
    };
    let (page, segment) = (setting("wal_block_size"), setting("wal_segment_size"));
    for _ in 0..20 {
        let now = lsn(&node.psql("app", "SELECT pg_current_wal_insert_lsn()"));
        if now == target {
            return;
        }
        assert!(
            now < target,
            "the promoted server's WAL is already at {now}, past {target}"
        );
        let gap = wal_byte_pos(target, page, segment) - wal_byte_pos(now, page, segment);
        assert!(
            gap >= 56,
            "{gap} bytes to {target} are too few for a record"
        );
        let content = if gap - 26 <= 255 { gap - 54 } else { gap - 57 };
        node.psql(
            "app",
            &format!("SELECT pg_logical_emit_message(false, 'pad', repeat('x', {content}))"),
        );
    }
    panic!("could not bring the WAL to {target}");
}

/// The highest `items` id in the stream.
async fn max_item(js: &async_nats::jetstream::Context) -> i64 {
    read_stream(js, "FO")
        .await
        .iter()
        .filter(|m| m.subject == "cdc.public.items")
        .filter_map(|m| json(&m.payload)["after"]["id"].as_i64())
        .max()
        .unwrap_or(-1)
}

/// Starts `sluice run`, inserts `items` rows `first..=last` on `node`,
/// waits for them in the stream, stops sluice and returns its log (after
/// checking it exited cleanly).
async fn run_for_rows(
    manifest: &Path,
    dir: &Path,
    node: &crate::support::ha::Node,
    js: &async_nats::jetstream::Context,
    (first, last): (i64, i64),
) -> String {
    let mut host = start_sluice(manifest, dir);
    node.psql(
        "app",
        &format!("INSERT INTO items SELECT g, 'n' FROM generate_series({first}, {last}) g"),
    );
    wait_until(
        with_log(&format!("rows {first}..={last}"), &dir.join("sluice.log")),
        Duration::from_secs(120),
        || async { max_item(js).await >= last },
    )
    .await;
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(30));
    let log = sluice_log(dir);
    assert!(status.success(), "{log}");
    log
}

/// The next transaction id `node` will assign.
fn next_xid(node: &crate::support::ha::Node) -> u64 {
    node.psql("app", "SELECT pg_snapshot_xmax(pg_current_snapshot())")
        .parse()
        .unwrap()
}

/// The stored messages on `subject` whose payload satisfies `pick`.
fn find<'a>(
    messages: &'a [crate::support::nats::StoredMessage],
    subject: &str,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> Vec<&'a crate::support::nats::StoredMessage> {
    messages
        .iter()
        .filter(|m| m.subject == subject && pick(&json(&m.payload)))
        .collect()
}

/// A pair without `synchronized_standby_slots`, `tables` created on its
/// primary, and `sluice run` with `ghost_manifest` streaming rows 0..=99
/// of `items`, which the standby's synced slot has seen.
struct GhostRun {
    pair: HaPair,
    js: async_nats::jetstream::Context,
    dir: tempfile::TempDir,
    manifest: PathBuf,
    log_path: PathBuf,
    host: Host,
    _nats: NatsServer,
}

impl GhostRun {
    async fn start(tables: &str) -> GhostRun {
        let pair = HaPair::start(
            "app",
            HaOptions {
                synchronized_standby_slots: false,
                ..HaOptions::default()
            },
        );
        pair.primary.psql("app", tables);
        let nats = NatsServer::launch();
        let js = nats.jetstream().await;
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("sluice.log");
        let manifest = ghost_manifest(dir.path(), &pair.url("app", "primary"), &nats);
        let host = start_sluice(&manifest, dir.path());
        wait_until(
            with_log("sluice streaming", &log_path),
            Duration::from_secs(120),
            || async {
                pair.primary
                    .try_psql(
                        "app",
                        "SELECT count(*) FROM pg_replication_slots
                          WHERE slot_name = 'slot_fo' AND active AND confirmed_flush_lsn IS NOT NULL",
                    )
                    .is_ok_and(|n| n == "1")
            },
        )
        .await;
        pair.primary.psql(
            "app",
            "INSERT INTO items SELECT g, 'x' FROM generate_series(0, 99) g",
        );
        pair.wait_synced("slot_fo", Duration::from_secs(120));
        wait_until(
            with_log("the first rows", &log_path),
            Duration::from_secs(120),
            || async { max_item(&js).await >= 99 },
        )
        .await;
        GhostRun {
            pair,
            js,
            dir,
            manifest,
            log_path,
            host,
            _nats: nats,
        }
    }
}

/// Ghost changes marked instead of refused (`on-ghost-changes = "mark"`):
/// the standby misses a stretch of the old primary's changes, sluice streams
/// them, the standby is promoted. Sluice publishes one marker naming the
/// range before anything of the new primary, and every change of the new
/// primary reaches the stream exactly once — also a message and a
/// transaction the new primary writes at the ghosts' very LSNs (and, for
/// the transaction, xid), whose ids without the timeline qualifier would
/// equal the ghosts' and be dropped by JetStream as duplicates. A restart
/// from the old timeline's offset marks the range again, and JetStream
/// de-duplicates the marker.
#[tokio::test(flavor = "multi_thread")]
async fn ghost_changes_after_a_promotion_are_marked() {
    if !ha_or_skip("ghost_changes_after_a_promotion_are_marked") {
        return;
    }
    // No autovacuum on the tables: nothing but the test writes WAL.
    let GhostRun {
        mut pair,
        js,
        dir,
        manifest,
        log_path: log,
        mut host,
        _nats,
    } = GhostRun::start(
        "CREATE TABLE items (id bigint PRIMARY KEY, email text) WITH (autovacuum_enabled = off);
         CREATE TABLE coll (id bigint, note text) WITH (autovacuum_enabled = off);
         ALTER TABLE coll REPLICA IDENTITY FULL",
    )
    .await;

    // The standby goes away; the old primary commits what will be ghosts:
    // rows, a few transaction ids used up (so that the promoted server can
    // reach the ghost transaction's xid), then a message and a transaction
    // right after each other, which the promoted server will repeat.
    pair.standby.stop();
    pair.primary.psql(
        "app",
        "INSERT INTO items SELECT g, 'ghost' FROM generate_series(100, 199) g",
    );
    for _ in 0..5 {
        pair.primary.psql("app", "SELECT pg_current_xact_id()");
    }
    let ghost_start = lsn(&pair
        .primary
        .psql("app", "SELECT pg_current_wal_insert_lsn()"));
    pair.primary.psql(
        "app",
        "SELECT pg_logical_emit_message(false, 'collide', 'ghost-m')",
    );
    pair.primary
        .psql("app", "INSERT INTO coll VALUES (1000000, 'ghost')");
    let messages = wait_until(
        "the ghosts in the stream",
        Duration::from_secs(60),
        || async {
            let all = read_stream(&js, "FO").await;
            let done = all.iter().any(|m| m.subject == "cdc.public.coll")
                && all
                    .iter()
                    .filter(|m| m.subject == "cdc.public.items")
                    .count()
                    == 200;
            done.then_some(all)
        },
    )
    .await;
    let ghost_txn = find(&messages, "cdc.public.coll", |_| true)[0];
    let ghost_txn_lsn = ghost_txn.header("Sluice-Commit-Lsn").unwrap().to_owned();
    let ghost_xid = json(&ghost_txn.payload)["source"]["xid"].as_u64().unwrap();
    // The offset holds the ghosts before the old primary dies.
    let offset_path = dir.path().join("offset.json");
    wait_until(
        "the ghosts in the offset",
        Duration::from_secs(60),
        || async {
            let text = std::fs::read_to_string(&offset_path).unwrap_or_default();
            let record: serde_json::Value = serde_json::from_str(&text).ok()?;
            let at = lsn(record["commit_end_lsn"].as_str()?);
            (at > lsn(&ghost_txn_lsn)).then_some(text)
        },
    )
    .await;

    pair.primary.kill();
    pair.standby.start();
    pair.standby.promote();
    let marker = ghost_marker(&js, &log).await;
    let range = json(&marker.payload);
    assert_eq!(marker.header("Sluice-Op"), Some("ghost-range"));
    assert_eq!(range["pipeline"], "slot_fo");
    assert_eq!(
        (
            range["old_timeline"].as_u64(),
            range["new_timeline"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let switch_point = lsn(range["switch_point"].as_str().unwrap());
    let ghost_end = lsn(range["ghost_end"].as_str().unwrap());
    assert!(switch_point < ghost_start, "{range}");
    assert!(ghost_end > lsn(&ghost_txn_lsn), "{range}");
    assert_eq!(
        marker.msg_id(),
        Some(format!("slot_fo:ghost:1:2:{:016X}", switch_point.0).as_str())
    );

    // The promoted server repeats the message and the transaction at the
    // ghosts' LSNs, the transaction with the ghost's xid.
    pair.standby.psql("app", "CHECKPOINT");
    let next = next_xid(&pair.standby);
    assert!(
        next <= ghost_xid,
        "the promoted server is past xid {ghost_xid}: {next}"
    );
    for _ in next..ghost_xid {
        pair.standby.psql("app", "SELECT pg_current_xact_id()");
    }
    assert_eq!(next_xid(&pair.standby), ghost_xid);
    align_wal(&pair.standby, ghost_start);
    pair.standby.psql(
        "app",
        "SELECT pg_logical_emit_message(false, 'collide', 'fresh-m')",
    );
    pair.standby
        .psql("app", "INSERT INTO coll VALUES (1000000, 'fresh')");
    pair.standby.psql(
        "app",
        "INSERT INTO items SELECT g, 'y' FROM generate_series(200, 299) g",
    );
    wait_until(
        "the new primary's rows",
        Duration::from_secs(120),
        || async { max_item(&js).await >= 299 },
    )
    .await;
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(30));
    let log = sluice_log(dir.path());
    assert!(status.success(), "{log}");
    assert!(log.contains("ghost changes"), "{log}");

    let messages = read_stream(&js, "FO").await;
    // The collisions happened: same LSN (and xid) as the ghosts, and both
    // are in the stream, the new ones with the timeline in their ids.
    let collide = find(&messages, "cdc.messages", |p| {
        p["message"]["prefix"] == "collide"
    });
    let contents: Vec<_> = collide
        .iter()
        .map(|m| {
            json(&m.payload)["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        contents,
        ["Z2hvc3QtbQ==", "ZnJlc2gtbQ=="],
        "ghost-m, then fresh-m"
    );
    assert_eq!(
        collide[0].header("Sluice-Commit-Lsn"),
        collide[1].header("Sluice-Commit-Lsn"),
        "the message was written at the ghost's LSN"
    );
    let colls = find(&messages, "cdc.public.coll", |_| true);
    assert_eq!(colls.len(), 2, "the ghost and the new transaction");
    let notes: Vec<_> = colls
        .iter()
        .map(|m| {
            json(&m.payload)["after"]["note"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(notes, ["ghost", "fresh"]);
    assert_eq!(
        colls[1].header("Sluice-Commit-Lsn"),
        Some(ghost_txn_lsn.as_str())
    );
    assert_eq!(
        json(&colls[1].payload)["source"]["xid"].as_u64(),
        Some(ghost_xid)
    );
    for new in [collide[1], colls[1]] {
        let id = new.msg_id().unwrap();
        assert!(id.contains("@2:"), "{id}");
        let old = if new.subject == "cdc.messages" {
            collide[0]
        } else {
            colls[0]
        };
        assert_eq!(old.msg_id().unwrap(), id.replace("@2", ""));
        assert!(new.sequence > marker.sequence);
    }
    // The marker comes before anything of the new timeline, once.
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.subject == "cdc.ghosts")
            .count(),
        1
    );
    let first_new = messages
        .iter()
        .find(|m| m.msg_id().is_some_and(|id| id.contains("@2:")))
        .unwrap();
    assert!(marker.sequence < first_new.sequence);
    // Every row of the new primary exactly once; the ghost rows once too,
    // all inside the marked range.
    let truth: Vec<i64> = pair
        .standby
        .psql("app", "SELECT id FROM items ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(truth, (0..100).chain(200..300).collect::<Vec<i64>>());
    let items = find(&messages, "cdc.public.items", |_| true);
    let mut seen = BTreeMap::new();
    for m in &items {
        *seen
            .entry(json(&m.payload)["after"]["id"].as_i64().unwrap())
            .or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "rows more than once");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..300).collect::<Vec<i64>>()
    );
    for m in items
        .iter()
        .filter(|m| json(&m.payload)["after"]["email"] == "ghost")
    {
        let at = lsn(m.header("Sluice-Commit-Lsn").unwrap());
        assert!(
            switch_point < at && at <= ghost_end,
            "{at} outside the marked range"
        );
    }
    let offset = std::fs::read_to_string(&offset_path).unwrap();
    let record: serde_json::Value = serde_json::from_str(&offset).unwrap();
    assert_eq!(record["timeline"], 2, "{offset}");

    // A restart after the mark: the offset is on the new timeline, so there
    // is nothing to mark or refuse; streaming goes on, every row once.
    let log = run_for_rows(&manifest, dir.path(), &pair.standby, &js, (300, 399)).await;
    assert!(!log.contains("ghost changes"), "{log}");
    let messages = read_stream(&js, "FO").await;
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.subject == "cdc.ghosts")
            .count(),
        1
    );
    let ids = stream_ids(&js).await;
    let rows: Vec<_> = ids.range(0..1_000_000).collect();
    assert!(rows.iter().all(|(_, n)| **n == 1), "{rows:?}");
    assert_eq!(rows.len(), 400, "{rows:?}");
}

/// The start-up path: the host is down during the failover, and its `file`
/// offset holds ghost changes. Start-up marks the range before streaming
/// the new timeline. A second start from that same old offset (as after a
/// crash before the switch was recorded) marks it again, and JetStream
/// drops the repeated marker: one marker in the stream, every row once.
#[tokio::test(flavor = "multi_thread")]
async fn ghost_changes_found_at_start_up_are_marked_once() {
    if !ha_or_skip("ghost_changes_found_at_start_up_are_marked_once") {
        return;
    }
    let GhostRun {
        mut pair,
        js,
        dir,
        manifest,
        log_path,
        mut host,
        _nats,
    } = GhostRun::start(
        "CREATE TABLE items (id bigint PRIMARY KEY, email text);
         CREATE TABLE coll (id bigint PRIMARY KEY, note text)",
    )
    .await;
    pair.standby.stop();
    pair.primary.psql(
        "app",
        "INSERT INTO items SELECT g, 'ghost' FROM generate_series(100, 199) g",
    );
    wait_until("the ghost rows", Duration::from_secs(60), || async {
        max_item(&js).await >= 199
    })
    .await;
    signal(&host, "-TERM");
    assert!(wait_exit(&mut host, Duration::from_secs(30)).success());
    let offset_path = dir.path().join("offset.json");
    let old_offset = std::fs::read_to_string(&offset_path).unwrap();

    pair.primary.kill();
    pair.standby.start();
    pair.standby.promote();
    let mut host = start_sluice(&manifest, dir.path());
    let marker = ghost_marker(&js, &log_path).await;
    let range = json(&marker.payload);
    assert_eq!(range["old_timeline"], 1, "{range}");
    assert_eq!(range["new_timeline"], 2, "{range}");
    let old: serde_json::Value = serde_json::from_str(&old_offset).unwrap();
    assert_eq!(range["ghost_end"], old["commit_end_lsn"], "{range}");
    wait_until("the switch recorded", Duration::from_secs(60), || async {
        let text = std::fs::read_to_string(&offset_path).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|r| r["timeline"] == 2)
    })
    .await;
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(30));
    let log = sluice_log(dir.path());
    assert!(status.success(), "{log}");
    assert!(
        log.contains("publishing a marker naming the range"),
        "{log}"
    );

    // Again from the old timeline's offset: marked again, stored once.
    std::fs::write(&offset_path, &old_offset).unwrap();
    let log = run_for_rows(&manifest, dir.path(), &pair.standby, &js, (200, 299)).await;
    assert!(
        log.contains("publishing a marker naming the range"),
        "{log}"
    );
    let messages = read_stream(&js, "FO").await;
    let markers: Vec<_> = messages
        .iter()
        .filter(|m| m.subject == "cdc.ghosts")
        .collect();
    assert_eq!(markers.len(), 1, "the repeated marker is de-duplicated");
    let first_new = messages
        .iter()
        .find(|m| m.msg_id().is_some_and(|id| id.contains("@2:")))
        .expect("a message from the new primary");
    assert!(markers[0].sequence < first_new.sequence);
    let ids = stream_ids(&js).await;
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    assert_eq!(
        ids.keys().copied().collect::<Vec<_>>(),
        (0..300).collect::<Vec<i64>>()
    );
}
