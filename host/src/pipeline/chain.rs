//! The plugin chain: one batch through every transform, in manifest order,
//! then through the sink, under the pipeline's error policy (DESIGN §4).
//!
//! The chain is synchronous and runs on the pipeline's plugin thread (plugin
//! calls are CPU work bounded by their deadlines). Invariants:
//!
//! - Output order is input order: the messages of a batch come out in the
//!   order the sink returned them, event by event when a batch had to be
//!   split.
//! - A message for a subject outside the pipeline's allowed subjects is
//!   never returned for publishing: it is a failure of the sink, handled by
//!   the error policy like any other.
//! - Every message leaves with a deterministic identity (commit LSN, index
//!   of its batch's first event in the transaction, position among the
//!   batch's messages), so that a replay after a restart produces the same
//!   `Nats-Msg-Id`s and JetStream drops the duplicates. A batch that had to
//!   be split numbers its messages the same way, so its ids never collide
//!   with another batch's.
//! - A message that names its event (WIT `message.event`) leaves with that
//!   event's table, operation and LSN, as the sink saw them; a dead-letter
//!   message with the failing event's, as the failing plugin saw it.
//!
//! On a failure, `stop` returns the error; `dead-letter` and `skip` retry the
//! batch one event at a time to find the events that fail (a plugin may name
//! the event itself with `bad-input`, which the split then confirms), send
//! each failing event to the dead-letter subject or count it as skipped, and
//! keep the output of every other event.
//!
//! With [`Chain::with_metrics`], every plugin call is counted (events in,
//! events or messages out, duration) under the plugin's name, and every
//! failing event under the policy that handled it.

use std::sync::Arc;
use std::time::Instant;

use crate::config::ErrorPolicy;
use crate::lsn::Lsn;
use crate::metrics::{Metrics, PluginProbe};
use crate::model::{Batch, Event, Message, Relation};
use crate::plugin::{CallError, PluginError, Sink, Transform};
use crate::publish::SubjectFilter;

/// A message ready for publishing, with its identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub message: Message,
    /// Index, within its transaction, of the first event of the batch the
    /// message came from.
    pub event_index: u64,
    /// Position of the message among its batch's messages.
    pub output_index: u32,
    /// The event the message was made from, when the sink named it.
    pub source: Option<EventSource>,
    /// For a dead-letter message: why the event failed.
    pub error: Option<String>,
}

/// The event a message was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSource {
    /// `schema.table`; for a truncate of several tables, their names joined
    /// by `,`; `None` for a logical message.
    pub table: Option<Arc<str>>,
    /// [`Event::op_name`].
    pub op: &'static str,
    pub lsn: Lsn,
}

impl EventSource {
    /// The source of each event of `batch`, by index.
    fn of_batch(batch: &Batch) -> Vec<EventSource> {
        // One shared name per relation, not one allocation per event.
        let names: Vec<Arc<str>> = batch
            .relations
            .iter()
            .map(|r| Arc::from(format!("{}.{}", r.schema, r.name)))
            .collect();
        let name = |i: u32| names.get(i as usize).cloned();
        batch
            .events
            .iter()
            .map(|event| EventSource {
                table: match event {
                    Event::Row(row) => name(row.relation),
                    Event::Truncate(t) => {
                        let tables: Vec<Arc<str>> =
                            t.relations.iter().filter_map(|&r| name(r)).collect();
                        match tables.as_slice() {
                            [one] => Some(one.clone()),
                            [] => None,
                            many => Some(Arc::from(many.join(","))),
                        }
                    }
                    Event::Message(_) => None,
                },
                op: event.op_name(),
                lsn: event.lsn(),
            })
            .collect()
    }
}

/// What a batch produced.
#[derive(Debug, Default)]
pub struct Output {
    pub messages: Vec<Outgoing>,
    /// Events dropped under the `skip` policy.
    pub skipped: u64,
    /// Events sent to the dead-letter subject.
    pub dead_lettered: u64,
}

/// Why a batch could not be processed (under `stop`, or when even
/// dead-lettering fails).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(
        "plugin \"{plugin}\" returned a message for subject `{subject}`, which this pipeline may not publish to (allowed: {allowed})"
    )]
    ForbiddenSubject {
        plugin: String,
        subject: String,
        allowed: String,
    },
}

