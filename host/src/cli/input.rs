//! Reading batches for `sluice plugin run`: the JSON form of
//! [`Batch`](sluice_host::model::Batch), either as one JSON array of batches
//! or as a sequence of batches (JSON lines, or objects one after another).

use std::io::Read;
use std::path::{Path, PathBuf};

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
    #[error("{}: not a list of batches", name(path))]
    Array {
        path: Option<PathBuf>,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: batch {index} is not a valid batch", name(path))]
    Batch {
        path: Option<PathBuf>,
        index: usize,
        #[source]
        source: serde_json::Error,
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
    parse(&text).map_err(|e| match e {
        Parse::Array(e) => InputError::Array {
            path: source.clone(),
            source: e,
        },
        Parse::Batch(index, e) => InputError::Batch {
            path: source,
            index,
            source: e,
        },
    })
}

enum Parse {
    Array(serde_json::Error),
    Batch(usize, serde_json::Error),
}

fn parse(text: &str) -> Result<Vec<Batch>, Parse> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text).map_err(Parse::Array);
    }
    serde_json::Deserializer::from_str(text)
        .into_iter::<Batch>()
        .enumerate()
        .map(|(i, b)| b.map_err(|e| Parse::Batch(i, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"xid":1,"commit-lsn":"0/10","commit-time":0,"events":[]}"#;

    #[test]
    fn reads_arrays_and_json_lines() {
        assert_eq!(
            parse(&format!("[{ONE},{ONE}]")).ok().map(|b| b.len()),
            Some(2)
        );
        assert_eq!(
            parse(&format!("{ONE}\n{ONE}\n{ONE}\n"))
                .ok()
                .map(|b| b.len()),
            Some(3)
        );
        assert_eq!(parse("\n").ok().map(|b| b.len()), Some(0));
    }

    #[test]
    fn says_which_batch_is_wrong() {
        let Err(Parse::Batch(1, e)) = parse(&format!("{ONE}\n{{\"xid\":2}}\n")) else {
            panic!()
        };
        assert!(e.to_string().contains("missing field"), "{e}");
    }
}
