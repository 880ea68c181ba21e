//! Start-up position tests against a real PostgreSQL 15 (and a real
//! nats-server for the KV store): every cell of DESIGN §3's mismatch table,
//! driven by moving a real slot with `pg_replication_slot_advance` and the
//! offset through the file store; the refusals that apply under every
//! strategy; and two hosts writing one NATS KV offset.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::nats::NatsServer;
use crate::support::postgres::{ClusterOptions, PgCluster};
use crate::support::{unique, wait_until_blocking};
use sluice_host::config::{FlushMode, MismatchStrategy};
use sluice_host::lsn::Lsn;
use sluice_host::position::OffsetRecord;
use sluice_host::position::startup::{self, Refusal, Startup, StartupError, StartupSettings};
use sluice_host::position::store::{FileStore, NatsKvStore, OffsetStore, StoreError};
use sluice_host::replication::{ConnInfo, ReplicationConnection, SlotName, setup};

const WAIT: Duration = Duration::from_secs(20);

/// The error and its causes.
fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn lsn(text: &str) -> Lsn {
    text.parse()
        .unwrap_or_else(|e| panic!("`{text}` from the server: {e}"))
}

/// One test's database, slot, manifest path and offset file.
struct Fixture<'a> {
    pg: &'a PgCluster,
    db: String,
    slot: SlotName,
    dir: tempfile::TempDir,
    system_id: u64,
}

impl Fixture<'static> {
    /// A database with a table to write to; the slot is not created.
    fn new(prefix: &str) -> Self {
        Fixture::on(PgCluster::shared(), prefix)
    }
}

impl<'a> Fixture<'a> {
    fn on(pg: &'a PgCluster, prefix: &str) -> Self {
        let db = pg.create_database(prefix);
        pg.psql(&db, "CREATE TABLE t (id serial PRIMARY KEY, v text)");
        let system_id = pg
            .psql(
                "postgres",
                "SELECT system_identifier FROM pg_control_system()",
            )
            .parse()
            .unwrap();
        Fixture {
            pg,
            slot: SlotName::new(unique(prefix)).unwrap(),
            db,
            dir: tempfile::tempdir().unwrap(),
            system_id,
        }
    }

    fn manifest(&self) -> PathBuf {
        self.dir.path().join("sluice.toml")
    }

    fn offset_path(&self) -> PathBuf {
        self.dir.path().join("offset.json")
    }

    fn store(&self) -> FileStore {
        FileStore::new(self.offset_path())
    }

    fn info(&self) -> ConnInfo {
        ConnInfo::parse_with_env(&self.pg.superuser_url(&self.db), |_| None).unwrap()
    }

    /// Creates the slot and returns its confirmed_flush_lsn.
    fn create_slot(&self) -> Lsn {
        lsn(&self.pg.psql(
            &self.db,
            &format!(
                "SELECT lsn FROM pg_create_logical_replication_slot('{}', 'pgoutput')",
                self.slot
            ),
        ))
    }

    /// Commits a few rows and returns a WAL position after them that the
    /// server has flushed (the slot can be advanced to it). The position is
    /// the insert position: the shared cluster commits asynchronously, so
    /// `pg_current_wal_lsn()` (the write position) can still be where the
    /// previous call left it, and two calls would return the same LSN.
    fn generate_wal(&self) -> Lsn {
        self.pg.psql(
            &self.db,
            "INSERT INTO t (v) SELECT repeat('x', 100) FROM generate_series(1, 50)",
        );
        let end = self.pg.psql(&self.db, "SELECT pg_current_wal_insert_lsn()");
        self.pg.wait_for(
            &self.db,
            &format!("SELECT pg_current_wal_flush_lsn() >= '{end}'"),
            "t",
            WAIT,
        );
        lsn(&end)
    }

    fn advance_slot(&self, to: Lsn) {
        let reached = self.pg.psql(
            &self.db,
            &format!(
                "SELECT end_lsn FROM pg_replication_slot_advance('{}', '{to}')",
                self.slot
            ),
        );
        assert_eq!(lsn(&reached), to);
    }

    /// (confirmed_flush_lsn, restart_lsn) of the slot.
    fn slot_position(&self) -> (Lsn, Lsn) {
        let row = self.pg.psql(
            &self.db,
            &format!(
                "SELECT confirmed_flush_lsn, restart_lsn FROM pg_replication_slots WHERE slot_name = '{}'",
                self.slot
            ),
        );
        let (s, r) = row.split_once('|').expect("the slot exists");
        (lsn(s), lsn(r))
    }

