//! Flush modes and offset stores end to end (DESIGN.md §3), through the
//! `sluice` binary against a real PostgreSQL and a real nats-server.
//!
//! What is asserted is what an operator sees: the slot's
//! `confirmed_flush_lsn` and the WAL it retains, the offset file, and the
//! messages in the JetStream stream — every committed change exactly once,
//! also after the host or the server was killed.

use crate::support::pipeline::{Host, signal, wait_exit};
use crate::support::{Lazy, plugin_path, poll_until, wait_until};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::nats::{NatsServer, read_stream, stream_len};
use crate::support::postgres::{ClusterOptions, PgCluster};

/// One pipeline's manifest, slot and stream, in a database of its own (or
/// one it shares, `Pipeline::in_database`).
struct Pipeline {
    db: String,
    slot: String,
    stream: String,
    manifest: PathBuf,
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Pipeline {
    /// `position` is the body of the manifest's `[position]` section.
    fn new(pg: &PgCluster, nats: &NatsServer, name: &str, tables: &[&str], position: &str) -> Self {
        let db = pg.create_database(name);
        Pipeline::in_database(pg, nats, &db, name, tables, position)
    }

    fn in_database(
        pg: &PgCluster,
        nats: &NatsServer,
        db: &str,
        name: &str,
        tables: &[&str],
        position: &str,
    ) -> Self {
        let slot = crate::support::unique(&format!("slot_{name}"));
        let dir = tempfile::tempdir().unwrap();
        let tables: Vec<String> = tables.iter().map(|t| format!("\"public.{t}\"")).collect();
        let stream = name.to_uppercase();
        let manifest = format!(
            r#"
[source]
url = "{url}"
publication = "pub_{name}"
slot = "{slot}"
create-publication = [{tables}]

[position]
status-interval = "100ms"
{position}

[nats]
url = "{nats}"
stream = "{stream}"
subjects = ["{name}.>"]

[sink]
name = "json"
path = "{json}"
config = {{ subject-prefix = "{name}" }}

[pipeline]
shutdown-timeout = "10s"
"#,
            url = pg.superuser_url(db),
            nats = nats.url(),
            tables = tables.join(", "),
            json = plugin_path("json-sink").display(),
        );
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, manifest).unwrap();
        Pipeline {
            db: db.to_owned(),
            slot,
            stream,
            manifest: path,
            dir,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    /// The manifest's folder (a relative `store-path` is resolved there).
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn start(&self) -> Host {
        Host(crate::support::pipeline::spawn_logged(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["run", self.manifest.to_str().unwrap()])
                .env("XDG_CACHE_HOME", self.cache.path())
                .env("SLUICE_LOG", "warn")
                .stdout(Stdio::null()),
            "flush",
        ))
    }

    /// Waits until the slot exists and a walsender streams from it.
    async fn wait_streaming(&self, pg: &PgCluster) {
        // A slot being created is active too, before its starting point
        // (`confirmed_flush_lsn`) exists; a write committed then is not in it.
        self.wait_slot(
            pg,
            "active AND confirmed_flush_lsn IS NOT NULL",
            Duration::from_secs(60),
        )
        .await;
    }

    /// Waits until no walsender holds the slot.
    async fn wait_inactive(&self, pg: &PgCluster) {
        self.wait_slot(pg, "NOT active", Duration::from_secs(30))
            .await;
    }

    async fn wait_slot(&self, pg: &PgCluster, condition: &str, timeout: Duration) {
        let q = format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND {condition}",
            self.slot
        );
        wait_until(
            &format!("slot {} {condition}", self.slot),
            timeout,
            || async { pg.psql(&self.db, &q).trim() == "1" },
        )
        .await;
    }

    fn confirmed(&self, pg: &PgCluster) -> String {
        pg.psql(
            &self.db,
            &format!(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
                self.slot
            ),
        )
    }

    /// Bytes of WAL the slot holds back: from its `restart_lsn` to the
    /// server's current WAL end.
    fn retained(&self, pg: &PgCluster) -> i64 {
        pg.psql(
            &self.db,
            &format!(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 \
                 FROM pg_replication_slots WHERE slot_name = '{}'",
                self.slot
            ),
        )
        .parse()
        .unwrap()
    }
}

