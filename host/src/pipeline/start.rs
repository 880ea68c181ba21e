//! The start phase of `sluice run`: everything that must hold before the
//! first change is read, in the order that keeps a failure harmless.
//!
//! 1. The metrics endpoint, so that liveness is answered while the rest
//!    starts and a taken port fails the start at once.
//! 2. NATS and the stream, then the offset store: without them nothing can
//!    be confirmed, so they fail before the slot is touched.
//! 3. The plugins, loaded and type-checked: a broken plugin must not leave
//!    a new slot behind. Hot reload starts watching from the manifest as
//!    it was read.
//! 4. PostgreSQL, on one SQL session and one replication session: the
//!    setup checks once, `IDENTIFY_SYSTEM` once, the start-up decision
//!    (which may create, advance or keep the slot, see
//!    [`crate::position::startup`]), and the snapshot, which imports a new
//!    slot's exported snapshot before the session's next command. The same
//!    replication session then streams ([`PreparedSource::from_session`]).
//!
//! Steps 2 and 4 wait for servers that are away: a failure that says NATS,
//! JetStream or PostgreSQL could not be reached, did not answer, or is not
//! yet what the source URL asks for is tried again until it passes or the
//! host is told to stop. Every other failure ends the start at once.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, DropGuard};

use super::RunError;
use super::reload::{Baseline, ReloadSettings, Reloader};
use super::stages::Plugins;
use crate::causes;
use crate::config::{Manifest, SnapshotMode};
use crate::metrics::{self, Metrics};
use crate::position::startup::{self, Startup, StartupSettings};
use crate::position::store::{self, OffsetStore};
use crate::publish::{self, SubjectFilter};
use crate::replication::setup::{self, SetupSpec};
use crate::replication::{Backoff, ReplicationConnection};
use crate::snapshot::{self, Snapshot};
use crate::source::{PreparedSource, SlotState, SourceOptions};

/// Everything the start phase opened, ready to run.
#[derive(Debug)]
pub(super) struct Started {
    pub(super) metrics: Arc<Metrics>,
    pub(super) client: async_nats::Client,
    pub(super) filter: SubjectFilter,
    pub(super) store: Box<dyn OffsetStore>,
    pub(super) plugins: Plugins,
    /// The ordinary SQL session (heartbeats use it).
    pub(super) sql: tokio_postgres::Client,
    pub(super) startup: Startup,
    pub(super) snapshot: Option<Snapshot>,
    pub(super) source: PreparedSource,
    /// Keep for as long as the pipeline runs: the metrics endpoint and hot
    /// reload stop when these are dropped.
    pub(super) guards: Guards,
}

/// See [`Started::guards`].
#[derive(Debug)]
pub(super) struct Guards {
    _endpoint: DropGuard,
    _reloader: Reloader,
}

/// The value of `$attempt`, a future made anew for each try, once it
/// succeeds; transient failures are waited out with a [`StartWait`] named
/// `$what`. A definite failure returns it from the enclosing function (with
/// `?`), and so does a stop request (as `Ok(None)`), even in the middle of
/// an attempt: one that hangs (a server that accepts and never answers)
/// must not hold the stop, and abandoning it midway is what a kill there
/// would do, which the start-up decision is built to survive.
macro_rules! until_available {
    ($what:expr, $shutdown:expr, $attempt:expr) => {{
        let mut wait = StartWait::new($what, $shutdown);
        loop {
            let attempt = tokio::select! {
                () = wait.shutdown.cancelled() => return Ok(None),
                opened = $attempt => opened,
            };
            match attempt {
                Ok(opened) => {
                    wait.succeeded();
                    break opened;
                }
                Err(e) => {
                    if !wait.failed(e).await? {
                        return Ok(None);
                    }
                }
            }
        }
    }};
}

/// Runs the start phase; `None` when there is nothing to do
/// (`initial-only` with no snapshot due) or `shutdown` came while it
/// waited for a server.
pub(super) async fn start(
    m: &Manifest,
    baseline: Baseline,
    shutdown: &CancellationToken,
) -> Result<Option<Started>, RunError> {
    let metrics = Arc::new(Metrics::new());
    let endpoint = CancellationToken::new();
    if let Some(address) = m.metrics {
        metrics::serve(address, metrics.clone(), endpoint.clone()).await?;
    }
    let endpoint = endpoint.drop_guard();

    let (client, filter, mut store) = until_available!("NATS", shutdown, open_nats(m));
    metrics.watch_nats(client.clone());
    let (plugins, reloader) = load_plugins(m, baseline, &metrics, shutdown).await?;
    let (sql, source, startup, snapshot) =
        until_available!("PostgreSQL", shutdown, open_source(m, store.as_mut()));
    if m.source.snapshot == SnapshotMode::InitialOnly && snapshot.is_none() {
        tracing::info!(slot = %m.source.slot,
            "source.snapshot = \"initial-only\" and no snapshot is due: nothing to do");
        return Ok(None);
    }
    Ok(Some(Started {
        metrics,
        client,
        filter,
        store,
        plugins,
        sql,
        startup,
        snapshot,
        source,
        guards: Guards {
            _endpoint: endpoint,
            _reloader: reloader,
        },
    }))
}

