//! `sluice offset show|set|clear`: the manifest's stored offset, by hand.
//!
//! The store keeps its invariant here too: `set` never moves an offset
//! backwards (there is no `--force`). Moving it back is two explicit steps,
//! `clear` then `set`, so that going back is always a deliberate choice
//! that the command line shows. `set` stamps the record with the identity
//! of the server the manifest points at (`IDENTIFY_SYSTEM`), and refuses a
//! position beyond that server's WAL end, which start-up would refuse too.
//!
//! Also the helpers the `slot` commands share: opening the manifest's store
//! (connecting to NATS for `nats-kv`) and asking the server who it is.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use clap::Subcommand;

use sluice_host::config::{Manifest, OffsetStoreSpec};
use sluice_host::lsn::Lsn;
use sluice_host::position::OffsetRecord;
use sluice_host::position::store::{self, OffsetStore, StoreError};
use sluice_host::publish;
use sluice_host::replication::{ReplicationConnection, SystemIdentity};

#[derive(Debug, Subcommand)]
pub(super) enum OffsetCommand {
    /// Prints the stored offset record.
    Show {
        /// The pipeline's manifest.
        manifest: PathBuf,
    },
    /// Stores LSN as the offset (never lower than the one held: `clear`
    /// first to move it back).
    Set {
        /// The pipeline's manifest.
        manifest: PathBuf,
        /// The new offset, e.g. `0/16B3748`.
        lsn: Lsn,
    },
    /// Removes the stored offset: the slot decides where streaming resumes.
    Clear {
        /// The pipeline's manifest.
        manifest: PathBuf,
    },
}

pub(super) fn run(command: OffsetCommand) -> anyhow::Result<()> {
    super::async_runtime()?.block_on(async move {
        match command {
            OffsetCommand::Show { manifest } => show(&manifest).await,
            OffsetCommand::Set { manifest, lsn } => set(&manifest, lsn).await,
            OffsetCommand::Clear { manifest } => clear(&manifest).await,
        }
    })
}

async fn show(file: &Path) -> anyhow::Result<()> {
    let manifest = Manifest::load(file)?;
    let mut store = open_store(&manifest).await?;
    let offset = store.load().await?;
    println!("store: {}", store.describe());
    match offset {
        Some(record) => print!("{}", describe_record(&record)),
        None if !store.is_durable() => {
            println!("offset: none (position.store = \"memory\" keeps nothing between runs)")
        }
        None => println!("offset: none"),
    }
    Ok(())
}

async fn set(file: &Path, lsn: Lsn) -> anyhow::Result<()> {
    let manifest = Manifest::load(file)?;
    let mut store = open_store(&manifest).await?;
    require_durable(store.as_ref(), "set")?;
    let server = identify(&manifest).await?;
    if lsn > server.xlogpos {
        anyhow::bail!(
            "refusing to store offset {lsn}: it is ahead of the server's WAL end {} ({}), so start-up would refuse it",
            server.xlogpos,
            manifest.source.conninfo.target()
        );
    }
    let held = store.load().await?;
    let record = OffsetRecord::new(
        manifest.source.slot.clone(),
        lsn,
        server.system_id,
        server.timeline,
    );
    store.store(&record).await.map_err(|e| match e {
        StoreError::Backwards { .. } => anyhow::anyhow!(
            "{e}; to move it back, run `sluice offset clear {}` first, then set it again",
            file.display()
        ),
        e => e.into(),
    })?;
    let was = match held {
        Some(h) => format!("was {}", h.commit_end_lsn),
        None => "no offset was stored".to_owned(),
    };
    println!(
        "stored offset {lsn} for replication slot \"{}\" in {} ({was})",
        manifest.source.slot,
        store.describe()
    );
    Ok(())
}

async fn clear(file: &Path) -> anyhow::Result<()> {
    let manifest = Manifest::load(file)?;
    let mut store = open_store(&manifest).await?;
    require_durable(store.as_ref(), "clear")?;
    match store.load().await? {
        Some(held) => {
            store.clear().await?;
            println!(
                "cleared offset {} for replication slot \"{}\" from {}",
                held.commit_end_lsn,
                held.slot,
                store.describe()
            );
        }
        None => println!("{} holds no offset: nothing to clear", store.describe()),
    }
    Ok(())
}

fn require_durable(store: &dyn OffsetStore, action: &str) -> anyhow::Result<()> {
    if store.is_durable() {
        return Ok(());
    }
    anyhow::bail!(
        "cannot {action} the offset: position.store = \"memory\" keeps no offset between runs (the slot alone says where streaming resumes)"
    )
}

/// The record, one `key: value` line per field.
pub(super) fn describe_record(r: &OffsetRecord) -> String {
    let mut text = format!("offset: {}\nslot: {}\n", r.commit_end_lsn, r.slot);
    if let Some(xid) = r.xid {
        text.push_str(&format!("xid: {xid}\n"));
    }
    if let Some(lsn) = r.event_lsn {
        text.push_str(&format!("event_lsn: {lsn}\n"));
    }
    if let Some(t) = r.commit_time_us {
        text.push_str(&format!("commit_time: {}\n", time_text(t)));
    }
    text.push_str(&format!(
        "system_id: {}\ntimeline: {}\nwritten_at: {}\n",
        r.system_id,
        r.timeline,
        time_text(r.written_at_us)
    ));
    text
}

/// Microseconds since the Unix epoch as RFC 3339 UTC.
fn time_text(us: i64) -> String {
    match u64::try_from(us) {
        Ok(us) => {
            humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us)).to_string()
        }
        Err(_) => format!("{us} µs before 1970"),
    }
}

/// Opens the manifest's offset store; for `nats-kv`, connects to the
/// manifest's NATS servers first.
pub(super) async fn open_store(manifest: &Manifest) -> anyhow::Result<Box<dyn OffsetStore>> {
    let nats = match &manifest.position.store {
        OffsetStoreSpec::NatsKv { .. } => {
            let client = publish::connect(&manifest.nats.connection).await?;
            Some(async_nats::jetstream::new(client))
        }
        OffsetStoreSpec::Memory | OffsetStoreSpec::File { .. } => None,
    };
    Ok(store::for_manifest(manifest, nats.as_ref()).await?)
}

/// `IDENTIFY_SYSTEM` on the manifest's server: its system identifier,
/// timeline and WAL end, exactly as start-up sees them.
pub(super) async fn identify(manifest: &Manifest) -> anyhow::Result<SystemIdentity> {
    let mut repl = ReplicationConnection::connect(&manifest.source.conninfo).await?;
    let identity = repl.identify_system().await?;
    repl.close().await;
    Ok(identity)
}
