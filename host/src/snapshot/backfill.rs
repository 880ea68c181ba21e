//! Backfills on demand, while streaming: a table's current rows read into
//! the stream as `read` events without pausing it, by the watermark method
//! of Netflix's DBLog.
//!
//! # Asking for one
//!
//! `sluice backfill MANIFEST TABLE [--where SQL]` ([`request_backfill`])
//! writes a transactional logical message with prefix
//! `sluice.signal.<pipeline>` and a JSON [`BackfillRequest`]. It travels
//! through the slot like any change, so the running host (or the next one
//! to start) sees it in commit order; a request whose transaction was not
//! acknowledged before a crash is seen again after it.
//!
//! # Chunks between watermarks
//!
//! A task on its own connection reads the table in primary-key chunks. For
//! chunk n it commits a low watermark `L` (a logical message with prefix
//! `sluice.watermark.<pipeline>`, content `<backfill id>:<n>:low`), reads
//! the chunk (`SELECT … WHERE key > last ORDER BY key LIMIT size`, in its
//! own transaction), hands the rows to the stream loop, and commits a high
//! watermark `H`. The stream loop ([`Backfills::observe`]) notes the keys of
//! the table's rows changed by transactions between `L` and `H` in the
//! stream. At the end of `H`'s transaction it emits the chunk's rows
//! **minus those keys** ([`Backfills::due`]), then lets the task go on.
//!
//! Why this is consistent: the chunk shows each row as of a moment between
//! `L` and `H`. A row not changed in that window has that value since
//! before `L`, which is what the stream showed last, so the read emitted at
//! `H` repeats the current value and every later change follows it. A row
//! changed in the window is dropped: its changes are in the stream, in
//! order. So the stream never pauses, and a row is never emitted with an
//! older value after a newer one. A TRUNCATE of the table in the window
//! drops the whole chunk. The one gap DBLog shares: a transaction whose
//! commit record precedes `L` in the WAL but which became visible only after
//! the chunk's snapshot was taken (PostgreSQL writes the commit record
//! before it publishes the commit to new snapshots) would be read as before
//! it; that window is microseconds against two client round trips.
//!
//! Backfills run one at a time, others queue. Signal and watermark messages
//! are taken out of the stream before the plugins see them.
//!
//! # Crash resume
//!
//! A backfill is never silently abandoned by a stop or a crash: the
//! requests seen and the key of the last row of the running backfill's
//! last chunk are part of the offset record ([`BackfillProgress`]), written
//! only for what JetStream acknowledged. The state rides on the end of the
//! transaction or chunk that changed it (see `crate::pipeline::feed`): a
//! request enters the record with the acknowledgement of the transaction
//! that carried it, so a record at or past that transaction holds it, and
//! a record before it lets the slot replay the request; a chunk's key
//! enters it with the acknowledgement of the chunk.
//!
//! On start ([`Backfills::new`], [`Backfills::resume`]) the recorded
//! backfills are queued again in their order, and the first continues
//! after its key. A request message seen again (its transaction replayed
//! from the slot) is recognised by its LSN and not queued twice.
//!
//! Why the resumed backfill is consistent: rows up to the key were emitted
//! at an old high watermark, and the stream holds every change after it
//! (the offset passed that watermark only once the chunk was stored, and
//! streaming resumes at the offset). Rows after the key are read in new
//! windows, as in any backfill. The chunk that was emitted but not
//! recorded before the crash is read again: each of its rows then shows
//! its current value, after every change before the new window, so no row
//! goes back to an older value; where the rows are unchanged the re-read
//! chunk starts at the same key, holds the same rows, and gets the same
//! message ids (see `crate::snapshot`), so JetStream drops it. Watermarks
//! carry a fresh id per run of a backfill, resumed or not, so a replayed
//! old watermark never pairs with a new chunk. A backfill that fails (its
//! table dropped, say) is logged and dropped from the record, as before.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::catalog::{self, TableInfo};
use super::reader::Reader;
use super::{ReadId, SnapshotError, read_batches};
use crate::lsn::Lsn;
use crate::model::{Batch, Event, Value};
use crate::position::BackfillProgress;
use crate::replication::{ConnInfo, quote_literal};

/// A backfill, as `sluice backfill` asks for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// `schema.table` (or `table`, in `public`).
    pub table: String,
    /// An SQL condition limiting the rows read.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

impl BackfillRequest {
    fn schema_and_table(&self) -> (&str, &str) {
        self.table
            .split_once('.')
            .unwrap_or(("public", self.table.as_str()))
    }
}

fn signal_prefix(pipeline: &str) -> String {
    format!("sluice.signal.{pipeline}")
}

