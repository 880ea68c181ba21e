//! Every cell of DESIGN §3's table and every refusal, on the pure decision.

use std::path::Path;

use super::*;
use crate::config::{FlushMode, MismatchStrategy::*};

const SYSTEM: u64 = 7_300_000_000_000_000_001;
const MANIFEST: &str = "/etc/sluice/orders.toml";

fn slot_name() -> SlotName {
    SlotName::new("orders").unwrap()
}

fn server() -> ServerState {
    ServerState {
        system_id: SYSTEM,
        timeline: 1,
        wal_end: Lsn(0x9000),
        database: Some("app".into()),
    }
}

fn slot(s: u64, r: u64) -> SlotState {
    SlotState {
        plugin: Some("pgoutput".into()),
        database: Some("app".into()),
        confirmed_flush_lsn: Some(Lsn(s)),
        restart_lsn: Some(Lsn(r)),
        ..SlotState::default()
    }
}

fn offset(o: u64) -> OffsetRecord {
    OffsetRecord::new(slot_name(), Lsn(o), SYSTEM, 1)
}

/// Runs the decision with a given strategy, flush mode, offset and slot.
fn run(
    strategy: MismatchStrategy,
    flush: FlushMode,
    offset: Option<&OffsetRecord>,
    slot: Option<&SlotState>,
) -> Result<Decision, Refusal> {
    let name = slot_name();
    let server = server();
    decide(&Inputs {
        manifest: Path::new(MANIFEST),
        slot_name: &name,
        strategy,
        flush,
        create_slot: true,
        resnapshot: false,
        store: "offset file /var/lib/sluice/orders.json",
        offset,
        slot,
        server: &server,
        history: None,
        mark_ghosts: false,
    })
}

fn cell(strategy: MismatchStrategy, o: u64, s: u64) -> Result<Decision, Refusal> {
    // R is below both, so the availability check passes.
    run(
        strategy,
        FlushMode::Connector,
        Some(&offset(o)),
        Some(&slot(s, 0x100)),
    )
}

fn plain(
    start: Start,
    advance: Option<u64>,
    move_to: Option<u64>,
) -> (Start, Option<Lsn>, Option<Lsn>) {
    (start, advance.map(Lsn), move_to.map(Lsn))
}

fn shape(d: &Decision) -> (Start, Option<Lsn>, Option<Lsn>) {
    (d.start, d.advance_slot_to, d.move_offset_to)
}

#[test]
fn slot_ahead_column() {
    let d = cell(NoValidation, 0x2000, 0x3000).unwrap();
    assert_eq!(shape(&d), plain(Start::At(Lsn(0x3000)), None, None));
    assert_eq!(
        d.notices,
        [Notice {
            level: NoticeLevel::Info,
            message: "replication slot \"orders\" is at 0/3000, ahead of the stored offset 0/2000: the server resumes at 0/3000 (position.mismatch = \"no-validation\")".into()
        }]
    );

    let err = cell(TrustOffset, 0x2000, 0x3000).unwrap_err();
    assert_eq!(
        err.to_string(),
        "refusing to start: replication slot \"orders\" is at 0/3000, ahead of the stored offset 0/2000 (position.mismatch = \"trust-offset\"): the transactions committed between 0/2000 and 0/3000 were confirmed to the server but are not in the offset, so they may never reach the stream. Re-snapshot, or accept the slot's position: run `sluice offset clear /etc/sluice/orders.toml` (or set position.mismatch = \"trust-slot\")"
    );

    for strategy in [TrustSlot, TrustGreaterLsn] {
        let d = cell(strategy, 0x2000, 0x3000).unwrap();
        assert_eq!(
            shape(&d),
            plain(Start::At(Lsn(0x3000)), None, Some(0x3000)),
            "{strategy:?}"
        );
        assert_eq!(d.notices.len(), 1);
        assert_eq!(d.notices[0].level, NoticeLevel::Warn);
        assert_eq!(
            d.notices[0].message,
            format!(
                "replication slot \"orders\" is at 0/3000, ahead of the stored offset 0/2000: moving the offset up to 0/3000 (position.mismatch = \"{}\"); transactions committed between 0/2000 and 0/3000 are not streamed again",
                strategy_name(strategy)
            )
        );
    }
}

