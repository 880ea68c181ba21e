//! `sluice run`: one pipeline from PostgreSQL through the plugin chain to
//! JetStream, with the slot confirmed only for what JetStream stored.
//!
//! Dataflow, each stage a task connected by bounded channels, so that a slow
//! stage holds back the ones before it all the way to the replication
//! socket (the source keeps the walsender alive meanwhile):
//!
//! ```text
//! source ──batches, ends──▶ plugin thread ──messages, ends──▶ publisher
//!   ▲                         (chain, blocking)                    │
//!   │ flushed LSN (watch)                                     completions
//!   └──────────── flusher ◀── tracker ◀── ack queue ◀──────────────┘
//! ```
//!
//! Invariants, and where they are kept:
//!
//! - A transaction is confirmed only after every message of it, and of
//!   every transaction before it, is stored by JetStream ([`AckQueue`],
//!   [`Tracker`]); the offset is written to a durable store before the
//!   slot is told ([`Flusher`]).
//! - Messages leave in event order, transactions in commit order: one plugin
//!   thread, one publisher with in-order completions.
//! - Every message carries a deterministic `Nats-Msg-Id` (pipeline, commit
//!   LSN, xid, event index, output index): a replay after a crash or a
//!   reconnect is de-duplicated by JetStream.
//! - `manual` flush never moves the slot; `connector-and-driver` also
//!   confirms a keepalive's WAL end, but only when nothing is in flight.
//! - Snapshot and backfill rows ([`crate::snapshot`]) take the same path
//!   as `read` batches, at their place in the stream: a snapshot's chunks
//!   before the first event at or past its point (which is held back
//!   meanwhile), a backfill chunk right after its high watermark's
//!   transaction. A snapshot chunk's end sits in the same ordered ack
//!   queue as the transactions, and its progress is written with the
//!   offset once JetStream stored it. So is a backfill's: the backfills'
//!   state (requests seen, the running one's last chunk key) rides on the
//!   end of the transaction or chunk that changed it, and is recorded when
//!   that end is acknowledged, so that a restart resumes exactly what the
//!   stream holds.
//!
//! Metrics ([`Metrics`]) are counted at the stages that see them: decoded
//! events in the source loop, plugin calls in the chain, acknowledgements in
//! the completion task, the confirmed LSN in the flusher. The endpoint on
//! `[metrics] address` is up before anything connects and for as long as
//! `run` runs.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::acks::{AckQueue, CommitInfo};
use super::chain::{Chain, ChainError};
use super::feed::{Feeder, feed_chunk, next_chunk, reaches};
use super::reload::{Baseline, ReloadSettings, Reloader};
use crate::config::{FlushMode, Manifest, NatsAuth as AuthSetting, SnapshotMode, StorageKind};
use crate::lsn::Lsn;
use crate::metrics::{self, Metrics};
use crate::model::Batch;
use crate::plugin::{EngineConfig, PluginError, PluginRuntime, RuntimeConfig};
use crate::position::startup::{self, StartupSettings};
use crate::position::store::{self, OffsetStore};
use crate::position::{BackfillProgress, OffsetRecord, SnapshotProgress, StoreError, Tracker};
use crate::publish::{self, HostMeta, NatsOptions, Publisher, PublisherConfig, SubjectFilter};
use crate::replication::setup::{self, SetupSpec};
use crate::replication::{ReplicationConnection, SystemIdentity};
use crate::snapshot::{self, Backfills, ChunkDone, Injector, ReadId, Snapshot, SnapshotError};
use crate::source::{self, SlotKind, SourceOptions, StartPosition};

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to NATS: {0}")]
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
    #[error("a pipeline task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Metrics(#[from] metrics::ServeError),
    /// Boxed: a snapshot's errors are large, and rare.
    #[error("snapshot failed: {0}")]
    Snapshot(Box<SnapshotError>),
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

