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
mod tests {
    use super::*;

    fn record() -> OffsetRecord {
        OffsetRecord::new(
            SlotName::new("orders").unwrap(),
            "1/16B3748".parse().unwrap(),
            7_312_345_678_901_234_567,
            3,
        )
        .with_transaction(745, "1/16B3700".parse().unwrap(), 1_700_000_000_000_000)
    }

    #[test]
    fn round_trips_as_readable_json() {
        let r = record();
        let bytes = r.encode();
        let text = std::str::from_utf8(&bytes).unwrap();
        for field in [
            r#""version": 3"#,
            r#""slot": "orders""#,
            r#""commit_end_lsn": "1/16B3748""#,
            r#""event_lsn": "1/16B3700""#,
            r#""xid": 745"#,
            r#""system_id": "7312345678901234567""#,
            r#""timeline": 3"#,
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        let back = OffsetRecord::decode(&bytes).unwrap();
        assert_eq!(
            back,
            OffsetRecord {
                written_at_us: back.written_at_us,
                ..r
            }
        );
        assert!(back.written_at_us > 0);
    }

    #[test]
    fn reads_version_1_and_carries_snapshot_progress() {
        let v1 = String::from_utf8(record().encode())
            .unwrap()
            .replace(r#""version": 3"#, r#""version": 1"#);
        let back = OffsetRecord::decode(v1.as_bytes()).unwrap();
        assert_eq!(back.snapshot, None);
        let progress = crate::position::SnapshotProgress {
            tables: vec![crate::position::TableProgress::new("public", "orders")],
        };
        let with = record().with_snapshot(Some(progress.clone()));
        let text = String::from_utf8(with.encode()).unwrap();
        assert!(text.contains(r#""table": "orders""#), "{text}");
        let back = OffsetRecord::decode(text.as_bytes()).unwrap();
        assert_eq!(back.snapshot, Some(progress.clone()));
        assert_eq!(back.moved_to(Lsn(1)).snapshot, Some(progress));
    }

    #[test]
    fn reads_version_2_and_carries_backfills() {
        // A version 2 record, as sluice wrote it before backfills resumed.
        let v2 = r#"{
  "version": 2,
  "slot": "orders",
  "commit_end_lsn": "1/16B3748",
  "event_lsn": null,
  "xid": null,
  "commit_time_us": null,
  "system_id": "7312345678901234567",
  "timeline": 3,
  "written_at_us": 1700000000000000,
  "snapshot": {"tables": [{"schema": "public", "table": "orders", "point": "1/10", "after": ["7"], "rows": 7, "done": false}]}
}"#;
        let back = OffsetRecord::decode(v2.as_bytes()).unwrap();
        assert_eq!(back.backfills, []);
        assert_eq!(
            back.snapshot.unwrap().tables[0].after,
            Some(vec!["7".into()])
        );
        let text = String::from_utf8(record().encode()).unwrap();
        assert!(!text.contains("backfills"), "nothing to say: {text}");

        let running = BackfillProgress {
            after: Some(vec!["42".into(), "it's".into()]),
            rows: 42,
            ..BackfillProgress::new(Lsn(0x16B3000), "s.items", Some("id > 5".into()))
        };
        let queued = BackfillProgress::new(Lsn(0x16B3100), "orders", None);
        let with = record().with_backfills(vec![running.clone(), queued.clone()]);
        let text = String::from_utf8(with.encode()).unwrap();
        for field in [
            r#""request_lsn": "0/16B3000""#,
            r#""table": "s.items""#,
            r#""where": "id > 5""#,
            r#""after": ["#,
            r#""rows": 42"#,
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        let back = OffsetRecord::decode(text.as_bytes()).unwrap();
        assert_eq!(back.backfills, [running.clone(), queued.clone()]);
        assert_eq!(back.moved_to(Lsn(1)).backfills, [running, queued]);
    }

    #[test]
    fn refuses_malformed_and_newer_records() {
        let err = OffsetRecord::decode(b"{\"version\": 4, \"future\": true}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "offset record format version 4 is not supported by this sluice (it reads versions 1 to 3); it was written by a newer sluice"
        );
        for bad in [
            &b""[..],
            b"{}",
            b"[1]",
            b"{\"version\": 1}",
            b"{\"version\": 1, \"slot\": \"BAD\"}",
        ] {
            let err = OffsetRecord::decode(bad).unwrap_err();
            assert!(matches!(err, OffsetError::Malformed(_)), "{err}");
        }
        let mut text = String::from_utf8(record().encode()).unwrap();
        text = text.replace("\"timeline\"", "\"timelime\"");
        let err = OffsetRecord::decode(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("timelime"), "{err}");
    }
}
