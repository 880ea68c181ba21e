//! Replication commands on the walsender session: `IDENTIFY_SYSTEM` and the
//! logical slot commands, plus the slot name type.
//!
//! Invariants: a [`SlotName`] is what PostgreSQL accepts (1–63 of `a-z`,
//! `0-9`, `_`), so it is safe to write into a command unquoted; every other
//! name or value written into a command is quoted here, in one place.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::connection::{QueryResult, ReplicationConnection};
use super::error::ReplicationError;
use crate::lsn::Lsn;

/// PostgreSQL's limit on identifier length (NAMEDATALEN - 1).
const MAX_NAME_LEN: usize = 63;

/// Why a text is not a slot name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a valid replication slot name: use 1 to 63 lower-case letters, digits and underscores"
)]
pub struct SlotNameError(String);

/// A replication slot name, valid by construction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SlotName(String);

impl SlotName {
    pub fn new(name: impl Into<String>) -> Result<Self, SlotNameError> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(SlotName(name))
        } else {
            Err(SlotNameError(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SlotName {
    type Err = SlotNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SlotName::new(s)
    }
}

impl TryFrom<String> for SlotName {
    type Error = SlotNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SlotName::new(s)
    }
}

impl From<SlotName> for String {
    fn from(s: SlotName) -> String {
        s.0
    }
}

/// Quotes an SQL identifier: `"…"` with inner quotes doubled.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes a string literal for the replication grammar: `'…'` with inner
/// quotes doubled. (Backslashes are not special there.)
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's unique system identifier (from `initdb`).
    pub system_id: u64,
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database the session is connected to.
    pub dbname: Option<String>,
}

/// One line of a timeline history file: `timeline` ended at `switch_point`
/// (the first LSN of the next timeline; everything of `timeline` before it
/// is in the new timeline's history).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineSwitch {
    pub timeline: u32,
    pub switch_point: Lsn,
}

/// Parses a timeline history file (`<tli>\t<lsn>\t<reason>` lines; blank
/// lines and `#` comments ignored). `None` when a line is malformed.
pub fn parse_timeline_history(content: &str) -> Option<Vec<TimelineSwitch>> {
    let mut switches = Vec::new();
    for line in content.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let timeline = fields.next()?.parse().ok()?;
        let switch_point = fields.next()?.parse().ok()?;
        switches.push(TimelineSwitch {
            timeline,
            switch_point,
        });
    }
    Some(switches)
}

/// What `CREATE_REPLICATION_SLOT` does with the slot's snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SnapshotAction {
    /// Export it, for `SET TRANSACTION SNAPSHOT` on another session, until
    /// this session runs its next command (the default, as in PostgreSQL).
    #[default]
    Export,
    /// Make it this session's transaction snapshot (inside a transaction).
    Use,
    /// Don't make one.
    Nothing,
}

impl SnapshotAction {
    fn as_str(self) -> &'static str {
        match self {
            SnapshotAction::Export => "export",
            SnapshotAction::Use => "use",
            SnapshotAction::Nothing => "nothing",
        }
    }
}

/// Options of `CREATE_REPLICATION_SLOT`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreateSlotOptions {
    /// Dropped when the session ends (or on error).
    pub temporary: bool,
    pub snapshot: SnapshotAction,
    /// A failover slot (PostgreSQL 17+): physical standbys with
    /// `sync_replication_slots` keep a copy that survives a promotion.
    /// Never sent when false, so the command stays valid on older servers.
    pub failover: bool,
}

/// The answer to `CREATE_REPLICATION_SLOT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedSlot {
    pub slot_name: String,
    /// The first LSN the slot will stream from.
    pub consistent_point: Lsn,
    /// The exported snapshot's name, with [`SnapshotAction::Export`].
    pub snapshot_name: Option<String>,
    pub output_plugin: Option<String>,
}