/// NATS connection options from the manifest.
pub fn nats_options(m: &Manifest) -> NatsOptions {
    let n = &m.nats;
    let mut o = NatsOptions::new(n.urls.iter().map(|u| u.expose().to_owned()));
    o.auth = match &n.auth {
        AuthSetting::None => publish::NatsAuth::None,
        AuthSetting::UserPassword { user, password } => publish::NatsAuth::UserPassword {
            user: user.clone(),
            password: publish::Secret::new(password.expose()),
        },
        AuthSetting::Token(t) => publish::NatsAuth::Token(publish::Secret::new(t.expose())),
        AuthSetting::NKey { seed } => publish::NatsAuth::NKey(publish::Secret::new(seed.expose())),
        AuthSetting::Credentials(p) => publish::NatsAuth::CredentialsFile(p.clone()),
    };
    if let Some(tls) = &n.tls {
        o.tls = publish::TlsOptions {
            required: tls.required,
            ca_file: tls.ca.clone(),
            client_cert: tls.cert.clone(),
            client_key: tls.key.clone(),
        };
    }
    o
}

/// The stream the manifest describes.
pub fn stream_spec(m: &Manifest) -> Result<publish::StreamSpec, publish::SubjectError> {
    Ok(publish::StreamSpec {
        name: m.nats.stream.as_str().to_owned(),
        subjects: m
            .nats
            .subjects
            .iter()
            .map(|s| publish::SubjectPattern::new(s.clone()))
            .collect::<Result<_, _>>()?,
        storage: match m.nats.storage {
            StorageKind::File => publish::Storage::File,
            StorageKind::Memory => publish::Storage::Memory,
        },
        replicas: m.nats.replicas,
        duplicate_window: m.nats.duplicate_window,
    })
}

/// The plugin runtime sized for the manifest's limits.
pub fn plugin_runtime(m: &Manifest) -> Result<PluginRuntime, PluginError> {
    let max_memory = m
        .transforms
        .iter()
        .chain([&m.sink])
        .map(|p| p.limits.memory)
        .max()
        .unwrap_or(64 << 20);
    let fuel = m
        .transforms
        .iter()
        .chain([&m.sink])
        .any(|p| p.limits.fuel.is_some());
    PluginRuntime::new(RuntimeConfig {
        engine: EngineConfig {
            max_memory,
            fuel,
            ..EngineConfig::default()
        },
        ..RuntimeConfig::default()
    })
}

/// What goes from the source to the plugin thread, and on to the publisher.
#[derive(Debug)]
pub(super) enum Work {
    Batch {
        batch: Batch,
        first_event: u64,
        /// Set for a snapshot chunk's batches: their messages' ids.
        read: Option<ReadId>,
    },
    End(CommitInfo),
}

#[derive(Debug)]
enum Published {
    Messages {
        outgoing: Vec<super::chain::Outgoing>,
        commit_lsn: Lsn,
        xid: u32,
        read: Option<ReadId>,
    },
    End(CommitInfo),
}

