//! The start-up decision: where streaming resumes, given the stored offset
//! O, the slot (its `confirmed_flush_lsn` S and `restart_lsn` R) and the
//! server (DESIGN.md §3).
//!
//! [`decide`] is a pure function of [`Inputs`]: it returns a [`Decision`]
//! (start position, whether to advance the slot, whether to move the
//! offset up, whether to create the slot) or a [`Refusal`]. [`apply`] reads
//! the real inputs (the offset store, `pg_replication_slots`,
//! `IDENTIFY_SYSTEM`), decides, and carries the decision out.
//!
//! Invariants, all enforced by [`decide`]:
//!
//! - the slot is only advanced forward (to O > S), and never in `manual`
//!   flush mode;
//! - the offset is only moved forward (up to S > O), and only by the
//!   strategies that trust the slot;
//! - an offset from another server, an offset ahead of the server's WAL end,
//!   and a missing slot while an offset exists are refused under every
//!   strategy; so is an offset whose WAL is gone (R > O) under
//!   `no-validation` and `trust-offset`;
//! - every refusal names both positions, the slot, the strategy and the
//!   command that resolves it;
//! - after a promotion with ghost changes accepted to be marked
//!   (`source.on-ghost-changes = "mark"`), the offset counts only up to
//!   the switch point: what it holds above is the old timeline's, and
//!   the new timeline's transactions there are new ([`Decision::ghosts`]).

mod apply;
mod refusal;
#[cfg(test)]
mod tests;
mod timeline;

use std::path::Path;

pub use apply::{
    Startup, StartupError, StartupSettings, apply, failover_wanted, read_history, read_slot,
    slot_from_json,
};
pub use refusal::Refusal;
pub use timeline::{TimelineChange, TimelineInputs, check_timeline};

use crate::config::{FlushMode, MismatchStrategy};
use crate::lsn::Lsn;
use crate::position::offset::OffsetRecord;
use crate::replication::{SlotName, SystemIdentity, TimelineSwitch, quote_literal};

/// The output plugin sluice decodes.
const PLUGIN: &str = "pgoutput";

/// A replication slot as `pg_replication_slots` shows it. The columns
/// newer servers added are `None` on older ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotState {
    /// The output plugin; `None` for a physical slot.
    pub plugin: Option<String>,
    /// The database of a logical slot.
    pub database: Option<String>,
    pub confirmed_flush_lsn: Option<Lsn>,
    pub restart_lsn: Option<Lsn>,
    /// A temporary slot (on a standby: a synced slot not yet sync-ready).
    pub temporary: bool,
    /// The walsender holding the slot.
    pub active_pid: Option<i32>,
    /// A failover slot (PostgreSQL 17+).
    pub failover: Option<bool>,
    /// Synced from the primary by a standby's slot sync (PostgreSQL 17+).
    pub synced: Option<bool>,
    /// Why the slot was invalidated (PostgreSQL 17+; `wal_removed`, …).
    pub invalidation_reason: Option<String>,
}

impl SlotState {
    /// S: `confirmed_flush_lsn`, or `restart_lsn` where it is NULL.
    pub fn position(&self) -> Option<Lsn> {
        self.confirmed_flush_lsn.or(self.restart_lsn)
    }
}

/// The server, as `IDENTIFY_SYSTEM` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    pub system_id: u64,
    pub timeline: u32,
    /// The current WAL end (IDENTIFY_SYSTEM's `xlogpos`, the flush
    /// position on a primary).
    pub wal_end: Lsn,
    /// The database the session is connected to.
    pub database: Option<String>,
}

impl From<&SystemIdentity> for ServerState {
    fn from(identity: &SystemIdentity) -> Self {
        ServerState {
            system_id: identity.system_id,
            timeline: identity.timeline,
            wal_end: identity.xlogpos,
            database: identity.dbname.clone(),
        }
    }
}

/// Everything the decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The manifest file, for the commands in refusals.
    pub manifest: &'a Path,
    /// The slot the manifest names.
    pub slot_name: &'a SlotName,
    pub strategy: MismatchStrategy,
    pub flush: FlushMode,
    /// Whether the manifest allows creating a missing slot.
    pub create_slot: bool,
    /// Whether the snapshot mode re-snapshots when the offset's WAL is gone.
    pub resnapshot: bool,
    /// Where the offset lives (for messages).
    pub store: &'a str,
    /// The stored offset O.
    pub offset: Option<&'a OffsetRecord>,
    /// The slot, `None` when it does not exist.
    pub slot: Option<&'a SlotState>,
    pub server: &'a ServerState,
    /// The history of the server's timeline, read when the offset comes
    /// from a lower timeline (a promotion since).
    pub history: Option<&'a [TimelineSwitch]>,
    /// `source.on-ghost-changes = "mark"`.
    pub mark_ghosts: bool,
}

