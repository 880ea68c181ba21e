//! Checks on what a plugin returns, before it goes any further.
//!
//! A transform may reshape events and relations freely, but what it returns
//! must still be a well-formed batch: every relation index in range, every
//! row as long as its relation's column list, `old`/`new` present as the
//! operation requires, and the transaction's identity (xid, commit LSN,
//! commit time, first/last flags) unchanged — the position tracker measures
//! progress in commit LSNs, so a plugin must not be able to move them.
//! A sink's message may name the event it was made from; the name must be
//! an event of the batch the sink was given.

use crate::lsn::Lsn;
use crate::model::{Batch, Event, Message, Operation};

/// What is wrong with a batch a transform returned, or a sink's messages.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidOutput {
    #[error("it changed the batch's {field} (a transform may change events and relations only)")]
    ChangedTransaction { field: &'static str },
    #[error("event {event} refers to relation {relation}, but the batch has {count} relations")]
    RelationOutOfRange {
        event: usize,
        relation: u32,
        count: usize,
    },
    #[error(
        "event {event} has {values} {side} values, but relation {relation} ({table}) has {columns} columns"
    )]
    WrongValueCount {
        event: usize,
        side: &'static str,
        values: usize,
        relation: u32,
        table: String,
        columns: usize,
    },
    #[error("message {message} names event {event}, but the batch had {count} events")]
    EventOutOfRange {
        message: usize,
        event: u32,
        count: usize,
    },
    #[error("event {event} is {article} {op} {problem}")]
    MissingOrExtraValues {
        event: usize,
        article: &'static str,
        op: &'static str,
        problem: &'static str,
    },
}

/// The transaction identity of a batch: what a transform must not change.
#[derive(Clone, Copy, Debug)]
pub(super) struct TransactionId {
    xid: u32,
    commit_lsn: Lsn,
    commit_time: i64,
    first: bool,
    last: bool,
}

impl TransactionId {
    pub(super) fn of(batch: &Batch) -> Self {
        TransactionId {
            xid: batch.xid,
            commit_lsn: batch.commit_lsn,
            commit_time: batch.commit_time,
            first: batch.first,
            last: batch.last,
        }
    }
}

/// Checks that every message a sink returned for a batch of `count` events
/// names an event of that batch, if any.
pub(super) fn check_messages(count: usize, messages: &[Message]) -> Result<(), InvalidOutput> {
    let bad = messages
        .iter()
        .enumerate()
        .find_map(|(i, m)| m.event.filter(|&e| e as usize >= count).map(|e| (i, e)));
    match bad {
        Some((message, event)) => Err(InvalidOutput::EventOutOfRange {
            message,
            event,
            count,
        }),
        None => Ok(()),
    }
}

/// Checks a batch a transform returned for the input whose identity is `input`.
pub(super) fn check(input: TransactionId, output: &Batch) -> Result<(), InvalidOutput> {
    let changed = |field| Err(InvalidOutput::ChangedTransaction { field });
    if output.xid != input.xid {
        return changed("xid");
    }
    if output.commit_lsn != input.commit_lsn {
        return changed("commit-lsn");
    }
    if output.commit_time != input.commit_time {
        return changed("commit-time");
    }
    if output.first != input.first || output.last != input.last {
        return changed("first/last flags");
    }
    check_shape(output)
}

/// Checks that a batch is well formed on its own: every relation index in
/// range, every row as long as its relation, `old`/`new` as its operation
/// requires. Used for plugin output and for `sluice plugin run --input`.
pub(crate) fn check_shape(output: &Batch) -> Result<(), InvalidOutput> {
    let count = output.relations.len();
    let relation = |event: usize, relation: u32| {
        usize::try_from(relation)
            .ok()
            .and_then(|i| output.relations.get(i))
            .ok_or(InvalidOutput::RelationOutOfRange {
                event,
                relation,
                count,
            })
    };
    for (event, e) in output.events.iter().enumerate() {
        match e {
            Event::Row(row) => {
                let rel = relation(event, row.relation)?;
                let (needs_old, needs_new) = match row.op {
                    // `old` is optional for updates and deletes: it depends on
                    // the replica identity.
                    Operation::Insert | Operation::Read => (Some(false), true),
                    Operation::Update => (None, true),
                    Operation::Delete => (None, false),
                };
                let shape_error = |problem| InvalidOutput::MissingOrExtraValues {
                    event,
                    article: if row.op == Operation::Insert {
                        "an"
                    } else {
                        "a"
                    },
                    op: row.op.as_str(),
                    problem,
                };
                if needs_new != row.new.is_some() {
                    return Err(shape_error(if needs_new {
                        "without new values"
                    } else {
                        "with new values"
                    }));
                }
                if needs_old == Some(false) && row.old.is_some() {
                    return Err(shape_error("with old values"));
                }
                for (side, values) in [("old", &row.old), ("new", &row.new)] {
                    if let Some(values) = values
                        && values.len() != rel.columns.len()
                    {
                        return Err(InvalidOutput::WrongValueCount {
                            event,
                            side,
                            values: values.len(),
                            relation: row.relation,
                            table: format!("{}.{}", rel.schema, rel.name),
                            columns: rel.columns.len(),
                        });
                    }
                }
            }
            Event::Truncate(t) => {
                for &r in &t.relations {
                    relation(event, r)?;
                }
            }
            Event::Message(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
