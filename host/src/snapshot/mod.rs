//! Snapshots: the published tables' existing rows, read into the stream as
//! `read` events before (or, on resume, exactly where) the changes that
//! follow them, so that replaying the stream in order reproduces the tables.
//!
//! # Where the rows go in the stream
//!
//! Every snapshot has a **point**: an LSN P and a snapshot of the database
//! that contains exactly the transactions that committed before P. Such a
//! pair comes only from `CREATE_REPLICATION_SLOT … (SNAPSHOT 'export')`: the
//! slot's consistent point, and the snapshot it exports until its session
//! runs another command. [`prepare`] imports it into `parallel-tables`
//! ordinary connections (`BEGIN ISOLATION LEVEL REPEATABLE READ; SET
//! TRANSACTION SNAPSHOT …`, see [`reader`]) before the replication session
//! does anything else; those transactions then see the tables as of P for
//! as long as the copy takes.
//!
//! The pipeline emits the rows read under P **at P in the stream**: after
//! every transaction that committed before P and before every transaction
//! that commits at or after it (the run loop holds back the first event at
//! or past P until the rows are handed over). Then, for every row, the
//! stream holds its value as of P followed by exactly the changes made after
//! P: no change is missed, none is repeated, and no row is ever emitted with
//! a value older than one emitted before it. Rows go through the same
//! transforms and sink as changes, as `read` events, in chunk batches.
//!
//! - **Initial snapshot** (`source.snapshot` = `initial`, `when-needed`,
//!   `initial-only`, when start-up creates the slot): P is the new slot's
//!   consistent point, which is also where streaming starts, so the rows
//!   simply come first.
//! - **Re-snapshot** (`when-needed`, when the stored offset's WAL is gone),
//!   and a snapshot of a slot that existed without any stored offset: P
//!   comes from a TEMPORARY slot created for the purpose (dropped with its
//!   session), and the stream resumes from the main slot, before P. A
//!   non-transactional logical message `sluice.snapshot` (content: P) is
//!   written after P, so that the stream reaches P even when the database
//!   is quiet; it also tells consumers where a re-snapshot begins. A
//!   re-snapshot repairs rows changed while the WAL was lost, but a row
//!   deleted then has no delete event: a consumer that keeps state should
//!   take a re-snapshot's reads as the table's whole content.
//!
//! # Crash resume
//!
//! Progress ([`SnapshotProgress`]: per table, the key of the last row of
//! the last chunk JetStream acknowledged) is written into the offset record,
//! in the same write as the stream position, as chunks are acknowledged. The
//! slot and the offset never pass P while rows read under P are
//! unacknowledged: the chunks sit in the same ordered acknowledgement queue
//! as the transactions after them.
//!
//! After a crash the exported snapshot is gone. Tables already complete
//! stay complete. Each unfinished table is continued after its last
//! acknowledged key under a **new point** P' (a temporary slot again), and
//! its remaining rows are emitted at P' in the stream, which resumes from
//! the stored offset O ≤ P'. That is consistent: rows up to the key were
//! emitted as of the old point and are followed by every change since (the
//! stream resumes at O and nothing after the old point was confirmed before
//! those rows were); rows after the key get their value as of P', placed
//! after every change before P' and before every change after it. A chunk
//! that was published but not yet recorded when the host died is read
//! again; its messages have the same ids when its rows are unchanged
//! (JetStream drops them), otherwise it is newer data, placed correctly.
//!
//! # Message ids
//!
//! A read message's `Nats-Msg-Id` is
//! `<pipeline>:read:<table OID>:<chunk digest>:<event index>:<output
//! index>`, where the digest is a hash of the chunk's rows: a chunk read
//! again with the same content gets the same ids and JetStream drops it.

mod backfill;
mod catalog;
mod display;
mod reader;
mod settings;

