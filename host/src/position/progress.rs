//! Snapshot progress: the durable part of a snapshot's state, stored in the
//! offset record next to the stream position, so that one atomic write
//! covers both (see `crate::snapshot` for how it is used).
//!
//! For every table the snapshot copies it holds the snapshot point (the LSN
//! whose exported snapshot the table is being read under), the primary key
//! of the last row of the last chunk JetStream acknowledged, and whether
//! the table is complete. Invariants: a table's `after` key only moves
//! forward within one point (chunks are acknowledged in the order they were
//! read); a table once `done` stays done; rows counted are rows
//! acknowledged. Keys are kept as PostgreSQL's text output of each key
//! column, which is what the next chunk's query compares against (cast back
//! to the column's type on the server), so no ordering is ever computed
//! here.
//!
//! [`BackfillProgress`] is the same for an on-demand backfill: the request
//! (table, condition, and the LSN of the request message, which identifies
//! it), the key of the last row of its last acknowledged chunk, and the rows
//! acknowledged. A backfill is in the record from the acknowledgement of
//! the transaction that carried its request until the acknowledgement of
//! its last chunk (or its abandonment); its key only moves forward.

use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;

/// The progress of one snapshot (initial, re-snapshot or resumed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotProgress {
    /// Every table the snapshot copies, in the order they were listed.
    pub tables: Vec<TableProgress>,
}

/// One table's part of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableProgress {
    pub schema: String,
    pub table: String,
    /// The snapshot point its rows are being read under; `None` before the
    /// first chunk.
    #[serde(default)]
    pub point: Option<Lsn>,
    /// The key of the last acknowledged row (one text per key column);
    /// `None`: nothing acknowledged under `point` yet.
    #[serde(default)]
    pub after: Option<Vec<String>>,
    /// Rows acknowledged so far (all points together).
    #[serde(default)]
    pub rows: u64,
    #[serde(default)]
    pub done: bool,
}

impl TableProgress {
    /// A table not started yet.
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Self {
        TableProgress {
            schema: schema.into(),
            table: table.into(),
            point: None,
            after: None,
            rows: 0,
            done: false,
        }
    }

    /// `schema.table`, for messages.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

impl SnapshotProgress {
    /// Whether every table is copied.
    pub fn is_complete(&self) -> bool {
        self.tables.iter().all(|t| t.done)
    }

    /// The table `schema.table`, if the snapshot copies it.
    pub fn table_mut(&mut self, schema: &str, table: &str) -> Option<&mut TableProgress> {
        self.tables
            .iter_mut()
            .find(|t| t.schema == schema && t.table == table)
    }

    /// A chunk of `rows` rows of `schema.table`, read under `point` and
    /// ending at `last_key` (`None`: the table's last chunk), is stored.
    pub fn chunk_stored(
        &mut self,
        schema: &str,
        table: &str,
        point: Lsn,
        rows: u64,
        last_key: Option<Vec<String>>,
    ) {
        let Some(t) = self.table_mut(schema, table) else {
            debug_assert!(false, "a chunk of a table the snapshot does not copy");
            return;
        };
        if t.done {
            return;
        }
        t.rows += rows;
        t.point = Some(point);
        match last_key {
            Some(key) => t.after = Some(key),
            None => t.done = true,
        }
    }
}

/// One backfill asked for in the stream and not finished yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillProgress {
    /// The LSN of the request message: the same request replayed from the
    /// slot has the same LSN.
    pub request_lsn: Lsn,
    /// `schema.table` (or `table`, in `public`), as requested.
    pub table: String,
    /// The SQL condition limiting the rows read, as requested.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The key of the last row of the last acknowledged chunk (one text per
    /// key column); `None`: nothing acknowledged yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    /// Rows acknowledged so far.
    #[serde(default)]
    pub rows: u64,
}

impl BackfillProgress {
    /// A backfill asked for by the message at `request_lsn`, not started.
    pub fn new(request_lsn: Lsn, table: impl Into<String>, condition: Option<String>) -> Self {
        BackfillProgress {
            request_lsn,
            table: table.into(),
            condition,
            after: None,
            rows: 0,
        }
    }
}

/// A chunk's effect on the progress, applied once it is acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkDone {
    pub schema: String,
    pub table: String,
    pub point: Lsn,
    pub rows: u64,
    /// The key of the chunk's last row; `None` for the table's last chunk.
    pub last_key: Option<Vec<String>>,
}

impl ChunkDone {
    /// Records the chunk in `progress`.
    pub fn apply(self, progress: &mut SnapshotProgress) {
        progress.chunk_stored(
            &self.schema,
            &self.table,
            self.point,
            self.rows,
            self.last_key,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_move_a_table_forward_until_done() {
        let mut p = SnapshotProgress {
            tables: vec![
                TableProgress::new("public", "a"),
                TableProgress::new("s", "b"),
            ],
        };
        assert!(!p.is_complete());
        p.chunk_stored("public", "a", Lsn(10), 5, Some(vec!["5".into()]));
        p.chunk_stored("public", "a", Lsn(10), 2, None);
        p.chunk_stored("public", "a", Lsn(10), 9, Some(vec!["99".into()]));
        let a = &p.tables[0];
        assert_eq!(
            (a.rows, a.done, a.after.clone()),
            (7, true, Some(vec!["5".into()]))
        );
        assert!(!p.is_complete());
        p.chunk_stored("s", "b", Lsn(12), 0, None);
        assert!(p.is_complete());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<SnapshotProgress>(&json).unwrap(), p);
    }
}
