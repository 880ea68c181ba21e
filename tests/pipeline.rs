//! `sluice run` end to end: a real PostgreSQL, a real nats-server and the
//! example plugins as components, with the `sluice` binary run as a user
//! runs it. What is asserted is what a user sees: the messages in the
//! JetStream stream (subjects, headers, JSON payloads), the slot's
//! position, the exit status.

#[path = "support/nats.rs"]
mod nats;
#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nats::{NatsServer, read_stream};
use postgres::PgCluster;

/// Polls `cond` every 50 ms until it holds, or panics after `timeout`.
async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Pipeline {
    db: String,
    slot: String,
    manifest: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    fn new(pg: &PgCluster, nats: &NatsServer, name: &str, tables: &[&str]) -> Pipeline {
        let db = pg.create_database(name);
        let slot = format!("slot_{name}");
        let dir = tempfile::tempdir().unwrap();
        let tables: Vec<String> = tables.iter().map(|t| format!("\"public.{t}\"")).collect();
        let manifest = format!(
            r#"
[source]
url = "{url}"
publication = "pub_{name}"
slot = "{slot}"
create-publication = [{tables}]

[position]
status-interval = "100ms"

[nats]
url = "{nats}"
stream = "{stream}"
subjects = ["cdc.>"]

[[transform]]
name = "mask"
path = "{mask}"
config = {{ columns = {{ email = "hash" }} }}

[sink]
name = "json"
path = "{json}"
config = {{ subject-prefix = "cdc" }}

[pipeline]
shutdown-timeout = "10s"
"#,
            url = pg.superuser_url(&db),
            nats = nats.url(),
            stream = name.to_uppercase(),
            tables = tables.join(", "),
            mask = support::plugin_path("mask").display(),
            json = support::plugin_path("json-sink").display(),
        );
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, manifest).unwrap();
        Pipeline {
            db,
            slot,
            manifest: path,
            _dir: dir,
        }
    }

    fn start(&self, cache: &Path) -> Child {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", self.manifest.to_str().unwrap()])
            .env("XDG_CACHE_HOME", cache)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sluice run")
    }

    /// Waits until the slot exists and a walsender streams from it.
    async fn wait_streaming(&self, pg: &PgCluster) {
        let q = format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active",
            self.slot
        );
        wait_until(
            "the slot to be streamed",
            Duration::from_secs(60),
            || async { pg.psql(&self.db, &q).trim() == "1" },
        )
        .await;
    }

    async fn wait_inactive(&self, pg: &PgCluster) {
        let q = format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND NOT active",
            self.slot
        );
        wait_until(
            "the slot to be released",
            Duration::from_secs(30),
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
        .trim()
        .to_owned()
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "sluice did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_reach_the_stream_through_mask_and_json_sink() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let p = Pipeline::new(pg, &nats, "e2e", &["users", "orders"]);
    pg.psql(
        &p.db,
        "CREATE TABLE users (id int PRIMARY KEY, email text, name text);
                    CREATE TABLE orders (id int PRIMARY KEY, user_id int, total numeric(10,2));",
    );
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    let before = p.confirmed(pg);
    pg.psql(
        &p.db,
        "INSERT INTO users VALUES (1, 'ann@example.com', 'Ann'), (2, 'bob@example.com', 'Bob');
                    INSERT INTO orders VALUES (10, 1, 12.50);
                    UPDATE users SET name = 'Annie' WHERE id = 1;
                    DELETE FROM orders WHERE id = 10;
                    TRUNCATE orders;",
    );
    let js = nats.jetstream().await;
    wait_until("6 messages", Duration::from_secs(60), || async {
        nats::stream_len(&js, "E2E").await >= 6
    })
    .await;
    let messages = read_stream(&js, "E2E").await;
    assert_eq!(messages.len(), 6);
    let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "cdc.public.users",
            "cdc.public.users",
            "cdc.public.orders",
            "cdc.public.users",
            "cdc.public.orders",
            "cdc.public.orders"
        ]
    );
    let bodies: Vec<serde_json::Value> = messages.iter().map(|m| json(&m.payload)).collect();
    let ops: Vec<&str> = bodies.iter().map(|b| b["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["c", "c", "c", "u", "d", "t"]);
    // The mask hashed the email: the plaintext never reaches the stream.
    let email = bodies[0]["after"]["email"].as_str().unwrap();
    assert_eq!(email.len(), 64, "{email}");
    assert!(
        messages
            .iter()
            .all(|m| !String::from_utf8_lossy(&m.payload).contains("example.com"))
    );
    assert_eq!(bodies[0]["after"]["name"], "Ann");
    assert_eq!(bodies[2]["after"]["total"], "12.50");
    assert_eq!(bodies[3]["after"]["name"], "Annie");
    assert_eq!(bodies[3]["source"]["table"], "users");
    assert_eq!(bodies[4]["before"]["id"], 10);
    // Host headers: the message id names the pipeline, and commit LSNs are
    // in PostgreSQL's form.
    for m in &messages {
        let id = m.msg_id().unwrap();
        assert!(id.starts_with("slot_e2e:"), "{id}");
        let commit = m.header("Sluice-Commit-Lsn").unwrap();
        assert!(commit.contains('/'), "{commit}");
    }
    // The two inserts of one statement share a transaction, one id each.
    assert_eq!(
        messages[0].header("Sluice-Commit-Lsn"),
        messages[1].header("Sluice-Commit-Lsn")
    );
    assert_ne!(messages[0].msg_id(), messages[1].msg_id());

    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    p.wait_inactive(pg).await;
    let after = p.confirmed(pg);
    assert_ne!(before, after, "the slot moved past what the stream holds");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_host_resumes_without_loss_or_duplicates() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let p = Pipeline::new(pg, &nats, "kill", &["items"]);
    pg.psql(&p.db, "CREATE TABLE items (id int PRIMARY KEY, email text)");
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    // 200 transactions of 10 rows, written while the host is killed.
    let db = p.db.clone();
    let writer = std::thread::spawn(move || {
        for t in 0..200 {
            let values: Vec<String> = (0..10).map(|i| format!("({}, 'x')", t * 10 + i)).collect();
            PgCluster::shared().psql(
                &db,
                &format!("INSERT INTO items VALUES {}", values.join(",")),
            );
        }
    });
    let js = nats.jetstream().await;
    wait_until("some messages", Duration::from_secs(60), || async {
        nats::stream_len(&js, "KILL").await >= 300
    })
    .await;
    signal(&child, "-KILL");
    let _ = wait_exit(&mut child, Duration::from_secs(10));
    p.wait_inactive(pg).await;
    writer.join().unwrap();
    let mut child = p.start(cache.path());
    wait_until("all 2000 rows", Duration::from_secs(120), || async {
        nats::stream_len(&js, "KILL").await >= 2000
    })
    .await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let messages = read_stream(&js, "KILL").await;
    let mut ids: Vec<i64> = messages
        .iter()
        .map(|m| json(&m.payload)["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2000, "every change exactly once");
    ids.sort_unstable();
    assert_eq!(ids, (0..2000).collect::<Vec<i64>>());
}