    fn slot_exists(&self) -> bool {
        self.pg.psql(
            &self.db,
            &format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
                self.slot
            ),
        ) == "1"
    }

    /// Stores offset `o` for this server in the file store.
    async fn store_offset(&self, o: Lsn) -> OffsetRecord {
        let record = OffsetRecord::new(self.slot.clone(), o, self.system_id, 1).with_transaction(
            1234,
            o,
            1_700_000_000_000_000,
        );
        self.store().store(&record).await.unwrap();
        record
    }

    /// The offset now in the file, as a restarted host would read it.
    async fn stored_offset(&self) -> Option<Lsn> {
        self.store().load().await.unwrap().map(|r| r.commit_end_lsn)
    }

    fn settings(&self, strategy: MismatchStrategy, flush: FlushMode) -> StartupSettings {
        StartupSettings {
            manifest: self.manifest(),
            slot: self.slot.clone(),
            strategy,
            flush,
            create_slot: true,
            resnapshot: false,
            export_snapshot: false,
            failover: None,
            mark_ghosts: false,
        }
    }

    /// Runs start-up as the host does, with the file store.
    async fn start(&self, settings: &StartupSettings) -> Result<Startup, StartupError> {
        let mut repl = ReplicationConnection::connect(&self.info()).await.unwrap();
        let sql = setup::connect_sql(&self.info()).await.unwrap();
        let mut store = self.store();
        let result = startup::apply(settings, &mut repl, &sql, &mut store).await;
        repl.close().await;
        result
    }

    async fn start_with(&self, strategy: MismatchStrategy) -> Result<Startup, StartupError> {
        self.start(&self.settings(strategy, FlushMode::Connector))
            .await
    }
}

/// The three orderings of O and S, set up on a real slot: returns the
/// fixture, O and S.
async fn ordering(prefix: &str, order: std::cmp::Ordering) -> (Fixture<'static>, Lsn, Lsn) {
    let f = Fixture::new(prefix);
    f.create_slot();
    let l1 = f.generate_wal();
    let l2 = f.generate_wal();
    let (o, s) = match order {
        std::cmp::Ordering::Less => {
            // Slot ahead. O is at the slot's restart_lsn, so the WAL it
            // needs is still there and the table decides, not the
            // availability check.
            f.advance_slot(l2);
            let (s, r) = f.slot_position();
            assert!(
                r < s,
                "restart_lsn {r} must be below confirmed_flush_lsn {s}"
            );
            (r, s)
        }
        std::cmp::Ordering::Equal => {
            f.advance_slot(l1);
            (l1, l1)
        }
        std::cmp::Ordering::Greater => {
            f.advance_slot(l1);
            (l2, l1)
        }
    };
    f.store_offset(o).await;
    assert_eq!(f.slot_position().0, s);
    (f, o, s)
}

use MismatchStrategy::{NoValidation, TrustGreaterLsn, TrustOffset, TrustSlot};
use std::cmp::Ordering::{Equal, Greater, Less};

/// Asserts a started cell: start position, slot position, stored offset.
async fn assert_started(f: &Fixture<'_>, started: Startup, start: Lsn, slot: Lsn, offset: Lsn) {
    assert_eq!(started.start, start, "start position");
    assert_eq!(f.slot_position().0, slot, "slot's confirmed_flush_lsn");
    assert_eq!(f.stored_offset().await, Some(offset), "stored offset");
    assert_eq!(
        started.offset.map(|r| r.commit_end_lsn),
        Some(offset),
        "offset reported to the pipeline"
    );
    assert!(started.created_slot.is_none());
}

