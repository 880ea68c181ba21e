//! The pipeline: PostgreSQL changes through the plugin chain to JetStream.
//!
//! - [`chain`]: transforms and sink under the error policy.
//! - [`acks`]: which transactions JetStream has stored, in commit order.
//! - [`reload`]: new plugin chains built off the hot path, swapped in
//!   between transactions.
//! - [`run`]: the tasks of `sluice run` and how they are wired.

pub mod acks;
pub mod chain;
pub mod reload;
pub mod run;

pub use run::{RunError, run};
