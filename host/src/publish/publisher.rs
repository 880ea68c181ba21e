//! The ordered, windowed JetStream publisher.
//!
//! [`Publisher::publish`] takes messages in pipeline order, each with a caller's token,
//! and [`Completions`] hands the tokens back in the same order once JetStream has
//! stored the message — the ordered-finalizer pattern: a FIFO of in-flight messages
//! whose front is popped only when its ack has arrived, however the acks interleave.
//! A pipeline that passes the commit LSN as the token of a transaction's last message
//! learns exactly when everything up to that commit is durable.
//!
//! Invariants:
//! - A token is reported only after JetStream acknowledged its message (a `duplicate`
//!   ack counts: the message is stored, from an earlier attempt or an earlier run), and
//!   only after every earlier token was reported.
//! - At most `max_in_flight` messages and about `max_in_flight_bytes` bytes are between
//!   `publish` and the reader receiving their completion; `publish` waits for room.
//!   Memory stays bounded and backpressure reaches whoever reads PostgreSQL.
//! - Messages go to the server in `publish` order, one driver task sending them all.
//!   Each carries a reply subject naming its place in the window and its attempt
//!   ([`super::ack`]), so the driver reads every acknowledgement from one subscription
//!   and keeps the ack deadlines itself: nothing per message but the message.
//! - Transient failures (ack timeout, no responders, lost connection) are retried with
//!   the *same* message, including its `Nats-Msg-Id`, so a retry of a message that was
//!   stored but whose ack was lost is de-duplicated by JetStream. While any message
//!   waits for a retry, no new message is sent; retries go out in the original order
//!   after every in-flight ack has settled, with exponential backoff. A send whose ack
//!   is overdue, or that was pending when the connection went down, counts as failed;
//!   any attempt's ack still proves the message stored. Each retry round is
//!   logged as one line (how many messages, why, the first one's id), a
//!   warning only when its reasons differ from the previous round's.
//! - A definite failure (JetStream rejected the message) is reported once on
//!   [`Completions`] and stops the publisher: later `publish` calls fail.
//!
//! One order anomaly cannot be excluded without server-side sequencing: when a
//! connection breaks, a message written into the dead socket is lost while a later
//! one, still queued in the client, reaches the server after the reconnect; the retry
//! of the lost one then lands after it. Nothing is lost or duplicated, and the
//! publisher counts such cases (`PublisherStats::reordered`) and logs a warning.
//! Consumers that need strict order per row can order by the `Sluice-Lsn` header.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::ack::{self, Inbox, Reply};
use super::outgoing::{MessageError, Outgoing, Prepared};
use super::subject::SubjectFilter;
use crate::causes::Repeats;

/// How often the driver looks at the connection state while the client reconnects.
const CONNECTION_POLL: Duration = Duration::from_millis(50);

/// Tuning of a [`Publisher`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublisherConfig {
    /// Messages between `publish` and completion, at most.
    pub max_in_flight: usize,
    /// Bytes (payload and headers) between `publish` and completion, at most; a single
    /// larger message still goes, alone.
    pub max_in_flight_bytes: usize,
    /// How long to wait for one ack before the message counts as unacknowledged and is
    /// sent again.
    pub ack_timeout: Duration,
    /// First and largest pause before re-sending unacknowledged messages.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// The stream messages must land in, sent as `Nats-Expected-Stream`: JetStream then
    /// rejects a message captured by any other stream.
    pub stream: Option<String>,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            max_in_flight: 256,
            max_in_flight_bytes: 16 << 20,
            ack_timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            stream: None,
        }
    }
}

/// What kind of rejection JetStream gave; the operator's next step differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The subject is captured by another stream than the expected one.
    WrongStream,
    /// The stream or server has no room (limits with `discard: new`, disk full).
    StorageFull,
    /// The message exceeds the server's or stream's maximum size.
    TooLarge,
    /// An expected-last-sequence or -message-id check failed.
    WrongLastSequence,
    /// Anything else the server refused.
    Other,
}