/// Runs the pipeline until `shutdown` is cancelled (then drains and exits
/// cleanly) or a definite error stops it. `baseline` is what
/// [`super::reload::load_watched`] saw when it read `m`: hot reload starts
/// from it.
pub async fn run(
    m: Manifest,
    baseline: Baseline,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // The endpoint first: liveness is answered while the rest starts, and a
    // taken port fails the start. It stops whenever `run` returns.
    let metrics = Arc::new(Metrics::new());
    let endpoint = CancellationToken::new();
    let _endpoint_guard = endpoint.clone().drop_guard();
    if let Some(address) = m.metrics {
        metrics::serve(address, metrics.clone(), endpoint).await?;
    }

    // NATS first: without it nothing can be confirmed, so fail before
    // touching the slot.
    let client = publish::connect(&nats_options(&m)).await?;
    metrics.watch_nats(client.clone());
    let js = async_nats::jetstream::new(client.clone());
    let filter = SubjectFilter::parse(&m.nats.subjects)?;
    if m.nats.create_stream {
        let report = publish::ensure_stream(&js, &stream_spec(&m)?, &filter).await?;
        tracing::info!(stream = %m.nats.stream, created = report.created, "JetStream stream ready");
    } else {
        publish::verify_stream(&js, m.nats.stream.as_str(), &filter).await?;
    }
    let mut store = store::open(&m.position.store, &m.pipeline, Some(&js), m.nats.replicas).await?;

    // Plugins next: a broken plugin must not leave a new slot behind.
    let runtime = plugin_runtime(&m)?;
    metrics.watch_plugin_counters(runtime.counters().clone());
    let mut transforms = Vec::new();
    for spec in &m.transforms {
        transforms.push(runtime.load_transform_async(spec.clone()).await?);
    }
    let sink = runtime.load_sink_async(m.sink.clone()).await?;
    // Hot reload builds new chains off the hot path; the plugin thread
    // swaps them in between transactions. Changes since the manifest was
    // read (the baseline) are reloaded on the first poll.
    let (_reloader, replacements) = Reloader::spawn(
        ReloadSettings {
            manifest: m.clone(),
            runtime: runtime.clone(),
            policy: m.errors.clone(),
            allowed: m.nats.subjects.clone(),
            metrics: Some(metrics.clone()),
            baseline,
        },
        &shutdown,
    );

    // PostgreSQL: checks, the start-up decision, then the stream.
    let spec = SetupSpec {
        publication: m.source.publication.as_str().to_owned(),
        create_publication: m.source.create_publication.clone(),
        slot: m.source.slot.clone(),
        create_slot: m.source.create_slot,
    };
    setup::check(&m.source.conninfo, &spec).await?;
    let sql = setup::connect_sql(&m.source.conninfo).await?;
    let mut repl = ReplicationConnection::connect(&m.source.conninfo).await?;
    let start = startup::apply(
        &StartupSettings::from_manifest(&m),
        &mut repl,
        &sql,
        store.as_mut(),
    )
    .await?;
    // A snapshot imports the new slot's exported snapshot before the
    // replication session runs its next command (closing it).
    let snapshot = snapshot::prepare(&m, &start, &mut repl, store.as_mut()).await?;
    repl.close().await;
    let initial_only = m.source.snapshot == SnapshotMode::InitialOnly;
    if initial_only && snapshot.is_none() {
        tracing::info!(slot = %m.source.slot,
            "source.snapshot = \"initial-only\" and no snapshot is due: nothing to do");
        return Ok(());
    }
    let progress = match &snapshot {
        Some(s) => Some(s.progress().clone()),
        None => start.offset.as_ref().and_then(|o| o.snapshot.clone()),
    };
    let skip_through = start
        .offset
        .as_ref()
        .map_or(Lsn::ZERO, |o| o.commit_end_lsn);
    let options = SourceOptions {
        status_interval: m.position.status_interval,
        ..SourceOptions::new(NonZeroUsize::new(m.batch.max_events).unwrap_or(NonZeroUsize::MIN))
    };
    let prepared = source::prepare(&m.source, SlotKind::Durable, options).await?;
    let (flushed_tx, flushed_rx) = watch::channel(Lsn::ZERO);
    let mut events = prepared
        .start(
            StartPosition {
                start: start.start,
                skip_through,
            },
            flushed_rx,
        )
        .await?;
    tracing::info!(pipeline = %m.pipeline, slot = %m.source.slot, start = %start.start,
        skip_through = %skip_through, "streaming");
    metrics.watch_server(events.server_wal_end());
    metrics.set_streaming(true);

    let tracker = Arc::new(Mutex::new(Tracker::new(start.start.max(skip_through))));
    let flusher = Flusher {
        store,
        flushed: flushed_tx,
        mode: m.position.flush,
        slot: m.source.slot.clone(),
        server: start.server.clone(),
        timeline: events.server_timeline(),
        last: start.start.max(skip_through),
        metrics: metrics.clone(),
        progress,
        backfills: start
            .offset
            .as_ref()
            .map(|o| o.backfills.clone())
            .unwrap_or_default(),
        updates: std::collections::HashMap::new(),
        next_update: 0,
    };
    // Until the first flush, the slot's own position is what is confirmed.
    let slot_confirmed = events.slot().confirmed_flush_lsn.unwrap_or(Lsn::ZERO);
    metrics.confirmed(flusher.last.max(slot_confirmed));

    // The plugin thread.
    let (work_tx, mut work_rx) = mpsc::channel::<Work>(4);
    let (pub_tx, mut pub_rx) = mpsc::channel::<Result<Published, ChainError>>(4);
    let policy = m.errors.clone();
    let allowed = m.nats.subjects.clone();
    let chain_metrics = metrics.clone();
    let plugin_thread = std::thread::Builder::new()
        .name("sluice-plugins".into())
        .spawn(move || -> Result<(), RunError> {
            let transforms = transforms
                .iter()
                .map(|t| t.instantiate())
                .collect::<Result<_, _>>()?;
            let mut chain = Chain::new(transforms, sink.instantiate()?, policy, allowed)
                .with_metrics(chain_metrics.clone());
            while let Some(work) = work_rx.blocking_recv() {
                let out = match work {
                    Work::Batch {
                        batch,
                        first_event,
                        read,
                    } => {
                        if batch.first
                            && let Some(reloaded) = replacements.latest()
                        {
                            chain = reloaded.with_metrics(chain_metrics.clone());
                        }
                        let (commit_lsn, xid) = (batch.commit_lsn, batch.xid);
                        chain
                            .process(batch, first_event)
                            .map(|o| Published::Messages {
                                outgoing: o.messages,
                                commit_lsn,
                                xid,
                                read,
                            })
                    }
                    Work::End(info) => Ok(Published::End(info)),
                };
                let failed = out.is_err();
                if pub_tx.blocking_send(out).is_err() || failed {
                    break;
                }
            }
            Ok(())
        })
        .map_err(|e| RunError::Task(format!("cannot start the plugin thread: {e}")))?;

    // The publisher and its completions.
    // Each message's token is when it was handed over, for the ack latency.
    let (publisher, mut completions) = Publisher::<Instant>::new(
        client,
        filter,
        PublisherConfig {
            max_in_flight: m.nats.max_in_flight,
            max_in_flight_bytes: usize::try_from(m.nats.max_in_flight_bytes).unwrap_or(usize::MAX),
            stream: Some(m.nats.stream.as_str().to_owned()),
            ..PublisherConfig::default()
        },
    );
    metrics.watch_publisher(publisher.monitor());
    let acks = Arc::new(Mutex::new(AckQueue::default()));
    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel::<Vec<CommitInfo>>();
    let pipeline = m.pipeline.as_str().to_owned();
    let publish_acks = acks.clone();
    let publish_acked = acked_tx.clone();
    let publish_task = tokio::spawn(async move {
        while let Some(item) = pub_rx.recv().await {
            match item? {
                Published::Messages {
                    outgoing,
                    commit_lsn,
                    xid,
                    read,
                } => {
                    for o in outgoing {
                        let source = o.source;
                        let msg_id = match read {
                            Some(r) => publish::read_msg_id(
                                &pipeline,
                                r.table_oid,
                                r.digest,
                                o.event_index,
                                u64::from(o.output_index),
                            ),
                            None => publish::msg_id(
                                &pipeline,
                                commit_lsn,
                                xid,
                                o.event_index,
                                u64::from(o.output_index),
                            ),
                        };
                        let meta = HostMeta {
                            msg_id,
                            commit_lsn,
                            lsn: source.as_ref().map(|s| s.lsn),
                            op: source.as_ref().map(|s| s.op),
                            table: source.and_then(|s| s.table),
                            error: o.error,
                        };
                        lock(&publish_acks).message();
                        publisher
                            .publish(
                                publish::Outgoing {
                                    message: o.message,
                                    meta,
                                },
                                Instant::now(),
                            )
                            .await?;
                    }
                }
                Published::End(info) => {
                    let done = lock(&publish_acks).commit(info);
                    if !done.is_empty() {
                        let _ = publish_acked.send(done);
                    }
                }
            }
        }
        Ok::<(), RunError>(())
    });
    let completion_acks = acks.clone();
    let completion_metrics = metrics.clone();
    let completion_task = tokio::spawn(async move {
        while let Some(c) = completions.recv().await {
            completion_metrics.published(c?.token.elapsed());
            let done = lock(&completion_acks).stored();
            if !done.is_empty() {
                let _ = acked_tx.send(done);
            }
        }
        Ok::<(), RunError>(())
    });

    let heartbeat = m.position.heartbeat.clone().map(|h| {
        let token = shutdown.child_token();
        tokio::spawn(heartbeats(sql, h.interval, h.sql, token))
    });

    // The source loop: feeds the plugin thread and the tracker, and flushes.
    // A snapshot's chunks are fed at its point: at once when that is where
    // streaming starts, otherwise in front of the first event at or past
    // it, which is held back meanwhile (see `crate::snapshot`).
    let mut flusher = flusher;
    let mut feeder = Feeder {
        tracker: tracker.clone(),
        metrics: metrics.clone(),
        first_event: 0,
        backfills: Backfills::new(
            m.pipeline.as_str(),
            m.source.conninfo.clone(),
            m.source.publication.as_str(),
            m.snapshot.chunk_rows,
            m.batch.max_events,
            flusher.backfills.clone(),
        ),
    };
    // A backfill interrupted by a stop or a crash goes on where its
    // acknowledged chunks ended (its low watermark gets the stream moving).
    feeder.backfills.resume().await;
    let mut outcome: Result<(), RunError> = Ok(());
    let mut work = Some(work_tx);
    let mut waiting = snapshot;
    let mut injector: Option<Injector> = None;
    let mut held = None;
    if waiting.as_ref().is_some_and(|s| s.point() <= start.start) {
        injector = waiting.take().map(Snapshot::start);
    }
    let mut chunks = 0u64;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if work.is_some() => {
                tracing::info!("shutting down: draining in-flight publishes");
                work = None;
            }
            acked = acked_rx.recv() => match acked {
                Some(mut done) => {
                    // Everything acknowledged meanwhile goes into one
                    // record write: with a durable store, a write per
                    // completion would hold the stream back under load.
                    while let Ok(more) = acked_rx.try_recv() {
                        done.extend(more);
                    }
                    flusher.acknowledged(&tracker, &done).await?
                }
                None => break,
            },
            chunk = next_chunk(&mut injector), if work.is_some() => {
                let Some(tx) = work.as_ref() else { continue };
                match chunk {
                    Some(Ok(chunk)) => {
                        chunks += 1;
                        if !feed_chunk(tx, chunk, &mut flusher, &metrics).await {
                            work = None;
                        }
                    }
                    Some(Err(e)) => {
                        outcome = Err(e.into());
                        work = None;
                    }
                    None => {
                        injector = None;
                        tracing::info!(chunks, "snapshot read and handed to the pipeline");
                        if initial_only {
                            tracing::info!("source.snapshot = \"initial-only\": stopping once the snapshot is stored");
                            work = None;
                        } else if let Some(event) = held.take() {
                            feeder
                                .forward(event, tx, &mut flusher)
                                .await?
                                .apply(&mut work, &mut outcome);
                        }
                    }
                }
            }
            event = events.next(), if work.is_some() && injector.is_none() => {
                let Some(tx) = work.as_ref() else { continue };
                if let Some(point) = waiting.as_ref().map(Snapshot::point)
                    && reaches(&event, point)
                {
                    held = Some(event);
                    injector = waiting.take().map(Snapshot::start);
                    continue;
                }
                feeder
                    .forward(event, tx, &mut flusher)
                    .await?
                    .apply(&mut work, &mut outcome);
            }
        }
        if work.is_none() {
            break;
        }
    }
    drop(work);
    metrics.set_streaming(false);

    // Drain: the plugin thread ends when its input closes, the publisher
    // when the plugin thread's output closes; completions arrive until the
    // last stored message. Bounded by the shutdown timeout.
    let drain = async {
        let mut first_error = None;
        let thread = tokio::task::spawn_blocking(move || plugin_thread.join());
        match publish_task.await {
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(RunError::Task(e.to_string()))),
            Ok(Ok(())) => {}
        }
        while let Some(done) = acked_rx.recv().await {
            if let Err(e) = flusher.acknowledged(&tracker, &done).await {
                first_error = first_error.or(Some(e));
            }
        }
        match completion_task.await {
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(RunError::Task(e.to_string()))),
            Ok(Ok(())) => {}
        }
        match thread.await {
            Ok(Ok(Err(e))) => first_error = first_error.or(Some(e)),
            Ok(Err(_)) | Err(_) => {
                first_error =
                    first_error.or(Some(RunError::Task("the plugin thread panicked".into())))
            }
            Ok(Ok(Ok(()))) => {}
        }
        first_error
    };
    let drained = tokio::time::timeout(m.shutdown_timeout, drain).await;
    if let Some(h) = heartbeat {
        h.abort();
    }
    // The final standby status carries the last flushed LSN.
    let stopped = events.stop().await;
    match drained {
        Ok(Some(e)) => outcome = outcome.and(Err(e)),
        Ok(None) => {}
        Err(_) => {
            tracing::warn!(timeout = ?m.shutdown_timeout, "in-flight publishes did not finish in time; they will be replayed and de-duplicated on restart");
        }
    }
    outcome?;
    stopped?;
    tracing::info!(flushed = %flusher.last, "stopped");
    Ok(())
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes the offset, then tells the slot: in that order, so that slot and
/// offset never disagree in a way a restart could not resolve.
pub(super) struct Flusher {
    store: Box<dyn OffsetStore>,
    flushed: watch::Sender<Lsn>,
    pub(super) mode: FlushMode,
    slot: crate::replication::SlotName,
    server: SystemIdentity,
    /// The server's timeline now (it changes when the source follows a
    /// promotion): offset records carry it.
    timeline: source::ServerTimeline,
    last: Lsn,
    metrics: Arc<Metrics>,
    /// The snapshot's progress, carried in every record written.
    progress: Option<SnapshotProgress>,
    /// The unfinished backfills as of the acknowledged stream, carried in
    /// every record written.
    pub(super) backfills: Vec<BackfillProgress>,
    /// Updates handed to the pipeline with an end and not yet stored, by
    /// sequence.
    updates: std::collections::HashMap<u64, Update>,
    next_update: u64,
}

