//! Reading batches for `sluice plugin run`: the file or standard input,
//! parsed and checked by [`sluice_host::batch_json`], whose errors say
//! where in the input (batch, event, column) the mistake is.

use std::io::Read;
use std::path::{Path, PathBuf};

use sluice_host::batch_json;
use sluice_host::model::Batch;

/// Why the input could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    #[error("cannot read {}", name(path))]
    Read {
        path: Option<PathBuf>,
        #[source]
        source: std::io::Error,
    },
    #[error("input {}", name(path))]
    Invalid {
        path: Option<PathBuf>,
        #[source]
        source: batch_json::InputError,
    },
}

fn name(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or_else(|| "standard input".to_owned(), |p| p.display().to_string())
}

/// Reads every batch from `path`, or from stdin for `-`.
pub(crate) fn read_batches(path: &Path) -> Result<Vec<Batch>, InputError> {
    let source = (path != Path::new("-")).then(|| path.to_owned());
    let mut text = String::new();
    let read = match &source {
        Some(p) => std::fs::read_to_string(p).map(|t| text = t),
        None => std::io::stdin().read_to_string(&mut text).map(drop),
    };
    read.map_err(|e| InputError::Read {
        path: source.clone(),
        source: e,
    })?;
    batch_json::read(&text).map_err(|e| InputError::Invalid {
        path: source,
        source: e,
    })
}