/// Why a message was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The message itself is not acceptable (subject, headers); nothing was sent.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// JetStream definitely refused the message; retrying cannot help.
    #[error("JetStream rejected message `{msg_id}` to `{subject}`: {reason}")]
    Rejected {
        subject: String,
        msg_id: String,
        kind: Rejection,
        reason: String,
        #[source]
        source: Option<async_nats::jetstream::Error>,
    },
    /// The NATS client was closed, so nothing more can be sent.
    #[error(
        "the NATS connection was closed while message `{msg_id}` to `{subject}` was unacknowledged"
    )]
    ConnectionClosed { subject: String, msg_id: String },
    /// An earlier definite failure stopped the publisher.
    #[error("the publisher stopped after an earlier failure: {0}")]
    Stopped(String),
}

impl PublishError {
    /// Whether the pipeline's error policy may handle this one message and go on: true
    /// for errors about the message itself, detected before sending.
    pub fn is_message_error(&self) -> bool {
        matches!(self, PublishError::Message(_))
    }
}

/// A message JetStream stored, reported in `publish` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed<T> {
    pub token: T,
    /// The message's sequence in the stream.
    pub sequence: u64,
    /// JetStream had already stored a message with this `Nats-Msg-Id`.
    pub duplicate: bool,
}

/// What [`Completions::recv`] yields: the next token in order, or the definite failure
/// that stopped the publisher (reported once, then the channel ends).
pub type Completion<T> = Result<Completed<T>, PublishError>;

/// The in-order stream of completions of one [`Publisher`]. It ends after the
/// publisher is dropped and every message it accepted is completed, or after a
/// definite failure.
///
/// A completion keeps its message's place in the window until it is received here, so
/// unread completions count as in flight: read them in another task than the one
/// calling `publish`, or `publish` waits forever once the window is full.
#[derive(Debug)]
pub struct Completions<T> {
    rx: mpsc::UnboundedReceiver<Report<T>>,
}

/// A completion on its way to the reader, still holding its window permits.
#[derive(Debug)]
struct Report<T> {
    completion: Completion<T>,
    _permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl<T> Completions<T> {
    /// The next completion; `None` once the publisher is gone and everything is done.
    /// Receiving it frees its message's room in the window.
    pub async fn recv(&mut self) -> Option<Completion<T>> {
        self.rx.recv().await.map(|report| report.completion)
    }

    /// The next completion if one is ready now, without waiting: how a reader takes
    /// everything completed in one go.
    pub fn try_recv(&mut self) -> Option<Completion<T>> {
        self.rx.try_recv().ok().map(|report| report.completion)
    }
}

/// A snapshot of the publisher's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Messages accepted by `publish` and not yet completed (the window's occupancy).
    pub in_flight: usize,
    pub in_flight_bytes: usize,
    /// The largest `in_flight` and `in_flight_bytes` seen.
    pub max_in_flight: usize,
    pub max_in_flight_bytes: usize,
    /// The largest number of messages sent and awaiting an ack at once.
    pub max_awaiting_ack: usize,
    /// Sends, including retries.
    pub sent: u64,
    /// Messages completed (stored).
    pub stored: u64,
    /// Of those, acknowledged as duplicates.
    pub duplicates: u64,
    /// Re-sends after a transient failure.
    pub retries: u64,
    /// Transient failures seen (timeouts, no responders, lost connections).
    pub transient_failures: u64,
    /// Messages stored at a lower stream sequence than the message before them.
    pub reordered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    max_in_flight: AtomicUsize,
    max_in_flight_bytes: AtomicUsize,
    max_awaiting_ack: AtomicUsize,
    sent: AtomicU64,
    stored: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
    transient_failures: AtomicU64,
    reordered: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    counters: Counters,
    /// Why the driver stopped, once it has.
    stopped: Mutex<Option<String>>,
}

