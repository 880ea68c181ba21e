//! Connection settings: parsing libpq-style connection strings.
//!
//! Accepts the two forms libpq accepts, `postgres[ql]://user:pass@host:port/db?k=v`
//! URLs and `host=… port=… user=…` keyword strings, and fills what they leave
//! out from the usual environment variables (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGAPPNAME`).
//! A host that starts with `/` is a Unix-domain socket directory, as in libpq.
//!
//! Invariant: the password never leaves this module in printable form. `Debug`
//! and `Display` of [`ConnInfo`] redact it, and no parse error quotes the input
//! string (which may carry the password).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::secret::Secret;

/// The default TCP port and Unix socket suffix, as libpq uses them.
const DEFAULT_PORT: u16 = 5432;
/// Debian's (and most distributions') compiled-in socket directory.
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Why a connection string was rejected. Never contains the password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnInfoError {
    #[error("invalid connection URL: {0}")]
    Url(String),
    #[error("invalid connection string: {0}")]
    Keywords(String),
    #[error("invalid value for connection parameter `{key}`: {reason}")]
    Value { key: String, reason: String },
    #[error("unknown connection parameter `{0}`")]
    UnknownParameter(String),
    #[error(
        "several hosts in one connection string are not supported: give one host (sluice reconnects to it with backoff)"
    )]
    MultipleHosts,
    #[error("no user name: put it in the URL (`postgres://USER@host/db`) or set PGUSER")]
    NoUser,
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address, connected to over TCP.
    Tcp(String),
    /// A directory holding the server's Unix-domain socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

/// How much TLS to insist on, with libpq's meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, without verifying the certificate.
    #[default]
    Prefer,
    /// Always use TLS; verify the certificate only if `sslrootcert` is given
    /// (libpq behaves like `verify-ca` when it finds a root certificate).
    Require,
    /// Always use TLS and verify the certificate chain, not the host name.
    VerifyCa,
    /// Always use TLS, verify the chain and that the certificate names the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = ConnInfoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(value_err(
                    "sslmode",
                    "`allow` is not supported: use `prefer` (or `disable`)",
                ));
            }
            _ => {
                return Err(value_err(
                    "sslmode",
                    "expected disable, prefer, require, verify-ca or verify-full",
                ));
            }
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything needed to open a connection to PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub ssl_mode: SslMode,
    /// A PEM file of trusted root certificates, or `system` for the
    /// operating system's store.
    pub ssl_root_cert: Option<PathBuf>,
    pub application_name: String,
    pub connect_timeout: Option<Duration>,
}

impl ConnInfo {
    /// Parses a URL or keyword string, filling gaps from the process
    /// environment as libpq does.
    pub fn parse(input: &str) -> Result<Self, ConnInfoError> {
        Self::parse_with_env(input, |key| std::env::var(key).ok())
    }

    /// As [`ConnInfo::parse`], with the environment given as a function
    /// (tests use this to stay independent of the process environment).
    pub fn parse_with_env(
        input: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConnInfoError> {
        let mut params = Params::default();
        let trimmed = input.trim();
        if let Some(rest) = trimmed
            .strip_prefix("postgresql://")
            .or_else(|| trimmed.strip_prefix("postgres://"))
        {
            parse_url(rest, &mut params)?;
        } else if trimmed.contains("://") {
            return Err(ConnInfoError::Url(
                "the scheme must be `postgres://` or `postgresql://`".into(),
            ));
        } else {
            parse_keywords(trimmed, &mut params)?;
        }
        params.finish(env)
    }

    /// The socket file for a Unix-domain host: `<dir>/.s.PGSQL.<port>`.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.host {
            Host::Unix(dir) => Some(dir.join(format!(".s.PGSQL.{}", self.port))),
            Host::Tcp(_) => None,
        }
    }

    /// `host:port` or the socket path, for messages.
    pub fn target(&self) -> String {
        match &self.host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", self.port),
            Host::Tcp(name) => format!("{name}:{}", self.port),
            Host::Unix(_) => self
                .socket_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }
    }
}

impl FromStr for ConnInfo {
    type Err = ConnInfoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConnInfo::parse(s)
    }
}

/// Prints the connection as a URL with the password replaced by `***`.
impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://{}", percent_encode(&self.user))?;
        if self.password.is_some() {
            f.write_str(":***")?;
        }
        f.write_str("@")?;
        match &self.host {
            Host::Tcp(name) if name.contains(':') => write!(f, "[{name}]:{}", self.port)?,
            Host::Tcp(name) => write!(f, "{name}:{}", self.port)?,
            Host::Unix(dir) => write!(
                f,
                "{}:{}",
                percent_encode(&dir.display().to_string()),
                self.port
            )?,
        }
        write!(
            f,
            "/{}?sslmode={}",
            percent_encode(&self.dbname),
            self.ssl_mode
        )
    }
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnInfo({self})")
    }
}

