//! The batcher: turns the decoded message stream of one replication session
//! into [`Batch`]es of at most `max_events` events of one transaction.
//!
//! Positions. pgoutput's Begin already carries the transaction's commit
//! LSN — `final_lsn`, where the commit record *starts* — and its commit
//! time, so every batch, including those emitted long before a huge
//! transaction commits, carries the same `commit_lsn` and `commit_time`.
//! The commit record's *end* LSN, the position DESIGN §3 stores as the
//! offset and confirms to the server, arrives only with the Commit message;
//! the batcher hands it over as a [`TransactionEnd`] next to the
//! transaction's last batch. So `Batch::commit_lsn` is the commit record's
//! start: unique per transaction, ordered across transactions, and the same
//! on a replay (what message de-duplication ids need), while the position
//! tracker maps it to the end LSN it confirms. Replay skipping works on
//! either: a transaction's commit record starts at or after the previous
//! one's end, so "end LSN ≤ stored offset" is exactly "commit LSN < stored
//! offset" for every offset the host stores, which is decidable at Begin, before any batch is built.
//!
//! The `last` flag. A batch can only be marked last once the transaction is
//! known to have ended, so the batcher holds back the batch it is filling:
//! a full batch is emitted (with `last` unset) when the next event arrives,
//! and the final one (with `last` set) when Commit arrives. At most one
//! batch, `max_events` events, is buffered whatever the transaction's size.
//! A batch is also cut early, with `last` unset, when a Relation message
//! changes a table the batch already references, so that each batch lists
//! each relation once, in one shape. Should a transaction end right after
//! such a cut, its last batch is empty; a transaction with no events at all
//! produces no batch, only its [`TransactionEnd`].
//!
//! Non-transactional logical messages come as their own batch: xid 0,
//! `first` and `last` set, `commit_lsn` the message's LSN, `commit_time` 0
//! (pgoutput sends no time for them), with a [`TransactionEnd`] whose
//! `end_lsn` is that same LSN — confirming it is safe, as the server
//! re-sends a message whose LSN is at or after the confirmed position. One
//! arriving inside a transaction is a protocol violation (an error).
//!
//! Unchanged TOAST. An update's new row carries an unchanged-toast marker
//! for a large value PostgreSQL stored out of line and did not rewrite.
//! Under REPLICA IDENTITY FULL the old row carries that same value in full
//! (PostgreSQL inlines it when it logs the old row), so with
//! [`Batcher::fill_unchanged_toast`] on (the default) the marker is replaced
//! by the old row's value: sinks see complete rows. Where the old row has no
//! such value (no old row, a key-only one, or a marker there too) the marker
//! stays.
//!
//! Not supported (a typed error, never a silent skip): streamed in-progress
//! transactions and two-phase commit, which the host does not request
//! (`streaming` and `two_phase` stay off).

use std::num::NonZeroUsize;

use crate::lsn::Lsn;
use crate::model::{Batch, Event, LogicalMessage, Operation, Relation, RowChange, Truncate, Value};

use super::message::{DecodeError, Decoder, OldTuple, PgOutputMessage, TupleData};
use super::relation_cache::{RelationCache, RelationError};

/// The default `batch.max-events`.
pub const DEFAULT_MAX_EVENTS: usize = 256;

/// Why the batcher could not take a message. All are definite: the stream
/// is not what pgoutput sends for the options the host requests.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Relation(#[from] RelationError),
    #[error(
        "pgoutput sent a {message} message, but {feature} is not supported: start replication without the `{option}` option"
    )]
    Unsupported {
        message: &'static str,
        feature: &'static str,
        option: &'static str,
    },
    #[error("pgoutput protocol violation: {message} message {context}")]
    Unexpected {
        message: &'static str,
        context: String,
    },
    #[error(
        "pgoutput protocol violation: transaction {xid} began with commit LSN {begin} but its Commit message says {commit}"
    )]
    CommitMismatch { xid: u32, begin: Lsn, commit: Lsn },
}

