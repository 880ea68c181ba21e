//! Carrying the start-up decision out against the real server: read the
//! offset, the slot and the server's identity, [`decide`](super::decide),
//! then advance the slot, move the offset or create the slot as decided.
//!
//! Order matters for crash safety: the slot is advanced before streaming
//! starts and the offset is moved before streaming starts, so a crash in
//! between leaves a state that the next start-up resolves the same way
//! (the advance or the move is simply found done).
//!
//! On a standby (decoding from a standby, PostgreSQL 16+) the slot is
//! created there by [`standby::create_slot`], which gets the primary to
//! log what the creation waits for, and it is never a failover slot.

use std::path::PathBuf;

use tokio_postgres::Client;

use super::{Decision, Inputs, NoticeLevel, Refusal, ServerState, SlotState, Start, decide};
use crate::config::{FlushMode, Manifest, MismatchStrategy, SnapshotMode};
use crate::lsn::Lsn;
use crate::position::history::Timelines;
use crate::position::offset::OffsetRecord;
use crate::position::store::{OffsetStore, StoreError};
use crate::replication::{
    CreateSlotOptions, CreatedSlot, ReplicationConnection, ReplicationError, SlotName,
    SnapshotAction, SqlError, SystemIdentity, TimelineSwitch, major_version, standby,
};

/// The manifest's part in the decision.
#[derive(Clone, Debug)]
pub struct StartupSettings {
    /// The manifest file, named in the commands that refusals suggest.
    pub manifest: PathBuf,
    pub slot: SlotName,
    pub strategy: MismatchStrategy,
    pub flush: FlushMode,
    pub create_slot: bool,
    /// Whether the snapshot mode re-snapshots when the offset's WAL is gone
    /// (`when-needed`).
    pub resnapshot: bool,
    /// Whether a slot created now exports its snapshot, for the initial
    /// snapshot to read the tables under (every mode but `never`).
    pub export_snapshot: bool,
    /// `source.failover` (see [`failover_wanted`]).
    pub failover: Option<bool>,
    /// `source.on-ghost-changes = "mark"`.
    pub mark_ghosts: bool,
}

impl StartupSettings {
    pub fn from_manifest(m: &Manifest) -> Self {
        StartupSettings {
            manifest: m.file.clone(),
            slot: m.source.slot.clone(),
            strategy: m.position.mismatch,
            flush: m.position.flush,
            create_slot: m.source.create_slot,
            resnapshot: m.source.snapshot == SnapshotMode::WhenNeeded,
            export_snapshot: m.source.snapshot.on_new_slot(),
            failover: m.source.failover,
            mark_ghosts: m.source.on_ghost_changes.marks(),
        }
    }
}

/// What start-up did, and where streaming starts.
#[derive(Clone, Debug)]
pub struct Startup {
    /// The LSN to pass to `START_REPLICATION`.
    pub start: Lsn,
    /// The server, as `IDENTIFY_SYSTEM` described it.
    pub server: SystemIdentity,
    /// The stored offset after start-up: transactions whose commit end LSN
    /// is at or below it were already streamed.
    pub offset: Option<OffsetRecord>,
    /// The slot, when start-up created it.
    pub created_slot: Option<CreatedSlot>,
    /// The tables must be snapshotted before streaming (see
    /// [`Start::Resnapshot`]).
    pub resnapshot: bool,
    /// The decision that was carried out.
    pub decision: Decision,
    /// Which timeline wrote what, for message ids (qualified only with
    /// `source.on-ghost-changes = "mark"`).
    pub timelines: Timelines,
}

impl Startup {
    /// Transactions whose commit ends at or below this were streamed
    /// (`0/0`: none); see [`Decision::skip_through`].
    pub fn skip_through(&self) -> Lsn {
        self.offset
            .as_ref()
            .map_or(Lsn::ZERO, |o| self.decision.skip_through(o.commit_end_lsn))
    }
}

/// Why start-up did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Boxed: a refusal carries every position and name it reports.
    #[error(transparent)]
    Refused(Box<Refusal>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("replication slot \"{slot}\" has {column} `{value}`, which is not an LSN")]
    BadSlotRow {
        slot: SlotName,
        column: &'static str,
        value: String,
    },
    #[error(
        "source.failover = true, but the server is PostgreSQL {version}: failover slots need PostgreSQL 17 or later; remove source.failover (or set it to false), or upgrade the server"
    )]
    FailoverUnsupported { version: String },
    #[error(
        "source.failover = true, but source.url resolves to the standby {standby}, where sluice decodes: PostgreSQL makes failover slots only on a primary; remove source.failover (a slot on a standby survives that standby's own promotion), or point source.url at the primary"
    )]
    FailoverOnStandby { standby: String },
    #[error(
        "advancing replication slot \"{slot}\" to {target} stopped at {reached}: the server has not flushed WAL up to {target}; start again once it has"
    )]
    AdvanceFellShort {
        slot: SlotName,
        target: Lsn,
        reached: Lsn,
    },
}

