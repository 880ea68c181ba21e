//! `sluice run` end to end: a real PostgreSQL, a real nats-server and the
//! example plugins as components, with the `sluice` binary run as a user
//! runs it. What is asserted is what a user sees: the messages in the
//! JetStream stream (subjects, headers, JSON payloads), the slot's
//! position, the exit status.

use std::time::Duration;

use crate::support::nats::{NatsServer, StoredMessage, read_stream, stream_len};
use crate::support::pipeline::{
    ManifestParts, Pipeline, parse_lsn, signal, sluice_binary, wait_exit,
};
use crate::support::postgres::PgCluster;
use crate::support::{plugin_path, wait_until};

/// A transform that fails on the row with `id = 3`, then the JSON sink.
fn picky_then_json() -> String {
    format!(
        r#"
[[transform]]
name = "picky"
path = "{misbehave}"
config = {{ fail-on = {{ column = "id", equals = 3 }} }}

[sink]
name = "json"
path = "{json}"
config = {{ subject-prefix = "cdc" }}
"#,
        misbehave = plugin_path("misbehave").display(),
        json = plugin_path("json-sink").display(),
    )
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
        stream_len(&js, "E2E").await >= 6
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
        assert!(id.starts_with(&format!("{}:", p.slot)), "{id}");
        let commit = m.header("Sluice-Commit-Lsn").unwrap();
        assert!(commit.contains('/'), "{commit}");
    }
    // Each message names its event: table, operation and the event's own
    // LSN, which lies before its transaction's commit.
    let tables: Vec<Option<&str>> = messages.iter().map(|m| m.header("Sluice-Table")).collect();
    let users = Some("public.users");
    let orders = Some("public.orders");
    assert_eq!(tables, [users, users, orders, users, orders, orders]);
    let ops: Vec<Option<&str>> = messages.iter().map(|m| m.header("Sluice-Op")).collect();
    assert_eq!(
        ops,
        ["insert", "insert", "insert", "update", "delete", "truncate"].map(Some)
    );
    let lsns: Vec<u64> = messages
        .iter()
        .map(|m| parse_lsn(m.header("Sluice-Lsn").unwrap()))
        .collect();
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");
    for (m, lsn) in messages.iter().zip(&lsns) {
        assert!(*lsn < parse_lsn(m.header("Sluice-Commit-Lsn").unwrap()));
    }
    // The two inserts of one statement share a transaction, one id each.
    assert_eq!(
        messages[0].header("Sluice-Commit-Lsn"),
        messages[1].header("Sluice-Commit-Lsn")
    );
    assert_ne!(messages[0].msg_id(), messages[1].msg_id());

    // `sluice stream show` reads the same messages back, as JSON lines.
    let shown = std::process::Command::new(sluice_binary())
        .args(["stream", "show", "--last", "2"])
        .arg(&p.manifest)
        .output()
        .unwrap();
    crate::support::keep_log("pipeline", &shown.stderr);
    assert!(shown.status.success(), "{shown:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(shown.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["seq"], 5);
    assert_eq!(lines[1]["subject"], "cdc.public.orders");
    assert_eq!(lines[1]["payload"], bodies[5]);
    assert!(
        lines[1]["headers"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["Sluice-Op", "truncate"])),
        "{}",
        lines[1]
    );
    assert!(
        shown.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );

    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    p.wait_inactive(pg).await;
    let after = p.confirmed(pg);
    assert_ne!(before, after, "the slot moved past what the stream holds");
}

