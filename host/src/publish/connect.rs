//! Connecting to NATS: servers, authentication, TLS.
//!
//! [`NatsOptions`] is what the manifest's `[nats]` table parses into (see
//! `config`), secrets already read from the environment. Secrets, server URLs
//! included, live in [`Secret`], whose `Debug` and `Display` print `***`, and server
//! URLs are shown without their user-info part, so neither a log line nor an error
//! message can carry a password, token or seed.
//!
//! A credentials file is the one secret whose failures name it: a file that cannot be
//! read, whose user JWT has expired (checked before connecting, see `credentials`), or
//! whose user the server rejects, is named by its path in the error.
//!
//! The client reconnects on its own for as long as the process lives; the publisher
//! retries what a disconnect left unacknowledged (see `publisher`). Connection events
//! are logged as structured fields.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{ConnectErrorKind, Event};

use crate::secret::Secret;

/// The name the client announces to the server, visible in `nats server report
/// connections` and the monitoring endpoints.
pub const CONNECTION_NAME: &str = "sluice";

/// How the client authenticates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials (or credentials in the URL's user-info part).
    #[default]
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
    /// An NKey seed (`SU…`): the client signs the server's nonce with it.
    NKey(Secret),
    /// A `.creds` file holding a user JWT and its NKey seed.
    CredentialsFile(PathBuf),
}

/// TLS settings. TLS is used when a URL says `tls://`, when `required` is set, or when
/// the server demands it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Refuse to talk to the server without TLS.
    pub required: bool,
    /// PEM file of the CA(s) that signed the server's certificate, in addition to the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate and key for mutual TLS; both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Everything needed to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsOptions {
    /// One or more server URLs (`nats://host:4222`, `tls://host:4222`), secret since
    /// one may carry a password.
    pub servers: Vec<Secret>,
    pub auth: NatsAuth,
    pub tls: TlsOptions,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
}

impl NatsOptions {
    /// Options for `servers` with no authentication and no TLS requirement.
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> Self {
        NatsOptions {
            servers: servers.into_iter().map(Secret::new).collect(),
            auth: NatsAuth::None,
            tls: TlsOptions::default(),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// The server list as it may be shown: user-info removed from every URL.
    pub fn display_servers(&self) -> String {
        self.servers
            .iter()
            .map(|s| redact_url(s.expose()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What went wrong, in the terms an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The server refused the credentials.
    Authorization,
    /// The credentials could not be used (bad NKey seed or credentials file).
    Credentials,
    Tls,
    TimedOut,
    /// The server was unreachable or the URL could not be resolved or parsed.
    Unreachable,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectFailure::Authorization => {
                "the server rejected the credentials (authorization violation)"
            }
            ConnectFailure::Credentials => "the credentials could not be used",
            ConnectFailure::Tls => "the TLS handshake or TLS setup failed",
            ConnectFailure::TimedOut => "the connection attempt timed out",
            ConnectFailure::Unreachable => "the server could not be reached",
        })
    }
}

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no NATS server URL configured")]
    NoServers,
    #[error("the NATS TLS client certificate needs both a certificate and a key file")]
    IncompleteClientCertificate,
    #[error("cannot read the NATS credentials file {path}")]
    CredentialsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the user JWT in the NATS credentials file {path} expired at {}: issue the user new credentials",
        humantime::format_rfc3339_seconds(*expired)
    )]
    CredentialsExpired {
        path: PathBuf,
        expired: std::time::SystemTime,
    },
    #[error(
        "cannot connect to NATS at {servers}: the server rejected the user of the credentials file {path} (authorization violation)"
    )]
    CredentialsRejected {
        servers: String,
        path: PathBuf,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot connect to NATS at {servers}: {failure}")]
    Connect {
        servers: String,
        failure: ConnectFailure,
        #[source]
        source: async_nats::ConnectError,
    },
}

impl ConnectError {
    /// Whether connecting later may succeed: no server answered, or not in
    /// time. Rejected credentials, TLS failures and bad settings stay.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectError::Connect {
                failure: ConnectFailure::Unreachable | ConnectFailure::TimedOut,
                ..
            }
        )
    }
}

