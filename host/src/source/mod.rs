//! The replication source: everything between the manifest's `[source]`
//! section and a stream of decoded batches, shared by the pipeline and
//! `sluice tail`.
//!
//! Dataflow: [`prepare`] runs the setup checks, opens the walsender
//! session, identifies the server (`IDENTIFY_SYSTEM`: system identifier and
//! timeline, kept for the offset record) and creates the slot when it is
//! missing and allowed — or a TEMPORARY slot, which lives exactly as long as
//! the session. The caller, now knowing the slot's position
//! ([`SlotState`]), decides where to start and calls
//! [`PreparedSource::start`]: `START_REPLICATION` with pgoutput protocol 2
//! and logical messages, after which a reader task decodes and batches the
//! stream and hands [`SourceEvent`]s to the consumer through a bounded
//! channel ([`SourceStream`]).
//!
//! Invariants and the reasons for them:
//!
//! - **The walsender stays alive under backpressure.** The reader task, not
//!   the consumer, owns the connection. While the channel is full it keeps
//!   sending standby status updates every `status_interval`, so a slow
//!   consumer never lets `wal_sender_timeout` expire. The flush LSN those
//!   updates report comes from the consumer's `watch` channel and nowhere
//!   else: the source never confirms anything by itself.
//! - **Transient connection loss is invisible except for one event.** The
//!   reader reconnects with [`Backoff`] (at most 2 s apart over a
//!   multi-host list, where a failover is the usual cause) and runs
//!   `START_REPLICATION` at
//!   `max(start, flushed)`; the server resumes at that position or at the
//!   slot's `confirmed_flush_lsn`, whichever is later, so it may re-send
//!   transactions the consumer already has. Before anything from the new
//!   session, the consumer gets [`SourceEvent::Restarted`]. If a
//!   transaction was cut off half-way ([`Restarted::abandoned`]), the
//!   consumer must discard the batches it holds of it: the transaction is
//!   sent again from its start, its first batch again with `first` set.
//!   Transactions whose [`TransactionEnd`] was already delivered are
//!   skipped on the replay, so nothing is delivered twice and nothing is
//!   lost. A TEMPORARY slot dies with its session, so with one, connection
//!   loss is a definite error ([`SourceError::TemporarySlotLost`]).
//! - **Replays of what is already stored are skipped.**
//!   [`StartPosition::skip_through`] is a stored offset (a commit end LSN):
//!   a transaction is skipped when its commit record ends at or before it,
//!   decided from its commit record's start (`Batch::commit_lsn`), which is
//!   known at `Begin`: for a transaction, "end ≤ offset" is "commit LSN <
//!   offset". A non-transactional message, whose LSN is where its record
//!   ends (and is its offset, see the batcher), is skipped when its LSN is
//!   at or before it.
//! - **Keepalives are only passed on between transactions**, so a consumer
//!   that confirms a keepalive's WAL end (flush mode
//!   `connector-and-driver`) can never confirm past a transaction the
//!   batcher is still holding back.
//! - **Order.** Events arrive in stream order: a transaction's batches,
//!   then its [`TransactionEnd`]; transactions in commit order.
//! - **Ghost changes** (`source.on-ghost-changes = "mark"`). When a
//!   reconnect finds a promoted server that lacks changes already delivered
//!   (see `reader`), the consumer gets [`SourceEvent::Ghosts`] before the
//!   new session streams anything, and the reader waits until the consumer
//!   reports the switch to the new timeline done (the gate given with
//!   [`PreparedSource::with_switch_gate`]: the marker is stored and nothing
//!   above the switch point is reported as flushed). Then it streams from
//!   the switch point, and skips replays only up to it: the new timeline's
//!   transactions above it reuse the ghosts' LSNs and are new.
//!
//! For the position tracker: the first batch of a transaction (`first`)
//! is `transaction_begun`, [`SourceEvent::TransactionEnd`] is
//! `transaction_complete(end_lsn)`, [`SourceEvent::Keepalive`] is
//! `idle_until(wal_end)`.

mod promotion;
mod reader;

