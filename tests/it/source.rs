//! Replication source tests against a real PostgreSQL 15 started by the
//! harness: a differential test against PostgreSQL's own `test_decoding`
//! plugin over every supported type, schema changes mid-stream, replica
//! identities, truncates and logical messages, a large transaction in
//! bounded batches, reconnection after the walsender is killed, a slow
//! consumer under a short `wal_sender_timeout`, and `sluice tail`.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::support::postgres::{ClusterOptions, PgCluster};
use crate::support::test_decoding::{self, Record};
use crate::support::{poll_until, unique};
use sluice_host::config::SourceSettings;
use sluice_host::lsn::Lsn;
use sluice_host::model::{Batch, Event, LogicalMessage, Operation, RowChange, Value};
use sluice_host::replication::{ConnInfo, SlotName};
use sluice_host::source::{
    self, SlotKind, SourceEvent, SourceOptions, SourceStream, StartPosition,
};
use sluice_host::tail::{self, TailOptions};
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);

fn info(url: &str) -> ConnInfo {
    ConnInfo::parse_with_env(url, |_| None).expect("valid URL")
}

fn settings(url: &str, publication: &str, slot: &str) -> SourceSettings {
    SourceSettings {
        conninfo: info(url),
        publication: publication.parse().expect("publication name"),
        slot: SlotName::new(slot).expect("slot name"),
        create_slot: true,
        create_publication: None,
        snapshot: sluice_host::config::SnapshotMode::Never,
        failover: None,
        changes: sluice_host::config::ChangeOptions::default(),
        on_ghost_changes: sluice_host::config::GhostChanges::Refuse,
    }
}

fn options(max_events: usize) -> SourceOptions {
    SourceOptions::new(NonZeroUsize::new(max_events).unwrap())
}

/// A database with the given schema, and the superuser's URL for it.
fn database(pg: &PgCluster, prefix: &str, schema: &str) -> (String, String) {
    let db = pg.create_database(prefix);
    pg.psql(&db, schema);
    let url = pg.url("postgres", None, &db, "sslmode=disable");
    (db, url)
}

/// Creates the durable slot and starts streaming at its position; the
/// flush LSN stays at what the returned sender says.
async fn start(settings: &SourceSettings, max_events: usize) -> (SourceStream, watch::Sender<Lsn>) {
    let prepared = source::prepare(settings, SlotKind::Durable, options(max_events))
        .await
        .unwrap_or_else(|e| panic!("prepare: {e:#?}"));
    let (tx, rx) = watch::channel(Lsn::ZERO);
    let stream = prepared.start(StartPosition::SLOT, rx).await.unwrap();
    (stream, tx)
}

async fn next(stream: &mut SourceStream) -> SourceEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no event within the timeout")
        .expect("the stream ended")
        .unwrap_or_else(|e| panic!("source error: {e:#?}"))
}

/// Events up to (excluding) the non-transactional message with `prefix`;
/// keepalives left out.
async fn until_marker(stream: &mut SourceStream, prefix: &str) -> Vec<SourceEvent> {
    let mut events = Vec::new();
    loop {
        match next(stream).await {
            SourceEvent::Keepalive { .. } => {}
            SourceEvent::Batch(b) if is_marker(&b, prefix) => {
                // Its TransactionEnd follows; consume it too.
                assert!(matches!(next(stream).await, SourceEvent::TransactionEnd(e) if e.xid == 0));
                return events;
            }
            e => events.push(e),
        }
    }
}

fn is_marker(b: &Batch, prefix: &str) -> bool {
    b.xid == 0
        && matches!(&b.events[..], [Event::Message(m)] if m.prefix == prefix && !m.transactional)
}

fn marker(pg: &PgCluster, db: &str, prefix: &str) {
    pg.psql(
        db,
        &format!("SELECT pg_logical_emit_message(false, '{prefix}', '')"),
    );
}