/// `sluice run` against a nats-server in operator mode, signing in with the
/// manifest's `nats.credentials` file: a row reaches the stream, and the
/// offset (kept in a KV bucket of the same account) moves with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_reaches_the_stream_through_a_credentials_file() {
    use crate::support::creds::Operator;
    use sluice_host::publish::{NatsAuth, NatsOptions, connect};
    let pg = PgCluster::shared();
    let operator = Operator::new();
    let nats = NatsServer::builder().operator(&operator).launch();
    let dir = tempfile::tempdir().unwrap();
    let creds = operator.creds_file(dir.path(), "sluice.creds", None);
    let cache = tempfile::tempdir().unwrap();
    let p = Pipeline::with(
        pg,
        &nats,
        "e2e_creds",
        &["users"],
        ManifestParts {
            plugins: crate::support::pipeline::passthrough_then_json(),
            nats: format!("credentials = \"{}\"", creds.display()),
            ..ManifestParts::default()
        },
    );
    pg.psql(&p.db, "CREATE TABLE users (id int PRIMARY KEY, name text)");
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    pg.psql(&p.db, "INSERT INTO users VALUES (1, 'Ann')");
    let mut options = NatsOptions::new([nats.url()]);
    options.auth = NatsAuth::CredentialsFile(creds);
    let js = async_nats::jetstream::new(connect(&options).await.unwrap());
    wait_until("the row in the stream", Duration::from_secs(60), || async {
        js.get_stream("E2E_CREDS").await.is_ok() && stream_len(&js, "E2E_CREDS").await >= 1
    })
    .await;
    let messages = read_stream(&js, "E2E_CREDS").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].subject, "cdc.public.users");
    assert_eq!(json(&messages[0].payload)["after"]["name"], "Ann");
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
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
        stream_len(&js, "KILL").await >= 300
    })
    .await;
    signal(&child, "-KILL");
    let _ = wait_exit(&mut child, Duration::from_secs(10));
    p.wait_inactive(pg).await;
    writer.join().unwrap();
    let mut child = p.start(cache.path());
    wait_until("all 2000 rows", Duration::from_secs(120), || async {
        stream_len(&js, "KILL").await >= 2000
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

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_move_a_quiet_slot() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let parts = ManifestParts {
        position: r#"heartbeat = { interval = "200ms" }"#.to_owned(),
        ..ManifestParts::default()
    };
    let p = Pipeline::with(pg, &nats, "beat", &["quiet"], parts);
    pg.psql(&p.db, "CREATE TABLE quiet (id int PRIMARY KEY)");
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    let before = p.confirmed(pg);
    // No table is written: only the heartbeat's logical messages reach the
    // stream, and the slot follows them.
    wait_until(
        "the slot to move without writes",
        Duration::from_secs(30),
        || async { p.confirmed(pg) != before },
    )
    .await;
    let js = nats.jetstream().await;
    let messages = read_stream(&js, &p.stream).await;
    assert!(!messages.is_empty());
    for m in &messages {
        assert_eq!(m.subject, "cdc.messages");
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(body["message"]["prefix"], "sluice.heartbeat", "{body}");
    }
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

/// Six rows through `picky` (which fails on row 3) with the dead-letter
/// policy, `nats` added to the `[nats]` table; returns the six stored
/// messages after checking their subjects and that the host exits cleanly.
async fn six_rows_with_a_dead_letter(name: &str, nats_lines: &str) -> Vec<StoredMessage> {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let parts = ManifestParts {
        plugins: picky_then_json(),
        nats: nats_lines.into(),
        extra: "[errors]\npolicy = \"dead-letter\"\ndead-letter-subject = \"cdc.dead\"\n".into(),
        ..ManifestParts::default()
    };
    let p = Pipeline::with(pg, &nats, name, &["items"], parts);
    pg.psql(&p.db, "CREATE TABLE items (id int PRIMARY KEY, v text)");
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    pg.psql(
        &p.db,
        "INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 5) g;
         INSERT INTO items VALUES (6, 'after');",
    );
    let js = nats.jetstream().await;
    wait_until("6 messages", Duration::from_secs(60), || async {
        stream_len(&js, &p.stream).await >= 6
    })
    .await;
    let messages = read_stream(&js, &p.stream).await;
    let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "cdc.public.items",
            "cdc.public.items",
            "cdc.dead",
            "cdc.public.items",
            "cdc.public.items",
            "cdc.public.items"
        ]
    );
    // The failure is counted, not fatal: the host drains and exits cleanly.
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    messages
}

