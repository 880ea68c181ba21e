//! The stages behind the source loop: the plugin thread, the JetStream
//! publisher and the completion task.
//!
//! ```text
//! source loop ──Vec<Work>──▶ plugin thread ──publish / mark──▶ publisher ──▶ JetStream
//!      ▲                    (chain, blocking)                     │ in order
//!      └───────────── Vec<Ticket> ◀── completion task ◀── completions
//! ```
//!
//! - The plugin thread takes groups of [`Work`] (everything the source loop
//!   had ready), runs each batch through the chain, and hands each message
//!   to the publisher with its deterministic `Nats-Msg-Id`; an end's
//!   [`Ticket`] goes to the publisher as a *mark*, behind the messages of
//!   its transaction. A host-made message (the ghost-range marker,
//!   `super::ghost`) is published as it is, in its place in that order.
//!   Waiting for room in the publisher's window blocks the
//!   thread: that is the backpressure that reaches the source loop and, from
//!   there, the replication socket.
//! - The publisher reports messages and marks in the order they were
//!   handed over, each once JetStream stored it (a mark: once everything
//!   before it is stored). So a returned ticket means every message of its
//!   transaction, and of everything before it, is stored.
//! - The completion task takes every completion ready at once, counts the
//!   messages, and returns the tickets to the source loop over a bounded
//!   channel; the source loop reads it in every phase, so it never blocks
//!   the publisher for long.
//!
//! Invariants: messages leave in event order and transactions in commit
//! order (one thread, one publisher, one FIFO); no ticket returns before
//! the messages ahead of it are stored. Each stage ends when its input
//! ends, after finishing what it holds, so dropping the source loop's
//! sender drains the pipeline.

use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::RunError;
use super::chain::{Chain, ChainError, Outgoing};
use super::reload::Replacements;
use crate::metrics::Metrics;
use crate::model::Batch;
use crate::plugin::{SinkPlugin, TransformPlugin};
use crate::position::Ticket;
use crate::publish::{self, Completions, HostMeta, Publisher};
use crate::snapshot::ReadId;

/// Groups of work between the source loop and the plugin thread: a few
/// groups, each what the source loop had ready at once.
const WORK_GROUPS: usize = 4;
/// Groups of returned tickets between the completion task and the source
/// loop.
const ACK_GROUPS: usize = 64;

/// What the source loop hands to the plugin thread, in stream order.
#[derive(Debug)]
pub(super) enum Work {
    Batch {
        batch: Batch,
        /// The index of the batch's first event in its transaction.
        first_event: u64,
        /// Set for a snapshot or backfill chunk's batches: their messages'
        /// ids.
        read: Option<ReadId>,
        /// The timeline that wrote the transaction, when its ids name it
        /// (see `crate::publish::msg_id`, "Timelines").
        timeline: Option<u32>,
    },
    /// A message the host made (the ghost-range marker, see `super::ghost`),
    /// published as it is.
    Marker(publish::Outgoing),
    /// Everything before this belongs to the end the ticket stands for.
    End(Ticket),
}

/// What occupies a place in the publisher's window.
#[derive(Debug)]
pub(super) enum Token {
    /// A message, with when it was handed over (for the publish latency).
    Message(Instant),
    /// An end, returned to the source loop once everything before it is
    /// stored.
    End(Ticket),
}

/// The plugins the thread starts with, and where reloaded chains arrive.
#[derive(Debug)]
pub(super) struct Plugins {
    pub(super) transforms: Vec<TransformPlugin>,
    pub(super) sink: SinkPlugin,
    pub(super) replacements: Replacements,
}

/// Everything the plugin thread needs besides its plugins.
#[derive(Debug)]
pub(super) struct ChainSettings {
    pub(super) pipeline: String,
    pub(super) policy: crate::config::ErrorPolicy,
    pub(super) allowed: crate::publish::SubjectFilter,
    pub(super) metrics: Arc<Metrics>,
    /// `nats.metadata-headers`: whether change messages carry the
    /// `Sluice-Table`/`-Op`/`-Commit-Lsn`/`-Lsn` headers.
    pub(super) metadata_headers: bool,
}

/// The running stages; see the module documentation.
#[derive(Debug)]
pub(super) struct Stages {
    plugin_thread: std::thread::JoinHandle<Result<(), RunError>>,
    completion_task: JoinHandle<Result<(), RunError>>,
}

/// The source loop's ends of the stages.
#[derive(Debug)]
pub(super) struct Ends {
    pub(super) work: mpsc::Sender<Vec<Work>>,
    pub(super) acks: mpsc::Receiver<Vec<Ticket>>,
}

impl Stages {
    /// Starts the plugin thread (instantiating the plugins there) and the
    /// completion task around `publisher`.
    pub(super) fn spawn(
        plugins: Plugins,
        settings: ChainSettings,
        publisher: Publisher<Token>,
        completions: Completions<Token>,
    ) -> Result<(Stages, Ends), RunError> {
        let (work_tx, work_rx) = mpsc::channel(WORK_GROUPS);
        let (acks_tx, acks_rx) = mpsc::channel(ACK_GROUPS);
        let completion_task = tokio::spawn(return_tickets(
            completions,
            acks_tx,
            settings.metrics.clone(),
        ));
        let handle = Handle::current();
        let plugin_thread = std::thread::Builder::new()
            .name("sluice-plugins".into())
            .spawn(move || plugin_thread(plugins, settings, work_rx, publisher, handle))
            .map_err(|e| RunError::Task {
                task: "the plugin thread",
                source: Box::new(e),
            })?;
        let ends = Ends {
            work: work_tx,
            acks: acks_rx,
        };
        Ok((
            Stages {
                plugin_thread,
                completion_task,
            },
            ends,
        ))
    }

