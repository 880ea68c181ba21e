//! The failover decision: what a server on another timeline than the one
//! the stream's position came from means for the stream (DESIGN.md §3,
//! "Failover").
//!
//! A promoted standby has the same system identifier and a higher
//! timeline. Its timeline history names the switch point: the LSN where
//! the old timeline ends in the new server's history. Everything the old
//! primary wrote before it is also on the new primary; everything after it
//! is not. So:
//!
//! - the newest change already in the stream ends at or below the switch
//!   point, and the slot survived the promotion (it exists, is not
//!   temporary, is not invalidated): streaming resumes; the replay of what
//!   the synced slot lags behind is skipped by the caller;
//! - it ends above the switch point: the stream holds changes the new
//!   primary never had ("ghost changes"): refuse, naming the range — or,
//!   with `source.on-ghost-changes = "mark"` and the slot there, continue,
//!   returning the range ([`TimelineChange::ghost_end`]) for the caller to
//!   mark in the stream and to resume from the switch point (the slot
//!   checks below apply all the same);
//! - the slot is missing, temporary (synced but not yet sync-ready) or
//!   invalidated: refuse, naming the cause;
//! - a lower timeline, or a history that does not contain the old
//!   timeline: refuse (a restored backup or another branch of history).
//!
//! [`check_timeline`] is pure: the start-up decision and the reader's
//! reconnect both call it, each with what it knows as "the newest change
//! in the stream" (the stored offset; the newest transaction delivered).

use super::{Refusal, SlotState};
use crate::lsn::Lsn;
use crate::replication::{SlotName, TimelineSwitch};

/// What is known when the server's timeline differs from the stream's.
#[derive(Clone, Copy, Debug)]
pub struct TimelineInputs<'a> {
    pub slot_name: &'a SlotName,
    /// The timeline the stream's position was read on.
    pub from: u32,
    /// The server's timeline now.
    pub to: u32,
    /// The history of timeline `to` (`TIMELINE_HISTORY`); `None` when it
    /// was not read (only needed when `to > from`).
    pub history: Option<&'a [TimelineSwitch]>,
    /// The end LSN of the newest change in the stream (a transaction's
    /// commit record end); `None` when nothing was streamed.
    pub streamed_end: Option<Lsn>,
    /// What `streamed_end` is, for messages ("the stored offset …").
    pub streamed_what: &'a str,
    /// The slot on the new server; `None` when it does not exist.
    pub slot: Option<&'a SlotState>,
    /// `source.on-ghost-changes = "mark"`: accept ghost changes.
    pub mark_ghosts: bool,
}

/// A promotion that streaming can continue across.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineChange {
    pub from: u32,
    pub to: u32,
    /// Where timeline `from` ends in the new server's history.
    pub switch_point: Lsn,
    /// Set when the stream holds ghost changes, accepted to be marked:
    /// they lie between `switch_point` and this end.
    pub ghost_end: Option<Lsn>,
}

/// `Ok(None)`: same timeline. `Ok(Some(change))`: a promotion that
/// streaming may continue across. `Err`: see the module documentation.
pub fn check_timeline(i: &TimelineInputs<'_>) -> Result<Option<TimelineChange>, Refusal> {
    if i.to == i.from {
        return Ok(None);
    }
    let slot = i.slot_name.clone();
    if i.to < i.from {
        return Err(Refusal::LowerTimeline {
            slot,
            stream_timeline: i.from,
            server_timeline: i.to,
        });
    }
    let switch_point = i
        .history
        .unwrap_or_default()
        .iter()
        .find(|s| s.timeline == i.from)
        .map(|s| s.switch_point)
        .ok_or(Refusal::TimelineNotInHistory {
            slot: slot.clone(),
            stream_timeline: i.from,
            server_timeline: i.to,
        })?;
    let ghost_end = i.streamed_end.filter(|&end| end > switch_point);
    if let Some(end) = ghost_end
        && !i.mark_ghosts
    {
        return Err(Refusal::GhostChanges {
            slot,
            what: i.streamed_what.to_owned(),
            from: i.from,
            to: i.to,
            switch_point,
            streamed_end: end,
        });
    }
    let Some(state) = i.slot else {
        return Err(Refusal::SlotLostInFailover {
            slot,
            to: i.to,
            reason: "does not exist on the promoted server (it was not a failover slot, or not synced to this standby)".to_owned(),
        });
    };
    if state.temporary {
        return Err(Refusal::SlotLostInFailover {
            slot,
            to: i.to,
            reason: "is only a temporary synced copy on the promoted server (the standby had not caught up with it: it was not sync-ready)".to_owned(),
        });
    }
    if let Some(reason) = &state.invalidation_reason {
        return Err(Refusal::SlotLostInFailover {
            slot,
            to: i.to,
            reason: format!("was invalidated on the promoted server ({reason})"),
        });
    }
    if state.position().is_none() || state.restart_lsn.is_none() {
        return Err(Refusal::SlotLostInFailover {
            slot,
            to: i.to,
            reason: "has no position on the promoted server (restart_lsn is NULL)".to_owned(),
        });
    }
    Ok(Some(TimelineChange {
        from: i.from,
        to: i.to,
        switch_point,
        ghost_end,
    }))
}

#[cfg(test)]
mod tests;