struct Job<T> {
    /// `None` for a mark: nothing to send.
    prepared: Option<Prepared>,
    token: T,
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Publishes messages to JetStream in order with a bounded window of unacknowledged
/// messages. Call [`publish`](Self::publish) from one task: the order of completed
/// `publish` calls is the order on the wire.
#[derive(Debug)]
pub struct Publisher<T> {
    jobs: mpsc::UnboundedSender<Job<T>>,
    count: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_in_flight: usize,
    byte_limit: u32,
    filter: SubjectFilter,
    stream: Option<Arc<str>>,
    shared: Arc<Shared>,
}

impl<T: Send + 'static> Publisher<T> {
    /// Starts a publisher on `client` (and its driver task on the current runtime).
    /// Zero limits are raised to one.
    pub fn new(
        client: async_nats::Client,
        filter: SubjectFilter,
        config: PublisherConfig,
    ) -> (Self, Completions<T>) {
        let max_in_flight = config.max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        // Semaphores count permits in u32 for `acquire_many`.
        let byte_limit = u32::try_from(config.max_in_flight_bytes.max(1)).unwrap_or(u32::MAX);
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        // Unbounded, yet bounded by the window: every report holds its message's permits.
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let count = Arc::new(Semaphore::new(max_in_flight));
        let bytes = Arc::new(Semaphore::new(byte_limit as usize));
        let shared = Arc::new(Shared::default());
        let stream = config.stream.as_deref().map(Arc::from);
        let driver = Driver {
            inbox: Inbox::new(&client),
            client,
            jobs: jobs_rx,
            completions: done_tx,
            slots: VecDeque::with_capacity(max_in_flight),
            awaiting: VecDeque::with_capacity(max_in_flight),
            pending: 0,
            next_seq: 0,
            failed: 0,
            closed: false,
            rounds: 0,
            round_failures: Vec::new(),
            round_reasons: Repeats::default(),
            last_sequence: 0,
            config,
            shared: shared.clone(),
            count: count.clone(),
            bytes: bytes.clone(),
        };
        tokio::spawn(driver.run());
        let publisher = Publisher {
            jobs: jobs_tx,
            count,
            bytes,
            max_in_flight,
            byte_limit,
            filter,
            stream,
            shared,
        };
        (publisher, Completions { rx: done_rx })
    }
}

impl<T> Publisher<T> {
    /// Checks `message`, waits for room in the window and queues it for sending.
    /// Returns once the message is queued, not when it is stored: that is reported, in
    /// order, on [`Completions`].
    pub async fn publish(&self, message: Outgoing, token: T) -> Result<(), PublishError> {
        let prepared = message.prepare(&self.filter, self.stream.as_ref())?;
        let weight = u32::try_from(prepared.size)
            .unwrap_or(u32::MAX)
            .clamp(1, self.byte_limit);
        let (count, bytes) = self.room(weight).await?;
        // The window's occupancy including this message, for the high-water marks.
        let stats = self.stats();
        let counters = &self.shared.counters;
        counters
            .max_in_flight
            .fetch_max(stats.in_flight, Ordering::Relaxed);
        counters
            .max_in_flight_bytes
            .fetch_max(stats.in_flight_bytes, Ordering::Relaxed);
        self.jobs
            .send(Job {
                prepared: Some(prepared),
                token,
                permits: (count, bytes),
            })
            .map_err(|_| self.stopped())
    }

    /// Queues a mark: `token` is reported on [`Completions`] once every message
    /// published before it is stored, and nothing is sent. A mark takes a place in
    /// the window (no bytes), so marks too stay bounded. This is how a pipeline
    /// learns that a transaction that produced few messages, or none, is stored.
    pub async fn mark(&self, token: T) -> Result<(), PublishError> {
        let permits = self.room(0).await?;
        self.jobs
            .send(Job {
                prepared: None,
                token,
                permits,
            })
            .map_err(|_| self.stopped())
    }

    /// Waits for one place and `weight` bytes in the window.
    async fn room(
        &self,
        weight: u32,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), PublishError> {
        let count = self
            .count
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.stopped())?;
        let bytes = self
            .bytes
            .clone()
            .acquire_many_owned(weight)
            .await
            .map_err(|_| self.stopped())?;
        Ok((count, bytes))
    }

    /// The subjects this publisher accepts.
    pub fn filter(&self) -> &SubjectFilter {
        &self.filter
    }

    /// Current counters.
    pub fn stats(&self) -> PublisherStats {
        stats(
            &self.shared,
            (&self.count, self.max_in_flight),
            (&self.bytes, self.byte_limit),
        )
    }

    /// A handle that reads [`Self::stats`] from elsewhere (a metrics
    /// endpoint) without keeping the publisher open: dropping the publisher
    /// still ends its driver once everything in flight is completed.
    pub fn monitor(&self) -> PublisherMonitor {
        PublisherMonitor {
            count: self.count.clone(),
            bytes: self.bytes.clone(),
            max_in_flight: self.max_in_flight,
            byte_limit: self.byte_limit,
            shared: self.shared.clone(),
        }
    }

    fn stopped(&self) -> PublishError {
        let reason = self.shared.stopped.lock().ok().and_then(|s| s.clone());
        PublishError::Stopped(reason.unwrap_or_else(|| "the publisher task ended".to_owned()))
    }
}

