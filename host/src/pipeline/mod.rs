//! The pipeline: PostgreSQL changes through the plugin chain to JetStream.
//!
//! - [`chain`]: transforms and sink under the error policy.
//! - [`acks`]: which transactions JetStream has stored, in commit order.
//! - `feed`: source events, snapshot and backfill chunks handed to the
//!   plugin thread in stream order.
//! - [`reload`]: new plugin chains built off the hot path, swapped in
//!   between transactions.
//! - [`run`]: the tasks of `sluice run` and how they are wired.

pub mod acks;
pub mod chain;
mod feed;
pub mod reload;
pub mod run;

pub use run::{RunError, run};
