//! The pgoutput message types and their byte decoder.
//!
//! One XLogData payload holds exactly one pgoutput message. [`decode`] turns
//! it into a [`PgOutputMessage`] that borrows from the payload: names and
//! prefixes are `&str` slices and row tuples are validated but not yet
//! converted ([`TupleData`]), so decoding a row allocates nothing; turning a
//! tuple into values is the relation cache's job, since only it knows the
//! column types.
//!
//! Covered: protocol versions 1 and 2 (Begin, Commit, Origin, Relation,
//! Type, Insert, Update, Delete, Truncate, Message, and the streaming
//! messages Stream Start/Stop/Commit/Abort) and the version 3/4 two-phase
//! messages (Begin Prepare, Prepare, Commit Prepared, Rollback Prepared,
//! Stream Prepare) and version 4's parallel Stream Abort tail.
//!
//! Invariants: reads are bounds-checked and never panic; every error names
//! the field being read and its byte offset; no allocation is sized by a
//! count from the wire beyond what the remaining bytes could hold; a
//! message with bytes left over after its last field is an error. Inside a
//! streamed transaction (between Stream Start and Stream Stop) the protocol
//! prefixes Relation, Type, Insert, Update, Delete, Truncate and Message
//! with the transaction's xid; whether it is there cannot be seen from the
//! bytes, so the caller says so ([`Decoder`] keeps track of it).

use crate::lsn::Lsn;
use crate::model::ReplicaIdentity;

use super::reader::Reader;
pub use super::tuple::{ColumnData, TupleData, TupleIter};

/// Microseconds from the Unix epoch (1970-01-01) to PostgreSQL's (2000-01-01).
pub(crate) const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Why a pgoutput message could not be decoded. Every case is definite:
/// the same bytes will fail the same way, so retrying cannot help.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty pgoutput message")]
    Empty,
    #[error("unknown pgoutput message type {tag:?} (byte 0x{byte:02x})", tag = char::from(*byte))]
    UnknownMessageType { byte: u8 },
    #[error(
        "truncated pgoutput message: reading {what} at byte {offset} needed {needed} bytes, {remaining} left"
    )]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        remaining: usize,
    },
    #[error("malformed pgoutput message: {what} at byte {offset} is negative ({value})")]
    NegativeCount {
        what: &'static str,
        offset: usize,
        value: i64,
    },
    #[error("malformed pgoutput message: {what} at byte {offset} has no terminating NUL byte")]
    UnterminatedString { what: &'static str, offset: usize },
    #[error("malformed pgoutput message: {what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        what: &'static str,
        offset: usize,
        #[source]
        source: std::str::Utf8Error,
    },
    #[error("malformed pgoutput message: unexpected {what} {found:?} at byte {offset}, expected {expected}", found = char::from(*found))]
    UnexpectedByte {
        what: &'static str,
        offset: usize,
        found: u8,
        expected: &'static str,
    },
    #[error("malformed pgoutput message: {what} at byte {offset} is out of range ({value})")]
    OutOfRange {
        what: &'static str,
        offset: usize,
        value: i64,
    },
    #[error(
        "malformed pgoutput {message} message: {count} unexpected bytes after its last field at byte {offset}"
    )]
    TrailingBytes {
        message: &'static str,
        offset: usize,
        count: usize,
    },
}