/// The dead letter's own checks, whatever `metadata-headers` says.
fn check_dead_letter(dead: &StoredMessage) {
    let error = dead.header("Sluice-Error").unwrap();
    assert!(
        error.starts_with("plugin \"picky\" could not process event"),
        "{error}"
    );
    assert_eq!(dead.header("Sluice-Table"), Some("public.items"));
    assert_eq!(dead.header("Sluice-Op"), Some("insert"));
    assert!(dead.header("Sluice-Commit-Lsn").is_some());
    let body = json(&dead.payload);
    assert_eq!(
        body["event"]["row"]["new"][0],
        serde_json::json!({"int": 3})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_row_goes_to_the_dead_letter_subject_and_the_rest_flows_on() {
    let messages = six_rows_with_a_dead_letter("dlq", "").await;
    let dead = &messages[2];
    check_dead_letter(dead);
    // The dead letter sits between its neighbours in the WAL.
    let lsn = |m: &StoredMessage| parse_lsn(m.header("Sluice-Lsn").unwrap());
    assert!(lsn(&messages[1]) < lsn(dead) && lsn(dead) < lsn(&messages[3]));
    assert_eq!(json(&messages[5].payload)["after"]["v"], "after");
}

/// `metadata-headers = false`: change messages carry only the id and the
/// expected stream (what de-duplication and the stream check need); the
/// dead letter keeps the metadata, since its reader must learn what failed.
#[tokio::test(flavor = "multi_thread")]
async fn without_metadata_headers_only_dead_letters_carry_them() {
    let messages = six_rows_with_a_dead_letter("nometa", "metadata-headers = false\n").await;
    check_dead_letter(&messages[2]);
    assert!(parse_lsn(messages[2].header("Sluice-Lsn").unwrap()) > 0);
    for (i, m) in messages.iter().enumerate().filter(|(i, _)| *i != 2) {
        // Sorted by name.
        let names: Vec<&str> = m.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["Nats-Expected-Stream", "Nats-Msg-Id"],
            "message {i}"
        );
    }
    assert_eq!(json(&messages[5].payload)["after"]["v"], "after");
}

/// A definite error mid-stream goes through the drain like a shutdown: what
/// JetStream stored before it is recorded and confirmed to the slot by the
/// session's last standby status. The status interval is an hour, so that
/// nothing else can have told the slot.
#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_error_mid_stream_still_confirms_what_was_stored() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let offsets = tempfile::tempdir().unwrap();
    let offset_file = offsets.path().join("offset.json");
    let parts = ManifestParts {
        plugins: picky_then_json(),
        position: format!(
            "status-interval = \"1h\"\nstore = \"file\"\nstore-path = \"{}\"\n",
            offset_file.display()
        ),
        ..ManifestParts::default()
    };
    let p = Pipeline::with(pg, &nats, "fatal", &["items"], parts);
    pg.psql(&p.db, "CREATE TABLE items (id int PRIMARY KEY, v text)");
    let mut child = p.start(cache.path());
    p.wait_streaming(pg).await;
    let created = parse_lsn(&p.confirmed(pg));
    pg.psql(&p.db, "INSERT INTO items VALUES (1, 'a'), (2, 'b')");
    let stored_through = parse_lsn(&pg.psql(&p.db, "SELECT pg_current_wal_insert_lsn()"));
    let js = nats.jetstream().await;
    wait_until("2 messages", Duration::from_secs(60), || async {
        stream_len(&js, &p.stream).await >= 2
    })
    .await;
    pg.psql(&p.db, "INSERT INTO items VALUES (3, 'boom')");
    let failed_end = parse_lsn(&pg.psql(&p.db, "SELECT pg_current_wal_insert_lsn()"));
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(
        !status.success(),
        "the stop policy ends the run with an error"
    );
    p.wait_inactive(pg).await;
    let confirmed = parse_lsn(&p.confirmed(pg));
    assert!(
        confirmed > created && confirmed <= stored_through,
        "the slot confirms the stored transaction ({created:X} < {confirmed:X} <= {stored_through:X})"
    );
    assert!(confirmed < failed_end, "but not the failed one");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&offset_file).unwrap()).unwrap();
    let recorded = parse_lsn(record["commit_end_lsn"].as_str().unwrap());
    assert_eq!(
        recorded, confirmed,
        "the offset file holds what the slot confirmed"
    );
    assert_eq!(stream_len(&js, &p.stream).await, 2);
}
