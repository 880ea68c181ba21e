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
use crate::support::wait_until;
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

fn json(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload).unwrap()
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
    let log = std::fs::File::create(dir.join("sluice.log")).unwrap();
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