pub use backfill::{BackfillRequest, Backfills, request_backfill};
pub use settings::{SnapshotMode, SnapshotSettings};

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::Manifest;
use crate::lsn::Lsn;
use crate::model::{Batch, Event, Operation, RowChange};
pub use crate::position::progress::ChunkDone;
use crate::position::startup::Startup;
use crate::position::store::{OffsetStore, StoreError};
use crate::position::{OffsetRecord, SnapshotProgress, TableProgress};
use crate::replication::{
    CreateSlotOptions, ReplicationConnection, ReplicationError, SlotName, SnapshotAction, SqlError,
    standby,
};
use catalog::TableInfo;

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Setup(#[from] crate::replication::setup::SetupError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(
        "table {table} has no primary key: a snapshot reads tables in primary-key order; add one, or leave the table out of the publication"
    )]
    NoPrimaryKey { table: String },
    #[error(
        "table {table}: publication \"{publication}\" leaves part of the primary key out of its column list; a snapshot needs the whole key"
    )]
    KeyNotPublished { table: String, publication: String },
    #[error(
        "table {table} is not in publication \"{publication}\" (or does not exist): only published tables are read"
    )]
    NotPublished { table: String, publication: String },
    #[error(
        "table {table} is a partition of {root}, which publication \"{publication}\" publishes via its root: its rows are read, and its changes streamed, as {root}'s; read {root} instead"
    )]
    PublishedViaRoot {
        table: String,
        root: String,
        publication: String,
    },
    #[error("table {table} returned a NULL primary key value")]
    NullKey { table: String },
    #[error("table {table}: {error}")]
    Row {
        table: String,
        error: crate::pgoutput::RelationError,
    },
    #[error(
        "replication slot \"{slot}\" does not exist in this database: a backfill request travels through the pipeline's slot, and one written before the slot exists is never seen; start `sluice run` first, and ask again once it streams"
    )]
    NoSlot { slot: String },
    #[error(
        "replication slot \"{slot}\" is still being created (it waits for the transactions running on the server to end): a request written now could land before its starting point and never be seen; ask again once the pipeline streams"
    )]
    SlotNotReady { slot: String },
    #[error("a snapshot reader failed: {0}")]
    Task(String),
}

impl SnapshotError {
    fn sql(during: String, error: tokio_postgres::Error) -> Self {
        SnapshotError::Sql(SqlError::new(during, error))
    }
}

/// What the message ids of a chunk's messages are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadId {
    pub table_oid: u32,
    /// The first 8 bytes of the SHA-256 of the chunk's rows.
    pub digest: u64,
}

/// One chunk, ready for the plugin chain.
#[derive(Debug)]
pub struct Chunk {
    /// The rows as `read` events, in batches of at most `batch.max-events`.
    pub batches: Vec<Batch>,
    pub id: ReadId,
    /// What to record once JetStream stored every message of the chunk.
    pub done: ChunkDone,
}

/// A table to read, and where to start.
#[derive(Debug)]
struct Job {
    table: Arc<TableInfo>,
    after: Option<Vec<String>>,
    counts: Arc<display::TableCounts>,
}

/// A snapshot whose readers hold an imported snapshot, ready to be read.
pub struct Snapshot {
    point: Lsn,
    /// The snapshot's timestamp, microseconds since the Unix epoch: the
    /// `commit_time` of its batches.
    taken_at: i64,
    readers: Vec<reader::Reader>,
    jobs: VecDeque<Job>,
    progress: SnapshotProgress,
    chunk_rows: usize,
    max_events: usize,
    counts: Arc<display::Counts>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("point", &self.point)
            .field("tables", &self.jobs.len())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// The LSN the rows are read as of, and where they go in the stream.
    pub fn point(&self) -> Lsn {
        self.point
    }

    /// The progress as stored when the snapshot started.
    pub fn progress(&self) -> &SnapshotProgress {
        &self.progress
    }

    /// Starts reading: one task per reader, each taking the next table
    /// from the queue. Chunks come out of the [`Injector`] in the order
    /// they were read; memory is bounded by one chunk per reader plus the
    /// channel.
    pub fn start(self) -> Injector {
        let (tx, rx) = mpsc::channel(self.readers.len().max(1));
        let jobs = Arc::new(Mutex::new(self.jobs));
        let mut tasks = JoinSet::new();
        let stop = Arc::new(AtomicBool::new(false));
        display::spawn(self.counts, stop.clone());
        for reader in self.readers {
            let worker = Worker {
                reader,
                jobs: jobs.clone(),
                tx: tx.clone(),
                point: self.point,
                taken_at: self.taken_at,
                chunk_rows: self.chunk_rows,
                max_events: self.max_events,
            };
            tasks.spawn(worker.run());
        }
        Injector { rx, tasks, stop }
    }
}

/// The stream of chunks of a running snapshot.
#[derive(Debug)]
pub struct Injector {
    rx: mpsc::Receiver<Result<Chunk, SnapshotError>>,
    tasks: JoinSet<()>,
    /// Ends the progress display.
    stop: Arc<AtomicBool>,
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Injector {
    /// The next chunk; `None` once every table is read.
    pub async fn next(&mut self) -> Option<Result<Chunk, SnapshotError>> {
        let next = self.rx.recv().await;
        if next.is_none() {
            while let Some(joined) = self.tasks.join_next().await {
                if let Err(e) = joined {
                    return Some(Err(SnapshotError::Task(e.to_string())));
                }
            }
        }
        next
    }
}

struct Worker {
    reader: reader::Reader,
    jobs: Arc<Mutex<VecDeque<Job>>>,
    tx: mpsc::Sender<Result<Chunk, SnapshotError>>,
    point: Lsn,
    taken_at: i64,
    chunk_rows: usize,
    max_events: usize,
}

impl Worker {
    async fn run(self) {
        loop {
            let job = self
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop_front();
            let Some(job) = job else { return };
            if let Err(e) = self.table(job).await {
                let _ = self.tx.send(Err(e)).await;
                return;
            }
        }
    }

