//! Replication source throughput against `pg_recvlogical`, on a real
//! PostgreSQL 15 started by the test harness.
//!
//! A backlog of 1,000,000 inserts into a 6-column table (int4, numeric,
//! text, text, timestamptz, bool), in transactions of 1,000 rows, is read
//! from slots that all existed before the backlog was written: by Sluice's
//! source (decode, relation cache, value conversion, batches of 256, the
//! channel to the consumer; no plugins) and by `pg_recvlogical` (pgoutput
//! protocol 2, output to /dev/null, stopping at the backlog's end LSN), over
//! TCP and over the Unix socket. Prints events/s for both and their ratio.
//! Both wait on the same walsender decoding, so the ratio says how much
//! the client side costs on top of it.
//!
//! Run: `cargo bench -p sluice-host --bench source` (release profile).

// The tests' support (tests/it/support/); a benchmark uses a part of it.
#[allow(dead_code)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use std::num::NonZeroUsize;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_host::config::SourceSettings;
use sluice_host::lsn::Lsn;
use sluice_host::model::Event;
use sluice_host::replication::{ConnInfo, SlotName};
use sluice_host::source::{self, SlotKind, SourceEvent, SourceOptions, StartPosition};
use support::postgres::{ClusterOptions, PgCluster, client_program};
use tokio::sync::watch;

const ROWS: u64 = 1_000_000;
const ROWS_PER_TRANSACTION: u64 = 1_000;

fn main() {
    let pg = PgCluster::start(ClusterOptions {
        tls: false,
        extra_conf: vec!["max_wal_size = 8GB".into(), "shared_buffers = 256MB".into()],
        ..ClusterOptions::default()
    });
    let db = pg.create_database("bench");
    pg.psql(
        &db,
        "CREATE TABLE orders (id int4 PRIMARY KEY, total numeric, email text, note text, \
         created_at timestamptz, paid bool); \
         CREATE PUBLICATION pub FOR TABLE orders;",
    );
    let slots = ["sluice_tcp", "theirs_tcp", "sluice_unix", "theirs_unix"];
    for slot in slots {
        pg.psql(
            &db,
            &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
        );
    }
    let start_lsn = pg.psql(&db, "SELECT pg_current_wal_insert_lsn()");
    let written = Instant::now();
    pg.psql(
        &db,
        &format!(
            "DO $$ BEGIN
               FOR t IN 0..{} LOOP
                 INSERT INTO orders
                   SELECT g, (g * 1.25)::numeric(12, 2), 'user' || g || '@example.com',
                          'note for order ' || g, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second',
                          g % 2 = 0
                   FROM generate_series(t * {ROWS_PER_TRANSACTION} + 1, (t + 1) * {ROWS_PER_TRANSACTION}) g;
                 COMMIT;
               END LOOP;
             END $$",
            ROWS / ROWS_PER_TRANSACTION - 1
        ),
    );
    let end_lsn = pg.psql(&db, "SELECT pg_current_wal_insert_lsn()");
    let wal_mb = pg
        .psql(
            &db,
            &format!("SELECT pg_wal_lsn_diff('{end_lsn}', '{start_lsn}') / 1e6"),
        )
        .parse::<f64>()
        .unwrap_or_default();
    println!(
        "backlog: {ROWS} inserts in {} transactions, {wal_mb:.0} MB of WAL, written in {:.1} s",
        ROWS / ROWS_PER_TRANSACTION,
        written.elapsed().as_secs_f64()
    );
    let end: Lsn = end_lsn.parse().expect("an LSN");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let tcp = pg.url("postgres", None, &db, "sslmode=disable");
    let unix = pg.socket_url("postgres", None, &db);
    let host = pg.socket_dir().to_str().expect("UTF-8 path").to_owned();
    for (transport, url, slots, host) in [
        ("tcp", &tcp, ["sluice_tcp", "theirs_tcp"], "127.0.0.1"),
        ("unix", &unix, ["sluice_unix", "theirs_unix"], host.as_str()),
    ] {
        let cpu_before = cpu_seconds();
        let ours = runtime.block_on(sluice(url, slots[0], end));
        let cpu = cpu_seconds() - cpu_before;
        let theirs = pg_recvlogical(&pg, host, &db, slots[1], &end_lsn);
        let rate = |d: Duration| ROWS as f64 / d.as_secs_f64();
        println!(
            "{transport:>4}: sluice {:.2} s ({:.0} events/s, {cpu:.2} s of CPU in this process), pg_recvlogical {:.2} s ({:.0} events/s), sluice/pg_recvlogical = {:.2}",
            ours.as_secs_f64(),
            rate(ours),
            theirs.as_secs_f64(),
            rate(theirs),
            rate(ours) / rate(theirs)
        );
    }
    drop(runtime);
    drop(pg);
}

/// Reads the backlog through the source; the time from `prepare` until the
/// last row's transaction has ended.
async fn sluice(url: &str, slot: &str, end: Lsn) -> Duration {
    let settings = SourceSettings {
        conninfo: ConnInfo::parse_with_env(url, |_| None).expect("URL"),
        publication: "pub".parse().expect("publication"),
        slot: SlotName::new(slot).expect("slot"),
        create_slot: false,
        create_publication: None,
        snapshot: sluice_host::config::SnapshotMode::Never,
        failover: None,
        changes: sluice_host::config::ChangeOptions::default(),
        on_ghost_changes: sluice_host::config::GhostChanges::Refuse,
    };
    let started = Instant::now();
    let options = SourceOptions::new(NonZeroUsize::new(256).expect("non-zero"));
    let prepared = source::prepare(&settings, SlotKind::Durable, options)
        .await
        .expect("prepare");
    let (_flush, flushed) = watch::channel(Lsn::ZERO);
    let mut stream = prepared
        .start(StartPosition::SLOT, flushed)
        .await
        .expect("start");
    let mut rows = 0u64;
    loop {
        match stream.next().await.expect("stream").expect("event") {
            SourceEvent::Batch(b) => {
                rows += b
                    .events
                    .iter()
                    .filter(|e| matches!(e, Event::Row(_)))
                    .count() as u64;
            }
            SourceEvent::TransactionEnd(e) if rows == ROWS => {
                assert!(
                    e.end_lsn <= end,
                    "the backlog's last commit is before its end"
                );
                break;
            }
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(rows, ROWS, "every row arrived");
    stream.stop().await.expect("stop");
    elapsed
}

/// User + system CPU time of this process so far (Linux, 100 ticks/s),
/// to show how much of a core the client side needs.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn pg_recvlogical(pg: &PgCluster, host: &str, db: &str, slot: &str, end: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(client_program("pg_recvlogical"))
        .args(["-h", host, "-p", &pg.port().to_string(), "-d", db])
        .args([
            "-S",
            slot,
            "--start",
            "--no-loop",
            "-E",
            end,
            "-f",
            "/dev/null",
        ])
        .args(["-o", "proto_version=2"])
        .args(["-o", "publication_names=pub"])
        .status()
        .expect("run pg_recvlogical");
    let elapsed = started.elapsed();
    assert!(status.success(), "pg_recvlogical failed");
    elapsed
}
