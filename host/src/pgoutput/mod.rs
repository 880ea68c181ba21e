//! pgoutput: decoding PostgreSQL's logical replication output plugin.
//!
//! The replication client hands each XLogData payload to a [`Decoder`],
//! which yields a borrowed [`PgOutputMessage`]; the [`Batcher`] keeps the
//! [`RelationCache`], converts rows into model values and groups one
//! transaction's events into [`Batch`](crate::model::Batch)es of bounded
//! size.
//!
//! Value conversion relies on how the walsender prints values, which the
//! replication connection's startup parameters decide:
//! [`SESSION_SETTINGS`] lists them, and the replication client passes them
//! as-is. pgoutput columns must be text (no `binary 'true'` option), and
//! `streaming` and `two_phase` must stay off (the batcher refuses those
//! messages with a typed error).

/// Startup parameters the replication connection must carry for values to
/// decode losslessly: ISO dates, the `postgres` interval style the parser
/// reads, UTF-8 text whatever the database encoding, and shortest-exact
/// float output (PostgreSQL 12+; any value of at least 1 is exact, below
/// that floats are rounded). `TimeZone` is not needed for correctness (any
/// offset is parsed) but keeps the server's text in UTC.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("client_encoding", "UTF8"),
    ("extra_float_digits", "3"),
    ("TimeZone", "UTC"),
];

mod batcher;
mod datetime;
mod message;
mod reader;
mod relation_cache;
mod tuple;
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
pub(crate) use value::{check_value, synthetic_value};

#[cfg(test)]
mod decode_tests;
#[cfg(test)]
mod real_stream_tests;
#[cfg(test)]
mod test_encode;
