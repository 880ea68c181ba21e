//! The PostgreSQL logical-replication client: the host owns the walsender
//! connection itself, on `postgres-protocol` and tokio.
//!
//! Dataflow: [`ConnInfo`] (parsed from a libpq-style URL) →
//! [`setup::check`] (an ordinary SQL connection verifies `wal_level`, the
//! role, the publication, the tables' replica identity and the slot) →
//! [`ReplicationConnection::connect`] (startup with `replication=database`,
//! TLS, authentication) → `IDENTIFY_SYSTEM` / `CREATE_REPLICATION_SLOT` →
//! [`ReplicationConnection::start_replication`] → [`ReplicationStream`],
//! whose XLogData payloads (raw pgoutput messages) go to the decoder, and
//! which reports back to the server the flush position the position
//! tracker gives it.
//!
//! A source URL may name several hosts (libpq's host lists and
//! `target_session_attrs`): both kinds of connection walk the list the same
//! way (`walk`) and take the first server of the wanted role, and the reader
//! walks it again on every reconnect, which is how it follows a failover.
//! [`ha`] holds the checks that say whether a failover would keep the slot.
//! The URL may also resolve to a hot standby (PostgreSQL 16+), which is then
//! decoded from: [`standby`] creates the slot there, and [`primary`] reaches
//! the primary for what must run on it.
//!
//! Errors say whether they are transient ([`ReplicationError::is_transient`]):
//! on a transient one the caller reconnects after [`Backoff::next_delay`]
//! and restarts from the slot; a definite one stops the pipeline.

mod backoff;
mod client_cert;
mod connection;
mod conninfo;
mod error;
pub mod ha;
pub mod identity;
pub mod primary;
pub mod setup;
mod slot;
mod sql;
pub mod standby;
mod stream;
mod tls;
mod walk;

pub use backoff::Backoff;
pub use client_cert::ClientCertError;
pub use connection::{QueryResult, ReplicationConnection, major_version};
pub use conninfo::{ConnInfo, ConnInfoError, Endpoint, Host, ServerRole, SessionAttrs, SslMode};
pub use error::{ReplicationError, ServerError};
pub use slot::{
    CreateSlotOptions, CreatedSlot, SlotName, SlotNameError, SnapshotAction, SystemIdentity,
    TimelineSwitch, parse_timeline_history, quote_ident, quote_literal,
};
pub use sql::SqlError;
pub use stream::{PgOutputOptions, ReplicationEvent, ReplicationStream, StreamOptions};
pub use tls::{MakeRustlsConnect, RustlsConnect, RustlsStream, TlsError};