fn json(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload).unwrap()
}

/// The primary keys of the rows of `table` in the stream, with how often
/// each occurs.
async fn keys_in_stream(nats: &NatsServer, stream: &str, table: &str) -> BTreeMap<i64, usize> {
    let js = nats.jetstream().await;
    let mut keys = BTreeMap::new();
    for m in read_stream(&js, stream).await {
        let body = json(&m.payload);
        if body["source"]["table"] == table {
            let id = body["after"]["id"].as_i64().expect("an integer id");
            *keys.entry(id).or_insert(0) += 1;
        }
    }
    keys
}

/// A small xorshift generator: random kill moments without a dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        println!("random seed {seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A private cluster whose walsenders send keepalives every second
/// (`wal_sender_timeout / 2`) instead of every 30 s.
fn fast_keepalive_cluster() -> PgCluster {
    PgCluster::start(ClusterOptions {
        tls: false,
        extra_conf: vec!["wal_sender_timeout = '2s'".into()],
        ..ClusterOptions::default()
    })
}

const MB: i64 = 1 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn keepalive_flush_lets_the_server_recycle_wal_of_unpublished_tables() {
    let pg = fast_keepalive_cluster();
    let nats = NatsServer::launch();
    let db = pg.create_database("keepalive");
    pg.psql(
        &db,
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         CREATE TABLE b (id int8 PRIMARY KEY, v text);",
    );
    // Both pipelines publish table A only, from the same database, so they
    // see the same WAL written for B.
    let driver = Pipeline::in_database(
        &pg,
        &nats,
        &db,
        "driver",
        &["a"],
        "flush = \"connector-and-driver\"\nstore = \"file\"\nstore-path = \"offset.json\"",
    );
    let connector = Pipeline::in_database(
        &pg,
        &nats,
        &db,
        "connector",
        &["a"],
        "flush = \"connector\"\nstore = \"file\"\nstore-path = \"offset.json\"",
    );
    let mut children = [driver.start(), connector.start()];
    driver.wait_streaming(&pg).await;
    connector.wait_streaming(&pg).await;
    // One change to A, so that both slots have confirmed something.
    pg.psql(&db, "INSERT INTO a VALUES (1, 'one')");
    let js = nats.jetstream().await;
    wait_until(
        "the row of A in both streams",
        Duration::from_secs(30),
        || async {
            stream_len(&js, "DRIVER").await == 1 && stream_len(&js, "CONNECTOR").await == 1
        },
    )
    .await;
    // The offset is written before the slot is told; once both agree, the
    // connector slot has confirmed the change to A.
    wait_until(
        "the connector slot to confirm the change to A",
        Duration::from_secs(30),
        || async {
            std::fs::read(connector.dir().join("offset.json")).is_ok_and(|bytes| {
                serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|offset| {
                    offset["commit_end_lsn"] == connector.confirmed(&pg).as_str()
                })
            })
        },
    )
    .await;
    let connector_confirmed = connector.confirmed(&pg);

    // ≥ 200 MB of WAL for B, in transactions of ~25 MB of rows of 1000
    // bytes (below the TOAST threshold: stored uncompressed).
    let start_lsn = pg.psql(&db, "SELECT pg_current_wal_lsn()");
    let mut next_id = 0i64;
    loop {
        let written: i64 = pg
            .psql(
                &db,
                &format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start_lsn}')::int8"),
            )
            .parse()
            .unwrap();
        if written >= 200 * MB {
            println!("WAL written for table B: {} MB", written / MB);
            break;
        }
        pg.psql(
            &db,
            &format!(
                "INSERT INTO b SELECT g, repeat(md5(g::text), 31) \
                 FROM generate_series({}, {}) g",
                next_id,
                next_id + 24_999
            ),
        );
        next_id += 25_000;
    }
    // A checkpoint logs the running transactions, which is where a slot's
    // restart_lsn can move to once its confirmed position passes it.
    pg.psql(&db, "CHECKPOINT");
    let wal_end = pg.psql(&db, "SELECT pg_current_wal_lsn()");
    wait_until(
        "connector-and-driver to confirm past the WAL of B",
        Duration::from_secs(60),
        || async {
            pg.psql(
                &db,
                &format!(
                    "SELECT confirmed_flush_lsn >= '{wal_end}' FROM pg_replication_slots \
                     WHERE slot_name = '{}'",
                    driver.slot
                ),
            ) == "t"
        },
    )
    .await;
    // restart_lsn follows on the next running-transactions record after
    // the confirmation: checkpoint again until it does.
    let what = Lazy(|| {
        let retained = driver.retained(&pg) / MB;
        format!("the connector-and-driver slot to retain < 64 MB (it retains {retained} MB)")
    });
    wait_until(what, Duration::from_secs(60), || async {
        if driver.retained(&pg) < 64 * MB {
            return true;
        }
        pg.psql(&db, "CHECKPOINT");
        false
    })
    .await;
    let (driver_retained, driver_confirmed) = (driver.retained(&pg), driver.confirmed(&pg));
    let (connector_retained, connector_after) = (connector.retained(&pg), connector.confirmed(&pg));
    println!(
        "connector-and-driver: retained WAL {driver_retained} bytes ({} MB), confirmed_flush_lsn {driver_confirmed} (WAL end {wal_end})",
        driver_retained / MB
    );
    println!(
        "connector: retained WAL {connector_retained} bytes ({} MB), confirmed_flush_lsn {connector_after} (was {connector_confirmed})",
        connector_retained / MB
    );
    assert!(driver_retained < 64 * MB);
    assert_eq!(
        connector_after, connector_confirmed,
        "connector mode must not move the slot without a change to A"
    );
    assert!(connector_retained >= 200 * MB, "{connector_retained}");

    // The offset file of connector-and-driver holds the keepalive position
    // the slot was given (written first, then confirmed).
    for child in &mut children {
        signal(child, "-TERM");
        assert!(wait_exit(child, Duration::from_secs(30)).success());
    }
    driver.wait_inactive(&pg).await;
    let offset = json(&std::fs::read(driver.dir().join("offset.json")).unwrap());
    assert_eq!(offset["commit_end_lsn"], driver.confirmed(&pg).as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_flush_never_moves_the_slot_and_a_replay_is_deduplicated() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let p = Pipeline::new(pg, &nats, "manual", &["items"], "flush = \"manual\"");
    pg.psql(&p.db, "CREATE TABLE items (id int PRIMARY KEY, v text)");
    let mut child = p.start();
    p.wait_streaming(pg).await;
    let before = p.confirmed(pg);
    for t in 0..10 {
        pg.psql(
            &p.db,
            &format!(
                "INSERT INTO items SELECT g, 'x' FROM generate_series({}, {}) g",
                t * 10,
                t * 10 + 9
            ),
        );
    }
    let js = nats.jetstream().await;
    wait_until("100 messages", Duration::from_secs(60), || async {
        stream_len(&js, "MANUAL").await >= 100
    })
    .await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    p.wait_inactive(pg).await;
    assert_eq!(p.confirmed(pg), before, "manual flush moved the slot");

    // The restart streams from the unmoved slot: all 100 rows again, which
    // JetStream de-duplicates. A new row after them shows they were
    // processed (messages leave in commit order).
    let mut child = p.start();
    p.wait_streaming(pg).await;
    pg.psql(&p.db, "INSERT INTO items VALUES (1000, 'after')");
    wait_until(
        "the row inserted after the restart",
        Duration::from_secs(60),
        || async {
            keys_in_stream(&nats, "MANUAL", "items")
                .await
                .contains_key(&1000)
        },
    )
    .await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    p.wait_inactive(pg).await;
    let keys = keys_in_stream(&nats, "MANUAL", "items").await;
    assert_eq!(stream_len(&js, "MANUAL").await, 101);
    assert!(keys.values().all(|n| *n == 1), "{keys:?}");
    assert_eq!(p.confirmed(pg), before, "manual flush moved the slot");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_offset_file_matches_the_slot_after_a_clean_stop() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let p = Pipeline::new(
        pg,
        &nats,
        "offsetfile",
        &["items"],
        "flush = \"connector\"\nstore = \"file\"\nstore-path = \"state/offset.json\"",
    );
    std::fs::create_dir_all(p.dir().join("state")).unwrap();
    pg.psql(&p.db, "CREATE TABLE items (id int PRIMARY KEY, v text)");
    let mut child = p.start();
    p.wait_streaming(pg).await;
    for t in 0..20 {
        pg.psql(&p.db, &format!("INSERT INTO items VALUES ({t}, 'x')"));
    }
    let js = nats.jetstream().await;
    wait_until("20 messages", Duration::from_secs(60), || async {
        stream_len(&js, "OFFSETFILE").await >= 20
    })
    .await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    p.wait_inactive(pg).await;
    let offset = json(&std::fs::read(p.dir().join("state/offset.json")).unwrap());
    let confirmed = p.confirmed(pg);
    println!("offset file: {offset}");
    assert_eq!(offset["commit_end_lsn"], confirmed.as_str());
    assert_eq!(offset["slot"], p.slot.as_str());
    // The last transaction's own details are kept with its position.
    assert!(offset["xid"].is_u64(), "{offset}");
    let system_id = pg.psql(&p.db, "SELECT system_identifier FROM pg_control_system()");
    assert_eq!(offset["system_id"], system_id.as_str());
    // Its commit record ends where the slot is: the last row's transaction.
    let last_commit_end = pg.psql(
        &p.db,
        &format!("SELECT '{confirmed}'::pg_lsn > pg_current_wal_lsn() - 1000000"),
    );
    assert_eq!(last_commit_end, "t");
}

