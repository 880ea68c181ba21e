//! proptest strategies for batches that cover every value variant and
//! every event kind, always well-formed (row widths match their relation),
//! with the edge cases over-represented: extreme integers, NaN with several
//! payloads, ±infinity, -0.0, empty and ~1 MB texts, bytes with zeros.

use proptest::prelude::*;
use sluice_host::lsn::Lsn;
use sluice_host::model::{
    Batch, Column, Event, Interval, LogicalMessage, Operation, Relation, ReplicaIdentity,
    RowChange, Truncate, Value,
};

pub(crate) fn value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        8 => ".{0,40}",
        1 => Just(String::new()),
        1 => (any::<char>(), 1usize..4).prop_map(|(c, n)| c.to_string().repeat((1 << 20) / c.len_utf8() * n / 3)),
    ];
    prop_oneof![
        Just(Value::Null),
        Just(Value::UnchangedToast),
        any::<bool>().prop_map(Value::Boolean),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0), any::<i64>()].prop_map(Value::Int),
        prop_oneof![
            Just(f64::NAN),
            Just(-f64::NAN),
            Just(f64::from_bits(0x7ff0_0000_dead_beef)),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(f64::MIN_POSITIVE),
            any::<f64>()
        ]
        .prop_map(Value::Float),
        "-?[0-9]{1,30}(\\.[0-9]{1,20})?|NaN|Infinity|-Infinity".prop_map(Value::Numeric),
        text.clone().prop_map(Value::Text),
        prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..64).prop_map(Value::Bytes),
        text.clone().prop_map(Value::Json),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}".prop_map(Value::Uuid),
        prop_oneof![Just(i32::MIN), Just(i32::MAX), any::<i32>()].prop_map(Value::Date),
        any::<i64>().prop_map(Value::Time),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()].prop_map(Value::Timestamp),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()].prop_map(Value::Timestamptz),
        (any::<i32>(), any::<i32>(), any::<i64>()).prop_map(|(months, days, microseconds)| {
            Value::Interval(Interval {
                months,
                days,
                microseconds,
            })
        }),
        text.prop_map(Value::Other),
    ]
}

pub(crate) fn relation_strategy() -> impl Strategy<Value = Relation> {
    let identity = prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ];
    let column = (
        "[a-zA-Z_äö]{1,12}",
        any::<u32>(),
        "[a-z0-9\\[\\]. ]{1,16}",
        any::<i32>(),
        any::<bool>(),
    )
        .prop_map(
            |(name, type_oid, type_name, type_modifier, is_key)| Column {
                name,
                type_oid,
                type_name,
                type_modifier,
                is_key,
            },
        );
    (
        any::<u32>(),
        ".{0,10}",
        ".{0,10}",
        identity,
        prop::collection::vec(column, 0..6),
    )
        .prop_map(|(oid, schema, name, replica_identity, columns)| Relation {
            oid,
            schema,
            name,
            replica_identity,
            columns,
        })
}

pub(crate) fn event_for(relations: Vec<Relation>) -> impl Strategy<Value = Event> {
    let count = relations.len() as u32;
    let widths: Vec<usize> = relations.iter().map(|r| r.columns.len()).collect();
    let row = (0..count, any::<u64>(), 0..4u8).prop_flat_map(move |(relation, lsn, op)| {
        let width = widths[relation as usize];
        let values = move || prop::collection::vec(value(), width..=width);
        (prop::option::of(values()), values()).prop_map(move |(old, new)| {
            let (op, old, new) = match op {
                0 => (Operation::Insert, None, Some(new)),
                1 => (Operation::Update, old, Some(new)),
                2 => (Operation::Delete, Some(new), None),
                _ => (Operation::Read, None, Some(new)),
            };
            Event::Row(RowChange {
                op,
                relation,
                lsn: Lsn(lsn),
                old,
                new,
            })
        })
    });
    let truncate = (
        prop::collection::vec(0..count, 0..3),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(relations, cascade, restart_identity, lsn)| {
            Event::Truncate(Truncate {
                relations,
                cascade,
                restart_identity,
                lsn: Lsn(lsn),
            })
        });
    let message = (
        any::<bool>(),
        ".{0,20}",
        prop::collection::vec(any::<u8>(), 0..100),
        any::<u64>(),
    )
        .prop_map(|(transactional, prefix, content, lsn)| {
            Event::Message(LogicalMessage {
                transactional,
                prefix,
                content,
                lsn: Lsn(lsn),
            })
        });
    prop_oneof![6 => row, 1 => truncate, 1 => message]
}

pub(crate) fn batch_strategy() -> impl Strategy<Value = Batch> {
    prop::collection::vec(relation_strategy(), 1..4).prop_flat_map(|relations| {
        let events = prop::collection::vec(event_for(relations.clone()), 0..12);
        (
            any::<u32>(),
            any::<u64>(),
            any::<i64>(),
            any::<bool>(),
            any::<bool>(),
            events,
        )
            .prop_map(
                move |(xid, commit_lsn, commit_time, first, last, events)| Batch {
                    xid,
                    commit_lsn: Lsn(commit_lsn),
                    commit_time,
                    first,
                    last,
                    relations: relations.clone(),
                    events,
                },
            )
    })
}
