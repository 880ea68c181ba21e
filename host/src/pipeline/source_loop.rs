//! The source loop: the one task that reads the replication stream and a
//! snapshot's chunks, hands work to the plugin thread, and owns the
//! [`Confirmer`].
//!
//! It moves through three phases:
//!
//! - **snapshot**: a snapshot's chunks are fed at its point (at once when
//!   that is where streaming starts, otherwise in front of the first event
//!   at or past it, which is held back meanwhile; see `crate::snapshot`);
//! - **streaming**: source events are fed;
//! - **draining**: nothing more is read; what the outbox holds is handed on,
//!   then the plugin thread's input is closed, and acknowledgements are
//!   taken until the last stage has ended (bounded by the shutdown timeout).
//!
//! Every way out — a shutdown request, the end of the stream, a definite
//! error anywhere — goes through the drain, and after it through a last
//! [`Confirmer::record`], so that whatever JetStream stored is recorded and
//! confirmed before the session ends.
//!
//! Offset records are written at the status interval by a write the loop
//! drives alongside everything else (`Confirmer::start_record`): a slow
//! store delays confirmation, not reading or taking acknowledgements. One
//! write is out at a time; a tick that finds one out skips.
//!
//! A record that fails because the offset store is momentarily out of reach
//! (a NATS KV bucket whose JetStream does not answer, or whose cluster is
//! electing a leader: [`StoreError::is_transient`]) stops nothing: it
//! confirms nothing, is logged once per reason, and the next status
//! interval tries again, so the slot holds its WAL meanwhile and a
//! one-node failure of a JetStream cluster passes without a restart. Any
//! other store error (another writer, a backwards or corrupt record, a file
//! that cannot be written) stops the pipeline.
//!
//! After a promotion with ghost changes marked, it reads nothing more until
//! the marker's switch ticket is back (`Confirmer::is_switching`): the
//! marker is stored before anything of the new timeline is handed on.
//!
//! The loop never blocks on a stage. It sends to the plugin thread only
//! when the channel has room, and reads more only while its outbox has
//! room, so that backpressure reaches the replication socket, while it
//! always takes returned tickets. Its `select!` is biased, in this order:
//! a shutdown request; returned tickets (they free the window downstream);
//! a finished record write; the record cadence; sending the outbox; the
//! drain deadline; a snapshot chunk; a source event. Reading comes last, so
//! that work already read moves first.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RunError;
use super::feed::{Feeder, Flow, Outbox, feed_chunk, next_chunk, reaches};
use super::stages::{Ends, Work};
use crate::causes::{self, Repeats};
use crate::lsn::Lsn;
use crate::metrics::Metrics;
use crate::position::startup::TimelineChange;
use crate::position::{Confirmer, RecordWritten, StoreError, Ticket};
use crate::snapshot::{Chunk, Injector, Snapshot, SnapshotError};
use crate::source::{SourceError, SourceEvent, SourceStream};

type Event = Option<Result<SourceEvent, SourceError>>;

/// An offset record being written (`Confirmer::start_record`).
struct Writing(Pin<Box<dyn Future<Output = RecordWritten> + Send>>);

impl std::fmt::Debug for Writing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writing")
    }
}

/// See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Snapshot,
    Streaming,
    Draining,
}

/// What the loop needs besides its stages.
#[derive(Debug)]
pub(super) struct LoopSettings {
    /// How often the confirmer records (the status interval).
    pub(super) record_every: Duration,
    /// How long the drain may take.
    pub(super) shutdown_timeout: Duration,
    /// `initial-only`: stop once the snapshot is stored.
    pub(super) initial_only: bool,
    /// Where streaming starts: a snapshot whose point is at or before it
    /// is read at once.
    pub(super) start: crate::lsn::Lsn,
    pub(super) metrics: Arc<Metrics>,
}

