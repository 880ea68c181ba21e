//! The NATS KV store: the offset record under the pipeline's name in a
//! JetStream key-value bucket, durable and shared by every host that may
//! run the pipeline (DESIGN.md §6).
//!
//! Writes are revision-checked: each write says which revision of the key
//! it replaces (`update(key, value, revision)`, revision 0 meaning "the key
//! must not exist"), so two hosts that both believe they run the pipeline
//! cannot silently overwrite each other's position: the second write fails
//! with [`StoreError::Conflict`]. The store remembers the revision it last
//! read or wrote; the first write without a prior read reads first.
//!
//! The bucket is created (history 5, file storage) when it does not exist.

use async_nats::jetstream::{self, kv};
use futures_util::future::BoxFuture;

use super::{OffsetStore, StoreError, check_forward};
use crate::position::offset::OffsetRecord;

/// How many past offsets the bucket keeps per key, for inspection with
/// `nats kv history`.
const HISTORY: i64 = 5;

/// An offset store in a JetStream key-value bucket.
pub struct NatsKvStore {
    kv: kv::Store,
    bucket: String,
    key: String,
    /// The key's revision and record as last read or written (revision 0:
    /// the key does not exist); `None` until then.
    held: Option<(u64, Option<OffsetRecord>)>,
}

