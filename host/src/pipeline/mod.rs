//! The pipeline: PostgreSQL changes through the plugin chain to JetStream.
//!
//! Read along the data path:
//!
//! - [`run`]: `sluice run` as three phases, and shutdown.
//! - `start`: the start phase (endpoint, NATS, store, plugins, PostgreSQL).
//! - `source_loop`: reads the stream and a snapshot, feeds the stages,
//!   returns tickets to the confirmer, drains.
//! - `feed`: source events and chunks into work and tickets, in stream
//!   order.
//! - `stages`: the plugin thread, the publisher and the completion task.
//! - [`chain`]: transforms and sink under the error policy.
//! - [`reload`]: new plugin chains built off the hot path, swapped in
//!   between transactions.
//! - `heartbeat`: writes that keep a quiet slot moving.
//! - `ghost`: the marker published when ghost changes are accepted after a
//!   promotion.
//!
//! What may be confirmed to PostgreSQL is decided in one place,
//! [`crate::position::confirm`].

pub mod chain;
mod feed;
mod ghost;
mod heartbeat;
pub mod reload;
pub mod run;
mod source_loop;
mod stages;
mod start;

pub use run::{RunError, run};
