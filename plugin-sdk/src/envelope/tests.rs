use serde_json::json;

use super::*;
use crate::{Column, Interval};

fn orders() -> Relation {
    Relation::new(
        16_390,
        "public",
        "orders",
        vec![
            Column::new("id", 20, "int8").key(),
            Column::new("note", 25, "text"),
            Column::new("total", 1700, "numeric"),
        ],
    )
}

fn batch() -> Batch {
    // 2024-05-01T12:34:56.123456Z
    Batch::new(770, 0x1_0000_2000, 1_714_566_896_123_456)
}

/// The batch's messages as JSON values, after checking that the direct
/// JSON writer gives exactly serde_json's bytes.
fn json_of(encoder: &Encoder, batch: &Batch) -> Vec<(String, serde_json::Value)> {
    let messages = encoder
        .encode(batch, |envelope, out| serde_json::to_writer(out, envelope))
        .unwrap();
    let direct = encoder.encode_json(batch).unwrap();
    assert_eq!(direct.len(), messages.len());
    for (direct, message) in direct.iter().zip(&messages) {
        assert_eq!(direct.subject, message.subject);
        assert_eq!(
            std::str::from_utf8(&direct.payload).unwrap(),
            std::str::from_utf8(&message.payload).unwrap()
        );
    }
    messages
        .into_iter()
        .map(|message| {
            (
                message.subject,
                serde_json::from_slice(&message.payload).unwrap(),
            )
        })
        .collect()
}

fn default_encoder() -> Encoder {
    Encoder::from_config("{}").unwrap()
}

#[test]
fn row_changes() {
    let mut batch = batch();
    let orders = batch.add_relation(orders());
    batch.push(RowChange::insert(
        orders,
        0x1_0000_1000,
        vec![1.into(), "hi".into(), Value::Numeric("12.50".into())],
    ));
    batch.push(RowChange::update(
        orders,
        0x1_0000_1100,
        None,
        vec![
            1.into(),
            Value::UnchangedToast,
            Value::Numeric("13.00".into()),
        ],
    ));
    batch.push(RowChange::delete(
        orders,
        0x1_0000_1200,
        vec![1.into(), Value::Null, Value::Null],
    ));
    let source = |lsn: &str| {
        json!({
            "schema": "public", "table": "orders", "lsn": lsn, "commit_lsn": "1/2000",
            "xid": 770, "commit_time": "2024-05-01T12:34:56.123456Z",
            "commit_time_us": 1_714_566_896_123_456_i64,
        })
    };
    assert_eq!(
        json_of(&default_encoder(), &batch),
        vec![
            (
                "cdc.public.orders".to_owned(),
                json!({"op": "c", "source": source("1/1000"), "before": null,
                       "after": {"id": 1, "note": "hi", "total": "12.50"}}),
            ),
            (
                "cdc.public.orders".to_owned(),
                json!({"op": "u", "source": source("1/1100"), "before": null,
                       "after": {"id": 1, "total": "13.00"}, "unchanged_toast": ["note"]}),
            ),
            (
                "cdc.public.orders".to_owned(),
                json!({"op": "d", "source": source("1/1200"),
                       "before": {"id": 1, "note": null, "total": null}, "after": null}),
            ),
        ]
    );
}

#[test]
fn exact_json_text() {
    let mut batch = Batch::new(5, 0x30, 0);
    let t = batch.add_relation(Relation::new(
        1,
        "s",
        "t",
        vec![Column::new("id", 23, "int4")],
    ));
    batch.push(RowChange::insert(t, 0x20, vec![7.into()]));
    let messages = default_encoder()
        .encode(&batch, |envelope, out| serde_json::to_writer(out, envelope))
        .unwrap();
    assert_eq!(
        String::from_utf8(messages[0].payload.clone()).unwrap(),
        r#"{"op":"c","source":{"schema":"s","table":"t","lsn":"0/20","commit_lsn":"0/30","xid":5,"commit_time":"1970-01-01T00:00:00Z","commit_time_us":0},"before":null,"after":{"id":7}}"#
    );
    assert!(messages[0].headers.is_empty());
}