/// One decoded pgoutput message, borrowing from the payload it came from.
#[derive(Clone, Debug, PartialEq)]
pub enum PgOutputMessage<'a> {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin<'a>),
    Relation(RelationBody<'a>),
    Type(TypeBody<'a>),
    Insert(Insert<'a>),
    Update(Update<'a>),
    Delete(Delete<'a>),
    Truncate(TruncateBody),
    Message(LogicalMessageBody<'a>),
    StreamStart(StreamStart),
    StreamStop,
    StreamCommit(StreamCommit),
    StreamAbort(StreamAbort),
    BeginPrepare(PrepareBody<'a>),
    Prepare(PrepareBody<'a>),
    CommitPrepared(PrepareBody<'a>),
    RollbackPrepared(RollbackPrepared<'a>),
    StreamPrepare(PrepareBody<'a>),
}

impl PgOutputMessage<'_> {
    /// The protocol's name for the message, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            PgOutputMessage::Begin(_) => "Begin",
            PgOutputMessage::Commit(_) => "Commit",
            PgOutputMessage::Origin(_) => "Origin",
            PgOutputMessage::Relation(_) => "Relation",
            PgOutputMessage::Type(_) => "Type",
            PgOutputMessage::Insert(_) => "Insert",
            PgOutputMessage::Update(_) => "Update",
            PgOutputMessage::Delete(_) => "Delete",
            PgOutputMessage::Truncate(_) => "Truncate",
            PgOutputMessage::Message(_) => "Message",
            PgOutputMessage::StreamStart(_) => "Stream Start",
            PgOutputMessage::StreamStop => "Stream Stop",
            PgOutputMessage::StreamCommit(_) => "Stream Commit",
            PgOutputMessage::StreamAbort(_) => "Stream Abort",
            PgOutputMessage::BeginPrepare(_) => "Begin Prepare",
            PgOutputMessage::Prepare(_) => "Prepare",
            PgOutputMessage::CommitPrepared(_) => "Commit Prepared",
            PgOutputMessage::RollbackPrepared(_) => "Rollback Prepared",
            PgOutputMessage::StreamPrepare(_) => "Stream Prepare",
        }
    }
}

/// Begin: the start of a (non-streamed) transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Begin {
    /// The LSN where the transaction's commit record starts. The same value
    /// arrives again as [`Commit::commit_lsn`].
    pub final_lsn: Lsn,
    /// Commit time, microseconds since 1970-01-01 UTC.
    pub commit_time: i64,
    pub xid: u32,
}

/// Commit: the end of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    /// Where the commit record starts (equal to [`Begin::final_lsn`]).
    pub commit_lsn: Lsn,
    /// Where the commit record ends: the position to confirm to the server.
    pub end_lsn: Lsn,
    /// Commit time, microseconds since 1970-01-01 UTC.
    pub commit_time: i64,
}

/// Origin: the transaction was replicated from another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    pub commit_lsn: Lsn,
    pub name: &'a str,
}

/// One column of a Relation message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelationColumn<'a> {
    /// Bit 0 set: the column is part of the replica identity key.
    pub flags: u8,
    pub name: &'a str,
    pub type_oid: u32,
    pub type_modifier: i32,
}

impl RelationColumn<'_> {
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Relation: a table's current shape, sent before its first change and
/// again whenever the server's cached copy was invalidated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationBody<'a> {
    /// Present only inside a streamed transaction.
    pub xid: Option<u32>,
    pub oid: u32,
    /// Empty for `pg_catalog`.
    pub namespace: &'a str,
    pub name: &'a str,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<RelationColumn<'a>>,
}

/// Type: the name of a non-built-in type used by a following Relation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeBody<'a> {
    pub xid: Option<u32>,
    pub oid: u32,
    /// Empty for `pg_catalog`.
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Insert: a new row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insert<'a> {
    pub xid: Option<u32>,
    pub relation: u32,
    pub new: TupleData<'a>,
}

/// Which old values an Update or Delete carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// 'K': the replica identity key columns (others are null).
    Key(TupleData<'a>),
    /// 'O': the whole old row (`REPLICA IDENTITY FULL`).
    Full(TupleData<'a>),
}

impl<'a> OldTuple<'a> {
    pub fn tuple(&self) -> &TupleData<'a> {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// Update: a changed row. `old` is absent when the key did not change and
/// the replica identity is not FULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update<'a> {
    pub xid: Option<u32>,
    pub relation: u32,
    pub old: Option<OldTuple<'a>>,
    pub new: TupleData<'a>,
}

/// Delete: a removed row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delete<'a> {
    pub xid: Option<u32>,
    pub relation: u32,
    pub old: OldTuple<'a>,
}

/// Truncate of one or more tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncateBody {
    pub xid: Option<u32>,
    pub cascade: bool,
    pub restart_identity: bool,
    pub relations: Vec<u32>,
}

/// A `pg_logical_emit_message` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogicalMessageBody<'a> {
    pub xid: Option<u32>,
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: &'a str,
    pub content: &'a [u8],
}

/// Stream Start: a block of a large in-progress transaction follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamStart {
    pub xid: u32,
    pub first_segment: bool,
}

/// Stream Commit: a streamed transaction committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamCommit {
    pub xid: u32,
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: i64,
}

/// Stream Abort: a streamed (sub)transaction rolled back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamAbort {
    pub xid: u32,
    pub subxid: u32,
    /// Protocol version 4 with `streaming = parallel` only.
    pub abort_lsn: Option<Lsn>,
    /// Protocol version 4 with `streaming = parallel` only (µs since 1970).
    pub abort_time: Option<i64>,
}