use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::SourceSettings;
use crate::lsn::Lsn;
use crate::model::Batch;
use crate::pgoutput::{BatchError, TransactionEnd};
use crate::position::startup::{Refusal, TimelineChange};
use crate::replication::setup::{self, SetupError, SetupSpec};
use crate::replication::{
    Backoff, CreateSlotOptions, PgOutputOptions, ReplicationConnection, ReplicationError, SlotName,
    SnapshotAction, StreamOptions, SystemIdentity, TimelineSwitch, standby,
};

use reader::Reader;

/// How many events the channel between the reader task and the consumer
/// holds by default. Each is at most one batch, so memory stays bounded by
/// `capacity × max_events` events.
const DEFAULT_CAPACITY: usize = 16;

/// Why the source stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The walsender session failed; `during` says at which step.
    #[error("replication slot \"{slot}\": {during}")]
    Replication {
        slot: SlotName,
        during: &'static str,
        #[source]
        source: ReplicationError,
    },
    #[error("cannot decode the pgoutput message at {lsn} on replication slot \"{slot}\"")]
    Decode {
        slot: SlotName,
        lsn: Lsn,
        #[source]
        source: BatchError,
    },
    #[error("the server ended the replication stream on slot \"{slot}\" (is it shutting down?)")]
    ServerEnded { slot: SlotName },
    #[error(
        "after reconnecting, the server's system identifier is {found}, not {expected}: it is another cluster, and the position of slot \"{slot}\" does not apply to it"
    )]
    ServerChanged {
        slot: SlotName,
        expected: u64,
        found: u64,
    },
    #[error(
        "lost the connection holding temporary replication slot \"{slot}\": the slot and its position are gone with it; start again"
    )]
    TemporarySlotLost {
        slot: SlotName,
        #[source]
        source: Box<SourceError>,
    },
    #[error("the replication reader task failed")]
    Task(#[source] tokio::task::JoinError),
    /// After a reconnect to a promoted server: see
    /// `crate::position::startup::check_timeline`.
    #[error(transparent)]
    Failover(Box<Refusal>),
    #[error("after reconnecting, cannot read replication slot \"{slot}\" on the server: {reason}")]
    SlotUnreadable { slot: SlotName, reason: String },
}

impl SourceError {
    /// Whether reconnecting later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Setup(e) => e.is_transient(),
            SourceError::Replication { source, .. } => source.is_transient(),
            SourceError::ServerEnded { .. } => true,
            SourceError::Decode { .. }
            | SourceError::ServerChanged { .. }
            | SourceError::TemporarySlotLost { .. }
            | SourceError::Failover(_)
            | SourceError::SlotUnreadable { .. }
            | SourceError::Task(_) => false,
        }
    }
}

impl SourceError {
    /// A closure for `map_err`: the walsender session of `slot` failed at
    /// the step `during`.
    fn replication(
        slot: &SlotName,
        during: &'static str,
    ) -> impl FnOnce(ReplicationError) -> SourceError {
        let slot = slot.clone();
        move |source| SourceError::Replication {
            slot,
            during,
            source,
        }
    }
}

/// Opens a walsender session for `slot`'s source and identifies the server.
async fn open_session(
    conninfo: &crate::replication::ConnInfo,
    slot: &SlotName,
) -> Result<(ReplicationConnection, SystemIdentity), SourceError> {
    let mut conn =
        ReplicationConnection::connect(conninfo)
            .await
            .map_err(SourceError::replication(
                slot,
                "cannot open the replication connection",
            ))?;
    let identity = conn
        .identify_system()
        .await
        .map_err(SourceError::replication(slot, "IDENTIFY_SYSTEM failed"))?;
    Ok((conn, identity))
}

/// Settings of the source beyond the manifest's `[source]` section.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// `batch.max-events`: the most events one batch holds.
    pub max_events: NonZeroUsize,
    /// How often standby status updates go out (also while the consumer
    /// is not pulling).
    pub status_interval: Duration,
    /// Events buffered between the reader task and the consumer.
    pub capacity: usize,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
}

