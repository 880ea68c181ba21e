//! Publishing to NATS JetStream: the last stage of a pipeline.
//!
//! - [`connect`]: connection options (servers, user/password, token, NKey, credentials
//!   file, TLS) and the connection itself; secrets never reach logs or errors.
//!   `credentials` reads the expiry of a credentials file's user JWT for it.
//! - [`stream`]: create or verify the stream, so that it captures every subject the
//!   pipeline may publish to.
//! - [`subject`]: subjects, subject patterns and the pipeline's [`SubjectFilter`]
//!   (publish permissions).
//! - [`msg_id`]: the deterministic `Nats-Msg-Id` that makes replays idempotent.
//! - [`outgoing`]: a sink message plus host metadata, checked and given host headers.
//! - [`publisher`]: the ordered publisher with a bounded window of unacknowledged
//!   messages and in-order completion reports.
//!
//! The invariant the rest of the host builds on: a message's token comes back from
//! [`Completions`] only after JetStream stored the message and every message published
//! before it, so the position tracker may confirm a commit LSN once its token is back.

mod ack;
pub mod connect;
mod credentials;
pub mod msg_id;
pub mod outgoing;
pub mod publisher;
pub mod stream;
pub mod subject;

pub use crate::secret::Secret;
pub use connect::{ConnectError, NatsAuth, NatsOptions, TlsOptions, connect};
pub use msg_id::{MsgId, ghost_msg_id, msg_id, read_msg_id, timeline_msg_id};
pub use outgoing::{HostMeta, MessageError, Outgoing};
pub use publisher::{
    Completed, Completion, Completions, PublishError, Publisher, PublisherConfig, PublisherMonitor,
    PublisherStats, Rejection,
};
pub use stream::{
    Storage, StreamError, StreamReport, StreamSpec, ensure_stream, header_pairs, jetstream_busy,
    no_responder, verify_stream,
};
pub use subject::{Subject, SubjectError, SubjectFilter, SubjectPattern};
