//! The file store: one JSON offset record in one file.
//!
//! A write never leaves a torn file behind: the record goes to a temporary
//! file in the same folder (so the rename cannot cross file systems), which
//! is fsynced, renamed over the offset file, and then the folder is fsynced
//! so the rename itself survives a crash. A reader therefore sees either the
//! old record or the new one. A temporary file left by a crash is ignored
//! and overwritten by the next write.
//!
//! A missing file means "no offset"; a file that is not a valid record is
//! an error naming the file, never silently "no offset" (that would let the
//! slot override a position the operator meant to keep). File-system calls
//! run on tokio's blocking threads.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;

use super::{OffsetStore, StoreError, check_forward};
use crate::position::offset::OffsetRecord;

/// An offset store in a file.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    /// The record on disk as last read or written; `None` until then.
    held: Option<Option<OffsetRecord>>,
}

impl FileStore {
    /// A store for `path` (not read until [`OffsetStore::load`] or
    /// [`OffsetStore::store`]).
    pub fn new(path: PathBuf) -> Self {
        FileStore { path, held: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file a write goes through.
    pub fn temp_path(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.path.with_file_name(format!(".{name}.tmp"))
    }

    async fn read(&self) -> Result<Option<OffsetRecord>, StoreError> {
        let path = self.path.clone();
        let bytes = blocking(move || match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
        .and_then(|read| read)
        .map_err(|source| self.io_error("read", source))?;
        bytes
            .map(|b| {
                OffsetRecord::decode(&b).map_err(|source| StoreError::CorruptFile {
                    path: self.path.clone(),
                    error: source,
                })
            })
            .transpose()
    }

    fn io_error(&self, action: &'static str, source: io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: self.path.clone(),
            error: source,
        }
    }
}

impl OffsetStore for FileStore {
    fn describe(&self) -> String {
        format!("offset file {}", self.path.display())
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Option<OffsetRecord>, StoreError>> {
        Box::pin(async move {
            let record = self.read().await?;
            self.held = Some(record.clone());
            Ok(record)
        })
    }

    fn store<'a>(&'a mut self, record: &'a OffsetRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let held = match self.held.take() {
                Some(held) => held,
                None => self.read().await?,
            };
            self.held = Some(held.clone());
            check_forward(self, held.as_ref(), record)?;
            let (path, temp, bytes) = (self.path.clone(), self.temp_path(), record.encode());
            blocking(move || write_atomically(&path, &temp, &bytes))
                .await
                .unwrap_or_else(|e| Err(("write", e)))
                .map_err(|(action, source)| self.io_error(action, source))?;
            self.held = Some(Some(record.clone()));
            Ok(())
        })
    }

    fn clear(&mut self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let path = self.path.clone();
            blocking(move || {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(("delete", e)),
                }
                sync_dir(&path).map_err(|e| ("sync the folder of", e))
            })
            .await
            .unwrap_or_else(|e| Err(("delete", e)))
            .map_err(|(action, source)| self.io_error(action, source))?;
            self.held = Some(None);
            Ok(())
        })
    }
}

/// Writes `bytes` to `temp`, syncs it, renames it to `path` and syncs the
/// folder. Errors say which step failed.
fn write_atomically(
    path: &Path,
    temp: &Path,
    bytes: &[u8],
) -> Result<(), (&'static str, io::Error)> {
    let mut file = File::create(temp).map_err(|e| ("create the temporary file for", e))?;
    file.write_all(bytes)
        .map_err(|e| ("write the temporary file for", e))?;
    file.sync_all()
        .map_err(|e| ("sync the temporary file for", e))?;
    drop(file);
    fs::rename(temp, path).map_err(|e| ("rename the temporary file onto", e))?;
    sync_dir(path).map_err(|e| ("sync the folder of", e))
}

/// Fsyncs the folder holding `path`, which makes a rename or delete in it
/// durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Runs blocking file-system work off the async threads. The work only
/// makes file-system calls; if it panicked or the runtime is shutting
/// down, that is reported as an I/O failure.
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> io::Result<R> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| io::Error::other(join.to_string()))
}

#[cfg(test)]
mod tests;
