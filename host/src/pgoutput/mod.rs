//! pgoutput: decoding PostgreSQL's logical replication output plugin.
//!
//! The replication client hands each XLogData payload to a [`Decoder`],
//! which yields a borrowed [`PgOutputMessage`]; the [`Batcher`] keeps the
//! [`RelationCache`], converts rows into model values and groups one
//! transaction's events into [`Batch`](crate::model::Batch)es of bounded
//! size. Session settings the value conversion relies on (the host sets
//! them on the replication connection): `DateStyle = ISO`,
//! `IntervalStyle = postgres` (the default), `client_encoding = UTF8`,
//! `bytea_output` either way, and text (not binary) pgoutput columns.

mod batcher;
mod datetime;
mod message;
mod reader;
mod relation_cache;
mod value;

pub use batcher::{BatchError, Batcher, BatcherOutput, DEFAULT_MAX_EVENTS, TransactionEnd};
pub use message::{
    Begin, ColumnData, Commit, DecodeError, Decoder, Delete, Insert, LogicalMessageBody, OldTuple,
    Origin, PgOutputMessage, PrepareBody, RelationBody, RelationColumn, RollbackPrepared,
    StreamAbort, StreamCommit, StreamStart, TruncateBody, TupleData, TupleIter, TypeBody, Update,
    decode,
};
pub use relation_cache::{CachedRelation, RelationCache, RelationError};
pub use value::ValueError;

#[cfg(test)]
mod decode_tests;
#[cfg(test)]
mod real_stream_tests;
#[cfg(test)]
mod test_encode;
