//! The one owner of what may be confirmed to PostgreSQL.
//!
//! Everything the pipeline hands on in stream order that *ends* something —
//! a transaction, a snapshot chunk, the backfills' state after a chunk — is
//! registered here by the source loop at the moment it is handed to the
//! plugins, and gets a [`Ticket`]. The ticket travels behind that
//! transaction's messages through the plugin thread and the publisher, and
//! comes back ([`Confirmer::acknowledged`]) once JetStream has stored every
//! message published before it. Tickets may come back in any order. The
//! confirmer then moves four positions, each only forwards:
//!
//! 1. **released**: the commit end LSN of the newest transaction such that
//!    its ticket and every ticket registered before it are back. Tickets are
//!    released strictly in registration order, so a transaction is never
//!    released while an earlier one (or a chunk placed before it) is still
//!    in flight. What a released ticket carries (a snapshot chunk's
//!    progress, the backfills' state) is applied to the record kept here at
//!    the same moment, so record and position always describe the same
//!    prefix of the stream.
//! 2. **recorded**: the released position written to the offset store, with
//!    that progress ([`Confirmer::record`]). A durable write per small
//!    transaction would cost more than the transaction itself, so the
//!    caller records at the cadence the invariant needs: before the slot is
//!    told (every `status-interval`, which is also how often the reader
//!    reports to the server), and at shutdown. A crash loses at most the
//!    positions released since the last write; those transactions are
//!    replayed and their messages dropped by JetStream as duplicates
//!    (`Nats-Msg-Id`).
//!    A write may take a while (a NATS KV bucket whose cluster is electing
//!    a leader), so it is lent out: [`Confirmer::start_record`] hands the
//!    store and the record to a [`RecordWrite`] that the caller drives while
//!    tickets keep coming back, and [`Confirmer::finish_record`] takes the
//!    store back with the outcome. At most one write is out at a time.
//! 3. **confirmed**: the recorded position published on the `flushed` watch,
//!    which the replication reader reports to the server as the flush LSN
//!    (never in `manual` flush mode). Publishing happens only after the
//!    write returned, so the slot never passes the stored offset, and a
//!    restart never finds the slot ahead of the offset because of us.
//! 4. With a `memory` store nothing survives the process, so there is
//!    nothing to write: a released position is confirmed at once.
//!
//! So, at every moment: confirmed ≤ recorded ≤ released ≤ what JetStream
//! stored. The `debug_assert!`s below check the steps that keep it.
//!
//! `connector-and-driver` flush: a keepalive's WAL end is released when no
//! ticket is out and no transaction is partly received (DESIGN §3): the WAL
//! up to there holds nothing for the publication that is still in flight.
//!
//! **Timeline switch** (ghost changes marked after a promotion, DESIGN §3
//! "Failover"). Positions above the switch point on the old timeline are
//! LSNs the new timeline reuses for other changes, so the one place where a
//! position moves *back* in LSN is here, and only by a switch:
//! [`Confirmer::register_switch`] registers the ghost marker's ticket,
//! behind every ghost. From then until it is released, the flush LSN
//! reported to the server is capped at the switch point (a ghost's end
//! reported to the promoted server would make it skip the new timeline's
//! transactions up to there). Its release moves every position to the
//! switch point on the new timeline, records that (stores order positions
//! by timeline first), and announces the timeline on [`Confirmer::switched`],
//! which the replication reader waits for before it streams the new
//! timeline. Tickets registered after it are the new timeline's.

use std::collections::VecDeque;

use tokio::sync::watch;

use super::offset::OffsetRecord;
use super::progress::{BackfillProgress, SnapshotProgress};
use super::store::{OffsetStore, StoreError};
use crate::config::FlushMode;
use crate::lsn::Lsn;
use crate::replication::{SlotName, SystemIdentity};

pub use super::progress::ChunkDone;

/// A transaction as the offset record describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub xid: u32,
    /// The commit record's start (`Batch::commit_lsn`).
    pub commit_lsn: Lsn,
    /// The commit record's end: the position to confirm.
    pub end_lsn: Lsn,
    pub commit_time: i64,
}