impl SourceOptions {
    pub fn new(max_events: NonZeroUsize) -> Self {
        SourceOptions {
            max_events,
            status_interval: Duration::from_secs(1),
            capacity: DEFAULT_CAPACITY,
            backoff: Backoff::default(),
        }
    }
}

/// Which slot the source reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// The manifest's slot, created when missing if `create_slot` allows.
    Durable,
    /// A new TEMPORARY slot of that name, dropped by the server when the
    /// session ends; never a durable slot's position.
    Temporary,
}

/// Where streaming starts, decided by the caller from the slot's state and
/// its stored offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartPosition {
    /// `START_REPLICATION`'s LSN; `0/0` resumes at the slot's
    /// `confirmed_flush_lsn` (as does any LSN before it).
    pub start: Lsn,
    /// Skip transactions whose commit end LSN is at or before this (a
    /// stored offset); `0/0` skips nothing.
    pub skip_through: Lsn,
}

impl StartPosition {
    /// Resume where the slot says, skip nothing.
    pub const SLOT: StartPosition = StartPosition {
        start: Lsn::ZERO,
        skip_through: Lsn::ZERO,
    };
}

/// The slot as found (or made) by [`prepare`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    pub name: SlotName,
    pub temporary: bool,
    /// [`prepare`] created it.
    pub created: bool,
    /// `confirmed_flush_lsn` (for a slot just created: its consistent
    /// point, where streaming will begin).
    pub confirmed_flush_lsn: Option<Lsn>,
    pub restart_lsn: Option<Lsn>,
}

/// A walsender session that has passed the setup checks and found (or
/// made) its slot, ready to stream.
#[derive(Debug)]
pub struct PreparedSource {
    conn: ReplicationConnection,
    settings: SourceSettings,
    options: SourceOptions,
    identity: SystemIdentity,
    slot: SlotState,
    switch_gate: Option<watch::Receiver<u32>>,
}

/// pgoutput's options for the manifest's source: its publication and, for
/// `origin = "none"`, the origin filter (which `setup` made sure the server
/// supports).
pub(crate) fn pgoutput_options(settings: &SourceSettings) -> PgOutputOptions {
    PgOutputOptions {
        origin: match settings.changes.origin {
            crate::config::Origin::Any => None,
            origin @ crate::config::Origin::None => Some(origin.as_str()),
        },
        ..PgOutputOptions::new(settings.publication.as_str())
    }
}

/// Checks the server, opens the replication session, identifies the server
/// and finds or creates the slot. Fails fast: nothing here is retried, so a
/// wrong URL or a missing publication is reported at once.
pub async fn prepare(
    settings: &SourceSettings,
    kind: SlotKind,
    options: SourceOptions,
) -> Result<PreparedSource, SourceError> {
    let temporary = kind == SlotKind::Temporary;
    let spec = SetupSpec {
        publication: settings.publication.as_str().to_owned(),
        create_publication: settings.create_publication.clone(),
        slot: settings.slot.clone(),
        create_slot: settings.create_slot || temporary,
        changes: settings.changes,
    };
    let report = setup::check(&settings.conninfo, &spec).await?;
    let (mut conn, identity) = open_session(&settings.conninfo, &settings.slot).await?;
    let slot = match (report.slot, temporary) {
        (Some(existing), false) => SlotState {
            name: settings.slot.clone(),
            temporary: false,
            created: false,
            confirmed_flush_lsn: existing.confirmed_flush_lsn,
            restart_lsn: existing.restart_lsn,
        },
        // The setup checks let a missing slot through only when it may be
        // created; a temporary slot is always new (an existing one of the
        // same name makes the server refuse, which is reported).
        (_, temporary) => {
            let created = standby::create_slot(
                &mut conn,
                &settings.slot,
                CreateSlotOptions {
                    temporary,
                    snapshot: SnapshotAction::Nothing,
                    failover: false,
                },
            )
            .await
            .map_err(SourceError::replication(
                &settings.slot,
                "cannot create the replication slot",
            ))?;
            tracing::info!(
                slot = %settings.slot,
                temporary,
                consistent_point = %created.consistent_point,
                "created replication slot"
            );
            SlotState {
                name: settings.slot.clone(),
                temporary,
                created: true,
                confirmed_flush_lsn: Some(created.consistent_point),
                restart_lsn: None,
            }
        }
    };
    Ok(PreparedSource {
        conn,
        settings: settings.clone(),
        options,
        identity,
        slot,
        switch_gate: None,
    })
}

