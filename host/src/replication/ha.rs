//! The high-availability checks a careful operator would make before
//! trusting a failover (issue 15): on the primary, whether the slot is a
//! failover slot and whether `synchronized_standby_slots` keeps logical
//! replication behind the standbys; on each standby of the source URL's
//! host list, whether the slot is synced there and sync-ready, and the
//! settings slot sync needs.
//!
//! When the source URL resolves to a standby (decoding from a standby,
//! PostgreSQL 16+), the slot lives on that standby and the failover-slot
//! checks do not apply; what matters instead is that the primary keeps the
//! catalog rows the slot needs: `hot_standby_feedback` and a physical slot
//! the standby streams through.
//!
//! Every finding is advice, never a refusal: PostgreSQL works without any
//! of it, only a failover would then lose the slot or put ghost changes
//! into the stream. Hosts that cannot be reached are findings too.

use std::fmt;

use tokio_postgres::Client;

use super::conninfo::{ConnInfo, ServerRole, SessionAttrs};
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

/// A host of the list that answered, with what it is.
struct Reached {
    host: String,
    client: Client,
    role: ServerRole,
    version: u32,
}

/// Runs the checks on every host of `info`'s list. `failover` is
/// `source.failover`.
pub async fn check(info: &ConnInfo, slot: &SlotName, failover: Option<bool>) -> Vec<Finding> {
    let mut hosts = Vec::new();
    for candidate in info.candidates() {
        let host = candidate.target();
        let warn = |message: String| {
            Err(Finding {
                level: Level::Warn,
                host: host.clone(),
                message,
            })
        };
        hosts.push(match connect_sql_one(&candidate).await {
            Err(e) => warn(format!("unreachable: {e}")),
            Ok(client) => match (sql_role(&client).await, version_num(&client).await) {
                (Ok(role), Some(version)) => Ok(Reached {
                    host: host.clone(),
                    client,
                    role,
                    version,
                }),
                _ => warn("cannot read the server's role and version".into()),
            },
        });
    }
    let roles: Vec<_> = hosts
        .iter()
        .map(|h| h.as_ref().ok().map(|r| r.role))
        .collect();
    let source = source_host(info.session_attrs, &roles);
    let mut out = Vec::new();
    if let Some(i) = source.filter(|&i| roles[i].is_some_and(|r| r.in_recovery)) {
        for finding in hosts.iter().filter_map(|h| h.as_ref().err()) {
            out.push(finding.clone());
        }
        if let Ok(standby) = &hosts[i] {
            let primary = hosts
                .iter()
                .filter_map(|h| h.as_ref().ok())
                .find(|h| !h.role.in_recovery);
            out.extend(check_standby_source(info, standby, primary).await);
        }
        return out;
    }
    let mut standbys = 0;
    for reached in hosts {
        let reached = match reached {
            Ok(r) => r,
            Err(finding) => {
                out.push(finding);
                continue;
            }
        };
        let found = if reached.role.in_recovery {
            standbys += 1;
            check_standby(&reached.client, slot, reached.version).await
        } else {
            check_primary(&reached.client, slot, reached.version, failover).await
        };
        for (level, message) in found {
            out.push(Finding {
                level,
                host: reached.host.clone(),
                message,
            });
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

/// Which host of the list the source URL resolves to, given what each host
/// is (`None`: unreachable), as libpq walks it: the first host
/// `target_session_attrs` accepts, or for `prefer-standby` the first that
/// answered.
fn source_host(attrs: SessionAttrs, roles: &[Option<ServerRole>]) -> Option<usize> {
    roles
        .iter()
        .position(|r| r.is_some_and(|r| attrs.accepts(r)))
        .or_else(|| {
            (attrs == SessionAttrs::PreferStandby)
                .then(|| roles.iter().position(Option::is_some))
                .flatten()
        })
}

/// What decoding from a standby depends on, as read from the standby and
/// (when the list has one that answered) the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StandbySource {
    version: u32,
    hot_standby_feedback: String,
    primary_slot_name: String,
    /// The standby's physical slot on the primary; `None` when no primary
    /// of the list answered.
    primary_slot: Option<PrimarySlot>,
}

/// `primary_slot_name` as the primary has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PrimarySlot {
    Missing,
    /// Exists, but is a logical slot.
    Logical,
    Inactive,
    Active,
}

/// Reads what [`standby_source_findings`] judges, and says which host of
/// the list heartbeats and `pg_log_standby_snapshot()` go to.
async fn check_standby_source(
    info: &ConnInfo,
    standby: &Reached,
    primary: Option<&Reached>,
) -> Vec<Finding> {
    let primary_slot_name = setting(&standby.client, "primary_slot_name").await;
    let primary_slot = match primary {
        Some(p) => Some(primary_slot(&p.client, &primary_slot_name).await),
        None => None,
    };
    let source = StandbySource {
        version: standby.version,
        hot_standby_feedback: setting(&standby.client, "hot_standby_feedback").await,
        primary_slot_name,
        primary_slot,
    };
    let mut out: Vec<Finding> = standby_source_findings(&source)
        .into_iter()
        .map(|(level, message)| Finding {
            level,
            host: standby.host.clone(),
            message,
        })
        .collect();
    out.push(match primary {
        Some(p) => Finding {
            level: Level::Ok,
            host: p.host.clone(),
            message: "primary: heartbeats go here, and sluice asks it for a running-transactions record (pg_log_standby_snapshot()) while it creates a slot on the standby".into(),
        },
        None => Finding {
            level: Level::Warn,
            host: info.targets(),
            message: "no primary of source.url's hosts answered: while creating a slot on the standby sluice cannot ask the primary for a running-transactions record (the creation may wait until the primary's next checkpoint), and heartbeats fail; list the primary in source.url too (target_session_attrs=standby still chooses the standby)".into(),
        },
    });
    out
}

async fn primary_slot(client: &Client, name: &str) -> PrimarySlot {
    let row = client
        .query_opt(
            "SELECT slot_type = 'physical', active FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .ok()
        .flatten();
    match row.map(|r| (r.get::<_, bool>(0), r.get::<_, bool>(1))) {
        None => PrimarySlot::Missing,
        Some((false, _)) => PrimarySlot::Logical,
        Some((true, false)) => PrimarySlot::Inactive,
        Some((true, true)) => PrimarySlot::Active,
    }
}

/// The findings about a standby that the source URL resolves to, where
/// sluice decodes: the version, `hot_standby_feedback` and the physical
/// slot that keep the primary from removing catalog rows the logical slot
/// needs (without them PostgreSQL invalidates the slot).
fn standby_source_findings(s: &StandbySource) -> Vec<(Level, String)> {
    let mut out = Vec::new();
    if s.version < 160_000 {
        out.push((Level::Warn, format!(
            "source.url resolves to this standby, but it runs PostgreSQL {}: logical decoding from a standby needs PostgreSQL 16 or later; point source.url at the primary (target_session_attrs=primary), or upgrade",
            s.version / 10_000
        )));
        return out;
    }
    out.push((Level::Info, "source.url resolves to this standby: sluice decodes here; a slot created here waits for the primary's next running-transactions record, and survives this standby's promotion".into()));
    if s.hot_standby_feedback == "on" {
        out.push((Level::Ok, "hot_standby_feedback = on".into()));
    } else {
        out.push((Level::Warn, format!(
            "hot_standby_feedback is `{}`: decoding from a standby needs `on`, or vacuum on the primary removes catalog rows the slot needs and PostgreSQL invalidates the slot; run `ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf();` on the standby",
            s.hot_standby_feedback
        )));
    }
    let name = &s.primary_slot_name;
    if name.is_empty() {
        out.push((Level::Warn, "primary_slot_name is empty: without a physical slot on the primary, the primary forgets hot_standby_feedback whenever the standby disconnects and may remove catalog rows the slot needs (PostgreSQL then invalidates it); run `SELECT pg_create_physical_replication_slot('standby1');` on the primary and set primary_slot_name = 'standby1' on the standby".into()));
        return out;
    }
    let create = format!("SELECT pg_create_physical_replication_slot('{name}');");
    out.push(match s.primary_slot {
        Some(PrimarySlot::Active) => (Level::Ok, format!(
            "the standby streams through physical replication slot \"{name}\" on the primary"
        )),
        Some(PrimarySlot::Inactive) => (Level::Warn, format!(
            "primary_slot_name = '{name}', but that slot is not active on the primary: the standby does not stream through it, so hot_standby_feedback is not kept while it is away; check the standby's primary_conninfo and its log"
        )),
        Some(PrimarySlot::Missing) => (Level::Warn, format!(
            "primary_slot_name = '{name}', but the primary has no replication slot \"{name}\": the standby cannot stream; run `{create}` on the primary"
        )),
        Some(PrimarySlot::Logical) => (Level::Warn, format!(
            "primary_slot_name = '{name}', but \"{name}\" is a logical slot on the primary: the standby needs a physical one; drop it and run `{create}` on the primary"
        )),
        None => (Level::Info, format!(
            "primary_slot_name = '{name}'; no primary of source.url's hosts answered, so whether that slot exists there is not checked"
        )),
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: ServerRole = ServerRole {
        in_recovery: false,
        read_only: false,
    };
    const STANDBY: ServerRole = ServerRole {
        in_recovery: true,
        read_only: true,
    };

    #[test]
    fn the_source_host_is_found_as_libpq_walks_the_list() {
        let list = [None, Some(PRIMARY), Some(STANDBY)];
        assert_eq!(source_host(SessionAttrs::Standby, &list), Some(2));
        assert_eq!(source_host(SessionAttrs::PreferStandby, &list), Some(2));
        assert_eq!(source_host(SessionAttrs::Primary, &list), Some(1));
        assert_eq!(source_host(SessionAttrs::Any, &list), Some(1));
        // No standby answered: prefer-standby takes the first that did.
        let list = [None, Some(PRIMARY), None];
        assert_eq!(source_host(SessionAttrs::PreferStandby, &list), Some(1));
        assert_eq!(source_host(SessionAttrs::Standby, &list), None);
        assert_eq!(source_host(SessionAttrs::Any, &[None, None]), None);
    }

    fn source(feedback: &str, slot_name: &str, slot: Option<PrimarySlot>) -> StandbySource {
        StandbySource {
            version: 170_002,
            hot_standby_feedback: feedback.into(),
            primary_slot_name: slot_name.into(),
            primary_slot: slot,
        }
    }

    fn warnings(s: &StandbySource) -> Vec<String> {
        standby_source_findings(s)
            .into_iter()
            .filter(|(level, _)| *level == Level::Warn)
            .map(|(_, m)| m)
            .collect()
    }

    #[test]
    fn a_well_set_standby_has_no_warning() {
        let found = standby_source_findings(&source("on", "standby1", Some(PrimarySlot::Active)));
        assert!(found.iter().all(|(l, _)| *l != Level::Warn), "{found:?}");
        assert!(
            found.contains(&(
                Level::Ok,
                "the standby streams through physical replication slot \"standby1\" on the primary"
                    .into()
            ))
        );
    }

    #[test]
    fn each_missing_setting_is_named_with_its_fix() {
        assert_eq!(
            warnings(&source("off", "standby1", Some(PrimarySlot::Active))),
            [
                "hot_standby_feedback is `off`: decoding from a standby needs `on`, or vacuum on the primary removes catalog rows the slot needs and PostgreSQL invalidates the slot; run `ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf();` on the standby"
            ]
        );
        let w = warnings(&source("on", "", None));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("primary_slot_name is empty"), "{w:?}");
        assert_eq!(
            warnings(&source("on", "s1", Some(PrimarySlot::Missing))),
            [
                "primary_slot_name = 's1', but the primary has no replication slot \"s1\": the standby cannot stream; run `SELECT pg_create_physical_replication_slot('s1');` on the primary"
            ]
        );
        let w = warnings(&source("on", "s1", Some(PrimarySlot::Inactive)));
        assert!(w[0].contains("not active on the primary"), "{w:?}");
        let w = warnings(&source("on", "s1", Some(PrimarySlot::Logical)));
        assert!(w[0].contains("is a logical slot on the primary"), "{w:?}");
        // No primary answered: not a warning about the slot, a note.
        let found = standby_source_findings(&source("on", "s1", None));
        assert!(found.iter().all(|(l, _)| *l != Level::Warn), "{found:?}");
    }

    #[test]
    fn a_standby_before_16_cannot_be_decoded_from() {
        let s = StandbySource {
            version: 150_008,
            ..source("on", "s1", Some(PrimarySlot::Active))
        };
        assert_eq!(
            warnings(&s),
            [
                "source.url resolves to this standby, but it runs PostgreSQL 15: logical decoding from a standby needs PostgreSQL 16 or later; point source.url at the primary (target_session_attrs=primary), or upgrade"
            ]
        );
    }
}
