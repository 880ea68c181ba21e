//! The replication client's throughput against `pg_recvlogical`, on a real
//! PostgreSQL started by the test harness: one transaction of 300,000
//! inserts, read as raw pgoutput messages (the CopyBoth stream, no decoding)
//! from one slot by Sluice's `ReplicationStream` until the commit, and from
//! another by `pg_recvlogical` (protocol 2, to /dev/null, stopping at the
//! transaction's end LSN) over the Unix socket. Prints messages/s for both
//! and their ratio; asserts nothing about speed.
//!
//! Run: `cargo bench -p sluice-host --bench replication` (release profile).

// The tests' support (tests/it/support/); a benchmark uses a part of it.
#[allow(dead_code)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Instant;

use sluice_host::lsn::Lsn;
use sluice_host::replication::{
    ConnInfo, CreateSlotOptions, PgOutputOptions, ReplicationConnection, ReplicationEvent,
    SlotName, SnapshotAction, StreamOptions,
};
use support::postgres::{ClusterOptions, PgCluster, client_program};
use support::unique;

const ROWS: u64 = 300_000;

fn main() {
    let pg = PgCluster::start(ClusterOptions {
        tls: false,
        ..ClusterOptions::default()
    });
    let db = pg.create_database("bench");
    pg.psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE t",
    );
    let url = pg.url("postgres", None, &db, "sslmode=disable");
    let ours = SlotName::new(unique("ours")).expect("a valid slot name");
    let theirs = unique("theirs");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let conn = runtime.block_on(create_slot(&url, &ours));
    pg.psql(
        &db,
        &format!("SELECT pg_create_logical_replication_slot('{theirs}', 'pgoutput')"),
    );
    pg.psql(
        &db,
        &format!("INSERT INTO t SELECT g, repeat('x', 40) || g FROM generate_series(1, {ROWS}) g"),
    );
    let end = pg.psql(&db, "SELECT pg_current_wal_lsn()");

    let started = Instant::now();
    let (messages, bytes) = runtime.block_on(read_one_transaction(conn, &ours));
    let ours_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    pg_recvlogical(&pg, &db, &theirs, &end);
    let theirs_secs = started.elapsed().as_secs_f64();
    println!(
        "{messages} pgoutput messages, {:.1} MB: sluice {ours_secs:.2} s ({:.0} msg/s), pg_recvlogical {theirs_secs:.2} s ({:.0} msg/s), ratio {:.2}",
        bytes as f64 / 1e6,
        messages as f64 / ours_secs,
        messages as f64 / theirs_secs,
        theirs_secs / ours_secs
    );
}

/// A replication connection that has created the logical slot `slot`.
async fn create_slot(url: &str, slot: &SlotName) -> ReplicationConnection {
    let info = ConnInfo::parse_with_env(url, |_| None).expect("a valid URL");
    let mut conn = ReplicationConnection::connect(&info)
        .await
        .expect("a replication connection");
    conn.create_slot(
        slot,
        CreateSlotOptions {
            temporary: false,
            snapshot: SnapshotAction::Nothing,
            failover: false,
        },
    )
    .await
    .expect("create the slot");
    conn
}

/// Streams `slot` until the first commit: (messages, bytes).
async fn read_one_transaction(conn: ReplicationConnection, slot: &SlotName) -> (u64, u64) {
    let mut stream = conn
        .start_replication(
            slot,
            Lsn::ZERO,
            &PgOutputOptions::new("pub"),
            StreamOptions::default(),
        )
        .await
        .expect("start replication");
    let (mut messages, mut bytes) = (0u64, 0u64);
    loop {
        match stream.next().await.expect("the stream").expect("an event") {
            ReplicationEvent::XLogData { data, .. } => {
                messages += 1;
                bytes += data.len() as u64;
                if data[0] == b'C' {
                    break;
                }
            }
            ReplicationEvent::Keepalive { .. } => {}
        }
    }
    stream.shutdown().await.expect("a clean shutdown");
    (messages, bytes)
}

/// `pg_recvlogical` reading `slot` up to `end` over the Unix socket.
fn pg_recvlogical(pg: &PgCluster, db: &str, slot: &str, end: &str) {
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(client_program("pg_recvlogical"))
        .args(["-h", pg.socket_dir().to_str().expect("a UTF-8 path")])
        .args(["-p", &pg.port().to_string(), "-d", db])
        .args([
            "-S",
            slot,
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
            "-E",
            end,
        ])
        .args(["-o", "proto_version=2", "-o", "publication_names=pub"])
        .status()
        .expect("run pg_recvlogical");
    assert!(status.success(), "pg_recvlogical: {status}");
}
