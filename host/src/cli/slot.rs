//! `sluice slot status|advance|drop`: the manifest's replication slot, for
//! operators.
//!
//! `status` reads the slot, the server and the stored offset, and shows
//! what start-up would decide under each mismatch strategy (the same
//! [`decide`] start-up uses), so an operator can choose a strategy or an
//! action before starting. `advance` and `drop` act only on an inactive slot
//! (a reader holds an active one) and never move a slot backwards:
//! PostgreSQL cannot rewind a slot, and the command says so before asking.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use tokio_postgres::Client;

use sluice_host::config::{Manifest, MismatchStrategy};
use sluice_host::lsn::Lsn;
use sluice_host::position::startup::{
    Decision, Inputs, ServerState, SlotState, Start, StartupSettings, decide, read_history,
    read_slot, strategy_name,
};
use sluice_host::replication::setup::connect_sql;
use sluice_host::replication::{ReplicationConnection, SlotName};

use super::offset::{describe_record, identify, open_store};

#[derive(Debug, Subcommand)]
pub(super) enum SlotCommand {
    /// Shows the slot, the WAL it holds, the stored offset, and what each
    /// position.mismatch strategy would do at start-up now.
    Status {
        /// The pipeline's manifest.
        manifest: PathBuf,
    },
    /// Moves the (inactive) slot forward to LSN with
    /// pg_replication_slot_advance.
    Advance {
        /// The pipeline's manifest.
        manifest: PathBuf,
        /// The new position, e.g. `0/16B3748`.
        lsn: Lsn,
    },
    /// Drops the (inactive) slot.
    Drop {
        /// The pipeline's manifest.
        manifest: PathBuf,
    },
}

pub(super) fn run(command: SlotCommand) -> anyhow::Result<()> {
    super::async_runtime()?.block_on(async move {
        match command {
            SlotCommand::Status { manifest } => status(&manifest).await,
            SlotCommand::Advance { manifest, lsn } => advance(&manifest, lsn).await,
            SlotCommand::Drop { manifest } => drop_slot(&manifest).await,
        }
    })
}

/// What `pg_replication_slots` says beyond [`SlotState`].
struct SlotActivity {
    active_pid: Option<i32>,
    wal_status: Option<String>,
    /// Bytes of WAL between `restart_lsn` and the server's current position.
    retained: Option<i64>,
}

async fn read_activity(sql: &Client, slot: &SlotName) -> anyhow::Result<Option<SlotActivity>> {
    // On a standby the current position is the replayed one.
    let row = sql
        .query_opt(
            "SELECT active_pid, wal_status,
                    pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery()
                                         THEN pg_last_wal_replay_lsn()
                                         ELSE pg_current_wal_lsn() END,
                                    restart_lsn)::int8
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot.as_str()],
        )
        .await
        .with_context(|| format!("cannot read replication slot \"{slot}\""))?;
    Ok(row.map(|row| SlotActivity {
        active_pid: row.get(0),
        wal_status: row.get(1),
        retained: row.get(2),
    }))
}

fn or_null(lsn: Option<Lsn>) -> String {
    lsn.map_or_else(|| "NULL".to_owned(), |l| l.to_string())
}

async fn status(file: &Path) -> anyhow::Result<()> {
    let manifest = Manifest::load(file)?;
    let slot_name = &manifest.source.slot;
    let sql = connect_sql(&manifest.source.conninfo).await?;
    let identity = identify(&manifest).await?;
    let slot = read_slot(&sql, slot_name).await?;
    let activity = read_activity(&sql, slot_name).await?;
    let mut store = open_store(&manifest).await?;
    let offset = store.load().await?;
    // The timeline history matters only after a promotion since the offset.
    let history = match &offset {
        Some(o) if o.timeline < identity.timeline => {
            let mut repl = ReplicationConnection::connect(&manifest.source.conninfo).await?;
            let history = read_history(&mut repl, &identity, offset.as_ref(), false).await?;
            repl.close().await;
            history
        }
        _ => None,
    };

    let mut out = String::new();
    match (&slot, &activity) {
        (Some(slot), Some(a)) => {
            let fields = [
                ("slot", slot_name.to_string()),
                (
                    "plugin",
                    slot.plugin
                        .as_deref()
                        .unwrap_or("none (physical slot)")
                        .to_owned(),
                ),
                (
                    "active",
                    a.active_pid
                        .map_or_else(|| "no".to_owned(), |pid| format!("yes (pid {pid})")),
                ),
                ("restart_lsn", or_null(slot.restart_lsn)),
                ("confirmed_flush_lsn", or_null(slot.confirmed_flush_lsn)),
                (
                    "wal_status",
                    a.wal_status.as_deref().unwrap_or("NULL").to_owned(),
                ),
                (
                    "wal_retained",
                    a.retained
                        .map_or_else(|| "NULL".to_owned(), |b| format!("{b} bytes")),
                ),
            ];
            for (name, value) in fields {
                out.push_str(&format!("{name}: {value}\n"));
            }
        }
        _ => out.push_str(&format!("slot: {slot_name} (does not exist)\n")),
    }
    out.push_str(&format!(
        "server: system_id {}, timeline {}, WAL end {}\n",
        identity.system_id, identity.timeline, identity.xlogpos
    ));
    out.push_str(&format!("store: {}\n", store.describe()));
    match &offset {
        Some(record) => out.push_str(&describe_record(record)),
        None => out.push_str("offset: none\n"),
    }

    let settings = StartupSettings::from_manifest(&manifest);
    let server = ServerState::from(&identity);
    for finding in sluice_host::replication::ha::check(
        &manifest.source.conninfo,
        slot_name,
        manifest.source.failover,
    )
    .await
    {
        out.push_str(&format!("{finding}\n"));
    }
    let store_name = store.describe();
    out.push_str("start-up would, by position.mismatch:\n");
    for strategy in [
        MismatchStrategy::NoValidation,
        MismatchStrategy::TrustOffset,
        MismatchStrategy::TrustSlot,
        MismatchStrategy::TrustGreaterLsn,
    ] {
        let outcome = decide(&Inputs {
            manifest: &settings.manifest,
            slot_name,
            strategy,
            flush: settings.flush,
            create_slot: settings.create_slot,
            resnapshot: settings.resnapshot,
            store: &store_name,
            offset: offset.as_ref(),
            slot: slot.as_ref(),
            server: &server,
            history: history.as_deref(),
            mark_ghosts: settings.mark_ghosts,
        });
        let text = match outcome {
            Ok(decision) => describe_decision(&decision),
            Err(refusal) => {
                let text = refusal.to_string();
                let first = text.lines().next().unwrap_or_default();
                format!("refuse: {first}")
            }
        };
        let chosen = if strategy == settings.strategy {
            " (manifest)"
        } else {
            ""
        };
        out.push_str(&format!("  {}{chosen}: {text}\n", strategy_name(strategy)));
    }
    print!("{out}");
    Ok(())
}

