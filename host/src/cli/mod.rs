//! The `sluice` command line: argument parsing and the commands' code.
//!
//! Commands write their results to stdout and nothing else there, so their
//! output can be piped; logs and errors go to stderr. A failed command
//! returns an error naming the file, flag or plugin at fault, which `main`
//! prints before exiting non-zero.

mod input;
mod message_view;
mod pipeline;
mod plugin;

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

    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run { manifest } => pipeline::run(&manifest),
            Command::Check { manifest } => pipeline::check(&manifest),
            Command::Plugin(PluginCommand::Inspect { file, runtime }) => {
                plugin::inspect(&file, &runtime)
            }
            Command::Plugin(PluginCommand::Run(args)) => plugin::run(args),
        }
    }
}
