//! The pipeline: PostgreSQL changes through the plugin chain to JetStream.
//!
//! - [`chain`]: transforms and sink under the error policy.

pub mod chain;
