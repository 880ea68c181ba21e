//! `sluice run` end to end: events per second over a backlog of inserts,
//! compared with `pg_recvlogical` reading the same backlog over the same
//! loopback TCP connection, and commit-to-ack latency of a live stream.
//! Prints figures; asserts nothing.
//!
//! `cargo bench -p sluice-host --bench pipeline` (`BENCH_ROWS` changes the
//! backlog, 1,000,000 rows by default, in transactions of 1,000).
//!
//! The pipeline is passthrough → json-sink → JetStream (file storage), the
//! rows have six columns (int, numeric, text, text, timestamptz, bool).
//! The same backlog is then read by a second pipeline whose json-sink
//! bundles each batch (up to 256 events of one transaction) into one
//! message: how a user goes past nats-server's per-message cost.
//! Latency is the time from a transaction's commit (`commit_time_us` in the
//! payload, PostgreSQL's clock) to the JetStream timestamp of its last
//! message (the server's clock; same machine).

// The tests' support (tests/it/support/); a benchmark uses a part of it.
#[allow(dead_code)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;

use support::nats::{NatsServer, stream_len};
use support::pipeline::{ManifestParts, Pipeline, passthrough_then_json, signal, wait_exit};
use support::postgres::PgCluster;
use support::postgres::client_program;
use support::wait_until;

const PER_TRANSACTION: u64 = 1_000;
const LATENCY_TRANSACTIONS: u64 = 300;
const LATENCY_ROWS: u64 = 100;

fn main() {
    let rows: u64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(rows));
}

async fn run(rows: u64) {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let p = Pipeline::with(
        pg,
        &nats,
        "bench",
        &["orders"],
        ManifestParts {
            plugins: passthrough_then_json(),
            ..ManifestParts::default()
        },
    );
    pg.psql(
        &p.db,
        "CREATE TABLE orders (id int8 PRIMARY KEY, amount numeric, name text, email text, \
         created timestamptz, active bool)",
    );
    // A first run creates the slot and publication (and compiles the
    // plugins into the cache); both readers then start from the same point.
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    p.wait_inactive(pg).await;
    pg.psql(
        &p.db,
        "SELECT pg_create_logical_replication_slot('bench_recvlogical', 'pgoutput')",
    );
    pg.psql(
        &p.db,
        "SELECT pg_create_logical_replication_slot('bench_bundle', 'pgoutput')",
    );

    let written = Instant::now();
    pg.psql(
        &p.db,
        &format!(
            "DO $$ BEGIN FOR t IN 0..{last} LOOP
               INSERT INTO orders SELECT g, g * 3 + (g % 100) / 100.0, 'customer ' || g,
                 'customer' || g || '@example.com', now(), g % 2 = 0
               FROM generate_series(t * {PER_TRANSACTION}, (t + 1) * {PER_TRANSACTION} - 1) g;
               COMMIT;
             END LOOP; END $$",
            last = rows / PER_TRANSACTION - 1
        ),
    );
    let end = pg.psql(&p.db, "SELECT pg_current_wal_lsn()");
    println!(
        "backlog: {rows} rows in transactions of {PER_TRANSACTION}, written in {:.1} s",
        written.elapsed().as_secs_f64()
    );

    // sluice over the backlog.
    let js = nats.jetstream().await;
    let started = Instant::now();
    let mut child = p.start(cache.path());
    wait_until(
        "the backlog in the stream",
        Duration::from_secs(1800),
        || async { stream_len(&js, &p.stream).await >= rows },
    )
    .await;
    let sluice = started.elapsed();
    let stream = js.get_stream(&p.stream).await.unwrap();
    let first = stream.get_raw_message(1).await.unwrap().time;
    let last = stream.get_raw_message(rows).await.unwrap().time;
    let stored_span = (last - first).as_seconds_f64();
    let sluice_rate = rows as f64 / sluice.as_secs_f64();
    println!(
        "sluice:        {rows} events in {:.1} s from start ({sluice_rate:.0} events/s); \
         first to last stored {stored_span:.1} s ({:.0} events/s)",
        sluice.as_secs_f64(),
        rows as f64 / stored_span
    );

    // pg_recvlogical over the same backlog: the server's decoding and the
    // transport alone, written nowhere.
    let started = Instant::now();
    let status = Command::new(client_program("pg_recvlogical"))
        .args(["-d", &pg.superuser_url(&p.db)])
        .args(["--slot", "bench_recvlogical", "--start", "--no-loop"])
        .args(["-o", "proto_version=1", "-o"])
        .arg(format!("publication_names=pub_{}", "bench"))
        .args(["-E", &end, "-f", "-"])
        .stdout(Stdio::null())
        .status()
        .expect("run pg_recvlogical");
    assert!(status.success(), "pg_recvlogical: {status}");
    let recv = started.elapsed();
    let recv_rate = rows as f64 / recv.as_secs_f64();
    println!(
        "pg_recvlogical: {rows} events in {:.1} s ({recv_rate:.0} events/s)",
        recv.as_secs_f64()
    );
    println!(
        "ratio sluice / pg_recvlogical: {:.2}",
        sluice_rate / recv_rate
    );
    pg.psql(
        &p.db,
        "SELECT pg_drop_replication_slot('bench_recvlogical')",
    );

    // The bundling sink over the same backlog, from its own slot.
    let bundle = bundled_manifest(&p);
    let started = Instant::now();
    let mut bundler = std::process::Command::new(support::pipeline::sluice_binary())
        .arg("run")
        .arg(bundle.path())
        .env("XDG_CACHE_HOME", cache.path())
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the bundling sluice");
    wait_until(
        "the backlog in bundles",
        Duration::from_secs(1800),
        || async { last_bundled_id(&js).await == Some(rows - 1) },
    )
    .await;
    let bundled = started.elapsed();
    signal(&bundler, "-TERM");
    assert!(wait_exit(&mut bundler, Duration::from_secs(30)).success());
    let bundle_messages = stream_len(&js, "BUNDLE").await;
    let bundled_rate = rows as f64 / bundled.as_secs_f64();
    println!(
        "sluice, bundled: {rows} events in {bundle_messages} messages in {:.1} s from start \
         ({bundled_rate:.0} events/s); ratio to pg_recvlogical {:.2}",
        bundled.as_secs_f64(),
        bundled_rate / recv_rate
    );
    pg.psql(&p.db, "SELECT pg_drop_replication_slot('bench_bundle')");

    // Live latency: small transactions committed every 10 ms while the
    // pipeline is caught up. The test cluster runs with
    // `synchronous_commit = off`, under which a commit reaches the WAL
    // senders only at the WAL writer's next flush (up to 200 ms later):
    // these commits are synchronous so that the figure is the pipeline's.
    pg.psql(
        &p.db,
        &format!("ALTER DATABASE \"{}\" SET synchronous_commit = on", p.db),
    );
    pg.psql(
        &p.db,
        &format!(
            "DO $$ BEGIN FOR t IN 0..{} LOOP
               INSERT INTO orders SELECT g, g, 'n', 'e', now(), true
               FROM generate_series({rows} + t * {LATENCY_ROWS}, {rows} + (t + 1) * {LATENCY_ROWS} - 1) g;
               COMMIT;
               PERFORM pg_sleep(0.01);
             END LOOP; END $$",
            LATENCY_TRANSACTIONS - 1
        ),
    );
    let total = rows + LATENCY_TRANSACTIONS * LATENCY_ROWS;
    wait_until(
        "the live transactions",
        Duration::from_secs(300),
        || async { stream_len(&js, &p.stream).await >= total },
    )
    .await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let mut latencies = commit_to_ack(&stream, rows + 1, total - rows).await;
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "commit-to-ack over {} live transactions of {LATENCY_ROWS} rows: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
}

