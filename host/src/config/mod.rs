//! The manifest: one TOML file that describes a pipeline (DESIGN.md §5).
//!
//! This module owns reading it and turning it into typed settings that the
//! rest of the host can trust. Its invariants:
//!
//! - A manifest is validated in full before anything connects: every mistake
//!   is reported at once, each with its path in the file (see `fields`).
//! - Unknown keys are errors (a typo must not silently fall back to a
//!   default), with a suggestion when a known key is close.
//! - `${VAR}` in any string is replaced from the environment before the
//!   value is read (`$$` writes a literal `$`); a missing variable is an
//!   error naming the variable. Values that may hold secrets (URLs with
//!   passwords, passwords, tokens, seeds) are never echoed in errors, and
//!   their `Debug` forms are redacted.
//! - Plugin paths are resolved against the manifest's folder.

mod changes;
mod env;
mod fields;
mod nats;
pub mod ranges;
mod sections;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::plugin::{Limits, PluginSpec};
pub use crate::replication::SlotName;
pub use crate::replication::setup::{PublicationScope, TableName};
pub use crate::snapshot::{SnapshotMode, SnapshotSettings};
pub use changes::{ChangeOptions, Origin};
pub use fields::Problem;
pub use sections::{
    BatchSettings, ErrorPolicy, FlushMode, GhostChanges, Heartbeat, LogFormat, LogSettings,
    MismatchStrategy, NatsSettings, OffsetStoreSpec, PositionSettings, SourceSettings,
};
pub use values::{Identifier, PipelineName, PluginName, StreamName};

/// A loaded, valid manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The file it was read from.
    pub file: PathBuf,
    /// The pipeline's name (default: the slot name).
    pub pipeline: PipelineName,
    pub source: SourceSettings,
    pub position: PositionSettings,
    pub nats: NatsSettings,
    /// Transforms in the order batches pass through them.
    pub transforms: Vec<PluginSpec>,
    pub sink: PluginSpec,
    pub batch: BatchSettings,
    /// How snapshots read tables (`source.snapshot` says when).
    pub snapshot: SnapshotSettings,
    pub errors: ErrorPolicy,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    pub log: LogSettings,
    /// How long a clean shutdown waits for in-flight publishes.
    pub shutdown_timeout: Duration,
}

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {}: {error}", file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("manifest {} is not valid TOML: {message}", file.display())]
    Syntax { file: PathBuf, message: String },
    /// The file is TOML but describes no valid pipeline.
    #[error("{}", invalid_text(file, problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ManifestError {
    /// Every problem found, for callers that present them one by one.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ManifestError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn invalid_text(file: &Path, problems: &[Problem]) -> String {
    let count = problems.len();
    let mut text = format!(
        "manifest {} has {count} problem{}:",
        file.display(),
        if count == 1 { "" } else { "s" }
    );
    for p in problems {
        text.push_str("\n  - ");
        text.push_str(&p.to_string());
    }
    text
}

impl Manifest {
    /// Every plugin: the transforms in order, then the sink.
    pub fn plugins(&self) -> impl Iterator<Item = &PluginSpec> {
        self.transforms.iter().chain([&self.sink])
    }

    /// The plugin runtime these plugins need (see
    /// [`crate::plugin::RuntimeConfig::for_plugins`]).
    pub fn plugin_runtime(
        &self,
    ) -> Result<crate::plugin::PluginRuntime, crate::plugin::PluginError> {
        crate::plugin::PluginRuntime::new(crate::plugin::RuntimeConfig::for_plugins(self.plugins()))
    }

    /// Reads and validates the manifest at `file`, taking `${VAR}`s from the
    /// process environment.
    pub fn load(file: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
            file: file.to_owned(),
            error: source,
        })?;
        Manifest::parse(&text, file, &|name| std::env::var(name).ok())
    }

    /// Validates manifest text; `file` names it in errors and anchors
    /// relative plugin paths; `env` looks up `${VAR}`s.
    pub fn parse(
        text: &str,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Manifest, ManifestError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ManifestError::Syntax {
                    file: file.to_owned(),
                    message: e.to_string().trim().to_owned(),
                })?;
        let mut problems = fields::Problems::default();
        let table = env::substitute(table, env, &mut problems);
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let manifest = sections::read(table, file, &dir, env, &mut problems);
        match manifest {
            Some(m) if problems.0.is_empty() => Ok(m),
            _ => Err(ManifestError::Invalid {
                file: file.to_owned(),
                problems: problems.0,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