/// Where streaming starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// `START_REPLICATION` at this LSN.
    At(Lsn),
    /// Create the slot, then start at its consistent point.
    CreateSlot,
    /// The offset's WAL is gone and the snapshot mode asks for a
    /// re-snapshot: snapshot the tables, then stream from the slot at this
    /// LSN.
    Resnapshot(Lsn),
}

/// What start-up does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub start: Start,
    /// `pg_replication_slot_advance(slot, lsn)` before starting.
    pub advance_slot_to: Option<Lsn>,
    /// Store the offset at this (higher) LSN before starting.
    pub move_offset_to: Option<Lsn>,
    /// What to log.
    pub notices: Vec<Notice>,
    /// The offset holds ghost changes, accepted to be marked: the
    /// promotion, with [`TimelineChange::ghost_end`] set. Streaming skips
    /// only what lies at or below the switch point.
    pub ghosts: Option<TimelineChange>,
}

impl Decision {
    fn start(start: Start) -> Self {
        Decision {
            start,
            advance_slot_to: None,
            move_offset_to: None,
            notices: Vec::new(),
            ghosts: None,
        }
    }

    /// Transactions whose commit ends at or below this were streamed: the
    /// stored offset `o`, or the switch point when what the offset holds
    /// above it are ghost changes.
    pub fn skip_through(&self, o: Lsn) -> Lsn {
        match &self.ghosts {
            Some(g) => o.min(g.switch_point),
            None => o,
        }
    }

    fn notice(mut self, level: NoticeLevel, message: String) -> Self {
        self.notices.push(Notice { level, message });
        self
    }
}

/// How loud a notice is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeLevel {
    Info,
    Warn,
}

/// A message start-up logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub level: NoticeLevel,
    pub message: String,
}

/// The strategy as the manifest spells it.
pub fn strategy_name(strategy: MismatchStrategy) -> &'static str {
    match strategy {
        MismatchStrategy::NoValidation => "no-validation",
        MismatchStrategy::TrustOffset => "trust-offset",
        MismatchStrategy::TrustSlot => "trust-slot",
        MismatchStrategy::TrustGreaterLsn => "trust-greater-lsn",
    }
}

/// Decides where streaming starts (DESIGN.md §3's table and checks).
pub fn decide(i: &Inputs<'_>) -> Result<Decision, Refusal> {
    let ctx = refusal::Context::new(i);
    let slot_position = i.slot.and_then(SlotState::position);

    if let Some(o) = i.offset {
        if &o.slot != i.slot_name {
            return Err(ctx.offset_for_other_slot(o, slot_position));
        }
        if o.system_id != i.server.system_id {
            return Err(ctx.other_server(o, slot_position, i.server.system_id));
        }
        if let Some(change) = check_timeline(&TimelineInputs {
            slot_name: i.slot_name,
            from: o.timeline,
            to: i.server.timeline,
            history: i.history,
            streamed_end: Some(o.commit_end_lsn),
            streamed_what: &format!("the stored offset in {}", i.store),
            slot: i.slot,
            mark_ghosts: i.mark_ghosts,
        })? {
            return decide_after_promotion(i, &ctx, o, change);
        }
        if o.commit_end_lsn > i.server.wal_end {
            return Err(ctx.offset_ahead_of_server(o, slot_position));
        }
    }

    let Some(slot) = i.slot else {
        return match i.offset {
            Some(o) => Err(ctx.slot_missing_with_offset(o)),
            None if i.create_slot => Ok(Decision::start(Start::CreateSlot)),
            None => Err(ctx.slot_missing()),
        };
    };
    if slot.plugin.as_deref() != Some(PLUGIN) {
        return Err(ctx.wrong_plugin(slot.plugin.clone()));
    }
    if let (Some(slot_db), Some(db)) = (&slot.database, &i.server.database)
        && slot_db != db
    {
        return Err(ctx.wrong_database(slot_db.clone(), db.clone()));
    }
    let (Some(s), Some(r)) = (slot_position, slot.restart_lsn) else {
        return Err(ctx.slot_invalidated(i.offset.map(|o| o.commit_end_lsn)));
    };

    let Some(o_record) = i.offset else {
        return Ok(Decision::start(Start::At(s)));
    };
    decide_ordering(i, &ctx, o_record.commit_end_lsn, s, r)
}