/// A manifest like `p`'s, reading slot `bench_bundle` into stream `BUNDLE`
/// with a json-sink that bundles each batch into one message.
fn bundled_manifest(p: &Pipeline) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(&p.manifest).unwrap();
    let replace = |text: String, from: &str, to: &str| {
        assert!(text.contains(from), "the manifest has no `{from}`");
        text.replacen(from, to, 1)
    };
    let text = replace(
        text,
        &format!("slot = \"{}\"", p.slot),
        "slot = \"bench_bundle\"",
    );
    let text = replace(
        text,
        &format!("stream = \"{}\"", p.stream),
        "stream = \"BUNDLE\"",
    );
    // A stream's subjects may not overlap another's.
    let text = replace(text, "subjects = [\"cdc.>\"]", "subjects = [\"bundle.>\"]");
    let text = replace(
        text,
        "config = { subject-prefix = \"cdc\" }",
        "config = { subject-prefix = \"bundle\", bundle = \"bundle.tx\" }",
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

/// The `id` of the last row in the last bundle stored in `BUNDLE`, if any.
async fn last_bundled_id(js: &jetstream::Context) -> Option<u64> {
    let mut stream = js.get_stream("BUNDLE").await.ok()?;
    let last = stream.info().await.ok()?.state.last_sequence;
    let message = stream.get_raw_message(last).await.ok()?;
    let events: Vec<serde_json::Value> = serde_json::from_slice(&message.payload).ok()?;
    events.last()?["after"]["id"].as_u64()
}

/// Per transaction, milliseconds from its commit to the storing of its last
/// message, for `count` messages from sequence `from`.
async fn commit_to_ack(stream: &jetstream::stream::Stream, from: u64, count: u64) -> Vec<f64> {
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .expect("create an ordered consumer");
    let mut messages = consumer
        .messages()
        .await
        .expect("consume")
        .take(count as usize);
    // commit time (µs) → stored time of the last message (ns).
    let mut transactions: BTreeMap<i64, i128> = BTreeMap::new();
    while let Some(m) = messages.next().await {
        let m = m.expect("read a message");
        let stored = m.info().expect("metadata").published.unix_timestamp_nanos();
        let body: serde_json::Value = serde_json::from_slice(&m.payload).expect("JSON");
        let commit = body["source"]["commit_time_us"]
            .as_i64()
            .expect("commit_time_us");
        let e = transactions.entry(commit).or_insert(stored);
        *e = (*e).max(stored);
    }
    transactions
        .iter()
        .map(|(commit, stored)| (*stored - i128::from(*commit) * 1000) as f64 / 1e6)
        .collect()
}