/// Parameters as given, before defaults apply.
#[derive(Default)]
struct Params {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    application_name: Option<String>,
    connect_timeout: Option<String>,
}

impl Params {
    fn set(&mut self, key: &str, value: String) -> Result<(), ConnInfoError> {
        let slot = match key {
            "host" => &mut self.host,
            "port" => &mut self.port,
            "user" => &mut self.user,
            "password" => &mut self.password,
            "dbname" => &mut self.dbname,
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "application_name" => &mut self.application_name,
            "connect_timeout" => &mut self.connect_timeout,
            "replication" => {
                return Err(value_err(
                    "replication",
                    "sluice sets it itself; remove it from the connection string",
                ));
            }
            other => return Err(ConnInfoError::UnknownParameter(other.to_owned())),
        };
        *slot = Some(value);
        Ok(())
    }

    fn finish(self, env: impl Fn(&str) -> Option<String>) -> Result<ConnInfo, ConnInfoError> {
        let pick = |given: Option<String>, var: &str| {
            given
                .filter(|v| !v.is_empty())
                .or_else(|| env(var).filter(|v| !v.is_empty()))
        };
        let host_text = pick(self.host, "PGHOST").unwrap_or_else(|| DEFAULT_SOCKET_DIR.to_owned());
        if host_text.contains(',') {
            return Err(ConnInfoError::MultipleHosts);
        }
        let host = if host_text.starts_with('/') {
            Host::Unix(PathBuf::from(host_text))
        } else {
            Host::Tcp(host_text)
        };
        let port = match pick(self.port, "PGPORT") {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| value_err("port", "expected a number from 1 to 65535"))?,
        };
        let user = pick(self.user, "PGUSER")
            .or_else(|| env("USER"))
            .ok_or(ConnInfoError::NoUser)?;
        // An empty password in the URL (`user:@host`) is still a password, as
        // in libpq; only an absent one falls back to PGPASSWORD.
        let password = self.password.or_else(|| env("PGPASSWORD")).map(Secret::new);
        let dbname = pick(self.dbname, "PGDATABASE").unwrap_or_else(|| user.clone());
        let ssl_mode = match pick(self.sslmode, "PGSSLMODE") {
            None => SslMode::default(),
            Some(m) => m.parse()?,
        };
        let ssl_root_cert = pick(self.sslrootcert, "PGSSLROOTCERT").map(PathBuf::from);
        let application_name =
            pick(self.application_name, "PGAPPNAME").unwrap_or_else(|| "sluice".to_owned());
        let connect_timeout = match pick(self.connect_timeout, "PGCONNECT_TIMEOUT") {
            None => None,
            Some(t) => {
                let secs: u64 = t
                    .parse()
                    .map_err(|_| value_err("connect_timeout", "expected whole seconds"))?;
                // libpq treats 0 as "wait forever".
                (secs > 0).then(|| Duration::from_secs(secs))
            }
        };
        Ok(ConnInfo {
            host,
            port,
            user,
            password,
            dbname,
            ssl_mode,
            ssl_root_cert,
            application_name,
            connect_timeout,
        })
    }
}

fn value_err(key: &str, reason: &str) -> ConnInfoError {
    ConnInfoError::Value {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Parses what follows `postgres://`:
/// `[user[:password]@][host][:port][/dbname][?key=value&…]`.
fn parse_url(rest: &str, params: &mut Params) -> Result<(), ConnInfoError> {
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    // The password may itself contain `@` only percent-encoded, as in libpq;
    // the last `@` separates the credentials from the host.
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.user = Some(percent_decode("user", user)?);
            }
            if let Some(p) = password {
                params.password = Some(percent_decode("password", p)?);
            }
            hostport
        }
        None => authority,
    };
    if hostport.contains(',') {
        return Err(ConnInfoError::MultipleHosts);
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| ConnInfoError::Url("unterminated `[` in the IPv6 host".into()))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| {
                ConnInfoError::Url("expected `:port` after the IPv6 host".into())
            })?),
        };
        (addr.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (percent_decode("host", h)?, Some(p)),
            None => (percent_decode("host", hostport)?, None),
        }
    };
    if !host.is_empty() {
        params.host = Some(host);
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        params.port = Some(p.to_owned());
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        params.dbname = Some(percent_decode("dbname", db)?);
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            ConnInfoError::Url("a query parameter lacks `=`: expected `key=value`".into())
        })?;
        let key = percent_decode("query parameter name", key)?;
        let value = percent_decode(&key, value)?;
        params.set(&key, value)?;
    }
    Ok(())
}

