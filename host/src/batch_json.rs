//! The JSON form of batches as `sluice plugin run --input` reads them: one
//! JSON array of batches, or batches one after another (JSON lines), each
//! the WIT `batch` record in JSON (see [`crate::model::Batch`]).
//!
//! What this keeps true: a batch that reaches a plugin from here could
//! have come from the decoder. Every relation index is in range, every row
//! has its relation's column count and the values its operation needs,
//! every value's tag fits its column's type (and numeric and UUID text has
//! the form PostgreSQL prints), LSNs are text (`"0/16B3600"`, as everywhere
//! in Sluice's JSON), event LSNs never go back and never pass their commit
//! LSN, and commit LSNs never go back from one batch to the next. A
//! mistake is the input's, and is reported with its position (batch,
//! event, column), never blamed on a plugin.

use serde::Deserialize as _;

use crate::lsn::Lsn;
use crate::model::{Batch, Event};

/// What is wrong with the input, and where.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The text is not a JSON array of batches.
    #[error("not a list of batches")]
    Array(#[source] serde_json::Error),
    /// Batch `index` is not the JSON form of a batch.
    #[error("batch {index} is not a valid batch")]
    Syntax {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    /// Batch `index` parses but could not have come from PostgreSQL.
    #[error("batch {index}: {problem}")]
    Invalid { index: usize, problem: String },
}

/// Parses and checks every batch of `text`.
pub fn read(text: &str) -> Result<Vec<Batch>, InputError> {
    let raw: Vec<serde_json::Value> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text).map_err(InputError::Array)?
    } else {
        serde_json::Deserializer::from_str(text)
            .into_iter::<serde_json::Value>()
            .enumerate()
            .map(|(index, b)| b.map_err(|source| InputError::Syntax { index, source }))
            .collect::<Result<_, _>>()?
    };
    let mut batches = Vec::with_capacity(raw.len());
    let mut last_commit = Lsn::ZERO;
    for (index, value) in raw.into_iter().enumerate() {
        let invalid = |problem| InputError::Invalid { index, problem };
        numeric_lsn(&value).map_or(Ok(()), |at| {
            Err(invalid(format!(
                "{at} is a JSON number; write LSNs as text like \"0/16B3600\""
            )))
        })?;
        let batch =
            Batch::deserialize(value).map_err(|source| InputError::Syntax { index, source })?;
        check(&batch, last_commit).map_err(invalid)?;
        last_commit = batch.commit_lsn;
        batches.push(batch);
    }
    Ok(batches)
}

/// The path of the first LSN written as a JSON number, if any.
fn numeric_lsn(batch: &serde_json::Value) -> Option<String> {
    if batch.get("commit-lsn").is_some_and(|v| v.is_number()) {
        return Some("commit-lsn".to_owned());
    }
    let events = batch.get("events")?.as_array()?;
    events.iter().enumerate().find_map(|(i, e)| {
        let body = e.as_object()?.values().next()?;
        body.get("lsn")
            .is_some_and(|v| v.is_number())
            .then(|| format!("event {i}: lsn"))
    })
}