/// Reads a [`Publisher`]'s counters; see [`Publisher::monitor`].
#[derive(Clone, Debug)]
pub struct PublisherMonitor {
    count: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_in_flight: usize,
    byte_limit: u32,
    shared: Arc<Shared>,
}

impl PublisherMonitor {
    /// Current counters.
    pub fn stats(&self) -> PublisherStats {
        stats(
            &self.shared,
            (&self.count, self.max_in_flight),
            (&self.bytes, self.byte_limit),
        )
    }
}

/// The counters, with the window's occupancy from its semaphores.
fn stats(
    shared: &Shared,
    (count, max_in_flight): (&Semaphore, usize),
    (bytes, byte_limit): (&Semaphore, u32),
) -> PublisherStats {
    let c = &shared.counters;
    PublisherStats {
        in_flight: max_in_flight.saturating_sub(count.available_permits()),
        in_flight_bytes: (byte_limit as usize).saturating_sub(bytes.available_permits()),
        max_in_flight: c.max_in_flight.load(Ordering::Relaxed),
        max_in_flight_bytes: c.max_in_flight_bytes.load(Ordering::Relaxed),
        max_awaiting_ack: c.max_awaiting_ack.load(Ordering::Relaxed),
        sent: c.sent.load(Ordering::Relaxed),
        stored: c.stored.load(Ordering::Relaxed),
        duplicates: c.duplicates.load(Ordering::Relaxed),
        retries: c.retries.load(Ordering::Relaxed),
        transient_failures: c.transient_failures.load(Ordering::Relaxed),
        reordered: c.reordered.load(Ordering::Relaxed),
    }
}

enum SlotState {
    /// A mark: complete once it reaches the front.
    Mark,
    /// Accepted; its first send follows at once.
    Queued,
    /// Sent, ack not yet in.
    Pending,
    Stored {
        sequence: u64,
        duplicate: bool,
    },
    /// Unacknowledged for a transient reason; to be sent again.
    Failed,
}