#[test]
fn equal_column() {
    for strategy in [NoValidation, TrustOffset, TrustSlot, TrustGreaterLsn] {
        let d = cell(strategy, 0x3000, 0x3000).unwrap();
        assert_eq!(d, Decision::start(Start::At(Lsn(0x3000))), "{strategy:?}");
    }
}

#[test]
fn offset_ahead_column() {
    for strategy in [NoValidation, TrustSlot] {
        let d = cell(strategy, 0x4000, 0x3000).unwrap();
        assert_eq!(
            shape(&d),
            plain(Start::At(Lsn(0x4000)), None, None),
            "{strategy:?}"
        );
    }
    for strategy in [TrustOffset, TrustGreaterLsn] {
        let d = cell(strategy, 0x4000, 0x3000).unwrap();
        assert_eq!(
            shape(&d),
            plain(Start::At(Lsn(0x4000)), Some(0x4000), None),
            "{strategy:?}"
        );
    }
}

#[test]
fn manual_flush_never_advances_the_slot() {
    for strategy in [NoValidation, TrustOffset, TrustSlot, TrustGreaterLsn] {
        let d = run(
            strategy,
            FlushMode::Manual,
            Some(&offset(0x4000)),
            Some(&slot(0x3000, 0x100)),
        )
        .unwrap();
        assert_eq!(d.start, Start::At(Lsn(0x4000)));
        assert_eq!(d.advance_slot_to, None, "{strategy:?}");
    }
    let d = run(
        TrustOffset,
        FlushMode::Manual,
        Some(&offset(0x4000)),
        Some(&slot(0x3000, 0x100)),
    )
    .unwrap();
    assert_eq!(
        d.notices[0].message,
        "the stored offset 0/4000 is ahead of replication slot \"orders\" at 0/3000; position.flush = \"manual\", so the slot is not advanced: advance it with `sluice slot advance /etc/sluice/orders.toml 0/4000` or `SELECT pg_replication_slot_advance('orders', '0/4000');`"
    );
}

#[test]
fn wal_gone_is_refused_by_the_strategies_that_check_availability() {
    // R > O: the slot keeps WAL only from 0/2800, the offset needs 0/2000.
    let s = slot(0x3000, 0x2800);
    for strategy in [NoValidation, TrustOffset] {
        let err = run(
            strategy,
            FlushMode::Connector,
            Some(&offset(0x2000)),
            Some(&s),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to start: the WAL that the stored offset 0/2000 needs is gone: replication slot \"orders\" is at 0/3000 and keeps WAL only from its restart_lsn 0/2800 (position.mismatch = \"{}\"), so the changes between 0/2000 and 0/2800 can no longer be streamed. Re-snapshot, or accept the gap: run `sluice offset clear /etc/sluice/orders.toml`",
                strategy_name(strategy)
            )
        );
    }
    // The slot-trusting strategies move the offset up instead.
    for strategy in [TrustSlot, TrustGreaterLsn] {
        let d = run(
            strategy,
            FlushMode::Connector,
            Some(&offset(0x2000)),
            Some(&s),
        )
        .unwrap();
        assert_eq!(shape(&d), plain(Start::At(Lsn(0x3000)), None, Some(0x3000)));
    }
    // R = O is still available.
    let d = run(
        NoValidation,
        FlushMode::Connector,
        Some(&offset(0x2800)),
        Some(&s),
    )
    .unwrap();
    assert_eq!(d.start, Start::At(Lsn(0x3000)));
}

