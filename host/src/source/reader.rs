//! The reader task: owns the replication stream, decodes and batches it,
//! and feeds the consumer's bounded channel; reconnects after a transient
//! failure (see the parent module for the guarantees).
//!
//! Invariant: while the task waits for room in the channel it keeps the
//! walsender alive with standby status updates, and it always honours a
//! stop request, also while waiting. `delivered` only moves forward: it is
//! the position of the newest transaction (or non-transactional message)
//! whose end the consumer received, and what the replay after a reconnect
//! is filtered against.
//!
//! Positions of transactions and messages. A transaction's `commit_lsn` is
//! where its commit record starts; a non-transactional message's LSN (what
//! pgoutput sends, and the batcher uses as its `commit_lsn`) is where its
//! record *ends*, which can be exactly where the next transaction's commit
//! record starts. So a position is (LSN, kind) with a message ordered
//! before a transaction at the same LSN ([`Position`]).
//!
//! Failover. A reconnect walks the source URL's host list
//! (`ReplicationConnection::connect`), so it reaches a promoted standby.
//! When that server is on another timeline, `check_timeline` decides with
//! the end LSN of the newest transaction delivered (`delivered_end`: the
//! consumer publishes everything delivered, so that is what the stream will
//! hold): at or below the switch point, with the slot there, streaming
//! continues and the new timeline is published through [`ServerTimeline`]
//! for the offset records; otherwise the reader stops with the refusal.
//! A session on a standby is not broken by that standby's promotion: the
//! reader watches for it (`promotion`) and takes the new timeline from
//! the server it was decoding from.
//! A transaction cut off half-way counts as streamed past its commit LSN.
//!
//! Ghost changes accepted (`source.on-ghost-changes = "mark"`): the reader
//! delivers [`SourceEvent::Ghosts`] before it starts the new session,
//! waits for the switch gate (the consumer has stored the marker, and
//! reports nothing above the switch point as flushed any more), and only
//! then runs `START_REPLICATION` at the switch point. From there it skips
//! replays only up to the switch point: `delivered` is forgotten, because
//! the new timeline's transactions reuse the ghosts' LSNs.

use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

use super::{
    AbandonedTransaction, Restarted, ServerTimeline, ServerWalEnd, SourceError, SourceEvent,
    SourceOptions, StartPosition,
};
use crate::config::SourceSettings;
use crate::lsn::Lsn;
use crate::pgoutput::Batcher;
use crate::position::startup::{TimelineChange, TimelineInputs, check_timeline, slot_from_json};
use crate::replication::{
    Backoff, ReplicationConnection, ReplicationError, ReplicationEvent, ReplicationStream,
    StreamOptions, SystemIdentity, TimelineSwitch, quote_literal,
};

type Events = mpsc::Sender<Result<SourceEvent, SourceError>>;

/// Where a transaction or non-transactional message is in the stream:
/// ordered by LSN, a message before a transaction at the same LSN (see the
/// module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    lsn: Lsn,
    transaction: bool,
}

impl Position {
    /// xid 0 marks a non-transactional message.
    fn of(commit_lsn: Lsn, xid: u32) -> Self {
        Position {
            lsn: commit_lsn,
            transaction: xid != 0,
        }
    }
}

/// A new session, ready to stream.
struct Opened {
    stream: ReplicationStream,
    identity: SystemIdentity,
    /// After a promotion, the new timeline's history.
    history: Option<Arc<[TimelineSwitch]>>,
    /// Where `START_REPLICATION` started.
    resumed_at: Lsn,
}

/// Why delivering an event ended the session.
enum Halt {
    /// Stop requested or the consumer went away.
    Stop,
    Failed(SourceError),
}

/// How a session ended.
enum Exit {
    /// Stop requested or the consumer went away; the session was ended
    /// cleanly (with this result).
    Stopped(Result<(), SourceError>),
    /// The session failed; the stream is gone.
    Failed(SourceError),
}

