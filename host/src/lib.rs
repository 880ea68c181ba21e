//! Sluice's host: streams PostgreSQL changes through WebAssembly plugins to
//! NATS JetStream.
//!
//! The crate is a library so that the integration tests in the repository's
//! `tests/` folder drive the same code as the `sluice` binary. Each module
//! owns one part of the dataflow described in `DESIGN.md`:
//!
//! - [`lsn`]: the WAL position type.
//! - [`model`]: batches, events and values as the host sees them (mirrors
//!   the WIT contract).
//! - [`plugin`]: the wasmtime engine, the component cache, plugin instances
//!   and their limits.
//! - [`publish`]: NATS connection, stream set-up, publish permissions and the
//!   ordered, windowed JetStream publisher.

pub mod lsn;
pub mod model;
pub mod plugin;
pub mod publish;