fn batches(events: &[SourceEvent]) -> Vec<&Batch> {
    events
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Batch(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn rows(events: &[SourceEvent]) -> Vec<(String, RowChange)> {
    batches(events)
        .into_iter()
        .flat_map(|b| {
            b.events.iter().filter_map(|e| match e {
                Event::Row(r) => Some((b.relations[r.relation as usize].name.clone(), r.clone())),
                _ => None,
            })
        })
        .collect()
}

/// Sluice's events, normalised (see `support/test_decoding.rs`).
fn normalise(events: &[SourceEvent]) -> Vec<Record> {
    let mut out = Vec::new();
    for e in events {
        match e {
            SourceEvent::Batch(b) => test_decoding::from_batch(b, &mut out),
            SourceEvent::TransactionEnd(end) if end.xid != 0 => out.push(Record::Commit),
            _ => {}
        }
    }
    out
}

/// test_decoding's changes on `slot` up to the marker, normalised; the
/// session prints values with the settings the normalisation assumes.
async fn test_decoding_records(url: &str, slot: &str, marker: &str) -> Vec<Record> {
    let client = sluice_host::replication::setup::connect_sql(&info(url))
        .await
        .unwrap();
    client
        .batch_execute(
            "SET DateStyle = ISO; SET IntervalStyle = postgres; SET TimeZone = UTC; \
             SET extra_float_digits = 3; SET bytea_output = hex",
        )
        .await
        .unwrap();
    let rows = client
        .query(
            // As bytes: a message's content is copied into the text as is,
            // so it need not be valid UTF-8.
            "SELECT textsend(data) FROM pg_logical_slot_peek_changes($1, NULL, NULL, 'include-xids', '0', 'skip-empty-xacts', '1')",
            &[&slot],
        )
        .await
        .unwrap();
    let mut lines: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
    let end = lines
        .iter()
        .position(|l| {
            l.starts_with(format!("message: transactional: 0 prefix: {marker},").as_bytes())
        })
        .expect("the marker in test_decoding's output");
    lines.truncate(end);
    test_decoding::parse(&lines)
}

fn assert_same(ours: &[Record], theirs: &[Record]) {
    assert_eq!(ours.len(), theirs.len(), "record counts differ");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(
            a, b,
            "record {i} differs (left: sluice, right: test_decoding)"
        );
    }
}

const TYPES_SCHEMA: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'happy');
    CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
    CREATE TABLE types (
        id int PRIMARY KEY, b bool, i2 int2, i8 int8, f4 float4, f8 float8, n numeric,
        t text, vc varchar(20), bp char(3), by bytea, j json, jb jsonb, u uuid, d date,
        tm time, ts timestamp, tstz timestamptz, iv interval, arr int[], tarr text[],
        m mood, dom posint, big text);
    ALTER TABLE types ALTER COLUMN big SET STORAGE EXTERNAL;
    CREATE TABLE full_t (id int, v text, n numeric);
    ALTER TABLE full_t REPLICA IDENTITY FULL;
    CREATE PUBLICATION pub FOR ALL TABLES;";

const TYPES_WORKLOAD: &str = r#"
    INSERT INTO types VALUES (1, true, 32767, 9223372036854775807, 1.5, 3.141592653589793,
        ('1' || repeat('0', 999))::numeric, 'héllo ✓ 😀 it''s "q" \ back', 'varchar', 'ab',
        '\x00ff0001'::bytea, '{"a": [1, 2.50], "b": null}', '{"b": {"c": "ü"}, "a": 1}',
        'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '2024-02-29', '23:59:59.999999',
        '2024-01-01 00:00:00.5', '2024-06-30 12:34:56.789+02',
        '1 year 2 mons -3 days 04:05:06.789', '{1,NULL,3}', '{"a b","c\"d",NULL,""}',
        'happy', 5, repeat('x', 1000000));
    INSERT INTO types (id) VALUES (2);
    INSERT INTO types VALUES (3, false, -32768, -9223372036854775808, 'NaN', '-Infinity', 'NaN',
        '', '', '', '\x'::bytea, '[]', '{}', '00000000-0000-0000-0000-000000000000',
        '0044-03-15 BC', '00:00', '-infinity', 'infinity', '0', '{}', '{}', 'sad', 1, '');
    INSERT INTO types (id, f4, f8, n, d, ts, tstz, iv) VALUES (4, '-Infinity', 'Infinity',
        (repeat('9', 500) || '.' || repeat('1', 500))::numeric, 'infinity',
        '1999-12-31 23:59:59.000001', '-infinity', '-1 mons -00:00:00.000001');
    INSERT INTO types (id, f4, f8, n) VALUES (5, 1e-30, 1e100, -0.000000000000000000001);
    UPDATE types SET t = 'changed', b = NULL WHERE id = 1;
    UPDATE types SET id = 10 WHERE id = 3;
    DELETE FROM types WHERE id = 2;
    BEGIN;
    INSERT INTO full_t VALUES (1, 'one', 1.10), (2, NULL, NULL);
    UPDATE full_t SET v = 'uno' WHERE id = 1;
    SELECT pg_logical_emit_message(true, 'txn', 'inside');
    DELETE FROM full_t WHERE id = 2;
    COMMIT;
    SELECT pg_logical_emit_message(false, 'plain', '\x00ff'::bytea);
    TRUNCATE full_t;
"#;