fn watermark_prefix(pipeline: &str) -> String {
    format!("sluice.watermark.{pipeline}")
}

/// Asks the pipeline `pipeline` to backfill: checks that the pipeline's
/// `slot` has its starting point (a request committed before it would be
/// part of the slot's initial snapshot, which messages are not, and lost)
/// and that the table is in `publication` and has a primary key, then
/// writes the request into the WAL. Returns the LSN of the request.
pub async fn request_backfill(
    sql: &Client,
    pipeline: &str,
    publication: &str,
    slot: &str,
    request: &BackfillRequest,
) -> Result<Lsn, SnapshotError> {
    let ready: Option<bool> = sql
        .query_opt(
            "SELECT confirmed_flush_lsn IS NOT NULL FROM pg_replication_slots
             WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await
        .map_err(|e| SnapshotError::sql(format!("cannot look up replication slot \"{slot}\""), e))?
        .map(|row| row.get(0));
    match ready {
        None => return Err(SnapshotError::NoSlot { slot: slot.into() }),
        Some(false) => return Err(SnapshotError::SlotNotReady { slot: slot.into() }),
        Some(true) => {}
    }
    let (schema, table) = request.schema_and_table();
    catalog::describe(sql, publication, schema, table).await?;
    let content = serde_json::to_string(request).expect("a request serialises");
    let row = sql
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, $2)::text",
            &[&signal_prefix(pipeline), &content],
        )
        .await
        .map_err(|e| SnapshotError::sql("cannot write the backfill request".into(), e))?;
    let text: String = row.get(0);
    text.parse()
        .map_err(|_| SnapshotError::Task(format!("the server returned `{text}` as an LSN")))
}

/// What the backfill task hands the stream loop.
#[derive(Debug)]
struct TaskChunk {
    n: u64,
    rows: Vec<Vec<Value>>,
    /// The key of the chunk's last row, as read (before any is dropped).
    last_key: Option<Vec<String>>,
}

/// The backfill in progress.
#[derive(Debug)]
struct Running {
    id: String,
    table: Arc<TableInfo>,
    /// The chunk whose window (between its watermarks) is open.
    window: Option<u64>,
    /// Keys changed in the open window, as JSON text.
    changed: HashSet<String>,
    truncated: bool,
    /// The chunk whose high watermark was seen in the current transaction.
    due: Option<u64>,
    chunks: mpsc::Receiver<Result<TaskChunk, SnapshotError>>,
    /// Tells the task the chunk was emitted.
    go: mpsc::Sender<()>,
    task: tokio::task::AbortHandle,
    /// The request, and how far its emitted chunks reached.
    progress: BackfillProgress,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Backfills requested in the stream; see the module documentation.
#[derive(Debug)]
pub struct Backfills {
    pipeline: String,
    conninfo: ConnInfo,
    publication: String,
    chunk_rows: usize,
    max_events: usize,
    signal: String,
    watermark: String,
    queue: VecDeque<BackfillProgress>,
    running: Option<Running>,
    /// Whether the state changed since [`Backfills::changed`] last said.
    changed: bool,
}

/// A chunk ready for the plugin chain.
#[derive(Debug)]
pub struct BackfillChunk {
    pub table: String,
    pub batches: Vec<Batch>,
    pub id: ReadId,
    pub rows: u64,
}

impl Backfills {
    pub fn new(
        pipeline: &str,
        conninfo: ConnInfo,
        publication: &str,
        chunk_rows: usize,
        max_events: usize,
        resumed: Vec<BackfillProgress>,
    ) -> Self {
        Backfills {
            pipeline: pipeline.to_owned(),
            conninfo,
            publication: publication.to_owned(),
            chunk_rows,
            max_events,
            signal: signal_prefix(pipeline),
            watermark: watermark_prefix(pipeline),
            queue: resumed.into(),
            running: None,
            changed: false,
        }
    }

    /// The state to record: the running backfill, then the queued ones.
    fn state(&self) -> Vec<BackfillProgress> {
        self.running
            .iter()
            .map(|r| r.progress.clone())
            .chain(self.queue.iter().cloned())
            .collect()
    }

    /// The state to record, when it changed since the last call.
    pub fn changed(&mut self) -> Option<Vec<BackfillProgress>> {
        std::mem::take(&mut self.changed).then(|| self.state())
    }

    /// Whether the request message at `lsn` is already running or queued.
    fn knows(&self, lsn: Lsn) -> bool {
        self.running
            .iter()
            .map(|r| &r.progress)
            .chain(&self.queue)
            .any(|p| p.request_lsn == lsn)
    }

