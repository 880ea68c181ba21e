//! [`SqlError`]: the one error of a statement on an ordinary SQL connection
//! (tokio-postgres), for the setup checks, start-up and snapshots alike.
//!
//! Invariants: the message says what was being done and the server's reason
//! in the same words everywhere ([`reason`]), and a definite error (a
//! refused statement, a missing object) is told apart from a transient one
//! (a lost connection, a server shutting down) by one rule
//! ([`SqlError::is_transient`]).

use std::fmt;

use super::ServerError;

/// A statement that failed: what was being done, and why.
///
/// The statement's error is kept ([`SqlError::postgres`]) but not offered as
/// `source()`: the message already says all of it, and an error chain would
/// print it twice.
#[derive(Debug)]
pub struct SqlError {
    during: String,
    reason: String,
    error: tokio_postgres::Error,
}

impl SqlError {
    /// `error`, which happened while doing `during` ("looking up the
    /// replication slot").
    pub fn new(during: impl Into<String>, error: tokio_postgres::Error) -> Self {
        SqlError {
            during: during.into(),
            reason: reason(&error),
            error,
        }
    }

    /// A closure for `map_err`.
    pub fn during<E: From<SqlError>>(
        during: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> E {
        let during = during.into();
        move |error| E::from(SqlError::new(during, error))
    }

    /// The error as tokio-postgres reported it.
    pub fn postgres(&self) -> &tokio_postgres::Error {
        &self.error
    }

    /// Whether retrying later may help: the connection failed or closed, or
    /// the server answered with a [`transient_sqlstate`]. Any other
    /// statement the server refused is definite.
    pub fn is_transient(&self) -> bool {
        match self.error.as_db_error() {
            Some(db) => transient_sqlstate(db.code().code()),
            None => self.error.is_closed() || std::error::Error::source(&self.error).is_some(),
        }
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.during, self.reason)
    }
}

impl std::error::Error for SqlError {}

/// Whether an error with SQLSTATE `code` may pass if tried again later:
/// connection failures (class 08), shutdowns and restarts (57P01–57P03),
/// exhausted resources (class 53, e.g. too many connections), and an object
/// still in use (55006: a slot still held by a previous connection that has
/// not yet died). The one rule for the SQL and the replication connections.
pub(crate) fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "55006")
}

/// The server's words for a database error, as the replication connection
/// prints them too ([`ServerError`]'s `Display`: severity, message,
/// SQLSTATE, then DETAIL and HINT on their own lines); the error and its
/// causes, each once, otherwise.
pub(crate) fn reason(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return crate::causes::line(e);
    };
    ServerError {
        severity: db.severity().to_owned(),
        code: db.code().code().to_owned(),
        message: db.message().to_owned(),
        detail: db.detail().map(str::to_owned),
        hint: db.hint().map(str::to_owned),
    }
    .to_string()
}
