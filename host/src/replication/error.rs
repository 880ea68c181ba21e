//! What can go wrong on a replication connection: the server's own error
//! reports ([`ServerError`], with every standard field) and the connection's
//! errors ([`ReplicationError`]), each knowing whether a reconnect may help.
//! Invariant: no error carries the password, only the names it was looked
//! up under.

use std::fmt;
use std::io;

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorFields;

use super::conninfo::{SessionAttrs, SslMode};
use super::sql::transient_sqlstate;
use super::tls::TlsError;

/// An error or notice the server sent, with its standard fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL` or `PANIC` (the untranslated form when sent).
    pub severity: String,
    /// The SQLSTATE code, e.g. `28P01`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ServerError {
    pub(super) fn parse(mut fields: ErrorFields<'_>) -> io::Result<Self> {
        let mut e = ServerError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        let mut localized_severity = None;
        while let Some(field) = fields.next()? {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => e.severity = value,
                b'S' => localized_severity = Some(value),
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => {}
            }
        }
        if e.severity.is_empty() {
            e.severity = localized_severity.unwrap_or_else(|| "ERROR".to_owned());
        }
        Ok(e)
    }

    /// Whether retrying later may succeed (see [`transient_sqlstate`]).
    pub fn is_transient(&self) -> bool {
        transient_sqlstate(&self.code)
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(d) = &self.detail {
            write!(f, "\nDETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nHINT: {h}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong on the replication connection.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot connect to PostgreSQL at {target}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("timed out connecting to PostgreSQL at {target}")]
    ConnectTimeout { target: String },
    #[error("TLS handshake with {target} failed")]
    TlsHandshake {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("the server at {target} does not accept TLS, but sslmode={mode} requires it")]
    TlsUnsupported { target: String, mode: SslMode },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "the server asks for a password for user \"{user}\", but none was given: put it in the connection URL or in PGPASSWORD"
    )]
    PasswordMissing { user: String },
    #[error("the server asks for {method} authentication, which sluice does not support")]
    UnsupportedAuth { method: String },
    #[error("SCRAM authentication with the server failed")]
    Scram(#[source] io::Error),
    /// The server refused something; `during` says what.
    #[error("{during}: {error}")]
    Server {
        during: String,
        error: Box<ServerError>,
    },
    #[error("lost the connection to PostgreSQL")]
    Io(#[source] io::Error),
    #[error("PostgreSQL protocol violation: {0}")]
    Protocol(String),
    /// Every host of the list was tried; none is what
    /// `target_session_attrs` asks for (a failover may be under way).
    #[error("no server at {targets} is what target_session_attrs={attrs} asks for ({found})")]
    NoMatchingHost {
        targets: String,
        attrs: SessionAttrs,
        found: String,
    },
}

impl ReplicationError {
    /// Whether the caller should reconnect (with backoff) rather than stop.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicationError::Connect { .. }
            | ReplicationError::ConnectTimeout { .. }
            | ReplicationError::NoMatchingHost { .. }
            | ReplicationError::Io(_) => true,
            // A certificate the verifier rejected will be rejected again; a
            // handshake cut short by the network may succeed next time.
            ReplicationError::TlsHandshake { source, .. } => source
                .get_ref()
                .is_none_or(|inner| !inner.is::<rustls::Error>()),
            ReplicationError::Server { error, .. } => error.is_transient(),
            ReplicationError::TlsUnsupported { .. }
            | ReplicationError::Tls(_)
            | ReplicationError::PasswordMissing { .. }
            | ReplicationError::UnsupportedAuth { .. }
            | ReplicationError::Scram(_)
            | ReplicationError::Protocol(_) => false,
        }
    }

    /// The server's error, when the server refused something.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            ReplicationError::Server { error, .. } => Some(&**error),
            _ => None,
        }
    }
}
