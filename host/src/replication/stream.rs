//! The CopyBoth loop of logical replication: `START_REPLICATION`, XLogData
//! and keepalives in, standby status updates out.
//!
//! [`ReplicationStream::next`] yields [`ReplicationEvent`]s; the payload of
//! XLogData (one pgoutput message) is a [`Bytes`] slice of the connection's
//! read buffer, never copied.
//!
//! Position reporting. The stream reports three LSNs to the server:
//! *flush* (= *apply*) is what the position tracker says is durable, given
//! with [`ReplicationStream::set_flushed`] or through a `watch` channel
//! ([`StreamOptions::flushed`]); *write* is the furthest position received.
//! Invariants: flush never moves backwards (a lower value is ignored: an
//! older PostgreSQL would move `confirmed_flush_lsn` back if told so),
//! write ≥ flush, and flush starts at `0/0`, which the server ignores, so
//! nothing is confirmed until the tracker says so.
//!
//! Status updates go out at most every [`StreamOptions::status_interval`]
//! (and at least that often while `next` is being called), right away when
//! the server asks for a reply — on the next call to `next`, so that the
//! caller can first move the flush position on the keepalive it received —
//! and once more on [`ReplicationStream::stop`].
//!
//! Liveness depends on the caller: the stream reads and replies only while
//! `next` is being awaited. A caller that stops calling it for longer than
//! the server's `wal_sender_timeout` (60 s by default) is disconnected.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::sync::watch;
use tokio::time::Instant;

use super::connection::{Frame, ReplicationConnection, unexpected_frame};
use super::error::ReplicationError;
use super::slot::{SlotName, quote_ident, quote_literal};
use crate::lsn::Lsn;

/// Seconds from the Unix epoch to PostgreSQL's, 2000-01-01 00:00:00 UTC.
const PG_EPOCH_OFFSET_SECS: u64 = 946_684_800;
/// How long [`ReplicationStream::stop`] waits for the server to end the copy.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// pgoutput's options for `START_REPLICATION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOutputOptions {
    /// `proto_version`: 1, or 2 (PostgreSQL 14+), 3 or 4 (later versions).
    pub proto_version: u32,
    /// The publications to stream; at least one.
    pub publication_names: Vec<String>,
    /// Stream `pg_logical_emit_message` messages.
    pub messages: bool,
    /// `origin` (PostgreSQL 16+): `Some("none")` leaves out changes applied
    /// under a replication origin; `None` sends no option (every change).
    pub origin: Option<&'static str>,
}

impl PgOutputOptions {
    /// Protocol 2 with logical messages, for the given publication.
    pub fn new(publication: impl Into<String>) -> Self {
        PgOutputOptions {
            proto_version: 2,
            publication_names: vec![publication.into()],
            messages: true,
            origin: None,
        }
    }
}

/// Options of the stream itself.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Minimum time between unsolicited status updates.
    pub status_interval: Duration,
    /// Where the position tracker publishes the flushed LSN, if it uses a
    /// channel rather than [`ReplicationStream::set_flushed`].
    pub flushed: Option<watch::Receiver<Lsn>>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            status_interval: Duration::from_secs(1),
            flushed: None,
        }
    }
}

/// One message from the server's replication stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationEvent {
    /// WAL data: one pgoutput message.
    XLogData {
        /// Where the data starts in the WAL.
        wal_start: Lsn,
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// The server's clock when it sent this, in microseconds since
        /// 2000-01-01 UTC.
        send_time: i64,
        data: Bytes,
    },
    /// The server is alive; everything before `wal_end` has been sent.
    Keepalive {
        wal_end: Lsn,
        send_time: i64,
        /// The server wants a status update now; the stream sends it on the
        /// next call to [`ReplicationStream::next`].
        reply_requested: bool,
    },
}

/// A running logical replication stream.
#[derive(Debug)]
pub struct ReplicationStream {
    conn: ReplicationConnection,
    options: StreamOptions,
    /// Furthest position received.
    received: Lsn,
    /// Furthest position the tracker declared durable.
    flushed: Lsn,
    next_status: Instant,
    reply_pending: bool,
    /// The server ended the copy (CopyDone received).
    ended: bool,
}