/// The end of a transaction, for the position tracker: once every batch of
/// the transaction (and of all earlier ones) is acknowledged, `end_lsn` may
/// be stored and confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionEnd {
    pub xid: u32,
    /// The commit record's start, as in every batch of the transaction.
    pub commit_lsn: Lsn,
    /// The commit record's end: the offset of DESIGN §3.
    pub end_lsn: Lsn,
    /// Microseconds since 1970-01-01 UTC.
    pub commit_time: i64,
}

/// What one pushed message produced: at most one batch and, when a
/// transaction ended, its end — which comes after the batch.
#[derive(Debug, Default, PartialEq)]
pub struct BatcherOutput {
    pub batch: Option<Batch>,
    pub end: Option<TransactionEnd>,
}

impl BatcherOutput {
    pub fn is_empty(&self) -> bool {
        self.batch.is_none() && self.end.is_none()
    }
}

/// The transaction being batched.
#[derive(Debug)]
struct Transaction {
    xid: u32,
    commit_lsn: Lsn,
    commit_time: i64,
    /// Whether a batch of this transaction was already emitted.
    emitted: bool,
    /// The held-back batch: its events and the relations they index.
    events: Vec<Event>,
    relations: Vec<Relation>,
}

impl Transaction {
    /// The index of relation `oid` in the pending batch, adding it if new.
    fn relation_index(&mut self, relation: &Relation) -> u32 {
        let index = match self.relations.iter().position(|r| r.oid == relation.oid) {
            Some(i) => i,
            None => {
                self.relations.push(relation.clone());
                self.relations.len() - 1
            }
        };
        // A batch has at most max_events events, each naming at most a few
        // relations; u32 cannot overflow in practice, but saturate anyway.
        u32::try_from(index).unwrap_or(u32::MAX)
    }

    fn take_batch(&mut self, last: bool, capacity: usize) -> Batch {
        let batch = Batch {
            xid: self.xid,
            commit_lsn: self.commit_lsn,
            commit_time: self.commit_time,
            first: !self.emitted,
            last,
            relations: std::mem::take(&mut self.relations),
            events: std::mem::replace(&mut self.events, Vec::with_capacity(capacity)),
        };
        self.emitted = true;
        batch
    }
}

/// Groups decoded messages into batches; see the module documentation.
#[derive(Debug)]
pub struct Batcher {
    max_events: usize,
    /// Fill unchanged-toast markers from a full old row (see the module doc).
    fill_toast: bool,
    decoder: Decoder,
    cache: RelationCache,
    txn: Option<Transaction>,
}

impl Default for Batcher {
    fn default() -> Self {
        Self::new(NonZeroUsize::new(DEFAULT_MAX_EVENTS).unwrap_or(NonZeroUsize::MIN))
    }
}

impl Batcher {
    pub fn new(max_events: NonZeroUsize) -> Self {
        Batcher {
            max_events: max_events.get(),
            fill_toast: true,
            decoder: Decoder::new(),
            cache: RelationCache::new(),
            txn: None,
        }
    }

    /// Whether an update's unchanged-toast markers are replaced by the value
    /// its full old row carries (default on; see the module doc).
    pub fn fill_unchanged_toast(mut self, fill: bool) -> Self {
        self.fill_toast = fill;
        self
    }

    /// The relations announced so far.
    pub fn relations(&self) -> &RelationCache {
        &self.cache
    }

    /// Whether a transaction has begun and not yet committed.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Events held in the batch being filled; never more than `max_events`.
    pub fn buffered_events(&self) -> usize {
        self.txn.as_ref().map_or(0, |t| t.events.len())
    }

    /// Decodes one XLogData payload and pushes it. `wal_lsn` is the
    /// XLogData header's start LSN, which for a change is the change's LSN.
    pub fn push_bytes(&mut self, data: &[u8], wal_lsn: Lsn) -> Result<BatcherOutput, BatchError> {
        let message = self.decoder.decode(data)?;
        self.push(message, wal_lsn)
    }