#[tokio::test]
async fn every_type_decodes_as_test_decoding_prints_it() {
    let pg = PgCluster::shared();
    let (db, url) = database(pg, "types", TYPES_SCHEMA);
    let (slot, td) = (unique("types"), unique("types_td"));
    let (mut stream, _flush) = start(&settings(&url, "pub", &slot), 256).await;
    // The second slot is created after ours and before any change, so both
    // see exactly the workload.
    pg.psql(
        &db,
        &format!("SELECT pg_create_logical_replication_slot('{td}', 'test_decoding')"),
    );
    pg.psql(&db, TYPES_WORKLOAD);
    marker(pg, &db, "end");

    let events = until_marker(&mut stream, "end").await;
    let ours = normalise(&events);
    let theirs = test_decoding_records(&url, &td, "end").await;
    assert_same(&ours, &theirs);
    assert!(ours.len() > 15, "{ours:#?}");

    // The normalisation must not hide what matters: spot-check exact values.
    let rows = rows(&events);
    let first = rows[0].1.new.as_ref().unwrap();
    assert_eq!(first[0], Value::Int(1));
    assert_eq!(first[6], Value::Numeric(format!("1{}", "0".repeat(999))));
    assert_eq!(first[10], Value::Bytes(vec![0, 255, 0, 1]));
    assert_eq!(
        first[13],
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
    );
    assert!(matches!(&first[23], Value::Text(t) if t.len() == 1_000_000));
    let update = rows
        .iter()
        .find(|(_, r)| r.op == Operation::Update)
        .unwrap();
    let new = update.1.new.as_ref().unwrap();
    assert_eq!(
        new[23],
        Value::UnchangedToast,
        "the 1 MB value was not touched"
    );
    assert_eq!(new[1], Value::Null);
    assert_eq!(new[7], Value::Text("changed".into()));
    let special = &rows[2].1.new.as_ref().unwrap();
    assert!(matches!(special[4], Value::Float(f) if f.is_nan()));
    assert_eq!(special[5], Value::Float(f64::NEG_INFINITY));
    assert_eq!(special[6], Value::Numeric("NaN".into()));
    assert_eq!(special[16], Value::Timestamp(i64::MIN));
    assert_eq!(special[17], Value::Timestamptz(i64::MAX));
    stream.stop().await.unwrap();
    pg.psql(
        &db,
        &format!("SELECT pg_drop_replication_slot('{slot}'), pg_drop_replication_slot('{td}')"),
    );
}

