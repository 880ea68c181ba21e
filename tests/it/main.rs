//! The integration tests, as one test binary (`cargo test -p sluice-host
//! --test it`): one module per area, named as the test binaries they
//! replace, so `cargo test --test it -- pipeline::` runs one area. They run
//! against real components, PostgreSQL and NATS, which [`support`] starts.
//!
//! One binary links wasmtime once instead of once per area, and shares one
//! PostgreSQL cluster ([`support::postgres::PgCluster::shared`]) between
//! every area.

mod support;

mod chain;
mod cli;
mod failover;
mod faults;
mod flush;
mod inputs;
mod languages;
mod metrics;
mod pipeline;
mod plugins;
mod position;
mod publish;
mod reload;
mod replication;
mod schemas;
mod snapshot;
mod source;
mod standby;
