//! `sluice run`: one pipeline from PostgreSQL through the plugin chain to
//! JetStream, with the slot confirmed only for what JetStream stored.
//!
//! [`run`] is three phases, each in its own module, read left to right
//! along the data path:
//!
//! ```text
//!  start ─▶ source loop ──work──▶ plugin thread ──▶ publisher ──▶ JetStream
//!             │  ▲                 (chain)                          │
//!             │  └──── tickets ◀── completion task ◀── completions ─┘
//!             ▼
//!         confirmer ──offset──▶ store;  ──flush LSN──▶ replication reader
//! ```
//!
//! 1. [`super::start`]: the metrics endpoint, NATS, the offset store, the
//!    plugins, then PostgreSQL: one setup check, one replication session,
//!    the start-up decision and the snapshot.
//! 2. [`super::stages`]: the plugin thread, the publisher and the
//!    completion task, each ending when its input ends.
//! 3. [`super::source_loop`]: reads the stream (and a snapshot), feeds the
//!    stages, takes their tickets back into the [`Confirmer`], and drains.
//!
//! Then shutdown: the stages are joined, heartbeats stop, and the
//! replication session ends with a last standby status carrying what the
//! confirmer confirmed. The invariants of the data path live with their
//! owners: what may be confirmed in [`crate::position::confirm`], order and
//! backpressure in [`super::stages`], phases and the drain in
//! [`super::source_loop`], feeding order in [`super::feed`].

use tokio_util::sync::CancellationToken;

