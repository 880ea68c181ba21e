use super::*;
use crate::model::{RowChange, Truncate, Value};

fn batch(events: Vec<Event>) -> Batch {
    Batch {
        xid: 1,
        commit_lsn: Lsn(100),
        ..Batch::on_table_t(&["id"], events)
    }
}

fn row(op: Operation, relation: u32, old: Option<usize>, new: Option<usize>) -> Event {
    Event::Row(RowChange {
        op,
        relation,
        lsn: Lsn(1),
        old: old.map(|n| vec![Value::Null; n]),
        new: new.map(|n| vec![Value::Int(1); n]),
    })
}

fn check_events(events: Vec<Event>) -> Result<(), String> {
    let b = batch(events);
    check(TransactionId::of(&b), &b).map_err(|e| e.to_string())
}

#[test]
fn accepts_well_formed_batches() {
    check_events(vec![
        row(Operation::Insert, 0, None, Some(1)),
        row(Operation::Update, 0, None, Some(1)),
        row(Operation::Update, 0, Some(1), Some(1)),
        row(Operation::Delete, 0, Some(1), None),
        Event::Truncate(Truncate {
            relations: vec![0],
            cascade: false,
            restart_identity: false,
            lsn: Lsn(2),
        }),
    ])
    .unwrap();
}

#[test]
fn names_what_is_wrong() {
    assert_eq!(
        check_events(vec![row(Operation::Insert, 3, None, Some(1))]).unwrap_err(),
        "event 0 refers to relation 3, but the batch has 1 relations"
    );
    assert_eq!(
        check_events(vec![
            row(Operation::Insert, 0, None, Some(1)),
            row(Operation::Update, 0, None, Some(2))
        ])
        .unwrap_err(),
        "event 1 has 2 new values, but relation 0 (public.t) has 1 columns"
    );
    assert_eq!(
        check_events(vec![row(Operation::Insert, 0, None, None)]).unwrap_err(),
        "event 0 is an insert without new values"
    );
    assert_eq!(
        check_events(vec![row(Operation::Delete, 0, Some(1), Some(1))]).unwrap_err(),
        "event 0 is a delete with new values"
    );
    assert_eq!(
        check_events(vec![Event::Truncate(Truncate {
            relations: vec![0, 1],
            cascade: false,
            restart_identity: false,
            lsn: Lsn(2)
        })])
        .unwrap_err(),
        "event 0 refers to relation 1, but the batch has 1 relations"
    );
}

#[test]
fn refuses_a_moved_commit_lsn() {
    let input = batch(vec![]);
    let mut output = input.clone();
    output.commit_lsn = Lsn(99);
    assert_eq!(
        check(TransactionId::of(&input), &output)
            .unwrap_err()
            .to_string(),
        "it changed the batch's commit-lsn (a transform may change events and relations only)"
    );
}
