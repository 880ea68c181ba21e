//! Column predicates: `{"column": "status", "equals": "draft"}`,
//! `{"column": "status", "in": ["draft", "spam"]}` or
//! `{"column": "deleted_at", "is-null": true}`.
//!
//! A predicate reads the row after the change, or before it for a delete.
//! A row whose table has no such column, or whose value is unchanged-toast
//! (unknown), never satisfies it. Comparison is by meaning, not by JSON
//! type: a JSON number equals an `int`, `float` or `numeric` of the same
//! value (`2.50` equals numeric `2.5`), a string equals a text-like value
//! with that text or any other value whose text (ISO 8601 for dates and
//! times, as in the envelope) is that string, a boolean equals a
//! `boolean`, and `null` equals SQL NULL.

use serde::Deserialize;
use serde_json::Value as Json;
use sluice_plugin_sdk::{Relation, RowChange, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", try_from = "RawWhere")]
pub(crate) struct Where {
    column: String,
    test: Test,
}

#[derive(Debug)]
enum Test {
    OneOf(Vec<Json>),
    IsNull(bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWhere {
    column: String,
    equals: Option<Json>,
    r#in: Option<Vec<Json>>,
    is_null: Option<bool>,
}

impl TryFrom<RawWhere> for Where {
    type Error = String;

    fn try_from(raw: RawWhere) -> Result<Self, Self::Error> {
        let test = match (raw.equals, raw.r#in, raw.is_null) {
            (Some(value), None, None) => Test::OneOf(vec![value]),
            (None, Some(values), None) => Test::OneOf(values),
            (None, None, Some(is_null)) => Test::IsNull(is_null),
            _ => return Err("give exactly one of `equals`, `in`, `is-null`".to_owned()),
        };
        if let Test::OneOf(values) = &test
            && let Some(bad) = values.iter().find(|v| v.is_array() || v.is_object())
        {
            return Err(format!("`{bad}` is not a number, string, boolean or null"));
        }
        Ok(Where {
            column: raw.column,
            test,
        })
    }
}

impl Where {
    pub(crate) fn holds(&self, relation: &Relation, change: &RowChange) -> bool {
        let Some(value) = relation
            .column_index(&self.column)
            .and_then(|index| change.values()?.get(index))
        else {
            return false;
        };
        match (&self.test, value) {
            (_, Value::UnchangedToast) => false,
            (Test::IsNull(is_null), value) => value.is_null() == *is_null,
            (Test::OneOf(wanted), value) => wanted.iter().any(|json| equals(json, value)),
        }
    }
}

fn equals(json: &Json, value: &Value) -> bool {
    match (json, value) {
        (Json::Null, value) => value.is_null(),
        (Json::Bool(wanted), Value::Boolean(actual)) => wanted == actual,
        (Json::Number(wanted), Value::Int(actual)) => wanted.as_i64() == Some(*actual),
        (Json::Number(wanted), Value::Float(actual)) => wanted.as_f64() == Some(*actual),
        (Json::Number(wanted), Value::Numeric(actual)) => {
            normal_decimal(&wanted.to_string()).is_some_and(|w| Some(w) == normal_decimal(actual))
        }
        (Json::String(wanted), value) => match value.as_str() {
            Some(text) => text == wanted,
            None => {
                let mut text = String::new();
                value.write_text(&mut text) && text == *wanted
            }
        },
        _ => false,
    }
}

/// A decimal in plain notation without redundant zeros or `+`, so that
/// `2.50`, `+2.5` and `2.5` compare equal; `None` for anything else
/// (exponents, `NaN`), which then equals nothing numeric.
fn normal_decimal(text: &str) -> Option<String> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    let zero = whole.is_empty() && fraction.is_empty();
    let mut out = String::new();
    if negative && !zero {
        out.push('-');
    }
    out.push_str(if whole.is_empty() { "0" } else { whole });
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_compare_by_value() {
        assert_eq!(normal_decimal("2.50").as_deref(), Some("2.5"));
        assert_eq!(normal_decimal("+002").as_deref(), Some("2"));
        assert_eq!(normal_decimal("-0.000").as_deref(), Some("0"));
        assert_eq!(normal_decimal(".5").as_deref(), Some("0.5"));
        assert_eq!(normal_decimal("NaN"), None);
        assert_eq!(normal_decimal("1e3"), None);
        assert!(equals(&Json::from(2.5), &Value::Numeric("2.50".into())));
        assert!(equals(&Json::from(3), &Value::Numeric("3.000".into())));
        assert!(!equals(&Json::from(3), &Value::Numeric("3.001".into())));
    }

    #[test]
    fn values_compare_by_meaning() {
        assert!(equals(&Json::from(3), &Value::Int(3)));
        assert!(!equals(&Json::from(3.5), &Value::Int(3)));
        assert!(equals(&Json::from("draft"), &Value::Text("draft".into())));
        assert!(equals(&Json::from("2024-02-29"), &Value::Date(19_782)));
        assert!(equals(&Json::from(true), &Value::Boolean(true)));
        assert!(!equals(&Json::from("true"), &Value::Text("TRUE".into())));
        assert!(equals(&Json::Null, &Value::Null));
        assert!(!equals(&Json::Null, &Value::Int(0)));
    }
}
