//! The generated bindings for the two worlds of `sluice:plugin` and the
//! conversions between them and the host's own [`model`](crate::model).
//!
//! Both worlds share the `types` and `host` interfaces; the `sink` bindings
//! reuse the `transform` bindings' copy of those (`with:`), so every WIT type
//! exists once in Rust. Nothing generated leaves this module except through
//! the re-exports below, which only the other `plugin` modules use.
//!
//! Invariant: conversions move every `String` and `Vec` (no copying of row
//! data): the model mirrors the WIT one to one, so a conversion is a
//! relabelling of the same allocations.

use crate::lsn::Lsn;
use crate::model;

mod transform_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transform",
    });
}

mod sink_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sink",
        with: {
            "sluice:plugin/types": super::transform_world::sluice::plugin::types,
            "sluice:plugin/host": super::transform_world::sluice::plugin::host,
        },
    });
}

pub(super) use sink_world::{Sink, SinkPre};
pub(super) use transform_world::sluice::plugin::host;
pub(super) use transform_world::sluice::plugin::types as wit;
pub(super) use transform_world::{Transform, TransformPre};

impl From<model::Batch> for wit::Batch {
    fn from(b: model::Batch) -> Self {
        wit::Batch {
            xid: b.xid,
            commit_lsn: b.commit_lsn.0,
            commit_time: b.commit_time,
            first: b.first,
            last: b.last,
            relations: b.relations.into_iter().map(Into::into).collect(),
            events: b.events.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<wit::Batch> for model::Batch {
    fn from(b: wit::Batch) -> Self {
        model::Batch {
            xid: b.xid,
            commit_lsn: Lsn(b.commit_lsn),
            commit_time: b.commit_time,
            first: b.first,
            last: b.last,
            relations: b.relations.into_iter().map(Into::into).collect(),
            events: b.events.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<model::Relation> for wit::Relation {
    fn from(r: model::Relation) -> Self {
        wit::Relation {
            oid: r.oid,
            schema: r.schema,
            name: r.name,
            replica_identity: match r.replica_identity {
                model::ReplicaIdentity::Default => wit::ReplicaIdentity::Default,
                model::ReplicaIdentity::Nothing => wit::ReplicaIdentity::Nothing,
                model::ReplicaIdentity::Full => wit::ReplicaIdentity::Full,
                model::ReplicaIdentity::Index => wit::ReplicaIdentity::Index,
            },
            columns: r.columns.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<wit::Relation> for model::Relation {
    fn from(r: wit::Relation) -> Self {
        model::Relation {
            oid: r.oid,
            schema: r.schema,
            name: r.name,
            replica_identity: match r.replica_identity {
                wit::ReplicaIdentity::Default => model::ReplicaIdentity::Default,
                wit::ReplicaIdentity::Nothing => model::ReplicaIdentity::Nothing,
                wit::ReplicaIdentity::Full => model::ReplicaIdentity::Full,
                wit::ReplicaIdentity::Index => model::ReplicaIdentity::Index,
            },
            columns: r.columns.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<model::Column> for wit::Column {
    fn from(c: model::Column) -> Self {
        wit::Column {
            name: c.name,
            type_oid: c.type_oid,
            type_name: c.type_name,
            type_modifier: c.type_modifier,
            is_key: c.is_key,
        }
    }
}

impl From<wit::Column> for model::Column {
    fn from(c: wit::Column) -> Self {
        model::Column {
            name: c.name,
            type_oid: c.type_oid,
            type_name: c.type_name,
            type_modifier: c.type_modifier,
            is_key: c.is_key,
        }
    }
}

impl From<model::Event> for wit::Event {
    fn from(e: model::Event) -> Self {
        match e {
            model::Event::Row(r) => wit::Event::Row(wit::RowChange {
                op: match r.op {
                    model::Operation::Insert => wit::Operation::Insert,
                    model::Operation::Update => wit::Operation::Update,
                    model::Operation::Delete => wit::Operation::Delete,
                    model::Operation::Read => wit::Operation::Read,
                },
                relation: r.relation,
                lsn: r.lsn.0,
                old: r.old.map(values_to_wit),
                new: r.new.map(values_to_wit),
            }),
            model::Event::Truncate(t) => wit::Event::Truncate(wit::Truncate {
                relations: t.relations,
                cascade: t.cascade,
                restart_identity: t.restart_identity,
                lsn: t.lsn.0,
            }),
            model::Event::Message(m) => wit::Event::Message(wit::LogicalMessage {
                transactional: m.transactional,
                prefix: m.prefix,
                content: m.content,
                lsn: m.lsn.0,
            }),
        }
    }
}

impl From<wit::Event> for model::Event {
    fn from(e: wit::Event) -> Self {
        match e {
            wit::Event::Row(r) => model::Event::Row(model::RowChange {
                op: match r.op {
                    wit::Operation::Insert => model::Operation::Insert,
                    wit::Operation::Update => model::Operation::Update,
                    wit::Operation::Delete => model::Operation::Delete,
                    wit::Operation::Read => model::Operation::Read,
                },
                relation: r.relation,
                lsn: Lsn(r.lsn),
                old: r.old.map(values_from_wit),
                new: r.new.map(values_from_wit),
            }),
            wit::Event::Truncate(t) => model::Event::Truncate(model::Truncate {
                relations: t.relations,
                cascade: t.cascade,
                restart_identity: t.restart_identity,
                lsn: Lsn(t.lsn),
            }),
            wit::Event::Message(m) => model::Event::Message(model::LogicalMessage {
                transactional: m.transactional,
                prefix: m.prefix,
                content: m.content,
                lsn: Lsn(m.lsn),
            }),
        }
    }
}

// Both `Value` enums have the same size and alignment, so these `collect`s
// reuse the source vector's allocation in place.
fn values_to_wit(values: Vec<model::Value>) -> Vec<wit::Value> {
    values.into_iter().map(Into::into).collect()
}

fn values_from_wit(values: Vec<wit::Value>) -> Vec<model::Value> {
    values.into_iter().map(Into::into).collect()
}

impl From<model::Value> for wit::Value {
    fn from(v: model::Value) -> Self {
        use model::Value as M;
        use wit::Value as W;
        match v {
            M::Null => W::Null,
            M::UnchangedToast => W::UnchangedToast,
            M::Boolean(b) => W::Boolean(b),
            M::Int(i) => W::Int(i),
            M::Float(f) => W::Float(f),
            M::Numeric(s) => W::Numeric(s),
            M::Text(s) => W::Text(s),
            M::Bytes(b) => W::Bytes(b),
            M::Json(s) => W::Json(s),
            M::Uuid(s) => W::Uuid(s),
            M::Date(d) => W::Date(d),
            M::Time(t) => W::Time(t),
            M::Timestamp(t) => W::Timestamp(t),
            M::Timestamptz(t) => W::Timestamptz(t),
            M::Interval(i) => W::Interval(wit::Interval {
                months: i.months,
                days: i.days,
                microseconds: i.microseconds,
            }),
            M::Other(s) => W::Other(s),
        }
    }
}

impl From<wit::Value> for model::Value {
    fn from(v: wit::Value) -> Self {
        use model::Value as M;
        use wit::Value as W;
        match v {
            W::Null => M::Null,
            W::UnchangedToast => M::UnchangedToast,
            W::Boolean(b) => M::Boolean(b),
            W::Int(i) => M::Int(i),
            W::Float(f) => M::Float(f),
            W::Numeric(s) => M::Numeric(s),
            W::Text(s) => M::Text(s),
            W::Bytes(b) => M::Bytes(b),
            W::Json(s) => M::Json(s),
            W::Uuid(s) => M::Uuid(s),
            W::Date(d) => M::Date(d),
            W::Time(t) => M::Time(t),
            W::Timestamp(t) => M::Timestamp(t),
            W::Timestamptz(t) => M::Timestamptz(t),
            W::Interval(i) => M::Interval(model::Interval {
                months: i.months,
                days: i.days,
                microseconds: i.microseconds,
            }),
            W::Other(s) => M::Other(s),
        }
    }
}

impl From<wit::Message> for model::Message {
    fn from(m: wit::Message) -> Self {
        model::Message {
            subject: m.subject,
            headers: m.headers,
            payload: m.payload,
            event: m.event,
        }
    }
}