/// What a ticket carries into the record once it is released.
#[derive(Debug, PartialEq, Eq)]
pub enum Update {
    /// A snapshot chunk is stored.
    Chunk(ChunkDone),
    /// The backfills' state as of this point in the stream.
    Backfills(Vec<BackfillProgress>),
    /// Everything before is stored, including the ghost marker: continue on
    /// `timeline` from `at` (see the module documentation).
    Switch { timeline: u32, at: Lsn },
}

/// One registered end, travelling behind its messages and back. Not
/// `Clone`: each comes back once.
#[derive(Debug)]
pub struct Ticket {
    seq: u64,
    transaction: Option<Transaction>,
    update: Option<Update>,
}

impl Ticket {
    /// The transaction this ticket ends, if it ends one.
    pub fn transaction(&self) -> Option<&Transaction> {
        self.transaction.as_ref()
    }
}

/// What the confirmer starts from.
#[derive(Debug)]
pub struct ConfirmerSettings {
    pub store: Box<dyn OffsetStore>,
    pub mode: FlushMode,
    pub slot: SlotName,
    /// The server the records are written for.
    pub server: SystemIdentity,
    /// Everything up to here is already confirmed (where streaming
    /// resumes, or the stored offset).
    pub start: Lsn,
    /// The snapshot's progress, carried in every record.
    pub progress: Option<SnapshotProgress>,
    /// The unfinished backfills as of `start`.
    pub backfills: Vec<BackfillProgress>,
}

/// An offset record on its way to the store, which it holds meanwhile
/// (see [`Confirmer::start_record`]).
#[derive(Debug)]
pub struct RecordWrite {
    store: Box<dyn OffsetStore>,
    record: OffsetRecord,
    /// The released position the record holds.
    upto: Lsn,
    /// [`Confirmer::switches`] when the record was made.
    switches: u64,
}

impl RecordWrite {
    /// Writes the record; the outcome goes back to
    /// [`Confirmer::finish_record`].
    pub async fn write(mut self) -> RecordWritten {
        let result = self.store.store(&self.record).await;
        RecordWritten {
            store: self.store,
            upto: self.upto,
            switches: self.switches,
            result,
        }
    }
}

/// A finished [`RecordWrite`]: the store, and whether the write succeeded.
#[derive(Debug)]
pub struct RecordWritten {
    store: Box<dyn OffsetStore>,
    upto: Lsn,
    switches: u64,
    result: Result<(), StoreError>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Confirmer {
    /// `None` while a [`RecordWrite`] holds it.
    store: Option<Box<dyn OffsetStore>>,
    /// Whether the store is durable (a memory store is not).
    durable: bool,
    /// Timeline switches released so far: a write made before one does not
    /// move the positions after it.
    switches: u64,
    flushed: watch::Sender<Lsn>,
    mode: FlushMode,
    slot: SlotName,
    server: SystemIdentity,
    /// Tickets out, in registration order: `pending[i]` is ticket
    /// `base + i`, `Some` once it came back.
    pending: VecDeque<Option<Ticket>>,
    base: u64,
    /// A transaction's first batch was registered, its end not yet.
    receiving: bool,
    /// The newest registered transaction's end.
    registered: Lsn,
    released: Lsn,
    /// The newest released transaction, if `released` is its end.
    released_transaction: Option<Transaction>,
    recorded: Lsn,
    confirmed: Lsn,
    progress: Option<SnapshotProgress>,
    backfills: Vec<BackfillProgress>,
    /// Progress was released that no record holds yet.
    progress_unrecorded: bool,
    /// A timeline switch registered and not yet released: the flush LSN
    /// reported is capped here.
    cap: Option<Lsn>,
    /// The timeline of the released positions, for the reader.
    switched: watch::Sender<u32>,
}

impl Confirmer {
    /// A confirmer, and the watch the replication reader reports as its
    /// flush LSN (`0/0` until something is confirmed: the server ignores a
    /// flush LSN behind the slot).
    pub fn new(settings: ConfirmerSettings) -> (Self, watch::Receiver<Lsn>) {
        let (flushed, rx) = watch::channel(Lsn::ZERO);
        let (switched, _) = watch::channel(settings.server.timeline);
        let confirmer = Confirmer {
            durable: settings.store.is_durable(),
            store: Some(settings.store),
            switches: 0,
            flushed,
            mode: settings.mode,
            slot: settings.slot,
            server: settings.server,
            pending: VecDeque::new(),
            base: 0,
            receiving: false,
            registered: settings.start,
            released: settings.start,
            released_transaction: None,
            recorded: settings.start,
            confirmed: settings.start,
            progress: settings.progress,
            backfills: settings.backfills,
            progress_unrecorded: false,
            cap: None,
            switched,
        };
        (confirmer, rx)
    }