/// The common shape of Begin Prepare, Prepare, Commit Prepared and Stream
/// Prepare: two LSNs, a time, the xid and the global transaction id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareBody<'a> {
    /// Flags (always 0 today); Begin Prepare has none and reports 0.
    pub flags: u8,
    /// The prepare LSN (Commit Prepared: the commit LSN).
    pub lsn: Lsn,
    /// The end LSN of the prepared transaction (Commit Prepared: of the
    /// commit record).
    pub end_lsn: Lsn,
    /// Prepare time (Commit Prepared: commit time), µs since 1970.
    pub time: i64,
    pub xid: u32,
    pub gid: &'a str,
}

/// Rollback Prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RollbackPrepared<'a> {
    pub flags: u8,
    pub prepare_end_lsn: Lsn,
    pub rollback_end_lsn: Lsn,
    pub prepare_time: i64,
    pub rollback_time: i64,
    pub xid: u32,
    pub gid: &'a str,
}

/// Decodes pgoutput messages and remembers whether they are inside a
/// streamed transaction block, which changes the layout of some messages.
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    in_stream: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the last message opened a streamed block not yet closed.
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// Decodes one message and tracks Stream Start / Stream Stop.
    pub fn decode<'a>(&mut self, data: &'a [u8]) -> Result<PgOutputMessage<'a>, DecodeError> {
        let message = decode(data, self.in_stream)?;
        match message {
            PgOutputMessage::StreamStart(_) => self.in_stream = true,
            PgOutputMessage::StreamStop => self.in_stream = false,
            _ => {}
        }
        Ok(message)
    }
}