impl StartupError {
    /// Whether starting again later may succeed: the server could not be
    /// reached or went away mid-way. Refusals and bad settings stay.
    pub fn is_transient(&self) -> bool {
        match self {
            StartupError::Replication(e) => e.is_transient(),
            StartupError::Sql(e) => e.is_transient(),
            StartupError::Store(e) => e.is_transient(),
            StartupError::Refused(_)
            | StartupError::BadSlotRow { .. }
            | StartupError::FailoverUnsupported { .. }
            | StartupError::FailoverOnStandby { .. }
            | StartupError::AdvanceFellShort { .. } => false,
        }
    }
}

impl From<Refusal> for StartupError {
    fn from(r: Refusal) -> Self {
        StartupError::Refused(Box::new(r))
    }
}

fn sql_error(during: String) -> impl FnOnce(tokio_postgres::Error) -> StartupError {
    SqlError::during(during)
}

/// Reads `slot` from `pg_replication_slots`; `None` when it does not exist.
/// The row is read as JSON so that one query serves every server version
/// (PostgreSQL 16 and 17 added columns).
pub async fn read_slot(sql: &Client, slot: &SlotName) -> Result<Option<SlotState>, StartupError> {
    let row = sql
        .query_opt(
            "SELECT to_jsonb(s)::text FROM pg_replication_slots s WHERE slot_name = $1",
            &[&slot.as_str()],
        )
        .await
        .map_err(sql_error(format!(
            "cannot read replication slot \"{slot}\""
        )))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let text: String = row.get(0);
    slot_from_json(slot, &text).map(Some)
}

/// A `pg_replication_slots` row as `to_jsonb` gives it.
pub fn slot_from_json(slot: &SlotName, text: &str) -> Result<SlotState, StartupError> {
    let bad = |column: &'static str, value: String| StartupError::BadSlotRow {
        slot: slot.clone(),
        column,
        value,
    };
    let row: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|_| bad("(row)", text.to_owned()))?;
    let text_of = |column: &str| row.get(column).and_then(|v| v.as_str()).map(str::to_owned);
    let flag = |column: &str| row.get(column).and_then(serde_json::Value::as_bool);
    let lsn = |column: &'static str| -> Result<Option<Lsn>, StartupError> {
        text_of(column)
            .map(|t| t.parse().map_err(|_| bad(column, t)))
            .transpose()
    };
    Ok(SlotState {
        plugin: text_of("plugin"),
        database: text_of("database"),
        confirmed_flush_lsn: lsn("confirmed_flush_lsn")?,
        restart_lsn: lsn("restart_lsn")?,
        temporary: flag("temporary").unwrap_or(false),
        active_pid: row
            .get("active_pid")
            .and_then(serde_json::Value::as_i64)
            .and_then(|p| i32::try_from(p).ok()),
        failover: flag("failover"),
        synced: flag("synced"),
        invalidation_reason: text_of("invalidation_reason"),
    })
}

/// Reads the history of `identity`'s timeline when `offset` comes from a
/// lower one (a promotion since): the failover decision needs its switch
/// points. With `mark_ghosts`, also on any timeline above 1: message ids
/// name the timeline that wrote each change
/// ([`crate::position::history`]).
pub async fn read_history(
    repl: &mut ReplicationConnection,
    identity: &SystemIdentity,
    offset: Option<&OffsetRecord>,
    mark_ghosts: bool,
) -> Result<Option<Vec<TimelineSwitch>>, StartupError> {
    let promoted = offset.is_some_and(|o| o.timeline < identity.timeline);
    if identity.timeline > 1 && (promoted || mark_ghosts) {
        Ok(Some(repl.timeline_history(identity.timeline).await?))
    } else {
        Ok(None)
    }
}

/// Whether the slot is to be a failover slot: `source.failover`, or by
/// default on PostgreSQL 17+. Explicitly asking for it below 17 is an
/// error naming the version.
pub fn failover_wanted(
    wanted: Option<bool>,
    server_version: Option<&str>,
) -> Result<bool, StartupError> {
    let major = server_version.and_then(major_version);
    let supported = major.is_some_and(|m| m >= 17);
    match wanted {
        None => Ok(supported),
        Some(true) if !supported => Err(StartupError::FailoverUnsupported {
            version: server_version.unwrap_or("unknown").to_owned(),
        }),
        Some(w) => Ok(w),
    }
}

/// Whether the slot is to be a failover slot when the replication session
/// is on a standby: never, since PostgreSQL makes failover slots only on a
/// primary; asking for one explicitly is an error naming the standby.
fn failover_on_standby(
    wanted: Option<bool>,
    repl: &ReplicationConnection,
) -> Result<bool, StartupError> {
    if wanted == Some(true) {
        return Err(StartupError::FailoverOnStandby {
            standby: repl.conninfo().target(),
        });
    }
    Ok(standby::failover_possible(true))
}

