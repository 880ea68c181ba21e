//! JetStream acknowledgements as the publisher's driver reads them.
//!
//! Every message goes out with a reply subject on the driver's own inbox,
//! `<inbox>.<slot>.<attempt>`, and JetStream answers there: one subscription
//! for all acknowledgements, so a reply finds its message by its subject, with
//! no per-message future, channel or timer. Each reply is read and classified
//! once, here: stored (with its stream sequence), transient (send the same
//! message again), or a definite rejection that stops the publisher.

use std::borrow::Cow;

use async_nats::jetstream::ErrorCode;
use async_nats::{Message, StatusCode};

use super::publisher::Rejection;

/// The driver's inbox: where replies to its messages arrive.
#[derive(Debug)]
pub(super) struct Inbox {
    prefix: String,
}

impl Inbox {
    pub(super) fn new(client: &async_nats::Client) -> Self {
        Inbox {
            prefix: client.new_inbox(),
        }
    }

    /// The subject to subscribe to for every reply.
    pub(super) fn wildcard(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// The reply subject of attempt `attempt` of slot `seq`.
    pub(super) fn reply(&self, seq: u64, attempt: u32) -> String {
        // Once per send: printed without the formatting machinery.
        let mut reply = String::with_capacity(self.prefix.len() + 24);
        reply.push_str(&self.prefix);
        let mut digits = itoa::Buffer::new();
        reply.push('.');
        reply.push_str(digits.format(seq));
        reply.push('.');
        reply.push_str(digits.format(attempt));
        reply
    }

    /// The slot and attempt a reply is for; `None` for a subject that is not one of
    /// ours.
    pub(super) fn parse(&self, subject: &str) -> Option<(u64, u32)> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        let (seq, attempt) = rest.split_once('.')?;
        Some((seq.parse().ok()?, attempt.parse().ok()?))
    }
}

/// What a reply says about its message.
#[derive(Debug)]
pub(super) enum Reply {
    Stored {
        sequence: u64,
        duplicate: bool,
    },
    /// Not stored, for a reason that may pass: send the same message again.
    Transient(&'static str),
    /// Refused; sending it again cannot help.
    Definite {
        kind: Rejection,
        reason: String,
        source: Option<async_nats::jetstream::Error>,
    },
}

/// A JetStream publish acknowledgement: `{"stream":…,"seq":…,"duplicate":…}`
/// or `{"error":{…}}`.
#[derive(serde::Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    stream: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    error: Option<async_nats::jetstream::Error>,
}