// --- slot ahead (O < S) ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_ahead_no_validation_resumes_at_the_slot() {
    let (f, o, s) = ordering("ahead_nv", Less).await;
    let started = f.start_with(NoValidation).await.unwrap();
    assert_started(&f, started, s, s, o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_ahead_trust_offset_refuses() {
    let (f, o, s) = ordering("ahead_to", Less).await;
    let err = f.start_with(TrustOffset).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "refusing to start: replication slot \"{}\" is at {s}, ahead of the stored offset {o} (position.mismatch = \"trust-offset\"): the transactions committed between {o} and {s} were confirmed to the server but are not in the offset, so they may never reach the stream. Re-snapshot, or accept the slot's position: run `sluice offset clear {}` (or set position.mismatch = \"trust-slot\")",
            f.slot,
            f.manifest().display()
        )
    );
    assert_eq!(f.slot_position().0, s, "slot untouched");
    assert_eq!(f.stored_offset().await, Some(o), "offset untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_ahead_trust_slot_moves_the_offset_up() {
    let (f, _o, s) = ordering("ahead_ts", Less).await;
    let started = f.start_with(TrustSlot).await.unwrap();
    assert_started(&f, started, s, s, s).await;
    let record = f.store().load().await.unwrap().unwrap();
    assert_eq!(record.xid, None, "the moved offset names no transaction");
    assert_eq!(record.system_id, f.system_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_ahead_trust_greater_lsn_moves_the_offset_up() {
    let (f, _o, s) = ordering("ahead_tg", Less).await;
    let started = f.start_with(TrustGreaterLsn).await.unwrap();
    assert_started(&f, started, s, s, s).await;
}

// --- equal (O = S) ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_no_validation_starts() {
    let (f, o, _s) = ordering("equal_nv", Equal).await;
    let started = f.start_with(NoValidation).await.unwrap();
    assert!(started.decision.notices.is_empty());
    assert_started(&f, started, o, o, o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_trust_offset_starts() {
    let (f, o, _s) = ordering("equal_to", Equal).await;
    let started = f.start_with(TrustOffset).await.unwrap();
    assert_started(&f, started, o, o, o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_trust_slot_starts() {
    let (f, o, _s) = ordering("equal_ts", Equal).await;
    let started = f.start_with(TrustSlot).await.unwrap();
    assert_started(&f, started, o, o, o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_trust_greater_lsn_starts() {
    let (f, o, _s) = ordering("equal_tg", Equal).await;
    let started = f.start_with(TrustGreaterLsn).await.unwrap();
    assert_started(&f, started, o, o, o).await;
}

// --- offset ahead (O > S) ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_ahead_no_validation_starts_at_the_offset() {
    let (f, o, s) = ordering("oahead_nv", Greater).await;
    let started = f.start_with(NoValidation).await.unwrap();
    assert_started(&f, started, o, s, o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_ahead_trust_offset_advances_the_slot() {
    let (f, o, _s) = ordering("oahead_to", Greater).await;
    let started = f.start_with(TrustOffset).await.unwrap();
    assert_eq!(started.decision.advance_slot_to, Some(o));
    assert_started(&f, started, o, o, o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_ahead_trust_slot_leaves_the_slot() {
    let (f, o, s) = ordering("oahead_ts", Greater).await;
    let started = f.start_with(TrustSlot).await.unwrap();
    assert_started(&f, started, o, s, o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_ahead_trust_greater_lsn_advances_the_slot() {
    let (f, o, _s) = ordering("oahead_tg", Greater).await;
    let started = f.start_with(TrustGreaterLsn).await.unwrap();
    assert_started(&f, started, o, o, o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_ahead_in_manual_flush_mode_never_advances_the_slot() {
    let (f, o, s) = ordering("oahead_manual", Greater).await;
    let started = f
        .start(&f.settings(TrustGreaterLsn, FlushMode::Manual))
        .await
        .unwrap();
    assert_eq!(
        started.decision.notices[0].message,
        format!(
            "the stored offset {o} is ahead of replication slot \"{}\" at {s}; position.flush = \"manual\", so the slot is not advanced: advance it with `sluice slot advance {} {o}` or `SELECT pg_replication_slot_advance('{}', '{o}');`",
            f.slot,
            f.manifest().display(),
            f.slot
        )
    );
    assert_started(&f, started, o, s, o).await;
}

// --- the availability check ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_whose_wal_is_gone_is_refused() {
    let f = Fixture::new("walgone");
    let o = f.create_slot();
    f.store_offset(o).await;
    // Move the slot until its restart_lsn passes the offset: a checkpoint
    // logs the running transactions, which is where a logical slot's
    // restart point can move to once decoding confirms past it.
    let (s, r) = wait_until_blocking(format!("restart_lsn to pass {o}"), WAIT, || {
        f.pg.psql(&f.db, "CHECKPOINT");
        let to = f.generate_wal();
        f.advance_slot(to);
        let (s, r) = f.slot_position();
        (r > o).then_some((s, r))
    });
    for strategy in [NoValidation, TrustOffset] {
        let err = f.start_with(strategy).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to start: the WAL that the stored offset {o} needs is gone: replication slot \"{}\" is at {s} and keeps WAL only from its restart_lsn {r} (position.mismatch = \"{}\"), so the changes between {o} and {r} can no longer be streamed. Re-snapshot, or accept the gap: run `sluice offset clear {}`",
                f.slot,
                startup::strategy_name(strategy),
                f.manifest().display()
            )
        );
    }
    // Trusting the slot accepts the gap explicitly.
    let started = f.start_with(TrustSlot).await.unwrap();
    assert_started(&f, started, s, s, s).await;
}

// --- refused under every strategy ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_slot_without_an_offset_is_created() {
    let f = Fixture::new("create");
    let started = f.start_with(TrustOffset).await.unwrap();
    let created = started.created_slot.expect("the slot was created");
    assert_eq!(started.start, created.consistent_point);
    assert!(f.slot_exists());
    assert_eq!(f.slot_position().0, created.consistent_point);
    assert_eq!(f.stored_offset().await, None, "nothing streamed yet");

    // Once it exists, the next start resumes from it.
    let again = f.start_with(TrustOffset).await.unwrap();
    assert_eq!(again.start, created.consistent_point);
    assert!(again.created_slot.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_slot_is_not_created_when_the_manifest_says_so() {
    let f = Fixture::new("nocreate");
    let mut settings = f.settings(NoValidation, FlushMode::Connector);
    settings.create_slot = false;
    let err = f.start(&settings).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "replication slot \"{0}\" does not exist and source.create-slot = false: create it with `SELECT pg_create_logical_replication_slot('{0}', 'pgoutput');`, or set source.create-slot = true",
            f.slot
        )
    );
    assert!(!f.slot_exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_slot_with_a_durable_offset_is_refused() {
    let f = Fixture::new("lostslot");
    f.create_slot();
    let o = f.generate_wal();
    f.store_offset(o).await;
    f.pg.psql(
        &f.db,
        &format!("SELECT pg_drop_replication_slot('{}')", f.slot),
    );
    for strategy in [NoValidation, TrustOffset, TrustSlot, TrustGreaterLsn] {
        let err = f.start_with(strategy).await.unwrap_err();
        let StartupError::Refused(refusal) = &err else {
            panic!("unexpected: {}", chain(&err));
        };
        let Refusal::SlotMissingWithOffset { wal_end, .. } = refusal.as_ref() else {
            panic!("unexpected: {}", chain(&err));
        };
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to start: replication slot \"{}\" does not exist, but offset file {} holds offset {o} (the server's WAL end is {wal_end}; position.mismatch = \"{}\"): a new slot would start at the server's current position and silently skip every change between {o} and there. Re-snapshot, or accept the gap: run `sluice offset clear {}` and start again to create the slot",
                f.slot,
                f.offset_path().display(),
                startup::strategy_name(strategy),
                f.manifest().display()
            )
        );
        assert!(!f.slot_exists(), "no slot was created");
    }
    // The operator's resolution: clear the offset; the slot is created.
    f.store().clear().await.unwrap();
    let started = f.start_with(TrustOffset).await.unwrap();
    assert!(started.created_slot.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_from_another_cluster_is_refused() {
    // A second, private cluster: the offset is written from a real start-up
    // there, as a host would, then the manifest is pointed at the shared
    // cluster (same slot name, same offset file).
    let other = PgCluster::start(ClusterOptions {
        tls: false,
        ..ClusterOptions::default()
    });
    let there = Fixture::on(&other, "othercluster");
    let started = there.start_with(NoValidation).await.unwrap();
    let o = there.generate_wal();
    let record = OffsetRecord::new(
        there.slot.clone(),
        o,
        started.server.system_id,
        started.server.timeline,
    );
    there.store().store(&record).await.unwrap();

    let here = Fixture::new("thiscluster");
    let here = Fixture {
        slot: there.slot.clone(),
        ..here
    };
    std::fs::copy(there.offset_path(), here.offset_path()).unwrap();
    let s = here.create_slot();
    assert_ne!(here.system_id, there.system_id);
    for strategy in [NoValidation, TrustOffset, TrustSlot, TrustGreaterLsn] {
        let err = here.start_with(strategy).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to start: offset file {} holds offset {o} written by the PostgreSQL server with system identifier {}, but this server's system identifier is {} (replication slot \"{}\" is at {s}; position.mismatch = \"{}\" does not apply across servers). If source.url points at the wrong server, fix it; if this server replaces the old one, run `sluice offset clear {}` and re-snapshot",
                here.offset_path().display(),
                there.system_id,
                here.system_id,
                here.slot,
                startup::strategy_name(strategy),
                here.manifest().display()
            )
        );
    }
    assert_eq!(here.slot_position().0, s, "slot untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_ahead_of_the_servers_wal_end_is_refused() {
    let f = Fixture::new("future");
    let s = f.create_slot();
    let now = f.generate_wal();
    let o = Lsn(now.0 + (1 << 32));
    f.store_offset(o).await;
    for strategy in [NoValidation, TrustOffset, TrustSlot, TrustGreaterLsn] {
        let err = f.start_with(strategy).await.unwrap_err();
        let StartupError::Refused(refusal) = &err else {
            panic!("unexpected: {}", chain(&err));
        };
        let Refusal::OffsetAheadOfServer { wal_end, .. } = refusal.as_ref() else {
            panic!("unexpected: {}", chain(&err));
        };
        assert!(*wal_end >= now && *wal_end < o);
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to start: offset file {} holds offset {o}, ahead of the server's WAL end {wal_end} (replication slot \"{}\" is at {s}; position.mismatch = \"{}\"): this server is behind the one the offset came from (a failover to a lagging standby, or a restored backup), so transactions already streamed up to {o} may be replaced by different ones. If source.url points at the wrong server, fix it; otherwise run `sluice offset clear {}` and re-snapshot",
                f.offset_path().display(),
                f.slot,
                startup::strategy_name(strategy),
                f.manifest().display()
            )
        );
    }
    assert_eq!(f.slot_position().0, s, "slot untouched");
}

// --- NATS KV: two hosts, one offset ---

fn record(lsn: u64) -> OffsetRecord {
    OffsetRecord::new(SlotName::new("orders").unwrap(), Lsn(lsn), 7, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_kv_two_writers_cannot_overwrite_each_other() {
    let nats = NatsServer::launch();
    let (js_a, js_b) = (nats.jetstream().await, nats.jetstream().await);
    let mut a = NatsKvStore::open(&js_a, "sluice_offsets", "orders", 1)
        .await
        .unwrap();
    let mut b = NatsKvStore::open(&js_b, "sluice_offsets", "orders", 1)
        .await
        .unwrap();
    assert_eq!(
        a.describe(),
        "NATS KV bucket \"sluice_offsets\" key \"orders\""
    );
    // Both hosts start with no offset.
    assert_eq!(a.load().await.unwrap(), None);
    assert_eq!(b.load().await.unwrap(), None);
    a.store(&record(0x100)).await.unwrap();
    a.store(&record(0x200)).await.unwrap();

    // B still believes the key does not exist (revision 0).
    let err = b.store(&record(0x300)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected: 0, .. }));
    assert_eq!(
        err.to_string(),
        "the offset in NATS KV bucket \"sluice_offsets\" key \"orders\" was changed by another writer since this host read it at revision 0: another sluice host is running pipeline \"orders\"; stop one of them (a slot has one reader)"
    );

    // B reads again: it sees A's position and may not go below it.
    assert_eq!(
        b.load().await.unwrap().map(|r| r.commit_end_lsn),
        Some(Lsn(0x200))
    );
    let err = b.store(&record(0x150)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "refusing to store offset 0/150 for slot \"orders\" in NATS KV bucket \"sluice_offsets\" key \"orders\": it holds 0/200, and a stored offset never moves backwards"
    );
    b.store(&record(0x300)).await.unwrap();

    // Now A is the stale one.
    let err = a.store(&record(0x400)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

    // A restarted host reads the winner's offset; clearing removes it.
    let mut c = NatsKvStore::open(&nats.jetstream().await, "sluice_offsets", "orders", 1)
        .await
        .unwrap();
    let held = c.load().await.unwrap().unwrap();
    assert_eq!(held.commit_end_lsn, Lsn(0x300));
    assert_eq!(held.system_id, 7);
    c.clear().await.unwrap();
    assert_eq!(c.load().await.unwrap(), None);
    c.store(&record(0x10)).await.unwrap();
    assert!(matches!(
        b.store(&record(0x500)).await.unwrap_err(),
        StoreError::Conflict { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_kv_store_drives_start_up() {
    // The KV store behind the start-up decision, end to end: a slot-ahead
    // offset is moved up under trust-slot, in the bucket.
    let nats = NatsServer::launch();
    let js = nats.jetstream().await;
    let (f, _o, s) = ordering("kv_start", Less).await;
    let mut kv = NatsKvStore::open(&js, "offsets", "kv_pipeline", 1)
        .await
        .unwrap();
    let from_file = f.store().load().await.unwrap().unwrap();
    kv.store(&from_file).await.unwrap();

    let mut repl = ReplicationConnection::connect(&f.info()).await.unwrap();
    let sql = setup::connect_sql(&f.info()).await.unwrap();
    let started = startup::apply(
        &f.settings(TrustSlot, FlushMode::Connector),
        &mut repl,
        &sql,
        &mut kv,
    )
    .await
    .unwrap();
    repl.close().await;
    assert_eq!(started.start, s);
    let mut reader = NatsKvStore::open(&js, "offsets", "kv_pipeline", 1)
        .await
        .unwrap();
    assert_eq!(
        reader.load().await.unwrap().map(|r| r.commit_end_lsn),
        Some(s)
    );
}
