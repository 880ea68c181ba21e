//! A sink's message plus what the host adds to it, checked and turned into the form
//! the NATS client sends.
//!
//! The host owns delivery, so the headers that steer it are the host's alone: the
//! sink's headers may not use the `Nats-` prefix (JetStream reads `Nats-Msg-Id`,
//! `Nats-Expected-*`, `Nats-Rollup`, `Nats-TTL`… from there and a sink could break
//! de-duplication or purge a stream with them) nor the `Sluice-` prefix (the host's
//! metadata, which consumers must be able to trust). Such a header is rejected with an
//! error naming it, not dropped: a silently dropped header hides a plugin bug, while an
//! error goes through the pipeline's error policy (stop, dead-letter or skip). Header
//! names are compared without regard to case, as NATS clients disagree on case.

use std::sync::Arc;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

use super::subject::{Subject, SubjectError, SubjectFilter};
use crate::lsn::Lsn;
use crate::model::Message;

/// JetStream's de-duplication header.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// JetStream rejects the message unless this stream captures its subject.
pub const EXPECTED_STREAM: &str = "Nats-Expected-Stream";
/// The commit LSN of the message's transaction, in PostgreSQL's `X/X` form.
pub const COMMIT_LSN: &str = "Sluice-Commit-Lsn";
/// The LSN of the event the message was made from.
pub const LSN: &str = "Sluice-Lsn";
/// `schema.table` of the row the message was made from (for a truncate of
/// several tables, their names joined by `,`).
pub const TABLE: &str = "Sluice-Table";
/// What happened: `insert`, `update`, `delete`, `read`, `truncate` or `message`.
pub const OP: &str = "Sluice-Op";
/// On a dead-letter message: why a plugin failed on the event (one line, at
/// most [`MAX_ERROR_HEADER`] characters; the payload has it in full).
pub const ERROR: &str = "Sluice-Error";
/// The longest `Sluice-Error` header value, in characters.
pub const MAX_ERROR_HEADER: usize = 1000;

/// Header prefixes reserved for JetStream and the host.
const RESERVED_PREFIXES: [&str; 2] = ["nats-", "sluice-"];

/// Why a message cannot be published as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The subject is malformed or outside the pipeline's permissions.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// A sink header uses a name reserved for JetStream or the host.
    #[error(
        "header `{name}` on a message to `{subject}` is reserved: a sink may not set headers starting with `Nats-` or `Sluice-` (the host sets them)"
    )]
    ReservedHeader { subject: String, name: String },
    /// A header name or value cannot be encoded in the NATS protocol.
    #[error("header `{name}` on a message to `{subject}` is malformed: {reason}")]
    MalformedHeader {
        subject: String,
        name: String,
        reason: &'static str,
    },
}

/// What the host knows about a message besides its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMeta {
    /// The `Nats-Msg-Id`, normally from [`super::msg_id`].
    pub msg_id: String,
    /// The commit LSN of the message's transaction.
    pub commit_lsn: Lsn,
    /// The LSN of the event, when the message was made from one.
    pub lsn: Option<Lsn>,
    /// `schema.table`, when the event concerned tables.
    pub table: Option<Arc<str>>,
    /// The operation (`Operation::as_str()`, `"truncate"` or `"message"`), when known.
    pub op: Option<&'static str>,
    /// For a dead-letter message, the error.
    pub error: Option<String>,
}

/// A message ready to go: the sink's message and the host's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub message: Message,
    pub meta: HostMeta,
}

/// A checked message in the client's form. Cloning is cheap (the payload is shared),
/// which matters because a retry sends the same message again.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    pub(crate) subject: Subject,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
    /// Payload plus header bytes: what the byte window counts.
    pub(crate) size: usize,
    pub(crate) msg_id: String,
}