/// Reads a reply; `expected` is the stream the message must have landed in.
pub(super) fn read(reply: &Message, expected: Option<&str>) -> Reply {
    if let Some(status) = reply.status
        && status != StatusCode::OK
    {
        if status == StatusCode::NO_RESPONDERS {
            return Reply::Transient(
                "no responders: JetStream is unavailable or no stream captures the subject",
            );
        }
        return Reply::Definite {
            kind: Rejection::Other,
            reason: format!(
                "the server answered with status {status}{}",
                reply
                    .description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            source: None,
        };
    }
    let body: Body = match serde_json::from_slice(&reply.payload) {
        Ok(body) => body,
        Err(error) => {
            return Reply::Definite {
                kind: Rejection::Other,
                reason: format!("unreadable acknowledgement: {error}"),
                source: None,
            };
        }
    };
    if let Some(api) = body.error {
        return classify(api);
    }
    match (body.stream, body.seq) {
        (Some(stream), Some(sequence)) => match expected {
            Some(expected) if stream != expected => Reply::Definite {
                kind: Rejection::WrongStream,
                reason: format!("it was stored in stream `{stream}`, not in `{expected}`"),
                source: None,
            },
            _ => Reply::Stored {
                sequence,
                duplicate: body.duplicate,
            },
        },
        _ => Reply::Definite {
            kind: Rejection::Other,
            reason: format!(
                "unreadable acknowledgement: {}",
                String::from_utf8_lossy(&reply.payload)
            ),
            source: None,
        },
    }
}

/// A JetStream API error, by its error code.
fn classify(api: async_nats::jetstream::Error) -> Reply {
    let code = api.error_code();
    let kind = if code == ErrorCode::CLUSTER_NOT_AVAILABLE {
        return Reply::Transient("the JetStream cluster is not available");
    } else if code == ErrorCode::STREAM_NOT_MATCH {
        Rejection::WrongStream
    } else if code == ErrorCode::INSUFFICIENT_RESOURCES || code == ErrorCode::STREAM_STORE_FAILED {
        Rejection::StorageFull
    } else if code == ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID
        || code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE
    {
        Rejection::WrongLastSequence
    } else if code == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
        || code == ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM
    {
        Rejection::TooLarge
    } else {
        Rejection::Other
    };
    Reply::Definite {
        kind,
        reason: api.to_string(),
        source: Some(api),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(payload: &str) -> Message {
        Message {
            subject: "_INBOX.x.1.1".into(),
            reply: None,
            payload: payload.to_owned().into(),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn reply_subjects_name_slot_and_attempt() {
        let inbox = Inbox {
            prefix: "_INBOX.abc".into(),
        };
        assert_eq!(inbox.reply(42, 3), "_INBOX.abc.42.3");
        assert_eq!(inbox.parse("_INBOX.abc.42.3"), Some((42, 3)));
        assert_eq!(inbox.parse("_INBOX.abcd.42.3"), None);
        assert_eq!(inbox.parse("_INBOX.abc.42"), None);
        assert_eq!(inbox.parse("_INBOX.abc.x.1"), None);
        assert_eq!(inbox.wildcard(), "_INBOX.abc.>");
    }

    #[test]
    fn acknowledgements_are_read() {
        assert!(matches!(
            read(&reply(r#"{"stream":"CDC","seq":7}"#), Some("CDC")),
            Reply::Stored {
                sequence: 7,
                duplicate: false
            }
        ));
        assert!(matches!(
            read(
                &reply(r#"{"stream":"CDC","domain":"hub","seq":8,"duplicate":true}"#),
                None
            ),
            Reply::Stored {
                sequence: 8,
                duplicate: true
            }
        ));
        match read(&reply(r#"{"stream":"OTHER","seq":7}"#), Some("CDC")) {
            Reply::Definite { kind, reason, .. } => {
                assert_eq!(kind, Rejection::WrongStream);
                assert_eq!(reason, "it was stored in stream `OTHER`, not in `CDC`");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_are_classified() {
        let error = |code: u64, err_code: u64| {
            reply(&format!(
                r#"{{"error":{{"code":{code},"err_code":{err_code},"description":"d"}}}}"#
            ))
        };
        let kind = |r: Reply| match r {
            Reply::Definite { kind, .. } => Some(kind),
            _ => None,
        };
        assert_eq!(
            kind(read(&error(400, 10060), None)),
            Some(Rejection::WrongStream)
        );
        assert_eq!(
            kind(read(&error(503, 10077), None)),
            Some(Rejection::StorageFull)
        );
        assert_eq!(
            kind(read(&error(500, 10023), None)),
            Some(Rejection::StorageFull)
        );
        assert_eq!(
            kind(read(&error(400, 10070), None)),
            Some(Rejection::WrongLastSequence)
        );
        assert_eq!(kind(read(&error(400, 12345), None)), Some(Rejection::Other));
        assert_eq!(
            kind(read(&error(400, 10054), None)),
            Some(Rejection::TooLarge)
        );
        assert!(matches!(
            read(&error(503, 10008), None),
            Reply::Transient(_)
        ));
        match read(&error(503, 10077), None) {
            Reply::Definite { reason, .. } => assert_eq!(reason, "d (code 503, error code 10077)"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read(&reply("not json"), None),
            Reply::Definite { .. }
        ));
        assert!(matches!(read(&reply("{}"), None), Reply::Definite { .. }));
        let mut no_responders = reply("");
        no_responders.status = Some(StatusCode::NO_RESPONDERS);
        assert!(matches!(read(&no_responders, None), Reply::Transient(_)));
    }
}
