//! What the manifest says about snapshots, in the snapshot module's own
//! types: when one is taken ([`SnapshotMode`], `source.snapshot`) and how
//! tables are read ([`SnapshotSettings`], `[snapshot]`). The ranges are
//! checked where the manifest is parsed (`config`): a chunk holds 1 to
//! 1 000 000 rows, 1 to 64 tables are copied at once.

/// `source.snapshot`: when the existing rows of the published tables are
/// read into the stream as `read` events (see the module `crate::snapshot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Never: only changes are streamed (the default, and the behaviour of
    /// pipelines written before snapshots existed).
    Never,
    /// When the slot is created, then stream.
    Initial,
    /// As `initial`, and also when the stored offset's WAL is gone.
    WhenNeeded,
    /// Snapshot when the slot is created, then exit without streaming.
    InitialOnly,
}

impl SnapshotMode {
    /// The mode as the manifest spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Never => "never",
            SnapshotMode::Initial => "initial",
            SnapshotMode::WhenNeeded => "when-needed",
            SnapshotMode::InitialOnly => "initial-only",
        }
    }

    /// Whether a new slot is followed by a snapshot.
    pub fn on_new_slot(self) -> bool {
        self != SnapshotMode::Never
    }
}

/// `[snapshot]`: how snapshots and backfills read tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// Rows per chunk (one keyset-paginated SELECT, one batch of events).
    pub chunk_rows: usize,
    /// Tables copied at the same time, each on its own connection.
    pub parallel_tables: usize,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            chunk_rows: 10_000,
            parallel_tables: 2,
        }
    }
}
