//! The replication connection: transport, TLS negotiation, startup,
//! authentication and the simple-query protocol, on `postgres-protocol`.
//!
//! A [`ReplicationConnection`] is a walsender session opened with
//! `replication=database`: it runs replication commands (`IDENTIFY_SYSTEM`,
//! slot commands, see `slot.rs`) and turns into a
//! [`ReplicationStream`](super::stream::ReplicationStream) with
//! `START_REPLICATION`.
//!
//! Invariants: one read buffer ([`BytesMut`]) per connection, from which
//! frames are split without copying; the password is used only inside the
//! authentication exchange and appears in no error or log; every I/O
//! failure and end of file is reported as a transient error
//! ([`ReplicationError::is_transient`]) so the caller reconnects.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::conninfo::{ConnInfo, Host, ServerRole, SessionAttrs, SslMode};
use super::error::{ReplicationError, ServerError};
use super::tls;
use super::walk::{self, Session};

/// How much the read buffer grows by when it runs out of room. Large reads
/// keep the system-call count low on a busy stream.
const READ_CHUNK: usize = 128 * 1024;

/// TCP, Unix-domain socket, or TLS over TCP.
#[derive(Debug)]
enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Unix(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// A backend frame as this module needs it: `postgres-protocol`'s parsed
/// message, or one of the two frames it does not know or that the hot path
/// takes without parsing.
pub(crate) enum Frame {
    /// `CopyData`, body only (no tag or length), sharing the read buffer.
    CopyData(Bytes),
    /// `CopyBothResponse` (`W`), which starts streaming replication.
    CopyBoth,
    Other(Message),
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(frame_name(self))
    }
}

/// Framed I/O: one read buffer, one write buffer.
#[derive(Debug)]
pub(crate) struct Wire {
    io: Transport,
    read: BytesMut,
    write: BytesMut,
}

impl Wire {
    fn new(io: Transport) -> Self {
        Wire {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: BytesMut::with_capacity(1024),
        }
    }

    /// Splits the next complete frame off the read buffer, if there is one.
    pub(crate) fn try_frame(&mut self) -> Result<Option<Frame>, ReplicationError> {
        let Some(header) = self.read.get(..5) else {
            return Ok(None);
        };
        let tag = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len < 4 {
            return Err(ReplicationError::Protocol(format!(
                "message `{}` has an invalid length {len}",
                char::from(tag)
            )));
        }
        let total = len + 1;
        if self.read.len() < total {
            self.read.reserve(total - self.read.len());
            return Ok(None);
        }
        match tag {
            b'd' => {
                let mut frame = self.read.split_to(total).freeze();
                frame.advance(5);
                Ok(Some(Frame::CopyData(frame)))
            }
            b'W' => {
                self.read.advance(total);
                Ok(Some(Frame::CopyBoth))
            }
            _ => match Message::parse(&mut self.read) {
                Ok(Some(m)) => Ok(Some(Frame::Other(m))),
                Ok(None) => Ok(None),
                Err(e) => Err(ReplicationError::Protocol(e.to_string())),
            },
        }
    }

    /// Reads more bytes; end of file is a lost connection.
    pub(crate) async fn fill(&mut self) -> Result<(), ReplicationError> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
        match self.io.read_buf(&mut self.read).await {
            Ok(0) => Err(ReplicationError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(ReplicationError::Io(e)),
        }
    }

    /// The next frame, reading as needed.
    pub(crate) async fn frame(&mut self) -> Result<Frame, ReplicationError> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// The buffer outgoing messages are encoded into before [`Wire::send`].
    pub(crate) fn out(&mut self) -> &mut BytesMut {
        &mut self.write
    }

    /// Writes out and flushes everything encoded so far.
    pub(crate) async fn send(&mut self) -> Result<(), ReplicationError> {
        // `write_all_buf` consumes what it wrote: if this future is dropped
        // half-way, the rest stays buffered and goes out with the next send,
        // so no message is ever cut or sent twice.
        let result = async {
            self.io.write_all_buf(&mut self.write).await?;
            self.io.flush().await
        }
        .await;
        result.map_err(|e| {
            self.write.clear();
            ReplicationError::Io(e)
        })
    }

    async fn shutdown(&mut self) {
        // The connection is being abandoned; a failure to close it cleanly
        // changes nothing for the caller.
        let _ = self.io.shutdown().await;
    }
}

