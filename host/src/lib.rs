//! Sluice's host: streams PostgreSQL changes through WebAssembly plugins to
//! NATS JetStream.
//!
//! The crate is a library so that the integration tests in the repository's
//! `tests/` folder drive the same code as the `sluice` binary. Each module
//! owns one part of the dataflow described in `DESIGN.md`:
//!
//! - [`batch_json`]: the JSON form of batches `sluice plugin run` reads,
//!   checked as if it came from PostgreSQL.
//! - [`dry_run`]: `sluice check`'s synthetic row per published table
//!   through the plugin chain.
//! - [`fuzzing`]: the functions the coverage-guided fuzz targets call.
//! - [`causes`]: an error and its causes as text, each cause once.
//! - [`config`]: the manifest, validated in full before anything connects.
//! - [`lsn`]: the WAL position type.
//! - [`metrics`]: Prometheus metrics and the `/metrics`, `/healthz` and
//!   `/readyz` endpoints.
//! - [`model`]: batches, events and values as the host sees them (mirrors
//!   the WIT contract).
//! - [`pgoutput`]: the pgoutput decoder, relation cache and batcher.
//! - [`pipeline`]: the plugin chain and the dataflow from source to JetStream.
//! - [`plugin`]: the wasmtime engine, the component cache, plugin instances
//!   and their limits.
//! - [`position`]: what has been read, stored and confirmed: the offset
//!   record, the offset stores, the confirmation of commit LSNs in order and
//!   the start-up reconciliation of the offset with the slot.
//! - [`publish`]: NATS connection, stream set-up, publish permissions and the
//!   ordered, windowed JetStream publisher.
//! - [`replication`]: the logical-replication connection (startup, TLS,
//!   authentication, slots, the CopyBoth stream, standby status) and the
//!   pre-flight setup checks.
//! - [`secret`]: the one type for passwords, tokens and URLs that hold
//!   them, never printed.
//! - [`snapshot`]: initial snapshots and their resume: existing rows as
//!   `read` events, placed consistently in the stream.
//! - [`source`]: the replication source shared by the pipeline and
//!   `sluice tail`: setup, slot, reconnection, decoded batches.
//! - [`tail`]: `sluice tail`, decoded changes as JSON lines.

pub mod batch_json;
pub mod causes;
pub mod config;
pub mod dry_run;
pub mod fuzzing;
pub mod lsn;
pub mod metrics;
pub mod model;
pub mod pgoutput;
pub mod pipeline;
pub mod plugin;
pub mod position;
pub mod publish;
pub mod replication;
pub mod secret;
pub mod snapshot;
pub mod source;
pub mod tail;