pub(super) struct Reader {
    settings: SourceSettings,
    temporary: bool,
    options: SourceOptions,
    identity: SystemIdentity,
    position: StartPosition,
    /// The newest transaction or message whose end was delivered.
    delivered: Option<Position>,
    /// The end LSN of the newest transaction delivered (what a promoted
    /// server must have for the stream to hold no ghost changes).
    delivered_end: Lsn,
    /// Replayed transactions skipped since the last one delivered.
    replayed: u64,
    /// A transaction with batches delivered but not its end.
    open: Option<AbandonedTransaction>,
    flushed: watch::Receiver<Lsn>,
    events: Events,
    stop: watch::Receiver<bool>,
    backoff: Backoff,
    /// The server's WAL end, for lag metrics.
    wal_end: ServerWalEnd,
    /// The server's timeline, for the offset records.
    timeline: ServerTimeline,
    /// Announces the consumer's switch to a new timeline after ghost
    /// changes (see the module documentation); `None`: do not wait.
    switch_gate: Option<watch::Receiver<u32>>,
}

impl Reader {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        settings: SourceSettings,
        temporary: bool,
        options: SourceOptions,
        identity: SystemIdentity,
        position: StartPosition,
        flushed: watch::Receiver<Lsn>,
        events: Events,
        stop: watch::Receiver<bool>,
        wal_end: ServerWalEnd,
        timeline: ServerTimeline,
        switch_gate: Option<watch::Receiver<u32>>,
    ) -> Self {
        let backoff = options
            .backoff
            .clone()
            .for_hosts(settings.conninfo.hosts.len());
        Reader {
            settings,
            temporary,
            options,
            identity,
            position,
            delivered: None,
            delivered_end: Lsn::ZERO,
            replayed: 0,
            open: None,
            flushed,
            events,
            stop,
            backoff,
            wal_end,
            timeline,
            switch_gate,
        }
    }

    /// Streams until stopped or a definite error, which is delivered to the
    /// consumer; returns how the final clean shutdown went.
    pub(super) async fn run(mut self, mut stream: ReplicationStream) -> Result<(), SourceError> {
        loop {
            let error = match self.session(stream).await {
                Exit::Stopped(result) => return result,
                Exit::Failed(e) => e,
            };
            if !error.is_transient() {
                self.fail(error).await;
                return Ok(());
            }
            if self.temporary {
                let slot = self.settings.slot.clone();
                self.fail(SourceError::TemporarySlotLost {
                    slot,
                    source: Box::new(error),
                })
                .await;
                return Ok(());
            }
            tracing::warn!(
                slot = %self.settings.slot,
                error = %crate::causes::line(&error),
                "replication connection lost; reconnecting"
            );
            stream = match self.reconnect().await {
                Ok(Some(s)) => s,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.fail(e).await;
                    return Ok(());
                }
            };
        }
    }

    /// Reconnects with backoff until it succeeds, a definite error occurs,
    /// or a stop is requested (`None`). Announces the restart. A failed
    /// attempt is logged as a warning when its reason differs from the
    /// previous one, else at debug: an outage is one line, not one per try.
    async fn reconnect(&mut self) -> Result<Option<ReplicationStream>, SourceError> {
        let mut failures = crate::causes::Repeats::default();
        loop {
            let delay = self.backoff.next_delay();
            tokio::select! {
                biased;
                () = stop_requested(&mut self.stop) => return Ok(None),
                () = tokio::time::sleep(delay) => {}
            }
            let resumed_at = self.position.start.max(*self.flushed.borrow());
            // Connecting can take long (a server that does not answer):
            // a stop request must not wait for it.
            let mut stop = self.stop.clone();
            let opened = tokio::select! {
                biased;
                () = stop_requested(&mut stop) => return Ok(None),
                opened = self.open_stream(resumed_at) => opened,
            };
            match opened {
                Ok(Opened {
                    mut stream,
                    identity,
                    history,
                    resumed_at,
                }) => {
                    if identity.timeline != self.identity.timeline {
                        self.identity.timeline = identity.timeline;
                        self.timeline.set(identity.timeline);
                    }
                    let restarted = Restarted {
                        abandoned: self.open,
                        resumed_at,
                        timeline: identity.timeline,
                        history,
                    };
                    tracing::info!(
                        slot = %self.settings.slot,
                        resumed_at = %resumed_at,
                        abandoned_xid = ?restarted.abandoned.map(|a| a.xid),
                        "replication connection restored"
                    );
                    return match self
                        .deliver(&mut stream, SourceEvent::Restarted(restarted))
                        .await
                    {
                        Ok(()) => {
                            self.open = None;
                            Ok(Some(stream))
                        }
                        Err(halt) => match self.halt(stream, halt).await {
                            Exit::Stopped(result) => result.map(|()| None),
                            Exit::Failed(e) if e.is_transient() => continue,
                            Exit::Failed(e) => Err(e),
                        },
                    };
                }
                Err(e) if e.is_transient() => {
                    let reason = crate::causes::line(&e);
                    if failures.is_new(&reason) {
                        tracing::warn!(slot = %self.settings.slot, error = %reason, "reconnecting failed; trying again until it works");
                    } else {
                        tracing::debug!(slot = %self.settings.slot, error = %reason, "reconnecting failed again");
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Connects, checks that the server is the same cluster, follows a
    /// promotion (marking ghost changes when allowed), and starts streaming
    /// at `start` (at the switch point after ghost changes).
    async fn open_stream(&mut self, start: Lsn) -> Result<Opened, SourceError> {
        let slot = self.settings.slot.clone();
        let (mut conn, identity) = super::open_session(&self.settings.conninfo, &slot).await?;
        if identity.system_id != self.identity.system_id {
            return Err(SourceError::ServerChanged {
                slot,
                expected: self.identity.system_id,
                found: identity.system_id,
            });
        }
        let mut start = start;
        let mut history = None;
        if identity.timeline != self.identity.timeline
            && let Some((change, read)) = self.check_promotion(&mut conn, &identity).await?
        {
            history = read.map(Arc::from);
            if change.ghost_end.is_some() {
                self.follow_ghosts(change).await;
                start = change.switch_point;
            }
        }
        let stream = conn
            .start_replication(
                &slot,
                start,
                &super::pgoutput_options(&self.settings),
                StreamOptions {
                    status_interval: self.options.status_interval,
                    flushed: Some(self.flushed.clone()),
                },
            )
            .await
            .map_err(SourceError::replication(&slot, "START_REPLICATION failed"))?;
        Ok(Opened {
            stream,
            identity,
            history,
            resumed_at: start,
        })
    }

    /// Ghost changes accepted: hands the range to the consumer, waits until
    /// it switched to the new timeline, and forgets what was delivered
    /// above the switch point (see the module documentation). Never
    /// returns once the consumer is gone: the caller's stop request ends it.
    async fn follow_ghosts(&mut self, change: TimelineChange) {
        let end = change.ghost_end.unwrap_or(change.switch_point);
        tracing::warn!(
            slot = %self.settings.slot,
            from = change.from,
            to = change.to,
            switch_point = %change.switch_point,
            ghost_end = %end,
            "ghost changes: the server was promoted from timeline {} to {} at {}, and the changes between {} and {end} are in the stream but not on the promoted server; source.on-ghost-changes = \"mark\": marking the range and continuing from {} on the new timeline",
            change.from, change.to, change.switch_point, change.switch_point, change.switch_point
        );
        if self
            .events
            .send(Ok(SourceEvent::Ghosts(change)))
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
        if let Some(gate) = &mut self.switch_gate
            && gate.wait_for(|t| *t >= change.to).await.is_err()
        {
            std::future::pending::<()>().await;
        }
        // A transaction cut off half-way there was a ghost too: it never
        // comes again.
        self.open = None;
        self.delivered = None;
        self.delivered_end = change.switch_point;
        self.position.skip_through = change.switch_point;
        self.position.start = change.switch_point;
    }

    /// The server is on another timeline than before the connection was
    /// lost: continue only if it is a promotion the stream can follow
    /// (`check_timeline`), judged by the newest transaction delivered.
    /// Returns the promotion and the new timeline's history.
    async fn check_promotion(
        &self,
        conn: &mut ReplicationConnection,
        identity: &SystemIdentity,
    ) -> Result<Option<(TimelineChange, Option<Vec<TimelineSwitch>>)>, SourceError> {
        let slot = &self.settings.slot;
        let failed = |during| {
            let slot = slot.clone();
            move |source| SourceError::Replication {
                slot,
                during,
                source,
            }
        };
        let history = if identity.timeline > self.identity.timeline {
            Some(
                conn.timeline_history(identity.timeline)
                    .await
                    .map_err(failed("TIMELINE_HISTORY failed"))?,
            )
        } else {
            None
        };
        let row = conn
            .simple_query(&format!(
                "SELECT to_jsonb(s)::text AS row FROM pg_replication_slots s WHERE slot_name = {}",
                quote_literal(slot.as_str())
            ))
            .await
            .map_err(failed("reading the replication slot failed"))?;
        let state = row
            .get("row")
            .map(|text| slot_from_json(slot, text))
            .transpose()
            .map_err(|e| SourceError::SlotUnreadable {
                slot: slot.clone(),
                reason: e.to_string(),
            })?;
        // A transaction cut off half-way was streamed in part: its end lies
        // past its commit record's start.
        let cut_off = self.open.map_or(Lsn::ZERO, |o| Lsn(o.commit_lsn.0 + 1));
        let streamed = self
            .delivered_end
            .max(self.position.skip_through)
            .max(cut_off);
        let change = check_timeline(&TimelineInputs {
            slot_name: slot,
            from: self.identity.timeline,
            to: identity.timeline,
            history: history.as_deref(),
            streamed_end: (streamed > Lsn::ZERO).then_some(streamed),
            streamed_what: "the newest transaction sluice passed on to the pipeline",
            slot: state.as_ref(),
            mark_ghosts: self.settings.on_ghost_changes.marks(),
        })
        .map_err(|r| SourceError::Failover(Box::new(r)))?;
        if let Some(change) = change
            && change.ghost_end.is_none()
        {
            tracing::warn!(
                slot = %slot,
                from = change.from,
                to = change.to,
                switch_point = %change.switch_point,
                streamed = %streamed,
                "the server was promoted; the slot survived and everything streamed is on the new timeline: continuing"
            );
        }
        Ok(change.map(|c| (c, history)))
    }

    /// The standby this session decodes from was promoted to `timeline`:
    /// the session, its slot and everything it delivered belong to that
    /// server's history, so the stream continues and the offset records
    /// name the new timeline from now on ([`SourceEvent::Promoted`]).
    async fn follow_promotion(
        &mut self,
        stream: &mut ReplicationStream,
        timeline: u32,
    ) -> Result<(), Halt> {
        if timeline <= self.identity.timeline {
            return Ok(());
        }
        tracing::warn!(
            slot = %self.settings.slot,
            from = self.identity.timeline,
            to = timeline,
            "the standby sluice decodes from was promoted; its slot is there and the session streams on"
        );
        self.identity.timeline = timeline;
        self.timeline.set(timeline);
        let history = self.promoted_history(stream, timeline).await;
        self.deliver(stream, SourceEvent::Promoted { timeline, history })
            .await
    }

    /// The promoted standby's timeline history, read on a second walsender
    /// session to the same server (the streaming one cannot take commands):
    /// message ids that name their timeline (`on-ghost-changes = "mark"`)
    /// need it from now on, not only after the next restart. `None`, with a
    /// warning, when it cannot be read; ids then name the new timeline
    /// from the next start.
    async fn promoted_history(
        &self,
        stream: &ReplicationStream,
        timeline: u32,
    ) -> Option<Arc<[TimelineSwitch]>> {
        let read = async {
            let mut conn =
                ReplicationConnection::connect_one(stream.connection().conninfo()).await?;
            let history = conn.timeline_history(timeline).await;
            conn.close().await;
            history
        };
        match read.await {
            Ok(history) => Some(Arc::from(history)),
            Err(e) => {
                tracing::warn!(slot = %self.settings.slot, timeline, error = %crate::causes::line(&e),
                    "cannot read the promoted standby's timeline history");
                None
            }
        }
    }

    /// Hands a definite error to the consumer (if it is still there).
    async fn fail(&mut self, error: SourceError) {
        tracing::error!(slot = %self.settings.slot, error = %crate::causes::line(&error), "replication source stopped");
        // A consumer that asks to stop instead of reading must not wait
        // for the error to fit in the channel.
        tokio::select! {
            biased;
            () = stop_requested(&mut self.stop) => {}
            _ = self.events.send(Err(error)) => {}
        }
    }

    /// One walsender session: read, decode, batch, deliver.
    async fn session(&mut self, mut stream: ReplicationStream) -> Exit {
        let mut batcher = Batcher::new(self.options.max_events)
            .fill_unchanged_toast(self.settings.changes.fill_unchanged_toast);
        let mut healthy = false;
        // A standby's promotion does not end the session (see `promotion`).
        let mut watching = stream.connection().in_hot_standby() == Some(true);
        let promoted = super::promotion::promoted(
            stream.connection().conninfo().clone(),
            self.options.status_interval,
        );
        tokio::pin!(promoted);
        loop {
            let message = tokio::select! {
                biased;
                () = stop_requested(&mut self.stop) => return self.finish(stream).await,
                timeline = &mut promoted, if watching => {
                    watching = false;
                    if let Err(halt) = self.follow_promotion(&mut stream, timeline).await {
                        return self.halt(stream, halt).await;
                    }
                    continue;
                }
                message = stream.next() => message,
            };
            let message = match message {
                Ok(Some(m)) => m,
                Ok(None) => {
                    return Exit::Failed(SourceError::ServerEnded {
                        slot: self.settings.slot.clone(),
                    });
                }
                Err(source) => return Exit::Failed(self.lost(source)),
            };
            if !healthy {
                // The session streams: the next loss starts the backoff over.
                healthy = true;
                self.backoff.reset();
            }
            match message {
                ReplicationEvent::XLogData {
                    wal_start,
                    wal_end,
                    data,
                    ..
                } => {
                    self.wal_end.advance(wal_end);
                    let out = match batcher.push_bytes(&data, wal_start) {
                        Ok(out) => out,
                        Err(source) => {
                            // The stream is fine, the data is not: end the
                            // session politely, then report.
                            let _ = stream.shutdown().await;
                            return Exit::Failed(SourceError::Decode {
                                slot: self.settings.slot.clone(),
                                lsn: wal_start,
                                source,
                            });
                        }
                    };
                    if let Some(batch) = out.batch
                        && !self.skipped(batch.commit_lsn, batch.xid)
                    {
                        let open = (!batch.last).then_some(AbandonedTransaction {
                            xid: batch.xid,
                            commit_lsn: batch.commit_lsn,
                        });
                        if let Err(halt) =
                            self.deliver(&mut stream, SourceEvent::Batch(batch)).await
                        {
                            return self.halt(stream, halt).await;
                        }
                        self.open = open;
                    }
                    if let Some(end) = out.end
                        && self.skipped(end.commit_lsn, end.xid)
                    {
                        self.replayed += 1;
                    } else if let Some(end) = out.end {
                        if self.replayed > 0 {
                            tracing::info!(slot = %self.settings.slot, transactions = self.replayed,
                                "skipped transactions the server replayed (already streamed)");
                            self.replayed = 0;
                        }
                        if let Err(halt) = self
                            .deliver(&mut stream, SourceEvent::TransactionEnd(end))
                            .await
                        {
                            return self.halt(stream, halt).await;
                        }
                        let position = Position::of(end.commit_lsn, end.xid);
                        debug_assert!(self.delivered < Some(position));
                        self.delivered = Some(position);
                        self.delivered_end = self.delivered_end.max(end.end_lsn);
                        self.open = None;
                    }
                }
                ReplicationEvent::Keepalive { wal_end, .. } => {
                    self.wal_end.advance(wal_end);
                    // A keepalive is a hint that a newer one replaces: when
                    // the consumer is behind, drop it rather than wait.
                    if !batcher.in_transaction()
                        && let Err(TrySendError::Closed(_)) =
                            self.events.try_send(Ok(SourceEvent::Keepalive { wal_end }))
                    {
                        return self.finish(stream).await;
                    }
                }
            }
        }
    }

    /// Whether the transaction (or non-transactional message, xid 0) with
    /// this commit LSN was delivered before a reconnect or is at or before
    /// the stored offset; see the parent module.
    fn skipped(&self, commit_lsn: Lsn, xid: u32) -> bool {
        skips(self.delivered, self.position.skip_through, commit_lsn, xid)
    }

    /// Sends one event, keeping the walsender alive while the channel is
    /// full. `Err` ends the session.
    async fn deliver(
        &mut self,
        stream: &mut ReplicationStream,
        event: SourceEvent,
    ) -> Result<(), Halt> {
        let event = match self.events.try_send(Ok(event)) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(Halt::Stop),
            Err(TrySendError::Full(event)) => event,
        };
        let mut ticker = tokio::time::interval(self.options.status_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the stream sent a status recently
        // enough (it does so on every `next` once the interval has passed).
        ticker.tick().await;
        loop {
            tokio::select! {
                biased;
                () = stop_requested(&mut self.stop) => return Err(Halt::Stop),
                permit = self.events.reserve() => {
                    return match permit {
                        Ok(permit) => {
                            permit.send(event);
                            Ok(())
                        }
                        Err(_) => Err(Halt::Stop),
                    };
                }
                _ = ticker.tick() => {
                    if let Err(source) = stream.send_status(false).await {
                        return Err(Halt::Failed(self.lost(source)));
                    }
                }
            }
        }
    }

    /// Ends a session cleanly: final status update, CopyDone, close.
    async fn finish(&self, stream: ReplicationStream) -> Exit {
        tracing::debug!(slot = %self.settings.slot, "stopping the replication stream");
        Exit::Stopped(
            stream
                .shutdown()
                .await
                .map_err(|source| SourceError::Replication {
                    slot: self.settings.slot.clone(),
                    during: "ending the replication stream failed",
                    source,
                }),
        )
    }

    /// Turns a failed delivery into the session's end.
    async fn halt(&self, stream: ReplicationStream, halt: Halt) -> Exit {
        match halt {
            Halt::Stop => self.finish(stream).await,
            Halt::Failed(e) => Exit::Failed(e),
        }
    }

    fn lost(&self, source: ReplicationError) -> SourceError {
        SourceError::Replication {
            slot: self.settings.slot.clone(),
            during: "streaming failed",
            source,
        }
    }
}

/// The skip rule: at or before what was delivered in this run, or stored
/// (`skip_through`, a commit end LSN or a message's LSN).
fn skips(delivered: Option<Position>, skip_through: Lsn, commit_lsn: Lsn, xid: u32) -> bool {
    let stored = if xid == 0 {
        // A message's LSN is its record's end: its own offset.
        commit_lsn <= skip_through
    } else {
        // The commit record starts before the offset: it ends at or before.
        commit_lsn < skip_through
    };
    Some(Position::of(commit_lsn, xid)) <= delivered || stored
}

/// Resolves once a stop is requested, or when the [`SourceStream`]
/// (holding the sender) is gone.
///
/// [`SourceStream`]: super::SourceStream
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: that is a stop request too.
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_and_the_transaction_right_after_it_are_told_apart() {
        // pgoutput gives a non-transactional message the LSN where its
        // record ends, which is where the next commit record may start.
        let message = Position::of(Lsn(100), 0);
        assert!(
            skips(Some(message), Lsn::ZERO, Lsn(100), 0),
            "replayed message"
        );
        assert!(
            !skips(Some(message), Lsn::ZERO, Lsn(100), 7),
            "next transaction"
        );
        let txn = Position::of(Lsn(100), 7);
        assert!(
            skips(Some(txn), Lsn::ZERO, Lsn(100), 7),
            "replayed transaction"
        );
        assert!(
            skips(Some(txn), Lsn::ZERO, Lsn(100), 0),
            "the message before it"
        );
        assert!(skips(Some(txn), Lsn::ZERO, Lsn(50), 3));
        assert!(!skips(Some(txn), Lsn::ZERO, Lsn(150), 0));
        assert!(
            !skips(None, Lsn::ZERO, Lsn(1), 1),
            "nothing delivered or stored"
        );
    }

    #[test]
    fn after_marked_ghosts_only_the_switch_point_skips() {
        // Ghosts delivered up to the transaction committed at 0/3600; the
        // promotion's switch point is 0/3500. The new timeline's
        // transactions at 0/3500..0/3600 reuse the ghosts' LSNs: had the
        // reader kept what it delivered, it would skip them.
        let ghost = Position::of(Lsn(0x3600), 9);
        assert!(skips(Some(ghost), Lsn::ZERO, Lsn(0x3580), 9));
        // What `follow_ghosts` leaves: nothing delivered, skip through the
        // switch point.
        let switch_point = Lsn(0x3500);
        for lsn in [0x3500, 0x3580, 0x3600] {
            assert!(!skips(None, switch_point, Lsn(lsn), 9), "{lsn:#x}");
        }
        assert!(!skips(None, switch_point, Lsn(0x3508), 0));
        // The common history's replays are still skipped.
        assert!(skips(None, switch_point, Lsn(0x34F0), 9));
        assert!(skips(None, switch_point, Lsn(0x3500), 0));
    }

    #[test]
    fn a_stored_offset_skips_what_ended_at_or_before_it() {
        // Offset 100: a transaction whose commit record started before it
        // ended at or before it; one starting at 100 is new.
        assert!(skips(None, Lsn(100), Lsn(99), 5));
        assert!(!skips(None, Lsn(100), Lsn(100), 5));
        // A message's LSN is its offset.
        assert!(skips(None, Lsn(100), Lsn(100), 0));
        assert!(!skips(None, Lsn(100), Lsn(101), 0));
    }
}