/// Encodes a frontend message whose encoder can only fail on a NUL byte or
/// an over-long message: both are caller errors that we report, not panic on.
fn encode(result: io::Result<()>, what: &str) -> Result<(), ReplicationError> {
    result.map_err(|e| ReplicationError::Protocol(format!("cannot encode {what}: {e}")))
}

/// The SCRAM exchange under way, or a protocol error: `what` came before
/// the exchange started.
fn sasl_started<'a>(
    scram: &'a mut Option<ScramSha256>,
    what: &str,
) -> Result<&'a mut ScramSha256, ReplicationError> {
    scram
        .as_mut()
        .ok_or_else(|| ReplicationError::Protocol(format!("{what} before SASL start")))
}

fn unsupported_auth(method: &str) -> ReplicationError {
    ReplicationError::UnsupportedAuth {
        method: method.into(),
    }
}

/// The rows and command tag of one simple query.
#[derive(Debug, Default)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl QueryResult {
    /// The value of `column` in the first row.
    pub fn get(&self, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.rows.first()?.get(i)?.as_deref()
    }
}

/// A session with a walsender in logical (`replication=database`) mode.
#[derive(Debug)]
pub struct ReplicationConnection {
    pub(crate) wire: Wire,
    info: ConnInfo,
    /// The settings the session was opened from: with the whole host list
    /// when [`Self::connect`] walked it.
    source: ConnInfo,
    backend_pid: i32,
    server_version: Option<String>,
    in_hot_standby: Option<bool>,
    read_only_default: Option<bool>,
}

impl ReplicationConnection {
    /// Connects to the first server of the host list that
    /// `target_session_attrs` accepts (libpq's walk: in order; for
    /// `prefer-standby`, the first server that answered when no standby
    /// did). With one host and `any`, that is simply [`Self::connect_one`].
    pub async fn connect(info: &ConnInfo) -> Result<Self, ReplicationError> {
        let mut conn = walk::walk::<Self>(info).await?;
        conn.source = info.clone();
        Ok(conn)
    }

    /// What the server is: from the parameters PostgreSQL 14+ reports at
    /// start-up, else by asking.
    pub async fn role(&mut self) -> Result<ServerRole, ReplicationError> {
        let in_recovery = match self.in_hot_standby {
            Some(v) => v,
            None => {
                let r = self.simple_query("SELECT pg_is_in_recovery() AS r").await?;
                r.get("r") == Some("t")
            }
        };
        let read_only = match self.read_only_default {
            Some(v) => v,
            None => in_recovery,
        };
        Ok(ServerRole {
            in_recovery,
            read_only: read_only || in_recovery,
        })
    }

    /// Connects to `info`'s first host, negotiates TLS per `sslmode`,
    /// authenticates and waits until the server is ready for commands.
    pub async fn connect_one(info: &ConnInfo) -> Result<Self, ReplicationError> {
        let tls = tls::client_config(info)?;
        let connect = open_transport(info, tls);
        let transport = match info.connect_timeout {
            Some(t) => tokio::time::timeout(t, connect).await.map_err(|_| {
                ReplicationError::ConnectTimeout {
                    target: info.target(),
                }
            })??,
            None => connect.await?,
        };
        let mut conn = ReplicationConnection {
            wire: Wire::new(transport),
            info: info.clone(),
            source: info.clone(),
            backend_pid: 0,
            server_version: None,
            in_hot_standby: None,
            read_only_default: None,
        };
        conn.startup().await?;
        Ok(conn)
    }

    /// The connection settings this session was opened with (one host).
    pub fn conninfo(&self) -> &ConnInfo {
        &self.info
    }

    /// The settings [`Self::connect`] was given, with the whole host list
    /// (where the primary is looked for when this session is a standby's).
    pub fn source(&self) -> &ConnInfo {
        &self.source
    }

    /// The walsender's process id (for `pg_terminate_backend` and logs).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// The server's `server_version` parameter, e.g. `15.8 (Debian …)`.
    pub fn server_version(&self) -> Option<&str> {
        self.server_version.as_deref()
    }

    /// The server's major version (`17` for `17.10`), from `server_version`.
    pub fn server_major(&self) -> Option<u32> {
        self.server_version.as_deref().and_then(major_version)
    }

