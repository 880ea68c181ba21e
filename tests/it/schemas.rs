//! The tables people actually have, end to end through `sluice run`, the
//! JSON sink and JetStream: partitioned tables published via their root,
//! publications with a row filter and a column list, REPLICA IDENTITY FULL
//! with a large TOASTed value, generated columns (PostgreSQL 18), and the
//! origin filter (PostgreSQL 16+).
//!
//! Each test runs its one scenario on every PostgreSQL version it names
//! ([`PgCluster::versions`]: a version that is not installed is skipped
//! with a loud message), each on its own database, slot and stream. Data is
//! small, except the 100 kB TOAST value.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use serde_json::Value;

use crate::support::nats::{NatsServer, stream_len};
use crate::support::pipeline::{ManifestParts, Pipeline, passthrough_then_json, sluice_binary};
use crate::support::postgres::PgCluster;
use crate::support::wait_until;

/// How long the stream may take to show a change: generous, since the
/// walsender decodes the whole cluster's WAL, which other tests fill.
const STREAM_TIMEOUT: Duration = Duration::from_secs(300);

/// A pipeline (passthrough → JSON sink) over `tables`, with `source` lines
/// added to `[source]` and a file offset store.
fn pipeline(
    pg: &PgCluster,
    nats: &NatsServer,
    name: &str,
    tables: &[&str],
    source: &str,
) -> Pipeline {
    Pipeline::with(
        pg,
        nats,
        name,
        tables,
        ManifestParts {
            plugins: passthrough_then_json(),
            position: "store = \"file\"\nstore-path = \"offset.json\"".into(),
            source: source.into(),
            ..ManifestParts::default()
        },
    )
}

/// Every message of `stream` as JSON, in order, logical messages left out.
async fn messages(js: &jetstream::Context, stream: &str) -> Vec<Value> {
    let handle = js.get_stream(stream).await.expect("look up the stream");
    let count = stream_len(js, stream).await as usize;
    let consumer = handle
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("an ordered consumer");
    let mut stream = consumer.messages().await.expect("consume").take(count);
    let mut out = Vec::with_capacity(count);
    while let Some(m) = stream.next().await {
        let body: Value = serde_json::from_slice(&m.expect("a message").payload).expect("JSON");
        if body["op"] != "m" {
            out.push(body);
        }
    }
    out
}

/// Inserts marker row `n` and waits until the stream holds it: everything
/// committed before is in the stream then.
async fn marker(pg: &'static PgCluster, p: &Pipeline, js: &jetstream::Context, n: i64) {
    pg.sql(&p.db, &format!("INSERT INTO marker VALUES ({n})"))
        .await;
    let stream = js.get_stream(&p.stream).await.expect("the stream");
    wait_until(
        format!("marker {n} to reach stream {}", p.stream),
        STREAM_TIMEOUT,
        || {
            let stream = stream.clone();
            async move {
                stream
                    .get_last_raw_message_by_subject("cdc.public.marker")
                    .await
                    .ok()
                    .and_then(|m| serde_json::from_slice::<Value>(&m.payload).ok())
                    .is_some_and(|v| v["after"]["id"] == n)
            }
        },
    )
    .await;
}

/// The row changes of `table` in `changes`.
fn of_table<'a>(changes: &'a [Value], table: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    changes
        .iter()
        .filter(move |c| c["source"]["table"] == table)
}

/// Replays row changes keyed by `key` (column names): reads, inserts and
/// updates set the row, deletes remove it, a truncate empties the table.
fn replay<'a>(changes: impl Iterator<Item = &'a Value>, key: &[&str]) -> BTreeMap<String, Value> {
    let key_of = |row: &Value| {
        key.iter()
            .map(|k| row[*k].to_string())
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut rows = BTreeMap::new();
    for c in changes {
        match c["op"].as_str().expect("op") {
            "r" | "c" | "u" => {
                if c["op"] == "u" && c["before"].is_object() {
                    rows.remove(&key_of(&c["before"]));
                }
                rows.insert(key_of(&c["after"]), c["after"].clone());
            }
            "d" => {
                assert!(
                    rows.remove(&key_of(&c["before"])).is_some(),
                    "a delete of a row the stream never showed: {c}"
                );
            }
            "t" => rows.clear(),
            other => panic!("unexpected op {other}: {c}"),
        }
    }
    rows
}

/// Rows of `query` (which must select `row_to_json(…)`), keyed like
/// [`replay`].
async fn table_rows(
    pg: &'static PgCluster,
    db: &str,
    query: &str,
    key: &[&str],
) -> BTreeMap<String, Value> {
    let rows: Vec<Value> = pg
        .sql(db, query)
        .await
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("row JSON"))
        .collect();
    replay(
        rows.iter()
            .map(|r| serde_json::json!({"op": "r", "after": r}))
            .collect::<Vec<_>>()
            .iter(),
        key,
    )
}

