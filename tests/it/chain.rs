//! The plugin chain under each error policy, on real components: a
//! transform that fails on one specific row, and a sink whose subjects are
//! checked against the pipeline's allowed subjects.

use crate::support::*;
use sluice_host::config::ErrorPolicy;
use sluice_host::lsn::Lsn;
use sluice_host::model::{Batch, Value};
use sluice_host::pipeline::chain::{Chain, Outgoing};

fn chain(
    dir: &std::path::Path,
    transform_config: &str,
    prefix: &str,
    policy: ErrorPolicy,
) -> Chain {
    let rt = runtime(dir);
    let t = rt
        .load_transform(spec("misbehave", transform_config))
        .unwrap()
        .instantiate()
        .unwrap();
    let sink_config = format!(r#"{{"subject-prefix": "{prefix}"}}"#);
    let s = rt
        .load_sink(spec("json-sink", &sink_config))
        .unwrap()
        .instantiate()
        .unwrap();
    let allowed = sluice_host::publish::SubjectFilter::parse(["cdc.>"]).unwrap();
    Chain::new(vec![t], s, policy, allowed)
}

/// Five inserts into public.users, ids 1 to 5.
fn five_rows() -> Batch {
    let rel = relation(
        16384,
        "public",
        "users",
        vec![column("id", 20, "int8"), column("email", 25, "text")],
    );
    let events = (1..=5)
        .map(|id| {
            insert(
                0,
                0x100 + id as u64,
                vec![Value::Int(id), Value::Text(format!("u{id}@x"))],
            )
        })
        .collect();
    batch(42, vec![rel], events)
}

fn ids(messages: &[Outgoing]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            if m.error.is_some() {
                let body: serde_json::Value = serde_json::from_slice(&m.message.payload).unwrap();
                return format!("dead-letter:{}", body["event-index"]);
            }
            let v: serde_json::Value = serde_json::from_slice(&m.message.payload).unwrap();
            v["after"]["id"].to_string()
        })
        .collect()
}

const FAIL_ON_3: &str = r#"{"fail-on": {"column": "id", "equals": 3}}"#;
const TRAP_ON_3: &str = r#"{"on": "trap-when", "column": "id", "equals": 3}"#;

#[test]
fn stop_halts_with_the_plugins_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = chain(dir.path(), FAIL_ON_3, "cdc", ErrorPolicy::Stop);
    let err = c.process(five_rows(), 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"misbehave\" could not process event 2: misbehave: told to fail on id = 3"
    );
}

#[test]
fn dead_letter_isolates_the_failing_row_and_keeps_the_rest_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let policy = ErrorPolicy::DeadLetter {
        subject: "cdc.dead".into(),
    };
    for config in [FAIL_ON_3, TRAP_ON_3] {
        let mut c = chain(dir.path(), config, "cdc", policy.clone());
        let out = c.process(five_rows(), 10).unwrap();
        assert_eq!(
            ids(&out.messages),
            ["1", "2", "dead-letter:12", "4", "5"],
            "{config}"
        );
        assert_eq!((out.dead_lettered, out.skipped), (1, 0));
        let dl = &out.messages[2].message;
        assert_eq!(dl.subject, "cdc.dead");
        assert!(dl.headers.is_empty(), "the publisher adds the headers");
        let source = out.messages[2].source.as_ref().unwrap();
        assert_eq!(source.table.as_deref(), Some("public.users"));
        assert_eq!((source.op, source.lsn), ("insert", Lsn(0x103)));
        let error = out.messages[2].error.as_deref().unwrap();
        assert!(error.starts_with("plugin \"misbehave\""), "{error}");
        let body: serde_json::Value = serde_json::from_slice(&dl.payload).unwrap();
        assert_eq!(body["event-index"], 12);
        assert_eq!(
            body["event"]["row"]["new"][0],
            serde_json::json!({"int": 3})
        );
        assert_eq!(body["relations"][0]["name"], "users");
        // Other messages keep their subject and their event's source; all
        // are numbered within the batch, as if it had gone through whole.
        assert_eq!(out.messages[0].message.subject, "cdc.public.users");
        let lsns: Vec<u64> = out
            .messages
            .iter()
            .map(|m| m.source.as_ref().unwrap().lsn.0)
            .collect();
        assert_eq!(lsns, [0x101, 0x102, 0x103, 0x104, 0x105]);
        let identity: Vec<(u64, u32)> = out
            .messages
            .iter()
            .map(|m| (m.event_index, m.output_index))
            .collect();
        assert_eq!(identity, [(10, 0), (10, 1), (10, 2), (10, 3), (10, 4)]);
    }
}

#[test]
fn skip_counts_the_failing_row_and_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = chain(dir.path(), FAIL_ON_3, "cdc", ErrorPolicy::Skip);
    let out = c.process(five_rows(), 0).unwrap();
    assert_eq!(ids(&out.messages), ["1", "2", "4", "5"]);
    assert_eq!((out.dead_lettered, out.skipped), (0, 1));
}

#[test]
fn a_batch_without_failures_goes_through_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = chain(dir.path(), "{}", "cdc", ErrorPolicy::Skip);
    let out = c.process(five_rows(), 7).unwrap();
    assert_eq!(ids(&out.messages), ["1", "2", "3", "4", "5"]);
    let identity: Vec<(u64, u32)> = out
        .messages
        .iter()
        .map(|m| (m.event_index, m.output_index))
        .collect();
    assert_eq!(identity, [(7, 0), (7, 1), (7, 2), (7, 3), (7, 4)]);
    // Each message names its event: table, operation and LSN for the headers.
    let sources: Vec<(Option<&str>, &str, u64)> = out
        .messages
        .iter()
        .map(|m| {
            let s = m.source.as_ref().unwrap();
            (s.table.as_deref(), s.op, s.lsn.0)
        })
        .collect();
    assert_eq!(
        sources,
        (1..=5)
            .map(|i| (Some("public.users"), "insert", 0x100 + i))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_sink_publishing_outside_the_allowed_subjects_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = chain(dir.path(), "{}", "secret", ErrorPolicy::Stop);
    let err = c.process(five_rows(), 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"json-sink\" returned a message for subject `secret.public.users`, which this pipeline may not publish to (allowed: cdc.>)"
    );
    // Under dead-letter, no message reaches a forbidden subject either.
    let policy = ErrorPolicy::DeadLetter {
        subject: "cdc.dead".into(),
    };
    let mut c = chain(dir.path(), "{}", "secret", policy);
    let out = c.process(five_rows(), 0).unwrap();
    assert_eq!(out.dead_lettered, 5);
    assert!(out.messages.iter().all(|m| m.message.subject == "cdc.dead"));
}
