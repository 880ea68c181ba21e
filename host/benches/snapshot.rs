//! Snapshot throughput against `psql \copy`, on a real PostgreSQL 15 and
//! nats-server started by the test harness.
//!
//! A table of 1,000,000 rows (bigint key, numeric, two texts, timestamptz,
//! bool) is copied by `sluice run` with `source.snapshot = "initial-only"`
//! (a new slot, its exported snapshot, chunks of 10,000 rows in primary-key
//! order, value conversion, batches of 256, the release binary), twice:
//!
//! - through the `filter` plugin dropping every event: reading, decoding
//!   and one plugin call per batch, nothing published;
//! - through `passthrough` and `json-sink` into a JetStream file stream:
//!   the whole pipeline, every row acknowledged by JetStream.
//!
//! and by `psql -c "\copy (SELECT … ORDER BY id) TO '/dev/null'"` of the
//! same table. Each sluice time runs from process start to exit (slot
//! creation and plugin loading included). Prints rows/s and the ratios.
//!
//! Run: `cargo bench -p sluice-host --bench snapshot` (release profile).

// The tests' support (tests/it/support/); a benchmark uses a part of it.
#[allow(dead_code)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::nats::NatsServer;
use support::postgres::{ClusterOptions, PgCluster, client_program};

const ROWS: u64 = 1_000_000;

fn main() {
    let pg = PgCluster::start(ClusterOptions {
        tls: false,
        extra_conf: vec!["max_wal_size = 8GB".into(), "shared_buffers = 256MB".into()],
        ..ClusterOptions::default()
    });
    let db = pg.create_database("snapbench");
    pg.psql(
        &db,
        &format!(
            "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric, email text, note text, \
             created_at timestamptz, paid bool); \
             INSERT INTO orders SELECT g, (g * 1.25)::numeric(12, 2), 'user' || g || '@example.com', \
               'note for order ' || g, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', \
               g % 2 = 0 FROM generate_series(1, {ROWS}) g; \
             CREATE PUBLICATION pub FOR TABLE orders;"
        ),
    );
    pg.psql(&db, "VACUUM ANALYZE orders");
    let size = pg.psql(
        &db,
        "SELECT pg_size_pretty(pg_total_relation_size('orders'))",
    );
    println!("table: {ROWS} rows, {size}");
    let nats = NatsServer::launch();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = pg.url("postgres", None, &db, "sslmode=disable");

    // Warm the table into shared buffers and the OS cache, for all alike.
    let _ = copy(&pg, &db);
    let psql = copy(&pg, &db);
    let drop_all = format!(
        "[[transform]]\nname = \"filter\"\npath = \"{}\"\nconfig = {{ keep = {{ schemas = [\"none\"] }} }}\n\n[sink]\nname = \"json\"\npath = \"{}\"\nconfig = {{ subject-prefix = \"cdc\" }}\n",
        support::plugin_path("filter").display(),
        support::plugin_path("json-sink").display(),
    );
    let publish = format!(
        "[[transform]]\nname = \"passthrough\"\npath = \"{}\"\n\n[sink]\nname = \"json\"\npath = \"{}\"\nconfig = {{ subject-prefix = \"cdc\" }}\n",
        support::plugin_path("passthrough").display(),
        support::plugin_path("json-sink").display(),
    );
    let read_only = sluice(dir.path(), &url, &nats, "read", &drop_all);
    let whole = sluice(dir.path(), &url, &nats, "publish", &publish);
    let rate = |d: Duration| ROWS as f64 / d.as_secs_f64();
    println!(
        "psql \\copy (SELECT … ORDER BY id) TO /dev/null: {:.2} s ({:.0} rows/s)",
        psql.as_secs_f64(),
        rate(psql)
    );
    println!(
        "sluice snapshot, read + decode + filter plugin (nothing published): {:.2} s ({:.0} rows/s), {:.2} of psql",
        read_only.as_secs_f64(),
        rate(read_only),
        rate(read_only) / rate(psql)
    );
    println!(
        "sluice snapshot, passthrough + json-sink → JetStream (file storage): {:.2} s ({:.0} rows/s), {:.2} of psql",
        whole.as_secs_f64(),
        rate(whole),
        rate(whole) / rate(psql)
    );
    drop(nats);
    drop(pg);
}

/// `psql \copy` of the whole table, in key order, to /dev/null.
fn copy(pg: &PgCluster, db: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new(client_program("psql"))
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            "\\copy (SELECT id, total, email, note, created_at, paid FROM orders ORDER BY id) TO '/dev/null'",
        ])
        .status()
        .expect("run psql");
    assert!(status.success(), "psql \\copy failed");
    started.elapsed()
}

/// `sluice run` with `initial-only` on a fresh slot, until it exits.
fn sluice(dir: &Path, url: &str, nats: &NatsServer, name: &str, plugins: &str) -> Duration {
    let manifest = dir.join(format!("{name}.toml"));
    // Each run has its own stream and subjects (streams may not overlap).
    let plugins = plugins.replace("\"cdc\"", &format!("\"{name}\""));
    std::fs::write(
        &manifest,
        format!(
            "[source]\nurl = \"{url}\"\npublication = \"pub\"\nslot = \"bench_{name}\"\nsnapshot = \"initial-only\"\n\n\
             [position]\nstore = \"file\"\nstore-path = \"{name}.offset.json\"\n\n\
             [nats]\nurl = \"{}\"\nstream = \"{}\"\nsubjects = [\"{name}.>\"]\n\n\
             [snapshot]\nchunk-rows = 10000\nparallel-tables = 1\n\n{plugins}",
            nats.url(),
            name.to_uppercase(),
        ),
    )
    .expect("write the manifest");
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", manifest.to_str().expect("UTF-8 path")])
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("SLUICE_LOG", "warn")
        .status()
        .expect("run sluice");
    assert!(status.success(), "sluice run failed: {status}");
    started.elapsed()
}
