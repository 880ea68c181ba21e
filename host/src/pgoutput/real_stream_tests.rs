//! Decodes a stream captured from a real PostgreSQL 15 (see
//! `testdata/pg15_edge_values.sql` for the statements and the command that
//! captured it): edge values of every mapped type, a TOASTed column left
//! unchanged by an UPDATE, a key change, ADD COLUMN mid-stream, DELETE,
//! TRUNCATE and a non-transactional message.

use std::num::NonZeroUsize;

use crate::lsn::Lsn;
use crate::model::{Batch, Event, Interval, Operation, Value};

use super::{Batcher, TransactionEnd};

const CAPTURE: &str = include_str!("testdata/pg15_edge_values.txt");

fn hex(text: &str) -> Vec<u8> {
    crate::model::hex_bytes::decode(text).expect("fixture is hex")
}

/// Runs the capture through a batcher; returns batches and ends in order.
fn replay(max_events: usize) -> (Vec<Batch>, Vec<TransactionEnd>) {
    let mut batcher = Batcher::new(NonZeroUsize::new(max_events).unwrap());
    let (mut batches, mut ends) = (Vec::new(), Vec::new());
    for line in CAPTURE.lines() {
        let (lsn, data) = line.split_once('|').unwrap();
        let out = batcher
            .push_bytes(&hex(data), lsn.parse::<Lsn>().unwrap())
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        batches.extend(out.batch);
        ends.extend(out.end);
    }
    (batches, ends)
}

fn row(batch: &Batch, i: usize) -> (Operation, Option<&Vec<Value>>, Option<&Vec<Value>>) {
    match &batch.events[i] {
        Event::Row(r) => (r.op, r.old.as_ref(), r.new.as_ref()),
        e => panic!("{e:?}"),
    }
}

const DAY: i64 = 86_400_000_000;

