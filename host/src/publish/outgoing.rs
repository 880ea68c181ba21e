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
//!
//! `Nats-Msg-Id` and `Nats-Expected-Stream` always go out. The metadata headers
//! (`Sluice-Table`, `Sluice-Op`, `Sluice-Commit-Lsn`, `Sluice-Lsn`) go out when
//! [`HostMeta::metadata`] says so: the manifest's `nats.metadata-headers` for change
//! messages, always for dead letters and host-made markers.

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
    /// Whether the `Sluice-Table`, `Sluice-Op`, `Sluice-Commit-Lsn` and
    /// `Sluice-Lsn` headers go out (the manifest's `nats.metadata-headers`).
    pub metadata: bool,
}

/// A message ready to go: the sink's message and the host's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub message: Message,
    pub meta: HostMeta,
}

/// A checked message in the client's form. Cloning the payload is cheap (it is
/// shared), which matters because a retry sends the same message again.
///
/// The header map is built once, by [`Outgoing::prepare`], and the first send takes
/// it; a retry builds an identical one from the same parts. So the usual message,
/// sent once, costs one map and no copy of it.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) subject: Subject,
    pub(crate) payload: Bytes,
    /// Payload plus header bytes: what the byte window counts.
    pub(crate) size: usize,
    /// The headers, until the first send takes them.
    headers: Option<HeaderMap>,
    /// What the headers are made of, checked by `prepare`.
    sink_headers: Vec<(String, String)>,
    meta: HostMeta,
    stream: Option<Arc<str>>,
}

impl Outgoing {
    /// Checks the subject against `filter` and the sink's headers, and adds the host's
    /// headers (and `Nats-Expected-Stream` when `stream` is given).
    pub(crate) fn prepare(
        self,
        filter: &SubjectFilter,
        stream: Option<&Arc<str>>,
    ) -> Result<Prepared, MessageError> {
        let Outgoing { message, meta } = self;
        let subject = filter.check(&message.subject)?;
        check_sink_headers(&subject, &message.headers)?;
        let stream = stream.cloned();
        let (headers, header_bytes) = header_map(&message.headers, &meta, stream.as_deref());
        let payload = Bytes::from(message.payload);
        Ok(Prepared {
            subject,
            size: header_bytes + payload.len(),
            payload,
            headers: Some(headers),
            sink_headers: message.headers,
            meta,
            stream,
        })
    }
}

impl Prepared {
    /// The message's `Nats-Msg-Id`.
    pub(crate) fn msg_id(&self) -> &str {
        &self.meta.msg_id
    }

    /// The headers for a send: the map `prepare` built the first time, an identical
    /// new one for a retry.
    pub(crate) fn take_headers(&mut self) -> HeaderMap {
        self.headers
            .take()
            .unwrap_or_else(|| header_map(&self.sink_headers, &self.meta, self.stream.as_deref()).0)
    }

    #[cfg(test)]
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        let map = self.headers.as_ref()?;
        map.get(name).map(|v| v.as_str().to_owned())
    }
}

/// Rejects sink headers that are reserved for JetStream or the host, or that the
/// NATS protocol cannot carry.
fn check_sink_headers(subject: &Subject, headers: &[(String, String)]) -> Result<(), MessageError> {
    for (name, value) in headers {
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
        name.parse::<HeaderName>()
            .map_err(|_| malformed("a name may contain only printable ASCII other than `:`"))?;
        value
            .parse::<HeaderValue>()
            .map_err(|_| malformed("a value may not contain a line break"))?;
    }
    Ok(())
}

/// The sink's headers (checked by [`check_sink_headers`]) and the host's, and their
/// size on the wire.
fn header_map(
    sink_headers: &[(String, String)],
    meta: &HostMeta,
    stream: Option<&str>,
) -> (HeaderMap, usize) {
    let mut headers = HeaderMap::new();
    let mut size = 0;
    for (name, value) in sink_headers {
        if let (Ok(header_name), Ok(header_value)) =
            (name.parse::<HeaderName>(), value.parse::<HeaderValue>())
        {
            size += name.len() + value.len() + 4;
            headers.append(header_name, header_value);
        }
    }
    // Host values are built from validated parts and never hold line breaks;
    // parsing anyway keeps this free of panics on odd table names.
    let mut host = |name: &'static str, value: &str| {
        if let Ok(value) = value.parse::<HeaderValue>() {
            put(&mut headers, &mut size, name, value);
        }
    };
    host(MSG_ID, &meta.msg_id);
    if meta.metadata {
        if let Some(table) = &meta.table {
            host(TABLE, table);
        }
        if let Some(op) = meta.op {
            host(OP, op);
        }
    }
    if let Some(error) = &meta.error {
        let line: String = error
            .replace(['\r', '\n'], " ")
            .chars()
            .take(MAX_ERROR_HEADER)
            .collect();
        host(ERROR, &line);
    }
    if let Some(stream) = stream {
        host(EXPECTED_STREAM, stream);
    }
    // Hex digits and `/`: the printed text becomes the value, without a copy.
    let lsn = |lsn: Lsn| HeaderValue::from(lsn.to_string());
    if meta.metadata {
        put(&mut headers, &mut size, COMMIT_LSN, lsn(meta.commit_lsn));
        if let Some(event_lsn) = meta.lsn {
            put(&mut headers, &mut size, LSN, lsn(event_lsn));
        }
    }
    (headers, size)
}

/// Adds a host header and counts its bytes on the wire.
fn put(headers: &mut HeaderMap, size: &mut usize, name: &'static str, value: HeaderValue) {
    *size += name.len() + value.as_str().len() + 4;
    headers.insert(HeaderName::from_static(name), value);
}

#[cfg(test)]
mod tests;