impl ReplicationConnection {
    /// `START_REPLICATION SLOT slot LOGICAL start (…)`. With `start` at
    /// `0/0` the server resumes from the slot's `confirmed_flush_lsn`; it
    /// never streams anything before that, whatever `start` says.
    pub async fn start_replication(
        mut self,
        slot: &SlotName,
        start: Lsn,
        plugin: &PgOutputOptions,
        options: StreamOptions,
    ) -> Result<ReplicationStream, ReplicationError> {
        let command = start_command(slot, start, plugin);
        frontend::query(&command, self.wire.out())
            .map_err(|e| ReplicationError::Protocol(format!("cannot encode the command: {e}")))?;
        self.wire.send().await?;
        loop {
            match self.wire.frame().await? {
                Frame::CopyBoth => break,
                // An error is followed by ReadyForQuery; the session stays
                // usable, but we hand back the error and drop it.
                other => unexpected_frame(other, || command.clone())?,
            }
        }
        tracing::info!(slot = %slot, start = %start, "replication started");
        let mut stream = ReplicationStream {
            conn: self,
            next_status: Instant::now() + options.status_interval,
            options,
            received: Lsn::ZERO,
            flushed: Lsn::ZERO,
            reply_pending: false,
            ended: false,
        };
        stream.poll_flushed();
        Ok(stream)
    }
}

fn start_command(slot: &SlotName, start: Lsn, plugin: &PgOutputOptions) -> String {
    let publications = plugin
        .publication_names
        .iter()
        .map(|p| quote_ident(p))
        .collect::<Vec<_>>()
        .join(",");
    let origin = plugin
        .origin
        .map_or(String::new(), |o| format!(", origin {}", quote_literal(o)));
    format!(
        "START_REPLICATION SLOT {slot} LOGICAL {start} (proto_version {}, publication_names {}, messages {}{origin})",
        quote_literal(&plugin.proto_version.to_string()),
        quote_literal(&publications),
        quote_literal(if plugin.messages { "true" } else { "false" }),
    )
}

impl ReplicationStream {
    /// The next event, or `None` once the server has ended the stream.
    ///
    /// Cancel-safe: dropping the future between events loses nothing.
    pub async fn next(&mut self) -> Result<Option<ReplicationEvent>, ReplicationError> {
        if self.ended {
            return Ok(None);
        }
        if self.reply_pending || Instant::now() >= self.next_status {
            self.send_status(false).await?;
        }
        loop {
            if let Some(frame) = self.conn.wire.try_frame()? {
                match frame {
                    Frame::CopyData(data) => return self.on_copy_data(data).map(Some),
                    Frame::Other(Message::CopyDone) => {
                        self.end_copy().await?;
                        return Ok(None);
                    }
                    other => unexpected_frame(other, || "streaming".to_owned())?,
                }
                continue;
            }
            tokio::select! {
                filled = self.conn.wire.fill() => filled?,
                () = tokio::time::sleep_until(self.next_status) => self.send_status(false).await?,
            }
        }
    }

    /// Declares everything before `lsn` durably processed. Lower values than
    /// the current one are ignored.
    pub fn set_flushed(&mut self, lsn: Lsn) {
        if lsn > self.flushed {
            self.flushed = lsn;
        }
    }

    /// The flush position reported to the server.
    pub fn flushed(&mut self) -> Lsn {
        self.poll_flushed();
        self.flushed
    }

    /// The write position reported to the server (≥ [`Self::flushed`]).
    pub fn written(&mut self) -> Lsn {
        self.poll_flushed();
        self.received.max(self.flushed)
    }

    /// The walsender's process id.
    pub fn backend_pid(&self) -> i32 {
        self.conn.backend_pid()
    }

    /// The session the stream runs on.
    pub fn connection(&self) -> &ReplicationConnection {
        &self.conn
    }

    /// Sends a status update now, asking the server to answer with a
    /// keepalive if `request_reply`.
    pub async fn send_status(&mut self, request_reply: bool) -> Result<(), ReplicationError> {
        self.poll_flushed();
        let flush = self.flushed;
        let write = self.received.max(flush);
        debug_assert!(write >= flush);
        let mut msg = BytesMut::with_capacity(34);
        msg.put_u8(b'r');
        msg.put_u64(write.0);
        msg.put_u64(flush.0);
        msg.put_u64(flush.0);
        msg.put_i64(pg_now());
        msg.put_u8(u8::from(request_reply));
        frontend::CopyData::new(msg.freeze())
            .map_err(|e| ReplicationError::Protocol(e.to_string()))?
            .write(self.conn.wire.out());
        self.conn.wire.send().await?;
        self.reply_pending = false;
        self.next_status = Instant::now() + self.options.status_interval;
        tracing::trace!(write = %write, flush = %flush, "standby status update sent");
        Ok(())
    }

    /// Ends the stream cleanly: a last status update, CopyDone, and waits for
    /// the server to finish; the session can then run commands again.
    pub async fn stop(mut self) -> Result<ReplicationConnection, ReplicationError> {
        if !self.ended {
            self.send_status(false).await?;
            frontend::copy_done(self.conn.wire.out());
            self.conn.wire.send().await?;
            tokio::time::timeout(STOP_TIMEOUT, self.drain())
                .await
                .map_err(|_| {
                    ReplicationError::Protocol(
                        "the server did not end the replication stream within 10 s".into(),
                    )
                })??;
        }
        Ok(self.conn)
    }