#[test]
fn edge_values_of_every_mapped_type() {
    let (batches, _) = replay(2);
    // Three inserts with at most two events per batch: two batches.
    let (first, second) = (&batches[0], &batches[1]);
    assert!(first.first && !first.last && !second.first && second.last);
    assert_eq!(
        (first.xid, first.commit_lsn),
        (second.xid, second.commit_lsn)
    );
    let columns: Vec<_> = first.relations[0]
        .columns
        .iter()
        .map(|c| c.type_name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "int8",
            "bool",
            "int2",
            "int4",
            "float4",
            "float8",
            "numeric",
            "text",
            "varchar",
            "bpchar",
            "name",
            "bytea",
            "json",
            "jsonb",
            "uuid",
            "date",
            "time",
            "timestamp",
            "timestamptz",
            "interval",
            "_int4",
            "text",
            "oid"
        ]
    );

    let (op, old, new) = row(first, 0);
    assert_eq!((op, old), (Operation::Insert, None));
    let new = new.unwrap();
    assert!(matches!(new[4], Value::Float(f) if f.is_nan()));
    assert!(matches!(new[5], Value::Float(f) if f == 0.0 && f.is_sign_negative()));
    let numeric = format!("{}.{}", "9".repeat(1000), "1".repeat(50));
    let expected = [
        Value::Int(1),
        Value::Boolean(true),
        Value::Int(-32768),
        Value::Int(2_147_483_647),
    ];
    assert_eq!(new[..4], expected);
    let expected = [
        Value::Numeric(numeric),
        Value::Text("héllo".into()),
        Value::Text("vc".into()),
        Value::Text("ab ".into()),
        Value::Text("nm".into()),
        Value::Bytes(vec![0, 255]),
        Value::Json(r#"{"a": 1}"#.into()),
        Value::Json(r#"{"b": [1, 2]}"#.into()),
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        Value::Date(-2_440_550),
        Value::Time(DAY),
        Value::Other("294276-12-31 23:59:59.999999".into()),
        Value::Timestamptz(1_709_188_200_500_000),
        Value::Interval(Interval {
            months: 14,
            days: 3,
            microseconds: 14_706_789_000,
        }),
        Value::Other("{1,2,NULL}".into()),
    ];
    assert_eq!(new[6..21], expected);
    assert!(matches!(&new[21], Value::Text(t) if t.len() == 12_800));
    assert_eq!(new[22], Value::Int(4_294_967_295));

    let new = row(first, 1).2.unwrap();
    assert_eq!(new[4], Value::Float(f64::INFINITY));
    assert_eq!(new[5], Value::Float(1e308));
    assert_eq!(new[6], Value::Numeric("NaN".into()));
    assert_eq!(new[8], Value::Null);
    assert_eq!(new[11], Value::Bytes(vec![]));
    assert_eq!(
        new[15..20],
        [
            Value::Date(i32::MAX),
            Value::Time(1),
            Value::Timestamp(i64::MIN),
            Value::Timestamptz(0),
            Value::Interval(Interval {
                months: 0,
                days: -1,
                microseconds: 7_380_000_000
            }),
        ]
    );

    let new = row(second, 0).2.unwrap();
    assert_eq!(
        new[4..7],
        [
            Value::Float(f64::NEG_INFINITY),
            Value::Float(1.5e-7),
            Value::Numeric("-Infinity".into()),
        ]
    );
    assert_eq!(
        new[15..20],
        [
            Value::Date(19_782),
            Value::Time(86_399_123_000),
            Value::Timestamp(946_684_800_100_000),
            Value::Timestamptz(-63_517_780_800_000_000),
            Value::Interval(Interval {
                months: 0,
                days: 0,
                microseconds: 0
            }),
        ]
    );
}

#[test]
fn changes_schema_changes_and_positions() {
    let (batches, ends) = replay(2);
    assert_eq!(batches.len(), 8);
    // UPDATE … SET t: the TOASTed column was not resent.
    let (op, old, new) = row(&batches[2], 0);
    assert_eq!((op, old), (Operation::Update, None));
    assert_eq!(new.unwrap()[7], Value::Text("changed".into()));
    assert_eq!(new.unwrap()[21], Value::UnchangedToast);
    // UPDATE … SET id: the old key comes along.
    let (op, old, new) = row(&batches[3], 0);
    assert_eq!(op, Operation::Update);
    assert_eq!(old.unwrap()[0], Value::Int(2));
    assert!(old.unwrap()[1..].iter().all(|v| *v == Value::Null));
    assert_eq!(new.unwrap()[0], Value::Int(10));
    // ADD COLUMN extra: the next rows have 24 columns.
    assert_eq!(batches[4].relations[0].columns.len(), 24);
    assert_eq!(row(&batches[4], 0).2.unwrap()[23], Value::Int(44));
    let (op, old, _) = row(&batches[5], 0);
    assert_eq!((op, old.unwrap().len()), (Operation::Delete, 24));
    assert!(matches!(&batches[6].events[0], Event::Truncate(t) if t.relations == [0]));
    let message = &batches[7];
    assert_eq!((message.xid, message.first, message.last), (0, true, true));

    // Each transaction ends once, after its batches, in commit order; the
    // end LSN is past the commit LSN every batch carries.
    let xids: Vec<_> = ends.iter().map(|e| e.xid).collect();
    assert_eq!(xids, [746, 747, 748, 750, 751, 752, 0]);
    assert!(
        ends.windows(2)
            .all(|w| w[0].end_lsn < w[1].commit_lsn || w[1].xid == 0)
    );
    for end in &ends[..6] {
        assert!(end.commit_lsn < end.end_lsn);
        assert!(
            batches
                .iter()
                .filter(|b| b.xid == end.xid)
                .all(|b| b.commit_lsn == end.commit_lsn)
        );
    }
    assert_eq!(ends[0].end_lsn, "0/1582680".parse().unwrap());
}