    /// Looks at a batch from the stream before it goes on: takes requests
    /// and watermarks out of it, and notes the keys the open window's
    /// table changes.
    pub fn observe(&mut self, batch: &mut Batch) {
        let mut events = std::mem::take(&mut batch.events);
        events.retain(|event| match event {
            Event::Message(m) if m.prefix == self.signal => {
                match serde_json::from_slice::<BackfillRequest>(&m.content) {
                    // Replayed from the slot after a restart that had
                    // recorded it: it runs (or resumes) once.
                    Ok(r) if self.knows(m.lsn) => {
                        tracing::info!(table = %r.table, lsn = %m.lsn, "backfill request seen again; it is already queued");
                    }
                    Ok(r) => {
                        tracing::info!(table = %r.table, lsn = %m.lsn, "backfill requested");
                        self.queue
                            .push_back(BackfillProgress::new(m.lsn, r.table, r.condition));
                        self.changed = true;
                    }
                    Err(e) => {
                        tracing::warn!(lsn = %m.lsn, error = %e, "ignoring a malformed backfill request")
                    }
                }
                false
            }
            Event::Message(m) if m.prefix == self.watermark => {
                if let Some(r) = &mut self.running {
                    r.watermark(&m.content);
                }
                false
            }
            _ => true,
        });
        if let Some(r) = &mut self.running
            && r.window.is_some()
        {
            for event in &events {
                r.note(&batch.relations, event);
            }
        }
        batch.events = events;
    }

    /// After a transaction's end: the chunk whose high watermark it
    /// carried, without the rows changed in its window, once the task
    /// handed it over. Starts the next queued backfill when none runs.
    pub async fn due(&mut self, commit_lsn: Lsn, commit_time: i64) -> Option<BackfillChunk> {
        let chunk = self.take_due(commit_lsn, commit_time).await;
        self.resume().await;
        chunk
    }

    /// Starts the next queued backfill when none runs: at start-up, the
    /// one a stop or crash interrupted, after its last acknowledged key.
    pub async fn resume(&mut self) {
        while self.running.is_none()
            && let Some(progress) = self.queue.pop_front()
        {
            let table = progress.table.clone();
            match self.start(progress).await {
                Ok(r) => self.running = Some(r),
                Err(e) => {
                    tracing::error!(table = %table, error = %e, "backfill cannot start; dropped");
                    self.changed = true;
                }
            }
        }
    }

    async fn take_due(&mut self, lsn: Lsn, commit_time: i64) -> Option<BackfillChunk> {
        let r = self.running.as_mut()?;
        let n = r.due.take()?;
        let received = r.chunks.recv().await;
        let chunk = match received {
            Some(Ok(c)) if c.n == n => c,
            Some(Ok(c)) => {
                tracing::error!(expected = n, got = c.n, table = %r.table.qualified(),
                    "backfill chunks out of step; backfill abandoned");
                self.running = None;
                self.changed = true;
                return None;
            }
            Some(Err(e)) => {
                tracing::error!(table = %r.table.qualified(), error = %e, "backfill failed");
                self.running = None;
                self.changed = true;
                return None;
            }
            None => {
                self.running = None;
                self.changed = true;
                return None;
            }
        };
        let last = chunk.rows.len() < self.chunk_rows;
        let rows: Vec<Vec<Value>> = if r.truncated {
            Vec::new()
        } else {
            chunk
                .rows
                .into_iter()
                .filter(|row| !r.changed.contains(&key_text(&r.table.key, row)))
                .collect()
        };
        let count = rows.len() as u64;
        r.progress.rows += count;
        r.progress.after = chunk.last_key;
        self.changed = true;
        let table = r.table.qualified();
        let (batches, id) = read_batches(&r.table, rows, lsn, commit_time, self.max_events);
        if last {
            tracing::info!(table = %table, rows = r.progress.rows, "backfill complete");
            self.running = None;
        } else {
            let _ = r.go.send(()).await;
        }
        Some(BackfillChunk {
            table,
            batches,
            id,
            rows: count,
        })
    }

