//! Connection settings: parsing libpq-style connection strings.
//!
//! Accepts the two forms libpq accepts, `postgres[ql]://user:pass@host:port/db?k=v`
//! URLs and `host=… port=… user=…` keyword strings, and fills what they leave
//! out from the usual environment variables (`PGHOST`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGAPPNAME`).
//! A host that starts with `/` is a Unix-domain socket directory, as in libpq.
//!
//! Several hosts (`postgres://h1:5432,h2:5433/db`, or `host=h1,h2
//! port=5432,5433`) are tried in order, as libpq does, and
//! `target_session_attrs` says which server is acceptable ([`SessionAttrs`]):
//! [`ConnInfo::candidates`] gives one single-host `ConnInfo` per host, in
//! the order to try them; the connecting code asks each server what it is
//! ([`ServerRole`]) and takes the first that [`SessionAttrs::accepts`].
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
    #[error("{hosts} hosts but {ports} ports: give one port for all hosts, or one per host")]
    PortCount { hosts: usize, ports: usize },
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

/// `target_session_attrs`: which server of the host list is acceptable,
/// with libpq's meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SessionAttrs {
    /// Any server that accepts the connection.
    #[default]
    Any,
    /// A server that accepts writes by default.
    ReadWrite,
    /// A server that does not accept writes by default.
    ReadOnly,
    /// A server that is not in recovery.
    Primary,
    /// A server in recovery (a hot standby).
    Standby,
    /// A standby if there is one, otherwise any server.
    PreferStandby,
}

impl SessionAttrs {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::ReadOnly => "read-only",
            SessionAttrs::Primary => "primary",
            SessionAttrs::Standby => "standby",
            SessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// Whether a server in `role` is acceptable on the first pass over the
    /// hosts. (`prefer-standby` takes any server on a second pass.)
    pub fn accepts(self, role: ServerRole) -> bool {
        match self {
            SessionAttrs::Any => true,
            SessionAttrs::ReadWrite => !role.in_recovery && !role.read_only,
            SessionAttrs::ReadOnly => role.in_recovery || role.read_only,
            SessionAttrs::Primary => !role.in_recovery,
            SessionAttrs::Standby | SessionAttrs::PreferStandby => role.in_recovery,
        }
    }

    /// Whether connecting must ask the server what it is.
    pub fn needs_role(self) -> bool {
        self != SessionAttrs::Any
    }
}

impl FromStr for SessionAttrs {
    type Err = ConnInfoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "any" => SessionAttrs::Any,
            "read-write" => SessionAttrs::ReadWrite,
            "read-only" => SessionAttrs::ReadOnly,
            "primary" => SessionAttrs::Primary,
            "standby" => SessionAttrs::Standby,
            "prefer-standby" => SessionAttrs::PreferStandby,
            _ => {
                return Err(value_err(
                    "target_session_attrs",
                    "expected any, read-write, read-only, primary, standby or prefer-standby",
                ));
            }
        })
    }
}