/// A decision in a few words: what is changed, then where streaming starts.
fn describe_decision(d: &Decision) -> String {
    let mut steps = Vec::new();
    if let Some(lsn) = d.advance_slot_to {
        steps.push(format!("advance the slot to {lsn}"));
    }
    if let Some(lsn) = d.move_offset_to {
        steps.push(format!("move the offset up to {lsn}"));
    }
    steps.push(match d.start {
        Start::At(lsn) => format!("start at {lsn}"),
        Start::CreateSlot => "create the slot and start at its consistent point".to_owned(),
        Start::Resnapshot(lsn) => format!("re-snapshot, then start at {lsn}"),
    });
    steps.join(", then ")
}

/// The slot, which must exist and be inactive, for changing it.
async fn inactive_slot(sql: &Client, slot: &SlotName, action: &str) -> anyhow::Result<SlotState> {
    let state = read_slot(sql, slot)
        .await?
        .with_context(|| format!("replication slot \"{slot}\" does not exist"))?;
    if let Some(pid) = read_activity(sql, slot).await?.and_then(|a| a.active_pid) {
        anyhow::bail!(
            "refusing to {action} replication slot \"{slot}\": it is active, read by the process with pid {pid}; stop that reader (a running pipeline or tail) first"
        );
    }
    Ok(state)
}

async fn advance(file: &Path, target: Lsn) -> anyhow::Result<()> {
    let manifest = Manifest::load(file)?;
    let slot = &manifest.source.slot;
    let sql = connect_sql(&manifest.source.conninfo).await?;
    let state = inactive_slot(&sql, slot, "advance").await?;
    let Some(current) = state.position() else {
        anyhow::bail!(
            "replication slot \"{slot}\" has no position (it was invalidated): it cannot be advanced; drop it with `sluice slot drop {}`",
            file.display()
        );
    };
    if target < current {
        anyhow::bail!(
            "refusing to move replication slot \"{slot}\" backwards from {current} to {target}: PostgreSQL can only advance a slot"
        );
    }
    if target == current {
        println!("replication slot \"{slot}\" is already at {current}");
        return Ok(());
    }
    let row = sql
        .query_one(
            "SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&slot.as_str(), &target.to_string()],
        )
        .await
        .with_context(|| format!("cannot advance replication slot \"{slot}\" to {target}"))?;
    let text: String = row.get(0);
    let reached: Lsn = text.parse().map_err(|_| {
        anyhow::anyhow!("pg_replication_slot_advance returned `{text}`, not an LSN")
    })?;
    if reached < target {
        anyhow::bail!(
            "replication slot \"{slot}\" stopped at {reached}, short of {target}: the server has flushed WAL only up to {reached}"
        );
    }
    println!("advanced replication slot \"{slot}\" from {current} to {reached}");
    Ok(())
}

async fn drop_slot(file: &Path) -> anyhow::Result<()> {
    let manifest = Manifest::load(file)?;
    let slot = &manifest.source.slot;
    let sql = connect_sql(&manifest.source.conninfo).await?;
    let state = inactive_slot(&sql, slot, "drop").await?;
    sql.execute("SELECT pg_drop_replication_slot($1)", &[&slot.as_str()])
        .await
        .with_context(|| format!("cannot drop replication slot \"{slot}\""))?;
    println!(
        "dropped replication slot \"{slot}\" (it was at {})",
        or_null(state.position())
    );
    // A durable offset now outlives its slot; start-up will refuse to
    // create a new slot over it, so say what to do before that surprises.
    let mut store = open_store(&manifest).await?;
    if let Some(offset) = store.load().await? {
        println!(
            "note: {} still holds offset {}: the next start refuses to create a new slot over it; re-snapshot, or accept the gap with `sluice offset clear {}`",
            store.describe(),
            offset.commit_end_lsn,
            file.display()
        );
    }
    Ok(())
}