impl std::fmt::Debug for NatsKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsKvStore")
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl NatsKvStore {
    /// Opens (or creates, with `replicas` copies) `bucket`; the offset lives
    /// under `key`, which must be a valid KV key (a pipeline name is).
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        key: &str,
        replicas: usize,
    ) -> Result<Self, StoreError> {
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(get) => create_bucket(js, bucket, replicas)
                .await
                .map_err(|create| StoreError::Bucket {
                    bucket: bucket.to_owned(),
                    reason: format!("it could not be read ({get}) nor created ({create})"),
                    source: create,
                })?,
        };
        Ok(NatsKvStore {
            kv,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            held: None,
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key the offset lives under.
    pub fn key(&self) -> &str {
        &self.key
    }

    async fn read(&self) -> Result<(u64, Option<OffsetRecord>), StoreError> {
        let entry = self
            .kv
            .entry(self.key.as_str())
            .await
            .map_err(|e| self.nats_error("read", e))?;
        let Some(entry) = entry else {
            return Ok((0, None));
        };
        if entry.operation != kv::Operation::Put {
            // Deleted or purged: no offset, but the next write must name
            // the marker's revision.
            return Ok((entry.revision, None));
        }
        let record =
            OffsetRecord::decode(&entry.value).map_err(|source| StoreError::CorruptEntry {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                revision: entry.revision,
                error: source,
            })?;
        Ok((entry.revision, Some(record)))
    }

    fn nats_error(
        &self,
        action: &'static str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        nats_error(&self.bucket, &self.key, action, e)
    }
}

/// A NATS error of the store, `action` on `bucket`'s `key`.
///
/// async-nats words JetStream's "no responders" as "no stream found", which
/// reads like a deleted bucket; it is usually a cluster electing the
/// bucket's leader, and the error says so.
fn nats_error(
    bucket: &str,
    key: &str,
    action: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    let error: async_nats::Error = if crate::causes::chain(&e).any(crate::publish::no_responder) {
        Box::new(NoResponder(Box::new(e)))
    } else {
        Box::new(e)
    };
    StoreError::Nats {
        action,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        error,
    }
}

/// A store request nobody answered (see [`nats_error`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "no JetStream server answered for the bucket's stream (its cluster may be electing a leader, or the bucket was deleted): {0}"
)]
struct NoResponder(#[source] async_nats::Error);

/// Creates the bucket: the stream `KV_<bucket>` laid out as every NATS
/// client lays out a key-value bucket (subjects `$KV.<bucket>.>`, one
/// message per revision, rollups allowed, direct gets).
///
/// Not `Context::create_key_value`: async-nats 0.51 first reads the
/// account's JetStream info and requires fields (`reserved_memory`,
/// `reserved_storage`) that nats-server 2.9 — Debian's — does not send.
async fn create_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, async_nats::Error> {
    js.create_stream(jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("sluice offsets, one key per pipeline".to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: HISTORY,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(bucket).await?)
}

impl OffsetStore for NatsKvStore {
    fn describe(&self) -> String {
        format!("NATS KV bucket \"{}\" key \"{}\"", self.bucket, self.key)
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Option<OffsetRecord>, StoreError>> {
        Box::pin(async move {
            let (revision, record) = self.read().await?;
            self.held = Some((revision, record.clone()));
            Ok(record)
        })
    }

    fn store<'a>(&'a mut self, record: &'a OffsetRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let (revision, held) = match self.held.take() {
                Some(held) => held,
                None => self.read().await?,
            };
            self.held = Some((revision, held.clone()));
            check_forward(self, held.as_ref(), record)?;
            let written = self
                .kv
                .update(self.key.as_str(), record.encode().into(), revision)
                .await;
            match written {
                Ok(new_revision) => {
                    self.held = Some((new_revision, Some(record.clone())));
                    Ok(())
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    Err(StoreError::Conflict {
                        bucket: self.bucket.clone(),
                        key: self.key.clone(),
                        expected: revision,
                        source: e,
                    })
                }
                Err(e) => {
                    // Whether the write landed is unknown: read again before
                    // the next one.
                    self.held = None;
                    Err(self.nats_error("write", e))
                }
            }
        })
    }

    fn clear(&mut self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // An explicit operator action: delete whatever is there. A host
            // still running the pipeline notices at its next write, whose
            // revision no longer matches.
            self.kv
                .delete(self.key.as_str())
                .await
                .map_err(|e| self.nats_error("delete", e))?;
            self.held = None;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::context::{
        CreateStreamError, CreateStreamErrorKind, PublishError, PublishErrorKind,
    };
    use async_nats::jetstream::kv::{EntryError, EntryErrorKind, UpdateError, UpdateErrorKind};
    use async_nats::jetstream::stream::{DirectGetError, DirectGetErrorKind};

    use super::*;

    fn nats(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Nats {
            action: "read",
            bucket: "b".into(),
            key: "k".into(),
            error: Box::new(error),
        }
    }

    #[test]
    fn timeouts_and_a_leaderless_cluster_are_transient() {
        assert!(nats(EntryError::new(EntryErrorKind::TimedOut)).is_transient());
        assert!(nats(UpdateError::new(UpdateErrorKind::TimedOut)).is_transient());
        let bucket = StoreError::Bucket {
            bucket: "b".into(),
            reason: "x".into(),
            source: Box::new(CreateStreamError::new(CreateStreamErrorKind::TimedOut)),
        };
        assert!(bucket.is_transient());
        // Found behind a wrapper too.
        let wrapped = UpdateError::with_source(
            UpdateErrorKind::Other,
            EntryError::new(EntryErrorKind::TimedOut),
        );
        assert!(nats(wrapped).is_transient());
    }

    #[test]
    fn no_responder_yet_is_transient() {
        // A write to a bucket whose stream has no leader in reach: the
        // client maps JetStream's "no responders" to `StreamNotFound`.
        let write = UpdateError::with_source(
            UpdateErrorKind::Other,
            PublishError::new(PublishErrorKind::StreamNotFound),
        );
        assert!(nats(write).is_transient());
        let read = EntryError::with_source(
            EntryErrorKind::Other,
            DirectGetError::new(DirectGetErrorKind::ErrorResponse(
                async_nats::StatusCode::NO_RESPONDERS,
                "no responders".into(),
            )),
        );
        assert!(nats(read).is_transient());
        // Said as what it usually is, with the client's words after it.
        let write = nats_error(
            "b",
            "k",
            "write",
            UpdateError::with_source(
                UpdateErrorKind::Other,
                PublishError::new(PublishErrorKind::StreamNotFound),
            ),
        );
        let line = crate::causes::line(&write);
        assert!(line.contains("no JetStream server answered for the bucket's stream (its cluster may be electing a leader"), "{line}");
        assert!(
            line.ends_with("no stream found for given subject"),
            "{line}"
        );
        assert!(write.is_transient());
        let refused = UpdateError::with_source(
            UpdateErrorKind::Other,
            PublishError::new(PublishErrorKind::MaxPayloadExceeded),
        );
        assert!(!nats(refused).is_transient());
    }

    #[test]
    fn refusals_stay() {
        assert!(!nats(UpdateError::new(UpdateErrorKind::WrongLastRevision)).is_transient());
        assert!(!nats(EntryError::new(EntryErrorKind::InvalidKey)).is_transient());
        let no_jetstream = StoreError::Bucket {
            bucket: "b".into(),
            reason: "x".into(),
            source: Box::new(CreateStreamError::new(
                CreateStreamErrorKind::JetStreamUnavailable,
            )),
        };
        assert!(!no_jetstream.is_transient());
        assert!(!nats(std::io::Error::other("disk")).is_transient());
    }
}