    /// Whether the server said it is a hot standby (`in_hot_standby`,
    /// reported by PostgreSQL 14+); `None` when it did not say.
    pub fn in_hot_standby(&self) -> Option<bool> {
        self.in_hot_standby
    }

    async fn startup(&mut self) -> Result<(), ReplicationError> {
        let params = [
            ("user", self.info.user.as_str()),
            ("database", self.info.dbname.as_str()),
            ("replication", "database"),
            ("application_name", self.info.application_name.as_str()),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "postgres"),
            ("extra_float_digits", "3"),
        ];
        encode(
            frontend::startup_message(params, self.wire.out()),
            "the startup message",
        )?;
        self.wire.send().await?;
        self.authenticate().await?;
        loop {
            match self.wire.frame().await? {
                Frame::Other(Message::ParameterStatus(p)) => match p.name().ok() {
                    Some("server_version") => {
                        self.server_version = p.value().ok().map(str::to_owned);
                    }
                    Some("in_hot_standby") => {
                        self.in_hot_standby = p.value().ok().map(|v| v == "on");
                    }
                    Some("default_transaction_read_only") => {
                        self.read_only_default = p.value().ok().map(|v| v == "on");
                    }
                    _ => {}
                },
                Frame::Other(Message::BackendKeyData(k)) => self.backend_pid = k.process_id(),
                Frame::Other(Message::ReadyForQuery(_)) => return Ok(()),
                other => self.unexpected(other, "starting the session")?,
            }
        }
    }

    fn during_connect(&self) -> String {
        format!(
            "connecting to {} as user \"{}\"",
            self.info.target(),
            self.info.user
        )
    }

    async fn authenticate(&mut self) -> Result<(), ReplicationError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.wire.frame().await? {
                Frame::Other(Message::AuthenticationOk) => return Ok(()),
                Frame::Other(Message::AuthenticationCleartextPassword) => {
                    let password = password_of(&self.info)?.to_owned();
                    self.reply("the password message", |out| {
                        frontend::password_message(password.as_bytes(), out)
                    })
                    .await?;
                }
                Frame::Other(Message::AuthenticationMd5Password(body)) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        self.info.user.as_bytes(),
                        password_of(&self.info)?.as_bytes(),
                        body.salt(),
                    );
                    self.reply("the password message", |out| {
                        frontend::password_message(hash.as_bytes(), out)
                    })
                    .await?;
                }
                Frame::Other(Message::AuthenticationSasl(body)) => {
                    let mut offered = Vec::new();
                    let mut mechanisms = body.mechanisms();
                    while let Some(m) = mechanisms
                        .next()
                        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
                    {
                        offered.push(m.to_owned());
                    }
                    let (mechanism, binding) = self.choose_sasl(&offered)?;
                    let password = self.password()?.to_owned();
                    let client = ScramSha256::new(password.as_bytes(), binding);
                    self.reply("the SASL response", |out| {
                        frontend::sasl_initial_response(mechanism, client.message(), out)
                    })
                    .await?;
                    scram = Some(client);
                }
                Frame::Other(Message::AuthenticationSaslContinue(body)) => {
                    let client = sasl_started(&mut scram, "SASL continuation")?;
                    client
                        .update(body.data())
                        .map_err(ReplicationError::Scram)?;
                    let message = client.message().to_owned();
                    self.reply("the SASL response", |out| {
                        frontend::sasl_response(&message, out)
                    })
                    .await?;
                }
                Frame::Other(Message::AuthenticationSaslFinal(body)) => {
                    let client = sasl_started(&mut scram, "SASL final message")?;
                    // Verifies the server's signature: the server knew the
                    // password too, so we are not talking to an impostor.
                    client
                        .finish(body.data())
                        .map_err(ReplicationError::Scram)?;
                }
                Frame::Other(
                    Message::AuthenticationGss
                    | Message::AuthenticationGssContinue(_)
                    | Message::AuthenticationKerberosV5,
                ) => return Err(unsupported_auth("GSSAPI/Kerberos")),
                Frame::Other(Message::AuthenticationSspi) => return Err(unsupported_auth("SSPI")),
                Frame::Other(Message::AuthenticationScmCredential) => {
                    return Err(unsupported_auth("SCM credential"));
                }
                other => self.unexpected(other, "authenticating")?,
            }
        }
    }

    /// Writes one message with `write` and sends it; `what` names it in
    /// errors.
    async fn reply(
        &mut self,
        what: &str,
        write: impl FnOnce(&mut BytesMut) -> io::Result<()>,
    ) -> Result<(), ReplicationError> {
        encode(write(self.wire.out()), what)?;
        self.wire.send().await
    }

    /// Picks SCRAM-SHA-256-PLUS when the session is TLS, the server offers
    /// it and the certificate's hash is known; plain SCRAM-SHA-256 otherwise.
    fn choose_sasl(
        &self,
        offered: &[String],
    ) -> Result<(&'static str, ChannelBinding), ReplicationError> {
        let offers = |m: &str| offered.iter().any(|o| o == m);
        if let Transport::Tls(tls) = &self.wire.io {
            let end_point = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| tls::server_end_point(c));
            match end_point {
                Some(hash) if offers(sasl::SCRAM_SHA_256_PLUS) => {
                    return Ok((
                        sasl::SCRAM_SHA_256_PLUS,
                        ChannelBinding::tls_server_end_point(hash),
                    ));
                }
                // We could bind but the server did not offer it: say so, so
                // that a man in the middle stripping `-PLUS` is detected.
                Some(_) if offers(sasl::SCRAM_SHA_256) => {
                    return Ok((sasl::SCRAM_SHA_256, ChannelBinding::unrequested()));
                }
                _ => {}
            }
        }
        if offers(sasl::SCRAM_SHA_256) {
            Ok((sasl::SCRAM_SHA_256, ChannelBinding::unsupported()))
        } else {
            Err(ReplicationError::UnsupportedAuth {
                method: format!("SASL ({})", offered.join(", ")),
            })
        }
    }

    fn password(&self) -> Result<&str, ReplicationError> {
        password_of(&self.info)
    }

    /// Turns a frame nobody expected into an error, and skips notices.
    pub(crate) fn unexpected(&self, frame: Frame, during: &str) -> Result<(), ReplicationError> {
        unexpected_frame(frame, || {
            if during == "authenticating" || during == "starting the session" {
                self.during_connect()
            } else {
                during.to_owned()
            }
        })
    }

    /// Runs one command with the simple-query protocol and collects its rows
    /// as text. For replication commands, whose results are a row or two.
    pub async fn simple_query(&mut self, sql: &str) -> Result<QueryResult, ReplicationError> {
        encode(frontend::query(sql, self.wire.out()), "the query")?;
        self.wire.send().await?;
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            match self.wire.frame().await? {
                Frame::Other(Message::RowDescription(desc)) => {
                    let mut fields = desc.fields();
                    while let Some(f) = fields
                        .next()
                        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
                    {
                        result.columns.push(f.name().to_owned());
                    }
                }
                Frame::Other(Message::DataRow(row)) => {
                    let buf = row.buffer();
                    let mut ranges = row.ranges();
                    let mut values = Vec::with_capacity(result.columns.len());
                    while let Some(range) = ranges
                        .next()
                        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
                    {
                        values.push(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    result.rows.push(values);
                }
                Frame::Other(Message::CommandComplete(_) | Message::EmptyQueryResponse) => {}
                Frame::Other(Message::ErrorResponse(body)) => {
                    let e = ServerError::parse(body.fields())
                        .map_err(|e| ReplicationError::Protocol(e.to_string()))?;
                    error = Some(e);
                }
                Frame::Other(Message::ReadyForQuery(_)) => {
                    return match error {
                        Some(error) => Err(ReplicationError::Server {
                            during: sql.to_owned(),
                            error: Box::new(error),
                        }),
                        None => Ok(result),
                    };
                }
                other => unexpected_frame(other, || sql.to_owned())?,
            }
        }
    }

    /// Ends the session politely (a `Terminate` message).
    pub async fn close(mut self) {
        frontend::terminate(self.wire.out());
        // Best effort: the server cleans up on end of file anyway.
        let _ = self.wire.send().await;
        self.wire.shutdown().await;
    }
}

