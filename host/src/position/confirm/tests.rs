use futures_util::future::BoxFuture;
use proptest::prelude::*;

use super::*;
use crate::position::store::{FileStore, MemoryStore};

fn server() -> SystemIdentity {
    SystemIdentity {
        system_id: 7,
        timeline: 1,
        xlogpos: Lsn(0),
        dbname: None,
    }
}

fn confirmer(
    store: Box<dyn OffsetStore>,
    mode: FlushMode,
    start: Lsn,
) -> (Confirmer, watch::Receiver<Lsn>) {
    Confirmer::new(ConfirmerSettings {
        store,
        mode,
        slot: SlotName::new("s").unwrap(),
        server: server(),
        start,
        progress: None,
        backfills: Vec::new(),
    })
}

fn tx(end: u64) -> Option<Transaction> {
    Some(Transaction {
        xid: end as u32,
        commit_lsn: Lsn(end - 1),
        end_lsn: Lsn(end),
        commit_time: 0,
    })
}

/// A durable store whose writes fail while `failing` is set, and which
/// remembers what it holds.
#[derive(Debug, Default)]
struct Flaky {
    failing: bool,
    held: Option<OffsetRecord>,
    writes: usize,
}

impl Flaky {
    /// A store whose every write fails.
    fn failing() -> Box<Flaky> {
        Box::new(Flaky {
            failing: true,
            ..Flaky::default()
        })
    }
}

impl OffsetStore for Flaky {
    fn describe(&self) -> String {
        "flaky".into()
    }
    fn is_durable(&self) -> bool {
        true
    }
    fn load(&mut self) -> BoxFuture<'_, Result<Option<OffsetRecord>, StoreError>> {
        Box::pin(async { Ok(self.held.clone()) })
    }
    fn store<'a>(&'a mut self, record: &'a OffsetRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if self.failing {
                return Err(StoreError::Io {
                    action: "write",
                    path: "flaky".into(),
                    error: std::io::Error::other("disk full"),
                });
            }
            self.writes += 1;
            self.held = Some(record.clone());
            Ok(())
        })
    }
    fn clear(&mut self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn releases_a_contiguous_prefix_only() {
    let (mut c, flushed) = confirmer(
        Box::new(MemoryStore::default()),
        FlushMode::Connector,
        Lsn(10),
    );
    let tickets: Vec<Ticket> = [20, 30, 40]
        .into_iter()
        .map(|end| {
            c.begin();
            c.register(tx(end), None)
        })
        .collect();
    let mut tickets = tickets.into_iter();
    let (t20, t30, t40) = (
        tickets.next().unwrap(),
        tickets.next().unwrap(),
        tickets.next().unwrap(),
    );
    c.acknowledged(t30);
    assert_eq!(c.released(), Lsn(10), "30 waits for 20");
    assert_eq!(*flushed.borrow(), Lsn::ZERO);
    c.acknowledged(t20);
    assert_eq!(c.released(), Lsn(30));
    assert_eq!(*flushed.borrow(), Lsn(30), "memory: confirmed at once");
    c.acknowledged(t40);
    assert_eq!(c.confirmed(), Lsn(40));
    assert!(c.is_idle());
    assert_eq!(c.record().await.unwrap(), None, "memory: nothing to write");
}

#[tokio::test]
async fn a_durable_store_is_written_before_the_slot_is_told_and_only_when_recording() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offset.json");
    let (mut c, flushed) = confirmer(
        Box::new(FileStore::new(path.clone())),
        FlushMode::Connector,
        Lsn(10),
    );
    for end in [20, 30, 40] {
        c.begin();
        let t = c.register(tx(end), None);
        c.acknowledged(t);
    }
    assert_eq!(c.released(), Lsn(40));
    assert_eq!(*flushed.borrow(), Lsn::ZERO, "not recorded yet");
    assert!(!path.exists(), "three transactions, no write yet");
    assert_eq!(c.record().await.unwrap(), Some(Lsn(40)));
    assert_eq!(*flushed.borrow(), Lsn(40));
    let stored = FileStore::new(path).load().await.unwrap().unwrap();
    assert_eq!(stored.commit_end_lsn, Lsn(40));
    assert_eq!(stored.xid, Some(40), "the newest transaction's details");
    assert_eq!(c.record().await.unwrap(), None, "nothing new: no write");
}

#[tokio::test]
async fn a_failed_write_confirms_nothing() {
    let (mut c, flushed) = confirmer(Flaky::failing(), FlushMode::Connector, Lsn(10));
    let t = c.register(tx(20), None);
    c.acknowledged(t);
    assert!(c.record().await.is_err());
    assert_eq!(*flushed.borrow(), Lsn::ZERO);
    assert_eq!(c.confirmed(), Lsn(10));
}

#[tokio::test]
async fn manual_mode_records_but_never_tells_the_slot() {
    let (mut c, flushed) = confirmer(Box::new(Flaky::default()), FlushMode::Manual, Lsn(10));
    let t = c.register(tx(20), None);
    c.acknowledged(t);
    assert_eq!(c.record().await.unwrap(), Some(Lsn(20)));
    assert_eq!(*flushed.borrow(), Lsn::ZERO);
}