impl ReplicationConnection {
    /// `IDENTIFY_SYSTEM`: which server and timeline this is, and its WAL end.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, ReplicationError> {
        let r = self.simple_query("IDENTIFY_SYSTEM").await?;
        let system_id = required(&r, "systemid", "IDENTIFY_SYSTEM")?;
        let timeline = required(&r, "timeline", "IDENTIFY_SYSTEM")?;
        let xlogpos = required(&r, "xlogpos", "IDENTIFY_SYSTEM")?;
        Ok(SystemIdentity {
            system_id: system_id
                .parse()
                .map_err(|_| bad_value("IDENTIFY_SYSTEM", "systemid", system_id))?,
            timeline: timeline
                .parse()
                .map_err(|_| bad_value("IDENTIFY_SYSTEM", "timeline", timeline))?,
            xlogpos: xlogpos
                .parse()
                .map_err(|_| bad_value("IDENTIFY_SYSTEM", "xlogpos", xlogpos))?,
            dbname: r.get("dbname").map(str::to_owned),
        })
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL pgoutput (SNAPSHOT …
    /// [, FAILOVER true])` (PostgreSQL 15 syntax; `FAILOVER` needs 17).
    pub async fn create_slot(
        &mut self,
        slot: &SlotName,
        options: CreateSlotOptions,
    ) -> Result<CreatedSlot, ReplicationError> {
        let command = format!(
            "CREATE_REPLICATION_SLOT {slot}{} LOGICAL pgoutput (SNAPSHOT {}{})",
            if options.temporary { " TEMPORARY" } else { "" },
            quote_literal(options.snapshot.as_str()),
            if options.failover {
                ", FAILOVER true"
            } else {
                ""
            },
        );
        let r = self.simple_query(&command).await?;
        let point = required(&r, "consistent_point", &command)?;
        Ok(CreatedSlot {
            slot_name: required(&r, "slot_name", &command)?.to_owned(),
            consistent_point: point
                .parse()
                .map_err(|_| bad_value(&command, "consistent_point", point))?,
            snapshot_name: r.get("snapshot_name").map(str::to_owned),
            output_plugin: r.get("output_plugin").map(str::to_owned),
        })
    }

    /// `ALTER_REPLICATION_SLOT name (FAILOVER true|false)` (PostgreSQL 17+).
    /// The server refuses while a walsender holds the slot.
    pub async fn alter_slot_failover(
        &mut self,
        slot: &SlotName,
        failover: bool,
    ) -> Result<(), ReplicationError> {
        let command = format!("ALTER_REPLICATION_SLOT {slot} (FAILOVER {failover})");
        self.simple_query(&command).await.map(drop)
    }

    /// `TIMELINE_HISTORY tli`: the history file of timeline `tli` (> 1),
    /// parsed into the switch points of the timelines before it.
    pub async fn timeline_history(
        &mut self,
        timeline: u32,
    ) -> Result<Vec<TimelineSwitch>, ReplicationError> {
        let command = format!("TIMELINE_HISTORY {timeline}");
        let r = self.simple_query(&command).await?;
        let content = required(&r, "content", &command)?;
        parse_timeline_history(content)
            .ok_or_else(|| bad_value(&command, "content", "(unparsable history file)"))
    }

    /// `DROP_REPLICATION_SLOT name [WAIT]`. With `wait`, waits for a slot
    /// held by another session to be released instead of failing.
    pub async fn drop_slot(&mut self, slot: &SlotName, wait: bool) -> Result<(), ReplicationError> {
        let command = format!(
            "DROP_REPLICATION_SLOT {slot}{}",
            if wait { " WAIT" } else { "" }
        );
        self.simple_query(&command).await.map(drop)
    }
}

fn required<'a>(
    r: &'a QueryResult,
    column: &str,
    command: &str,
) -> Result<&'a str, ReplicationError> {
    r.get(column)
        .ok_or_else(|| ReplicationError::Protocol(format!("`{command}` returned no `{column}`")))
}

fn bad_value(command: &str, column: &str, value: &str) -> ReplicationError {
    ReplicationError::Protocol(format!(
        "`{command}` returned `{value}` for `{column}`, which is not valid"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names() {
        assert!(SlotName::new("sluice_orders_1").is_ok());
        for bad in ["", "Upper", "with-dash", "a b", "é", &"x".repeat(64)] {
            let err = SlotName::new(bad).unwrap_err();
            assert!(
                err.to_string()
                    .contains("not a valid replication slot name")
            );
        }
        assert!(SlotName::new("x".repeat(63)).is_ok());
        let s: SlotName = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(s.as_str(), "abc");
        assert!(serde_json::from_str::<SlotName>("\"ABC\"").is_err());
    }

    #[test]
    fn timeline_histories() {
        let h = parse_timeline_history(
            "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore 2000-01-01\n",
        )
        .unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].timeline, 1);
        assert_eq!(h[0].switch_point, "0/3000158".parse().unwrap());
        assert_eq!(h[1].timeline, 2);
        assert!(parse_timeline_history("1\tnot-an-lsn\tx\n").is_none());
        assert!(parse_timeline_history("x 0/1").is_none());
        assert_eq!(parse_timeline_history("# c\n").unwrap(), vec![]);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("my\"pub"), "\"my\"\"pub\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b"), r"'a\b'");
    }
}
