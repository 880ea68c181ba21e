//! JetStream acknowledgements as the publisher's driver sees them: each
//! awaited with its place in the window, and each failure classified once,
//! here, as transient (send the same message again), a closed client, or a
//! definite rejection that stops the publisher.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;

use super::publisher::Rejection;

pub(super) async fn wait_ack(
    seq: u64,
    future: PublishAckFuture,
) -> (
    u64,
    Result<PublishAck, async_nats::jetstream::context::PublishError>,
) {
    (seq, future.await)
}

pub(super) enum Class {
    Transient(&'static str),
    Closed,
    Definite(Rejection, String),
}

pub(super) fn classify(error: &async_nats::jetstream::context::PublishError) -> Class {
    match error.kind() {
        PublishErrorKind::TimedOut => Class::Transient("no acknowledgement within the ack timeout"),
        PublishErrorKind::BrokenPipe => {
            Class::Transient("the connection was lost before the acknowledgement")
        }
        PublishErrorKind::StreamNotFound => Class::Transient(
            "no responders: JetStream is unavailable or no stream captures the subject",
        ),
        PublishErrorKind::MaxAckPending => Class::Transient("too many acknowledgements pending"),
        PublishErrorKind::MaxPayloadExceeded => {
            Class::Definite(Rejection::TooLarge, error.to_string())
        }
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            Class::Definite(Rejection::WrongLastSequence, error.to_string())
        }
        PublishErrorKind::Other => {
            let source = std::error::Error::source(error);
            match source.and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>()) {
                Some(api) => {
                    let code = api.error_code();
                    if code == ErrorCode::CLUSTER_NOT_AVAILABLE {
                        Class::Transient("the JetStream cluster is not available")
                    } else if code == ErrorCode::STREAM_NOT_MATCH {
                        Class::Definite(Rejection::WrongStream, api.to_string())
                    } else if code == ErrorCode::INSUFFICIENT_RESOURCES
                        || code == ErrorCode::STREAM_STORE_FAILED
                    {
                        Class::Definite(Rejection::StorageFull, api.to_string())
                    } else {
                        Class::Definite(Rejection::Other, api.to_string())
                    }
                }
                None if source.is_some_and(|s| s.is::<serde_json::Error>()) => Class::Definite(
                    Rejection::Other,
                    format!("unreadable acknowledgement: {error}"),
                ),
                // The only other source on this path is the client's command channel
                // being closed: the client is gone for good.
                None => Class::Closed,
            }
        }
    }
}