impl fmt::Display for SessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a server is, for [`SessionAttrs::accepts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerRole {
    /// `pg_is_in_recovery()` (or the `in_hot_standby` parameter).
    pub in_recovery: bool,
    /// `default_transaction_read_only` (or a standby).
    pub read_only: bool,
}

impl fmt::Display for ServerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.in_recovery, self.read_only) {
            (true, _) => "a standby",
            (false, true) => "a read-only primary",
            (false, false) => "a primary",
        })
    }
}

/// One host of the list, with its port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
}

/// Everything needed to open a connection to PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The first host of the list (the only one, usually).
    pub host: Host,
    pub port: u16,
    /// Every host, in the order to try them; `hosts[0]` is `host:port`.
    pub hosts: Vec<Endpoint>,
    pub session_attrs: SessionAttrs,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub ssl_mode: SslMode,
    /// A PEM file of trusted root certificates, or `system` for the
    /// operating system's store.
    pub ssl_root_cert: Option<PathBuf>,
    /// `sslcert`/`sslkey` (or `PGSSLCERT`/`PGSSLKEY`): the client
    /// certificate chain and its key, for servers that ask for one
    /// (`hostssl … cert` in pg_hba.conf). Both or neither.
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
    /// `sslpassword`: decrypts an encrypted (PKCS#8) `sslkey`.
    pub ssl_password: Option<Secret>,
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

    /// One single-host `ConnInfo` per host of the list, in order.
    pub fn candidates(&self) -> Vec<ConnInfo> {
        self.hosts
            .iter()
            .map(|e| ConnInfo {
                host: e.host.clone(),
                port: e.port,
                hosts: vec![e.clone()],
                ..self.clone()
            })
            .collect()
    }

    /// Whether connecting tries more than one host or checks the server's
    /// role.
    pub fn walks(&self) -> bool {
        self.hosts.len() > 1 || self.session_attrs.needs_role()
    }

    /// Every host as `host:port`, comma-separated, for messages.
    pub fn targets(&self) -> String {
        self.candidates()
            .iter()
            .map(ConnInfo::target)
            .collect::<Vec<_>>()
            .join(",")
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
        for (n, e) in self.hosts.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            match &e.host {
                Host::Tcp(name) if name.contains(':') => write!(f, "[{name}]:{}", e.port)?,
                Host::Tcp(name) => write!(f, "{name}:{}", e.port)?,
                Host::Unix(dir) => write!(
                    f,
                    "{}:{}",
                    percent_encode(&dir.display().to_string()),
                    e.port
                )?,
            }
        }
        write!(
            f,
            "/{}?sslmode={}",
            percent_encode(&self.dbname),
            self.ssl_mode
        )?;
        if self.session_attrs != SessionAttrs::Any {
            write!(f, "&target_session_attrs={}", self.session_attrs)?;
        }
        Ok(())
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
    sslcert: Option<String>,
    sslkey: Option<String>,
    sslpassword: Option<String>,
    application_name: Option<String>,
    connect_timeout: Option<String>,
    target_session_attrs: Option<String>,
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
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "sslpassword" => &mut self.sslpassword,
            "application_name" => &mut self.application_name,
            "connect_timeout" => &mut self.connect_timeout,
            "target_session_attrs" => &mut self.target_session_attrs,
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
        let port_text = pick(self.port, "PGPORT").unwrap_or_default();
        let hosts = endpoints(&host_text, &port_text)?;
        let Endpoint { host, port } = hosts[0].clone();
        let session_attrs = match pick(self.target_session_attrs, "PGTARGETSESSIONATTRS") {
            None => SessionAttrs::default(),
            Some(a) => a.parse()?,
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
        let ssl_cert = pick(self.sslcert, "PGSSLCERT").map(PathBuf::from);
        let ssl_key = pick(self.sslkey, "PGSSLKEY").map(PathBuf::from);
        match (&ssl_cert, &ssl_key) {
            (Some(_), None) => return Err(value_err("sslkey", "is required with sslcert")),
            (None, Some(_)) => return Err(value_err("sslcert", "is required with sslkey")),
            _ => {}
        }
        let ssl_password = self.sslpassword.map(Secret::new);
        if ssl_password.is_some() && ssl_key.is_none() {
            return Err(value_err(
                "sslpassword",
                "only applies with sslcert and sslkey",
            ));
        }
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
            hosts,
            session_attrs,
            user,
            password,
            dbname,
            ssl_mode,
            ssl_root_cert,
            ssl_cert,
            ssl_key,
            ssl_password,
            application_name,
            connect_timeout,
        })
    }
}

/// The host list with its ports: one port for all hosts or one per host; an
/// empty entry means the default (5432), a host starting with `/` a socket
/// directory.
fn endpoints(host_text: &str, port_text: &str) -> Result<Vec<Endpoint>, ConnInfoError> {
    let hosts: Vec<&str> = host_text.split(',').collect();
    let ports: Vec<&str> = port_text.split(',').collect();
    if ports.len() != 1 && ports.len() != hosts.len() {
        return Err(ConnInfoError::PortCount {
            hosts: hosts.len(),
            ports: ports.len(),
        });
    }
    let port_of = |text: &str| match text.trim() {
        "" => Ok(DEFAULT_PORT),
        p => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| value_err("port", "expected a number from 1 to 65535")),
    };
    hosts
        .iter()
        .enumerate()
        .map(|(n, h)| {
            let h = h.trim();
            let host = match h {
                "" => Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR)),
                h if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
                h => Host::Tcp(h.to_owned()),
            };
            let port = port_of(ports.get(n).or(ports.first()).copied().unwrap_or(""))?;
            Ok(Endpoint { host, port })
        })
        .collect()
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
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for one in hostport.split(',') {
        let (host, port) = url_host(one)?;
        hosts.push(host);
        ports.push(port.unwrap_or_default().to_owned());
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        params.host = Some(hosts.join(","));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        params.port = Some(ports.join(","));
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

/// One `host[:port]` or `[v6addr][:port]` of a URL's host list.
fn url_host(hostport: &str) -> Result<(String, Option<&str>), ConnInfoError> {
    if let Some(v6) = hostport.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| ConnInfoError::Url("unterminated `[` in the IPv6 host".into()))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| {
                ConnInfoError::Url("expected `:port` after the IPv6 host".into())
            })?),
        };
        return Ok((addr.to_owned(), port));
    }
    Ok(match hostport.rsplit_once(':') {
        Some((h, p)) => (percent_decode("host", h)?, Some(p)),
        None => (percent_decode("host", hostport)?, None),
    })
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
mod tests;
