//! Logical decoding from a hot standby (PostgreSQL 16+): what is different
//! when the source URL resolves to a server in recovery.
//!
//! Creating a logical slot on a standby cannot finish until the standby
//! replays a running-transactions record (`xl_running_xacts`) written by
//! the primary after the slot reserved its WAL: that record is where
//! decoding finds a consistent starting point. A busy primary writes one
//! every 15 seconds or so, but an idle one may write none until its next
//! checkpoint, so `CREATE_REPLICATION_SLOT` can wait for minutes.
//! [`create_slot`] therefore asks the primary for one: while the command
//! waits, it runs `SELECT pg_log_standby_snapshot()` every
//! [`NUDGE_INTERVAL`] on the primary of the source URL's host list (the
//! first host that is not in recovery, as `target_session_attrs=primary`
//! finds it; repeated because a record written before the slot reserved
//! its WAL does not count, and because transactions running on the primary
//! take more than one). Only the host list is searched: the standby's own
//! `primary_conninfo` names an address as the standby sees it, with
//! credentials Sluice does not have. When no primary of the list can be
//! asked (none listed, none reachable, or the role may not execute the
//! function), a warning says once what the command waits for and how the
//! operator can hasten it, so the wait is never silent.
//!
//! What else holds on a standby, found in PostgreSQL 16 and 17's
//! behaviour: `SNAPSHOT 'export'` works there (exporting snapshots on a
//! standby has been possible since PostgreSQL 10; the manual's remark that
//! it fails on a hot standby is out of date), so the initial snapshot is
//! read from the standby under the slot's own snapshot, exactly as on a
//! primary. A failover slot cannot be created on a standby (PostgreSQL
//! refuses `FAILOVER true` there), so [`failover_possible`] is false for a
//! standby session. Heartbeats go to the primary ([`super::primary`]); a
//! publication must be created there (the setup checks say so); the checks
//! an operator should make are in [`super::ha`].

use std::convert::Infallible;
use std::time::Duration;

use super::connection::ReplicationConnection;
use super::error::ReplicationError;
use super::primary::PrimarySession;
use super::slot::{CreateSlotOptions, CreatedSlot, SlotName};

/// How often the primary is asked for a running-transactions record while
/// a slot is being created on a standby.
pub const NUDGE_INTERVAL: Duration = Duration::from_secs(1);

/// The function that makes the primary log a running-transactions record.
const LOG_STANDBY_SNAPSHOT: &str = "SELECT pg_log_standby_snapshot()";

/// Whether `repl`'s server is a standby (in recovery).
pub async fn is_standby(repl: &mut ReplicationConnection) -> Result<bool, ReplicationError> {
    Ok(repl.role().await?.in_recovery)
}

/// Whether a slot made on this session may be a failover slot: only a
/// primary makes them.
pub fn failover_possible(on_standby: bool) -> bool {
    !on_standby
}

/// `CREATE_REPLICATION_SLOT` on `repl`; when its server is a standby, the
/// primary of the host list `repl` was opened from
/// ([`ReplicationConnection::source`]) is asked for running-transactions
/// records while the command waits (see the module documentation).
pub async fn create_slot(
    repl: &mut ReplicationConnection,
    slot: &SlotName,
    options: CreateSlotOptions,
) -> Result<CreatedSlot, ReplicationError> {
    if !is_standby(repl).await? {
        return repl.create_slot(slot, options).await;
    }
    let standby = repl.conninfo().target();
    tracing::info!(slot = %slot, standby = %standby,
        "creating the replication slot on a standby: it is ready once the standby replays a running-transactions record from the primary");
    let nudge = nudge_primary(PrimarySession::new(repl.source()), slot.clone(), standby);
    tokio::pin!(nudge);
    tokio::select! {
        created = repl.create_slot(slot, options) => created,
        never = &mut nudge => match never {},
    }
}

/// Asks the primary for a running-transactions record every
/// [`NUDGE_INTERVAL`], forever (the caller stops it by dropping it).
/// Says once that it could, or once that it could not and what that means.
async fn nudge_primary(mut primary: PrimarySession, slot: SlotName, standby: String) -> Infallible {
    let (mut asked, mut warned) = (false, false);
    loop {
        match primary.execute(LOG_STANDBY_SNAPSHOT).await {
            Ok(()) if !asked => {
                asked = true;
                tracing::info!(slot = %slot, "asked the primary of {} to log a running-transactions record (pg_log_standby_snapshot()), and will every {NUDGE_INTERVAL:?} until the slot is ready",
                    primary.targets());
            }
            Ok(()) => {}
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(slot = %slot, standby = %standby, error = %e,
                    "{}", waiting_message(&slot, &standby, &primary.targets()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "asking the primary for a running-transactions record failed again")
            }
        }
        tokio::time::sleep(NUDGE_INTERVAL).await;
    }
}

/// The warning given when no primary could be asked: what the slot
/// creation waits for, why, and how to hasten it.
pub fn waiting_message(slot: &SlotName, standby: &str, hosts: &str) -> String {
    format!(
        "creating replication slot \"{slot}\" on the standby {standby} waits until the primary logs a running-transactions record, which an idle primary may not do until its next checkpoint; sluice could not ask a primary among source.url's hosts ({hosts}) to log one: run `SELECT pg_log_standby_snapshot();` on the primary, or list the primary in source.url (and let the role execute pg_log_standby_snapshot()) so that sluice does"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_explained_with_its_remedies() {
        let slot = SlotName::new("orders").unwrap();
        let text = waiting_message(&slot, "10.0.0.2:5432", "10.0.0.2:5432");
        assert_eq!(
            text,
            "creating replication slot \"orders\" on the standby 10.0.0.2:5432 waits until the primary logs a running-transactions record, which an idle primary may not do until its next checkpoint; sluice could not ask a primary among source.url's hosts (10.0.0.2:5432) to log one: run `SELECT pg_log_standby_snapshot();` on the primary, or list the primary in source.url (and let the role execute pg_log_standby_snapshot()) so that sluice does"
        );
    }

    #[test]
    fn only_a_primary_makes_failover_slots() {
        assert!(failover_possible(false));
        assert!(!failover_possible(true));
    }
}