#[tokio::test]
async fn schema_changes_mid_stream_decode_on_both_sides() {
    let pg = PgCluster::shared();
    let (db, url) = database(
        pg,
        "ddl",
        "CREATE TABLE s (id int PRIMARY KEY, a text, c int); CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let (slot, td) = (unique("ddl"), unique("ddl_td"));
    let (mut stream, _flush) = start(&settings(&url, "pub", &slot), 2).await;
    pg.psql(
        &db,
        &format!("SELECT pg_create_logical_replication_slot('{td}', 'test_decoding')"),
    );
    // One transaction per statement (psql runs a multi-statement string
    // as one), except the one that changes the table half-way.
    for sql in [
        "INSERT INTO s VALUES (1, 'a1', 10)",
        "BEGIN; INSERT INTO s VALUES (2, 'a2', 20); ALTER TABLE s ADD COLUMN b int DEFAULT 7; \
         INSERT INTO s VALUES (3, 'a3', 30, 8); COMMIT;",
        "UPDATE s SET a = 'x' WHERE id = 1",
        "ALTER TABLE s ALTER COLUMN c TYPE bigint",
        "INSERT INTO s VALUES (4, 'a4', 9000000000, 9)",
        "ALTER TABLE s DROP COLUMN a",
        "INSERT INTO s VALUES (5, 50, 10)",
        "UPDATE s SET b = 11 WHERE id = 2",
        "DELETE FROM s WHERE id = 3",
    ] {
        pg.psql(&db, sql);
    }
    marker(pg, &db, "end");
    let events = until_marker(&mut stream, "end").await;
    assert_same(
        &normalise(&events),
        &test_decoding_records(&url, &td, "end").await,
    );

    // Each row's relation has the shape of its moment.
    let shapes: Vec<(i64, Vec<String>)> = batches(&events)
        .iter()
        .flat_map(|b| {
            b.events.iter().filter_map(move |e| match e {
                Event::Row(r) if r.op == Operation::Insert => {
                    let rel = &b.relations[r.relation as usize];
                    let id = match r.new.as_ref().unwrap()[0] {
                        Value::Int(i) => i,
                        ref other => panic!("{other:?}"),
                    };
                    Some((
                        id,
                        rel.columns
                            .iter()
                            .map(|c| format!("{}:{}", c.name, c.type_name))
                            .collect(),
                    ))
                }
                _ => None,
            })
        })
        .collect();
    let s = |cols: &[&str]| cols.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert_eq!(
        shapes,
        vec![
            (1, s(&["id:int4", "a:text", "c:int4"])),
            (2, s(&["id:int4", "a:text", "c:int4"])),
            (3, s(&["id:int4", "a:text", "c:int4", "b:int4"])),
            (4, s(&["id:int4", "a:text", "c:int8", "b:int4"])),
            (5, s(&["id:int4", "c:int8", "b:int4"])),
        ]
    );
    // The transaction with the ADD COLUMN is cut where the table changed:
    // id 2 alone in its first batch, id 3 in the last.
    let txn: Vec<&Batch> = batches(&events)
        .into_iter()
        .filter(|b| {
            b.events.iter().any(|e| {
                matches!(e, Event::Row(r) if r.op == Operation::Insert
                    && r.new.as_ref().unwrap()[0] == Value::Int(2))
            })
        })
        .collect();
    assert_eq!(txn.len(), 1);
    assert!(
        txn[0].first && !txn[0].last && txn[0].events.len() == 1,
        "{:?}",
        txn[0]
    );
    stream.stop().await.unwrap();
    pg.psql(
        &db,
        &format!("SELECT pg_drop_replication_slot('{slot}'), pg_drop_replication_slot('{td}')"),
    );
}

#[tokio::test]
async fn old_values_follow_the_replica_identity() {
    let pg = PgCluster::shared();
    let (db, url) = database(
        pg,
        "identity",
        "CREATE TABLE t_default (id int PRIMARY KEY, v text, w int);
         CREATE TABLE t_full (id int, v text, w int);
         ALTER TABLE t_full REPLICA IDENTITY FULL;
         CREATE TABLE t_index (id int, v text NOT NULL, w int);
         CREATE UNIQUE INDEX t_index_v ON t_index (v);
         ALTER TABLE t_index REPLICA IDENTITY USING INDEX t_index_v;
         CREATE TABLE t_nothing (id int, v text);
         ALTER TABLE t_nothing REPLICA IDENTITY NOTHING;
         CREATE PUBLICATION pub FOR TABLE t_default, t_full, t_index;
         CREATE PUBLICATION pub_nothing FOR TABLE t_nothing WITH (publish = 'insert');
         INSERT INTO t_default VALUES (1, 'a', 1); INSERT INTO t_full VALUES (1, 'a', 1);
         INSERT INTO t_index VALUES (1, 'a', 1); INSERT INTO t_nothing VALUES (1, 'a');",
    );
    let slot = unique("identity");
    let (mut stream, _flush) = start(&settings(&url, "pub", &slot), 256).await;
    let slot_nothing = unique("nothing");
    let (mut nothing, _flush2) = start(&settings(&url, "pub_nothing", &slot_nothing), 256).await;
    pg.psql(
        &db,
        "UPDATE t_default SET w = 2 WHERE id = 1;
         UPDATE t_default SET id = 2 WHERE id = 1;
         DELETE FROM t_default WHERE id = 2;
         UPDATE t_full SET w = 2 WHERE id = 1;
         DELETE FROM t_full WHERE id = 1;
         UPDATE t_index SET w = 2 WHERE id = 1;
         UPDATE t_index SET v = 'b' WHERE id = 1;
         DELETE FROM t_index WHERE id = 1;
         UPDATE t_nothing SET v = 'b';
         INSERT INTO t_nothing VALUES (2, 'c');
         DELETE FROM t_nothing;",
    );
    marker(pg, &db, "end");
    let (int, text, null) = (Value::Int, |s: &str| Value::Text(s.into()), Value::Null);
    type Row = (String, Operation, Option<Vec<Value>>, Option<Vec<Value>>);
    let got: Vec<Row> = rows(&until_marker(&mut stream, "end").await)
        .into_iter()
        .map(|(table, r)| (table, r.op, r.old, r.new))
        .collect();
    let row = |t: &str, op, old: Option<Vec<Value>>, new: Option<Vec<Value>>| {
        (t.to_owned(), op, old, new)
    };
    use Operation::{Delete, Update};
    assert_eq!(
        got,
        vec![
            // DEFAULT: no old values unless the key changes; then the key only.
            row(
                "t_default",
                Update,
                None,
                Some(vec![int(1), text("a"), int(2)])
            ),
            row(
                "t_default",
                Update,
                Some(vec![int(1), null.clone(), null.clone()]),
                Some(vec![int(2), text("a"), int(2)])
            ),
            row(
                "t_default",
                Delete,
                Some(vec![int(2), null.clone(), null.clone()]),
                None
            ),
            // FULL: the whole old row, always.
            row(
                "t_full",
                Update,
                Some(vec![int(1), text("a"), int(1)]),
                Some(vec![int(1), text("a"), int(2)])
            ),
            row(
                "t_full",
                Delete,
                Some(vec![int(1), text("a"), int(2)]),
                None
            ),
            // USING INDEX: the index columns, when they change.
            row(
                "t_index",
                Update,
                None,
                Some(vec![int(1), text("a"), int(2)])
            ),
            row(
                "t_index",
                Update,
                Some(vec![null.clone(), text("a"), null.clone()]),
                Some(vec![int(1), text("b"), int(2)])
            ),
            row(
                "t_index",
                Delete,
                Some(vec![null.clone(), text("b"), null.clone()]),
                None
            ),
        ]
    );
    // NOTHING: PostgreSQL only allows a publication that publishes no
    // updates or deletes for it; its inserts arrive, with no old values.
    let nothing_rows = rows(&until_marker(&mut nothing, "end").await);
    assert_eq!(nothing_rows.len(), 1);
    assert_eq!(nothing_rows[0].1.op, Operation::Insert);
    assert_eq!(nothing_rows[0].1.old, None);
    assert_eq!(nothing_rows[0].1.new, Some(vec![int(2), text("c")]));
    stream.stop().await.unwrap();
    nothing.stop().await.unwrap();
    pg.psql(
        &db,
        &format!(
            "SELECT pg_drop_replication_slot('{slot}'), pg_drop_replication_slot('{slot_nothing}')"
        ),
    );
}

#[tokio::test]
async fn truncates_and_logical_messages() {
    let pg = PgCluster::shared();
    let (db, url) = database(
        pg,
        "truncate",
        "CREATE TABLE a (id serial PRIMARY KEY);
         CREATE TABLE b (id int PRIMARY KEY);
         CREATE TABLE c (id int PRIMARY KEY, a_id int REFERENCES a);
         CREATE PUBLICATION pub FOR ALL TABLES;
         INSERT INTO a VALUES (1); INSERT INTO c VALUES (1, 1);",
    );
    let slot = unique("truncate");
    let (mut stream, _flush) = start(&settings(&url, "pub", &slot), 256).await;
    pg.psql(
        &db,
        "TRUNCATE a, b RESTART IDENTITY CASCADE;
         TRUNCATE b;
         BEGIN;
         INSERT INTO b VALUES (1);
         SELECT pg_logical_emit_message(true, 'audit', 'who=me');
         COMMIT;
         SELECT pg_logical_emit_message(false, 'hb', '\\x00ff'::bytea);",
    );
    marker(pg, &db, "end");
    let events = until_marker(&mut stream, "end").await;
    let got: Vec<(u32, bool, Vec<String>, Event)> = batches(&events)
        .into_iter()
        .flat_map(|b| {
            b.events.iter().map(move |e| {
                let names = match e {
                    Event::Truncate(t) => t
                        .relations
                        .iter()
                        .map(|i| b.relations[*i as usize].name.clone())
                        .collect(),
                    _ => Vec::new(),
                };
                (b.xid, b.first && b.last, names, e.clone())
            })
        })
        .collect();
    assert_eq!(got.len(), 5, "{got:#?}");
    let Event::Truncate(t) = &got[0].3 else {
        panic!("{got:?}")
    };
    assert!(t.cascade && t.restart_identity);
    assert_eq!(
        got[0].2.iter().cloned().collect::<BTreeSet<_>>(),
        ["a", "b", "c"].map(String::from).into_iter().collect()
    );
    let Event::Truncate(t) = &got[1].3 else {
        panic!("{got:?}")
    };
    assert!(!t.cascade && !t.restart_identity);
    assert_eq!(got[1].2, ["b"]);
    assert!(matches!(&got[2].3, Event::Row(r) if r.op == Operation::Insert));
    let Event::Message(m) = &got[3].3 else {
        panic!("{got:?}")
    };
    assert_eq!(
        (m.transactional, m.prefix.as_str(), m.content.as_slice()),
        (true, "audit", &b"who=me"[..])
    );
    assert_eq!(got[3].0, got[2].0, "in the insert's transaction");
    let Event::Message(m) = &got[4].3 else {
        panic!("{got:?}")
    };
    assert_eq!(
        m,
        &LogicalMessage {
            transactional: false,
            prefix: "hb".into(),
            content: vec![0, 255],
            lsn: m.lsn
        }
    );
    assert_eq!(got[4].0, 0, "non-transactional: xid 0");
    assert!(got[4].1, "its own batch");
    stream.stop().await.unwrap();
    pg.psql(&db, &format!("SELECT pg_drop_replication_slot('{slot}')"));
}

#[tokio::test]
async fn a_large_transaction_streams_in_bounded_batches() {
    let pg = PgCluster::shared();
    let (db, url) = database(
        pg,
        "large",
        "CREATE TABLE big (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let slot = unique("large");
    let (mut stream, _flush) = start(&settings(&url, "pub", &slot), 1000).await;
    pg.psql(
        &db,
        "INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 200000) g",
    );
    let (mut batches, mut events, mut expected_id) = (0, 0, 1);
    let mut commit_lsn = None;
    loop {
        match next(&mut stream).await {
            SourceEvent::Batch(b) => {
                assert!(b.events.len() <= 1000);
                assert_eq!(b.first, batches == 0, "first flag on batch {batches}");
                assert_eq!(*commit_lsn.get_or_insert(b.commit_lsn), b.commit_lsn);
                for e in &b.events {
                    let Event::Row(r) = e else { panic!("{e:?}") };
                    assert_eq!(r.new.as_ref().unwrap()[0], Value::Int(expected_id));
                    expected_id += 1;
                }
                events += b.events.len();
                batches += 1;
                assert_eq!(b.last, events == 200_000, "last flag on batch {batches}");
            }
            SourceEvent::TransactionEnd(end) => {
                assert_eq!(Some(end.commit_lsn), commit_lsn);
                assert!(end.end_lsn > end.commit_lsn);
                break;
            }
            SourceEvent::Keepalive { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((batches, events), (200, 200_000));
    stream.stop().await.unwrap();
    pg.psql(&db, &format!("SELECT pg_drop_replication_slot('{slot}')"));
}

/// The walsender is killed while a large transaction is half delivered:
/// the source reconnects, says which transaction to discard, and every
/// committed transaction arrives exactly once (the flush LSN stays 0/0, so
/// the server replays everything, and the source skips what it delivered).
#[tokio::test]
async fn reconnects_after_the_walsender_dies_and_loses_nothing() {
    let pg = PgCluster::shared();
    let (db, url) = database(
        pg,
        "reconnect",
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let slot = unique("reconnect");
    let mut opts = options(100);
    opts.capacity = 4;
    opts.backoff = sluice_host::replication::Backoff::new(
        Duration::from_millis(50),
        Duration::from_millis(500),
    );
    let prepared = source::prepare(&settings(&url, "pub", &slot), SlotKind::Durable, opts)
        .await
        .unwrap();
    let (_flush, rx) = watch::channel(Lsn::ZERO);
    let mut stream = prepared.start(StartPosition::SLOT, rx).await.unwrap();
    let small = |from: i32| {
        (0..10)
            .map(|i| {
                let id = from + i * 10;
                format!(
                    "BEGIN; INSERT INTO t SELECT g, 'small' FROM generate_series({id}, {}) g; COMMIT;",
                    id + 9
                )
            })
            .collect::<String>()
    };
    pg.psql(&db, &small(1_000_000));
    pg.psql(
        &db,
        "INSERT INTO t SELECT g, repeat('v', 50) FROM generate_series(1, 200000) g",
    );
    pg.psql(&db, &small(2_000_000));
    marker(pg, &db, "end");

    // Transactions by commit LSN → rows received; a restart discards the
    // abandoned one's rows.
    let mut received: std::collections::BTreeMap<Lsn, usize> = Default::default();
    let mut ended = Vec::new();
    let mut killed = false;
    let mut restarts = Vec::new();
    loop {
        match next(&mut stream).await {
            SourceEvent::Batch(b) if is_marker(&b, "end") => break,
            SourceEvent::Batch(b) => {
                if b.first {
                    assert_eq!(
                        received.insert(b.commit_lsn, 0),
                        None,
                        "a transaction began twice without a restart"
                    );
                }
                *received.get_mut(&b.commit_lsn).expect("first batch seen") += b.events.len();
                if !killed && b.first && !b.last && b.events.len() == 100 {
                    let pid = pg.psql(
                        &db,
                        &format!(
                            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{slot}'"
                        ),
                    );
                    pg.psql(&db, &format!("SELECT pg_terminate_backend({pid})"));
                    killed = true;
                }
            }
            SourceEvent::TransactionEnd(e) => ended.push(e.commit_lsn),
            SourceEvent::Restarted(r) => {
                if let Some(a) = r.abandoned {
                    received.remove(&a.commit_lsn);
                }
                restarts.push(r);
            }
            SourceEvent::Keepalive { .. } | SourceEvent::Promoted { .. } => {}
            SourceEvent::Ghosts(change) => panic!("no promotion here: {change:?}"),
        }
    }
    assert!(killed);
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    assert!(
        restarts[0].abandoned.is_some(),
        "the large transaction was cut"
    );
    assert_eq!(ended.len(), 21, "every transaction ended exactly once");
    assert!(ended.windows(2).all(|w| w[0] < w[1]), "in commit order");
    let counts: Vec<usize> = received.values().copied().collect();
    assert_eq!(counts.iter().sum::<usize>(), 200_000 + 20 * 10);
    assert_eq!(counts.iter().filter(|c| **c == 200_000).count(), 1);
    let total: i64 = pg.psql(&db, "SELECT count(*) FROM t").parse().unwrap();
    assert_eq!(total, 200_200);
    stream.stop().await.unwrap();
    pg.psql(&db, &format!("SELECT pg_drop_replication_slot('{slot}')"));
}

/// A consumer that does not pull for three times `wal_sender_timeout`
/// keeps its connection: the reader answers the server meanwhile.
#[tokio::test]
async fn a_slow_consumer_does_not_time_out_the_walsender() {
    let mut pg = PgCluster::start(ClusterOptions {
        extra_conf: vec!["wal_sender_timeout = 2s".into()],
        ..ClusterOptions::default()
    });
    let db = pg.create_database("slow");
    pg.psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let url = pg.url("postgres", None, &db, "sslmode=disable");
    let slot = unique("slow");
    let mut opts = options(10);
    opts.capacity = 2;
    let prepared = source::prepare(&settings(&url, "pub", &slot), SlotKind::Durable, opts)
        .await
        .unwrap();
    let (_flush, rx) = watch::channel(Lsn::ZERO);
    let mut stream = prepared.start(StartPosition::SLOT, rx).await.unwrap();
    let pid_query =
        format!("SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{slot}'");
    let pid = pg.psql(&db, &pid_query);
    pg.psql(&db, "INSERT INTO t SELECT generate_series(1, 1000)");
    marker(&pg, &db, "end");
    // The slow consumer: the channel is full and the server has more to
    // send, so only the reader's own status updates keep the session up.
    // Not a wait: not pulling for 3 × wal_sender_timeout is the test.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let events = until_marker(&mut stream, "end").await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, SourceEvent::Restarted(_))),
        "the connection was lost"
    );
    assert_eq!(rows(&events).len(), 1000);
    assert_eq!(pg.psql(&db, &pid_query), pid, "the same walsender");
    stream.stop().await.unwrap();
    pg.stop();
}

fn strip_volatile(line: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
    let obj = v.as_object_mut().unwrap();
    for key in ["xid", "commit-lsn", "commit-time", "lsn"] {
        if let Some(field) = obj.get_mut(key) {
            assert!(!field.is_null());
            *field = serde_json::Value::Null;
        }
    }
    v
}

#[tokio::test]
async fn tail_from_start_prints_json_lines_and_leaves_no_slot() {
    let pg = PgCluster::shared();
    let (db, url) = database(
        pg,
        "tail",
        "CREATE TABLE t (id int PRIMARY KEY, name text, price numeric, at timestamptz);
         CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let options = TailOptions::new(info(&url), "pub".parse().unwrap(), None);
    let (mut writer, reader) = tokio::io::duplex(1 << 16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let tail = tokio::spawn(async move {
        tail::run(options, None, &mut writer, async {
            let _ = stopped.await;
        })
        .await
    });
    // A slot listed but still waiting for its consistent point (other
    // tests' transactions) would not stream changes made now: wait until
    // it has a position.
    let slots = format!(
        "SELECT count(*) FROM pg_replication_slots \
         WHERE temporary AND database = '{db}' AND confirmed_flush_lsn IS NOT NULL"
    );
    let positioned = poll_until(WAIT, || async {
        tail.is_finished() || pg.sql(&db, &slots).await == "1"
    })
    .await;
    if tail.is_finished() {
        panic!("tail ended: {:?}", tail.await);
    }
    assert!(positioned.is_some(), "no temporary slot with a position");
    pg.psql(
        &db,
        "INSERT INTO t VALUES (1, 'ünï', 9.99, '2024-01-02 03:04:05+00');
         UPDATE t SET price = 10 WHERE id = 1;
         DELETE FROM t WHERE id = 1;
         TRUNCATE t;",
    );
    pg.psql(&db, "SELECT pg_logical_emit_message(false, 'note', 'hi')");
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let mut got = Vec::new();
    let mut raw = Vec::new();
    while got.len() < 5 {
        let Ok(line) = tokio::time::timeout(WAIT, lines.next_line()).await else {
            stop.send(()).unwrap();
            panic!(
                "no line within the timeout; got {got:?}; tail: {:?}",
                tail.await
            );
        };
        let line = line.unwrap().expect("more output");
        got.push(strip_volatile(&line));
        raw.push(line);
    }
    // Columns are printed in table order (JSON objects compare unordered).
    let at = |key: &str| raw[0].find(&format!("\"{key}\":")).unwrap();
    assert!(
        at("id") < at("name") && at("name") < at("price") && at("price") < at("at"),
        "{}",
        raw[0]
    );
    stop.send(()).unwrap();
    let summary = tail.await.unwrap().unwrap();
    assert!(summary.temporary);
    assert_eq!(summary.lines, 5);
    let expected: Vec<serde_json::Value> = [
        r#"{"xid":null,"commit-lsn":null,"commit-time":null,"op":"insert","schema":"public","table":"t","lsn":null,"new":{"id":{"int":1},"name":{"text":"ünï"},"price":{"numeric":"9.99"},"at":{"timestamptz":1704164645000000}}}"#,
        r#"{"xid":null,"commit-lsn":null,"commit-time":null,"op":"update","schema":"public","table":"t","lsn":null,"new":{"id":{"int":1},"name":{"text":"ünï"},"price":{"numeric":"10"},"at":{"timestamptz":1704164645000000}}}"#,
        r#"{"xid":null,"commit-lsn":null,"commit-time":null,"op":"delete","schema":"public","table":"t","lsn":null,"old":{"id":{"int":1},"name":"null","price":"null","at":"null"}}"#,
        r#"{"xid":null,"commit-lsn":null,"commit-time":null,"op":"truncate","lsn":null,"tables":["public.t"],"cascade":false,"restart-identity":false}"#,
        r#"{"xid":null,"commit-lsn":null,"commit-time":null,"op":"message","lsn":null,"transactional":false,"prefix":"note","content":"6869"}"#,
    ]
    .iter()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert_eq!(got, expected);
    // Its temporary slot is gone (the cluster is shared: only this database's
    // slots count).
    let slots = format!("SELECT count(*) FROM pg_replication_slots WHERE database = '{db}'");
    pg.wait_for(&db, &slots, "0", WAIT);
}

#[tokio::test]
async fn tail_on_a_durable_slot_does_not_advance_it() {
    let pg = PgCluster::shared();
    let (db, url) = database(
        pg,
        "taildurable",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let slot = unique("durable");
    pg.psql(
        &db,
        &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
    );
    let position =
        format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'");
    let before = pg.psql(&db, &position);
    pg.psql(&db, "INSERT INTO t VALUES (1)");
    pg.psql(&db, "INSERT INTO t VALUES (2)");
    let options = TailOptions::new(
        info(&url),
        "pub".parse().unwrap(),
        Some(SlotName::new(&slot).unwrap()),
    );
    let mut out = Vec::new();
    let (mut writer, reader) = tokio::io::duplex(1 << 16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let tail = tokio::spawn(async move {
        tail::run(options, None, &mut writer, async {
            let _ = stopped.await;
        })
        .await
    });
    let mut lines = tokio::io::BufReader::new(reader).lines();
    while out.len() < 2 {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        out.push(line);
    }
    stop.send(()).unwrap();
    let summary = tail.await.unwrap().unwrap();
    assert!(!summary.temporary);
    assert_eq!(summary.transactions, 2);
    assert_eq!(pg.psql(&db, &position), before, "the slot did not move");
    pg.psql(&db, &format!("SELECT pg_drop_replication_slot('{slot}')"));
}

#[tokio::test]
async fn a_missing_publication_is_reported_before_connecting() {
    let pg = PgCluster::shared();
    let (_db, url) = database(pg, "nopub", "CREATE TABLE t (id int PRIMARY KEY)");
    let err = source::prepare(
        &settings(&url, "absent", &unique("nopub")),
        SlotKind::Durable,
        options(10),
    )
    .await
    .unwrap_err();
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.starts_with("PostgreSQL is not ready for logical replication:\n  - publication \"absent\" does not exist in database"),
        "{text}"
    );
}

/// A temporary slot dies with its connection: losing it is a definite
/// error that says so, not a silent restart from a new slot.
#[tokio::test]
async fn losing_a_temporary_slot_is_a_definite_error() {
    let pg = PgCluster::shared();
    let (db, url) = database(
        pg,
        "templost",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let slot = unique("templost");
    let prepared = source::prepare(
        &settings(&url, "pub", &slot),
        SlotKind::Temporary,
        options(10),
    )
    .await
    .unwrap();
    assert!(prepared.slot().temporary && prepared.slot().created);
    let (_flush, rx) = watch::channel(Lsn::ZERO);
    let mut stream = prepared.start(StartPosition::SLOT, rx).await.unwrap();
    pg.psql(
        &db,
        &format!("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    );
    let err = loop {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("an error in time")
        {
            Some(Ok(_)) => {}
            Some(Err(e)) => break e,
            None => panic!("ended without an error"),
        }
    };
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        format!(
            "lost the connection holding temporary replication slot \"{slot}\": the slot and its position are gone with it; start again"
        )
    );
    assert!(stream.next().await.is_none(), "an error ends the stream");
    stream.stop().await.unwrap();
    pg.wait_for(
        &db,
        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        "0",
        WAIT,
    );
}
