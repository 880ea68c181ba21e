//! Feeding the plugin thread: what the source loop hands on, in stream
//! order, and what it registers with the [`Confirmer`] on the way.
//!
//! - [`Feeder::forward`]: a source event. Batches go to the [`Outbox`]; a
//!   transaction's end is registered (a [`Ticket`] with the transaction)
//!   and goes behind its batches; a keepalive goes to the confirmer
//!   (`connector-and-driver`); a backfill chunk goes right after the
//!   transaction that carried its high watermark. When the backfills' state
//!   changed (a request seen, a chunk emitted, a backfill finished), the
//!   new state rides on the next ticket: the transaction's own for a
//!   request it carried (so the offset never passes a request without
//!   recording it), a marker ticket after a chunk for the chunk's progress.
//! - [`feed_chunk`]: a snapshot chunk's `read` batches, then a ticket that
//!   carries the chunk's progress into the record once JetStream stored it.
//! - [`reaches`]: whether an event is at or past a snapshot's point, where
//!   its chunks must go.
//! - [`Feeder::mark`]: ghost changes after a promotion, accepted to be
//!   marked: the marker message (`super::ghost`), then the confirmer's
//!   switch ticket behind it. Every batch carries the timeline that wrote
//!   it when ids name it ([`Timelines`]), refreshed from the history that
//!   comes with a reconnect to a promoted server.
//!
//! Invariant: everything goes through one outbox and one channel in the
//! order the stream defines, and every ticket is registered in that same
//! order, so the confirmer's order is the stream's.

use super::ghost::GhostMarker;
use super::stages::Work;
use crate::lsn::Lsn;
use crate::metrics::Metrics;
use crate::model::Batch;
use crate::position::history::Timelines;
use crate::position::startup::TimelineChange;
use crate::position::{Confirmer, Transaction, Update};
use crate::snapshot::{Backfills, Chunk, Injector, ReadId, SnapshotError};
use crate::source::{self, SourceEvent};

/// Events the outbox holds before the source loop stops reading: the bound
/// on what waits between the source and the plugin thread, besides the
/// channel's few groups.
const OUTBOX_EVENTS: usize = 4096;
/// Work items (batches and ends) the outbox holds at most.
const OUTBOX_ITEMS: usize = 1024;

/// Work ready for the plugin thread, sent as one group when the channel
/// has room.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    items: Vec<Work>,
    events: usize,
}

impl Outbox {
    fn push(&mut self, work: Work) {
        if let Work::Batch { batch, .. } = &work {
            self.events += batch.events.len();
        }
        self.items.push(work);
    }

    /// Whether the source loop may read more.
    pub(super) fn has_room(&self) -> bool {
        self.events < OUTBOX_EVENTS && self.items.len() < OUTBOX_ITEMS
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Everything held, as one group.
    pub(super) fn take(&mut self) -> Vec<Work> {
        self.events = 0;
        std::mem::take(&mut self.items)
    }

    /// Pushes a chunk's batches (all of one read id), numbering their
    /// events from 0.
    fn push_chunk(&mut self, batches: Vec<Batch>, id: ReadId) {
        let mut first_event = 0u64;
        for batch in batches {
            let n = batch.events.len() as u64;
            self.push(Work::Batch {
                batch,
                first_event,
                read: Some(id),
                timeline: None,
            });
            first_event += n;
        }
    }
}

/// What the source loop does after an event.
#[derive(Debug)]
pub(super) enum Flow {
    Continue,
    /// The source ended: stop reading, drain.
    Ended,
    /// The source failed: stop reading, drain, then fail with this.
    Failed(source::SourceError),
}

/// Turns source events into work and tickets.
#[derive(Debug)]
pub(super) struct Feeder {
    metrics: std::sync::Arc<Metrics>,
    /// The index of the next event in its transaction.
    first_event: u64,
    /// Backfills asked for in the stream (see `crate::snapshot`).
    backfills: Backfills,
    /// Which timeline wrote what, for message ids.
    timelines: Timelines,
    /// The ghost-range marker, with `source.on-ghost-changes = "mark"`.
    marker: Option<GhostMarker>,
}

impl Feeder {
    pub(super) fn new(
        metrics: std::sync::Arc<Metrics>,
        backfills: Backfills,
        timelines: Timelines,
        marker: Option<GhostMarker>,
    ) -> Self {
        Feeder {
            metrics,
            first_event: 0,
            backfills,
            timelines,
            marker,
        }
    }