impl PreparedSource {
    /// A source on a session the caller has already opened, identified
    /// and found or made the slot on: the pipeline's start-up does that
    /// once, for its start-up decision and its snapshot, and streams on
    /// the same session.
    pub fn from_session(
        conn: ReplicationConnection,
        settings: &SourceSettings,
        options: SourceOptions,
        identity: SystemIdentity,
        slot: SlotState,
    ) -> Self {
        PreparedSource {
            conn,
            settings: settings.clone(),
            options,
            identity,
            slot,
            switch_gate: None,
        }
    }

    /// After [`SourceEvent::Ghosts`], the reader waits until `gate` names
    /// the new timeline before it streams it (the consumer's confirmer
    /// announces it, `crate::position::Confirmer::switched`). Without a
    /// gate it does not wait.
    pub fn with_switch_gate(mut self, gate: watch::Receiver<u32>) -> Self {
        self.switch_gate = Some(gate);
        self
    }

    /// The server's identity (`IDENTIFY_SYSTEM`).
    pub fn identity(&self) -> &SystemIdentity {
        &self.identity
    }

    /// The slot as found or created.
    pub fn slot(&self) -> &SlotState {
        &self.slot
    }

    /// Starts streaming at `position`; standby status updates report the
    /// flush LSN last published on `flushed` (`0/0`: confirm nothing).
    pub async fn start(
        self,
        position: StartPosition,
        flushed: watch::Receiver<Lsn>,
    ) -> Result<SourceStream, SourceError> {
        let PreparedSource {
            conn,
            settings,
            options,
            identity,
            slot,
            switch_gate,
        } = self;
        let start = position.start.max(*flushed.borrow());
        let stream = conn
            .start_replication(
                &settings.slot,
                start,
                &pgoutput_options(&settings),
                StreamOptions {
                    status_interval: options.status_interval,
                    flushed: Some(flushed.clone()),
                },
            )
            .await
            .map_err(|source| SourceError::Replication {
                slot: settings.slot.clone(),
                during: "START_REPLICATION failed",
                source,
            })?;
        let (events_tx, events) = mpsc::channel(options.capacity.max(1));
        let wal_end = ServerWalEnd::default();
        let timeline = ServerTimeline::new(identity.timeline);
        let (stop, stop_rx) = watch::channel(false);
        let reader = Reader::new(
            settings,
            slot.temporary,
            options,
            identity.clone(),
            position,
            flushed,
            events_tx,
            stop_rx,
            wal_end.clone(),
            timeline.clone(),
            switch_gate,
        );
        let task = tokio::spawn(reader.run(stream));
        Ok(SourceStream {
            events,
            stop,
            task: Some(task),
            identity,
            slot,
            wal_end,
            timeline,
        })
    }
}

/// What the source yields.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceEvent {
    /// Consecutive events of one transaction (see [`Batch`]).
    Batch(Batch),
    /// The transaction whose batches came before has been read completely.
    /// Comes for every transaction, also one that produced no batch.
    TransactionEnd(TransactionEnd),
    /// The server has sent everything before `wal_end`, and no
    /// transaction is open: see the module documentation.
    Keepalive { wal_end: Lsn },
    /// The connection was lost and is open again; see [`Restarted`].
    Restarted(Restarted),
    /// The standby the session decodes from was promoted to `timeline`;
    /// the session streams on (nothing is replayed), and positions from
    /// here on are on that timeline.
    /// `history` is that timeline's history, when it could be read.
    Promoted {
        timeline: u32,
        history: Option<Arc<[TimelineSwitch]>>,
    },
    /// The connection was lost, and the server found again was promoted
    /// past changes already delivered (the range from the switch point to
    /// [`TimelineChange::ghost_end`]), accepted with
    /// `source.on-ghost-changes = "mark"`. Comes before the new session
    /// streams anything; see the module documentation.
    Ghosts(TimelineChange),
}