/// The transforms and sink of one pipeline, with its policy.
#[derive(Debug)]
pub struct Chain {
    pub transforms: Vec<Transform>,
    pub sink: Sink,
    policy: ErrorPolicy,
    allowed: SubjectFilter,
    metrics: Option<Arc<Metrics>>,
    /// Per stage (transforms, then the sink), resolved on first use and
    /// again when the plugin at that stage changes name (after a reload).
    probes: Vec<Option<PluginProbe>>,
}

impl Chain {
    /// A chain that may publish to the `allowed` subjects.
    pub fn new(
        transforms: Vec<Transform>,
        sink: Sink,
        policy: ErrorPolicy,
        allowed: SubjectFilter,
    ) -> Self {
        Chain {
            transforms,
            sink,
            policy,
            allowed,
            metrics: None,
            probes: Vec::new(),
        }
    }

    /// Counts calls and failures in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs `batch`, whose first event is event `first_event` of its
    /// transaction.
    pub fn process(&mut self, batch: Batch, first_event: u64) -> Result<Output, ChainError> {
        let failure = match self.run(batch, 0) {
            Ok(encoded) => {
                let mut out = Output::default();
                out.messages.extend(encoded.outgoing());
                number(&mut out.messages, first_event);
                return Ok(out);
            }
            Err(failure) => failure,
        };
        let Failure {
            stage,
            input,
            error,
        } = failure;
        if self.policy == ErrorPolicy::Stop || input.events.is_empty() {
            // The pipeline halts on this failure: one error, handled by
            // stopping (also under the other policies, when there is no
            // event to set aside).
            if let Some(m) = &self.metrics {
                m.errors(&ErrorPolicy::Stop, 1);
            }
            return Err(error);
        }
        tracing::warn!(error = %error, xid = input.xid, events = input.events.len(),
            "plugin chain failed; retrying the batch one event at a time to isolate the failure");
        let mut out = self.split(*input, stage, first_event);
        number(&mut out.messages, first_event);
        if let Some(m) = &self.metrics {
            m.errors(&self.policy, out.skipped + out.dead_lettered);
        }
        Ok(out)
    }

    /// Records one call of the plugin at `stage`.
    fn observe(&mut self, stage: usize, input: usize, output: usize, started: Instant) {
        let Some(metrics) = &self.metrics else { return };
        let name = match self.transforms.get(stage) {
            Some(t) => t.name(),
            None => self.sink.name(),
        };
        if self.probes.len() <= stage {
            self.probes.resize(stage + 1, None);
        }
        let probe = &mut self.probes[stage];
        if probe.as_ref().is_none_or(|p| p.plugin() != name) {
            *probe = Some(metrics.plugin(name));
        }
        if let Some(p) = probe {
            p.call(input, output, started.elapsed());
        }
    }

    /// Runs the stages from `stage` on (transforms by index, then the sink
    /// at index `transforms.len()`).
    fn run(&mut self, batch: Batch, stage: usize) -> Result<Encoded, Failure> {
        let mut current = batch;
        for i in stage..self.transforms.len() {
            let (input, started) = (current.events.len(), Instant::now());
            let result = self.transforms[i].transform(current);
            let output = result.as_ref().map_or(0, |b| b.events.len());
            self.observe(i, input, output, started);
            current = result.map_err(|CallError { error, input }| Failure {
                stage: i,
                input,
                error: error.into(),
            })?;
        }
        let sink_stage = self.transforms.len();
        // The sink consumes its input, and a forbidden subject shows only in
        // its output. To split the batch then, the other policies keep a
        // copy of the input; `stop` needs none.
        let sink_input = (self.policy != ErrorPolicy::Stop).then(|| current.clone());
        let sources = EventSource::of_batch(&current);
        let (input, started) = (current.events.len(), Instant::now());
        let result = self.sink.encode(current);
        let output = result.as_ref().map_or(0, Vec::len);
        self.observe(sink_stage, input, output, started);
        let messages = result.map_err(|CallError { error, input }| Failure {
            stage: sink_stage,
            input,
            error: error.into(),
        })?;
        if let Some(bad) = messages.iter().find(|m| !self.allowed.allows(&m.subject)) {
            return Err(Failure {
                stage: sink_stage,
                input: Box::new(sink_input.unwrap_or(EMPTY)),
                error: ChainError::ForbiddenSubject {
                    plugin: self.sink.name().to_owned(),
                    subject: bad.subject.clone(),
                    allowed: self.allowed.to_string(),
                },
            });
        }
        Ok(Encoded { messages, sources })
    }

