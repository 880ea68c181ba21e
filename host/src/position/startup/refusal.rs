//! Why start-up refuses, in words an operator can act on: each refusal
//! names the positions involved, the slot, the strategy and the command
//! that resolves it.

use std::path::{Path, PathBuf};

use super::{Inputs, strategy_name};
use crate::config::MismatchStrategy;
use crate::lsn::Lsn;
use crate::position::offset::OffsetRecord;
use crate::replication::{SlotName, quote_literal};

/// A start-up refusal. All are definite: retrying cannot help until an
/// operator acts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "refusing to start: {store} holds offset {offset} for replication slot \"{offset_slot}\", but the manifest names slot \"{slot}\", which {} (position.mismatch = \"{}\"). If the slot was renamed on purpose, run `sluice offset clear {}`; otherwise give each pipeline its own offset store",
        slot_at(*.slot_lsn), strategy_name(*.strategy), .manifest.display()
    )]
    OffsetForOtherSlot {
        store: String,
        offset: Lsn,
        offset_slot: SlotName,
        slot: SlotName,
        slot_lsn: Option<Lsn>,
        strategy: MismatchStrategy,
        manifest: PathBuf,
    },
    #[error(
        "refusing to start: {store} holds offset {offset} written by the PostgreSQL server with system identifier {offset_system_id}, but this server's system identifier is {server_system_id} (replication slot \"{slot}\" {}; position.mismatch = \"{}\" does not apply across servers). If source.url points at the wrong server, fix it; if this server replaces the old one, run `sluice offset clear {}` and re-snapshot",
        slot_at(*.slot_lsn), strategy_name(*.strategy), .manifest.display()
    )]
    OtherServer {
        store: String,
        offset: Lsn,
        offset_system_id: u64,
        server_system_id: u64,
        slot: SlotName,
        slot_lsn: Option<Lsn>,
        strategy: MismatchStrategy,
        manifest: PathBuf,
    },
    #[error(
        "refusing to start: {store} holds offset {offset}, ahead of the server's WAL end {wal_end} (replication slot \"{slot}\" {}; position.mismatch = \"{}\"): this server is behind the one the offset came from (a failover to a lagging standby, or a restored backup), so transactions already streamed up to {offset} may be replaced by different ones. If source.url points at the wrong server, fix it; otherwise run `sluice offset clear {}` and re-snapshot",
        slot_at(*.slot_lsn), strategy_name(*.strategy), .manifest.display()
    )]
    OffsetAheadOfServer {
        store: String,
        offset: Lsn,
        wal_end: Lsn,
        slot: SlotName,
        slot_lsn: Option<Lsn>,
        strategy: MismatchStrategy,
        manifest: PathBuf,
    },
    #[error(
        "refusing to start: replication slot \"{slot}\" does not exist, but {store} holds offset {offset} (the server's WAL end is {wal_end}; position.mismatch = \"{}\"): a new slot would start at the server's current position and silently skip every change between {offset} and there. Re-snapshot, or accept the gap: run `sluice offset clear {}` and start again to create the slot",
        strategy_name(*.strategy), .manifest.display()
    )]
    SlotMissingWithOffset {
        store: String,
        offset: Lsn,
        wal_end: Lsn,
        slot: SlotName,
        strategy: MismatchStrategy,
        manifest: PathBuf,
    },
    #[error(
        "replication slot \"{slot}\" does not exist and source.create-slot = false: create it with `SELECT pg_create_logical_replication_slot({}, 'pgoutput');`, or set source.create-slot = true",
        quote_literal(.slot.as_str())
    )]
    SlotMissing { slot: SlotName },
    #[error(
        "refusing to start: replication slot \"{slot}\" is at {slot_lsn}, ahead of the stored offset {offset} (position.mismatch = \"trust-offset\"): the transactions committed between {offset} and {slot_lsn} were confirmed to the server but are not in the offset, so they may never reach the stream. Re-snapshot, or accept the slot's position: run `sluice offset clear {}` (or set position.mismatch = \"trust-slot\")",
        .manifest.display()
    )]
    SlotAhead {
        offset: Lsn,
        slot: SlotName,
        slot_lsn: Lsn,
        manifest: PathBuf,
    },
    #[error(
        "refusing to start: the WAL that the stored offset {offset} needs is gone: replication slot \"{slot}\" is at {slot_lsn} and keeps WAL only from its restart_lsn {restart_lsn} (position.mismatch = \"{}\"), so the changes between {offset} and {restart_lsn} can no longer be streamed. Re-snapshot, or accept the gap: run `sluice offset clear {}`",
        strategy_name(*.strategy), .manifest.display()
    )]
    WalGone {
        offset: Lsn,
        slot: SlotName,
        slot_lsn: Lsn,
        restart_lsn: Lsn,
        strategy: MismatchStrategy,
        manifest: PathBuf,
    },
    #[error(
        "replication slot \"{slot}\" {}, but sluice needs a logical slot with the pgoutput plugin: choose another slot name, or drop it with `SELECT pg_drop_replication_slot({});`",
        plugin_text(.plugin.as_deref()), quote_literal(.slot.as_str())
    )]
    WrongPlugin {
        slot: SlotName,
        plugin: Option<String>,
    },
    #[error(
        "replication slot \"{slot}\" belongs to database \"{slot_database}\", not \"{database}\": connect to \"{slot_database}\" or choose another slot name"
    )]
    WrongDatabase {
        slot: SlotName,
        slot_database: String,
        database: String,
    },
    #[error(
        "refusing to start: replication slot \"{slot}\" has no position (restart_lsn is NULL: it was invalidated because the WAL it needed was removed; {}; position.mismatch = \"{}\"): drop it with `SELECT pg_drop_replication_slot({});`, run `sluice offset clear {}`, and re-snapshot",
        offset_text(*.offset), strategy_name(*.strategy), quote_literal(.slot.as_str()), .manifest.display()
    )]
    SlotInvalidated {
        slot: SlotName,
        offset: Option<Lsn>,
        strategy: MismatchStrategy,
        manifest: PathBuf,
    },
    #[error(
        "refusing to start: the server is on timeline {server_timeline}, but the stream's position was read on timeline {stream_timeline} of replication slot \"{slot}\": this server is an older branch of the history (a restored backup, or a standby of a server that was since promoted). Point source.url at the current primary"
    )]
    LowerTimeline {
        slot: SlotName,
        stream_timeline: u32,
        server_timeline: u32,
    },
    #[error(
        "refusing to start: the server is on timeline {server_timeline}, whose history does not contain timeline {stream_timeline}, where the stream's position of replication slot \"{slot}\" was read: it was promoted from another branch of the history. Point source.url at the current primary"
    )]
    TimelineNotInHistory {
        slot: SlotName,
        stream_timeline: u32,
        server_timeline: u32,
    },
    #[error(
        "refusing to continue: ghost changes: {what} ends at {streamed_end}, but timeline {from} ended at {switch_point} when this server was promoted to timeline {to}, so the changes between {switch_point} and {streamed_end} are in the stream but not on the promoted server (replication slot \"{slot}\"; the old primary sent them before its standby had them). Reconcile the stream's consumers for that LSN range, then run `sluice offset clear` and start again; or set source.on-ghost-changes = \"mark\" (with source.ghost-subject) to publish one marker message naming the range and continue from the promoted server. To prevent this, set `synchronized_standby_slots` on the primary to the standby's physical slot, so logical replication never runs ahead of the standby"
    )]
    GhostChanges {
        slot: SlotName,
        what: String,
        from: u32,
        to: u32,
        switch_point: Lsn,
        streamed_end: Lsn,
    },
    #[error(
        "refusing to continue after the promotion to timeline {to}: replication slot \"{slot}\" {reason}, so the changes since the stream's position cannot be streamed from this server. Make the slot a failover slot (source.failover = true, PostgreSQL 17+) with `sync_replication_slots = on` on the standby and wait until `pg_replication_slots.synced` is true and `temporary` false there before a failover; now, re-snapshot (run `sluice offset clear` and start with source.snapshot = \"initial\")"
    )]
    SlotLostInFailover {
        slot: SlotName,
        to: u32,
        reason: String,
    },
}

