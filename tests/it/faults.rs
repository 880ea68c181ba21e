//! `sluice run` under faults, end to end: a real PostgreSQL, a real
//! nats-server and the example plugins as components, with the `sluice`
//! binary run as a user runs it.
//!
//! - NATS goes away for ten seconds mid-stream: nothing is lost or
//!   duplicated, and meanwhile the slot is never confirmed past what the
//!   stream holds.
//! - One transaction of two million rows goes through in bounded memory.
//! - The walsender is terminated mid-stream, between transactions and in
//!   the middle of a large one: the host reconnects and every row arrives
//!   exactly once.
//! - The host is killed while pgbench runs: replaying the stream gives
//!   every `pgbench_history` row once and every account's balance.
//! - A node of a three-node JetStream cluster is killed mid-stream, first
//!   the one leading the pipeline's stream, then the one leading the offset
//!   store's bucket, then two at once (no quorum): the host keeps running,
//!   every row arrives exactly once, and the slot is confirmed to the end
//!   once the cluster has healed; a host started while a node is down
//!   resumes where the last one stopped.
//! - The host is started while NATS and PostgreSQL are both down: it waits
//!   for each in turn (saying so once), stops cleanly when told to while
//!   waiting, and streams once they are up; nor does a stop request wait
//!   for a PostgreSQL that accepts the connection and never answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use futures_util::StreamExt;

use crate::support::metrics::{free_address, sample, scrape};
use crate::support::nats::{NatsCluster, NatsServer, stream_len, try_stream_len};
use crate::support::pipeline::{
    Host, ManifestParts, Pipeline, parse_lsn, passthrough_then_json, proc_status_bytes, signal,
    wait_exit,
};
use crate::support::postgres::{ClusterOptions, PgCluster};
use crate::support::{wait_until, wait_until_blocking, with_log};

/// A message read back from the stream, with the time JetStream stored it.
#[derive(Debug)]
struct Stored {
    /// Unix time in nanoseconds.
    stored_at: i128,
    /// `Sluice-Commit-Lsn`: where the transaction's commit record starts.
    commit_lsn: u64,
    /// The row's `id` (after image).
    id: i64,
}

/// Every message of `stream`, in order, through an ordered consumer (one
/// request per message would take minutes for the larger tests).
async fn read_all(js: &jetstream::Context, stream: &str) -> Vec<Stored> {
    let handle = js.get_stream(stream).await.expect("look up the stream");
    let count = stream_len(js, stream).await as usize;
    let consumer = handle
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("create an ordered consumer");
    let mut messages = consumer.messages().await.expect("consume").take(count);
    let mut out = Vec::with_capacity(count);
    while let Some(m) = messages.next().await {
        let m = m.expect("read a message");
        let info = m.info().expect("JetStream metadata");
        let commit = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Sluice-Commit-Lsn"))
            .expect("a Sluice-Commit-Lsn header");
        let body: serde_json::Value = serde_json::from_slice(&m.payload).expect("JSON payload");
        out.push(Stored {
            stored_at: info.published.unix_timestamp_nanos(),
            commit_lsn: parse_lsn(commit.as_str()),
            id: body["after"]["id"].as_i64().expect("after.id"),
        });
    }
    out
}

fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as i128
}

fn passthrough_pipeline(pg: &PgCluster, nats: &NatsServer, name: &str) -> Pipeline {
    let p = Pipeline::with(
        pg,
        nats,
        name,
        &["items"],
        ManifestParts {
            plugins: passthrough_then_json(),
            ..ManifestParts::default()
        },
    );
    pg.psql(&p.db, "CREATE TABLE items (id int PRIMARY KEY, v text)");
    p
}

/// Writes transaction `t`: ten rows, ids `t * 10 + i`, in one psql call.
fn write_transaction(db: &str, t: i64) {
    let values: Vec<String> = (0..10)
        .map(|i| format!("({}, 'row {t}.{i}')", t * 10 + i))
        .collect();
    PgCluster::shared().psql(
        db,
        &format!("INSERT INTO items VALUES {}", values.join(",")),
    );
}

/// Writes transactions `0..100` of ten rows each (ids `t * 10 + i`), one
/// psql call (one transaction) each; before transaction 50 it waits until
/// `halfway` is set, so that the second half is written after the fault.
fn write_in_two_halves(db: String, halfway: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for t in 0..100 {
            if t == 50 {
                wait_until_blocking("the fault", Duration::from_secs(120), || {
                    halfway.load(Ordering::SeqCst)
                });
            }
            write_transaction(&db, t);
        }
    })
}

