use sluice_plugin_sdk::{Column, LogicalMessage, PluginError, Truncate, Value, testing};

use super::*;

/// Two tables; posts have a `status`. Events: 0 insert post(draft),
/// 1 insert post(published), 2 delete post(id 3, status null in old),
/// 3 insert audit.log, 4 truncate posts+log, 5 logical message.
fn batch() -> Batch {
    let mut batch = Batch::new(1, 0x100, 0);
    let posts = batch.add_relation(Relation::new(
        1,
        "public",
        "posts",
        vec![
            Column::new("id", 23, "int4").key(),
            Column::new("status", 25, "text"),
        ],
    ));
    let log = batch.add_relation(Relation::new(
        2,
        "audit",
        "log",
        vec![Column::new("id", 23, "int4")],
    ));
    batch.push(RowChange::insert(posts, 1, vec![1.into(), "draft".into()]));
    batch.push(RowChange::insert(
        posts,
        2,
        vec![2.into(), "published".into()],
    ));
    batch.push(RowChange::delete(posts, 3, vec![3.into(), Value::Null]));
    batch.push(RowChange::insert(log, 4, vec![9.into()]));
    batch.push(Truncate {
        relations: vec![posts, log],
        cascade: false,
        restart_identity: false,
        lsn: 5,
    });
    batch.push(LogicalMessage {
        transactional: true,
        prefix: "p".into(),
        content: vec![],
        lsn: 6,
    });
    batch
}

/// Runs the filter and describes what is left: event LSNs, and for the
/// truncate the tables it still names.
fn run(config: &str) -> Vec<String> {
    let out = Filter::init(config).unwrap().transform(batch()).unwrap();
    out.events
        .iter()
        .map(|event| match event {
            Event::Truncate(t) => format!(
                "truncate {}",
                t.relations
                    .iter()
                    .map(|&r| out.relations[r as usize].name.as_str())
                    .collect::<Vec<_>>()
                    .join("+")
            ),
            event => event.lsn().to_string(),
        })
        .collect()
}

#[test]
fn empty_config_passes_everything() {
    assert_eq!(run("{}"), ["1", "2", "3", "4", "truncate posts+log", "6"]);
}

#[test]
fn drop_by_column_value() {
    testing::reset();
    assert_eq!(
        run(r#"{"drop": {"where": {"column": "status", "equals": "draft"}}}"#),
        ["2", "3", "4", "truncate posts+log", "6"]
    );
    assert_eq!(testing::counter("events_filtered"), 1);
    assert_eq!(
        run(r#"{"drop": {"where": {"column": "status", "in": ["draft", "published"]}}}"#),
        ["3", "4", "truncate posts+log", "6"]
    );
    // The delete's old row has a null status.
    assert_eq!(
        run(r#"{"drop": {"where": {"column": "status", "is-null": true}}}"#),
        ["1", "2", "4", "truncate posts+log", "6"]
    );
    assert_eq!(
        run(r#"{"drop": {"where": {"column": "id", "equals": 9}}}"#),
        ["1", "2", "3", "truncate posts+log", "6"]
    );
}

#[test]
fn keep_by_table_narrows_truncates_and_drops_messages() {
    assert_eq!(
        run(r#"{"keep": {"tables": ["public.posts"]}}"#),
        ["1", "2", "3", "truncate posts"]
    );
    assert_eq!(
        run(r#"{"keep": {"schemas": ["audit"]}}"#),
        ["4", "truncate log"]
    );
    assert_eq!(
        run(r#"{"drop": {"tables": ["audit.*"]}}"#),
        ["1", "2", "3", "truncate posts", "6"]
    );
}

#[test]
fn drop_by_operation() {
    assert_eq!(
        run(r#"{"drop": {"operations": ["delete", "truncate", "message"]}}"#),
        ["1", "2", "4"]
    );
    assert_eq!(
        run(r#"{"keep": {"operations": ["insert"]}, "drop": {"tables": ["log"]}}"#),
        ["1", "2"]
    );
    // Conditions of one matcher must all hold.
    assert_eq!(
        run(r#"{"drop": {"operations": ["insert"], "where": {"column": "id", "equals": 1}}}"#),
        ["2", "3", "4", "truncate posts+log", "6"]
    );
}

#[test]
fn bad_configs_name_the_key() {
    let error = |config: &str| match Filter::init(config) {
        Err(PluginError::BadConfig(message)) => message,
        other => panic!("expected bad-config, got {other:?}"),
    };
    assert_eq!(
        error(r#"{"drop": {"operations": ["upsert"]}}"#),
        "config key `drop.operations[0]`: unknown variant `upsert`, expected one of `insert`, `update`, `delete`, `read`, `truncate`, `message`"
    );
    assert_eq!(
        error(r#"{"drop": {"where": {"column": "a", "equals": 1, "in": [2]}}}"#),
        "config key `drop.where`: give exactly one of `equals`, `in`, `is-null`"
    );
    assert_eq!(
        error(r#"{"keep": {"tables": ["public."]}}"#),
        "config key `keep.tables[0]`: `public.` is not a table pattern: expected `schema.table`, `schema.*` or `table`"
    );
    assert_eq!(
        error(r#"{"where": {}}"#),
        "config: unknown field `where`, expected `keep` or `drop`"
    );
}