/// How the loop ended.
#[derive(Debug)]
pub(super) struct Finished {
    pub(super) events: SourceStream,
    pub(super) confirmer: Confirmer,
    pub(super) outcome: Result<(), RunError>,
    /// Every stage ended within the shutdown timeout.
    pub(super) drained: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub(super) struct SourceLoop {
    phase: Phase,
    events: SourceStream,
    confirmer: Confirmer,
    feeder: Feeder,
    outbox: Outbox,
    work: Option<mpsc::Sender<Vec<Work>>>,
    acks: mpsc::Receiver<Vec<Ticket>>,
    /// A snapshot waiting for the stream to reach its point.
    waiting: Option<Snapshot>,
    injector: Option<Injector>,
    /// The event that reached the snapshot's point, fed after its chunks.
    held: Option<Event>,
    chunks: u64,
    metrics: Arc<Metrics>,
    settings: LoopSettings,
    drain_deadline: Option<Instant>,
    outcome: Result<(), RunError>,
    /// The reason the last record failed, while records fail transiently.
    store_failures: Option<Repeats>,
    /// The record write out, if any.
    writing: Option<Writing>,
}

impl SourceLoop {
    /// A loop starting at `start`, with `snapshot` (if any) due at its
    /// point, and start-up's ghost changes (if any) marked first.
    pub(super) fn new(
        events: SourceStream,
        confirmer: Confirmer,
        feeder: Feeder,
        ends: Ends,
        snapshot: Option<Snapshot>,
        ghosts: Option<TimelineChange>,
        settings: LoopSettings,
    ) -> Self {
        let start = settings.start;
        let mut source_loop = SourceLoop {
            phase: Phase::Streaming,
            events,
            confirmer,
            feeder,
            outbox: Outbox::default(),
            work: Some(ends.work),
            acks: ends.acks,
            waiting: snapshot,
            injector: None,
            held: None,
            chunks: 0,
            metrics: settings.metrics.clone(),
            settings,
            drain_deadline: None,
            outcome: Ok(()),
            store_failures: None,
            writing: None,
        };
        if let Some(change) = ghosts {
            source_loop
                .feeder
                .mark(change, &mut source_loop.outbox, &mut source_loop.confirmer);
        }
        if source_loop
            .waiting
            .as_ref()
            .is_some_and(|s| s.point() <= start)
        {
            source_loop.start_snapshot();
        }
        source_loop
    }

    /// Runs the phases until every stage has ended (or the drain timed
    /// out), then records what was acknowledged.
    pub(super) async fn run(mut self, shutdown: &CancellationToken) -> Finished {
        let mut cadence = tokio::time::interval(self.settings.record_every);
        cadence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drained = true;
        loop {
            let reading = self.phase != Phase::Draining
                && self.outbox.has_room()
                && !self.confirmer.is_switching();
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if self.phase != Phase::Draining => {
                    self.drain("shutting down: draining in-flight publishes");
                }
                acks = self.acks.recv() => match acks {
                    Some(tickets) => self.acknowledged(tickets),
                    // Every stage has ended.
                    None => break,
                },
                written = write_done(&mut self.writing) => {
                    self.writing = None;
                    let outcome = self.confirmer.finish_record(written);
                    self.recorded(outcome, false);
                }
                _ = cadence.tick() => self.start_record(),
                permit = reserve(self.work.clone()), if !self.outbox.is_empty() => match permit {
                    Some(permit) => {
                        permit.send(self.outbox.take());
                    }
                    // The plugin thread has stopped (its error is
                    // reported when the stages are joined).
                    None => self.stop_feeding(),
                },
                () = deadline(self.drain_deadline) => {
                    tracing::warn!(timeout = ?self.settings.shutdown_timeout,
                        "in-flight publishes did not finish in time; they will be replayed and de-duplicated on restart");
                    drained = false;
                    break;
                }
                chunk = next_chunk(&mut self.injector), if reading => self.on_chunk(chunk).await,
                event = self.events.next(), if reading && self.injector.is_none() => {
                    self.on_event(event).await;
                }
            }
            if self.phase == Phase::Draining && self.outbox.is_empty() {
                // Closing the plugin thread's input ends the stages in turn.
                self.work = None;
            }
        }
        self.metrics.set_streaming(false);
        if let Some(writing) = self.writing.take() {
            let outcome = self.confirmer.finish_record(writing.0.await);
            self.recorded(outcome, false);
        }
        let outcome = self.confirmer.record().await;
        self.recorded(outcome, true);
        Finished {
            events: self.events,
            confirmer: self.confirmer,
            outcome: self.outcome,
            drained,
        }
    }

    fn acknowledged(&mut self, tickets: Vec<Ticket>) {
        for ticket in tickets {
            self.confirmer.acknowledged(ticket);
        }
        // With a memory store, acknowledged is confirmed.
        self.metrics.confirmed(self.confirmer.confirmed());
    }

    /// Starts writing what was acknowledged, unless a write is out.
    fn start_record(&mut self) {
        if self.writing.is_none()
            && let Some(write) = self.confirmer.start_record()
        {
            self.writing = Some(Writing(Box::pin(write.write())));
        }
    }