fn slot_at(lsn: Option<Lsn>) -> String {
    match lsn {
        Some(lsn) => format!("is at {lsn}"),
        None => "does not exist".to_owned(),
    }
}

fn offset_text(offset: Option<Lsn>) -> String {
    match offset {
        Some(lsn) => format!("the stored offset is {lsn}"),
        None => "no offset is stored".to_owned(),
    }
}

fn plugin_text(plugin: Option<&str>) -> String {
    match plugin {
        Some(p) => format!("uses the output plugin \"{p}\""),
        None => "is a physical slot".to_owned(),
    }
}

/// What every refusal repeats, taken from the inputs once.
pub(super) struct Context<'a> {
    manifest: &'a Path,
    slot: &'a SlotName,
    strategy: MismatchStrategy,
    store: &'a str,
    wal_end: Lsn,
}

impl<'a> Context<'a> {
    pub(super) fn new(i: &Inputs<'a>) -> Self {
        Context {
            manifest: i.manifest,
            slot: i.slot_name,
            strategy: i.strategy,
            store: i.store,
            wal_end: i.server.wal_end,
        }
    }

    pub(super) fn offset_for_other_slot(&self, o: &OffsetRecord, slot_lsn: Option<Lsn>) -> Refusal {
        Refusal::OffsetForOtherSlot {
            store: self.store.to_owned(),
            offset: o.commit_end_lsn,
            offset_slot: o.slot.clone(),
            slot: self.slot.clone(),
            slot_lsn,
            strategy: self.strategy,
            manifest: self.manifest.to_owned(),
        }
    }