#[test]
fn resnapshot_replaces_the_availability_refusal_when_allowed() {
    let name = slot_name();
    let server = server();
    let o = offset(0x2000);
    let s = slot(0x3000, 0x2800);
    let d = decide(&Inputs {
        manifest: Path::new(MANIFEST),
        slot_name: &name,
        strategy: NoValidation,
        flush: FlushMode::Connector,
        create_slot: true,
        resnapshot: true,
        store: "x",
        offset: Some(&o),
        slot: Some(&s),
        server: &server,
        history: None,
        mark_ghosts: false,
    })
    .unwrap();
    assert_eq!(d.start, Start::Resnapshot(Lsn(0x3000)));
}

#[test]
fn restart_lsn_stands_in_for_a_null_confirmed_flush_lsn() {
    let mut s = slot(0, 0x3000);
    s.confirmed_flush_lsn = None;
    let d = cell_with(TrustGreaterLsn, 0x4000, &s);
    assert_eq!(shape(&d), plain(Start::At(Lsn(0x4000)), Some(0x4000), None));
    let d = cell_with(NoValidation, 0x3000, &s);
    assert_eq!(shape(&d), plain(Start::At(Lsn(0x3000)), None, None));
}

fn cell_with(strategy: MismatchStrategy, o: u64, s: &SlotState) -> Decision {
    run(strategy, FlushMode::Connector, Some(&offset(o)), Some(s)).unwrap()
}

#[test]
fn without_an_offset_the_slot_decides_or_is_created() {
    for strategy in [NoValidation, TrustOffset, TrustSlot, TrustGreaterLsn] {
        let d = run(
            strategy,
            FlushMode::Connector,
            None,
            Some(&slot(0x3000, 0x2000)),
        )
        .unwrap();
        assert_eq!(d, Decision::start(Start::At(Lsn(0x3000))));
        let d = run(strategy, FlushMode::Connector, None, None).unwrap();
        assert_eq!(d, Decision::start(Start::CreateSlot));
    }
    let name = slot_name();
    let server = server();
    let err = decide(&Inputs {
        manifest: Path::new(MANIFEST),
        slot_name: &name,
        strategy: NoValidation,
        flush: FlushMode::Connector,
        create_slot: false,
        resnapshot: false,
        store: "the memory offset store",
        offset: None,
        slot: None,
        server: &server,
        history: None,
        mark_ghosts: false,
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "replication slot \"orders\" does not exist and source.create-slot = false: create it with `SELECT pg_create_logical_replication_slot('orders', 'pgoutput');`, or set source.create-slot = true"
    );
}

#[test]
fn refused_under_every_strategy() {
    for strategy in [NoValidation, TrustOffset, TrustSlot, TrustGreaterLsn] {
        let name = strategy_name(strategy);

        let err = run(strategy, FlushMode::Connector, Some(&offset(0x2000)), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to start: replication slot \"orders\" does not exist, but offset file /var/lib/sluice/orders.json holds offset 0/2000 (the server's WAL end is 0/9000; position.mismatch = \"{name}\"): a new slot would start at the server's current position and silently skip every change between 0/2000 and there. Re-snapshot, or accept the gap: run `sluice offset clear /etc/sluice/orders.toml` and start again to create the slot"
            )
        );

        let mut foreign = offset(0x2000);
        foreign.system_id = 42;
        let err = run(
            strategy,
            FlushMode::Connector,
            Some(&foreign),
            Some(&slot(0x3000, 0x100)),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to start: offset file /var/lib/sluice/orders.json holds offset 0/2000 written by the PostgreSQL server with system identifier 42, but this server's system identifier is {SYSTEM} (replication slot \"orders\" is at 0/3000; position.mismatch = \"{name}\" does not apply across servers). If source.url points at the wrong server, fix it; if this server replaces the old one, run `sluice offset clear /etc/sluice/orders.toml` and re-snapshot"
            )
        );

        let err = run(
            strategy,
            FlushMode::Connector,
            Some(&offset(0x9001)),
            Some(&slot(0x3000, 0x100)),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to start: offset file /var/lib/sluice/orders.json holds offset 0/9001, ahead of the server's WAL end 0/9000 (replication slot \"orders\" is at 0/3000; position.mismatch = \"{name}\"): this server is behind the one the offset came from (a failover to a lagging standby, or a restored backup), so transactions already streamed up to 0/9001 may be replaced by different ones. If source.url points at the wrong server, fix it; otherwise run `sluice offset clear /etc/sluice/orders.toml` and re-snapshot"
            )
        );
        // Even with no slot, the server check comes first.
        let err = run(strategy, FlushMode::Connector, Some(&offset(0x9001)), None).unwrap_err();
        assert!(matches!(
            err,
            Refusal::OffsetAheadOfServer { slot_lsn: None, .. }
        ));
        assert!(
            err.to_string()
                .contains("(replication slot \"orders\" does not exist;"),
            "{err}"
        );
    }
}