    /// A transaction's first batch is handed on.
    pub fn begin(&mut self) {
        self.receiving = true;
    }

    /// Registers the next end in stream order: a transaction's (which then
    /// is no longer being received), or a snapshot chunk's or marker's
    /// (`transaction: None`), with what it carries into the record.
    pub fn register(&mut self, transaction: Option<Transaction>, update: Option<Update>) -> Ticket {
        if let Some(t) = &transaction {
            self.receiving = false;
            debug_assert!(
                t.end_lsn > self.registered,
                "transactions are registered in commit order"
            );
            self.registered = t.end_lsn;
        }
        let seq = self.base + self.pending.len() as u64;
        self.pending.push_back(None);
        Ticket {
            seq,
            transaction,
            update,
        }
    }

    /// Registers the ghost marker's end: once it is back, everything
    /// continues on `timeline` from `at` (the switch point). Until then the
    /// flush LSN reported is capped at `at`. See the module documentation.
    pub fn register_switch(&mut self, timeline: u32, at: Lsn) -> Ticket {
        self.cap = Some(at);
        self.flushed.send_if_modified(|f| {
            let above = *f > at;
            if above {
                *f = at;
            }
            above
        });
        let ticket = self.register(None, Some(Update::Switch { timeline, at }));
        // The new timeline's transactions come next, from the switch point.
        self.registered = at;
        ticket
    }

    /// The timeline of the released positions: it changes when a switch
    /// ticket is released ([`Self::register_switch`]).
    pub fn switched(&self) -> watch::Receiver<u32> {
        self.switched.subscribe()
    }

    /// Whether a switch is registered and not yet released.
    pub fn is_switching(&self) -> bool {
        self.cap.is_some()
    }

    /// JetStream stored every message before `ticket`: release what is now
    /// a contiguous prefix. With a memory store, confirm it at once.
    pub fn acknowledged(&mut self, ticket: Ticket) {
        let Some(index) = ticket
            .seq
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.pending.len())
        else {
            debug_assert!(false, "ticket {} was not out", ticket.seq);
            return;
        };
        debug_assert!(self.pending[index].is_none(), "a ticket comes back once");
        self.pending[index] = Some(ticket);
        while let Some(Some(_)) = self.pending.front() {
            if let Some(Some(ticket)) = self.pending.pop_front() {
                self.base += 1;
                self.release(ticket);
            }
        }
        if !self.durable {
            self.publish(self.released);
        }
    }

    fn release(&mut self, ticket: Ticket) {
        match ticket.update {
            Some(Update::Chunk(chunk)) => {
                if let Some(progress) = self.progress.as_mut() {
                    chunk.apply(progress);
                    self.progress_unrecorded = true;
                }
            }
            Some(Update::Backfills(state)) => {
                self.backfills = state;
                self.progress_unrecorded = true;
            }
            Some(Update::Switch { timeline, at }) => {
                self.switch(timeline, at);
                return;
            }
            None => {}
        }
        if let Some(t) = ticket.transaction
            && t.end_lsn > self.released
        {
            self.released = t.end_lsn;
            self.released_transaction = Some(t);
        }
    }

    /// Moves every position to `at` on `timeline`: the ghosts before are
    /// stored, the new timeline's changes come next.
    fn switch(&mut self, timeline: u32, at: Lsn) {
        self.switches += 1;
        self.server.timeline = timeline;
        self.released = at;
        self.released_transaction = None;
        self.cap = None;
        // Nothing above `at` counts any more; what the flush LSN says stays
        // at most `at` (it was capped there since the switch was registered).
        self.recorded = self.recorded.min(at);
        self.confirmed = self.confirmed.min(at);
        self.flushed.send_if_modified(|f| {
            let above = *f > at;
            if above {
                *f = at;
            }
            above
        });
        // A durable store gets a record at `at` on the new timeline with the
        // next `record`, which then confirms it; a memory store confirms it
        // at once (see `acknowledged`).
        self.progress_unrecorded = self.durable;
        self.switched.send_replace(timeline);
    }

