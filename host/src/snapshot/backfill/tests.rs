use super::*;

#[test]
fn requests_read_back_and_default_to_public() {
    let r: BackfillRequest = serde_json::from_str(r#"{"table":"items","where":"id > 5"}"#).unwrap();
    assert_eq!(r.schema_and_table(), ("public", "items"));
    assert_eq!(r.condition.as_deref(), Some("id > 5"));
    let r: BackfillRequest = serde_json::from_str(r#"{"table":"s.t"}"#).unwrap();
    assert_eq!(r.schema_and_table(), ("s", "t"));
    assert!(serde_json::from_str::<BackfillRequest>(r#"{"table":"t","x":1}"#).is_err());
}

fn request_batch(lsn: u64, content: &str) -> Batch {
    Batch {
        xid: 7,
        commit_lsn: Lsn(lsn + 8),
        commit_time: 0,
        first: true,
        last: true,
        relations: vec![],
        events: vec![Event::Message(crate::model::LogicalMessage {
            transactional: true,
            prefix: "sluice.signal.p".into(),
            content: content.as_bytes().to_vec(),
            lsn: Lsn(lsn),
        })],
    }
}

#[test]
fn requests_are_recorded_once_and_resumed_ones_come_first() {
    let resumed = BackfillProgress {
        after: Some(vec!["41".into()]),
        rows: 41,
        ..BackfillProgress::new(Lsn(100), "items", None)
    };
    let mut b = Backfills::new(
        "p",
        ConnInfo::parse("host=localhost user=u dbname=d").unwrap(),
        "pub",
        10,
        256,
        vec![resumed.clone()],
    );
    assert_eq!(b.changed(), None, "a resumed state is what is recorded");
    // The resumed request, replayed from the slot: not queued twice.
    let mut batch = request_batch(100, r#"{"table":"items"}"#);
    b.observe(&mut batch);
    assert!(batch.events.is_empty(), "signals leave the stream");
    assert_eq!(b.changed(), None);
    // A new request is queued after it, and recorded.
    b.observe(&mut request_batch(200, r#"{"table":"s.t","where":"x"}"#));
    let queued = BackfillProgress::new(Lsn(200), "s.t", Some("x".into()));
    assert_eq!(b.changed(), Some(vec![resumed.clone(), queued.clone()]));
    assert_eq!(b.changed(), None);
    b.observe(&mut request_batch(200, r#"{"table":"s.t","where":"x"}"#));
    b.observe(&mut request_batch(300, "not json"));
    assert_eq!(b.changed(), None);
    assert_eq!(b.state(), [resumed, queued]);
}

#[test]
fn keys_compare_by_value() {
    let row = vec![Value::Int(1), Value::Text("a".into()), Value::Null];
    assert_eq!(
        key_text(&[1, 0], &row),
        key_text(&[1, 0], &[Value::Int(1), Value::Text("a".into())])
    );
    assert_ne!(key_text(&[0], &row), key_text(&[0], &[Value::Int(2)]));
}