/// What the flusher records once the end carrying it is stored.
#[derive(Debug)]
pub(super) enum Update {
    /// A snapshot chunk is stored.
    Chunk(ChunkDone),
    /// The backfills' state as of the end.
    Backfills(Vec<BackfillProgress>),
}

impl Flusher {
    /// Transactions `done` are stored: tell the tracker, then move the
    /// offset and the slot as far as the acknowledged prefix allows.
    async fn acknowledged(
        &mut self,
        tracker: &Mutex<Tracker>,
        done: &[CommitInfo],
    ) -> Result<(), RunError> {
        let mut updated = false;
        let moved = {
            let mut t = lock(tracker);
            for d in done {
                match d.update.and_then(|seq| self.updates.remove(&seq)) {
                    Some(Update::Chunk(chunk)) => {
                        if let Some(progress) = self.progress.as_mut() {
                            chunk.apply(progress);
                            updated = true;
                        }
                    }
                    Some(Update::Backfills(state)) => {
                        self.backfills = state;
                        updated = true;
                    }
                    None => {}
                }
                if d.transaction {
                    t.acknowledged(d.end_lsn);
                }
            }
            t.confirmed()
        };
        let last = done.iter().rev().find(|d| d.transaction).copied();
        if moved > self.last {
            self.advance(moved, last).await
        } else if updated {
            // The position did not move, the progress did: record it.
            self.write(self.last, None).await
        } else {
            Ok(())
        }
    }