struct Slot<T> {
    seq: u64,
    /// `None` for a mark.
    prepared: Option<Prepared>,
    token: T,
    state: SlotState,
    attempts: u32,
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// The task that owns the connection side: sends in order, reads the acks on its
/// inbox, retries, and reports completions from the front of the FIFO.
struct Driver<T> {
    client: async_nats::Client,
    inbox: Inbox,
    jobs: mpsc::UnboundedReceiver<Job<T>>,
    completions: mpsc::UnboundedSender<Report<T>>,
    /// In-flight messages in `publish` order; `slots[i].seq == slots[0].seq + i`.
    slots: VecDeque<Slot<T>>,
    /// Sends awaiting their ack, in the order they went out, with their deadlines:
    /// (slot, attempt, deadline). Entries whose slot has moved on are skipped lazily.
    /// Sends go out in slot order within a round and a retry round starts only when
    /// nothing is pending, so the front holds the earliest deadline.
    awaiting: VecDeque<(u64, u32, Instant)>,
    /// Slots in the `Pending` state.
    pending: usize,
    next_seq: u64,
    /// Slots in the `Failed` state.
    failed: usize,
    /// The publisher was dropped: finish what is in flight, then end.
    closed: bool,
    /// Retry rounds since the front last made progress, for the backoff.
    rounds: u32,
    /// Why the sends given up on since the last retry round failed, with how
    /// many each: one warning per retry round, not one per message.
    round_failures: Vec<(&'static str, usize)>,
    /// The previous rounds' reasons since the front last made progress: an
    /// outage warns when it starts and when its reason changes.
    round_reasons: Repeats,
    /// Stream sequence of the last completed non-duplicate message.
    last_sequence: u64,
    config: PublisherConfig,
    shared: Arc<Shared>,
    count: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

enum Step {
    Reply(Option<async_nats::Message>),
    /// This many jobs were taken into the driver's buffer; none: the publisher is gone.
    Jobs(usize),
    Tick,
}

/// Jobs the driver takes from its queue per wake-up, at most.
const JOBS_PER_TURN: usize = 64;

impl<T: Send + 'static> Driver<T> {
    async fn run(mut self) {
        if let Err(error) = self.drive().await {
            tracing::error!(error = %error, "JetStream publisher stopped");
            if let Ok(mut stopped) = self.shared.stopped.lock() {
                *stopped = Some(error.to_string());
            }
            // Wake and fail every `publish` waiting for room.
            self.count.close();
            self.bytes.close();
            let _ = self.completions.send(Report {
                completion: Err(error),
                _permits: None,
            });
        }
    }

    async fn drive(&mut self) -> Result<(), PublishError> {
        let mut replies = self
            .client
            .subscribe(self.inbox.wildcard())
            .await
            .map_err(|e| {
                PublishError::Stopped(format!("cannot subscribe to acknowledgements: {e}"))
            })?;
        // Looks at the connection and the ack deadlines while anything is pending;
        // one timer, re-armed when it fires.
        let tick = tokio::time::sleep(CONNECTION_POLL);
        tokio::pin!(tick);
        let mut jobs = Vec::with_capacity(JOBS_PER_TURN);
        loop {
            self.complete_front();
            if self.closed && self.slots.is_empty() {
                return Ok(());
            }
            if self.failed > 0 && self.pending == 0 {
                self.retry_failed().await?;
                continue;
            }
            let connected = self.client.connection_state() == State::Connected;
            // No new message while one waits for a retry (it must go first) or while
            // disconnected (it would queue behind messages whose fate is unknown).
            let accept = self.failed == 0 && !self.closed && connected;
            let watch = self.pending > 0 || !connected;
            let step = tokio::select! {
                reply = replies.next() => Step::Reply(reply),
                n = self.jobs.recv_many(&mut jobs, JOBS_PER_TURN), if accept => Step::Jobs(n),
                () = &mut tick, if watch => Step::Tick,
            };
            match step {
                Step::Reply(Some(reply)) => self.on_reply(&reply)?,
                Step::Reply(None) => return Err(self.closed_error()),
                Step::Jobs(0) => self.closed = true,
                Step::Jobs(_) => {
                    for job in jobs.drain(..) {
                        self.start(job).await?;
                    }
                }
                Step::Tick => {
                    self.on_tick(connected);
                    tick.as_mut()
                        .reset(tokio::time::Instant::now() + CONNECTION_POLL);
                }
            }
        }
    }

    /// Reports the stored prefix of the FIFO, in order.
    fn complete_front(&mut self) {
        loop {
            let (sequence, duplicate) = match self.slots.front().map(|s| &s.state) {
                Some(SlotState::Stored {
                    sequence,
                    duplicate,
                }) => (*sequence, *duplicate),
                Some(SlotState::Mark) => {
                    if let Some(slot) = self.slots.pop_front() {
                        let _ = self.completions.send(Report {
                            completion: Ok(Completed {
                                token: slot.token,
                                sequence: 0,
                                duplicate: false,
                            }),
                            _permits: Some(slot.permits),
                        });
                    }
                    continue;
                }
                _ => break,
            };
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            if self.rounds > 0 {
                self.rounds = 0;
                self.round_reasons = Repeats::default();
            }
            let counters = &self.shared.counters;
            counters.stored.fetch_add(1, Ordering::Relaxed);
            if duplicate {
                counters.duplicates.fetch_add(1, Ordering::Relaxed);
            } else {
                if sequence < self.last_sequence {
                    counters.reordered.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        msg_id = %slot.prepared.as_ref().map_or("", |p| p.msg_id()),
                        sequence,
                        previous = self.last_sequence,
                        "message stored after a later one: it was lost with a broken connection and re-sent"
                    );
                }
                self.last_sequence = sequence;
            }
            // A dropped receiver means nobody waits for completions; publishing goes on.
            let _ = self.completions.send(Report {
                completion: Ok(Completed {
                    token: slot.token,
                    sequence,
                    duplicate,
                }),
                _permits: Some(slot.permits),
            });
        }
    }

    async fn start(&mut self, job: Job<T>) -> Result<(), PublishError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mark = job.prepared.is_none();
        self.slots.push_back(Slot {
            seq,
            prepared: job.prepared,
            token: job.token,
            state: if mark {
                SlotState::Mark
            } else {
                SlotState::Queued
            },
            attempts: 0,
            permits: job.permits,
        });
        if mark {
            return Ok(());
        }
        self.send(self.slots.len() - 1).await
    }