/// Waits out transient failures of one start step: after a failure that
/// says `what` is down, starting, or in a failover
/// ([`RunError::is_transient`]), [`Self::failed`] sleeps a backoff capped at
/// 2 s (as the running pipeline reconnects) and the caller tries again; a
/// host started while its servers are away waits for them instead of
/// exiting. Trying again is safe because each attempt does what a restart
/// would: nothing a failed attempt did is assumed.
///
/// A wait is logged when it starts and whenever its reason changes (not at
/// every attempt), and once more when it ends.
struct StartWait<'a> {
    what: &'static str,
    shutdown: &'a CancellationToken,
    backoff: Backoff,
    failures: causes::Repeats,
    since: Option<Instant>,
}

impl<'a> StartWait<'a> {
    fn new(what: &'static str, shutdown: &'a CancellationToken) -> Self {
        StartWait {
            what,
            shutdown,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            failures: causes::Repeats::default(),
            since: None,
        }
    }

    /// After a failed attempt: `Err` when the failure is definite,
    /// `Ok(false)` when `shutdown` came while waiting, `Ok(true)` when the
    /// caller should try again.
    async fn failed(&mut self, e: RunError) -> Result<bool, RunError> {
        if !e.is_transient() {
            return Err(e);
        }
        let what = self.what;
        let reason = causes::line(&e);
        let delay = self.backoff.next_delay();
        self.since.get_or_insert_with(Instant::now);
        if self.failures.is_new(&reason) {
            tracing::warn!(error = %reason,
                "cannot start yet: {what} is not available; trying again until it is");
        } else {
            tracing::debug!(error = %reason, retry_in = ?delay, "{what} is still not available");
        }
        tokio::select! {
            () = self.shutdown.cancelled() => Ok(false),
            () = tokio::time::sleep(delay) => Ok(!self.shutdown.is_cancelled()),
        }
    }

    /// After the attempt that succeeded: the end of a wait is logged.
    fn succeeded(&self) {
        if let Some(since) = self.since {
            let what = self.what;
            tracing::info!(waited = ?since.elapsed(), "{what} is available; starting");
        }
    }
}

/// NATS, the stream (created or verified) and the offset store.
async fn open_nats(
    m: &Manifest,
) -> Result<(async_nats::Client, SubjectFilter, Box<dyn OffsetStore>), RunError> {
    let client = publish::connect(&m.nats.connection).await?;
    let js = async_nats::jetstream::new(client.clone());
    let filter = m.nats.subjects.clone();
    if m.nats.create_stream {
        let report = publish::ensure_stream(&js, &m.nats.stream, &filter).await?;
        tracing::info!(stream = %m.nats.stream.name, created = report.created, "JetStream stream ready");
    } else {
        publish::verify_stream(&js, &m.nats.stream.name, &filter).await?;
    }
    let store = store::for_manifest(m, Some(&js)).await?;
    Ok((client, filter, store))
}

/// Loads every plugin and starts hot reload from `baseline`: changes made
/// since the manifest was read are reloaded on its first poll.
async fn load_plugins(
    m: &Manifest,
    baseline: Baseline,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Result<(Plugins, Reloader), RunError> {
    let runtime = m.plugin_runtime()?;
    metrics.watch_plugin_counters(runtime.counters().clone());
    let mut transforms = Vec::new();
    for spec in &m.transforms {
        transforms.push(runtime.load_transform_async(spec.clone()).await?);
    }
    let sink = runtime.load_sink_async(m.sink.clone()).await?;
    let (reloader, replacements) = Reloader::spawn(
        ReloadSettings {
            manifest: m.clone(),
            runtime,
            policy: m.errors.clone(),
            allowed: m.nats.subjects.clone(),
            metrics: Some(metrics.clone()),
            baseline,
        },
        shutdown,
    );
    let plugins = Plugins {
        transforms,
        sink,
        replacements,
    };
    Ok((plugins, reloader))
}

/// The PostgreSQL half of the start: one check, one decision, one
/// replication session that the source then streams on.
async fn open_source(
    m: &Manifest,
    store: &mut dyn OffsetStore,
) -> Result<
    (
        tokio_postgres::Client,
        PreparedSource,
        Startup,
        Option<Snapshot>,
    ),
    RunError,
> {
    let spec = SetupSpec {
        publication: m.source.publication.as_str().to_owned(),
        create_publication: m.source.create_publication.clone(),
        slot: m.source.slot.clone(),
        create_slot: m.source.create_slot,
        changes: m.source.changes,
    };
    let sql = setup::connect_sql(&m.source.conninfo).await?;
    setup::check_with(&sql, &spec).await?;
    let mut repl = ReplicationConnection::connect(&m.source.conninfo).await?;
    let startup =
        startup::apply(&StartupSettings::from_manifest(m), &mut repl, &sql, store).await?;
    let snapshot = snapshot::prepare(m, &startup, &mut repl, store).await?;
    let options = SourceOptions {
        status_interval: m.position.status_interval,
        ..SourceOptions::new(NonZeroUsize::new(m.batch.max_events).unwrap_or(NonZeroUsize::MIN))
    };
    let slot = SlotState {
        name: m.source.slot.clone(),
        temporary: false,
        created: startup.created_slot.is_some(),
        confirmed_flush_lsn: Some(startup.start),
        restart_lsn: None,
    };
    let source =
        PreparedSource::from_session(repl, &m.source, options, startup.server.clone(), slot);
    Ok((sql, source, startup, snapshot))
}