/// Asserts that `stored` holds ids `0..n` exactly once each.
fn assert_exactly_once(stored: &[Stored], n: i64) {
    let mut ids: Vec<i64> = stored.iter().map(|s| s.id).collect();
    ids.sort_unstable();
    let duplicates = ids.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(duplicates, 0, "{duplicates} rows are in the stream twice");
    assert_eq!(ids.len() as i64, n, "every row exactly once");
    assert_eq!(ids, (0..n).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_outage_loses_nothing_and_never_confirms_what_is_not_stored() {
    let pg = PgCluster::shared();
    let mut nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let p = passthrough_pipeline(pg, &nats, "natsdown");
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;

    let stopped = Arc::new(AtomicBool::new(false));
    let writer = write_in_two_halves(p.db.clone(), stopped.clone());
    let js = nats.jetstream().await;
    wait_until(
        "200 rows in the stream",
        Duration::from_secs(60),
        || async { stream_len(&js, "NATSDOWN").await >= 200 },
    )
    .await;
    drop(js);

    // NATS is killed (no goodbye to clients) while the first half may still
    // be in flight, and the second half is written while it is down.
    nats.stop();
    stopped.store(true, Ordering::SeqCst);
    let outage = Instant::now();
    let mut confirmed_during_outage = 0u64;
    while outage.elapsed() < Duration::from_secs(10) {
        let c = parse_lsn(&p.confirmed(pg));
        confirmed_during_outage = confirmed_during_outage.max(c);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "sluice exited while NATS was down"
    );
    let restarted_at = now_nanos();
    nats.start();

    writer.join().unwrap();
    let js = nats.jetstream().await;
    wait_until("all 1000 rows", Duration::from_secs(120), || async {
        stream_len(&js, "NATSDOWN").await >= 1000
    })
    .await;
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");

    let stored = read_all(&js, "NATSDOWN").await;
    assert_exactly_once(&stored, 1000);
    // Nothing can be stored while NATS is down: what was stored before
    // `restarted_at` was stored before the outage.
    let before: Vec<&Stored> = stored
        .iter()
        .filter(|s| s.stored_at < restarted_at)
        .collect();
    let after = stored.len() - before.len();
    assert!(
        after >= 500,
        "the second half was written during the outage, so it is stored after it (only {after} rows were)"
    );
    // The slot confirms commit END LSNs; a transaction whose commit record
    // starts before the confirmed position is one the server will not send
    // again, so it must have been in the stream already.
    let unstored: BTreeMap<u64, usize> = stored
        .iter()
        .filter(|s| s.stored_at >= restarted_at && s.commit_lsn < confirmed_during_outage)
        .fold(BTreeMap::new(), |mut m, s| {
            *m.entry(s.commit_lsn).or_default() += 1;
            m
        });
    assert!(
        unstored.is_empty(),
        "while NATS was down the slot was confirmed at {confirmed_during_outage:X}, past transactions \
         (commit LSN → rows) not yet stored: {unstored:X?}"
    );
    eprintln!(
        "NATS outage: {} rows stored before it, {after} after; highest confirmed_flush_lsn during it {:X}/{:X}",
        before.len(),
        confirmed_during_outage >> 32,
        confirmed_during_outage & 0xFFFF_FFFF
    );
}

/// Writes transactions of ten rows each (ids `t * 10 + i`, from `t =
/// first`) until `stop` is set; returns the id after the last row.
fn write_until(db: String, first: i64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<i64> {
    std::thread::spawn(move || {
        let mut t = first;
        while !stop.load(Ordering::SeqCst) {
            write_transaction(&db, t);
            t += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        t * 10
    })
}

/// Stops `writer` and waits until the stream holds every row it wrote;
/// returns the id after the last one.
async fn finish_writing(
    stop: Arc<AtomicBool>,
    writer: std::thread::JoinHandle<i64>,
    js: &jetstream::Context,
    stream: &str,
) -> i64 {
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    wait_until(
        format!("all {written} rows in the stream"),
        Duration::from_secs(120),
        || async { try_stream_len(js, stream).await >= Some(written as u64) },
    )
    .await;
    written
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_a_jetstream_node_loses_nothing_and_stops_nothing() {
    let pg = PgCluster::shared();
    let mut cluster = NatsCluster::launch().await;
    let urls = cluster.url_list();
    let metrics = free_address();
    let p = Pipeline::with(
        pg,
        cluster.node(0),
        "jscluster",
        &["items"],
        ManifestParts {
            plugins: passthrough_then_json(),
            nats_url: Some(urls),
            nats: "replicas = 3".to_owned(),
            position: "store = \"nats-kv\"".to_owned(),
            extra: format!("[metrics]\naddress = \"{metrics}\"\n"),
            ..ManifestParts::default()
        },
    );
    pg.psql(&p.db, "CREATE TABLE items (id int PRIMARY KEY, v text)");
    let cache = tempfile::tempdir().unwrap();
    let mut host = p.start(cache.path());
    p.wait_streaming(pg).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_until(p.db.clone(), 0, stop.clone());
    let js = cluster.jetstream().await;
    let mut stored = 0;
    // The stream's leader first, then the offset bucket's, then two nodes
    // at once (no quorum: nothing can be stored, nor any offset written):
    // killed without a goodbye while rows keep coming, and brought back.
    for fault in ["the stream's leader", "the bucket's leader", "two nodes"] {
        stored += 100;
        wait_until(
            format!("{stored} rows in the stream"),
            Duration::from_secs(60),
            || async { try_stream_len(&js, &p.stream).await >= Some(stored) },
        )
        .await;
        let killed = match fault {
            "the stream's leader" => vec![cluster.leader_of(&p.stream).await],
            "the bucket's leader" => vec![cluster.leader_of("KV_sluice_offsets").await],
            _ => {
                let leader = cluster.leader_of(&p.stream).await;
                vec![leader, (leader + 1) % 3]
            }
        };
        for &n in &killed {
            cluster.node(n).stop();
        }
        // Without a quorum an offset write is neither refused nor stored; it
        // fails only when JetStream's 5 s request timeout ends it, so that
        // outage lasts long enough for one to.
        let outage = if killed.len() > 1 { 12 } else { 6 };
        tokio::time::sleep(Duration::from_secs(outage)).await;
        assert!(
            host.try_wait().unwrap().is_none(),
            "sluice exited after {fault} (nodes {killed:?}) were killed; its log: {}",
            std::fs::read_to_string(p.log(&host)).unwrap_or_default()
        );
        for &n in &killed {
            cluster.node(n).start();
        }
        cluster.wait_ready().await;
    }
    let written = finish_writing(stop, writer, &js, &p.stream).await;
    let stored = read_all(&js, &p.stream).await;
    // The offset store took the faults in its stride: the slot is confirmed
    // past the last transaction's commit (its end, that is; the cluster's
    // WAL end may be further on, written by other tests).
    let last_commit = stored.iter().map(|s| s.commit_lsn).max().unwrap_or(0);
    wait_until(
        format!("the slot to be confirmed past the commit at {last_commit:X}"),
        Duration::from_secs(60),
        || async { parse_lsn(&p.confirmed(pg)) > last_commit },
    )
    .await;
    // What an operator would alert on.
    let exposition = scrape(metrics);
    for counter in [
        "sluice_publish_retries_total",
        "sluice_offset_record_failures_total",
    ] {
        assert!(
            sample(&exposition, counter).is_some_and(|n| n > 0.0),
            "{counter} should have counted the outages:\n{exposition}"
        );
    }
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert_exactly_once(&stored, written);
    // Each outage is a few lines, not one per message sent again.
    let log = std::fs::read_to_string(p.log(&host)).unwrap();
    let warnings = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("not acknowledged"))
        .count();
    assert!(
        (1..=8).contains(&warnings),
        "{warnings} warnings about messages sent again in:\n{log}"
    );

    // A host started while a node is down (the bucket's leader, so that the
    // offset is read during an election) resumes where the first stopped.
    let down = cluster.leader_of("KV_sluice_offsets").await;
    cluster.node(down).stop();
    let mut host = p.start(cache.path());
    p.wait_streaming(pg).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = write_until(p.db.clone(), written / 10, stop.clone());
    wait_until(
        "100 more rows in the stream",
        Duration::from_secs(60),
        || async { try_stream_len(&js, &p.stream).await >= Some(written as u64 + 100) },
    )
    .await;
    let written = finish_writing(stop, writer, &js, &p.stream).await;
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    cluster.node(down).start();
    cluster.wait_ready().await;
    assert_exactly_once(&read_all(&js, &p.stream).await, written);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_million_row_transaction_goes_through_in_bounded_memory() {
    const ROWS: u64 = 2_000_000;
    const MAX_RSS: u64 = 200 << 20;
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let p = Pipeline::with(
        pg,
        &nats,
        "huge",
        &["big"],
        ManifestParts {
            plugins: passthrough_then_json(),
            ..ManifestParts::default()
        },
    );
    pg.psql(&p.db, "CREATE TABLE big (id int PRIMARY KEY, v text)");
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;

    let written = Instant::now();
    pg.sql(
        &p.db,
        &format!("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g"),
    )
    .await;
    let committed = Instant::now();
    let js = nats.jetstream().await;
    wait_until(
        "two million rows in the stream",
        Duration::from_secs(900),
        || async { stream_len(&js, "HUGE").await >= ROWS },
    )
    .await;
    let through = committed.elapsed();
    let peak = proc_status_bytes(child.id(), "VmHWM");
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");

    eprintln!(
        "{ROWS} rows in one transaction: written in {:.1} s, in the stream {:.1} s after commit \
         ({:.0} rows/s); sluice peak RSS {:.1} MB",
        (committed - written).as_secs_f64(),
        through.as_secs_f64(),
        ROWS as f64 / through.as_secs_f64(),
        peak as f64 / f64::from(1 << 20)
    );
    assert_eq!(
        stream_len(&js, "HUGE").await,
        ROWS,
        "every row exactly once"
    );
    let stream = js.get_stream("HUGE").await.unwrap();
    for (sequence, id) in [(1, 1), (ROWS, ROWS)] {
        let m = stream.get_raw_message(sequence).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(body["after"]["id"], id, "message {sequence}");
    }
    assert!(
        peak < MAX_RSS,
        "sluice's peak RSS was {peak} bytes, over {MAX_RSS}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_walsender_is_reconnected_without_loss_or_duplicates() {
    const LARGE: i64 = 100_000;
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let p = passthrough_pipeline(pg, &nats, "walsender");
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    let js = nats.jetstream().await;
    let terminate = |p: &Pipeline| {
        let pid = p.walsender_pid(pg);
        assert!(!pid.is_empty(), "no walsender streams from the slot");
        assert_eq!(
            pg.psql(&p.db, &format!("SELECT pg_terminate_backend({pid})")),
            "t"
        );
        pid
    };

    // Between small transactions.
    let terminated = Arc::new(AtomicBool::new(false));
    let writer = write_in_two_halves(p.db.clone(), terminated.clone());
    wait_until(
        "200 rows in the stream",
        Duration::from_secs(60),
        || async { stream_len(&js, "WALSENDER").await >= 200 },
    )
    .await;
    let first = terminate(&p);
    terminated.store(true, Ordering::SeqCst);
    wait_until(
        "a new walsender after the first termination",
        Duration::from_secs(60),
        || async {
            let pid = p.walsender_pid(pg);
            !pid.is_empty() && pid != first
        },
    )
    .await;
    writer.join().unwrap();
    wait_until("all 1000 rows", Duration::from_secs(60), || async {
        stream_len(&js, "WALSENDER").await >= 1000
    })
    .await;

    // In the middle of a large transaction: the server sends it again from
    // its start, and what was published of it before is de-duplicated.
    pg.sql(
        &p.db,
        &format!(
            "INSERT INTO items SELECT g, 'large ' || g FROM generate_series(1000, {}) g",
            1000 + LARGE - 1
        ),
    )
    .await;
    wait_until(
        "part of the large transaction",
        Duration::from_secs(120),
        || async { stream_len(&js, "WALSENDER").await >= 1000 + LARGE as u64 / 5 },
    )
    .await;
    let second = terminate(&p);
    let cut_at = stream_len(&js, "WALSENDER").await;
    wait_until(
        "a new walsender after the second termination",
        Duration::from_secs(60),
        || async {
            let pid = p.walsender_pid(pg);
            !pid.is_empty() && pid != second
        },
    )
    .await;
    let total = 1000 + LARGE;
    wait_until("every row", Duration::from_secs(300), || async {
        stream_len(&js, "WALSENDER").await >= total as u64
    })
    .await;
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");

    assert!(
        cut_at < total as u64,
        "the second termination came after the large transaction was stored ({cut_at} rows)"
    );
    let stored = read_all(&js, "WALSENDER").await;
    assert_exactly_once(&stored, total);
    eprintln!("walsender terminated twice; the second time with {cut_at} of {total} rows stored");
}

/// pgbench's TPC-B load (three updates and one insert per transaction,
/// four clients) while the host is SIGKILLed and started again, with the
/// file offset store: the stream, replayed, holds every `pgbench_history`
/// row exactly once and ends with every account's balance as the table
/// has it.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_during_pgbench_replays_every_history_row_and_balance() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let offsets = tempfile::tempdir().unwrap();
    let tables = [
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_history",
    ];
    let parts = ManifestParts {
        plugins: passthrough_then_json(),
        position: format!(
            "store = \"file\"\nstore-path = \"{}\"\n",
            offsets.path().join("offset.json").display()
        ),
        ..ManifestParts::default()
    };
    let p = Pipeline::with(pg, &nats, "pgbench", &tables, parts);
    pg.pgbench(&p.db, &["-i", "-q", "-s", "1"]);
    // pgbench only inserts into its history table, which has no key.
    pg.psql(&p.db, "ALTER TABLE pgbench_history REPLICA IDENTITY FULL");
    let mut host = p.start(cache.path());
    p.wait_streaming(pg).await;

    let db = p.db.clone();
    let load = std::thread::spawn(move || {
        PgCluster::shared().pgbench(&db, &["-n", "-c", "4", "-j", "2", "-T", "15"]);
    });
    let js = nats.jetstream().await;
    wait_until(
        "pgbench's first changes in the stream",
        Duration::from_secs(60),
        || async { stream_len(&js, &p.stream).await >= 2_000 },
    )
    .await;
    signal(&host, "-KILL");
    wait_exit(&mut host, Duration::from_secs(30));
    p.wait_inactive(pg).await;
    let mut host = p.start(cache.path());
    p.wait_streaming(pg).await;
    load.join().expect("pgbench ran");
    // The slot confirms commit ends of this database's published
    // transactions only, while the shared cluster's insert position also
    // moves with every other test's WAL: so a last transaction on a
    // published table marks the end, and once the slot passes a position
    // inside it, everything pgbench committed before is confirmed.
    let end = parse_lsn(&pg.psql(
        &p.db,
        "BEGIN; UPDATE pgbench_tellers SET tbalance = tbalance WHERE tid = 1; \
         SELECT pg_current_wal_insert_lsn(); COMMIT;",
    ));
    wait_until(
        "the slot to confirm pgbench's last transaction",
        Duration::from_secs(120),
        || async { parse_lsn(&p.confirmed(pg)) >= end },
    )
    .await;
    signal(&host, "-TERM");
    assert!(wait_exit(&mut host, Duration::from_secs(30)).success());

    // Replay: history rows as a multiset, balances as the last after-image.
    let mut history: BTreeMap<(i64, i64, i64, i64), i64> = BTreeMap::new();
    let mut balances: BTreeMap<i64, i64> = BTreeMap::new();
    let handle = js.get_stream(&p.stream).await.unwrap();
    let count = stream_len(&js, &p.stream).await as usize;
    let consumer = handle
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap().take(count);
    while let Some(m) = messages.next().await {
        let m = m.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let after = &body["after"];
        let int = |name: &str| {
            after[name]
                .as_i64()
                .unwrap_or_else(|| panic!("{name} in {body}"))
        };
        match m.subject.as_str() {
            "cdc.public.pgbench_history" => {
                *history
                    .entry((int("tid"), int("bid"), int("aid"), int("delta")))
                    .or_default() += 1;
            }
            "cdc.public.pgbench_accounts" => {
                balances.insert(int("aid"), int("abalance"));
            }
            _ => {}
        }
    }
    let mut expected: BTreeMap<(i64, i64, i64, i64), i64> = BTreeMap::new();
    for line in pg
        .psql(&p.db, "SELECT tid, bid, aid, delta FROM pgbench_history")
        .lines()
    {
        let v: Vec<i64> = line.split('|').map(|x| x.parse().unwrap()).collect();
        *expected.entry((v[0], v[1], v[2], v[3])).or_default() += 1;
    }
    let rows: i64 = expected.values().sum();
    assert!(rows > 2_000, "pgbench ran ({rows} transactions)");
    assert_eq!(
        history.values().sum::<i64>(),
        rows,
        "every history row once, no duplicate"
    );
    assert_eq!(history, expected);
    let table: BTreeMap<i64, i64> = pg
        .psql(
            &p.db,
            "SELECT aid, abalance FROM pgbench_accounts WHERE abalance <> 0",
        )
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('|').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    balances.retain(|_, b| *b != 0);
    assert_eq!(balances, table, "every balance replayed from the stream");
}

/// How many lines of the log at `log` contain `text`.
fn log_lines(log: &Path, text: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

/// Starts the host of `p` and waits until its log has `line` once; the
/// host and its log.
async fn start_waiting(p: &Pipeline, cache: &Path, line: &str) -> (Host, PathBuf) {
    let host = p.start(cache);
    let log = p.log(&host);
    wait_until(
        with_log(&format!("`{line}` in the log"), &log),
        Duration::from_secs(60),
        || async { log_lines(&log, line) == 1 },
    )
    .await;
    (host, log)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_started_before_its_servers_waits_for_them() {
    // Synchronous commit, so that the table survives the crash that takes
    // the server down (the harness turns it off for speed).
    let mut pg = PgCluster::start(ClusterOptions {
        tls: false,
        extra_conf: vec!["synchronous_commit = on".into()],
        ..ClusterOptions::default()
    });
    let mut nats = NatsServer::launch();
    let p = passthrough_pipeline(&pg, &nats, "late");
    nats.stop();
    pg.crash();
    let cache = tempfile::tempdir().unwrap();
    let nats_down = "cannot start yet: NATS is not available";

    // Told to stop while it waits, it stops at once, and cleanly.
    let (mut host, log) = start_waiting(&p, cache.path(), nats_down).await;
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(10));
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap()
    );

    // Left waiting, it keeps trying without exiting or repeating itself,
    // then waits for PostgreSQL, then streams.
    let (mut host, log) = start_waiting(&p, cache.path(), nats_down).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        host.try_wait().unwrap().is_none(),
        "sluice exited while NATS was down: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(log_lines(&log, nats_down), 1, "the wait is logged once");
    assert_eq!(
        log_lines(&log, "error=cannot connect to NATS at"),
        1,
        "the wait names the servers and the reason once"
    );
    nats.start();
    let pg_down = "cannot start yet: PostgreSQL is not available";
    wait_until(
        with_log("the wait for PostgreSQL", &log),
        Duration::from_secs(60),
        || async { log_lines(&log, pg_down) == 1 },
    )
    .await;
    assert_eq!(log_lines(&log, "NATS is available; starting"), 1);
    pg.restart();
    p.wait_streaming(&pg).await;
    // The log reaches its file through a copying thread: wait, not assert.
    wait_until(
        with_log("the end of the wait for PostgreSQL", &log),
        Duration::from_secs(30),
        || async { log_lines(&log, "PostgreSQL is available; starting") == 1 },
    )
    .await;
    pg.psql(&p.db, "INSERT INTO items VALUES (1, 'after the wait')");
    let js = nats.jetstream().await;
    wait_until(
        with_log("the row in the stream", &log),
        Duration::from_secs(60),
        || async { stream_len(&js, &p.stream).await == 1 },
    )
    .await;
    signal(&host, "-TERM");
    assert!(wait_exit(&mut host, Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_request_does_not_wait_for_a_server_that_never_answers() {
    let pg = PgCluster::start(ClusterOptions {
        tls: false,
        ..ClusterOptions::default()
    });
    let nats = NatsServer::launch();
    let p = passthrough_pipeline(&pg, &nats, "mute");
    // PostgreSQL's port now accepts connections and never says a word: a
    // connection attempt without a timeout waits for ever.
    let port = pg.port();
    pg.crash();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in listener.incoming() {
            held.push(connection);
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let mut host = p.start(cache.path());
    let log = p.log(&host);
    wait_until(
        with_log("the start to reach PostgreSQL", &log),
        Duration::from_secs(60),
        || async {
            log_lines(&log, "NATS is available") + log_lines(&log, "JetStream stream ready") > 0
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        host.try_wait().unwrap().is_none(),
        "sluice is still connecting"
    );
    signal(&host, "-TERM");
    let status = wait_exit(&mut host, Duration::from_secs(15));
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
}