#[tokio::test]
async fn keepalives_release_the_wal_end_only_when_nothing_is_in_flight() {
    let (mut c, flushed) = confirmer(
        Box::new(MemoryStore::default()),
        FlushMode::ConnectorAndDriver,
        Lsn(10),
    );
    c.begin();
    c.keepalive(Lsn(100));
    assert_eq!(c.released(), Lsn(10), "a transaction is being received");
    let t = c.register(tx(50), None);
    c.keepalive(Lsn(100));
    assert_eq!(c.released(), Lsn(10), "a transaction awaits its ack");
    c.acknowledged(t);
    c.keepalive(Lsn(100));
    assert_eq!(*flushed.borrow(), Lsn(100));
    c.keepalive(Lsn(90));
    assert_eq!(c.released(), Lsn(100), "never backwards");

    let (mut connector, _) = confirmer(
        Box::new(MemoryStore::default()),
        FlushMode::Connector,
        Lsn(10),
    );
    connector.keepalive(Lsn(100));
    assert_eq!(connector.released(), Lsn(10), "only connector-and-driver");
}

#[tokio::test]
async fn progress_is_recorded_with_the_prefix_it_belongs_to() {
    let (mut c, _) = confirmer(Box::new(Flaky::default()), FlushMode::Connector, Lsn(10));
    let first = c.register(tx(20), None);
    let marker = c.register(
        None,
        Some(Update::Backfills(vec![BackfillProgress::new(
            Lsn(15),
            "public.t",
            None,
        )])),
    );
    c.acknowledged(marker);
    assert!(c.backfills().is_empty(), "the marker waits for 20");
    c.acknowledged(first);
    assert_eq!(c.backfills().len(), 1);
    c.record().await.unwrap();
    // A marker alone (position unchanged) is recorded too.
    let marker = c.register(None, Some(Update::Backfills(Vec::new())));
    c.acknowledged(marker);
    assert_eq!(c.record().await.unwrap(), None, "position unchanged");
    assert!(c.backfills().is_empty());
}

proptest! {
    /// Whatever the order of acknowledgements, the released position is the
    /// newest end of the acknowledged prefix, and only moves forward.
    #[test]
    fn released_is_the_acknowledged_prefix(order in Just((0..40usize).collect::<Vec<_>>()).prop_shuffle()) {
        let (mut c, _) = confirmer(Box::new(MemoryStore::default()), FlushMode::Connector, Lsn(0));
        let ends: Vec<u64> = (1..=40u64).map(|i| i * 100).collect();
        let mut tickets: Vec<Option<Ticket>> = ends
            .iter()
            .map(|&e| {
                c.begin();
                Some(c.register(tx(e), None))
            })
            .collect();
        let mut acked = vec![false; ends.len()];
        let mut last = Lsn(0);
        for i in order {
            c.acknowledged(tickets[i].take().unwrap());
            acked[i] = true;
            let prefix = acked.iter().take_while(|a| **a).count();
            let expected = if prefix == 0 { Lsn(0) } else { Lsn(ends[prefix - 1]) };
            prop_assert_eq!(c.released(), expected);
            prop_assert!(c.released() >= last);
            last = c.released();
        }
        prop_assert!(c.is_idle());
    }
}

/// What the file store at `path` holds: (timeline, offset).
async fn held(path: &std::path::Path) -> (u32, Lsn) {
    let record = FileStore::new(path.to_owned())
        .load()
        .await
        .unwrap()
        .unwrap();
    (record.timeline, record.commit_end_lsn)
}

#[tokio::test]
async fn a_timeline_switch_continues_from_the_switch_point_on_the_new_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offset.json");
    let store = Box::new(FileStore::new(path.clone()));
    let (mut c, flushed) = confirmer(store, FlushMode::Connector, Lsn(0x100));
    let switched = c.switched();
    // Ghosts up to 0/300 on timeline 1: stored, recorded, confirmed.
    let g1 = c.register(tx(0x200), None);
    let g2 = c.register(tx(0x300), None);
    c.acknowledged(g1);
    c.acknowledged(g2);
    c.record().await.unwrap();
    assert_eq!(*flushed.borrow(), Lsn(0x300));
    // The promotion at 0/180: the flush LSN drops to the switch point at
    // once, so the promoted server is never told a ghost's end.
    let marker = c.register_switch(2, Lsn(0x180));
    assert!(c.is_switching());
    assert_eq!(*flushed.borrow(), Lsn(0x180));
    // The new timeline's first transaction ends below the ghosts' end.
    let t = c.register(tx(0x250), None);
    assert_eq!(*switched.borrow(), 1, "not before the marker is stored");
    c.acknowledged(marker);
    assert_eq!(*switched.borrow(), 2);
    assert!(!c.is_switching());
    c.record().await.unwrap();
    assert_eq!(held(&path).await, (2, Lsn(0x180)));
    assert_eq!(*flushed.borrow(), Lsn(0x180));
    c.acknowledged(t);
    c.record().await.unwrap();
    assert_eq!(held(&path).await, (2, Lsn(0x250)));
    assert_eq!(*flushed.borrow(), Lsn(0x250));
}

