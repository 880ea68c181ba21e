//! The memory store (the default): holds the offset for the life of the
//! process only. After a restart there is no offset, so the slot alone
//! decides where streaming resumes — the slot is authoritative by
//! construction, as with Debezium's `MemoryOffsetBackingStore`.

use futures_util::future::BoxFuture;

use super::{OffsetStore, StoreError, check_forward};
use crate::position::offset::OffsetRecord;

/// An offset store in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    held: Option<OffsetRecord>,
}

impl OffsetStore for MemoryStore {
    fn describe(&self) -> String {
        "the memory offset store".to_owned()
    }

    fn is_durable(&self) -> bool {
        false
    }

    fn load(&mut self) -> BoxFuture<'_, Result<Option<OffsetRecord>, StoreError>> {
        Box::pin(async move { Ok(self.held.clone()) })
    }

    fn store<'a>(&'a mut self, record: &'a OffsetRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            check_forward(self, self.held.as_ref(), record)?;
            self.held = Some(record.clone());
            Ok(())
        })
    }

    fn clear(&mut self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.held = None;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn at(lsn: u64) -> OffsetRecord {
        OffsetRecord::test_at(lsn)
    }

    #[tokio::test]
    async fn holds_the_newest_and_refuses_to_go_back() {
        let mut store = MemoryStore::default();
        assert_eq!(store.load().await.unwrap(), None);
        store.store(&at(0x20)).await.unwrap();
        store.store(&at(0x20)).await.unwrap();
        let err = store.store(&at(0x10)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to store offset 0/10 for slot \"orders\" in the memory offset store: it holds 0/20, and a stored offset never moves backwards"
        );
        assert_eq!(
            store.load().await.unwrap().unwrap().commit_end_lsn,
            Lsn(0x20)
        );
        store.clear().await.unwrap();
        assert_eq!(store.load().await.unwrap(), None);
        store.store(&at(0x10)).await.unwrap();
    }

    #[tokio::test]
    async fn a_higher_timeline_is_newer_whatever_its_lsn() {
        let on = |lsn: u64, timeline: u32| OffsetRecord {
            timeline,
            ..at(lsn)
        };
        let mut store = MemoryStore::default();
        store.store(&on(0x3600, 1)).await.unwrap();
        // After marked ghost changes: the new timeline from its switch point.
        store.store(&on(0x3500, 2)).await.unwrap();
        let err = store.store(&on(0x3700, 1)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to store offset 0/3700 for slot \"orders\" in the memory offset store: it holds 0/3500 on timeline 2 (the offered one is on timeline 1), and a stored offset never moves backwards"
        );
        let held = store.load().await.unwrap().unwrap();
        assert_eq!((held.timeline, held.commit_end_lsn), (2, Lsn(0x3500)));
    }
}