/// Connects with `options`.
pub async fn connect(options: &NatsOptions) -> Result<async_nats::Client, ConnectError> {
    if options.servers.is_empty() {
        return Err(ConnectError::NoServers);
    }
    let mut connect = async_nats::ConnectOptions::new()
        .name(CONNECTION_NAME)
        .connection_timeout(options.connect_timeout)
        // Reconnect quickly at first, then at most every 2 s: the publisher holds the
        // pipeline while disconnected, so a long sleep would be pure lag.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 250).min(2_000))
        })
        .event_callback(|event| async move { log_event(event) })
        // Every subject this client publishes to was checked by the publisher's
        // `SubjectFilter` (stricter than the client: tokens, wildcards, control
        // characters) or is one of its own reply subjects; checking again costs a
        // scan of both per message.
        .skip_subject_validation(true);
    connect = match &options.auth {
        NatsAuth::None => connect,
        NatsAuth::UserPassword { user, password } => {
            connect.user_and_password(user.clone(), password.expose().to_owned())
        }
        NatsAuth::Token(token) => connect.token(token.expose().to_owned()),
        NatsAuth::NKey(seed) => connect.nkey(seed.expose().to_owned()),
        NatsAuth::CredentialsFile(path) => with_credentials_file(connect, path).await?,
    };
    let tls = &options.tls;
    if tls.required {
        connect = connect.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        connect = connect.add_root_certificates(ca.clone());
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            connect = connect.add_client_certificate(cert.clone(), key.clone())
        }
        (None, None) => {}
        _ => return Err(ConnectError::IncompleteClientCertificate),
    }
    let servers = options.display_servers();
    tracing::debug!(servers = %servers, "connecting to NATS");
    let urls: Vec<&str> = options.servers.iter().map(Secret::expose).collect();
    connect.connect(urls.as_slice()).await.map_err(|source| {
        let failure = match source.kind() {
            ConnectErrorKind::AuthorizationViolation => ConnectFailure::Authorization,
            ConnectErrorKind::Authentication => ConnectFailure::Credentials,
            ConnectErrorKind::Tls => ConnectFailure::Tls,
            // A rejected certificate surfaces as an I/O error from the handshake.
            ConnectErrorKind::Io if caused_by_tls(&source) => ConnectFailure::Tls,
            ConnectErrorKind::TimedOut => ConnectFailure::TimedOut,
            ConnectErrorKind::ServerParse
            | ConnectErrorKind::Dns
            | ConnectErrorKind::Io
            | ConnectErrorKind::MaxReconnects => ConnectFailure::Unreachable,
        };
        match &options.auth {
            NatsAuth::CredentialsFile(path) if failure == ConnectFailure::Authorization => {
                ConnectError::CredentialsRejected {
                    servers,
                    path: path.clone(),
                    source,
                }
            }
            _ => ConnectError::Connect {
                servers,
                failure,
                source,
            },
        }
    })
}

/// `connect` authenticating with the credentials file at `path`, unless the
/// file cannot be read or its user JWT has expired.
async fn with_credentials_file(
    connect: async_nats::ConnectOptions,
    path: &Path,
) -> Result<async_nats::ConnectOptions, ConnectError> {
    let unreadable = |source| ConnectError::CredentialsFile {
        path: path.to_owned(),
        source,
    };
    let text = tokio::fs::read_to_string(path).await.map_err(unreadable)?;
    if let Some(expired) = super::credentials::user_jwt_expiry(&text)
        && expired <= std::time::SystemTime::now()
    {
        return Err(ConnectError::CredentialsExpired {
            path: path.to_owned(),
            expired,
        });
    }
    connect.credentials(&text).map_err(unreadable)
}

/// Whether a rustls error is somewhere in `error`'s chain.
fn caused_by_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    crate::causes::chain(error).any(|e| {
        e.is::<async_nats::rustls::Error>()
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                io.get_ref()
                    .is_some_and(|inner| inner.is::<async_nats::rustls::Error>())
            })
    })
}

fn log_event(event: Event) {
    match event {
        Event::Connected => tracing::info!("connected to NATS"),
        Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
        Event::LameDuckMode => tracing::warn!("NATS server entered lame duck mode"),
        Event::SlowConsumer(sid) => tracing::warn!(sid, "NATS slow consumer"),
        other => tracing::info!(event = %other, "NATS connection event"),
    }
}

/// `url` without a user-info part (`nats://user:pass@host` → `nats://***@host`).
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => rest.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let auth = NatsAuth::UserPassword {
            user: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
        let opts = NatsOptions::new(["nats://u:hunter2@h"]);
        assert!(!format!("{opts:?}").contains("hunter2"));
    }

    #[test]
    fn urls_lose_their_user_info() {
        assert_eq!(redact_url("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("tok@h"), "***@h");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        let opts = NatsOptions::new(["nats://a:b@x", "nats://y"]);
        assert_eq!(opts.display_servers(), "nats://***@x, nats://y");
    }
}