/// Decodes one pgoutput message. `in_stream` says whether it arrived
/// between Stream Start and Stream Stop, where data messages carry an xid.
pub fn decode(data: &[u8], in_stream: bool) -> Result<PgOutputMessage<'_>, DecodeError> {
    let mut r = Reader::new(data);
    let tag = r.u8("message type").map_err(|_| DecodeError::Empty)?;
    let stream_xid = |r: &mut Reader<'_>| -> Result<Option<u32>, DecodeError> {
        if in_stream {
            r.u32("transaction id").map(Some)
        } else {
            Ok(None)
        }
    };
    let message = match tag {
        b'B' => {
            let final_lsn = lsn(&mut r, "final LSN")?;
            let commit_time = timestamp(&mut r, "commit timestamp")?;
            let xid = r.u32("transaction id")?;
            r.finish("Begin")?;
            PgOutputMessage::Begin(Begin {
                final_lsn,
                commit_time,
                xid,
            })
        }
        b'C' => {
            let flags = r.u8("commit flags")?;
            let commit_lsn = lsn(&mut r, "commit LSN")?;
            let end_lsn = lsn(&mut r, "transaction end LSN")?;
            let commit_time = timestamp(&mut r, "commit timestamp")?;
            r.finish("Commit")?;
            PgOutputMessage::Commit(Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
            })
        }
        b'O' => {
            let commit_lsn = lsn(&mut r, "origin commit LSN")?;
            let name = r.string("origin name")?;
            r.finish("Origin")?;
            PgOutputMessage::Origin(Origin { commit_lsn, name })
        }
        b'R' => {
            let xid = stream_xid(&mut r)?;
            let body = relation(&mut r, xid)?;
            r.finish("Relation")?;
            PgOutputMessage::Relation(body)
        }
        b'Y' => {
            let xid = stream_xid(&mut r)?;
            let oid = r.u32("type OID")?;
            let namespace = r.string("type namespace")?;
            let name = r.string("type name")?;
            r.finish("Type")?;
            PgOutputMessage::Type(TypeBody {
                xid,
                oid,
                namespace,
                name,
            })
        }
        b'I' => {
            let xid = stream_xid(&mut r)?;
            let relation = r.u32("relation OID")?;
            expect(&mut r, "new tuple marker", b'N', "'N'")?;
            let new = TupleData::read(&mut r)?;
            r.finish("Insert")?;
            PgOutputMessage::Insert(Insert { xid, relation, new })
        }
        b'U' => {
            let xid = stream_xid(&mut r)?;
            let relation = r.u32("relation OID")?;
            let offset = r.offset();
            let (old, new) = match r.u8("tuple marker")? {
                b'N' => (None, TupleData::read(&mut r)?),
                b'K' => {
                    let old = OldTuple::Key(TupleData::read(&mut r)?);
                    expect(&mut r, "new tuple marker", b'N', "'N'")?;
                    (Some(old), TupleData::read(&mut r)?)
                }
                b'O' => {
                    let old = OldTuple::Full(TupleData::read(&mut r)?);
                    expect(&mut r, "new tuple marker", b'N', "'N'")?;
                    (Some(old), TupleData::read(&mut r)?)
                }
                found => {
                    return Err(DecodeError::UnexpectedByte {
                        what: "tuple marker",
                        offset,
                        found,
                        expected: "'K', 'O' or 'N'",
                    });
                }
            };
            r.finish("Update")?;
            PgOutputMessage::Update(Update {
                xid,
                relation,
                old,
                new,
            })
        }
        b'D' => {
            let xid = stream_xid(&mut r)?;
            let relation = r.u32("relation OID")?;
            let offset = r.offset();
            let old = match r.u8("old tuple marker")? {
                b'K' => OldTuple::Key(TupleData::read(&mut r)?),
                b'O' => OldTuple::Full(TupleData::read(&mut r)?),
                found => {
                    return Err(DecodeError::UnexpectedByte {
                        what: "old tuple marker",
                        offset,
                        found,
                        expected: "'K' or 'O'",
                    });
                }
            };
            r.finish("Delete")?;
            PgOutputMessage::Delete(Delete { xid, relation, old })
        }
        b'T' => {
            let xid = stream_xid(&mut r)?;
            let count = r.count32("truncated relation count")?;
            let options = r.u8("truncate options")?;
            // Each OID takes four bytes: a bogus count cannot make us reserve
            // more than the message could hold.
            let mut relations = Vec::with_capacity(count.min(r.remaining() / 4));
            for _ in 0..count {
                relations.push(r.u32("truncated relation OID")?);
            }
            r.finish("Truncate")?;
            PgOutputMessage::Truncate(TruncateBody {
                xid,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
                relations,
            })
        }
        b'M' => {
            let xid = stream_xid(&mut r)?;
            let flags = r.u8("message flags")?;
            let lsn = lsn(&mut r, "message LSN")?;
            let prefix = r.string("message prefix")?;
            let len = r.count32("message content length")?;
            let content = r.bytes(len, "message content")?;
            r.finish("Message")?;
            PgOutputMessage::Message(LogicalMessageBody {
                xid,
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content,
            })
        }
        b'S' => {
            let xid = r.u32("transaction id")?;
            let first_segment = r.u8("first segment flag")? == 1;
            r.finish("Stream Start")?;
            PgOutputMessage::StreamStart(StreamStart { xid, first_segment })
        }
        b'E' => {
            r.finish("Stream Stop")?;
            PgOutputMessage::StreamStop
        }
        b'c' => {
            let xid = r.u32("transaction id")?;
            let flags = r.u8("commit flags")?;
            let commit_lsn = lsn(&mut r, "commit LSN")?;
            let end_lsn = lsn(&mut r, "transaction end LSN")?;
            let commit_time = timestamp(&mut r, "commit timestamp")?;
            r.finish("Stream Commit")?;
            PgOutputMessage::StreamCommit(StreamCommit {
                xid,
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
            })
        }
        b'A' => {
            let xid = r.u32("transaction id")?;
            let subxid = r.u32("subtransaction id")?;
            // The abort LSN and time exist only with protocol version 4 and
            // `streaming = parallel`; the message length says which it is.
            let (abort_lsn, abort_time) = if r.remaining() == 0 {
                (None, None)
            } else {
                (
                    Some(lsn(&mut r, "abort LSN")?),
                    Some(timestamp(&mut r, "abort timestamp")?),
                )
            };
            r.finish("Stream Abort")?;
            PgOutputMessage::StreamAbort(StreamAbort {
                xid,
                subxid,
                abort_lsn,
                abort_time,
            })
        }
        b'b' => {
            let lsn_ = lsn(&mut r, "prepare LSN")?;
            let end_lsn = lsn(&mut r, "prepare end LSN")?;
            let time = timestamp(&mut r, "prepare timestamp")?;
            let xid = r.u32("transaction id")?;
            let gid = r.string("global transaction id")?;
            r.finish("Begin Prepare")?;
            PgOutputMessage::BeginPrepare(PrepareBody {
                flags: 0,
                lsn: lsn_,
                end_lsn,
                time,
                xid,
                gid,
            })
        }
        b'P' => PgOutputMessage::Prepare(prepare(&mut r, "Prepare", "prepare")?),
        b'K' => PgOutputMessage::CommitPrepared(prepare(&mut r, "Commit Prepared", "commit")?),
        b'p' => PgOutputMessage::StreamPrepare(prepare(&mut r, "Stream Prepare", "prepare")?),
        b'r' => {
            let flags = r.u8("rollback prepared flags")?;
            let prepare_end_lsn = lsn(&mut r, "prepare end LSN")?;
            let rollback_end_lsn = lsn(&mut r, "rollback end LSN")?;
            let prepare_time = timestamp(&mut r, "prepare timestamp")?;
            let rollback_time = timestamp(&mut r, "rollback timestamp")?;
            let xid = r.u32("transaction id")?;
            let gid = r.string("global transaction id")?;
            r.finish("Rollback Prepared")?;
            PgOutputMessage::RollbackPrepared(RollbackPrepared {
                flags,
                prepare_end_lsn,
                rollback_end_lsn,
                prepare_time,
                rollback_time,
                xid,
                gid,
            })
        }
        byte => return Err(DecodeError::UnknownMessageType { byte }),
    };
    Ok(message)
}

