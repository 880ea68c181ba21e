//! Feeding the plugin thread: what the source loop of [`super::run`] hands
//! on, in stream order.
//!
//! - [`Feeder::forward`]: a source event: batches to the plugin thread,
//!   transaction ends to the tracker and the ack queue, keepalives to the
//!   flusher (`connector-and-driver`); a backfill chunk right after the
//!   transaction that carried its high watermark. When the backfills'
//!   state changed (a request seen, a chunk emitted, a backfill finished),
//!   the new state rides on the next end: the transaction's own end for a
//!   request it carried (so the offset never passes a request without
//!   recording it), a chunk's end for the chunk's progress.
//! - [`feed_chunk`]: a snapshot chunk's `read` batches, then its end,
//!   whose progress the flusher records once JetStream stored it.
//! - [`reaches`]: whether an event is at or past a snapshot's point, where
//!   its chunks must go.
//!
//! Invariant: everything goes through one bounded channel in the order the
//! stream defines, so messages leave in that order.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::acks::CommitInfo;
use super::run::{Flusher, RunError, Update, Work, lock};
use crate::config::FlushMode;
use crate::lsn::Lsn;
use crate::metrics::Metrics;
use crate::position::Tracker;
use crate::snapshot::{Backfills, Chunk, Injector, SnapshotError};
use crate::source::{self, SourceEvent};

/// What the source loop does after an event.
pub(super) enum Flow {
    Continue,
    /// The plugin thread is gone: stop feeding, drain.
    Stop,
    /// The source failed: stop feeding, drain, then fail with this.
    Failed(RunError),
}

impl Flow {
    /// Applies this to the source loop's state: `work` (the plugin thread's
    /// end) is dropped to stop feeding, and a failure becomes `outcome`.
    pub(super) fn apply<T>(self, work: &mut Option<T>, outcome: &mut Result<(), RunError>) {
        match self {
            Flow::Continue => {}
            Flow::Stop => *work = None,
            Flow::Failed(e) => {
                *outcome = Err(e);
                *work = None;
            }
        }
    }
}

/// Feeds source events to the plugin thread and the tracker.
pub(super) struct Feeder {
    pub(super) tracker: Arc<Mutex<Tracker>>,
    pub(super) metrics: Arc<Metrics>,
    /// The index of the next event in its transaction.
    pub(super) first_event: u64,
    /// Backfills asked for in the stream (see `crate::snapshot`).
    pub(super) backfills: Backfills,
}

impl Feeder {
    pub(super) async fn forward(
        &mut self,
        event: Option<Result<SourceEvent, source::SourceError>>,
        tx: &mpsc::Sender<Work>,
        flusher: &mut Flusher,
    ) -> Result<Flow, RunError> {
        match event {
            Some(Ok(SourceEvent::Batch(mut batch))) => {
                self.backfills.observe(&mut batch);
                if batch.first {
                    lock(&self.tracker).transaction_begun();
                    self.first_event = 0;
                }
                let n = batch.events.len() as u64;
                self.metrics.events_decoded(batch.events.len());
                let first_event = self.first_event;
                self.first_event += n;
                let work = Work::Batch {
                    batch,
                    first_event,
                    read: None,
                };
                if tx.send(work).await.is_err() {
                    return Ok(Flow::Stop);
                }
            }
            Some(Ok(SourceEvent::TransactionEnd(end))) => {
                let info = CommitInfo {
                    xid: end.xid,
                    commit_lsn: end.commit_lsn,
                    end_lsn: end.end_lsn,
                    commit_time: end.commit_time,
                    transaction: true,
                    update: self
                        .backfills
                        .changed()
                        .map(|state| flusher.pending(Update::Backfills(state))),
                };
                lock(&self.tracker).transaction_complete(end.end_lsn);
                if tx.send(Work::End(info)).await.is_err() {
                    return Ok(Flow::Stop);
                }
                // A backfill chunk goes right after its high watermark's
                // transaction, before anything committed later.
                if let Some(chunk) = self.backfills.due(end.commit_lsn, end.commit_time).await {
                    self.metrics.snapshot_rows(&chunk.table, chunk.rows);
                    let mut first_event = 0u64;
                    for batch in chunk.batches {
                        let n = batch.events.len() as u64;
                        let work = Work::Batch {
                            batch,
                            first_event,
                            read: Some(chunk.id),
                        };
                        if tx.send(work).await.is_err() {
                            return Ok(Flow::Stop);
                        }
                        first_event += n;
                    }
                }
                // The chunk's progress (or a backfill finished, abandoned
                // or started) is recorded once everything before it is.
                if let Some(state) = self.backfills.changed() {
                    let marker = CommitInfo {
                        transaction: false,
                        update: Some(flusher.pending(Update::Backfills(state))),
                        ..info
                    };
                    if tx.send(Work::End(marker)).await.is_err() {
                        return Ok(Flow::Stop);
                    }
                }
            }
            Some(Ok(SourceEvent::Keepalive { wal_end })) => {
                if flusher.mode == FlushMode::ConnectorAndDriver {
                    let moved = lock(&self.tracker).idle_until(wal_end);
                    if let Some(lsn) = moved {
                        flusher.advance(lsn, None).await?;
                    }
                }
            }
            Some(Ok(SourceEvent::Restarted(r))) => {
                tracing::warn!(resumed_at = %r.resumed_at, abandoned = ?r.abandoned,
                    "replication connection restarted; a cut-off transaction is replayed and de-duplicated");
            }
            Some(Err(e)) => return Ok(Flow::Failed(e.into())),
            None => return Ok(Flow::Stop),
        }
        Ok(Flow::Continue)
    }
}

/// Whether `event` is at or past a snapshot's `point`: the first event of
/// a transaction committing there or later, or the server having sent
/// everything up to it. Errors and the end of the stream pass through.
pub(super) fn reaches(
    event: &Option<Result<SourceEvent, source::SourceError>>,
    point: Lsn,
) -> bool {
    match event {
        Some(Ok(SourceEvent::Batch(b))) => b.first && b.commit_lsn >= point,
        Some(Ok(SourceEvent::TransactionEnd(e))) => e.commit_lsn >= point,
        Some(Ok(SourceEvent::Keepalive { wal_end })) => *wal_end >= point,
        _ => false,
    }
}

/// The running snapshot's next chunk; never ready without one.
pub(super) async fn next_chunk(
    injector: &mut Option<Injector>,
) -> Option<Result<Chunk, SnapshotError>> {
    match injector {
        Some(i) => i.next().await,
        None => std::future::pending().await,
    }
}

/// Hands a chunk's batches and its end to the plugin thread; the end
/// carries what the flusher records once it is stored. False when the
/// plugin thread is gone.
pub(super) async fn feed_chunk(
    tx: &mpsc::Sender<Work>,
    chunk: Chunk,
    flusher: &mut Flusher,
    metrics: &Metrics,
) -> bool {
    let Chunk { batches, id, done } = chunk;
    metrics.snapshot_rows(&format!("{}.{}", done.schema, done.table), done.rows);
    let point = done.point;
    let end = CommitInfo {
        xid: 0,
        commit_lsn: point,
        end_lsn: point,
        commit_time: batches.first().map_or(0, |b| b.commit_time),
        transaction: false,
        update: Some(flusher.pending(Update::Chunk(done))),
    };
    let mut first_event = 0u64;
    for batch in batches {
        let n = batch.events.len() as u64;
        let work = Work::Batch {
            batch,
            first_event,
            read: Some(id),
        };
        if tx.send(work).await.is_err() {
            return false;
        }
        first_event += n;
    }
    tx.send(Work::End(end)).await.is_ok()
}
