//! The `sluice` command line: argument parsing and the commands' code.
//!
//! Commands write their results to stdout and nothing else there, so their
//! output can be piped; logs and errors go to stderr. A failed command
//! returns an error naming the file, flag or plugin at fault, which `main`
//! prints before exiting non-zero.

mod backfill;
mod check_chain;
mod input;
mod message_view;
mod offset;
mod pipeline;
mod plugin;
mod slot;
mod stream;
mod tail;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Streams PostgreSQL changes through WebAssembly plugins to NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Streams the manifest's pipeline until SIGINT or SIGTERM.
    Run {
        /// The manifest (TOML).
        manifest: PathBuf,
    },
    /// Validates a manifest, its plugins and its connections, and says what
    /// `run` would do.
    Check {
        /// The manifest (TOML).
        manifest: PathBuf,
    },
    /// Inspect and try out plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Prints the decoded change stream as JSON lines until Ctrl-C.
    Tail(tail::TailArgs),
    /// Shows, advances or drops the manifest's replication slot.
    #[command(subcommand)]
    Slot(slot::SlotCommand),
    /// Shows, sets or clears the manifest's stored offset.
    #[command(subcommand)]
    Offset(offset::OffsetCommand),
    /// Asks the running pipeline to read a table's current rows into the
    /// stream (as `read` events) without pausing it.
    Backfill {
        /// The manifest (TOML).
        manifest: PathBuf,
        /// The table, `schema.table` or `table` (in `public`).
        table: String,
        /// An SQL condition: only rows matching it are read.
        #[arg(long = "where", value_name = "SQL")]
        condition: Option<String>,
    },
    /// Shows what the manifest's JetStream stream holds.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Says which world a component implements and what it imports.
    Inspect {
        /// The component file.
        file: PathBuf,
        #[command(flatten)]
        runtime: plugin::RuntimeArgs,
    },
    /// Runs batches from a JSON file through transforms and an optional sink.
    Run(plugin::RunArgs),
}

impl Cli {
    /// The manifest's `[log]` settings when the command runs one, so that
    /// logging can be set up before anything is logged.
    pub(crate) fn log_settings(&self) -> Option<sluice_host::config::LogSettings> {
        match &self.command {
            Command::Run { manifest } | Command::Check { manifest } => {
                sluice_host::config::Manifest::load(manifest)
                    .ok()
                    .map(|m| m.log)
            }
            _ => None,
        }
    }

    /// The log level when neither `SLUICE_LOG` nor a manifest sets one:
    /// commands that print their answer on stdout log only warnings.
    pub(crate) fn default_log_level(&self) -> &'static str {
        match &self.command {
            Command::Stream(_)
            | Command::Slot(_)
            | Command::Offset(_)
            | Command::Backfill { .. } => "warn",
            _ => "info",
        }
    }

    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run { manifest } => pipeline::run(&manifest),
            Command::Backfill {
                manifest,
                table,
                condition,
            } => backfill::run(&manifest, table, condition),
            Command::Check { manifest } => pipeline::check(&manifest),
            Command::Plugin(PluginCommand::Inspect { file, runtime }) => {
                plugin::inspect(&file, &runtime)
            }
            Command::Plugin(PluginCommand::Run(args)) => plugin::run(args),
            Command::Tail(args) => tail::run(args),
            Command::Slot(command) => slot::run(command),
            Command::Offset(command) => offset::run(command),
            Command::Stream(command) => stream::run(command),
        }
    }
}

/// The async runtime of the commands that talk to PostgreSQL or NATS.
///
/// One worker thread unless `TOKIO_WORKER_THREADS` says otherwise: the
/// async side of a pipeline (replication reader, publisher, NATS client) is
/// light and talks to itself constantly, while plugins run on their own
/// thread and file writes on the blocking pool. On the OLTP benchmark one
/// worker used 10–25% less CPU per row than two (fewer cross-thread
/// wake-ups) and kept up better; see README "Performance".
fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