#[test]
fn an_offset_for_another_slot_is_refused() {
    let mut other = offset(0x2000);
    other.slot = SlotName::new("invoices").unwrap();
    let err = run(
        TrustSlot,
        FlushMode::Connector,
        Some(&other),
        Some(&slot(0x3000, 0x100)),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "refusing to start: offset file /var/lib/sluice/orders.json holds offset 0/2000 for replication slot \"invoices\", but the manifest names slot \"orders\", which is at 0/3000 (position.mismatch = \"trust-slot\"). If the slot was renamed on purpose, run `sluice offset clear /etc/sluice/orders.toml`; otherwise give each pipeline its own offset store"
    );
}

#[test]
fn unusable_slots_are_refused() {
    let mut physical = slot(0x3000, 0x100);
    physical.plugin = None;
    let err = run(NoValidation, FlushMode::Connector, None, Some(&physical)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "replication slot \"orders\" is a physical slot, but sluice needs a logical slot with the pgoutput plugin: choose another slot name, or drop it with `SELECT pg_drop_replication_slot('orders');`"
    );
    let mut wal2json = slot(0x3000, 0x100);
    wal2json.plugin = Some("wal2json".into());
    let err = run(NoValidation, FlushMode::Connector, None, Some(&wal2json)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("replication slot \"orders\" uses the output plugin \"wal2json\", but")
    );
    let mut elsewhere = slot(0x3000, 0x100);
    elsewhere.database = Some("other".into());
    let err = run(NoValidation, FlushMode::Connector, None, Some(&elsewhere)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "replication slot \"orders\" belongs to database \"other\", not \"app\": connect to \"other\" or choose another slot name"
    );
    let mut lost = slot(0x3000, 0);
    lost.restart_lsn = None;
    let err = run(
        TrustSlot,
        FlushMode::Connector,
        Some(&offset(0x2000)),
        Some(&lost),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "refusing to start: replication slot \"orders\" has no position (restart_lsn is NULL: it was invalidated because the WAL it needed was removed; the stored offset is 0/2000; position.mismatch = \"trust-slot\"): drop it with `SELECT pg_drop_replication_slot('orders');`, run `sluice offset clear /etc/sluice/orders.toml`, and re-snapshot"
    );
}

#[test]
fn an_offset_from_a_higher_timeline_is_refused() {
    let mut o = offset(0x3000);
    o.timeline = 2;
    let err = run(
        NoValidation,
        FlushMode::Connector,
        Some(&o),
        Some(&slot(0x3000, 0x100)),
    )
    .unwrap_err();
    assert!(matches!(err, Refusal::LowerTimeline { .. }), "{err}");
}

/// The server of `server()` promoted to timeline 2 at `switch`.
fn run_promoted(o: u64, switch: u64, slot: Option<&SlotState>) -> Result<Decision, Refusal> {
    run_promoted_with(o, switch, slot, false)
}

