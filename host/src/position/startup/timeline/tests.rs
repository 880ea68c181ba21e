use super::*;

fn name() -> SlotName {
    SlotName::new("orders").unwrap()
}

fn synced_slot(s: u64) -> SlotState {
    SlotState {
        plugin: Some("pgoutput".into()),
        database: Some("app".into()),
        confirmed_flush_lsn: Some(Lsn(s)),
        restart_lsn: Some(Lsn(s - 0x10)),
        failover: Some(true),
        synced: Some(true),
        ..SlotState::default()
    }
}

fn history() -> Vec<TimelineSwitch> {
    vec![
        TimelineSwitch {
            timeline: 1,
            switch_point: Lsn(0x1000),
        },
        TimelineSwitch {
            timeline: 2,
            switch_point: Lsn(0x5000),
        },
    ]
}

fn check(
    from: u32,
    to: u32,
    end: Option<u64>,
    slot: Option<&SlotState>,
) -> Result<Option<TimelineChange>, Refusal> {
    check_with(from, to, end, slot, false)
}

fn check_with(
    from: u32,
    to: u32,
    end: Option<u64>,
    slot: Option<&SlotState>,
    mark_ghosts: bool,
) -> Result<Option<TimelineChange>, Refusal> {
    let name = name();
    let history = history();
    check_timeline(&TimelineInputs {
        slot_name: &name,
        from,
        to,
        history: Some(&history),
        streamed_end: end.map(Lsn),
        streamed_what: "the stored offset",
        slot,
        mark_ghosts,
    })
}

#[test]
fn same_timeline_is_no_change() {
    assert_eq!(check(2, 2, Some(0x9999), None), Ok(None));
}

#[test]
fn promotion_at_or_below_the_switch_point_resumes() {
    let slot = synced_slot(0x0900);
    for end in [None, Some(0x0800), Some(0x1000)] {
        let change = check(1, 3, end, Some(&slot)).unwrap().unwrap();
        assert_eq!(change.switch_point, Lsn(0x1000));
        assert_eq!((change.from, change.to), (1, 3));
        assert_eq!(change.ghost_end, None);
        // Marking changes nothing when there is nothing to mark.
        let marked = check_with(1, 3, end, Some(&slot), true).unwrap().unwrap();
        assert_eq!(marked, change);
    }
    // From timeline 2, the second switch point applies.
    let change = check(2, 3, Some(0x4000), Some(&slot)).unwrap().unwrap();
    assert_eq!(change.switch_point, Lsn(0x5000));
}

#[test]
fn changes_past_the_switch_point_are_ghosts() {
    let slot = synced_slot(0x0900);
    let err = check(1, 2, Some(0x1001), Some(&slot)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Refusal::GhostChanges { .. }), "{text}");
    for part in [
        "0/1000",
        "0/1001",
        "timeline 1",
        "timeline 2",
        "synchronized_standby_slots",
        "source.on-ghost-changes = \"mark\"",
    ] {
        assert!(text.contains(part), "`{part}` missing in: {text}");
    }
}

#[test]
fn a_lost_slot_is_refused_with_its_cause() {
    let temporary = SlotState {
        temporary: true,
        ..synced_slot(0x0900)
    };
    let invalidated = SlotState {
        invalidation_reason: Some("wal_removed".into()),
        ..synced_slot(0x0900)
    };
    for (slot, cause) in [
        (None, "does not exist"),
        (Some(&temporary), "temporary"),
        (Some(&invalidated), "wal_removed"),
    ] {
        let err = check(1, 2, Some(0x0800), slot).unwrap_err();
        assert!(err.to_string().contains(cause), "{err}");
        assert!(err.to_string().contains("\"orders\""), "{err}");
    }
}

#[test]
fn lower_timelines_and_foreign_histories_are_refused() {
    let slot = synced_slot(0x0900);
    let err = check(3, 2, None, Some(&slot)).unwrap_err();
    assert!(matches!(err, Refusal::LowerTimeline { .. }), "{err}");
    let err = check(5, 7, None, Some(&slot)).unwrap_err();
    assert!(matches!(err, Refusal::TimelineNotInHistory { .. }), "{err}");
}

#[test]
fn ghost_changes_are_accepted_to_be_marked() {
    let slot = synced_slot(0x0900);
    let change = check_with(1, 2, Some(0x1001), Some(&slot), true)
        .unwrap()
        .unwrap();
    assert_eq!(
        change,
        TimelineChange {
            from: 1,
            to: 2,
            switch_point: Lsn(0x1000),
            ghost_end: Some(Lsn(0x1001)),
        }
    );
    // From timeline 2 to 3: the range starts at timeline 2's end.
    let change = check_with(2, 3, Some(0x6000), Some(&slot), true)
        .unwrap()
        .unwrap();
    assert_eq!(change.switch_point, Lsn(0x5000));
    assert_eq!(change.ghost_end, Some(Lsn(0x6000)));
}

#[test]
fn marking_ghosts_still_needs_the_slot() {
    let temporary = SlotState {
        temporary: true,
        ..synced_slot(0x0900)
    };
    for slot in [None, Some(&temporary)] {
        let err = check_with(1, 2, Some(0x1001), slot, true).unwrap_err();
        assert!(matches!(err, Refusal::SlotLostInFailover { .. }), "{err}");
    }
    // A lower timeline or a foreign history is no promotion to mark.
    let slot = synced_slot(0x0900);
    let err = check_with(3, 2, Some(0x9000), Some(&slot), true).unwrap_err();
    assert!(matches!(err, Refusal::LowerTimeline { .. }), "{err}");
    let err = check_with(5, 7, Some(0x9000), Some(&slot), true).unwrap_err();
    assert!(matches!(err, Refusal::TimelineNotInHistory { .. }), "{err}");
}