    /// The server reported its WAL end in a keepalive. In
    /// `connector-and-driver` mode, when nothing is in flight, everything up
    /// to it is released.
    pub fn keepalive(&mut self, wal_end: Lsn) {
        if self.mode != FlushMode::ConnectorAndDriver || !self.is_idle() || wal_end <= self.released
        {
            return;
        }
        self.released = wal_end;
        self.released_transaction = None;
        if !self.durable {
            self.publish(wal_end);
        }
    }

    /// Writes what was released since the last record to a durable store,
    /// then confirms it: [`Self::start_record`], the write, and
    /// [`Self::finish_record`] in one. Returns the newly confirmed position,
    /// if it moved. A failed write confirms nothing. Must not be called
    /// while a [`RecordWrite`] is out.
    pub async fn record(&mut self) -> Result<Option<Lsn>, StoreError> {
        debug_assert!(self.store.is_some(), "no record write is out");
        match self.start_record() {
            Some(write) => self.finish_record(write.write().await),
            None => Ok(None),
        }
    }

    /// The record of what was released since the last one, with the store
    /// lent to write it; `None` when there is nothing to write (a memory
    /// store, nothing new) or a write is already out.
    pub fn start_record(&mut self) -> Option<RecordWrite> {
        if !self.durable || (self.released == self.recorded && !self.progress_unrecorded) {
            return None;
        }
        let store = self.store.take()?;
        let mut record = OffsetRecord::new(
            self.slot.clone(),
            self.released,
            self.server.system_id,
            self.server.timeline,
        )
        .with_snapshot(self.progress.clone())
        .with_backfills(self.backfills.clone());
        if let Some(t) = self.released_transaction {
            record = record.with_transaction(t.xid, t.commit_lsn, t.commit_time);
        }
        // Progress released from now on sets it again; a failed write
        // restores it.
        self.progress_unrecorded = false;
        Some(RecordWrite {
            store,
            record,
            upto: self.released,
            switches: self.switches,
        })
    }

    /// Takes the store back from a finished write and, if it succeeded,
    /// confirms what it recorded. A write made before a timeline switch
    /// moves nothing: the switch reset the positions, and its own record
    /// comes next.
    pub fn finish_record(&mut self, written: RecordWritten) -> Result<Option<Lsn>, StoreError> {
        let RecordWritten {
            store,
            upto,
            switches,
            result,
        } = written;
        debug_assert!(self.store.is_none(), "one record write is out at a time");
        self.store = Some(store);
        let before = self.confirmed;
        if let Err(e) = result {
            self.progress_unrecorded = true;
            return Err(e);
        }
        if switches != self.switches {
            self.progress_unrecorded = true;
            return Ok(None);
        }
        debug_assert!(upto >= self.recorded, "records only move forward");
        self.recorded = upto;
        self.publish(self.recorded);
        Ok((self.confirmed > before).then_some(self.confirmed))
    }

    /// Confirms `lsn` to the reader (unless the flush mode is `manual`).
    fn publish(&mut self, lsn: Lsn) {
        if lsn <= self.confirmed {
            return;
        }
        debug_assert!(
            !self.durable || lsn <= self.recorded,
            "nothing is confirmed before it is recorded"
        );
        self.confirmed = lsn;
        if self.mode != FlushMode::Manual {
            self.flushed
                .send_replace(self.cap.map_or(lsn, |cap| lsn.min(cap)));
        }
    }

    /// Whether no ticket is out and no transaction partly handed on.
    pub fn is_idle(&self) -> bool {
        !self.receiving && self.pending.is_empty()
    }

    /// Tickets out.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The newest position released (stored in JetStream, maybe not yet
    /// recorded).
    pub fn released(&self) -> Lsn {
        self.released
    }

    /// The newest position confirmed (recorded, and reported to the
    /// server unless the flush mode is `manual`).
    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    /// The backfills' state as of the released position.
    pub fn backfills(&self) -> &[BackfillProgress] {
        &self.backfills
    }

    /// The source followed a promotion to `timeline`: records written from
    /// now on carry it (the timeline decision has checked that everything
    /// released lies on the new timeline's history).
    pub fn set_timeline(&mut self, timeline: u32) {
        self.server.timeline = timeline;
    }
}

#[cfg(test)]
mod tests;
