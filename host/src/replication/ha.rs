//! The high-availability checks a careful operator would make before
//! trusting a failover (issue 15): on the primary, whether the slot is a
//! failover slot and whether `synchronized_standby_slots` keeps logical
//! replication behind the standbys; on each standby of the source URL's
//! host list, whether the slot is synced there and sync-ready, and the
//! settings slot sync needs.
//!
//! Every finding is advice, never a refusal: PostgreSQL works without any
//! of it, only a failover would then lose the slot or put ghost changes
//! into the stream. Hosts that cannot be reached are findings too.

use std::fmt;

use tokio_postgres::Client;

use super::conninfo::ConnInfo;
use super::setup::{connect_sql_one, sql_role};
use super::slot::SlotName;

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    Info,
    Warn,
}

/// One thing the checks found, with the host it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub host: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok",
            Level::Info => "note",
            Level::Warn => "warning",
        };
        write!(f, "ha {tag} ({}): {}", self.host, self.message)
    }
}

/// Runs the checks on every host of `info`'s list. `failover` is
/// `source.failover`.
pub async fn check(info: &ConnInfo, slot: &SlotName, failover: Option<bool>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut standbys = 0;
    for candidate in info.candidates() {
        let host = candidate.target();
        let mut push = |level, message: String| {
            out.push(Finding {
                level,
                host: host.clone(),
                message,
            })
        };
        let client = match connect_sql_one(&candidate).await {
            Ok(c) => c,
            Err(e) => {
                push(Level::Warn, format!("unreachable: {e}"));
                continue;
            }
        };
        let (role, version) = match (sql_role(&client).await, version_num(&client).await) {
            (Ok(r), Some(v)) => (r, v),
            _ => {
                push(
                    Level::Warn,
                    "cannot read the server's role and version".into(),
                );
                continue;
            }
        };
        let found = if role.in_recovery {
            standbys += 1;
            check_standby(&client, slot, version).await
        } else {
            check_primary(&client, slot, version, failover).await
        };
        for (level, message) in found {
            push(level, message);
        }
    }
    if standbys == 0 {
        out.push(Finding {
            level: Level::Info,
            host: info.targets(),
            message: "no standby is in source.url's host list: after a failover sluice reconnects only if a host of the list is the new primary; list the standbys too, with target_session_attrs=primary".into(),
        });
    }
    out
}

async fn version_num(client: &Client) -> Option<u32> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .ok()?;
    u32::try_from(row.get::<_, i32>(0)).ok()
}

async fn setting(client: &Client, name: &str) -> String {
    client
        .query_one("SELECT coalesce(current_setting($1, true), '')", &[&name])
        .await
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default()
}

/// The slot's (failover, synced, temporary, invalidation_reason) on a 17+
/// server; `None` when it does not exist.
async fn slot_flags(
    client: &Client,
    slot: &SlotName,
) -> Option<(bool, bool, bool, Option<String>)> {
    let row = client
        .query_opt(
            "SELECT failover, synced, temporary, invalidation_reason::text
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot.as_str()],
        )
        .await
        .ok()??;
    Some((row.get(0), row.get(1), row.get(2), row.get(3)))
}

async fn check_primary(
    client: &Client,
    slot: &SlotName,
    version: u32,
    failover: Option<bool>,
) -> Vec<(Level, String)> {
    let mut out = Vec::new();
    if version < 170_000 {
        let level = if failover == Some(true) {
            Level::Warn
        } else {
            Level::Info
        };
        out.push((level, format!(
            "primary, PostgreSQL {}: failover slots need PostgreSQL 17; a promoted standby will not have replication slot \"{slot}\" unless the HA tool (e.g. Patroni's permanent slots) keeps it",
            version / 10_000
        )));
        return out;
    }
    match failover {
        Some(false) => out.push((Level::Warn, format!(
            "source.failover = false: replication slot \"{slot}\" will not survive a failover"
        ))),
        None => out.push((Level::Info, format!(
            "source.failover is not set: on PostgreSQL 17+ replication slot \"{slot}\" is a failover slot, so a standby with sync_replication_slots keeps a copy that survives a promotion (set source.failover = false to opt out)"
        ))),
        Some(true) => {}
    }
    match slot_flags(client, slot).await {
        Some((true, ..)) => out.push((
            Level::Ok,
            format!("replication slot \"{slot}\" is a failover slot"),
        )),
        Some((false, ..)) => out.push((Level::Warn, format!(
            "replication slot \"{slot}\" is not a failover slot: run alters it at start-up when no walsender holds it (or run `ALTER_REPLICATION_SLOT {slot} (FAILOVER true)` on a replication connection)"
        ))),
        None => out.push((
            Level::Ok,
            format!("replication slot \"{slot}\" does not exist yet; run creates it as a failover slot"),
        )),
    }
    let standby_slots = setting(client, "synchronized_standby_slots").await;
    if standby_slots.is_empty() {
        out.push((Level::Warn, "synchronized_standby_slots is empty: the stream can receive changes that a standby never had, and after that standby's promotion they are ghost changes (sluice then refuses to continue); set it to the standbys' physical slots".into()));
    } else {
        out.push((
            Level::Ok,
            format!("synchronized_standby_slots = '{standby_slots}': logical replication waits for those standbys"),
        ));
    }
    out
}

async fn check_standby(client: &Client, slot: &SlotName, version: u32) -> Vec<(Level, String)> {
    let mut out = Vec::new();
    if version < 170_000 {
        out.push((
            Level::Info,
            format!(
                "standby, PostgreSQL {}: no slot synchronisation before 17",
                version / 10_000
            ),
        ));
        return out;
    }
    for (name, want) in [
        ("sync_replication_slots", "on"),
        ("hot_standby_feedback", "on"),
    ] {
        let value = setting(client, name).await;
        if value != want {
            out.push((
                Level::Warn,
                format!("{name} is `{value}`: slot synchronisation needs `{want}`"),
            ));
        }
    }
    if setting(client, "primary_slot_name").await.is_empty() {
        out.push((Level::Warn, "primary_slot_name is empty: slot synchronisation needs the standby to stream through a physical slot".into()));
    }
    if !setting(client, "primary_conninfo").await.contains("dbname") {
        out.push((
            Level::Warn,
            "primary_conninfo has no dbname: slot synchronisation needs one".into(),
        ));
    }
    match slot_flags(client, slot).await {
        Some((_, true, false, None)) => out.push((
            Level::Ok,
            format!("replication slot \"{slot}\" is synced here and ready for a failover"),
        )),
        Some((_, _, temporary, reason)) => out.push((Level::Warn, format!(
            "replication slot \"{slot}\" is here but not ready for a failover (temporary: {temporary}, invalidation_reason: {}): a promotion now would lose it",
            reason.as_deref().unwrap_or("none")
        ))),
        None => out.push((Level::Warn, format!(
            "replication slot \"{slot}\" is not synced here: a promotion of this standby would lose it"
        ))),
    }
    out
}
