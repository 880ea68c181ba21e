//! `sluice tail`: the decoded change stream as JSON lines, for looking at
//! what a pipeline would receive, without NATS.
//!
//! Each row change, truncate and logical message becomes one line
//! ([`TailLine`]): the transaction's xid, commit LSN and commit time, then
//! the change with column values keyed by column name, in column order, in
//! the model's JSON form (`{"int":1}`, `"null"`, `"unchanged-toast"`, …).
//!
//! Slots. Tail never creates, advances or drops a durable slot unless told
//! to, and never creates a publication:
//!
//! - `from_start`: a new TEMPORARY slot (named `sluice_tail_<pid>_<n>`)
//!   that begins where it is created; the server drops it when tail stops
//!   or loses its connection. No durable slot is touched.
//! - otherwise: the named durable slot, read from its
//!   `confirmed_flush_lsn`. Tail confirms nothing (the flush LSN it reports
//!   stays `0/0`, which the server ignores), so the pipeline that owns the
//!   slot later receives the same changes. With `confirm`, tail confirms
//!   each transaction once its lines are written and flushed to the
//!   output, consuming them: an explicit choice for draining a slot.
//!
//! Plugins. The caller may pass a transform hook, `FnMut(Batch) ->
//! Result<Vec<Batch>, _>`, applied to every batch before it is printed; the
//! CLI plugs the manifest's transform chain into it.
//!
//! Tail runs until the `shutdown` future resolves, then ends the session
//! cleanly (a final status update; a temporary slot is gone with the
//! session) and returns what it printed.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Serialize;
use serde::ser::SerializeMap;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::config::{Identifier, Manifest, SourceSettings};
use crate::lsn::Lsn;
use crate::model::{Batch, Event, Operation, Value};
use crate::pgoutput::DEFAULT_MAX_EVENTS;
use crate::replication::{ConnInfo, SlotName};
use crate::source::{self, SlotKind, SourceError, SourceEvent, SourceOptions, StartPosition};

/// A transform applied to each batch before printing (the CLI's plugin
/// chain). An error stops tail.
pub type BatchTransform<'a> =
    dyn FnMut(Batch) -> Result<Vec<Batch>, Box<dyn std::error::Error + Send + Sync>> + Send + 'a;