    /// Ghost changes accepted after a promotion: the marker naming them,
    /// then the ticket that switches the confirmer to the new timeline once
    /// the marker (and every ghost before it) is stored.
    pub(super) fn mark(
        &mut self,
        change: TimelineChange,
        out: &mut Outbox,
        confirmer: &mut Confirmer,
    ) {
        match &self.marker {
            Some(marker) => out.push(Work::Marker(marker.message(&change))),
            None => {
                debug_assert!(false, "ghost changes accepted without a marker");
                tracing::error!(from = change.from, to = change.to, switch_point = %change.switch_point,
                    "ghost changes accepted without a marker subject; continuing unmarked");
            }
        }
        out.push(Work::End(
            confirmer.register_switch(change.to, change.switch_point),
        ));
    }

    /// Resumes a backfill interrupted by a stop or a crash where its
    /// acknowledged chunks ended.
    pub(super) async fn resume_backfills(&mut self) {
        self.backfills.resume().await;
    }

    pub(super) async fn forward(
        &mut self,
        event: Option<Result<SourceEvent, source::SourceError>>,
        out: &mut Outbox,
        confirmer: &mut Confirmer,
    ) -> Flow {
        match event {
            Some(Ok(SourceEvent::Batch(mut batch))) => {
                self.backfills.observe(&mut batch);
                if batch.first {
                    confirmer.begin();
                    self.first_event = 0;
                }
                self.metrics.events_decoded(batch.events.len());
                let first_event = self.first_event;
                self.first_event += batch.events.len() as u64;
                let timeline = self.timelines.qualifier(batch.commit_lsn, batch.xid);
                out.push(Work::Batch {
                    batch,
                    first_event,
                    read: None,
                    timeline,
                });
            }
            Some(Ok(SourceEvent::TransactionEnd(end))) => {
                let transaction = Transaction {
                    xid: end.xid,
                    commit_lsn: end.commit_lsn,
                    end_lsn: end.end_lsn,
                    commit_time: end.commit_time,
                };
                let update = self.backfills.changed().map(Update::Backfills);
                out.push(Work::End(confirmer.register(Some(transaction), update)));
                // A backfill chunk goes right after its high watermark's
                // transaction, before anything committed later.
                if let Some(chunk) = self.backfills.due(end.commit_lsn, end.commit_time).await {
                    self.metrics.snapshot_rows(&chunk.table, chunk.rows);
                    out.push_chunk(chunk.batches, chunk.id);
                }
                // The chunk's progress (or a backfill finished, abandoned
                // or started) is recorded once everything before it is.
                if let Some(state) = self.backfills.changed() {
                    let ticket = confirmer.register(None, Some(Update::Backfills(state)));
                    out.push(Work::End(ticket));
                }
            }
            Some(Ok(SourceEvent::Keepalive { wal_end })) => confirmer.keepalive(wal_end),
            Some(Ok(SourceEvent::Ghosts(change))) => self.mark(change, out, confirmer),
            Some(Ok(SourceEvent::Restarted(r))) => {
                confirmer.set_timeline(r.timeline);
                self.timelines.follow(r.timeline, r.history);
                tracing::warn!(resumed_at = %r.resumed_at, abandoned = ?r.abandoned,
                    "replication connection restarted; a cut-off transaction is replayed and de-duplicated");
            }
            Some(Ok(SourceEvent::Promoted { timeline, history })) => {
                confirmer.set_timeline(timeline);
                self.timelines.follow(timeline, history);
                tracing::info!(
                    timeline,
                    "offset records now carry the promoted standby's timeline"
                );
            }
            Some(Err(e)) => return Flow::Failed(e),
            None => return Flow::Ended,
        }
        Flow::Continue
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

/// Puts a chunk's batches and its ticket, which carries the chunk's
/// progress into the record once JetStream stored it, into the outbox.
pub(super) fn feed_chunk(
    out: &mut Outbox,
    chunk: Chunk,
    confirmer: &mut Confirmer,
    metrics: &Metrics,
) {
    let Chunk { batches, id, done } = chunk;
    metrics.snapshot_rows(&format!("{}.{}", done.schema, done.table), done.rows);
    out.push_chunk(batches, id);
    out.push(Work::End(
        confirmer.register(None, Some(Update::Chunk(done))),
    ));
}