    /// Reads one table to its end, chunk by chunk.
    async fn table(&self, job: Job) -> Result<(), SnapshotError> {
        let Job {
            table,
            mut after,
            counts,
        } = job;
        counts.started();
        tracing::info!(table = %table.qualified(), point = %self.point, resumed = after.is_some(), "snapshot of table started");
        loop {
            let rows = self
                .reader
                .chunk(&table, after.as_deref(), self.chunk_rows)
                .await?;
            let last = rows.rows.len() < self.chunk_rows;
            let count = rows.rows.len() as u64;
            let last_key = rows.last_key.clone();
            counts.read(count);
            let chunk = self.chunk(
                &table,
                rows.rows,
                if last { None } else { last_key.clone() },
            );
            if self.tx.send(Ok(chunk)).await.is_err() {
                return Ok(());
            }
            if last {
                counts.done();
                tracing::info!(table = %table.qualified(), "snapshot of table read");
                return Ok(());
            }
            after = last_key;
            debug_assert!(count > 0);
        }
    }

    fn chunk(
        &self,
        table: &TableInfo,
        rows: Vec<Vec<crate::model::Value>>,
        last_key: Option<Vec<String>>,
    ) -> Chunk {
        let count = rows.len() as u64;
        let (batches, id) = read_batches(table, rows, self.point, self.taken_at, self.max_events);
        Chunk {
            batches,
            id,
            done: ChunkDone {
                schema: table.schema.clone(),
                table: table.name.clone(),
                point: self.point,
                rows: count,
                last_key,
            },
        }
    }
}

/// Rows of `table` as `read` events at `lsn`, in batches of at most
/// `max_events`, and the ids of their messages.
fn read_batches(
    table: &TableInfo,
    rows: Vec<Vec<crate::model::Value>>,
    lsn: Lsn,
    commit_time: i64,
    max_events: usize,
) -> (Vec<Batch>, ReadId) {
    let digest = digest(table.oid, &rows);
    let relation = (**table.relation.relation()).clone();
    let mut batches = Vec::new();
    let mut events = Vec::with_capacity(max_events.min(rows.len()));
    for values in rows {
        events.push(Event::Row(RowChange {
            op: Operation::Read,
            relation: 0,
            lsn,
            old: None,
            new: Some(values),
        }));
        if events.len() == max_events {
            batches.push(std::mem::take(&mut events));
        }
    }
    if !events.is_empty() {
        batches.push(events);
    }
    let n = batches.len();
    let batches = batches
        .into_iter()
        .enumerate()
        .map(|(i, events)| Batch {
            xid: 0,
            commit_lsn: lsn,
            commit_time,
            first: i == 0,
            last: i + 1 == n,
            relations: vec![relation.clone()],
            events,
        })
        .collect();
    (
        batches,
        ReadId {
            table_oid: table.oid,
            digest,
        },
    )
}

/// A hash of a chunk's rows, for its messages' ids.
fn digest(table_oid: u32, rows: &[Vec<crate::model::Value>]) -> u64 {
    let mut h = Sha256::new();
    h.update(table_oid.to_be_bytes());
    for row in rows {
        // The JSON form is lossless and stable (see `model`).
        let bytes = serde_json::to_vec(row).expect("values serialise");
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(&bytes);
    }
    let out = h.finalize();
    u64::from_be_bytes(out[..8].try_into().expect("8 bytes"))
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Decides whether start-up calls for a snapshot and, if so, prepares it:
/// takes the point (the new slot's exported snapshot, or a temporary
/// slot's), imports it into the readers, describes the tables and stores
/// the progress (so that a crash from here on resumes it). Must run before
/// `repl` runs any other command, since a new slot's exported snapshot
/// lives only until then. Returns `None` when there is nothing to read.
pub async fn prepare(
    m: &Manifest,
    start: &Startup,
    repl: &mut ReplicationConnection,
    store: &mut dyn OffsetStore,
) -> Result<Option<Snapshot>, SnapshotError> {
    let mode = m.source.snapshot;
    let stored = start.offset.as_ref().and_then(|o| o.snapshot.clone());
    let new_slot = start.created_slot.as_ref().and_then(|s| {
        s.snapshot_name
            .clone()
            .map(|name| (name, s.consistent_point))
    });
    // `never` also leaves an unfinished snapshot alone: the operator
    // switched snapshots off.
    if mode == SnapshotMode::Never {
        return Ok(None);
    }
    // Whether this is a fresh snapshot of every table, or a resume.
    let fresh = if new_slot.is_some() || start.resnapshot {
        true
    } else if start.offset.is_none() {
        tracing::warn!(slot = %m.source.slot, mode = mode.as_str(),
            "the slot exists but no offset is stored: taking a snapshot so that no row is missed");
        true
    } else {
        false
    };
    let progress = match (fresh, stored) {
        (true, _) => None,
        (false, Some(p)) if !p.is_complete() => Some(p),
        (false, _) => return Ok(None),
    };

    // A temporary slot made here is dropped once the readers imported its
    // snapshot, so that the same session can go on to stream the
    // pipeline's slot without holding WAL back for it.
    let (snapshot_name, point, temporary) = match &new_slot {
        Some((name, point)) if fresh => (name.clone(), *point, None),
        _ => {
            // A temporary slot's consistent point and exported snapshot; the
            // slot goes away with the replication session.
            let temp = SlotName::new(format!("sluice_snapshot_{}", std::process::id()))
                .expect("a valid slot name");
            let created = standby::create_slot(
                repl,
                &temp,
                CreateSlotOptions {
                    temporary: true,
                    snapshot: SnapshotAction::Export,
                    failover: false,
                },
            )
            .await?;
            let name = created.snapshot_name.ok_or_else(|| {
                ReplicationError::Protocol(
                    "CREATE_REPLICATION_SLOT … (SNAPSHOT 'export') returned no snapshot name"
                        .into(),
                )
            })?;
            (name, created.consistent_point, Some(temp))
        }
    };
    let mut readers = vec![reader::Reader::open(&m.source.conninfo, &snapshot_name).await?];
    let publication = m.source.publication.as_str();
    let mut progress = match progress {
        Some(p) => p,
        None => SnapshotProgress {
            tables: catalog::published_tables(readers[0].client(), publication)
                .await?
                .into_iter()
                .map(|(schema, table)| TableProgress::new(schema, table))
                .collect(),
        },
    };
    let mut jobs = VecDeque::new();
    let mut counts = display::Counts::default();
    for t in progress.tables.iter_mut().filter(|t| !t.done) {
        let table =
            match catalog::describe(readers[0].client(), publication, &t.schema, &t.table).await {
                Ok(table) => table,
                // A table taken out of the publication since the snapshot
                // began (say, because it has no primary key) is not read.
                Err(
                    SnapshotError::NotPublished { table, publication }
                    | SnapshotError::PublishedViaRoot {
                        table, publication, ..
                    },
                ) => {
                    tracing::warn!(table = %table, publication = %publication,
                        "the table left the publication: its snapshot is abandoned");
                    t.done = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
        let counts = counts.add(table.qualified(), table.estimated_rows, t.rows);
        jobs.push_back(Job {
            table,
            after: t.after.clone(),
            counts,
        });
    }

    // One reader per table copied at once, all under the same snapshot
    // (several transactions may import it).
    let wanted = m.snapshot.parallel_tables.min(jobs.len()).max(1);
    while readers.len() < wanted {
        readers.push(reader::Reader::open(&m.source.conninfo, &snapshot_name).await?);
    }
    if let Some(temp) = temporary {
        repl.drop_slot(&temp, false).await?;
    }

    // The progress is stored before anything is read: from now on a
    // crash resumes this snapshot instead of skipping it.
    let at = start.start.max(
        start
            .offset
            .as_ref()
            .map_or(Lsn::ZERO, |o| o.commit_end_lsn),
    );
    let record = OffsetRecord::new(
        m.source.slot.clone(),
        at,
        start.server.system_id,
        start.server.timeline,
    )
    .with_snapshot(Some(progress.clone()))
    // Unfinished backfills stay recorded: they resume after the snapshot.
    .with_backfills(
        start
            .offset
            .as_ref()
            .map(|o| o.backfills.clone())
            .unwrap_or_default(),
    );
    store.store(&record).await?;
    tracing::info!(point = %point, tables = jobs.len(), resumed = !fresh,
        "snapshot prepared: the tables are read as of the point, and their rows go into the stream there");
    // Let the stream show something at or past the point, so that the run
    // loop reaches it even on a quiet database (the point of a new slot is
    // where streaming starts, so it needs nothing). It is a write, so it
    // goes to the primary (the source may be a standby, decoded there).
    if point > start.start {
        let primary = crate::replication::primary::primary_of(&m.source.conninfo);
        let sql = crate::replication::setup::connect_sql(&primary).await?;
        sql.batch_execute(&format!(
            "SELECT pg_logical_emit_message(false, 'sluice.snapshot', '{point}')"
        ))
        .await
        .map_err(|e| SnapshotError::sql("cannot mark the snapshot's point in the WAL".into(), e))?;
    }
    Ok(Some(Snapshot {
        point,
        taken_at: now_us(),
        readers,
        jobs,
        progress,
        chunk_rows: m.snapshot.chunk_rows,
        max_events: m.batch.max_events,
        counts: Arc::new(counts),
    }))
}