use super::chain::ChainError;
use super::feed::Feeder;
use super::ghost::GhostMarker;
use super::heartbeat;
use super::reload::Baseline;
use super::source_loop::{LoopSettings, SourceLoop};
use super::stages::{ChainSettings, Stages};
use super::start::{self, Started};
use crate::config::{GhostChanges, Manifest, SnapshotMode};
use crate::metrics;
use crate::plugin::PluginError;
use crate::position::startup;
use crate::position::{Confirmer, ConfirmerSettings, StoreError};
use crate::publish::{self, Publisher, PublisherConfig};
use crate::replication::setup;
use crate::snapshot::{Backfills, SnapshotError};
use crate::source::{self, StartPosition};

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Its text names NATS (each `ConnectError` does).
    #[error(transparent)]
    Nats(#[from] publish::ConnectError),
    #[error(transparent)]
    Stream(#[from] publish::StreamError),
    #[error(transparent)]
    Subject(#[from] publish::SubjectError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
    #[error(transparent)]
    Replication(#[from] crate::replication::ReplicationError),
    #[error(transparent)]
    Startup(#[from] startup::StartupError),
    #[error(transparent)]
    Source(Box<source::SourceError>),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("stopped by the error policy: {0}")]
    Chain(#[from] ChainError),
    #[error("publishing failed: {0}")]
    Publish(#[from] publish::PublishError),
    /// A task or thread of the pipeline could not start, or died.
    #[error("{task} failed")]
    Task {
        task: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Metrics(#[from] metrics::ServeError),
    /// Boxed: a snapshot's errors are large, and rare.
    #[error("snapshot failed: {0}")]
    Snapshot(Box<SnapshotError>),
}

impl RunError {
    /// Whether starting again later may succeed: PostgreSQL, NATS or
    /// JetStream could not be reached or did not answer, or no host of the
    /// source was yet what the URL asks for (a failover under way). The
    /// start phase waits out such errors; everything else stops the host.
    pub fn is_transient(&self) -> bool {
        match self {
            RunError::Nats(e) => e.is_transient(),
            RunError::Stream(e) => e.is_transient(),
            RunError::Setup(e) => e.is_transient(),
            RunError::Replication(e) => e.is_transient(),
            RunError::Startup(e) => e.is_transient(),
            RunError::Source(e) => e.is_transient(),
            RunError::Store(e) => e.is_transient(),
            RunError::Subject(_)
            | RunError::Plugin(_)
            | RunError::Chain(_)
            | RunError::Publish(_)
            | RunError::Task { .. }
            | RunError::Metrics(_)
            | RunError::Snapshot(_) => false,
        }
    }
}

impl From<SnapshotError> for RunError {
    fn from(e: SnapshotError) -> Self {
        RunError::Snapshot(Box::new(e))
    }
}

impl From<source::SourceError> for RunError {
    fn from(e: source::SourceError) -> Self {
        // Boxed: the source's errors are large, and rare.
        RunError::Source(Box::new(e))
    }
}

/// Runs the pipeline until `shutdown` is cancelled (then drains and exits
/// cleanly) or a definite error stops it (then drains too, so that what
/// JetStream stored is still confirmed). `baseline` is what
/// [`super::reload::load_watched`] saw when it read `m`: hot reload starts
/// from it.
pub async fn run(
    m: Manifest,
    baseline: Baseline,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let Some(started) = start::start(&m, baseline, &shutdown).await? else {
        return Ok(());
    };
    let Started {
        metrics,
        client,
        filter,
        store,
        plugins,
        sql,
        startup,
        snapshot,
        source,
        guards: _guards,
    } = started;

    let (publisher, completions) = Publisher::new(client, filter, publisher_config(&m));
    metrics.watch_publisher(publisher.monitor());
    let chain = ChainSettings {
        pipeline: m.pipeline.as_str().to_owned(),
        policy: m.errors.clone(),
        allowed: m.nats.subjects.clone(),
        metrics: metrics.clone(),
        metadata_headers: m.nats.metadata_headers,
    };
    let (stages, ends) = Stages::spawn(plugins, chain, publisher, completions)?;

    // Streaming starts past the stored offset: what it covers is skipped
    // (only up to the switch point when it holds marked ghost changes).
    let skip_through = startup.skip_through();
    let from = startup.start.max(skip_through);
    let (confirmer, flushed) = Confirmer::new(ConfirmerSettings {
        store,
        mode: m.position.flush,
        slot: m.source.slot.clone(),
        server: startup.server.clone(),
        start: from,
        progress: match &snapshot {
            Some(s) => Some(s.progress().clone()),
            None => startup.offset.as_ref().and_then(|o| o.snapshot.clone()),
        },
        backfills: startup
            .offset
            .as_ref()
            .map(|o| o.backfills.clone())
            .unwrap_or_default(),
    });
    let position = StartPosition {
        start: startup.start,
        skip_through,
    };
    let events = source
        .with_switch_gate(confirmer.switched())
        .start(position, flushed)
        .await?;
    tracing::info!(pipeline = %m.pipeline, slot = %m.source.slot, start = %startup.start,
        skip_through = %skip_through, "streaming");
    metrics.watch_server(events.server_wal_end());
    metrics.set_streaming(true);
    metrics.confirmed(from);

    let heartbeat = m.position.heartbeat.clone().map(|h| {
        heartbeat::spawn(
            sql,
            &m.source.conninfo,
            h.interval,
            h.sql,
            shutdown.child_token(),
        )
    });
    let marker = match &m.source.on_ghost_changes {
        GhostChanges::Mark { subject } => Some(GhostMarker {
            pipeline: m.pipeline.as_str().to_owned(),
            slot: m.source.slot.clone(),
            subject: subject.clone(),
        }),
        GhostChanges::Refuse => None,
    };
    let mut feeder = Feeder::new(
        metrics.clone(),
        backfills(&m, confirmer.backfills()),
        startup.timelines.clone(),
        marker,
    );
    feeder.resume_backfills().await;
    let settings = LoopSettings {
        record_every: m.position.status_interval,
        shutdown_timeout: m.shutdown_timeout,
        initial_only: m.source.snapshot == SnapshotMode::InitialOnly,
        start: startup.start,
        metrics,
    };
    let ghosts = startup.decision.ghosts;
    let finished = SourceLoop::new(events, confirmer, feeder, ends, snapshot, ghosts, settings)
        .run(&shutdown)
        .await;

    // Shutdown: the stages have ended (unless the drain timed out), the
    // confirmer has recorded what they stored; the session's last standby
    // status reports it.
    let stages_failed = if finished.drained {
        stages.join().await
    } else {
        None
    };
    if let Some(h) = heartbeat {
        h.abort();
    }
    let stopped = finished.events.stop().await;
    finished.outcome?;
    if let Some(e) = stages_failed {
        return Err(e);
    }
    stopped?;
    tracing::info!(flushed = %finished.confirmer.confirmed(), "stopped");
    Ok(())
}

/// The publisher's window and stream from the manifest's `[nats]`.
fn publisher_config(m: &Manifest) -> PublisherConfig {
    PublisherConfig {
        max_in_flight: m.nats.max_in_flight,
        max_in_flight_bytes: usize::try_from(m.nats.max_in_flight_bytes).unwrap_or(usize::MAX),
        stream: Some(m.nats.stream.name.clone()),
        ..PublisherConfig::default()
    }
}

/// Backfills asked for in the stream, resuming `state`.
fn backfills(m: &Manifest, state: &[crate::position::BackfillProgress]) -> Backfills {
    Backfills::new(
        m.pipeline.as_str(),
        m.source.conninfo.clone(),
        m.source.publication.as_str(),
        m.snapshot.chunk_rows,
        m.batch.max_events,
        state.to_vec(),
    )
}