/// A file-store confirmer at 0/100 whose ghost transaction (ending at
/// 0/300) is stored, with the switch to timeline 2 at 0/180 registered
/// behind it and not yet back: the store's directory and path, the
/// confirmer, its flush watch and the switch's ticket.
fn ghost_stored_before_a_switch() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Confirmer,
    watch::Receiver<Lsn>,
    Ticket,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offset.json");
    let store = Box::new(FileStore::new(path.clone()));
    let (mut c, flushed) = confirmer(store, FlushMode::Connector, Lsn(0x100));
    let ghost = c.register(tx(0x300), None);
    let marker = c.register_switch(2, Lsn(0x180));
    c.acknowledged(ghost);
    (dir, path, c, flushed, marker)
}

#[tokio::test]
async fn ghosts_stored_after_the_switch_was_registered_are_never_confirmed_past_it() {
    let (_dir, path, mut c, flushed, marker) = ghost_stored_before_a_switch();
    c.record().await.unwrap();
    // Recorded on the old timeline, reported only up to the switch point.
    assert_eq!(held(&path).await, (1, Lsn(0x300)));
    assert_eq!(*flushed.borrow(), Lsn(0x180));
    c.acknowledged(marker);
    c.record().await.unwrap();
    assert_eq!(held(&path).await, (2, Lsn(0x180)));
    assert_eq!(*flushed.borrow(), Lsn(0x180));
}

#[test]
fn with_a_memory_store_the_switch_point_is_confirmed_at_once() {
    let (mut c, flushed) = confirmer(
        Box::new(MemoryStore::default()),
        FlushMode::Connector,
        Lsn(0x100),
    );
    let ghost = c.register(tx(0x300), None);
    c.acknowledged(ghost);
    assert_eq!(*flushed.borrow(), Lsn(0x300));
    let marker = c.register_switch(2, Lsn(0x180));
    assert_eq!(*flushed.borrow(), Lsn(0x180));
    let t = c.register(tx(0x200), None);
    c.acknowledged(marker);
    assert_eq!(c.confirmed(), Lsn(0x180));
    c.acknowledged(t);
    assert_eq!(*flushed.borrow(), Lsn(0x200));
    assert_eq!(c.confirmed(), Lsn(0x200));
}

#[tokio::test]
async fn acknowledgements_go_on_while_a_record_is_written() {
    let (mut c, flushed) = confirmer(Box::new(Flaky::default()), FlushMode::Connector, Lsn(10));
    let t = c.register(tx(20), None);
    c.acknowledged(t);
    let write = c.start_record().expect("something to record");
    assert!(c.start_record().is_none(), "one write out at a time");
    // Released while the write is out: the next record confirms it.
    let t = c.register(tx(30), None);
    c.acknowledged(t);
    assert_eq!(c.released(), Lsn(30));
    assert_eq!(
        *flushed.borrow(),
        Lsn::ZERO,
        "nothing before the write returns"
    );
    assert_eq!(c.finish_record(write.write().await).unwrap(), Some(Lsn(20)));
    assert_eq!(*flushed.borrow(), Lsn(20), "what the write held, not more");
    assert_eq!(c.record().await.unwrap(), Some(Lsn(30)));
    assert_eq!(*flushed.borrow(), Lsn(30));
}

#[tokio::test]
async fn progress_a_failed_write_held_is_written_again() {
    let (mut c, _) = confirmer(Flaky::failing(), FlushMode::Connector, Lsn(10));
    let t = c.register(None, Some(Update::Backfills(Vec::new())));
    c.acknowledged(t);
    let write = c.start_record().expect("the backfills' state to record");
    assert!(c.finish_record(write.write().await).is_err());
    assert!(
        c.start_record().is_some(),
        "the store is back and the state still unrecorded"
    );
}

#[tokio::test]
async fn a_write_made_before_a_switch_moves_nothing() {
    let (_dir, path, mut c, flushed, marker) = ghost_stored_before_a_switch();
    let write = c.start_record().expect("the ghost's end to record");
    // The switch is released while the old timeline's record is written.
    c.acknowledged(marker);
    assert_eq!(c.finish_record(write.write().await).unwrap(), None);
    assert_eq!(
        c.confirmed(),
        Lsn(0x100),
        "the ghost's end is never confirmed"
    );
    assert_eq!(*flushed.borrow(), Lsn::ZERO);
    // The switch point on the new timeline is the next record.
    assert_eq!(c.record().await.unwrap(), Some(Lsn(0x180)));
    assert_eq!(held(&path).await, (2, Lsn(0x180)));
    assert_eq!(*flushed.borrow(), Lsn(0x180));
}
