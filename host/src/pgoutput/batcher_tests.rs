use std::num::NonZeroUsize;

use super::*;
use crate::model::ReplicaIdentity;
use crate::pgoutput::test_encode::{Col, Msg, begin, commit, insert, relation};

const T0: i64 = 1_700_000_000_000_000;
const ORDERS: u32 = 16_384;
const ITEMS: u32 = 16_390;

fn batcher(max: usize) -> Batcher {
    Batcher::new(NonZeroUsize::new(max).unwrap())
}

fn push(b: &mut Batcher, bytes: &[u8], lsn: u64) -> BatcherOutput {
    b.push_bytes(bytes, Lsn(lsn))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn orders() -> Vec<u8> {
    relation(
        ORDERS,
        "public",
        "orders",
        &[(true, "id", 23), (false, "note", 25)],
    )
}

fn row(id: &str) -> Vec<u8> {
    insert(ORDERS, &[Col::Text(id), Col::Text("x")])
}

fn ids(batch: &Batch) -> Vec<Value> {
    batch
        .events
        .iter()
        .map(|e| match e {
            Event::Row(r) => r.new.as_ref().unwrap()[0].clone(),
            e => panic!("{e:?}"),
        })
        .collect()
}

#[test]
fn full_batches_are_held_back_until_the_next_event() {
    let mut b = batcher(2);
    assert!(push(&mut b, &begin(0x500, T0, 77), 0x100).is_empty());
    assert!(push(&mut b, &orders(), 0x100).is_empty());
    assert!(push(&mut b, &row("1"), 0x110).is_empty());
    assert!(push(&mut b, &row("2"), 0x120).is_empty());
    assert_eq!(b.buffered_events(), 2);
    // The third row proves the first batch was not the last.
    let out = push(&mut b, &row("3"), 0x130);
    let first = out.batch.unwrap();
    assert!(out.end.is_none());
    assert_eq!(
        (first.xid, first.commit_lsn, first.commit_time),
        (77, Lsn(0x500), T0)
    );
    assert!(first.first && !first.last);
    assert_eq!(ids(&first), [Value::Int(1), Value::Int(2)]);
    assert_eq!(first.relations.len(), 1);
    assert_eq!(first.relations[0].name, "orders");
    match &first.events[1] {
        Event::Row(r) => assert_eq!(
            (r.op, r.relation, r.lsn),
            (Operation::Insert, 0, Lsn(0x120))
        ),
        e => panic!("{e:?}"),
    }

    let out = push(&mut b, &commit(0x500, 0x528, T0), 0x528);
    let last = out.batch.unwrap();
    assert!(!last.first && last.last);
    assert_eq!(ids(&last), [Value::Int(3)]);
    assert_eq!((last.commit_lsn, last.commit_time), (Lsn(0x500), T0));
    assert_eq!(
        out.end,
        Some(TransactionEnd {
            xid: 77,
            commit_lsn: Lsn(0x500),
            end_lsn: Lsn(0x528),
            commit_time: T0
        })
    );
    assert!(!b.in_transaction());
    assert_eq!(b.buffered_events(), 0);
}

#[test]
fn a_transaction_of_exactly_max_events_is_one_batch() {
    let mut b = batcher(2);
    push(&mut b, &begin(0x500, T0, 1), 0);
    push(&mut b, &orders(), 0);
    push(&mut b, &row("1"), 0);
    push(&mut b, &row("2"), 0);
    let out = push(&mut b, &commit(0x500, 0x528, T0), 0);
    let batch = out.batch.unwrap();
    assert!(batch.first && batch.last);
    assert_eq!(batch.events.len(), 2);
}

#[test]
fn empty_transactions_only_end() {
    let mut b = batcher(2);
    push(&mut b, &begin(0x500, T0, 1), 0);
    let out = push(&mut b, &commit(0x500, 0x528, T0), 0);
    assert!(out.batch.is_none());
    assert_eq!(out.end.unwrap().end_lsn, Lsn(0x528));
}

#[test]
fn non_transactional_messages_are_alone() {
    let mut b = batcher(2);
    let message = Msg::new(b'M')
        .u8(0)
        .u64(0x700)
        .str("heartbeat")
        .i32(2)
        .bytes(b"hi")
        .done();
    let out = push(&mut b, &message, 0x700);
    let batch = out.batch.unwrap();
    assert_eq!(
        (batch.xid, batch.commit_lsn, batch.first, batch.last),
        (0, Lsn(0x700), true, true)
    );
    assert_eq!(
        batch.events,
        vec![Event::Message(LogicalMessage {
            transactional: false,
            prefix: "heartbeat".into(),
            content: b"hi".to_vec(),
            lsn: Lsn(0x700),
        })]
    );
    assert_eq!(out.end.unwrap().end_lsn, Lsn(0x700));
}

#[test]
fn every_event_kind_indexes_its_relations() {
    let mut b = batcher(10);
    push(&mut b, &begin(0x900, T0, 5), 0);
    push(&mut b, &orders(), 0);
    push(
        &mut b,
        &relation(
            ITEMS,
            "shop",
            "items",
            &[(true, "sku", 25), (false, "body", 25)],
        ),
        0,
    );
    push(
        &mut b,
        &insert(ITEMS, &[Col::Text("a"), Col::Text("big")]),
        0x10,
    );
    // An update that left the TOASTed body alone and changed the key.
    let update = Msg::new(b'U')
        .u32(ITEMS)
        .u8(b'K')
        .tuple(&[Col::Text("a"), Col::Null])
        .u8(b'N')
        .tuple(&[Col::Text("b"), Col::Toast])
        .done();
    push(&mut b, &update, 0x20);
    let delete = Msg::new(b'D')
        .u32(ORDERS)
        .u8(b'O')
        .tuple(&[Col::Text("9"), Col::Text("gone")])
        .done();
    push(&mut b, &delete, 0x30);
    let truncate = Msg::new(b'T').i32(2).u8(3).u32(ORDERS).u32(ITEMS).done();
    push(&mut b, &truncate, 0x40);
    let message = Msg::new(b'M').u8(1).u64(0x50).str("audit").i32(0).done();
    push(&mut b, &message, 0x50);
    let batch = push(&mut b, &commit(0x900, 0x928, T0), 0).batch.unwrap();

    let names: Vec<_> = batch
        .relations
        .iter()
        .map(|r| (r.schema.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(names, [("shop", "items"), ("public", "orders")]);
    assert_eq!(
        batch.events[1],
        Event::Row(RowChange {
            op: Operation::Update,
            relation: 0,
            lsn: Lsn(0x20),
            old: Some(vec![Value::Text("a".into()), Value::Null]),
            new: Some(vec![Value::Text("b".into()), Value::UnchangedToast]),
        })
    );
    assert_eq!(
        batch.events[2],
        Event::Row(RowChange {
            op: Operation::Delete,
            relation: 1,
            lsn: Lsn(0x30),
            old: Some(vec![Value::Int(9), Value::Text("gone".into())]),
            new: None,
        })
    );
    assert_eq!(
        batch.events[3],
        Event::Truncate(Truncate {
            relations: vec![1, 0],
            cascade: true,
            restart_identity: true,
            lsn: Lsn(0x40)
        })
    );
    assert!(
        matches!(&batch.events[4], Event::Message(m) if m.transactional && m.prefix == "audit")
    );
    assert_eq!(
        batch.relations[1].replica_identity,
        ReplicaIdentity::Default
    );
}

#[test]
fn a_schema_change_cuts_the_batch() {
    let mut b = batcher(10);
    push(&mut b, &begin(0x900, T0, 5), 0);
    push(&mut b, &orders(), 0);
    push(&mut b, &row("1"), 0);
    // Re-sending the same shape changes nothing.
    assert!(push(&mut b, &orders(), 0).is_empty());
    // ALTER TABLE orders ADD COLUMN total numeric, inside the transaction.
    let altered = relation(
        ORDERS,
        "public",
        "orders",
        &[
            (true, "id", 23),
            (false, "note", 25),
            (false, "total", 1700),
        ],
    );
    let cut = push(&mut b, &altered, 0).batch.unwrap();
    assert!(cut.first && !cut.last);
    assert_eq!(cut.relations[0].columns.len(), 2);
    push(
        &mut b,
        &insert(ORDERS, &[Col::Text("2"), Col::Null, Col::Text("1.5")]),
        0,
    );
    let last = push(&mut b, &commit(0x900, 0x928, T0), 0).batch.unwrap();
    assert!(!last.first && last.last);
    assert_eq!(last.relations[0].columns.len(), 3);
    assert_eq!(
        last.events[0],
        Event::Row(RowChange {
            op: Operation::Insert,
            relation: 0,
            lsn: Lsn(0),
            old: None,
            new: Some(vec![
                Value::Int(2),
                Value::Null,
                Value::Numeric("1.5".into())
            ]),
        })
    );
}

#[test]
fn protocol_violations_are_named() {
    let err = |b: &mut Batcher, bytes: &[u8]| b.push_bytes(bytes, Lsn(0)).unwrap_err().to_string();
    let mut b = batcher(2);
    assert_eq!(
        err(&mut b, &row("1")),
        "pgoutput protocol violation: Insert message outside a transaction (no Begin before it)"
    );
    push(&mut b, &begin(0x500, T0, 1), 0);
    assert_eq!(
        err(&mut b, &begin(0x600, T0, 2)),
        "pgoutput protocol violation: Begin message for xid 2 while transaction 1 is still open"
    );
    assert_eq!(
        err(&mut b, &row("1")),
        "row for relation OID 16384, which no Relation message announced (the stream must be read from the start of a session)"
    );
    let heartbeat = Msg::new(b'M').u8(0).u64(0x700).str("hb").i32(0).done();
    assert_eq!(
        err(&mut b, &heartbeat),
        "pgoutput protocol violation: non-transactional logical message inside transaction 1"
    );
    assert_eq!(
        err(&mut b, &commit(0x501, 0x528, T0)),
        "pgoutput protocol violation: transaction 1 began with commit LSN 0/500 but its Commit message says 0/501"
    );
    let mut b = batcher(2);
    assert_eq!(
        err(&mut b, &Msg::new(b'S').u32(9).u8(1).done()),
        "pgoutput sent a Stream Start message, but streaming of in-progress transactions is not supported: start replication without the `streaming` option"
    );
    let mut b = batcher(2);
    assert_eq!(
        err(&mut b, &[b'I', 0, 0]),
        "truncated pgoutput message: reading relation OID at byte 1 needed 4 bytes, 2 left"
    );
}

/// A 5,000,000-row transaction goes through with never more than one batch
/// buffered, and every batch within bounds.
#[test]
fn huge_transactions_use_bounded_memory() {
    const ROWS: usize = 5_000_000;
    const MAX: usize = 256;
    let mut b = batcher(MAX);
    push(&mut b, &begin(0x9000, T0, 42), 0);
    let rel = relation(ORDERS, "public", "orders", &[(true, "id", 23)]);
    push(&mut b, &rel, 0);
    let row = insert(ORDERS, &[Col::Text("1")]);
    let (mut batches, mut events, mut max_buffered) = (0usize, 0usize, 0usize);
    let mut check = |batch: Batch, events: &mut usize| {
        assert!(batch.events.len() <= MAX && !batch.events.is_empty());
        assert_eq!(batch.first, batches == 0);
        assert_eq!((batch.xid, batch.commit_lsn), (42, Lsn(0x9000)));
        *events += batch.events.len();
        batches += 1;
        batch.last
    };
    for i in 0..ROWS {
        let message = crate::pgoutput::decode(&row, false).unwrap();
        let out = b.push(message, Lsn(i as u64)).unwrap();
        assert!(out.end.is_none());
        if let Some(batch) = out.batch {
            assert!(!check(batch, &mut events));
        }
        max_buffered = max_buffered.max(b.buffered_events());
    }
    let out = push(&mut b, &commit(0x9000, 0x9028, T0), 0);
    assert!(check(out.batch.unwrap(), &mut events));
    assert_eq!(out.end.unwrap().end_lsn, Lsn(0x9028));
    assert_eq!(events, ROWS);
    assert_eq!(max_buffered, MAX);
    assert_eq!(batches, ROWS.div_ceil(MAX));
}

/// The new row of the only update in a transaction of `update`.
fn updated_row(b: &mut Batcher, update: &[u8]) -> Vec<Value> {
    push(b, &begin(0x900, T0, 5), 0);
    push(
        b,
        &relation(
            ITEMS,
            "shop",
            "items",
            &[(true, "sku", 25), (true, "body", 25), (true, "tag", 25)],
        ),
        0,
    );
    push(b, update, 0x20);
    let batch = push(b, &commit(0x900, 0x928, T0), 0).batch.unwrap();
    match &batch.events[0] {
        Event::Row(r) => r.new.clone().unwrap(),
        e => panic!("{e:?}"),
    }
}

#[test]
fn unchanged_toast_is_filled_from_a_full_old_row_only() {
    // REPLICA IDENTITY FULL: the old row carries `body` in full; `tag` is a
    // marker in both rows, so it stays one.
    let full = Msg::new(b'U')
        .u32(ITEMS)
        .u8(b'O')
        .tuple(&[Col::Text("a"), Col::Text("big"), Col::Toast])
        .u8(b'N')
        .tuple(&[Col::Text("b"), Col::Toast, Col::Toast])
        .done();
    let filled = [
        Value::Text("b".into()),
        Value::Text("big".into()),
        Value::UnchangedToast,
    ];
    assert_eq!(updated_row(&mut batcher(10), &full), filled);
    // Switched off, the markers stay.
    let off = updated_row(&mut batcher(10).fill_unchanged_toast(false), &full);
    assert_eq!(off[1], Value::UnchangedToast);
    // A key-only old row (REPLICA IDENTITY DEFAULT or INDEX, key changed)
    // is not the row's old values: never used to fill.
    let key = Msg::new(b'U')
        .u32(ITEMS)
        .u8(b'K')
        .tuple(&[Col::Text("a"), Col::Text("k"), Col::Null])
        .u8(b'N')
        .tuple(&[Col::Text("b"), Col::Toast, Col::Toast])
        .done();
    assert_eq!(
        updated_row(&mut batcher(10), &key)[1],
        Value::UnchangedToast
    );
    // No old row at all.
    let none = Msg::new(b'U')
        .u32(ITEMS)
        .u8(b'N')
        .tuple(&[Col::Text("b"), Col::Toast, Col::Null])
        .done();
    assert_eq!(
        updated_row(&mut batcher(10), &none)[1],
        Value::UnchangedToast
    );
}