    /// Waits for both stages to end (after their inputs closed); the first
    /// error, if any.
    pub(super) async fn join(self) -> Option<RunError> {
        let thread = self.plugin_thread;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        let thread = match joined {
            Ok(Ok(result)) => result.err(),
            Ok(Err(panic)) => Some(RunError::Task {
                task: "the plugin thread",
                source: panicked(panic.as_ref()).into(),
            }),
            Err(e) => Some(RunError::Task {
                task: "the plugin thread",
                source: Box::new(e),
            }),
        };
        let completions = match self.completion_task.await {
            Ok(result) => result.err(),
            Err(e) => Some(RunError::Task {
                task: "the completion task",
                source: Box::new(e),
            }),
        };
        thread.or(completions)
    }
}

/// The plugin thread: chain, then publisher, group by group, until the
/// source loop closes its end or a definite error stops it.
fn plugin_thread(
    plugins: Plugins,
    settings: ChainSettings,
    mut work: mpsc::Receiver<Vec<Work>>,
    publisher: Publisher<Token>,
    handle: Handle,
) -> Result<(), RunError> {
    let transforms = plugins
        .transforms
        .iter()
        .map(|t| t.instantiate())
        .collect::<Result<_, _>>()?;
    let mut chain = Chain::new(
        transforms,
        plugins.sink.instantiate()?,
        settings.policy.clone(),
        settings.allowed.clone(),
    )
    .with_metrics(settings.metrics.clone());
    while let Some(group) = work.blocking_recv() {
        // One entry into the runtime per group: the chain runs on this thread
        // all the same, and the publisher's window waits happen in between.
        handle.block_on(async {
            for item in group {
                match item {
                    Work::Batch {
                        batch,
                        first_event,
                        read,
                        timeline,
                    } => {
                        // A reloaded chain takes over between transactions.
                        if batch.first
                            && let Some(reloaded) = plugins.replacements.latest()
                        {
                            chain = reloaded.with_metrics(settings.metrics.clone());
                        }
                        let (commit_lsn, xid) = (batch.commit_lsn, batch.xid);
                        let output = chain.process(batch, first_event).map_err(stopped)?;
                        for o in output.messages {
                            let at = Origin {
                                commit_lsn,
                                timeline,
                                xid,
                                read,
                            };
                            let message =
                                identify(&settings.pipeline, settings.metadata_headers, o, at);
                            publisher
                                .publish(message, Token::Message(Instant::now()))
                                .await?;
                        }
                    }
                    Work::Marker(message) => {
                        publisher
                            .publish(message, Token::Message(Instant::now()))
                            .await?;
                    }
                    Work::End(ticket) => publisher.mark(Token::End(ticket)).await?,
                }
            }
            Ok::<(), RunError>(())
        })?;
    }
    Ok(())
}

/// A panic's message, as an error.
fn panicked(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("it panicked: {text}")
}

fn stopped(e: ChainError) -> RunError {
    RunError::Chain(e)
}

/// Where a batch's messages come from, for their ids.
#[derive(Clone, Copy, Debug)]
struct Origin {
    commit_lsn: crate::lsn::Lsn,
    timeline: Option<u32>,
    xid: u32,
    read: Option<ReadId>,
}

/// A chain output as the publisher takes it: with its `Nats-Msg-Id` (a
/// read id for snapshot and backfill rows, whose position is not a
/// transaction's) and the headers naming its source event. A dead letter
/// keeps those metadata headers whatever `metadata_headers` says: whoever
/// reads the dead-letter subject needs to know what failed.
fn identify(pipeline: &str, metadata_headers: bool, o: Outgoing, at: Origin) -> publish::Outgoing {
    let Origin {
        commit_lsn,
        timeline,
        xid,
        read,
    } = at;
    let output_index = u64::from(o.output_index);
    let msg_id = match read {
        Some(r) => {
            publish::read_msg_id(pipeline, r.table_oid, r.digest, o.event_index, output_index)
        }
        None => publish::timeline_msg_id(
            pipeline,
            commit_lsn,
            timeline,
            xid,
            o.event_index,
            output_index,
        ),
    };
    let source = o.source;
    publish::Outgoing {
        message: o.message,
        meta: HostMeta {
            msg_id,
            commit_lsn,
            lsn: source.as_ref().map(|s| s.lsn),
            op: source.as_ref().map(|s| s.op),
            table: source.and_then(|s| s.table),
            metadata: metadata_headers || o.error.is_some(),
            error: o.error,
        },
    }
}

/// The completion task: counts stored messages and returns tickets, in
/// groups, until the publisher is done or fails.
async fn return_tickets(
    mut completions: Completions<Token>,
    acks: mpsc::Sender<Vec<Ticket>>,
    metrics: Arc<Metrics>,
) -> Result<(), RunError> {
    while let Some(first) = completions.recv().await {
        let mut tickets = Vec::new();
        let mut next = Some(first);
        while let Some(completion) = next {
            match completion?.token {
                Token::Message(handed_over) => metrics.published(handed_over.elapsed()),
                Token::End(ticket) => tickets.push(ticket),
            }
            next = completions.try_recv();
        }
        if !tickets.is_empty() && acks.send(tickets).await.is_err() {
            // The source loop is gone: nobody confirms anything any more.
            break;
        }
    }
    Ok(())
}
