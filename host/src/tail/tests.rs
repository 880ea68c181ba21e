use super::*;
use crate::model::{LogicalMessage, RowChange, Truncate};

fn batch(events: Vec<Event>) -> Batch {
    Batch::on_table_t(&["id", "b"], events)
}

fn text(lines: &[TailLine]) -> Vec<String> {
    lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap())
        .collect()
}

#[test]
fn one_line_per_event_with_columns_in_order() {
    let b = batch(vec![
        Event::Row(RowChange {
            op: Operation::Update,
            relation: 0,
            lsn: Lsn(0x10),
            old: Some(vec![Value::Int(1), Value::Null]),
            new: Some(vec![Value::Int(2), Value::UnchangedToast]),
        }),
        Event::Truncate(Truncate {
            relations: vec![0],
            cascade: true,
            restart_identity: false,
            lsn: Lsn(0x20),
        }),
        Event::Message(LogicalMessage {
            transactional: true,
            prefix: "p".into(),
            content: vec![0, 0xff],
            lsn: Lsn(0x30),
        }),
    ]);
    assert_eq!(
        text(&lines(&b).unwrap()),
        [
            r#"{"xid":7,"commit-lsn":"0/100","commit-time":5,"op":"update","schema":"public","table":"t","lsn":"0/10","old":{"id":{"int":1},"b":"null"},"new":{"id":{"int":2},"b":"unchanged-toast"}}"#,
            r#"{"xid":7,"commit-lsn":"0/100","commit-time":5,"op":"truncate","lsn":"0/20","tables":["public.t"],"cascade":true,"restart-identity":false}"#,
            r#"{"xid":7,"commit-lsn":"0/100","commit-time":5,"op":"message","lsn":"0/30","transactional":true,"prefix":"p","content":"00ff"}"#,
        ]
    );
}

#[test]
fn a_malformed_batch_is_an_error_not_a_panic() {
    let row = |relation, new: Vec<Value>| {
        Event::Row(RowChange {
            op: Operation::Insert,
            relation,
            lsn: Lsn(1),
            old: None,
            new: Some(new),
        })
    };
    let err = lines(&batch(vec![row(3, vec![])])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a batch of transaction 7 is invalid: an event names relation 3, but the batch lists 1"
    );
    let err = lines(&batch(vec![row(0, vec![Value::Int(1)])])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a batch of transaction 7 is invalid: a row of public.t has 1 new values for 2 columns"
    );
    let mut delete = batch(vec![row(0, vec![Value::Int(1), Value::Null])]);
    if let Event::Row(r) = &mut delete.events[0] {
        r.op = Operation::Delete;
    }
    let err = lines(&delete).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a batch of transaction 7 is invalid: a delete of public.t has no old values"
    );
}