impl Session for ReplicationConnection {
    type Error = ReplicationError;

    async fn open(candidate: &ConnInfo) -> Result<Self, ReplicationError> {
        Self::connect_one(candidate).await
    }

    async fn server_role(&mut self) -> Result<ServerRole, ReplicationError> {
        self.role().await
    }

    async fn end(self) {
        self.close().await;
    }

    fn no_matching_host(targets: String, attrs: SessionAttrs, found: String) -> ReplicationError {
        ReplicationError::NoMatchingHost {
            targets,
            attrs,
            found,
        }
    }
}

/// The password, or the error that explains where to put one.
fn password_of(info: &ConnInfo) -> Result<&str, ReplicationError> {
    info.password
        .as_ref()
        .map(|p| p.expose())
        .ok_or_else(|| ReplicationError::PasswordMissing {
            user: info.user.clone(),
        })
}

/// Reports `frame` as an error, except notices and parameter changes, which
/// are logged or ignored. `during` names what we were doing.
pub(crate) fn unexpected_frame(
    frame: Frame,
    during: impl FnOnce() -> String,
) -> Result<(), ReplicationError> {
    match frame {
        Frame::Other(Message::NoticeResponse(body)) => {
            if let Ok(notice) = ServerError::parse(body.fields()) {
                tracing::info!(
                    severity = %notice.severity,
                    code = %notice.code,
                    "postgres notice: {}",
                    notice.message
                );
            }
            Ok(())
        }
        Frame::Other(Message::ParameterStatus(_)) => Ok(()),
        Frame::Other(Message::ErrorResponse(body)) => {
            let error = ServerError::parse(body.fields())
                .map_err(|e| ReplicationError::Protocol(e.to_string()))?;
            Err(ReplicationError::Server {
                during: during(),
                error: Box::new(error),
            })
        }
        other => Err(ReplicationError::Protocol(format!(
            "unexpected message while {}: {}",
            during(),
            frame_name(&other)
        ))),
    }
}

fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::CopyData(_) => "CopyData",
        Frame::CopyBoth => "CopyBothResponse",
        Frame::Other(m) => match m {
            Message::CommandComplete(_) => "CommandComplete",
            Message::CopyDone => "CopyDone",
            Message::CopyInResponse(_) => "CopyInResponse",
            Message::CopyOutResponse(_) => "CopyOutResponse",
            Message::DataRow(_) => "DataRow",
            Message::ReadyForQuery(_) => "ReadyForQuery",
            Message::RowDescription(_) => "RowDescription",
            Message::NotificationResponse(_) => "NotificationResponse",
            _ => "another message",
        },
    }
}

/// The major version in a `server_version` text: `17` for `17.10 (Debian…)`,
/// `9` for `9.6.1`.
pub fn major_version(server_version: &str) -> Option<u32> {
    let digits: String = server_version
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Opens the socket and, over TCP, negotiates TLS as `sslmode` says.
async fn open_transport(
    info: &ConnInfo,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Transport, ReplicationError> {
    let name = match &info.host {
        Host::Unix(_) => {
            let path = info.socket_path().unwrap_or_default();
            let s =
                UnixStream::connect(&path)
                    .await
                    .map_err(|source| ReplicationError::Connect {
                        target: info.target(),
                        source,
                    })?;
            return Ok(Transport::Unix(s));
        }
        Host::Tcp(name) => name,
    };
    let mut tcp =
        connect_tcp(name, info.port)
            .await
            .map_err(|source| ReplicationError::Connect {
                target: info.target(),
                source,
            })?;
    // Replication traffic is many small status messages one way and a
    // stream the other; Nagle would only delay our replies.
    let _ = tcp.set_nodelay(true);
    let Some(config) = tls else {
        return Ok(Transport::Tcp(tcp));
    };
    let handshake_err = |source| ReplicationError::TlsHandshake {
        target: info.target(),
        source,
    };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request)
        .await
        .map_err(ReplicationError::Io)?;
    // Exactly one byte: anything the server sent after it would be
    // unencrypted data injected before the handshake (CVE-2021-23222).
    let answer = tcp.read_u8().await.map_err(ReplicationError::Io)?;
    match answer {
        b'S' => {
            let server_name = tls::server_name(name)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await
                .map_err(handshake_err)?;
            Ok(Transport::Tls(Box::new(tls)))
        }
        b'N' if info.ssl_mode == SslMode::Prefer => Ok(Transport::Tcp(tcp)),
        b'N' => Err(ReplicationError::TlsUnsupported {
            target: info.target(),
            mode: info.ssl_mode,
        }),
        other => Err(ReplicationError::Protocol(format!(
            "unexpected answer {other:#04x} to the TLS request"
        ))),
    }
}

/// Tries every address the name resolves to, in order, as libpq does.
async fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("`{host}` resolves to no address"),
        )
    }))
}

#[cfg(test)]
mod tests;