    /// Sends slot `index` (again) with a reply subject naming it and this attempt.
    async fn send(&mut self, index: usize) -> Result<(), PublishError> {
        let deadline = Instant::now() + self.config.ack_timeout;
        let slot = &mut self.slots[index];
        let Some(p) = &mut slot.prepared else {
            debug_assert!(false, "a mark is never sent");
            return Ok(());
        };
        slot.state = SlotState::Pending;
        slot.attempts += 1;
        self.pending += 1;
        self.awaiting.push_back((slot.seq, slot.attempts, deadline));
        let reply = self.inbox.reply(slot.seq, slot.attempts);
        let headers = p.take_headers();
        let counters = &self.shared.counters;
        counters.sent.fetch_add(1, Ordering::Relaxed);
        counters
            .max_awaiting_ack
            .fetch_max(self.pending, Ordering::Relaxed);
        let sent = self
            .client
            .publish_with_reply_and_headers(
                p.subject.as_str().to_owned(),
                reply,
                headers,
                p.payload.clone(),
            )
            .await;
        let Err(error) = sent else {
            return Ok(());
        };
        let (subject, msg_id) = (p.subject.to_string(), p.msg_id().to_owned());
        Err(match error.kind() {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded => PublishError::Rejected {
                subject,
                msg_id,
                kind: Rejection::TooLarge,
                reason: error.to_string(),
                source: None,
            },
            async_nats::client::PublishErrorKind::InvalidSubject => PublishError::Rejected {
                subject,
                msg_id,
                kind: Rejection::Other,
                reason: error.to_string(),
                source: None,
            },
            // The client's command channel is closed: the client is gone for good.
            async_nats::client::PublishErrorKind::Send => {
                PublishError::ConnectionClosed { subject, msg_id }
            }
        })
    }

    /// A reply on the inbox: the ack (or refusal) of one send.
    fn on_reply(&mut self, reply: &async_nats::Message) -> Result<(), PublishError> {
        let Some((seq, attempt)) = self.inbox.parse(reply.subject.as_str()) else {
            return Ok(());
        };
        // A late reply for a slot already completed is of no interest.
        let Some(index) = self.index_of(seq) else {
            return Ok(());
        };
        let current = self.slots[index].attempts == attempt;
        let outcome = ack::read(reply, self.config.stream.as_deref());
        let slot = &mut self.slots[index];
        let Some(p) = &slot.prepared else {
            debug_assert!(false, "a reply for a mark");
            return Ok(());
        };
        let mut retry = None;
        match (&slot.state, outcome) {
            // Stored already (an earlier attempt's ack counts as much as this one).
            (SlotState::Stored { .. } | SlotState::Mark | SlotState::Queued, _) => {}
            (
                _,
                Reply::Stored {
                    sequence,
                    duplicate,
                },
            ) => {
                // Any attempt's ack proves the message stored: every attempt sends
                // the same message with the same `Nats-Msg-Id`.
                if matches!(slot.state, SlotState::Pending) {
                    self.pending -= 1;
                } else {
                    self.failed -= 1;
                }
                slot.state = SlotState::Stored {
                    sequence,
                    duplicate,
                };
            }
            (SlotState::Pending, Reply::Transient(reason)) if current => retry = Some(reason),
            // A transient failure of an attempt already given up on changes nothing.
            (_, Reply::Transient(_)) => {}
            (
                _,
                Reply::Definite {
                    kind,
                    reason,
                    source,
                },
            ) => {
                return Err(PublishError::Rejected {
                    subject: p.subject.to_string(),
                    msg_id: p.msg_id().to_owned(),
                    kind,
                    reason,
                    source,
                });
            }
        }
        if let Some(reason) = retry {
            self.give_up(seq, reason);
        }
        Ok(())
    }