#[test]
fn every_value_kind() {
    let columns = [
        ("null", Value::Null),
        ("bool", Value::Boolean(true)),
        ("int", Value::Int(i64::MIN)),
        ("float", Value::Float(1.5)),
        ("nan", Value::Float(f64::NAN)),
        ("inf", Value::Float(f64::INFINITY)),
        ("ninf", Value::Float(f64::NEG_INFINITY)),
        ("numeric", Value::Numeric("NaN".into())),
        ("text", Value::Text("a\"b".into())),
        ("bytes", Value::Bytes(b"sluice!".to_vec())),
        ("json", Value::Json(r#"{"a": 1}"#.into())),
        (
            "uuid",
            Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        ),
        ("date", Value::Date(19_782)),
        ("time", Value::Time(45_296_500_000)),
        ("ts", Value::Timestamp(-1)),
        ("tstz", Value::Timestamptz(i64::MAX)),
        (
            "interval",
            Value::Interval(Interval {
                months: 13,
                days: -2,
                microseconds: 1_500_000,
            }),
        ),
        ("other", Value::Other("{1,2}".into())),
        ("tab\tkey\"", Value::Text("ü\u{1}\u{7f}\\ \n end".into())),
        ("far", Value::Timestamptz(253_402_300_800_000_000)),
        ("bc", Value::Date(-719_529)),
        ("toast", Value::UnchangedToast),
    ];
    let mut batch = batch();
    let relation = batch.add_relation(Relation::new(
        1,
        "public",
        "kinds",
        columns
            .iter()
            .map(|(name, _)| Column::new(*name, 25, "text"))
            .collect(),
    ));
    batch.push(RowChange::insert(
        relation,
        1,
        columns.iter().map(|(_, v)| v.clone()).collect(),
    ));
    let (_, envelope) = json_of(&default_encoder(), &batch).remove(0);
    assert_eq!(
        envelope["after"],
        json!({
            "null": null, "bool": true, "int": i64::MIN, "float": 1.5, "nan": "NaN",
            "inf": "Infinity", "ninf": "-Infinity", "numeric": "NaN", "text": "a\"b",
            "bytes": "c2x1aWNlIQ==", "json": "{\"a\": 1}",
            "uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "date": "2024-02-29",
            "time": "12:34:56.500000", "ts": "1969-12-31T23:59:59.999999", "tstz": "infinity",
            "interval": "P1Y1M-2DT1.500000S", "other": "{1,2}",
            "tab\tkey\"": "ü\u{1}\u{7f}\\ \n end", "far": "+10000-01-01T00:00:00Z",
            "bc": "-0001-12-31",
        })
    );
}

#[test]
fn base64_padding() {
    for (input, output) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
    ] {
        assert_eq!(Base64(input.as_bytes()).to_string(), output);
    }
    let long = vec![0xFFu8; 1000];
    let text = Base64(&long).to_string();
    assert_eq!(text.len(), 1336);
    assert!(text.starts_with("////") && text.ends_with("/w=="));
}

#[test]
fn truncates_and_messages() {
    let mut batch = batch();
    let a = batch.add_relation(Relation::new(1, "public", "a", Vec::new()));
    let b = batch.add_relation(Relation::new(2, "audit", "b.c", Vec::new()));
    batch.push(Truncate {
        relations: vec![a, b],
        cascade: true,
        restart_identity: false,
        lsn: 16,
    });
    batch.push(LogicalMessage {
        transactional: false,
        prefix: "sluice.heartbeat".into(),
        content: b"hi".to_vec(),
        lsn: 17,
    });
    let encoder = Encoder::from_config(
        r#"{"subject-prefix": "pg.app", "headers": {"Content-Type": "application/json"}}"#,
    )
    .unwrap();
    let out = json_of(&encoder, &batch);
    let subjects: Vec<_> = out.iter().map(|(subject, _)| subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["pg.app.public.a", "pg.app.audit.b_c", "pg.app.messages"]
    );
    assert_eq!(out[1].1["op"], "t");
    assert_eq!(out[1].1["source"]["table"], "b.c");
    assert_eq!(
        out[1].1["truncate"],
        json!({"cascade": true, "restart_identity": false})
    );
    assert_eq!(
        out[2].1,
        json!({"op": "m",
               "source": {"lsn": "0/11", "commit_lsn": "1/2000", "xid": 770,
                          "commit_time": "2024-05-01T12:34:56.123456Z",
                          "commit_time_us": 1_714_566_896_123_456_i64},
               "message": {"prefix": "sluice.heartbeat", "transactional": false, "content": "aGk="}})
    );
    let messages = encoder
        .encode(&batch, |e, out| serde_json::to_writer(out, e))
        .unwrap();
    assert_eq!(
        messages[0].headers,
        vec![("Content-Type".to_owned(), "application/json".to_owned())]
    );
}

#[test]
fn a_bundle_is_the_array_of_the_batch_envelopes() {
    let mut batch = batch();
    let a = batch.add_relation(orders());
    let t = batch.add_relation(Relation::new(2, "public", "t", Vec::new()));
    batch.push(RowChange::insert(
        a,
        8,
        vec![1.into(), "n\"1".into(), Value::Numeric("1.50".into())],
    ));
    batch.push(Truncate {
        relations: vec![t, a],
        cascade: false,
        restart_identity: false,
        lsn: 9,
    });
    batch.push(LogicalMessage {
        transactional: true,
        prefix: "p".into(),
        content: vec![0, 1],
        lsn: 10,
    });
    let single = default_encoder().encode_json(&batch).unwrap();
    let encoder =
        Encoder::from_config(r#"{"subject-prefix": "db", "bundle": "{prefix}.tx"}"#).unwrap();
    let bundled = encoder.encode_json(&batch).unwrap();
    assert_eq!(bundled.len(), 1);
    assert_eq!(bundled[0].subject, "db.tx");
    assert_eq!(bundled[0].event, None, "a bundle names no single event");
    let parts: Vec<&str> = single
        .iter()
        .map(|m| std::str::from_utf8(&m.payload).unwrap())
        .collect();
    assert_eq!(
        std::str::from_utf8(&bundled[0].payload).unwrap(),
        format!("[{}]", parts.join(","))
    );
    // An empty batch (a transform dropped everything) gives no bundle.
    let mut empty = batch.clone();
    empty.events.clear();
    assert!(encoder.encode_json(&empty).unwrap().is_empty());
    // Placeholders other than `{prefix}` make no sense for a bundle.
    assert_eq!(
        Encoder::from_config(r#"{"bundle": "{prefix}.{table}"}"#)
            .unwrap_err()
            .message(),
        "config key `bundle`: unknown placeholder `{table}`; use {prefix}"
    );
}

#[test]
fn subject_templates() {
    let mut batch = batch();
    let t = batch.add_relation(Relation::new(1, "my schema", "*x>", vec![]));
    batch.push(RowChange::insert(t, 1, vec![]));
    let encoder = Encoder::from_config(
        r#"{"subject": "{prefix}.tables.{table}.in.{schema}", "message-subject": "{prefix}-msg"}"#,
    )
    .unwrap();
    assert_eq!(
        json_of(&encoder, &batch)[0].0,
        "cdc.tables._x_.in.my_schema"
    );
    assert_eq!(encoder.message_subject, "cdc-msg");
}

#[test]
fn bad_configs_name_the_key() {
    let error = |config: &str| {
        Encoder::from_config(config)
            .unwrap_err()
            .message()
            .to_owned()
    };
    assert_eq!(
        error(r#"{"subject": "{prefix}.{db}"}"#),
        "config key `subject`: unknown placeholder `{db}`; use {prefix}, {schema}, {table}"
    );
    assert_eq!(
        error(r#"{"message-subject": "{prefix}.{table}"}"#),
        "config key `message-subject`: unknown placeholder `{table}`; use {prefix}"
    );
    assert_eq!(
        error(r#"{"subject": "{prefix"}"#),
        "config key `subject`: `{` without `}` in `{prefix`"
    );
    assert_eq!(
        error(r#"{"subject": "{prefix}..{table}"}"#),
        "config key `subject`: `{prefix}..{table}` makes subjects like `cdc..t`, which have an empty token"
    );
    assert_eq!(
        error(r#"{"subject-prefix": "cdc.>"}"#),
        "config key `subject-prefix`: `cdc.>` cannot start a subject: it would contain a wildcard"
    );
    assert_eq!(
        error(r#"{"subject-prefix": 1}"#),
        "config key `subject-prefix`: invalid type: integer `1`, expected a string"
    );
}

#[test]
fn malformed_rows_are_bad_input() {
    let mut batch = batch();
    let orders = batch.add_relation(orders());
    batch.push(RowChange::insert(
        orders,
        1,
        vec![1.into(), "x".into(), Value::Null],
    ));
    batch.push(RowChange::insert(orders, 2, vec![1.into()]));
    let error = default_encoder()
        .encode(&batch, |e, out| serde_json::to_writer(out, e))
        .unwrap_err();
    assert_eq!(
        error,
        PluginError::bad_input(1, "the new row of public.orders has 1 values for 3 columns")
    );
    batch.events.truncate(1);
    batch.push(RowChange::insert(9, 2, vec![]));
    let error = default_encoder()
        .encode(&batch, |e, out| serde_json::to_writer(out, e))
        .unwrap_err();
    assert_eq!(
        error,
        PluginError::bad_input(1, "the event names relation 9, the batch lists 1")
    );
    assert_eq!(default_encoder().encode_json(&batch).unwrap_err(), error);
}

proptest::proptest! {
    /// The direct JSON writer and serde_json agree on any row of text,
    /// integer and timestamp values (escapes, non-ASCII and extreme years
    /// included).
    #[test]
    fn direct_json_matches_serde_json(
        rows in proptest::collection::vec(
            (any_text(), proptest::num::i64::ANY, proptest::num::i64::ANY, any_text()),
            1..8,
        ),
        lsn in proptest::num::u64::ANY,
        commit_time in proptest::num::i64::ANY,
    ) {
        let mut batch = Batch::new(1, lsn, commit_time);
        let t = batch.add_relation(Relation::new(
            1,
            "s",
            "t",
            vec![
                Column::new("a", 25, "text"),
                Column::new("b", 20, "int8"),
                Column::new("c", 1184, "timestamptz"),
                Column::new("d\u{1}", 1700, "numeric"),
            ],
        ));
        for (i, (a, b, c, d)) in rows.into_iter().enumerate() {
            let values = vec![Value::Text(a), Value::Int(b), Value::Timestamptz(c), Value::Numeric(d)];
            batch.push(RowChange::update(t, lsn ^ i as u64, Some(values.clone()), values));
        }
        json_of(&default_encoder(), &batch);
    }
}

fn any_text() -> impl proptest::strategy::Strategy<Value = String> {
    proptest::string::string_regex("(?s).{0,24}").unwrap()
}