/// Writes interleaved transactions to A (rows with increasing ids) and B
/// until stopped; returns the ids committed to A.
fn interleaved_writer(
    pg: Arc<dyn Fn(&str) + Send + Sync>,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicI64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut t = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let id = next.load(Ordering::Relaxed);
            let sql = match t % 3 {
                // A alone, several rows.
                0 => format!(
                    "INSERT INTO a SELECT g, 'a' FROM generate_series({id}, {}) g",
                    id + 4
                ),
                // B alone: WAL the publication does not see.
                1 => format!(
                    "INSERT INTO b SELECT g, repeat('b', 500) FROM generate_series({}, {}) g",
                    t * 100,
                    t * 100 + 99
                ),
                // Both in one transaction.
                _ => format!(
                    "INSERT INTO b VALUES ({}, 'b'); INSERT INTO a SELECT g, 'a' FROM generate_series({id}, {}) g",
                    t * 100,
                    id + 4
                ),
            };
            pg(&sql);
            if t % 3 != 1 {
                next.store(id + 5, Ordering::Relaxed);
            }
            t += 1;
        }
    })
}

/// Kills the host with SIGKILL at random moments while A and B are
/// written, then checks that every committed row of A is in the stream
/// exactly once.
async fn no_loss_under_repeated_kills(store: &str, name: &str) {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let p = Pipeline::new(
        pg,
        &nats,
        name,
        &["a"],
        &format!("flush = \"connector-and-driver\"\n{store}"),
    );
    pg.psql(
        &p.db,
        "CREATE TABLE a (id int8 PRIMARY KEY, v text);
         CREATE TABLE b (id int8 PRIMARY KEY, v text);",
    );
    let mut child = p.start();
    p.wait_streaming(pg).await;
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicI64::new(0));
    let db = p.db.clone();
    let writer = interleaved_writer(
        Arc::new(move |sql| {
            PgCluster::shared().psql(&db, sql);
        }),
        stop.clone(),
        next.clone(),
    );
    let mut rng = Rng::seeded();
    let started = Instant::now();
    for round in 0..20 {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(900))).await;
        signal(&child, "-KILL");
        let _ = wait_exit(&mut child, Duration::from_secs(10));
        p.wait_inactive(pg).await;
        child = p.start();
        p.wait_streaming(pg).await;
        if round == 19 {
            println!(
                "{name}: 20 kills in {:?}, {} rows written to A so far",
                started.elapsed(),
                next.load(Ordering::Relaxed)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let written = next.load(Ordering::Relaxed);
    // A last row after everything: once it is in the stream, everything
    // before it was processed.
    pg.psql(&p.db, &format!("INSERT INTO a VALUES ({written}, 'last')"));
    wait_until("the last row", Duration::from_secs(60), || async {
        keys_in_stream(&nats, &p.stream, "a")
            .await
            .contains_key(&written)
    })
    .await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let keys = keys_in_stream(&nats, &p.stream, "a").await;
    let expected: Vec<i64> = (0..=written).collect();
    let got: Vec<i64> = keys.keys().copied().collect();
    assert_eq!(got, expected, "every committed row of A is in the stream");
    let repeated: Vec<_> = keys.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "rows in the stream more than once: {repeated:?}"
    );
    println!(
        "{name}: {} rows of A, each exactly once, in {:?}",
        written + 1,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_loss_under_repeated_kills_with_the_file_store() {
    no_loss_under_repeated_kills("store = \"file\"\nstore-path = \"offset.json\"", "killfile")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_loss_under_repeated_kills_with_the_memory_store() {
    no_loss_under_repeated_kills("store = \"memory\"", "killmemory").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_loss_under_repeated_kills_with_the_nats_kv_store() {
    no_loss_under_repeated_kills(
        "store = \"nats-kv\"\nstore-bucket = \"offsets_killkv\"",
        "killkv",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_crash_mid_stream_loses_and_repeats_nothing() {
    // Synchronous commit: the harness turns it off for speed, and then a
    // commit psql saw succeed may be lost with the server's WAL buffers.
    let mut pg = PgCluster::start(ClusterOptions {
        tls: false,
        extra_conf: vec!["synchronous_commit = on".into()],
        ..ClusterOptions::default()
    });
    let nats = NatsServer::launch();
    let p = Pipeline::new(
        &pg,
        &nats,
        "pgcrash",
        &["items"],
        "flush = \"connector-and-driver\"\nstore = \"file\"\nstore-path = \"offset.json\"",
    );
    pg.psql(&p.db, "CREATE TABLE items (id int8 PRIMARY KEY, v text)");
    let mut child = p.start();
    p.wait_streaming(&pg).await;
    let js = nats.jetstream().await;
    let mut next = 0i64;
    let write = |pg: &PgCluster, next: &mut i64, n: i64| {
        for _ in 0..n {
            pg.psql(
                &p.db,
                &format!(
                    "INSERT INTO items SELECT g, 'x' FROM generate_series({}, {}) g",
                    *next,
                    *next + 9
                ),
            );
            *next += 10;
        }
    };
    for round in 0..3 {
        write(&pg, &mut next, 30);
        // Crash once some but not necessarily all of it is in the stream.
        let seen = next - 150;
        wait_until("part of the rows", Duration::from_secs(60), || async {
            stream_len(&js, "PGCRASH").await >= seen as u64
        })
        .await;
        pg.crash();
        // The host keeps retrying while the server is down (not a wait:
        // the outage lasts 2 s on purpose).
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "sluice exited while PostgreSQL was down (round {round})"
        );
        pg.restart();
        p.wait_streaming(&pg).await;
    }
    write(&pg, &mut next, 10);
    pg.psql(&p.db, &format!("INSERT INTO items VALUES ({next}, 'last')"));
    // The table is the truth: every row it holds, in the stream once.
    let in_table: Vec<i64> = pg
        .psql(&p.db, "SELECT id FROM items ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(
        in_table,
        (0..=next).collect::<Vec<_>>(),
        "rows lost by the server"
    );
    // On a timeout, the checks below say what is missing.
    poll_until(Duration::from_secs(60), || async {
        keys_in_stream(&nats, "PGCRASH", "items")
            .await
            .contains_key(&next)
    })
    .await;
    let keys = keys_in_stream(&nats, "PGCRASH", "items").await;
    let missing: Vec<i64> = in_table
        .iter()
        .filter(|k| !keys.contains_key(k))
        .copied()
        .collect();
    let repeated: Vec<_> = keys.iter().filter(|(_, n)| **n != 1).collect();
    println!(
        "after 3 server crashes: {} rows in the table, {} in the stream, {} missing, {} repeated",
        in_table.len(),
        keys.len(),
        missing.len(),
        repeated.len()
    );
    assert!(missing.is_empty(), "missing from the stream: {missing:?}");
    assert!(
        repeated.is_empty(),
        "in the stream more than once: {repeated:?}"
    );
    assert_eq!(stream_len(&js, "PGCRASH").await, next as u64 + 1);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}