/// Prepare, Commit Prepared and Stream Prepare share one layout.
fn prepare<'a>(
    r: &mut Reader<'a>,
    message: &'static str,
    kind: &'static str,
) -> Result<PrepareBody<'a>, DecodeError> {
    let flags = r.u8("flags")?;
    let (lsn_what, end_what, time_what) = if kind == "commit" {
        ("commit LSN", "commit end LSN", "commit timestamp")
    } else {
        ("prepare LSN", "prepare end LSN", "prepare timestamp")
    };
    let lsn_ = lsn(r, lsn_what)?;
    let end_lsn = lsn(r, end_what)?;
    let time = timestamp(r, time_what)?;
    let xid = r.u32("transaction id")?;
    let gid = r.string("global transaction id")?;
    r.finish(message)?;
    Ok(PrepareBody {
        flags,
        lsn: lsn_,
        end_lsn,
        time,
        xid,
        gid,
    })
}

fn relation<'a>(r: &mut Reader<'a>, xid: Option<u32>) -> Result<RelationBody<'a>, DecodeError> {
    let oid = r.u32("relation OID")?;
    let namespace = r.string("relation namespace")?;
    let name = r.string("relation name")?;
    let offset = r.offset();
    let replica_identity = match r.u8("replica identity")? {
        b'd' => ReplicaIdentity::Default,
        b'n' => ReplicaIdentity::Nothing,
        b'f' => ReplicaIdentity::Full,
        b'i' => ReplicaIdentity::Index,
        found => {
            return Err(DecodeError::UnexpectedByte {
                what: "replica identity",
                offset,
                found,
                expected: "'d', 'n', 'f' or 'i'",
            });
        }
    };
    let count = r.count16("relation column count")?;
    // A column takes at least 10 bytes (flags, empty name, OID, modifier).
    let mut columns = Vec::with_capacity(count.min(r.remaining() / 10));
    for _ in 0..count {
        let flags = r.u8("column flags")?;
        let name = r.string("column name")?;
        let type_oid = r.u32("column type OID")?;
        let type_modifier = r.i32("column type modifier")?;
        columns.push(RelationColumn {
            flags,
            name,
            type_oid,
            type_modifier,
        });
    }
    Ok(RelationBody {
        xid,
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn expect(
    r: &mut Reader<'_>,
    what: &'static str,
    want: u8,
    expected: &'static str,
) -> Result<(), DecodeError> {
    let offset = r.offset();
    match r.u8(what)? {
        found if found == want => Ok(()),
        found => Err(DecodeError::UnexpectedByte {
            what,
            offset,
            found,
            expected,
        }),
    }
}

fn lsn(r: &mut Reader<'_>, what: &'static str) -> Result<Lsn, DecodeError> {
    r.u64(what).map(Lsn)
}

/// A TimestampTz (µs since 2000-01-01) moved to the Unix epoch.
fn timestamp(r: &mut Reader<'_>, what: &'static str) -> Result<i64, DecodeError> {
    let offset = r.offset();
    let pg = r.i64(what)?;
    pg.checked_add(PG_EPOCH_OFFSET_MICROS)
        .ok_or(DecodeError::OutOfRange {
            what,
            offset,
            value: pg,
        })
}