/// After a promotion that [`check_timeline`] accepted: the new primary's
/// slot (a synced copy) may lag behind the offset, and its WAL before the
/// switch point is the old primary's, so the usual table applies to the
/// slot's own position; the replay up to the offset is skipped.
fn decide_after_promotion(
    i: &Inputs<'_>,
    ctx: &refusal::Context<'_>,
    o: &OffsetRecord,
    change: TimelineChange,
) -> Result<Decision, Refusal> {
    let Some(slot) = i.slot else {
        return Err(ctx.slot_missing_with_offset(o));
    };
    if slot.plugin.as_deref() != Some(PLUGIN) {
        return Err(ctx.wrong_plugin(slot.plugin.clone()));
    }
    let (Some(s), Some(r)) = (slot.position(), slot.restart_lsn) else {
        return Err(ctx.slot_invalidated(Some(o.commit_end_lsn)));
    };
    if let Some(end) = change.ghost_end {
        // Only the common history up to the switch point counts as
        // streamed: the new timeline's transactions above it are new.
        let mut decision = decide_ordering(i, ctx, change.switch_point, s, r)?;
        decision.ghosts = Some(change);
        return Ok(decision.notice(
            NoticeLevel::Warn,
            format!(
                "ghost changes: the stored offset {end} is past the switch point {} where timeline {} ended when this server was promoted to timeline {}, so the changes between {} and {end} are in the stream but not on the promoted server (replication slot \"{}\"); source.on-ghost-changes = \"mark\": publishing a marker naming the range, then streaming the new timeline from {}",
                change.switch_point, change.from, change.to, change.switch_point, i.slot_name, change.switch_point
            ),
        ));
    }
    let decision = decide_ordering(i, ctx, o.commit_end_lsn, s, r)?;
    Ok(decision.notice(
        NoticeLevel::Warn,
        format!(
            "the server was promoted from timeline {} to {} at {} since the stored offset {} was written; replication slot \"{}\" survived the failover at {s}: continuing, transactions up to the offset are skipped",
            change.from, change.to, change.switch_point, o.commit_end_lsn, i.slot_name
        ),
    ))
}

/// The availability check and the strategy table, for an existing slot at
/// S (restart point R) and an offset at O from this server.
fn decide_ordering(
    i: &Inputs<'_>,
    ctx: &refusal::Context<'_>,
    o: Lsn,
    s: Lsn,
    r: Lsn,
) -> Result<Decision, Refusal> {
    use MismatchStrategy::*;
    let slot = i.slot_name;

    let checks_availability = matches!(i.strategy, NoValidation | TrustOffset);
    if checks_availability && r > o {
        if i.resnapshot {
            return Ok(Decision::start(Start::Resnapshot(s)).notice(
                NoticeLevel::Warn,
                format!(
                    "the WAL that the stored offset {o} needs is gone (slot \"{slot}\" keeps WAL from {r}): re-snapshotting, then streaming from {s}"
                ),
            ));
        }
        return Err(ctx.wal_gone(o, s, r));
    }

    if o == s {
        return Ok(Decision::start(Start::At(o)));
    }
    if o < s {
        return match i.strategy {
            NoValidation => Ok(Decision::start(Start::At(s)).notice(
                NoticeLevel::Info,
                format!(
                    "replication slot \"{slot}\" is at {s}, ahead of the stored offset {o}: the server resumes at {s} (position.mismatch = \"no-validation\")"
                ),
            )),
            TrustOffset => Err(ctx.slot_ahead(o, s)),
            TrustSlot | TrustGreaterLsn => {
                let mut d = Decision::start(Start::At(s)).notice(
                    NoticeLevel::Warn,
                    format!(
                        "replication slot \"{slot}\" is at {s}, ahead of the stored offset {o}: moving the offset up to {s} (position.mismatch = \"{}\"); transactions committed between {o} and {s} are not streamed again",
                        strategy_name(i.strategy)
                    ),
                );
                d.move_offset_to = Some(s);
                Ok(d)
            }
        };
    }
    // The offset is ahead of the slot.
    match i.strategy {
        NoValidation | TrustSlot => Ok(Decision::start(Start::At(o)).notice(
            NoticeLevel::Info,
            format!(
                "the stored offset {o} is ahead of replication slot \"{slot}\" at {s}: starting at {o}, slot untouched (position.mismatch = \"{}\")",
                strategy_name(i.strategy)
            ),
        )),
        TrustOffset | TrustGreaterLsn if i.flush == FlushMode::Manual => {
            Ok(Decision::start(Start::At(o)).notice(
                NoticeLevel::Warn,
                format!(
                    "the stored offset {o} is ahead of replication slot \"{slot}\" at {s}; position.flush = \"manual\", so the slot is not advanced: advance it with `sluice slot advance {} {o}` or `SELECT pg_replication_slot_advance({}, '{o}');`",
                    i.manifest.display(),
                    quote_literal(slot.as_str())
                ),
            ))
        }
        TrustOffset | TrustGreaterLsn => {
            let mut d = Decision::start(Start::At(o)).notice(
                NoticeLevel::Info,
                format!(
                    "the stored offset {o} is ahead of replication slot \"{slot}\" at {s}: advancing the slot to {o} (position.mismatch = \"{}\")",
                    strategy_name(i.strategy)
                ),
            );
            d.advance_slot_to = Some(o);
            Ok(d)
        }
    }
}