    async fn start(&self, progress: BackfillProgress) -> Result<Running, SnapshotError> {
        let request = BackfillRequest {
            table: progress.table.clone(),
            condition: progress.condition.clone(),
        };
        let (schema, name) = request.schema_and_table();
        let reader = Reader::plain(&self.conninfo).await?;
        let mut table =
            (*catalog::describe(reader.client(), &self.publication, schema, name).await?).clone();
        if let Some(condition) = &request.condition {
            table.row_filter = Some(match table.row_filter.take() {
                Some(f) => format!("({f}) AND ({condition})"),
                None => condition.clone(),
            });
        }
        let table = Arc::new(table);
        let id = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let (tx, chunks) = mpsc::channel(1);
        let (go, go_rx) = mpsc::channel(1);
        let task = Task {
            reader,
            table: table.clone(),
            id: id.clone(),
            watermark: self.watermark.clone(),
            chunk_rows: self.chunk_rows,
        };
        let handle = tokio::spawn(task.run(progress.after.clone(), tx, go_rx));
        tracing::info!(table = %table.qualified(), id = %id, pipeline = %self.pipeline,
            request = %progress.request_lsn, resumed = progress.after.is_some(),
            rows_before = progress.rows, "backfill started");
        Ok(Running {
            id,
            table,
            window: None,
            changed: HashSet::new(),
            truncated: false,
            due: None,
            chunks,
            go,
            task: handle.abort_handle(),
            progress,
        })
    }
}

impl Running {
    fn watermark(&mut self, content: &[u8]) {
        let Ok(text) = std::str::from_utf8(content) else {
            return;
        };
        let mut parts = text.rsplitn(3, ':');
        let (Some(kind), Some(n), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let Ok(n) = n.parse::<u64>() else { return };
        if id != self.id {
            return;
        }
        match kind {
            "low" => {
                self.window = Some(n);
                self.changed.clear();
                self.truncated = false;
            }
            "high" if self.window == Some(n) => {
                self.window = None;
                self.due = Some(n);
            }
            _ => {}
        }
    }

    /// Notes the keys `event` changes, when it concerns the table.
    fn note(&mut self, relations: &[crate::model::Relation], event: &Event) {
        match event {
            Event::Row(row) => {
                let Some(rel) = relations.get(row.relation as usize) else {
                    return;
                };
                if rel.oid != self.table.oid {
                    return;
                }
                for values in [&row.old, &row.new].into_iter().flatten() {
                    self.changed.insert(key_text(&self.table.key, values));
                }
            }
            Event::Truncate(t) => {
                if t.relations.iter().any(|&i| {
                    relations
                        .get(i as usize)
                        .is_some_and(|r| r.oid == self.table.oid)
                }) {
                    self.truncated = true;
                }
            }
            Event::Message(_) => {}
        }
    }
}

/// A row's key as text, for set membership.
fn key_text(key: &[usize], row: &[Value]) -> String {
    let values: Vec<&Value> = key.iter().filter_map(|&i| row.get(i)).collect();
    serde_json::to_string(&values).expect("values serialise")
}

/// The task reading chunks between watermarks.
struct Task {
    reader: Reader,
    table: Arc<TableInfo>,
    id: String,
    watermark: String,
    chunk_rows: usize,
}

impl Task {
    /// Reads the chunks after the key `after` (from the start when `None`).
    async fn run(
        self,
        mut after: Option<Vec<String>>,
        tx: mpsc::Sender<Result<TaskChunk, SnapshotError>>,
        mut go: mpsc::Receiver<()>,
    ) {
        for n in 0.. {
            let result = self.chunk(n, after.as_deref(), &tx).await;
            match result {
                Ok(Some(last_key)) => after = Some(last_key),
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            if go.recv().await.is_none() {
                return;
            }
        }
    }

    /// Chunk `n`: low watermark, rows, high watermark. The key of its last
    /// row when more may follow.
    async fn chunk(
        &self,
        n: u64,
        after: Option<&[String]>,
        tx: &mpsc::Sender<Result<TaskChunk, SnapshotError>>,
    ) -> Result<Option<Vec<String>>, SnapshotError> {
        self.mark(n, "low").await?;
        let rows = self
            .reader
            .chunk(&self.table, after, self.chunk_rows)
            .await?;
        let more = rows.rows.len() == self.chunk_rows;
        let last_key = rows.last_key;
        let chunk = TaskChunk {
            n,
            rows: rows.rows,
            last_key: last_key.clone(),
        };
        if tx.send(Ok(chunk)).await.is_err() {
            return Ok(None);
        }
        self.mark(n, "high").await?;
        Ok(if more { last_key } else { None })
    }

    async fn mark(&self, n: u64, kind: &str) -> Result<(), SnapshotError> {
        let sql = format!(
            "SELECT pg_logical_emit_message(true, {}, {})",
            quote_literal(&self.watermark),
            quote_literal(&format!("{}:{n}:{kind}", self.id))
        );
        self.reader
            .client()
            .batch_execute(&sql)
            .await
            .map_err(|e| SnapshotError::sql("cannot write a backfill watermark".into(), e))
    }
}

#[cfg(test)]
mod tests;