    /// Takes one decoded message; see the module documentation for what
    /// comes out when.
    pub fn push(
        &mut self,
        message: PgOutputMessage<'_>,
        wal_lsn: Lsn,
    ) -> Result<BatcherOutput, BatchError> {
        let name = message.name();
        let mut out = BatcherOutput::default();
        // Row-level messages belong in a transaction; say so before looking
        // at their contents, which would fail less clearly.
        if self.txn.is_none()
            && matches!(
                message,
                PgOutputMessage::Insert(_)
                    | PgOutputMessage::Update(_)
                    | PgOutputMessage::Delete(_)
                    | PgOutputMessage::Truncate(_)
            )
        {
            return Err(outside(name));
        }
        match message {
            PgOutputMessage::Begin(begin) => {
                if let Some(open) = &self.txn {
                    return Err(BatchError::Unexpected {
                        message: name,
                        context: format!(
                            "for xid {} while transaction {} is still open",
                            begin.xid, open.xid
                        ),
                    });
                }
                self.txn = Some(Transaction {
                    xid: begin.xid,
                    commit_lsn: begin.final_lsn,
                    commit_time: begin.commit_time,
                    emitted: false,
                    events: Vec::with_capacity(self.max_events),
                    relations: Vec::new(),
                });
            }
            PgOutputMessage::Commit(commit) => {
                let Some(mut txn) = self.txn.take() else {
                    return Err(outside(name));
                };
                if commit.commit_lsn != txn.commit_lsn {
                    return Err(BatchError::CommitMismatch {
                        xid: txn.xid,
                        begin: txn.commit_lsn,
                        commit: commit.commit_lsn,
                    });
                }
                if txn.emitted || !txn.events.is_empty() {
                    out.batch = Some(txn.take_batch(true, 0));
                }
                out.end = Some(TransactionEnd {
                    xid: txn.xid,
                    commit_lsn: txn.commit_lsn,
                    end_lsn: commit.end_lsn,
                    commit_time: commit.commit_time,
                });
            }
            PgOutputMessage::Origin(_) => {}
            PgOutputMessage::Type(body) => self.cache.apply_type(&body),
            PgOutputMessage::Relation(body) => {
                let changed = self.cache.apply_relation(&body);
                let max = self.max_events;
                if let Some(txn) = &mut self.txn
                    && changed
                    && txn.relations.iter().any(|r| r.oid == body.oid)
                {
                    out.batch = Some(txn.take_batch(false, max));
                }
            }
            PgOutputMessage::Insert(insert) => {
                let new = self.values(insert.relation, &insert.new)?;
                out.batch = self.add_row(
                    name,
                    Operation::Insert,
                    insert.relation,
                    wal_lsn,
                    None,
                    Some(new),
                )?;
            }
            PgOutputMessage::Update(update) => {
                let old = match &update.old {
                    Some(old) => Some(self.values(update.relation, old.tuple())?),
                    None => None,
                };
                let mut new = self.values(update.relation, &update.new)?;
                if self.fill_toast
                    && let (Some(OldTuple::Full(_)), Some(old)) = (&update.old, &old)
                {
                    fill_unchanged_toast(&mut new, old);
                }
                out.batch = self.add_row(
                    name,
                    Operation::Update,
                    update.relation,
                    wal_lsn,
                    old,
                    Some(new),
                )?;
            }
            PgOutputMessage::Delete(delete) => {
                let old = match &delete.old {
                    OldTuple::Key(t) | OldTuple::Full(t) => self.values(delete.relation, t)?,
                };
                out.batch = self.add_row(
                    name,
                    Operation::Delete,
                    delete.relation,
                    wal_lsn,
                    Some(old),
                    None,
                )?;
            }
            PgOutputMessage::Truncate(body) => {
                let relations = body
                    .relations
                    .iter()
                    .map(|oid| Ok(self.cache.get(*oid)?.relation().clone()))
                    .collect::<Result<Vec<_>, RelationError>>()?;
                let max = self.max_events;
                let txn = self.txn.as_mut().ok_or_else(|| outside(name))?;
                if txn.events.len() == max {
                    out.batch = Some(txn.take_batch(false, max));
                }
                let indexes = relations.iter().map(|r| txn.relation_index(r)).collect();
                txn.events.push(Event::Truncate(Truncate {
                    relations: indexes,
                    cascade: body.cascade,
                    restart_identity: body.restart_identity,
                    lsn: wal_lsn,
                }));
            }
            PgOutputMessage::Message(body) => {
                let message = LogicalMessage {
                    transactional: body.transactional,
                    prefix: body.prefix.to_owned(),
                    content: body.content.to_vec(),
                    lsn: body.lsn,
                };
                if body.transactional {
                    let max = self.max_events;
                    let txn = self.txn.as_mut().ok_or_else(|| outside(name))?;
                    if txn.events.len() == max {
                        out.batch = Some(txn.take_batch(false, max));
                    }
                    txn.events.push(Event::Message(message));
                } else {
                    // The server decodes a transaction in one go when it
                    // reaches its commit record, so a non-transactional
                    // message never falls inside one; if it did, sending it
                    // ahead of the held-back events would reorder the stream.
                    if let Some(open) = &self.txn {
                        return Err(BatchError::Unexpected {
                            message: "non-transactional logical",
                            context: format!("inside transaction {}", open.xid),
                        });
                    }
                    out.batch = Some(Batch {
                        xid: 0,
                        commit_lsn: body.lsn,
                        commit_time: 0,
                        first: true,
                        last: true,
                        relations: Vec::new(),
                        events: vec![Event::Message(message)],
                    });
                    out.end = Some(TransactionEnd {
                        xid: 0,
                        commit_lsn: body.lsn,
                        end_lsn: body.lsn,
                        commit_time: 0,
                    });
                }
            }
            PgOutputMessage::StreamStart(_)
            | PgOutputMessage::StreamStop
            | PgOutputMessage::StreamCommit(_)
            | PgOutputMessage::StreamAbort(_) => {
                return Err(BatchError::Unsupported {
                    message: name,
                    feature: "streaming of in-progress transactions",
                    option: "streaming",
                });
            }
            PgOutputMessage::BeginPrepare(_)
            | PgOutputMessage::Prepare(_)
            | PgOutputMessage::CommitPrepared(_)
            | PgOutputMessage::RollbackPrepared(_)
            | PgOutputMessage::StreamPrepare(_) => {
                return Err(BatchError::Unsupported {
                    message: name,
                    feature: "two-phase commit decoding",
                    option: "two_phase",
                });
            }
        }
        debug_assert!(self.buffered_events() <= self.max_events);
        Ok(out)
    }

