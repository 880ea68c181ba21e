//! Typed access to column values and conversions that build them.
//!
//! Getters never convert between cases: `as_i64` answers only for `int`,
//! `as_str` only for the text-like cases. A plugin that wants a value's
//! text whatever its type uses [`Value::write_text`], which renders every
//! case exactly (numeric digits as sent, dates and times in ISO 8601).

use std::fmt::Write as _;

use crate::temporal;
use crate::{Interval, Value};

impl Value {
    /// SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A TOASTed value PostgreSQL did not resend because it did not change:
    /// unknown, not null.
    pub fn is_unchanged_toast(&self) -> bool {
        matches!(self, Value::UnchangedToast)
    }

    /// The value of a `boolean` column.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(value) => Some(*value),
            _ => None,
        }
    }

    /// The value of an `int2`, `int4`, `int8` or `oid` column.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(value) => Some(*value),
            _ => None,
        }
    }

    /// The value of a `float4` or `float8` column.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(value) => Some(*value),
            _ => None,
        }
    }

    /// The text of a text-like value: `text` (and `varchar`…), `numeric`,
    /// `json`, `uuid` and `other` (a type's PostgreSQL text output).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(text)
            | Value::Numeric(text)
            | Value::Json(text)
            | Value::Uuid(text)
            | Value::Other(text) => Some(text),
            _ => None,
        }
    }

    /// The bytes of a `bytea` value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// A `date` as days since 1970-01-01.
    pub fn as_date(&self) -> Option<i32> {
        match self {
            Value::Date(days) => Some(*days),
            _ => None,
        }
    }

    /// A `timestamp` or `timestamptz` as microseconds since 1970-01-01.
    pub fn as_timestamp_micros(&self) -> Option<i64> {
        match self {
            Value::Timestamp(micros) | Value::Timestamptz(micros) => Some(*micros),
            _ => None,
        }
    }

    /// Appends the value's text to `out`: what the JSON envelope shows for
    /// it, and what the mask plugin hashes. Text-like values as they are,
    /// bytes as lowercase hex, floats in shortest round-trip form (`NaN`,
    /// `Infinity`, `-Infinity`), dates and times in ISO 8601. `null` and
    /// unchanged-toast write nothing and return `false`.
    pub fn write_text(&self, out: &mut String) -> bool {
        match self {
            Value::Null | Value::UnchangedToast => return false,
            Value::Boolean(value) => out.push_str(if *value { "true" } else { "false" }),
            Value::Int(value) => {
                let _ = write!(out, "{value}");
            }
            Value::Float(value) => write_float(*value, out),
            Value::Text(text)
            | Value::Numeric(text)
            | Value::Json(text)
            | Value::Uuid(text)
            | Value::Other(text) => out.push_str(text),
            Value::Bytes(bytes) => {
                for byte in bytes {
                    let _ = write!(out, "{byte:02x}");
                }
            }
            // Writing to a String cannot fail.
            Value::Date(days) => {
                let _ = temporal::write_date(*days, out);
            }
            Value::Time(micros) => {
                let _ = temporal::write_time(*micros, out);
            }
            Value::Timestamp(micros) => {
                let _ = temporal::write_timestamp(*micros, false, out);
            }
            Value::Timestamptz(micros) => {
                let _ = temporal::write_timestamp(*micros, true, out);
            }
            Value::Interval(interval) => {
                let _ = temporal::write_interval(interval, out);
            }
        }
        true
    }
}

/// Writes a float as JSON-friendly text: finite values in Rust's shortest
/// round-trip form, the others as PostgreSQL spells them.
fn write_float(value: f64, out: &mut String) {
    match non_finite_text(value) {
        Some(text) => out.push_str(text),
        None => {
            let _ = write!(out, "{value}");
        }
    }
}

/// PostgreSQL's spelling of a float that is not finite (`NaN`, `Infinity`,
/// `-Infinity`), which JSON numbers cannot carry.
pub(crate) fn non_finite_text(value: f64) -> Option<&'static str> {
    if value.is_nan() {
        Some("NaN")
    } else if value.is_infinite() {
        Some(if value > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        None
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Boolean(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<i32> for Value {
    fn from(value: i32) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<Vec<u8>> for Value {
    fn from(value: Vec<u8>) -> Self {
        Value::Bytes(value)
    }
}

impl From<Interval> for Value {
    fn from(value: Interval) -> Self {
        Value::Interval(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: Value) -> Option<String> {
        let mut out = String::new();
        value.write_text(&mut out).then_some(out)
    }

    #[test]
    fn getters_answer_only_for_their_case() {
        assert_eq!(Value::Int(7).as_i64(), Some(7));
        assert_eq!(Value::Text("7".into()).as_i64(), None);
        assert_eq!(Value::Numeric("1.50".into()).as_str(), Some("1.50"));
        assert_eq!(Value::Boolean(true).as_bool(), Some(true));
        assert_eq!(Value::Float(1.5).as_f64(), Some(1.5));
        assert_eq!(Value::Bytes(vec![1]).as_bytes(), Some(&[1u8][..]));
        assert!(Value::from(None::<i64>).is_null());
        assert_eq!(Value::from(Some("a")), Value::Text("a".into()));
    }

    #[test]
    fn text_is_exact() {
        assert_eq!(text(Value::Float(f64::NAN)).as_deref(), Some("NaN"));
        assert_eq!(
            text(Value::Float(f64::NEG_INFINITY)).as_deref(),
            Some("-Infinity")
        );
        assert_eq!(text(Value::Float(0.1)).as_deref(), Some("0.1"));
        assert_eq!(text(Value::Bytes(vec![0, 255])).as_deref(), Some("00ff"));
        assert_eq!(text(Value::Date(0)).as_deref(), Some("1970-01-01"));
        assert_eq!(text(Value::Null), None);
        assert_eq!(text(Value::UnchangedToast), None);
    }
}