    /// Gives up on sends whose ack is overdue, and on every pending send once the
    /// connection is seen down (their acks, if any, went to the old connection).
    fn on_tick(&mut self, connected: bool) {
        let now = Instant::now();
        while let Some(&(seq, attempt, deadline)) = self.awaiting.front() {
            let waiting = self.index_of(seq).is_some_and(|i| {
                let slot = &self.slots[i];
                slot.attempts == attempt && matches!(slot.state, SlotState::Pending)
            });
            if waiting && connected && deadline > now {
                break;
            }
            self.awaiting.pop_front();
            if waiting {
                let reason = if connected {
                    "no acknowledgement within the ack timeout"
                } else {
                    "the connection was lost before the acknowledgement"
                };
                self.give_up(seq, reason);
            }
        }
    }

    /// Marks the pending send of slot `seq` failed, for a retry.
    fn give_up(&mut self, seq: u64, reason: &'static str) {
        let Some(index) = self.index_of(seq) else {
            return;
        };
        let slot = &mut self.slots[index];
        if let Some(p) = &slot.prepared {
            tracing::debug!(
                msg_id = %p.msg_id(),
                subject = %p.subject,
                attempt = slot.attempts,
                "message not acknowledged ({reason}); it will be sent again"
            );
        }
        match self.round_failures.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.round_failures.push((reason, 1)),
        }
        slot.state = SlotState::Failed;
        self.pending -= 1;
        self.failed += 1;
        self.shared
            .counters
            .transient_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Where slot `seq` is in the FIFO, if it is still in flight.
    fn index_of(&self, seq: u64) -> Option<usize> {
        let base = self.slots.front()?.seq;
        let index = usize::try_from(seq.checked_sub(base)?).ok()?;
        (index < self.slots.len()).then_some(index)
    }

    /// The error for a client that closed with messages in flight.
    /// With nothing in flight there is no message to name.
    fn closed_error(&self) -> PublishError {
        match self.slots.iter().find_map(|s| s.prepared.as_ref()) {
            Some(p) => PublishError::ConnectionClosed {
                subject: p.subject.to_string(),
                msg_id: p.msg_id().to_owned(),
            },
            None => PublishError::Stopped("the NATS connection was closed".to_owned()),
        }
    }

    /// Nothing is pending and some messages failed: after a backoff and once
    /// connected, send the failed ones again, in order.
    async fn retry_failed(&mut self) -> Result<(), PublishError> {
        let pause = self
            .config
            .retry_min
            .saturating_mul(1u32 << self.rounds.min(16))
            .min(self.config.retry_max);
        self.rounds = self.rounds.saturating_add(1);
        self.report_round(pause);
        tokio::time::sleep(pause).await;
        while self.client.connection_state() != State::Connected {
            tokio::time::sleep(CONNECTION_POLL).await;
        }
        self.awaiting.clear();
        for index in 0..self.slots.len() {
            if matches!(self.slots[index].state, SlotState::Failed) {
                self.failed -= 1;
                self.shared.counters.retries.fetch_add(1, Ordering::Relaxed);
                self.send(index).await?;
            }
        }
        debug_assert_eq!(self.failed, 0);
        Ok(())
    }

    /// Logs the retry round about to start: one line for every message it
    /// sends again, naming the first; a warning when the reasons differ from
    /// the previous round's (so an outage reads as one line), debug
    /// otherwise.
    fn report_round(&mut self, pause: Duration) {
        let reasons = std::mem::take(&mut self.round_failures);
        let why = reasons
            .iter()
            .map(|(reason, _)| *reason)
            .collect::<Vec<_>>()
            .join("; ");
        let counts = reasons
            .iter()
            .map(|(reason, n)| format!("{reason}: {n}"))
            .collect::<Vec<_>>()
            .join("; ");
        let first = self
            .slots
            .iter()
            .find(|slot| matches!(slot.state, SlotState::Failed))
            .and_then(|slot| slot.prepared.as_ref());
        let (msg_id, subject) = first.map_or(("", ""), |p| (p.msg_id(), p.subject.as_str()));
        if self.round_reasons.is_new(&why) {
            tracing::warn!(
                messages = self.failed,
                first_msg_id = msg_id,
                first_subject = subject,
                round = self.rounds,
                ?pause,
                "messages not acknowledged ({counts}); they will be sent again, in order"
            );
        } else {
            tracing::debug!(
                messages = self.failed,
                first_msg_id = msg_id,
                round = self.rounds,
                ?pause,
                "messages not acknowledged ({counts}); they will be sent again, in order"
            );
        }
    }
}