    fn values(&self, relation: u32, tuple: &TupleData<'_>) -> Result<Vec<Value>, RelationError> {
        self.cache.get(relation)?.decode_tuple(tuple)
    }

    /// Adds a row event, first emitting the held-back batch if it is full.
    fn add_row(
        &mut self,
        message: &'static str,
        op: Operation,
        oid: u32,
        lsn: Lsn,
        old: Option<Vec<Value>>,
        new: Option<Vec<Value>>,
    ) -> Result<Option<Batch>, BatchError> {
        let max = self.max_events;
        let txn = self.txn.as_mut().ok_or_else(|| outside(message))?;
        let emitted = (txn.events.len() == max).then(|| txn.take_batch(false, max));
        let relation = self.cache.get(oid)?.relation();
        let index = txn.relation_index(relation);
        txn.events.push(Event::Row(RowChange {
            op,
            relation: index,
            lsn,
            old,
            new,
        }));
        Ok(emitted)
    }
}

/// Replaces each unchanged-toast marker in `new` by the value at the same
/// position in the full old row, unless that is a marker too. Both rows were
/// decoded by the same relation, so they have the same width.
fn fill_unchanged_toast(new: &mut [Value], old: &[Value]) {
    debug_assert_eq!(new.len(), old.len());
    for (value, before) in new.iter_mut().zip(old) {
        if matches!(value, Value::UnchangedToast) && !matches!(before, Value::UnchangedToast) {
            *value = before.clone();
        }
    }
}

fn outside(message: &'static str) -> BatchError {
    BatchError::Unexpected {
        message,
        context: "outside a transaction (no Begin before it)".to_owned(),
    }
}

#[cfg(test)]
#[path = "batcher_tests.rs"]
mod tests;
