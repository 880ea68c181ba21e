//! The offset record: the durable statement "everything up to this commit
//! has been acknowledged by JetStream" (DESIGN.md §3).
//!
//! Its position is the end LSN of the commit record of the last fully
//! acknowledged transaction: commit LSNs are the only LSNs ordered across
//! transactions, so stores compare records by it alone. The record also
//! says which server and timeline it came from, so that start-up can refuse
//! an offset that belongs to another cluster.
//!
//! On disk and in NATS KV the record is JSON. LSNs are written in
//! PostgreSQL's `X/Y` form and the system identifier as a decimal string
//! (it exceeds 2^53, which JSON tools such as `jq` would round). A
//! `version` field guards the format: a record from a newer sluice is
//! refused by name rather than misread. Version 2 added the optional
//! `snapshot` progress, version 3 the optional `backfills` (on-demand
//! backfills asked for and not finished, the first one with the key its
//! acknowledged chunks reached); records of versions 1 and 2 (without
//! them) are still read.
//!
//! Like the position, the snapshot and backfill progress only ever states
//! what JetStream acknowledged: a backfill request enters the record with
//! the acknowledgement of the transaction that carried it (so a record at
//! or past that transaction always holds it, and a record before it lets
//! the slot replay it), and its key moves with the acknowledgement of its
//! chunks.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::progress::{BackfillProgress, SnapshotProgress};
use crate::lsn::Lsn;
use crate::replication::SlotName;

/// The format version this host writes.
const VERSION: u32 = 3;
/// The oldest format version this host reads.
const OLDEST_VERSION: u32 = 1;

/// Why bytes are not an offset record.
#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error("not an offset record: {0}")]
    Malformed(serde_json::Error),
    #[error(
        "offset record format version {found} is not supported by this sluice (it reads versions {OLDEST_VERSION} to {VERSION}); it was written by a newer sluice"
    )]
    UnsupportedVersion { found: u64 },
}

/// One stored offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetRecord {
    /// The replication slot the position belongs to.
    pub slot: SlotName,
    /// The stored offset O: end LSN of the last acknowledged commit (or a
    /// keepalive's WAL end, or the slot position it was moved up to).
    pub commit_end_lsn: Lsn,
    /// The LSN of the last event processed within that transaction, when
    /// the offset was written for a transaction.
    #[serde(default)]
    pub event_lsn: Option<Lsn>,
    /// The transaction's id, when the offset was written for a transaction.
    #[serde(default)]
    pub xid: Option<u32>,
    /// The transaction's commit time, microseconds since the Unix epoch.
    #[serde(default)]
    pub commit_time_us: Option<i64>,
    /// The system identifier of the server the position came from.
    #[serde(with = "decimal_string")]
    pub system_id: u64,
    /// The server's timeline when the position was read.
    pub timeline: u32,
    /// When the record was written, microseconds since the Unix epoch.
    pub written_at_us: i64,
    /// The progress of the pipeline's snapshot, when it has taken one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
    /// Backfills asked for and not finished, in the order they run: the
    /// first may be under way (its `after` key says how far).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backfills: Vec<BackfillProgress>,
}

impl OffsetRecord {
    /// For tests: slot `orders` at `lsn` on server 42, timeline 1.
    #[cfg(test)]
    pub(crate) fn test_at(lsn: u64) -> Self {
        OffsetRecord::new(SlotName::new("orders").unwrap(), Lsn(lsn), 42, 1)
    }

    /// A record for position `commit_end_lsn` of `slot` on the server
    /// `system_id`/`timeline`, with no transaction details, written now.
    pub fn new(slot: SlotName, commit_end_lsn: Lsn, system_id: u64, timeline: u32) -> Self {
        OffsetRecord {
            slot,
            commit_end_lsn,
            event_lsn: None,
            xid: None,
            commit_time_us: None,
            system_id,
            timeline,
            written_at_us: now_us(),
            snapshot: None,
            backfills: Vec::new(),
        }
    }

    /// The same record, carrying `snapshot` progress.
    pub fn with_snapshot(mut self, snapshot: Option<SnapshotProgress>) -> Self {
        self.snapshot = snapshot;
        self
    }

    /// The same record, carrying the unfinished `backfills`.
    pub fn with_backfills(mut self, backfills: Vec<BackfillProgress>) -> Self {
        self.backfills = backfills;
        self
    }

    /// The same record, for the transaction `xid` committed at
    /// `commit_time_us` whose last processed event is at `event_lsn`.
    pub fn with_transaction(mut self, xid: u32, event_lsn: Lsn, commit_time_us: i64) -> Self {
        self.xid = Some(xid);
        self.event_lsn = Some(event_lsn);
        self.commit_time_us = Some(commit_time_us);
        self
    }

    /// The same record moved to `lsn`, without transaction details (they
    /// describe the old position), written now.
    pub fn moved_to(&self, lsn: Lsn) -> Self {
        OffsetRecord::new(self.slot.clone(), lsn, self.system_id, self.timeline)
            .with_snapshot(self.snapshot.clone())
            .with_backfills(self.backfills.clone())
    }

    /// The record as JSON, with `written_at_us` set to now.
    pub fn encode(&self) -> Vec<u8> {
        let stamped = OffsetRecord {
            written_at_us: now_us(),
            ..self.clone()
        };
        let mut value = serde_json::to_value(&stamped).expect("an offset record is plain data");
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("version".into(), VERSION.into());
        }
        let mut bytes = serde_json::to_vec_pretty(&value).expect("a JSON value serialises");
        bytes.push(b'\n');
        bytes
    }

    /// Reads a record written by [`Self::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, OffsetError> {
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(OffsetError::Malformed)?;
        // The version is checked before the fields, so that a newer format
        // is reported as such rather than as an unknown field.
        let version = value
            .as_object_mut()
            .and_then(|map| map.remove("version"))
            .and_then(|v| v.as_u64());
        match version {
            Some(v) if (u64::from(OLDEST_VERSION)..=u64::from(VERSION)).contains(&v) => {}
            Some(found) => return Err(OffsetError::UnsupportedVersion { found }),
            None => {
                return Err(OffsetError::Malformed(serde::de::Error::missing_field(
                    "version",
                )));
            }
        }
        serde_json::from_value(value).map_err(OffsetError::Malformed)
    }
}

/// Microseconds since the Unix epoch; 0 for a clock set before 1970.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A `u64` as a decimal JSON string.
mod decimal_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a system identifier")))
    }
}

#[cfg(test)]
mod tests;