/// Everything beyond the JSON shape (see the module documentation).
fn check(batch: &Batch, previous_commit: Lsn) -> Result<(), String> {
    if batch.commit_lsn < previous_commit {
        return Err(format!(
            "commit-lsn {} is before the previous batch's commit-lsn {previous_commit}",
            batch.commit_lsn
        ));
    }
    crate::plugin::check_shape(batch).map_err(|e| e.to_string())?;
    let mut previous = Lsn::ZERO;
    for (i, event) in batch.events.iter().enumerate() {
        let lsn = event.lsn();
        if lsn < previous {
            return Err(format!(
                "event {i}: lsn {lsn} is before the previous event's lsn {previous}"
            ));
        }
        if lsn > batch.commit_lsn {
            return Err(format!(
                "event {i}: lsn {lsn} is after the batch's commit-lsn {}",
                batch.commit_lsn
            ));
        }
        previous = lsn;
        if let Event::Row(row) = event {
            // check_shape has verified the index and the value counts.
            let Some(relation) = batch.relations.get(row.relation as usize) else {
                continue;
            };
            for (side, values) in [("old", &row.old), ("new", &row.new)] {
                for (value, column) in values.iter().flatten().zip(&relation.columns) {
                    crate::pgoutput::check_value(column.type_oid, &column.type_name, value)
                        .map_err(|e| {
                            format!("event {i}: {side} value of column {}: {e}", column.name)
                        })?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"xid":1,"commit-lsn":"0/10","commit-time":0,"events":[]}"#;

    fn with_row(value: &str, type_oid: u32, type_name: &str) -> String {
        format!(
            r#"{{"xid":1,"commit-lsn":"0/20","commit-time":0,
            "relations":[{{"oid":1,"schema":"public","name":"t","columns":[
              {{"name":"c","type-oid":{type_oid},"type-name":"{type_name}"}}]}}],
            "events":[{{"row":{{"op":"insert","relation":0,"lsn":"0/18","new":[{value}]}}}}]}}"#
        )
    }

    fn problem(text: &str) -> String {
        read(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_arrays_and_json_lines() {
        assert_eq!(read(&format!("[{ONE},{ONE}]")).unwrap().len(), 2);
        assert_eq!(read(&format!("{ONE}\n{ONE}\n{ONE}\n")).unwrap().len(), 3);
        assert_eq!(read("\n").unwrap().len(), 0);
        assert!(
            read(&with_row(
                r#"{"uuid":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}"#,
                2950,
                "uuid"
            ))
            .is_ok()
        );
        assert!(read(&with_row(r#"{"numeric":"-12.340"}"#, 1700, "numeric")).is_ok());
    }

    #[test]
    fn says_which_batch_is_wrong() {
        let e = read(&format!("{ONE}\n{{\"xid\":2}}\n")).unwrap_err();
        assert!(matches!(e, InputError::Syntax { index: 1, .. }), "{e}");
    }

    #[test]
    fn refuses_what_postgresql_could_not_have_sent() {
        assert_eq!(
            problem(&with_row(r#"{"uuid":"not-a-uuid"}"#, 2950, "uuid")),
            "batch 0: event 0: new value of column c: `not-a-uuid` is not a UUID such as `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`"
        );
        assert_eq!(
            problem(&with_row(r#"{"numeric":"12abc"}"#, 1700, "numeric")),
            "batch 0: event 0: new value of column c: `12abc` is not a decimal number such as `-12.340`, `NaN`, `Infinity` or `-Infinity`"
        );
        assert_eq!(
            problem(&with_row(r#"{"text":"x"}"#, 23, "int4")),
            "batch 0: event 0: new value of column c: a text value does not fit a column of type int4 (OID 23)"
        );
        assert_eq!(
            problem(
                &with_row(r#"{"int":1}"#, 23, "int4").replace(r#""relation":0"#, r#""relation":3"#)
            ),
            "batch 0: event 0 refers to relation 3, but the batch has 1 relations"
        );
        assert_eq!(
            problem(
                &with_row(r#"{"int":1}"#, 23, "int4").replace(r#""lsn":"0/18""#, r#""lsn":24"#)
            ),
            "batch 0: event 0: lsn is a JSON number; write LSNs as text like \"0/16B3600\""
        );
        assert_eq!(
            problem(&ONE.replace(r#""0/10""#, "16")),
            "batch 0: commit-lsn is a JSON number; write LSNs as text like \"0/16B3600\""
        );
        assert_eq!(
            problem(
                &with_row(r#"{"int":1}"#, 23, "int4").replace(r#""lsn":"0/18""#, r#""lsn":"0/28""#)
            ),
            "batch 0: event 0: lsn 0/28 is after the batch's commit-lsn 0/20"
        );
        assert_eq!(
            problem(&format!("{}\n{ONE}", with_row(r#"{"int":1}"#, 23, "int4"))),
            "batch 1: commit-lsn 0/10 is before the previous batch's commit-lsn 0/20"
        );
    }
}