    /// Processes each event of `batch` (the input of the failing `stage`)
    /// on its own, from that stage on. Events that earlier transforms
    /// already changed are not run through them again, so a dead-letter
    /// message holds the event as the failing plugin saw it (masked, if a
    /// mask ran before).
    fn split(&mut self, batch: Batch, stage: usize, first_event: u64) -> Output {
        let Batch {
            xid,
            commit_lsn,
            commit_time,
            first,
            last,
            relations,
            events,
        } = batch;
        let count = events.len();
        let mut out = Output::default();
        for (k, event) in events.into_iter().enumerate() {
            // Each single-event batch keeps the transaction's flags on its
            // ends, so a plugin that cares about transaction boundaries
            // still sees them.
            let single = Batch {
                xid,
                commit_lsn,
                commit_time,
                first: first && k == 0,
                last: last && k + 1 == count,
                relations: relations.clone(),
                events: vec![event],
            };
            let index = first_event + k as u64;
            match self.run(single.clone(), stage) {
                Ok(encoded) => out.messages.extend(encoded.outgoing()),
                Err(Failure { error, .. }) => self.failed_event(&single, index, &error, &mut out),
            }
        }
        out
    }

    /// Applies the policy to one failing event.
    fn failed_event(&self, failed: &Batch, index: u64, err: &ChainError, out: &mut Output) {
        match &self.policy {
            // `process` returns before splitting under `stop`.
            ErrorPolicy::Stop => debug_assert!(false, "split under the stop policy"),
            ErrorPolicy::Skip => {
                tracing::warn!(error = %err, xid = failed.xid, commit_lsn = %failed.commit_lsn,
                    event_index = index, "skipping an event a plugin failed on");
                out.skipped += 1;
            }
            ErrorPolicy::DeadLetter { subject } => {
                let error = err.to_string();
                out.messages.push(Outgoing {
                    message: dead_letter(subject, failed, index, &error),
                    event_index: index,
                    output_index: 0,
                    source: EventSource::of_batch(failed).pop(),
                    error: Some(error),
                });
                out.dead_lettered += 1;
            }
        }
    }
}

/// A failed stage, with the batch it was given.
struct Failure {
    stage: usize,
    input: Box<Batch>,
    error: ChainError,
}

/// What the sink returned, with the sources of the events it was given.
struct Encoded {
    messages: Vec<Message>,
    sources: Vec<EventSource>,
}

impl Encoded {
    /// The messages, each with the source of the event it names (the
    /// plugin layer has checked the indexes); numbered later by [`number`].
    fn outgoing(self) -> impl Iterator<Item = Outgoing> {
        let Encoded { messages, sources } = self;
        messages.into_iter().map(move |message| Outgoing {
            source: message.event.and_then(|i| sources.get(i as usize).cloned()),
            message,
            event_index: 0,
            output_index: 0,
            error: None,
        })
    }
}

/// Gives the messages of the batch whose first event is `first_event` their
/// identities: the batch's first event, and their position in the batch.
fn number(messages: &mut [Outgoing], first_event: u64) {
    for (i, m) in messages.iter_mut().enumerate() {
        m.event_index = first_event;
        m.output_index = u32::try_from(i).unwrap_or(u32::MAX);
    }
}

const EMPTY: Batch = Batch {
    xid: 0,
    commit_lsn: Lsn::ZERO,
    commit_time: 0,
    first: true,
    last: true,
    relations: Vec::new(),
    events: Vec::new(),
};

/// The dead-letter message for one event: the event (with the relation it
/// refers to) and the error, as JSON. The publisher adds the headers
/// (`Sluice-Error`, and the event's table, operation and LSN).
fn dead_letter(subject: &str, failed: &Batch, index: u64, error: &str) -> Message {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "kebab-case")]
    struct Body<'a> {
        error: &'a str,
        xid: u32,
        commit_lsn: Lsn,
        event_index: u64,
        relations: &'a [Relation],
        event: Option<&'a Event>,
    }
    let body = Body {
        error,
        xid: failed.xid,
        commit_lsn: failed.commit_lsn,
        event_index: index,
        relations: &failed.relations,
        event: failed.events.first(),
    };
    Message {
        subject: subject.to_owned(),
        headers: Vec::new(),
        payload: serde_json::to_vec(&body).unwrap_or_default(),
        event: Some(0),
    }
}