impl Outgoing {
    /// Checks the subject against `filter` and the sink's headers, and adds the host's
    /// headers (and `Nats-Expected-Stream` when `stream` is given).
    pub(crate) fn prepare(
        self,
        filter: &SubjectFilter,
        stream: Option<&str>,
    ) -> Result<Prepared, MessageError> {
        let Outgoing { message, meta } = self;
        let subject = filter.check(&message.subject)?;
        let mut headers = HeaderMap::new();
        let mut size = 0;
        for (name, value) in &message.headers {
            let lower = name.to_ascii_lowercase();
            if RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p)) {
                return Err(MessageError::ReservedHeader {
                    subject: subject.to_string(),
                    name: name.clone(),
                });
            }
            let malformed = |reason| MessageError::MalformedHeader {
                subject: subject.to_string(),
                name: name.chars().take(200).collect(),
                reason,
            };
            if name.is_empty() {
                return Err(malformed("the name is empty"));
            }
            // Parsing (rather than `&str` conversion, which panics) validates.
            let header_name: HeaderName = name
                .parse()
                .map_err(|_| malformed("a name may contain only printable ASCII other than `:`"))?;
            let header_value: HeaderValue = value
                .parse()
                .map_err(|_| malformed("a value may not contain a line break"))?;
            size += name.len() + value.len() + 4;
            headers.append(header_name, header_value);
        }
        let mut host = |name: &'static str, value: String| {
            size += name.len() + value.len() + 4;
            // Host values are built from validated parts and never hold line breaks;
            // parsing anyway keeps this free of panics on odd table names.
            if let Ok(value) = value.parse::<HeaderValue>() {
                headers.insert(name, value);
            }
        };
        host(MSG_ID, meta.msg_id.clone());
        host(COMMIT_LSN, meta.commit_lsn.to_string());
        if let Some(lsn) = meta.lsn {
            host(LSN, lsn.to_string());
        }
        if let Some(table) = meta.table {
            host(TABLE, table.to_string());
        }
        if let Some(op) = meta.op {
            host(OP, op.to_owned());
        }
        if let Some(error) = meta.error {
            let line = error
                .replace(['\r', '\n'], " ")
                .chars()
                .take(MAX_ERROR_HEADER)
                .collect();
            host(ERROR, line);
        }
        if let Some(stream) = stream {
            host(EXPECTED_STREAM, stream.to_owned());
        }
        let payload = Bytes::from(message.payload);
        size += payload.len();
        Ok(Prepared {
            subject,
            headers,
            payload,
            size,
            msg_id: meta.msg_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(headers: Vec<(&str, &str)>) -> Outgoing {
        Outgoing {
            message: Message {
                subject: "cdc.public.t".into(),
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n.into(), v.into()))
                    .collect(),
                payload: b"{}".to_vec(),
                event: Some(0),
            },
            meta: HostMeta {
                msg_id: "p:0000000000000010:0:0".into(),
                commit_lsn: Lsn(0x10),
                lsn: Some(Lsn(0x8)),
                table: Some("public.t".into()),
                op: Some("insert"),
                error: None,
            },
        }
    }

    fn filter() -> SubjectFilter {
        SubjectFilter::parse(["cdc.>"]).unwrap()
    }

    #[test]
    fn adds_host_headers() {
        let p = outgoing(vec![("Content-Type", "application/json")])
            .prepare(&filter(), Some("CDC"))
            .unwrap();
        let get = |n: &str| p.headers.get(n).map(|v| v.as_str().to_owned());
        assert_eq!(get(MSG_ID).as_deref(), Some("p:0000000000000010:0:0"));
        assert_eq!(get(COMMIT_LSN).as_deref(), Some("0/10"));
        assert_eq!(get(LSN).as_deref(), Some("0/8"));
        assert_eq!(get(TABLE).as_deref(), Some("public.t"));
        assert_eq!(get(OP).as_deref(), Some("insert"));
        assert_eq!(get(EXPECTED_STREAM).as_deref(), Some("CDC"));
        assert_eq!(get("Content-Type").as_deref(), Some("application/json"));
        assert!(p.size > 2);
        assert_eq!(get(ERROR), None);
    }

    #[test]
    fn a_dead_letter_error_is_one_bounded_line() {
        let mut o = outgoing(vec![]);
        o.meta.error = Some(format!("first\r\nsecond {}", "x".repeat(5000)));
        let p = o.prepare(&filter(), None).unwrap();
        let error = p.headers.get(ERROR).unwrap().as_str().to_owned();
        assert!(error.starts_with("first  second x"), "{error}");
        assert_eq!(error.chars().count(), MAX_ERROR_HEADER);
    }

    #[test]
    fn sink_cannot_set_reserved_headers() {
        for name in ["Nats-Msg-Id", "nats-rollup", "SLUICE-LSN"] {
            let err = outgoing(vec![(name, "x")])
                .prepare(&filter(), None)
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "header `{name}` on a message to `cdc.public.t` is reserved: a sink may not set headers starting with `Nats-` or `Sluice-` (the host sets them)"
                )
            );
        }
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        for (name, value, reason) in [
            ("a:b", "x", "printable ASCII"),
            ("a b", "x", "printable ASCII"),
            ("", "x", "empty"),
            ("ok", "line\r\nbreak", "line break"),
        ] {
            let err = outgoing(vec![(name, value)])
                .prepare(&filter(), None)
                .unwrap_err();
            assert!(matches!(err, MessageError::MalformedHeader { .. }), "{err}");
            assert!(err.to_string().contains(reason), "{err}");
        }
    }

    #[test]
    fn forbidden_subject_is_an_error() {
        let mut o = outgoing(vec![]);
        o.message.subject = "elsewhere.x".into();
        assert_eq!(
            o.prepare(&filter(), None).unwrap_err().to_string(),
            "subject `elsewhere.x` is not allowed: this pipeline may publish only to `cdc.>`"
        );
    }
}