    /// A record write ended; `last` when the session ends with it.
    fn recorded(&mut self, outcome: Result<Option<Lsn>, StoreError>, last: bool) {
        match outcome {
            Ok(confirmed) => {
                if let Some(lsn) = confirmed {
                    self.metrics.confirmed(lsn);
                }
                if self.store_failures.take().is_some() {
                    tracing::info!(confirmed = %self.confirmer.confirmed(),
                        "the offset store answers again; the position is recorded and confirmed");
                }
            }
            Err(e) if e.is_transient() => self.record_failed(&e, last),
            Err(e) => self.fail(e.into()),
        }
    }

    /// A record failed for a reason that may pass: warns when the reason is
    /// new, and leaves the next try to the cadence (or, for the last one, to
    /// the next start, which resumes from the recorded position; JetStream
    /// drops what it already holds).
    fn record_failed(&mut self, error: &StoreError, last: bool) {
        self.metrics.record_failed();
        let reason = causes::line(error);
        let recorded = self.confirmer.confirmed();
        if last {
            tracing::warn!(error = %reason, %recorded,
                "cannot record the last position: the next start resumes from the recorded one, and JetStream drops the messages it already holds");
        } else if self.store_failures.get_or_insert_default().is_new(&reason) {
            tracing::warn!(error = %reason, %recorded,
                "cannot record the position: nothing more is confirmed to the slot until the offset store answers; trying again every status interval");
        } else {
            tracing::debug!(error = %reason, "the offset store still does not answer");
        }
    }

    /// A source event, and every further one that is ready now, while the
    /// outbox has room: a backlog moves in groups.
    async fn on_event(&mut self, first: Event) {
        let mut next = Some(first);
        while let Some(event) = next.take() {
            if let Some(point) = self.waiting.as_ref().map(Snapshot::point)
                && reaches(&event, point)
            {
                self.held = Some(event);
                self.start_snapshot();
                return;
            }
            let flow = self
                .feeder
                .forward(event, &mut self.outbox, &mut self.confirmer)
                .await;
            match flow {
                Flow::Continue => {}
                Flow::Ended => return self.drain("the replication stream ended"),
                Flow::Failed(e) => return self.fail(e.into()),
            }
            if self.outbox.has_room() && !self.confirmer.is_switching() {
                next = self.events.try_next().map(Some);
            }
        }
    }

    async fn on_chunk(&mut self, chunk: Option<Result<Chunk, SnapshotError>>) {
        match chunk {
            Some(Ok(chunk)) => {
                self.chunks += 1;
                feed_chunk(&mut self.outbox, chunk, &mut self.confirmer, &self.metrics);
            }
            Some(Err(e)) => self.fail(e.into()),
            None => {
                self.injector = None;
                tracing::info!(
                    chunks = self.chunks,
                    "snapshot read and handed to the pipeline"
                );
                if self.settings.initial_only {
                    self.drain(
                        "source.snapshot = \"initial-only\": stopping once the snapshot is stored",
                    );
                } else {
                    self.phase = Phase::Streaming;
                    if let Some(event) = self.held.take() {
                        Box::pin(self.on_event(event)).await;
                    }
                }
            }
        }
    }

    fn start_snapshot(&mut self) {
        self.injector = self.waiting.take().map(Snapshot::start);
        self.phase = Phase::Snapshot;
    }

    /// Stops reading; the loop hands on what it holds and waits for the
    /// stages to finish.
    fn drain(&mut self, why: &str) {
        if self.phase == Phase::Draining {
            return;
        }
        tracing::info!("{why}");
        self.phase = Phase::Draining;
        self.injector = None;
        self.drain_deadline = Some(Instant::now() + self.settings.shutdown_timeout);
    }

    /// A definite error: the first one is the outcome; drain.
    fn fail(&mut self, error: RunError) {
        if self.outcome.is_ok() {
            tracing::error!(error = %error, "the pipeline stops");
            self.outcome = Err(error);
        }
        self.drain("draining after the error");
    }

    /// The plugin thread is gone: what the outbox holds cannot be handed
    /// on (it is replayed on the next start).
    fn stop_feeding(&mut self) {
        self.outbox.take();
        self.work = None;
        self.drain("the plugin thread stopped");
    }
}

/// The record write's outcome; never ready without a write out.
async fn write_done(writing: &mut Option<Writing>) -> RecordWritten {
    match writing {
        Some(write) => write.0.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Room for one group in the plugin thread's channel; `None` when the
/// thread is gone. Never ready without a channel. Owned, so that the loop's
/// handlers may use all of its state.
async fn reserve(work: Option<mpsc::Sender<Vec<Work>>>) -> Option<mpsc::OwnedPermit<Vec<Work>>> {
    match work {
        Some(tx) => tx.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// Resolves at `at`; never without one.
async fn deadline(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