/// Why tail stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot write the output")]
    Write(#[source] std::io::Error),
    #[error("the transform failed on a batch of transaction {xid} (commit LSN {commit_lsn})")]
    Transform {
        xid: u32,
        commit_lsn: Lsn,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    InvalidBatch(#[from] InvalidBatch),
}

/// A batch whose events do not fit its relations (a transform's mistake).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a batch of transaction {xid} is invalid: {reason}")]
pub struct InvalidBatch {
    pub xid: u32,
    pub reason: String,
}

/// What to tail.
#[derive(Clone, Debug)]
pub struct TailOptions {
    /// Connection, publication and (unless `from_start`) the slot.
    pub source: SourceSettings,
    /// Read a new TEMPORARY slot instead of `source.slot`.
    pub from_start: bool,
    /// Confirm what was printed on the durable slot (consumes it).
    pub confirm: bool,
    pub max_events: NonZeroUsize,
}

impl TailOptions {
    /// The manifest's connection, publication, slot and batch size.
    pub fn from_manifest(manifest: &Manifest) -> Self {
        TailOptions {
            source: manifest.source.clone(),
            from_start: false,
            confirm: false,
            max_events: NonZeroUsize::new(manifest.batch.max_events).unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// A URL and publication; with `slot`, that durable slot, without one a
    /// temporary slot (`from_start`).
    pub fn new(conninfo: ConnInfo, publication: Identifier, slot: Option<SlotName>) -> Self {
        let from_start = slot.is_none();
        TailOptions {
            source: SourceSettings {
                conninfo,
                publication,
                slot: slot.unwrap_or_else(temporary_slot_name),
                create_slot: false,
                create_publication: None,
                snapshot: crate::config::SnapshotMode::Never,
                failover: None,
                changes: crate::config::ChangeOptions::default(),
                on_ghost_changes: crate::config::GhostChanges::Refuse,
            },
            from_start,
            confirm: false,
            max_events: NonZeroUsize::new(DEFAULT_MAX_EVENTS).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// A fresh name for a temporary slot: unique within the process and,
/// through the pid, among tails on one machine.
fn temporary_slot_name() -> SlotName {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("sluice_tail_{}_{n}", std::process::id());
    // Lower-case letters, digits and underscores, well under 63 bytes.
    SlotName::new(name).unwrap_or_else(|e| unreachable!("{e}"))
}

/// What tail printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailSummary {
    pub slot: SlotName,
    pub temporary: bool,
    /// Transactions read to their end.
    pub transactions: u64,
    /// Lines written.
    pub lines: u64,
}

/// One line of output.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TailLine {
    /// 0 for a non-transactional message.
    pub xid: u32,
    pub commit_lsn: Lsn,
    /// Microseconds since 1970-01-01 UTC (0 for a non-transactional
    /// message).
    pub commit_time: i64,
    #[serde(flatten)]
    pub change: TailChange,
}

/// The change a line describes, tagged by `op`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(
    tag = "op",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum TailChange {
    Insert {
        schema: String,
        table: String,
        lsn: Lsn,
        new: Columns,
    },
    Update {
        schema: String,
        table: String,
        lsn: Lsn,
        #[serde(skip_serializing_if = "Option::is_none")]
        old: Option<Columns>,
        new: Columns,
    },
    Delete {
        schema: String,
        table: String,
        lsn: Lsn,
        old: Columns,
    },
    /// A snapshot row (never from replication itself; a transform may make
    /// them).
    Read {
        schema: String,
        table: String,
        lsn: Lsn,
        new: Columns,
    },
    Truncate {
        lsn: Lsn,
        /// `schema.table` of each table.
        tables: Vec<String>,
        cascade: bool,
        restart_identity: bool,
    },
    Message {
        lsn: Lsn,
        transactional: bool,
        prefix: String,
        /// Lowercase hex.
        #[serde(with = "crate::model::hex_bytes")]
        content: Vec<u8>,
    },
}

/// Column name → value, serialized as a JSON object in column order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Columns(pub Vec<(String, Value)>);

impl Serialize for Columns {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The lines of one batch, in event order.
pub fn lines(batch: &Batch) -> Result<Vec<TailLine>, InvalidBatch> {
    let invalid = |reason: String| InvalidBatch {
        xid: batch.xid,
        reason,
    };
    let relation = |index: u32| {
        batch.relations.get(index as usize).ok_or_else(|| {
            invalid(format!(
                "an event names relation {index}, but the batch lists {}",
                batch.relations.len()
            ))
        })
    };
    let mut out = Vec::with_capacity(batch.events.len());
    for event in &batch.events {
        let change = match event {
            Event::Row(row) => {
                let rel = relation(row.relation)?;
                let columns = |values: &Option<Vec<Value>>, which: &str| {
                    let Some(values) = values else {
                        return Ok(None);
                    };
                    if values.len() != rel.columns.len() {
                        return Err(invalid(format!(
                            "a row of {}.{} has {} {which} values for {} columns",
                            rel.schema,
                            rel.name,
                            values.len(),
                            rel.columns.len()
                        )));
                    }
                    Ok(Some(Columns(
                        rel.columns
                            .iter()
                            .zip(values)
                            .map(|(c, v)| (c.name.clone(), v.clone()))
                            .collect(),
                    )))
                };
                let old = columns(&row.old, "old")?;
                let new = columns(&row.new, "new")?;
                let (schema, table, lsn) = (rel.schema.clone(), rel.name.clone(), row.lsn);
                let missing = |which: &str| {
                    invalid(format!(
                        "a {} of {schema}.{table} has no {which} values",
                        row.op.as_str()
                    ))
                };
                match row.op {
                    Operation::Insert => TailChange::Insert {
                        new: new.ok_or_else(|| missing("new"))?,
                        schema,
                        table,
                        lsn,
                    },
                    Operation::Update => TailChange::Update {
                        old,
                        new: new.ok_or_else(|| missing("new"))?,
                        schema,
                        table,
                        lsn,
                    },
                    Operation::Delete => TailChange::Delete {
                        old: old.ok_or_else(|| missing("old"))?,
                        schema,
                        table,
                        lsn,
                    },
                    Operation::Read => TailChange::Read {
                        new: new.ok_or_else(|| missing("new"))?,
                        schema,
                        table,
                        lsn,
                    },
                }
            }
            Event::Truncate(t) => TailChange::Truncate {
                lsn: t.lsn,
                tables: t
                    .relations
                    .iter()
                    .map(|i| relation(*i).map(|r| format!("{}.{}", r.schema, r.name)))
                    .collect::<Result<_, _>>()?,
                cascade: t.cascade,
                restart_identity: t.restart_identity,
            },
            Event::Message(m) => TailChange::Message {
                lsn: m.lsn,
                transactional: m.transactional,
                prefix: m.prefix.clone(),
                content: m.content.clone(),
            },
        };
        out.push(TailLine {
            xid: batch.xid,
            commit_lsn: batch.commit_lsn,
            commit_time: batch.commit_time,
            change,
        });
    }
    Ok(out)
}

/// Runs `sluice tail` until `shutdown` resolves; see the module
/// documentation.
pub async fn run<W, S>(
    options: TailOptions,
    mut transform: Option<&mut BatchTransform<'_>>,
    out: &mut W,
    shutdown: S,
) -> Result<TailSummary, TailError>
where
    W: AsyncWrite + Unpin + ?Sized,
    S: Future<Output = ()>,
{
    let kind = if options.from_start {
        SlotKind::Temporary
    } else {
        SlotKind::Durable
    };
    let mut settings = options.source.clone();
    // Tail creates nothing durable; see the module documentation.
    settings.create_slot = false;
    settings.create_publication = None;
    if options.from_start {
        settings.slot = temporary_slot_name();
    }
    let prepared = source::prepare(&settings, kind, SourceOptions::new(options.max_events)).await?;
    let (flush_tx, flushed) = watch::channel(Lsn::ZERO);
    let mut stream = prepared.start(StartPosition::SLOT, flushed).await?;
    let mut summary = TailSummary {
        slot: stream.slot().name.clone(),
        temporary: stream.slot().temporary,
        transactions: 0,
        lines: 0,
    };
    tracing::info!(slot = %summary.slot, temporary = summary.temporary, "tailing");
    let confirm = options.confirm && !summary.temporary;
    let mut buffer = Vec::new();
    tokio::pin!(shutdown);
    let result = loop {
        let event = tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            event = stream.next() => event,
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(e)) => break Err(TailError::Source(e)),
            None => break Ok(()),
        };
        match event {
            SourceEvent::Batch(batch) => {
                let batches = match transform.as_deref_mut() {
                    Some(f) => {
                        let (xid, commit_lsn) = (batch.xid, batch.commit_lsn);
                        match f(batch) {
                            Ok(b) => b,
                            Err(source) => {
                                break Err(TailError::Transform {
                                    xid,
                                    commit_lsn,
                                    source,
                                });
                            }
                        }
                    }
                    None => vec![batch],
                };
                if let Err(e) = write_batches(&batches, &mut buffer, out, &mut summary).await {
                    break Err(e);
                }
            }
            SourceEvent::TransactionEnd(end) => {
                summary.transactions += 1;
                if confirm {
                    // Its lines are written and flushed: consumed.
                    flush_tx.send_replace(end.end_lsn);
                }
            }
            SourceEvent::Keepalive { wal_end } => {
                if confirm {
                    flush_tx.send_modify(|f| *f = (*f).max(wal_end));
                }
            }
            // The stream goes on; `tail` records no offsets.
            SourceEvent::Promoted { .. } => {}
            SourceEvent::Ghosts(change) => {
                // `sluice tail` never accepts ghost changes (its source
                // refuses them); say so if one ever arrives.
                tracing::warn!(from = change.from, to = change.to, switch_point = %change.switch_point,
                    "the server was promoted past lines already printed");
            }
            SourceEvent::Restarted(r) => {
                // Lines of an abandoned transaction are already printed;
                // it will be printed again in full. Say so where the user
                // looks (the log), not in the data.
                if let Some(a) = r.abandoned {
                    tracing::warn!(
                        xid = a.xid,
                        commit_lsn = %a.commit_lsn,
                        "connection lost mid-transaction; it will be printed again from its start"
                    );
                }
            }
        }
    };
    let stopped = stream.stop().await;
    result?;
    stopped?;
    Ok(summary)
}

async fn write_batches<W: AsyncWrite + Unpin + ?Sized>(
    batches: &[Batch],
    buffer: &mut Vec<u8>,
    out: &mut W,
    summary: &mut TailSummary,
) -> Result<(), TailError> {
    buffer.clear();
    for batch in batches {
        for line in lines(batch)? {
            // Serializing owned model values cannot fail: every map key is a
            // string and every float has a JSON form.
            serde_json::to_writer(&mut *buffer, &line).map_err(|e| TailError::Write(e.into()))?;
            buffer.push(b'\n');
            summary.lines += 1;
        }
    }
    out.write_all(buffer).await.map_err(TailError::Write)?;
    out.flush().await.map_err(TailError::Write)
}

#[cfg(test)]
mod tests;