/// Runs `sluice ARGS… MANIFEST [REST…]`, which must succeed; its stdout.
fn sluice(args: &[&str], p: &Pipeline, rest: &[&str]) -> String {
    let out = Command::new(sluice_binary())
        .args(args)
        .arg(&p.manifest)
        .args(rest)
        .output()
        .expect("run sluice");
    crate::support::keep_log("schemas", &out.stderr);
    assert!(
        out.status.success(),
        "sluice {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_table_streams_and_backfills_under_its_root() {
    for (major, pg) in PgCluster::versions(&[15, 17]) {
        // One server per version: their streams capture the same subjects.
        let nats = NatsServer::launch();
        partitions(pg, &nats, major).await;
    }
}

/// Inserts, updates (one moving a row between partitions), deletes, a
/// partition attached and one detached while streaming, a backfill, then a
/// truncate: every event names the root.
async fn partitions(pg: &'static PgCluster, nats: &NatsServer, major: u32) {
    let js = nats.jetstream().await;
    let cache = tempfile::tempdir().unwrap();
    let p = pipeline(
        pg,
        nats,
        &format!("parts{major}"),
        &["events", "marker"],
        "",
    );
    pg.psql(
        &p.db,
        "CREATE TABLE events (id int, at int, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (100);
         CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM (100) TO (200);
         CREATE TABLE events_3 PARTITION OF events FOR VALUES FROM (200) TO (300);
         CREATE TABLE marker (id int PRIMARY KEY);",
    );
    let _host = p.start(cache.path());
    p.wait_streaming(pg).await;
    pg.sql(
        &p.db,
        "INSERT INTO events SELECT g, (g * 7) % 300, 'v' || g FROM generate_series(1, 40) g;
         UPDATE events SET at = 150 WHERE id = 1;        -- from events_1 to events_2
         UPDATE events SET v = 'changed' WHERE id = 2;
         DELETE FROM events WHERE id = 3;",
    )
    .await;
    // A table with a row attached as a partition: ATTACH logs no row
    // changes, so only the backfill below brings that row in.
    pg.sql(
        &p.db,
        "CREATE TABLE events_4 (id int NOT NULL, at int NOT NULL, v text);
         INSERT INTO events_4 VALUES (1000, 350, 'before attach');
         ALTER TABLE events ATTACH PARTITION events_4 FOR VALUES FROM (300) TO (400);
         INSERT INTO events VALUES (1001, 360, 'after attach');
         UPDATE events SET at = 370 WHERE id = 2;        -- into the attached one",
    )
    .await;
    // The rows events_3 holds when it is detached leave the table without
    // delete events (DETACH logs no row changes either); what is written to
    // it afterwards is not the published table's.
    let detached = table_rows(
        pg,
        &p.db,
        "SELECT row_to_json(t) FROM events_3 t",
        &["id", "at"],
    )
    .await;
    assert!(!detached.is_empty());
    pg.sql(
        &p.db,
        "ALTER TABLE events DETACH PARTITION events_3;
         INSERT INTO events_3 VALUES (2000, 250, 'detached');
         INSERT INTO events VALUES (1002, 10, 'after detach');",
    )
    .await;
    marker(pg, &p, &js, 1).await;

    let rows = "SELECT row_to_json(t) FROM events t";
    let mut expected = table_rows(pg, &p.db, rows, &["id", "at"]).await;
    let changes = messages(&js, &p.stream).await;
    let mut streamed = replay(of_table(&changes, "events"), &["id", "at"]);
    for (k, row) in &detached {
        assert_eq!(
            streamed.remove(k).as_ref(),
            Some(row),
            "PG {major}: detached row {k}"
        );
    }
    let attached = expected.remove("1000/350").expect("the attached row");
    assert_eq!(
        streamed, expected,
        "PG {major}: the stream reproduces the table"
    );

    // A backfill reads the root, rows named as the changes are; asked for
    // a partition, it names the root.
    let leaf = Command::new(sluice_binary())
        .arg("backfill")
        .arg(&p.manifest)
        .arg("public.events_1")
        .output()
        .expect("run sluice backfill");
    crate::support::keep_log("schemas", &leaf.stderr);
    let stderr = String::from_utf8_lossy(&leaf.stderr);
    assert!(
        !leaf.status.success()
            && stderr.contains(&format!(
                "table public.events_1 is a partition of public.events, which publication \"pub_parts{major}\" publishes via its root"
            )),
        "PG {major}: {stderr}"
    );
    sluice(&["backfill"], &p, &["public.events"]);
    expected.insert("1000/350".into(), attached);
    let reads = expected.len();
    let stream = p.stream.clone();
    wait_until("the backfill's reads", STREAM_TIMEOUT, || {
        let (js, stream) = (js.clone(), stream.clone());
        async move {
            let changes = messages(&js, &stream).await;
            changes.iter().filter(|c| c["op"] == "r").count() >= reads
        }
    })
    .await;
    let changes = messages(&js, &p.stream).await;
    let backfilled = replay(changes.iter().filter(|c| c["op"] == "r"), &["id", "at"]);
    assert_eq!(
        backfilled, expected,
        "PG {major}: the backfill reads the root"
    );

    pg.sql(&p.db, "TRUNCATE events").await;
    marker(pg, &p, &js, 2).await;
    let changes = messages(&js, &p.stream).await;
    for c in &changes {
        let table = c["source"]["table"].as_str().unwrap();
        assert!(
            table == "events" || table == "marker",
            "PG {major}: an event names {table}, not the root: {c}"
        );
    }
    let truncates = changes.iter().filter(|c| c["op"] == "t").count();
    assert_eq!(truncates, 1, "PG {major}: one truncate for the whole table");
    assert!(replay(of_table(&changes, "events"), &["id", "at"]).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_filter_and_column_list_limit_the_snapshot_and_the_stream() {
    for (major, pg) in PgCluster::versions(&[15, 17]) {
        // One server per version: their streams capture the same subjects.
        let nats = NatsServer::launch();
        filtered(pg, &nats, major).await;
    }
}

async fn filtered(pg: &'static PgCluster, nats: &NatsServer, major: u32) {
    let js = nats.jetstream().await;
    let cache = tempfile::tempdir().unwrap();
    let name = format!("filter{major}");
    let p = pipeline(
        pg,
        nats,
        &name,
        &["items", "marker"],
        "snapshot = \"initial\"",
    );
    // The filter's column is part of the key: PostgreSQL allows updates of
    // a filtered table only then (or under REPLICA IDENTITY FULL).
    pg.psql(
        &p.db,
        &format!(
            "CREATE TABLE items (id int, region text, amount int, secret text,
                                 PRIMARY KEY (id, region));
             INSERT INTO items SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g, 's'
               FROM generate_series(1, 10) g;
             CREATE TABLE marker (id int PRIMARY KEY);
             CREATE PUBLICATION pub_{name}
               FOR TABLE items (id, region, amount) WHERE (region = 'eu'), marker;"
        ),
    );
    let _host = p.start(cache.path());
    p.wait_streaming(pg).await;
    pg.sql(
        &p.db,
        "INSERT INTO items VALUES (11, 'us', 11, 's'), (12, 'eu', 12, 's');
         UPDATE items SET region = 'eu' WHERE id = 1;   -- enters the filter
         UPDATE items SET region = 'us' WHERE id = 2;   -- leaves it
         UPDATE items SET secret = 't', amount = 40 WHERE id = 4;
         DELETE FROM items WHERE id IN (6, 7);",
    )
    .await;
    marker(pg, &p, &js, 1).await;
    let changes = messages(&js, &p.stream).await;
    let items: Vec<&Value> = of_table(&changes, "items").collect();
    let reads: Vec<&Value> = items.iter().copied().filter(|c| c["op"] == "r").collect();
    assert_eq!(
        reads.len(),
        5,
        "PG {major}: the snapshot reads the eu rows only"
    );
    for c in &items {
        for image in [&c["before"], &c["after"]] {
            if let Some(row) = image.as_object() {
                let columns: Vec<&str> = row.keys().map(String::as_str).collect();
                assert!(
                    columns
                        .iter()
                        .all(|k| ["id", "region", "amount"].contains(k)),
                    "PG {major}: columns outside the column list: {c}"
                );
                if c["op"] != "d" {
                    assert_eq!(
                        row["region"], "eu",
                        "PG {major}: a row outside the filter: {c}"
                    );
                }
            }
        }
    }
    let streamed = replay(items.into_iter(), &["id", "region"]);
    let expected = table_rows(
        pg,
        &p.db,
        "SELECT json_build_object('id', id, 'region', region, 'amount', amount)
           FROM items WHERE region = 'eu'",
        &["id", "region"],
    )
    .await;
    assert_eq!(
        streamed, expected,
        "PG {major}: the stream reproduces the published rows"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_identity_full_fills_an_unchanged_toast_value() {
    for (major, pg) in PgCluster::versions(&[15, 17]) {
        // One server per version: their streams capture the same subjects.
        let nats = NatsServer::launch();
        toast(pg, &nats, major).await;
    }
}

async fn toast(pg: &'static PgCluster, nats: &NatsServer, major: u32) {
    let js = nats.jetstream().await;
    let cache = tempfile::tempdir().unwrap();
    let tables = ["docs_full", "docs_default", "marker"];
    let p = pipeline(pg, nats, &format!("toast{major}"), &tables, "");
    // EXTERNAL storage keeps the 100 kB value out of line and uncompressed,
    // so that an update leaving it alone does not log it again.
    pg.psql(
        &p.db,
        "CREATE TABLE docs_full (id int PRIMARY KEY, n int, body text);
         CREATE TABLE docs_default (id int PRIMARY KEY, n int, body text);
         ALTER TABLE docs_full ALTER COLUMN body SET STORAGE EXTERNAL;
         ALTER TABLE docs_default ALTER COLUMN body SET STORAGE EXTERNAL;
         ALTER TABLE docs_full REPLICA IDENTITY FULL;
         CREATE TABLE marker (id int PRIMARY KEY);",
    );
    let _host = p.start(cache.path());
    p.wait_streaming(pg).await;
    let body = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 3125) g)";
    pg.sql(
        &p.db,
        &format!(
            "INSERT INTO docs_full VALUES (1, 0, {body});
             INSERT INTO docs_default VALUES (1, 0, {body});
             UPDATE docs_full SET n = 1;
             UPDATE docs_default SET n = 1;"
        ),
    )
    .await;
    marker(pg, &p, &js, 1).await;
    let value = pg.sql(&p.db, &format!("SELECT {body}")).await;
    assert_eq!(value.len(), 100_000);
    let changes = messages(&js, &p.stream).await;
    let update = |table: &str| {
        of_table(&changes, table)
            .find(|c| c["op"] == "u")
            .unwrap_or_else(|| panic!("PG {major}: no update of {table}"))
            .clone()
    };
    let full = update("docs_full");
    assert_eq!(full["after"]["n"], 1);
    assert!(
        full["after"]["body"] == value.as_str(),
        "PG {major}: the full row's after-image lacks the body: {}",
        full.get("unchanged_toast").unwrap_or(&Value::Null)
    );
    assert!(full.get("unchanged_toast").is_none());
    assert_eq!(full["before"]["n"], 0, "PG {major}: the before image");
    assert!(full["before"]["body"] == value.as_str());
    let default = update("docs_default");
    assert_eq!(default["after"]["n"], 1);
    assert!(default["after"].get("body").is_none());
    assert_eq!(default["unchanged_toast"], serde_json::json!(["body"]));

    let check = sluice(&["check"], &p, &[]);
    assert!(
        check.contains("table public.docs_full: replica identity full: updates and deletes carry the whole old row; unchanged TOAST values are filled from it")
            && check.contains("table public.docs_default: replica identity default (id): deletes carry the key only"),
        "PG {major}: sluice check says\n{check}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_generated_column_arrives_on_postgresql_18() {
    for (major, pg) in PgCluster::versions(&[18]) {
        // One server per version: their streams capture the same subjects.
        let nats = NatsServer::launch();
        let js = nats.jetstream().await;
        let cache = tempfile::tempdir().unwrap();
        let p = pipeline(
            pg,
            &nats,
            &format!("gen{major}"),
            &["g", "marker"],
            "snapshot = \"initial\"",
        );
        pg.psql(
            &p.db,
            "CREATE TABLE g (id int PRIMARY KEY, a int, doubled int GENERATED ALWAYS AS (a * 2) STORED);
             INSERT INTO g (id, a) VALUES (1, 5);
             CREATE TABLE marker (id int PRIMARY KEY);",
        );
        let _host = p.start(cache.path());
        p.wait_streaming(pg).await;
        pg.sql(
            &p.db,
            "INSERT INTO g (id, a) VALUES (2, 21); UPDATE g SET a = 6 WHERE id = 1",
        )
        .await;
        marker(pg, &p, &js, 1).await;
        let changes = messages(&js, &p.stream).await;
        let ops: Vec<(String, Value, Value)> = of_table(&changes, "g")
            .map(|c| {
                (
                    c["op"].as_str().unwrap().to_owned(),
                    c["after"]["id"].clone(),
                    c["after"]["doubled"].clone(),
                )
            })
            .collect();
        assert_eq!(
            ops,
            [
                ("r".to_owned(), 1.into(), 10.into()),
                ("c".to_owned(), 2.into(), 42.into()),
                ("u".to_owned(), 1.into(), 12.into()),
            ],
            "PG {major}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_none_leaves_out_changes_applied_under_a_replication_origin() {
    for (major, pg) in PgCluster::versions(&[17]) {
        // One server per version: their streams capture the same subjects.
        let nats = NatsServer::launch();
        let js = nats.jetstream().await;
        let cache = tempfile::tempdir().unwrap();
        let p = pipeline(
            pg,
            &nats,
            &format!("origin{major}"),
            &["t", "marker"],
            "origin = \"none\"",
        );
        pg.psql(
            &p.db,
            "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE marker (id int PRIMARY KEY);",
        );
        let _host = p.start(cache.path());
        p.wait_streaming(pg).await;
        let origin = crate::support::unique("other");
        pg.sql(
            &p.db,
            &format!(
                "INSERT INTO t VALUES (1);
                 SELECT pg_replication_origin_create('{origin}');
                 SELECT pg_replication_origin_session_setup('{origin}');
                 INSERT INTO t VALUES (2);
                 SELECT pg_replication_origin_session_reset();
                 INSERT INTO t VALUES (3);"
            ),
        )
        .await;
        marker(pg, &p, &js, 1).await;
        let changes = messages(&js, &p.stream).await;
        let ids: Vec<&Value> = of_table(&changes, "t").map(|c| &c["after"]["id"]).collect();
        assert_eq!(ids, [&Value::from(1), &Value::from(3)], "PG {major}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_none_is_refused_below_postgresql_16() {
    use sluice_host::config::{ChangeOptions, Origin};
    use sluice_host::replication::setup::{self, SetupError, SetupSpec};
    for (major, pg) in PgCluster::versions(&[15]) {
        let db = pg.create_database("origin15");
        let url = pg.superuser_url(&db);
        let spec = SetupSpec {
            publication: "p".into(),
            create_publication: Some(setup::PublicationScope::AllTables),
            slot: sluice_host::replication::SlotName::new(crate::support::unique("o15")).unwrap(),
            create_slot: true,
            changes: ChangeOptions {
                origin: Origin::None,
                ..ChangeOptions::default()
            },
        };
        let info = sluice_host::replication::ConnInfo::parse_with_env(&url, |_| None).unwrap();
        let Err(SetupError::Problems(problems)) = setup::check(&info, &spec).await else {
            panic!("PG {major}: origin = \"none\" was accepted");
        };
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.starts_with(
                "source.origin = \"none\" needs PostgreSQL 16 or later (pgoutput's `origin` option), but the server is 15"
            )),
            "PG {major}: {text:?}"
        );
    }
}