fn run_promoted_with(
    o: u64,
    switch: u64,
    slot: Option<&SlotState>,
    mark_ghosts: bool,
) -> Result<Decision, Refusal> {
    let name = slot_name();
    let server = ServerState {
        timeline: 2,
        ..server()
    };
    let history = [TimelineSwitch {
        timeline: 1,
        switch_point: Lsn(switch),
    }];
    let offset = offset(o);
    decide(&Inputs {
        manifest: Path::new(MANIFEST),
        slot_name: &name,
        strategy: NoValidation,
        flush: FlushMode::Connector,
        create_slot: true,
        resnapshot: false,
        store: "offset file /var/lib/sluice/orders.json",
        offset: Some(&offset),
        slot,
        server: &server,
        history: Some(&history),
        mark_ghosts,
    })
}

#[test]
fn after_a_promotion_streaming_resumes_from_the_greater_position() {
    // The synced slot lags behind the offset: start at the offset.
    let d = run_promoted(0x3000, 0x3500, Some(&slot(0x2000, 0x100))).unwrap();
    assert_eq!(d.start, Start::At(Lsn(0x3000)));
    assert!(d.notices.iter().any(|n| {
        n.message
            .contains("promoted from timeline 1 to 2 at 0/3500")
    }));
    // The slot is ahead (the offset store lagged): start at the slot.
    let d = run_promoted(0x3000, 0x3500, Some(&slot(0x3400, 0x100))).unwrap();
    assert_eq!(d.start, Start::At(Lsn(0x3400)));
}

#[test]
fn after_a_promotion_ghosts_and_lost_slots_are_refused() {
    let err = run_promoted(0x3600, 0x3500, Some(&slot(0x2000, 0x100))).unwrap_err();
    assert!(matches!(err, Refusal::GhostChanges { .. }), "{err}");
    assert!(
        err.to_string().contains("between 0/3500 and 0/3600"),
        "{err}"
    );
    let err = run_promoted(0x3000, 0x3500, None).unwrap_err();
    assert!(matches!(err, Refusal::SlotLostInFailover { .. }), "{err}");
}

#[test]
fn after_a_promotion_ghosts_may_be_marked_and_only_the_switch_point_counts() {
    // The offset 0/3600 is past the switch point 0/3500; the synced slot
    // lags at 0/2000: start at the switch point, not at the offset, and
    // skip only what lies at or below it.
    let d = run_promoted_with(0x3600, 0x3500, Some(&slot(0x2000, 0x100)), true).unwrap();
    assert_eq!(d.start, Start::At(Lsn(0x3500)));
    let ghosts = d.ghosts.expect("the ghost range");
    assert_eq!(
        (
            ghosts.from,
            ghosts.to,
            ghosts.switch_point,
            ghosts.ghost_end
        ),
        (1, 2, Lsn(0x3500), Some(Lsn(0x3600)))
    );
    assert_eq!(d.skip_through(Lsn(0x3600)), Lsn(0x3500));
    assert!(
        d.notices.iter().any(|n| n.level == NoticeLevel::Warn
            && n.message.contains("between 0/3500 and 0/3600")
            && n.message.contains("timeline 2")),
        "{:?}",
        d.notices
    );
    // Without ghosts, marking changes nothing.
    let d = run_promoted_with(0x3000, 0x3500, Some(&slot(0x2000, 0x100)), true).unwrap();
    assert_eq!(d.start, Start::At(Lsn(0x3000)));
    assert_eq!(d.ghosts, None);
    assert_eq!(d.skip_through(Lsn(0x3000)), Lsn(0x3000));
    // The slot must still have survived.
    let err = run_promoted_with(0x3600, 0x3500, None, true).unwrap_err();
    assert!(matches!(err, Refusal::SlotLostInFailover { .. }), "{err}");
}
