use super::*;

fn record() -> OffsetRecord {
    OffsetRecord::new(
        SlotName::new("orders").unwrap(),
        "1/16B3748".parse().unwrap(),
        7_312_345_678_901_234_567,
        3,
    )
    .with_transaction(745, "1/16B3700".parse().unwrap(), 1_700_000_000_000_000)
}

#[test]
fn round_trips_as_readable_json() {
    let r = record();
    let bytes = r.encode();
    let text = std::str::from_utf8(&bytes).unwrap();
    for field in [
        r#""version": 3"#,
        r#""slot": "orders""#,
        r#""commit_end_lsn": "1/16B3748""#,
        r#""event_lsn": "1/16B3700""#,
        r#""xid": 745"#,
        r#""system_id": "7312345678901234567""#,
        r#""timeline": 3"#,
    ] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
    let back = OffsetRecord::decode(&bytes).unwrap();
    assert_eq!(
        back,
        OffsetRecord {
            written_at_us: back.written_at_us,
            ..r
        }
    );
    assert!(back.written_at_us > 0);
}

#[test]
fn reads_version_1_and_carries_snapshot_progress() {
    let v1 = String::from_utf8(record().encode())
        .unwrap()
        .replace(r#""version": 3"#, r#""version": 1"#);
    let back = OffsetRecord::decode(v1.as_bytes()).unwrap();
    assert_eq!(back.snapshot, None);
    let progress = crate::position::SnapshotProgress {
        tables: vec![crate::position::TableProgress::new("public", "orders")],
    };
    let with = record().with_snapshot(Some(progress.clone()));
    let text = String::from_utf8(with.encode()).unwrap();
    assert!(text.contains(r#""table": "orders""#), "{text}");
    let back = OffsetRecord::decode(text.as_bytes()).unwrap();
    assert_eq!(back.snapshot, Some(progress.clone()));
    assert_eq!(back.moved_to(Lsn(1)).snapshot, Some(progress));
}

#[test]
fn reads_version_2_and_carries_backfills() {
    // A version 2 record, as sluice wrote it before backfills resumed.
    let v2 = r#"{
  "version": 2,
  "slot": "orders",
  "commit_end_lsn": "1/16B3748",
  "event_lsn": null,
  "xid": null,
  "commit_time_us": null,
  "system_id": "7312345678901234567",
  "timeline": 3,
  "written_at_us": 1700000000000000,
  "snapshot": {"tables": [{"schema": "public", "table": "orders", "point": "1/10", "after": ["7"], "rows": 7, "done": false}]}
}"#;
    let back = OffsetRecord::decode(v2.as_bytes()).unwrap();
    assert_eq!(back.backfills, []);
    assert_eq!(
        back.snapshot.unwrap().tables[0].after,
        Some(vec!["7".into()])
    );
    let text = String::from_utf8(record().encode()).unwrap();
    assert!(!text.contains("backfills"), "nothing to say: {text}");

    let running = BackfillProgress {
        after: Some(vec!["42".into(), "it's".into()]),
        rows: 42,
        ..BackfillProgress::new(Lsn(0x16B3000), "s.items", Some("id > 5".into()))
    };
    let queued = BackfillProgress::new(Lsn(0x16B3100), "orders", None);
    let with = record().with_backfills(vec![running.clone(), queued.clone()]);
    let text = String::from_utf8(with.encode()).unwrap();
    for field in [
        r#""request_lsn": "0/16B3000""#,
        r#""table": "s.items""#,
        r#""where": "id > 5""#,
        r#""after": ["#,
        r#""rows": 42"#,
    ] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
    let back = OffsetRecord::decode(text.as_bytes()).unwrap();
    assert_eq!(back.backfills, [running.clone(), queued.clone()]);
    assert_eq!(back.moved_to(Lsn(1)).backfills, [running, queued]);
}

#[test]
fn refuses_malformed_and_newer_records() {
    let err = OffsetRecord::decode(b"{\"version\": 4, \"future\": true}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "offset record format version 4 is not supported by this sluice (it reads versions 1 to 3); it was written by a newer sluice"
    );
    for bad in [
        &b""[..],
        b"{}",
        b"[1]",
        b"{\"version\": 1}",
        b"{\"version\": 1, \"slot\": \"BAD\"}",
    ] {
        let err = OffsetRecord::decode(bad).unwrap_err();
        assert!(matches!(err, OffsetError::Malformed(_)), "{err}");
    }
    let mut text = String::from_utf8(record().encode()).unwrap();
    text = text.replace("\"timeline\"", "\"timelime\"");
    let err = OffsetRecord::decode(text.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("timelime"), "{err}");
}
