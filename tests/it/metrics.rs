//! The metrics and health endpoints of `sluice run`, scraped over HTTP from
//! the `sluice` binary as Prometheus and a Kubernetes probe would, with a
//! real PostgreSQL, a real nats-server and the example plugins.

use crate::support::pipeline::{ManifestParts, Pipeline, signal, wait_exit};
use crate::support::wait_until;
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use crate::support::metrics::{free_address, get, sample, scrape};
use crate::support::nats::{NatsServer, stream_len};
use crate::support::postgres::PgCluster;

fn status(address: SocketAddr, path: &str) -> Option<u16> {
    get(address, path).map(|(status, _)| status)
}

/// A pipeline (mask → JSON sink) whose metrics listen on `metrics`.
struct Metered {
    p: Pipeline,
    metrics: SocketAddr,
}

impl Metered {
    fn new(pg: &PgCluster, nats: &NatsServer, name: &str, table: &str) -> Metered {
        Self::at(pg, nats, name, table, free_address())
    }

    fn at(
        pg: &PgCluster,
        nats: &NatsServer,
        name: &str,
        table: &str,
        metrics: SocketAddr,
    ) -> Metered {
        let parts = ManifestParts {
            extra: format!("[metrics]\naddress = \"{metrics}\"\n"),
            ..ManifestParts::default()
        };
        Metered {
            p: Pipeline::with(pg, nats, name, &[table], parts),
            metrics,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_every_row_and_probes_answer() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let Metered { p, metrics: addr } = Metered::new(pg, &nats, "metrics", "users");
    pg.psql(
        &p.db,
        "CREATE TABLE users (id int PRIMARY KEY, email text, name text)",
    );
    let mut child = p.start(cache.path());

    wait_until(
        "/healthz to answer 200",
        Duration::from_secs(60),
        || async { status(addr, "/healthz") == Some(200) },
    )
    .await;
    p.wait_streaming(pg).await;
    wait_until("/readyz to answer 200", Duration::from_secs(30), || async {
        status(addr, "/readyz") == Some(200)
    })
    .await;

    // Five rows in two statements; psql sends them as one transaction.
    pg.psql(
        &p.db,
        "INSERT INTO users VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B'), (3, 'c@example.com', 'C');
         INSERT INTO users VALUES (4, 'd@example.com', 'D'), (5, 'e@example.com', 'E');",
    );
    let js = nats.jetstream().await;
    wait_until(
        "5 messages in the stream",
        Duration::from_secs(60),
        || async { stream_len(&js, "METRICS").await >= 5 },
    )
    .await;
    // The stream holds them; the host counts the acks an instant later, and
    // confirms once the transaction is acknowledged.
    wait_until(
        "5 acknowledged messages",
        Duration::from_secs(30),
        || async {
            let text = scrape(addr);
            sample(&text, "sluice_messages_published_total") == Some(5.0)
                && sample(&text, "sluice_replication_lag_bytes").is_some()
        },
    )
    .await;
    let text = scrape(addr);
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    };
    expect("sluice_events_decoded_total", 5.0);
    expect("sluice_plugin_events_in_total{plugin=\"mask\"}", 5.0);
    expect("sluice_plugin_messages_out_total{plugin=\"mask\"}", 5.0);
    expect("sluice_plugin_events_in_total{plugin=\"json\"}", 5.0);
    expect("sluice_plugin_messages_out_total{plugin=\"json\"}", 5.0);
    // One batch, so one call per plugin.
    expect(
        "sluice_plugin_call_duration_seconds_count{plugin=\"json\"}",
        1.0,
    );
    expect("sluice_publish_duration_seconds_count", 5.0);
    // The mask plugin's own counter, through host.counter-add.
    expect(
        "sluice_plugin_counter_total{plugin=\"mask\",name=\"values_hashed\"}",
        5.0,
    );
    expect("sluice_publishes_in_flight", 0.0);
    expect("sluice_reloads_total", 0.0);
    expect("sluice_reload_failures_total", 0.0);
    assert!(!text.contains("sluice_errors_total{"), "{text}");
    // Positions: confirmed up to the transaction, at or below the server's
    // WAL end.
    let confirmed = sample(&text, "sluice_confirmed_lsn").unwrap();
    let wal_end = sample(&text, "sluice_server_wal_end_lsn").unwrap();
    let lag = sample(&text, "sluice_replication_lag_bytes").unwrap();
    assert!(confirmed > 0.0 && wal_end >= confirmed, "{text}");
    assert_eq!(lag, wal_end - confirmed, "{text}");

    assert_eq!(
        get(addr, "/nope"),
        Some((404, "not found: try /metrics, /healthz or /readyz\n".into()))
    );

    signal(&child, "-TERM");
    let exit = wait_exit(&mut child, Duration::from_secs(30));
    assert!(exit.success(), "{exit}");
    // The endpoint goes with the process.
    assert_eq!(status(addr, "/healthz"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_follows_the_nats_connection() {
    let pg = PgCluster::shared();
    let mut nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let Metered { p, metrics: addr } = Metered::new(pg, &nats, "readyz", "items");
    pg.psql(&p.db, "CREATE TABLE items (id int PRIMARY KEY)");
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    wait_until("/readyz to answer 200", Duration::from_secs(30), || async {
        status(addr, "/readyz") == Some(200)
    })
    .await;

    nats.stop();
    wait_until(
        "/readyz to answer 503 without NATS",
        Duration::from_secs(30),
        || async { status(addr, "/readyz") == Some(503) },
    )
    .await;
    // Alive all the same.
    assert_eq!(status(addr, "/healthz"), Some(200));

    nats.start();
    wait_until(
        "/readyz to answer 200 after NATS is back",
        Duration::from_secs(60),
        || async { status(addr, "/readyz") == Some(200) },
    )
    .await;

    signal(&child, "-TERM");
    let exit = wait_exit(&mut child, Duration::from_secs(30));
    assert!(exit.success(), "{exit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_metrics_port_fails_the_start() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let Metered { p, .. } = Metered::at(pg, &nats, "taken", "things", addr);
    let output = p
        .command(cache.path())
        .stderr(Stdio::piped())
        .output()
        .expect("run sluice");
    crate::support::keep_log("metrics", &output.stderr);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert_eq!(
        first,
        format!("error: cannot listen for metrics on {addr}: Address already in use (os error 98)"),
        "{stderr}"
    );
}