/// Parses `key=value key='quoted value'` pairs, with backslash escapes inside
/// quotes as libpq allows.
fn parse_keywords(input: &str, params: &mut Params) -> Result<(), ConnInfoError> {
    let mut chars = input.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(());
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(ConnInfoError::Keywords(format!(
                "missing `=` after `{key}`"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(ConnInfoError::Keywords(format!(
                            "unterminated quoted value for `{key}`"
                        )));
                    }
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(ConnInfoError::Keywords(format!(
                                "unterminated quoted value for `{key}`"
                            )));
                        }
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        params.set(&key, value)?;
    }
}

/// Decodes `%XX` escapes. The error names the component, never its text.
fn percent_decode(component: &str, s: &str) -> Result<String, ConnInfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ConnInfoError::Url(format!(
                        "bad percent-encoding in the {component}: `%` must be followed by two hexadecimal digits"
                    ))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        ConnInfoError::Url(format!(
            "the {component} is not UTF-8 after percent-decoding"
        ))
    })
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ConnInfo, ConnInfoError> {
        ConnInfo::parse_with_env(s, |_| None)
    }

    #[test]
    fn parses_a_full_url() {
        let c = parse("postgres://alice:s%40cret@db.example:6543/app?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x").unwrap();
        assert_eq!(c.host, Host::Tcp("db.example".into()));
        assert_eq!(c.port, 6543);
        assert_eq!(c.user, "alice");
        assert_eq!(c.password.as_ref().unwrap().expose(), "s@cret");
        assert_eq!(c.dbname, "app");
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!(c.ssl_root_cert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.application_name, "x");
    }

    #[test]
    fn defaults_follow_libpq() {
        let c = parse("postgresql://bob@localhost").unwrap();
        assert_eq!(c.port, 5432);
        assert_eq!(c.dbname, "bob");
        assert_eq!(c.ssl_mode, SslMode::Prefer);
        assert_eq!(c.application_name, "sluice");
        assert_eq!(c.password, None);
        let c = parse("postgresql://bob@").unwrap();
        assert_eq!(c.host, Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR)));
    }

    #[test]
    fn unix_sockets_from_path_host_or_query() {
        let c = parse("postgres://u@%2Fvar%2Frun%2Fpostgresql:5433/db").unwrap();
        assert_eq!(c.host, Host::Unix(PathBuf::from("/var/run/postgresql")));
        assert_eq!(
            c.socket_path().unwrap(),
            PathBuf::from("/var/run/postgresql/.s.PGSQL.5433")
        );
        let c = parse("postgres:///db?host=/tmp/sock&user=u&port=7").unwrap();
        assert_eq!(c.host, Host::Unix(PathBuf::from("/tmp/sock")));
        assert_eq!(c.target(), "/tmp/sock/.s.PGSQL.7");
    }

    #[test]
    fn ipv6_hosts() {
        let c = parse("postgres://u@[::1]:5000/d").unwrap();
        assert_eq!(c.host, Host::Tcp("::1".into()));
        assert_eq!(c.port, 5000);
        assert_eq!(c.target(), "[::1]:5000");
    }

    #[test]
    fn keyword_strings() {
        let c = parse("host=/tmp port=6000 user=u password='a b\\'c' dbname = d").unwrap();
        assert_eq!(c.host, Host::Unix(PathBuf::from("/tmp")));
        assert_eq!(c.password.unwrap().expose(), "a b'c");
        assert_eq!(c.dbname, "d");
    }

    #[test]
    fn password_from_environment_only_when_absent() {
        let env = |k: &str| (k == "PGPASSWORD").then(|| "fromenv".to_owned());
        let c = ConnInfo::parse_with_env("postgres://u@h/d", env).unwrap();
        assert_eq!(c.password.unwrap().expose(), "fromenv");
        let c = ConnInfo::parse_with_env("postgres://u:given@h/d", env).unwrap();
        assert_eq!(c.password.unwrap().expose(), "given");
    }

    #[test]
    fn display_and_debug_redact_the_password() {
        let c = parse("postgres://u:hunter2@h:1/d?sslmode=require").unwrap();
        assert_eq!(c.to_string(), "postgres://u:***@h:1/d?sslmode=require");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn errors_never_quote_the_input() {
        for bad in [
            "postgres://u:hunter2@h:99999/d",
            "postgres://u:hunter2@h/d?bogus=1",
            "postgres://u:hunter2%zz@h/d",
            "postgres://u:hunter2@h/d?sslmode=allow",
            "postgres://u:hunter2@a,b/d",
            "mysql://u:hunter2@h/d",
            "password=hunter2 host",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert_eq!(
            parse("postgres://u@h:0/d").unwrap_err().to_string(),
            "invalid value for connection parameter `port`: expected a number from 1 to 65535"
        );
        assert_eq!(
            parse("postgres://u@h/d?bogus=1").unwrap_err(),
            ConnInfoError::UnknownParameter("bogus".into())
        );
    }
}