    pub(super) fn other_server(
        &self,
        o: &OffsetRecord,
        slot_lsn: Option<Lsn>,
        server_system_id: u64,
    ) -> Refusal {
        Refusal::OtherServer {
            store: self.store.to_owned(),
            offset: o.commit_end_lsn,
            offset_system_id: o.system_id,
            server_system_id,
            slot: self.slot.clone(),
            slot_lsn,
            strategy: self.strategy,
            manifest: self.manifest.to_owned(),
        }
    }

    pub(super) fn offset_ahead_of_server(
        &self,
        o: &OffsetRecord,
        slot_lsn: Option<Lsn>,
    ) -> Refusal {
        Refusal::OffsetAheadOfServer {
            store: self.store.to_owned(),
            offset: o.commit_end_lsn,
            wal_end: self.wal_end,
            slot: self.slot.clone(),
            slot_lsn,
            strategy: self.strategy,
            manifest: self.manifest.to_owned(),
        }
    }

    pub(super) fn slot_missing_with_offset(&self, o: &OffsetRecord) -> Refusal {
        Refusal::SlotMissingWithOffset {
            store: self.store.to_owned(),
            offset: o.commit_end_lsn,
            wal_end: self.wal_end,
            slot: self.slot.clone(),
            strategy: self.strategy,
            manifest: self.manifest.to_owned(),
        }
    }

    pub(super) fn slot_missing(&self) -> Refusal {
        Refusal::SlotMissing {
            slot: self.slot.clone(),
        }
    }

    pub(super) fn slot_ahead(&self, offset: Lsn, slot_lsn: Lsn) -> Refusal {
        Refusal::SlotAhead {
            offset,
            slot: self.slot.clone(),
            slot_lsn,
            manifest: self.manifest.to_owned(),
        }
    }

    pub(super) fn wal_gone(&self, offset: Lsn, slot_lsn: Lsn, restart_lsn: Lsn) -> Refusal {
        Refusal::WalGone {
            offset,
            slot: self.slot.clone(),
            slot_lsn,
            restart_lsn,
            strategy: self.strategy,
            manifest: self.manifest.to_owned(),
        }
    }

    pub(super) fn wrong_plugin(&self, plugin: Option<String>) -> Refusal {
        Refusal::WrongPlugin {
            slot: self.slot.clone(),
            plugin,
        }
    }

    pub(super) fn wrong_database(&self, slot_database: String, database: String) -> Refusal {
        Refusal::WrongDatabase {
            slot: self.slot.clone(),
            slot_database,
            database,
        }
    }

    pub(super) fn slot_invalidated(&self, offset: Option<Lsn>) -> Refusal {
        Refusal::SlotInvalidated {
            slot: self.slot.clone(),
            offset,
            strategy: self.strategy,
            manifest: self.manifest.to_owned(),
        }
    }
}