    /// Keeps `update` until the end that carries it is stored; returns
    /// the sequence number for that end's [`CommitInfo::update`].
    pub(super) fn pending(&mut self, update: Update) -> u64 {
        self.next_update += 1;
        self.updates.insert(self.next_update, update);
        self.next_update
    }

    pub(super) async fn advance(
        &mut self,
        to: Lsn,
        last: Option<CommitInfo>,
    ) -> Result<(), RunError> {
        if to <= self.last {
            return Ok(());
        }
        self.write(to, last).await?;
        self.last = to;
        self.metrics.confirmed(to);
        if self.mode != FlushMode::Manual {
            let _ = self.flushed.send(to);
        }
        Ok(())
    }
}

impl Flusher {
    /// Writes the offset record for `to` (with the snapshot's and the
    /// backfills' progress) to a durable store.
    async fn write(&mut self, to: Lsn, last: Option<CommitInfo>) -> Result<(), RunError> {
        if self.store.is_durable() {
            let mut record = OffsetRecord::new(
                self.slot.clone(),
                to,
                self.server.system_id,
                self.timeline.get(),
            )
            .with_snapshot(self.progress.clone())
            .with_backfills(self.backfills.clone());
            if let Some(c) = last.filter(|c| c.end_lsn == to) {
                record = record.with_transaction(c.xid, c.commit_lsn, c.commit_time);
            }
            self.store.store(&record).await?;
        }
        Ok(())
    }
}

/// Periodic writes to the source so that a quiet slot still moves.
async fn heartbeats(
    sql: tokio_postgres::Client,
    interval: Duration,
    statement: Option<String>,
    token: CancellationToken,
) {
    let statement = statement.unwrap_or_else(|| {
        "SELECT pg_logical_emit_message(false, 'sluice.heartbeat', '')".to_owned()
    });
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = sql.batch_execute(&statement).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
            }
        }
    }
}