/// Makes an existing slot a failover slot (`ALTER_REPLICATION_SLOT`) when
/// it is not one yet and no walsender holds it; warns otherwise.
async fn ensure_failover(
    repl: &mut ReplicationConnection,
    slot: &SlotName,
    state: &SlotState,
) -> Result<(), StartupError> {
    if state.failover != Some(false) {
        return Ok(());
    }
    if let Some(pid) = state.active_pid {
        tracing::warn!(slot = %slot, pid,
            "replication slot is not a failover slot and process {pid} holds it, so it cannot be altered now: stop that consumer and start again, or run `ALTER_REPLICATION_SLOT {slot} (FAILOVER true)` on a replication connection");
        return Ok(());
    }
    repl.alter_slot_failover(slot, true).await?;
    tracing::info!(slot = %slot, "made the replication slot a failover slot");
    Ok(())
}

/// Reads the offset, the slot and the server, decides where streaming
/// starts, and carries the decision out: `repl` is the replication session
/// (its `IDENTIFY_SYSTEM` gives the server's identity and WAL end; it
/// creates the slot), `sql` an ordinary session on the same database.
pub async fn apply(
    settings: &StartupSettings,
    repl: &mut ReplicationConnection,
    sql: &Client,
    store: &mut dyn OffsetStore,
) -> Result<Startup, StartupError> {
    let on_standby = standby::is_standby(repl).await?;
    let failover = if on_standby {
        failover_on_standby(settings.failover, repl)?
    } else {
        failover_wanted(settings.failover, repl.server_version())?
    };
    let identity = repl.identify_system().await?;
    let offset = store.load().await?;
    let slot_state = read_slot(sql, &settings.slot).await?;
    let history = read_history(repl, &identity, offset.as_ref(), settings.mark_ghosts).await?;
    let server = ServerState::from(&identity);
    let store_name = store.describe();
    let decision = decide(&Inputs {
        manifest: &settings.manifest,
        slot_name: &settings.slot,
        strategy: settings.strategy,
        flush: settings.flush,
        create_slot: settings.create_slot,
        resnapshot: settings.resnapshot,
        store: &store_name,
        offset: offset.as_ref(),
        slot: slot_state.as_ref(),
        server: &server,
        history: history.as_deref(),
        mark_ghosts: settings.mark_ghosts,
    })?;
    let slot = &settings.slot;
    for notice in &decision.notices {
        match notice.level {
            NoticeLevel::Info => tracing::info!(slot = %slot, "{}", notice.message),
            NoticeLevel::Warn => tracing::warn!(slot = %slot, "{}", notice.message),
        }
    }

    if let (true, Some(state)) = (failover, &slot_state) {
        ensure_failover(repl, slot, state).await?;
    }
    if let Some(target) = decision.advance_slot_to {
        advance_slot(sql, slot, target).await?;
    }
    let mut offset = offset;
    if let (Some(to), Some(record)) = (decision.move_offset_to, &offset) {
        let moved = record.moved_to(to);
        store.store(&moved).await?;
        offset = Some(moved);
    }
    let (start, created_slot, resnapshot) = match decision.start {
        Start::At(lsn) => (lsn, None, false),
        Start::Resnapshot(lsn) => (lsn, None, true),
        Start::CreateSlot => {
            // With a snapshot mode, the slot exports its snapshot: the
            // initial snapshot reads the tables under it, and it lives only
            // until this session's next command, so the caller keeps `repl`
            // open until the readers imported it. The slot streams from its
            // consistent point.
            let options = CreateSlotOptions {
                temporary: false,
                snapshot: if settings.export_snapshot {
                    SnapshotAction::Export
                } else {
                    SnapshotAction::Nothing
                },
                failover,
            };
            let created = standby::create_slot(repl, slot, options).await?;
            tracing::info!(slot = %slot, lsn = %created.consistent_point, "created the replication slot");
            (created.consistent_point, Some(created), false)
        }
    };
    tracing::info!(slot = %slot, lsn = %start, "streaming starts");
    let timelines = if settings.mark_ghosts {
        Timelines::marked(identity.timeline, history.unwrap_or_default().into())
    } else {
        Timelines::unqualified()
    };
    Ok(Startup {
        start,
        server: identity,
        offset,
        created_slot,
        resnapshot,
        decision,
        timelines,
    })
}

/// `pg_replication_slot_advance(slot, target)`, checking that the slot
/// reached `target` (the server silently stops at its flush position).
async fn advance_slot(sql: &Client, slot: &SlotName, target: Lsn) -> Result<(), StartupError> {
    let row = sql
        .query_one(
            "SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&slot.as_str(), &target.to_string()],
        )
        .await
        .map_err(sql_error(format!(
            "cannot advance replication slot \"{slot}\" to {target}"
        )))?;
    let text: String = row.get(0);
    let reached: Lsn = text.parse().map_err(|_| StartupError::BadSlotRow {
        slot: slot.clone(),
        column: "end_lsn",
        value: text,
    })?;
    if reached < target {
        return Err(StartupError::AdvanceFellShort {
            slot: slot.clone(),
            target,
            reached,
        });
    }
    tracing::info!(slot = %slot, lsn = %reached, "advanced the replication slot");
    Ok(())
}
