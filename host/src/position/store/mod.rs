//! Offset stores: where the offset record lives between runs (DESIGN.md §3).
//!
//! One trait, [`OffsetStore`], three backends: [`MemoryStore`] (the
//! default; nothing survives a restart, so the slot is authoritative by
//! construction), [`FileStore`] (atomic write-rename-fsync) and
//! [`NatsKvStore`] (a JetStream key-value bucket, durable and shared by
//! hosts, with revision-checked writes). [`open`] builds the one the
//! manifest names.
//!
//! Invariant of every store: it never accepts a position older than the one
//! it holds; [`OffsetStore::store`] refuses with [`StoreError::Backwards`].
//! Positions are ordered by timeline, then LSN: after a promotion whose
//! ghost changes were marked (DESIGN.md §3, "Failover"), the new timeline's
//! positions are newer than the old timeline's above the switch point,
//! whose LSNs they reuse. Equal positions are accepted (re-storing is
//! idempotent). Only
//! [`OffsetStore::clear`], an explicit operator action, moves a store back
//! to "no offset".
//!
//! The trait returns boxed futures so that the pipeline can hold a
//! `Box<dyn OffsetStore>` chosen at run time; a store is written about once
//! a second, so the allocation is irrelevant.

mod file;
mod memory;
mod nats_kv;

use std::path::PathBuf;

use futures_util::future::BoxFuture;

pub use file::FileStore;
pub use memory::MemoryStore;
pub use nats_kv::NatsKvStore;

use super::offset::{OffsetError, OffsetRecord};
use crate::config::{OffsetStoreSpec, PipelineName};
use crate::lsn::Lsn;
use crate::replication::SlotName;

/// A place that holds at most one offset record.
pub trait OffsetStore: Send + Sync + std::fmt::Debug {
    /// Where the offset lives, for messages: `offset file /var/lib/x.json`,
    /// `NATS KV bucket "b" key "k"`, `memory`.
    fn describe(&self) -> String;

    /// Whether a stored offset survives the process.
    fn is_durable(&self) -> bool;

    /// The stored record, `None` when there is none.
    fn load(&mut self) -> BoxFuture<'_, Result<Option<OffsetRecord>, StoreError>>;

    /// Stores `record`, unless it is older than the record held.
    fn store<'a>(&'a mut self, record: &'a OffsetRecord) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Removes the stored record.
    fn clear(&mut self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Why an offset could not be loaded, stored or cleared.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "refusing to store offset {offered} for slot \"{slot}\" in {store}: it holds {held}{}, and a stored offset never moves backwards",
        timeline_note(*.held_timeline, *.offered_timeline)
    )]
    Backwards {
        store: String,
        slot: SlotName,
        held: Lsn,
        held_timeline: u32,
        offered: Lsn,
        offered_timeline: u32,
    },
    #[error("cannot {action} offset file {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "offset file {} is corrupt: {error}; repair it, or delete it (`sluice offset clear <manifest>`) to let the slot decide where streaming resumes",
        path.display()
    )]
    CorruptFile { path: PathBuf, error: OffsetError },
    #[error(
        "NATS KV bucket \"{bucket}\" key \"{key}\" (revision {revision}) holds no valid offset: {error}; delete it (`sluice offset clear <manifest>`) to let the slot decide where streaming resumes"
    )]
    CorruptEntry {
        bucket: String,
        key: String,
        revision: u64,
        error: OffsetError,
    },
    #[error(
        "the offset in NATS KV bucket \"{bucket}\" key \"{key}\" was changed by another writer since this host read it at revision {expected}: another sluice host is running pipeline \"{key}\"; stop one of them (a slot has one reader)"
    )]
    Conflict {
        bucket: String,
        key: String,
        expected: u64,
        #[source]
        source: async_nats::jetstream::kv::UpdateError,
    },
    #[error("cannot open NATS KV bucket \"{bucket}\": {reason}")]
    Bucket {
        bucket: String,
        reason: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot {action} NATS KV bucket \"{bucket}\" key \"{key}\": {error}")]
    Nats {
        action: &'static str,
        bucket: String,
        key: String,
        error: async_nats::Error,
    },
    #[error(
        "position.store = \"nats-kv\" needs a NATS connection, and none was given to the offset store"
    )]
    NoNatsConnection,
}

impl StoreError {
    /// Whether trying again later may succeed: JetStream, behind a NATS KV
    /// store, did not answer in time or its cluster had no leader. A file
    /// that cannot be written, a corrupt record, another writer and a
    /// backwards offset stay as they are.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Bucket { source, .. } => crate::publish::jetstream_busy(&**source),
            StoreError::Nats { error, .. } => crate::publish::jetstream_busy(&**error),
            StoreError::Backwards { .. }
            | StoreError::Io { .. }
            | StoreError::CorruptFile { .. }
            | StoreError::CorruptEntry { .. }
            | StoreError::Conflict { .. }
            | StoreError::NoNatsConnection => false,
        }
    }
}

/// Says which timelines two positions are on, when they differ.
fn timeline_note(held: u32, offered: u32) -> String {
    if held == offered {
        String::new()
    } else {
        format!(" on timeline {held} (the offered one is on timeline {offered})")
    }
}

/// Refuses `offered` when `held` is newer.
fn check_forward(
    store: &dyn OffsetStore,
    held: Option<&OffsetRecord>,
    offered: &OffsetRecord,
) -> Result<(), StoreError> {
    let position = |r: &OffsetRecord| (r.timeline, r.commit_end_lsn);
    match held {
        Some(h) if position(offered) < position(h) => Err(StoreError::Backwards {
            store: store.describe(),
            slot: offered.slot.clone(),
            held: h.commit_end_lsn,
            held_timeline: h.timeline,
            offered: offered.commit_end_lsn,
            offered_timeline: offered.timeline,
        }),
        _ => Ok(()),
    }
}

/// Opens the store `spec` names. `pipeline` keys the offset in a shared
/// bucket; `nats` is the host's JetStream context, needed by `nats-kv`
/// only (whose bucket is created, with `replicas` copies, when missing).
pub async fn open(
    spec: &OffsetStoreSpec,
    pipeline: &PipelineName,
    nats: Option<&async_nats::jetstream::Context>,
    replicas: usize,
) -> Result<Box<dyn OffsetStore>, StoreError> {
    Ok(match spec {
        OffsetStoreSpec::Memory => Box::new(MemoryStore::default()),
        OffsetStoreSpec::File { path } => Box::new(FileStore::new(path.clone())),
        OffsetStoreSpec::NatsKv { bucket } => {
            let js = nats.ok_or(StoreError::NoNatsConnection)?;
            Box::new(NatsKvStore::open(js, bucket, pipeline.as_str(), replicas).await?)
        }
    })
}

/// The offset store `m` names (`position.store`), a NATS KV bucket with as
/// many replicas as the stream.
pub async fn for_manifest(
    m: &crate::config::Manifest,
    nats: Option<&async_nats::jetstream::Context>,
) -> Result<Box<dyn OffsetStore>, StoreError> {
    open(&m.position.store, &m.pipeline, nats, m.nats.stream.replicas).await
}