    /// [`Self::stop`], then closes the session.
    pub async fn shutdown(self) -> Result<(), ReplicationError> {
        self.stop().await?.close().await;
        Ok(())
    }

    /// After our CopyDone: skips data still in flight until the server's
    /// CopyDone, then waits for ReadyForQuery.
    async fn drain(&mut self) -> Result<(), ReplicationError> {
        loop {
            match self.conn.wire.frame().await? {
                Frame::CopyData(_) => {}
                Frame::Other(Message::CopyDone) => break,
                other => unexpected_frame(other, || "ending replication".to_owned())?,
            }
        }
        self.wait_ready().await
    }

    /// The server ended the copy first: answer with our CopyDone.
    async fn end_copy(&mut self) -> Result<(), ReplicationError> {
        self.ended = true;
        frontend::copy_done(self.conn.wire.out());
        self.conn.wire.send().await?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), ReplicationError> {
        self.ended = true;
        loop {
            match self.conn.wire.frame().await? {
                // The walsender may still push a keepalive after its
                // CopyDone (PostgreSQL 15 does on a busy loop): skip it.
                Frame::CopyData(_) | Frame::Other(Message::CommandComplete(_)) => {}
                Frame::Other(Message::ReadyForQuery(_)) => return Ok(()),
                other => unexpected_frame(other, || "ending replication".to_owned())?,
            }
        }
    }

    fn on_copy_data(&mut self, mut data: Bytes) -> Result<ReplicationEvent, ReplicationError> {
        let Some(&kind) = data.first() else {
            return Err(ReplicationError::Protocol("empty CopyData message".into()));
        };
        match kind {
            b'w' => {
                if data.len() < 25 {
                    return Err(truncated("XLogData", data.len()));
                }
                data.advance(1);
                let wal_start = Lsn(data.get_u64());
                let wal_end = Lsn(data.get_u64());
                let send_time = data.get_i64();
                self.received = self.received.max(wal_start);
                Ok(ReplicationEvent::XLogData {
                    wal_start,
                    wal_end,
                    send_time,
                    data,
                })
            }
            b'k' => {
                if data.len() < 18 {
                    return Err(truncated("primary keepalive", data.len()));
                }
                data.advance(1);
                let wal_end = Lsn(data.get_u64());
                let send_time = data.get_i64();
                let reply_requested = data.get_u8() != 0;
                self.received = self.received.max(wal_end);
                self.reply_pending |= reply_requested;
                Ok(ReplicationEvent::Keepalive {
                    wal_end,
                    send_time,
                    reply_requested,
                })
            }
            other => Err(ReplicationError::Protocol(format!(
                "unknown replication message kind {:?}",
                char::from(other)
            ))),
        }
    }

    fn poll_flushed(&mut self) {
        if let Some(rx) = &self.options.flushed {
            let lsn = *rx.borrow();
            self.set_flushed(lsn);
        }
    }
}

fn truncated(what: &str, len: usize) -> ReplicationError {
    ReplicationError::Protocol(format!("truncated {what} message ({len} bytes)"))
}

/// Now, in microseconds since 2000-01-01 UTC.
fn pg_now() -> i64 {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let micros = since_unix.as_micros() as i64;
    micros - (PG_EPOCH_OFFSET_SECS as i64) * 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_command_quotes_publications() {
        let slot = SlotName::new("s1").unwrap();
        let plugin = PgOutputOptions {
            proto_version: 2,
            publication_names: vec!["my pub".into(), "it's \"q\"".into()],
            messages: true,
            origin: None,
        };
        assert_eq!(
            start_command(&slot, Lsn(0x1_0000_0010), &plugin),
            "START_REPLICATION SLOT s1 LOGICAL 1/10 (proto_version '2', publication_names '\"my pub\",\"it''s \"\"q\"\"\"', messages 'true')"
        );
        let none = PgOutputOptions {
            origin: Some("none"),
            ..PgOutputOptions::new("p")
        };
        assert_eq!(
            start_command(&slot, Lsn(0x10), &none),
            "START_REPLICATION SLOT s1 LOGICAL 0/10 (proto_version '2', publication_names '\"p\"', messages 'true', origin 'none')"
        );
    }

    #[test]
    fn pg_epoch() {
        // 2000-01-01 is 30 years of microseconds after 1970, so "now" is
        // well above zero and below the Unix-epoch count.
        let now = pg_now();
        assert!(now > 0);
        assert!(
            now < SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros() as i64
        );
    }
}