/// The source reconnected after losing its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restarted {
    /// A transaction some of whose batches were delivered, but not its
    /// end: discard them, it comes again from its first batch.
    pub abandoned: Option<AbandonedTransaction>,
    /// The LSN `START_REPLICATION` was given.
    pub resumed_at: Lsn,
    /// The server's timeline now (higher than before after a promotion).
    pub timeline: u32,
    /// After a promotion, the new timeline's history (`TIMELINE_HISTORY`).
    pub history: Option<Arc<[TimelineSwitch]>>,
}

/// See [`Restarted::abandoned`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbandonedTransaction {
    pub xid: u32,
    pub commit_lsn: Lsn,
}

/// The decoded replication stream; see the module documentation.
///
/// Dropping it stops the reader task, which ends the session (a temporary
/// slot goes with it) without waiting; [`SourceStream::stop`] does the same
/// and waits for the final status update.
#[derive(Debug)]
pub struct SourceStream {
    events: mpsc::Receiver<Result<SourceEvent, SourceError>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), SourceError>>>,
    identity: SystemIdentity,
    slot: SlotState,
    wal_end: ServerWalEnd,
    timeline: ServerTimeline,
}

/// The server's timeline, shared with whoever writes offset records: it
/// changes when the reader follows a promotion (see
/// `crate::position::startup::check_timeline`). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ServerTimeline(Arc<AtomicU32>);

impl ServerTimeline {
    fn new(timeline: u32) -> Self {
        ServerTimeline(Arc::new(AtomicU32::new(timeline)))
    }

    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, timeline: u32) {
        self.0.store(timeline, Ordering::Relaxed);
    }
}

/// The server's WAL end as last reported on the stream (by XLogData or a
/// keepalive), shared with whoever wants to measure lag. Cheap to clone;
/// `0/0` until the server has sent anything. Only moves forward.
#[derive(Clone, Debug, Default)]
pub struct ServerWalEnd(Arc<AtomicU64>);

impl ServerWalEnd {
    pub fn get(&self) -> Lsn {
        Lsn(self.0.load(Ordering::Relaxed))
    }

    fn advance(&self, to: Lsn) {
        self.0.fetch_max(to.0, Ordering::Relaxed);
    }
}

impl SourceStream {
    /// The server's timeline, updated when the reader follows a promotion.
    pub fn server_timeline(&self) -> ServerTimeline {
        self.timeline.clone()
    }

    /// The server's WAL end, updated while streaming.
    pub fn server_wal_end(&self) -> ServerWalEnd {
        self.wal_end.clone()
    }

    /// The next event; `None` after an error was returned or once the
    /// source stopped. An error ends the stream.
    pub async fn next(&mut self) -> Option<Result<SourceEvent, SourceError>> {
        self.events.recv().await
    }

    /// The next event if one is ready now, without waiting: how a consumer
    /// takes everything queued in one go.
    pub fn try_next(&mut self) -> Option<Result<SourceEvent, SourceError>> {
        self.events.try_recv().ok()
    }

    /// The server's identity, as at start.
    pub fn identity(&self) -> &SystemIdentity {
        &self.identity
    }

    pub fn slot(&self) -> &SlotState {
        &self.slot
    }

    /// Ends the session cleanly: a last standby status update with the
    /// current flush LSN, CopyDone, and the connection closed (a temporary
    /// slot is dropped by the server then).
    pub async fn stop(mut self) -> Result<(), SourceError> {
        // The reader may have ended on its own (after an error it already
        // delivered); then there is nobody to tell.
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task.await.map_err(SourceError::Task)?,
            None => Ok(()),
        }
    }
}

impl futures_util::Stream for SourceStream {
    type Item = Result<SourceEvent, SourceError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}
