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
//! - Every message leaves with a deterministic identity (commit LSN, event
//!   index in the transaction, output index), so that a replay after a
//!   restart produces the same `Nats-Msg-Id`s and JetStream drops the
//!   duplicates.
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
use crate::metrics::{Metrics, PluginProbe};
use crate::model::{Batch, Event, Message, Relation};
use crate::plugin::{CallError, PluginError, Sink, Transform};

/// A message ready for publishing, with its identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub message: Message,
    /// Index, within its transaction, of the first event the message came
    /// from (for a batch that went through whole: the batch's first event).
    pub event_index: u64,
    /// Position of the message among those produced for `event_index`.
    pub output_index: u32,
    /// The message came from a batch split after a failure; its id gets a
    /// distinct suffix so it can never collide with one from the whole
    /// batch.
    pub split: bool,
    /// A dead-letter message rather than the sink's output.
    pub dead_letter: bool,
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

impl ChainError {
    /// Whether retrying the same batch may succeed (a deadline, say).
    pub fn is_transient(&self) -> bool {
        match self {
            ChainError::Plugin(e) => e.is_transient(),
            ChainError::ForbiddenSubject { .. } => false,
        }
    }
}

/// The transforms and sink of one pipeline, with its policy.
#[derive(Debug)]
pub struct Chain {
    pub transforms: Vec<Transform>,
    pub sink: Sink,
    policy: ErrorPolicy,
    allowed: Vec<String>,
    metrics: Option<Arc<Metrics>>,
    /// Per stage (transforms, then the sink), resolved on first use and
    /// again when the plugin at that stage changes name (after a reload).
    probes: Vec<Option<PluginProbe>>,
}

impl Chain {
    /// A chain that may publish to `allowed` subjects (NATS patterns).
    pub fn new(
        transforms: Vec<Transform>,
        sink: Sink,
        policy: ErrorPolicy,
        allowed: Vec<String>,
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
            Ok(messages) => {
                let mut out = Output::default();
                out.messages.extend(outgoing(messages, first_event, false));
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
        let out = self.split(*input, stage, first_event);
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
    fn run(&mut self, batch: Batch, stage: usize) -> Result<Vec<Message>, Failure> {
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
        let (input, started) = (current.events.len(), Instant::now());
        let result = self.sink.encode(current);
        let output = result.as_ref().map_or(0, Vec::len);
        self.observe(sink_stage, input, output, started);
        let messages = result.map_err(|CallError { error, input }| Failure {
            stage: sink_stage,
            input,
            error: error.into(),
        })?;
        if let Some(bad) = messages.iter().find(|m| !self.may_publish(&m.subject)) {
            return Err(Failure {
                stage: sink_stage,
                input: Box::new(sink_input.unwrap_or(EMPTY)),
                error: ChainError::ForbiddenSubject {
                    plugin: self.sink.name().to_owned(),
                    subject: bad.subject.clone(),
                    allowed: self.allowed.join(", "),
                },
            });
        }
        Ok(messages)
    }

    fn may_publish(&self, subject: &str) -> bool {
        self.allowed
            .iter()
            .any(|p| crate::config::subject_matches(p, subject))
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
                Ok(messages) => out.messages.extend(outgoing(messages, index, true)),
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
                out.messages.push(Outgoing {
                    message: dead_letter(subject, failed, index, err),
                    event_index: index,
                    output_index: 0,
                    split: true,
                    dead_letter: true,
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

/// Numbers the messages produced for the event at `event_index`.
fn outgoing(
    messages: Vec<Message>,
    event_index: u64,
    split: bool,
) -> impl Iterator<Item = Outgoing> {
    messages
        .into_iter()
        .enumerate()
        .map(move |(i, message)| Outgoing {
            message,
            event_index,
            output_index: u32::try_from(i).unwrap_or(u32::MAX),
            split,
            dead_letter: false,
        })
}

const EMPTY: Batch = Batch {
    xid: 0,
    commit_lsn: crate::lsn::Lsn::ZERO,
    commit_time: 0,
    first: true,
    last: true,
    relations: Vec::new(),
    events: Vec::new(),
};

/// The dead-letter message for one event: the event (with the relation it
/// refers to) as JSON, and the error in headers.
fn dead_letter(subject: &str, failed: &Batch, index: u64, err: &ChainError) -> Message {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "kebab-case")]
    struct Body<'a> {
        error: String,
        xid: u32,
        commit_lsn: crate::lsn::Lsn,
        event_index: u64,
        relations: &'a [Relation],
        event: Option<&'a Event>,
    }
    let error = err.to_string();
    let body = Body {
        error: error.clone(),
        xid: failed.xid,
        commit_lsn: failed.commit_lsn,
        event_index: index,
        relations: &failed.relations,
        event: failed.events.first(),
    };
    let payload = serde_json::to_vec(&body).unwrap_or_default();
    // Header values are single lines; keep them short.
    let header: String = error
        .replace(['\r', '\n'], " ")
        .chars()
        .take(1000)
        .collect();
    let mut headers = vec![("Sluice-Error".to_owned(), header)];
    if let Some(Event::Row(row)) = failed.events.first() {
        if let Some(rel) = failed.relations.get(row.relation as usize) {
            headers.push((
                "Sluice-Table".to_owned(),
                format!("{}.{}", rel.schema, rel.name),
            ));
        }
        headers.push(("Sluice-Op".to_owned(), row.op.as_str().to_owned()));
    }
    Message {
        subject: subject.to_owned(),
        headers,
        payload,
    }
}
