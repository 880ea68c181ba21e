//! Turns one column's text output into a [`Value`], chosen by the column's
//! type.
//!
//! The mapping is decided once per column when a Relation message arrives
//! ([`ValueKind::for_type`]), so converting a row is a match per column and
//! one allocation per non-scalar value. The rules:
//!
//! - `bool` → Boolean; `int2`, `int4`, `int8`, `oid` → Int;
//!   `float4`, `float8` → Float (parsed from the decimal text the server
//!   printed, so a `float4` is the f64 nearest that text, not the widened
//!   binary float4; exact as long as the connection keeps
//!   `extra_float_digits` at 1 or more, see
//!   [`SESSION_SETTINGS`](super::SESSION_SETTINGS)); `numeric` → Numeric, the exact text (`NaN`,
//!   `Infinity`, `-Infinity` included).
//! - `text`, `varchar`, `bpchar`, `name`, `"char"`, `xml` and, by type name,
//!   `citext` → Text; `bytea` → Bytes (hex `\x…` or the legacy escape
//!   form); `json`, `jsonb` → Json; `uuid` → Uuid (canonical lowercase).
//! - `date`, `time`, `timestamp`, `timestamptz`, `interval`: see the
//!   [`datetime`](super::datetime) module (ISO DateStyle, `postgres`
//!   IntervalStyle).
//! - Everything else — arrays, ranges, enums, composites, geometric types,
//!   `money`, network types, `timetz`, and domains, because pgoutput names
//!   a domain column by the domain's OID and resolving its base type would
//!   need a catalog query — is Other with the text unchanged.
//!
//! Invariant: no value is rounded, truncated or silently changed. Text
//! that is not in the form the type prints is an error ([`ValueError`]):
//! it means a session setting the host relies on (DateStyle, IntervalStyle,
//! bytea_output, client encoding) is not in force, and guessing would
//! corrupt data. Well-formed values the model cannot represent exactly (a
//! timestamp past the year 294247, an infinite interval) become
//! Other(text), which is lossless; the column's type name still says what
//! it is. Binary-format columns are an error, since the host never asks for
//! them. Errors never contain the value itself: row data must not reach
//! logs.

use crate::model::{Interval, Value};

use super::datetime::{self, Expected};

/// Why a column's text could not be converted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("the value is not valid UTF-8 (is the connection's client_encoding UTF8?)")]
    InvalidUtf8,
    #[error("the value ({len} bytes) is not {expected}")]
    Malformed { expected: Expected, len: usize },
    #[error(
        "the value is in binary format, but the host decodes text only (START_REPLICATION must not set `binary 'true'`)"
    )]
    Binary,
}

/// How a column's values are converted; derived from its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueKind {
    Bool,
    Int,
    Float,
    Numeric,
    Text,
    Bytes,
    Json,
    Uuid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Other,
}

impl ValueKind {
    /// The conversion for a type OID; `type_name` is the name a Type message
    /// gave a non-built-in type, used to recognise extension types.
    pub(crate) fn for_type(oid: u32, type_name: Option<&str>) -> Self {
        match oid {
            16 => ValueKind::Bool,
            20 | 21 | 23 | 26 => ValueKind::Int,
            700 | 701 => ValueKind::Float,
            1700 => ValueKind::Numeric,
            18 | 19 | 25 | 142 | 1042 | 1043 => ValueKind::Text,
            17 => ValueKind::Bytes,
            114 | 3802 => ValueKind::Json,
            2950 => ValueKind::Uuid,
            1082 => ValueKind::Date,
            1083 => ValueKind::Time,
            1114 => ValueKind::Timestamp,
            1184 => ValueKind::Timestamptz,
            1186 => ValueKind::Interval,
            _ => match type_name {
                Some("citext") => ValueKind::Text,
                _ => ValueKind::Other,
            },
        }
    }
}

const BOOL_FORM: Expected = "`t` or `f`";
const INT_FORM: Expected = "an integer";
const FLOAT_FORM: Expected =
    "a float such as `1.5`, `-0`, `1e+308`, `NaN`, `Infinity` or `-Infinity`";
const NUMERIC_FORM: Expected =
    "a decimal number such as `-12.340`, `NaN`, `Infinity` or `-Infinity`";
const BYTEA_FORM: Expected = "bytea output, hex (`\\x00ff`) or escape format";
const UUID_FORM: Expected = "a UUID such as `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`";

fn malformed(expected: Expected, text: &[u8]) -> ValueError {
    ValueError::Malformed {
        expected,
        len: text.len(),
    }
}

fn utf8(text: &[u8]) -> Result<&str, ValueError> {
    std::str::from_utf8(text).map_err(|_| ValueError::InvalidUtf8)
}

/// Converts one column's text output.
pub(crate) fn decode_text(kind: ValueKind, text: &[u8]) -> Result<Value, ValueError> {
    let value = match kind {
        ValueKind::Bool => match text {
            b"t" => Value::Boolean(true),
            b"f" => Value::Boolean(false),
            _ => return Err(malformed(BOOL_FORM, text)),
        },
        ValueKind::Int => Value::Int(
            utf8(text)?
                .parse::<i64>()
                .map_err(|_| malformed(INT_FORM, text))?,
        ),
        ValueKind::Float => Value::Float(parse_float(text)?),
        ValueKind::Numeric => {
            if !is_numeric(text) {
                return Err(malformed(NUMERIC_FORM, text));
            }
            Value::Numeric(utf8(text)?.to_owned())
        }
        ValueKind::Text => Value::Text(utf8(text)?.to_owned()),
        ValueKind::Json => Value::Json(utf8(text)?.to_owned()),
        ValueKind::Other => Value::Other(utf8(text)?.to_owned()),
        ValueKind::Bytes => {
            Value::Bytes(parse_bytea(text).ok_or_else(|| malformed(BYTEA_FORM, text))?)
        }
        ValueKind::Uuid => Value::Uuid(parse_uuid(text).ok_or_else(|| malformed(UUID_FORM, text))?),
        ValueKind::Date => lossless(datetime::parse_date(text), text, Value::Date)?,
        ValueKind::Time => {
            Value::Time(datetime::parse_time(text).map_err(|expected| malformed(expected, text))?)
        }
        ValueKind::Timestamp => lossless(datetime::parse_timestamp(text), text, Value::Timestamp)?,
        ValueKind::Timestamptz => {
            lossless(datetime::parse_timestamptz(text), text, Value::Timestamptz)?
        }
        ValueKind::Interval => lossless(datetime::parse_interval(text), text, |p| {
            Value::Interval(Interval {
                months: p.months,
                days: p.days,
                microseconds: p.micros,
            })
        })?,
    };
    Ok(value)
}

/// Maps a parser's answer: a value, Other(text) for well-formed text the
/// model cannot hold, or an error.
fn lossless<T>(
    parsed: Result<Option<T>, Expected>,
    text: &[u8],
    wrap: impl FnOnce(T) -> Value,
) -> Result<Value, ValueError> {
    match parsed {
        Ok(Some(v)) => Ok(wrap(v)),
        Ok(None) => Ok(Value::Other(utf8(text)?.to_owned())),
        Err(expected) => Err(malformed(expected, text)),
    }
}

fn parse_float(text: &[u8]) -> Result<f64, ValueError> {
    match text {
        b"NaN" => return Ok(f64::NAN),
        b"Infinity" => return Ok(f64::INFINITY),
        b"-Infinity" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    // Rust's parser also takes `inf` and `nan`, which PostgreSQL never
    // prints; only digits, sign, point and exponent are let through.
    let plausible = text
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
    let parsed = if plausible {
        utf8(text)?.parse::<f64>().ok()
    } else {
        None
    };
    // An overflow to infinity would change the value, so it is refused.
    parsed
        .filter(|f| f.is_finite())
        .ok_or_else(|| malformed(FLOAT_FORM, text))
}

/// `-`? digits (`.` digits)? — PostgreSQL never prints numerics with an
/// exponent — or one of the special values.
fn is_numeric(text: &[u8]) -> bool {
    if matches!(text, b"NaN" | b"Infinity" | b"-Infinity") {
        return true;
    }
    let unsigned = text.strip_prefix(b"-").unwrap_or(text);
    let (int, frac) = match unsigned.iter().position(|&b| b == b'.') {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    digits(int) && frac.is_none_or(digits)
}

fn hex_nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `bytea` in hex (`\x` then pairs of digits) or the pre-9.0 escape form
/// (`\\` for a backslash, `\ooo` octal for other bytes, the rest literal).
fn parse_bytea(text: &[u8]) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix(b"\\x") {
        if !hex.len().is_multiple_of(2) {
            return None;
        }
        return hex
            .chunks_exact(2)
            .map(|p| Some((hex_nibble(p[0])? << 4) | hex_nibble(p[1])?))
            .collect();
    }
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            out.push(text[i]);
            i += 1;
            continue;
        }
        match text.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'0'..=b'3') => {
                let Some(&[a, b, c]) = text.get(i + 1..i + 4) else {
                    return None;
                };
                let octal = |d: u8| matches!(d, b'0'..=b'7').then(|| d - b'0');
                out.push((octal(a)? << 6) | (octal(b)? << 3) | octal(c)?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Canonical lowercase `8-4-4-4-12`.
fn parse_uuid(text: &[u8]) -> Option<String> {
    if text.len() != 36 {
        return None;
    }
    let mut out = String::with_capacity(36);
    for (i, &b) in text.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return None;
            }
            out.push('-');
        } else {
            hex_nibble(b)?;
            out.push(char::from(b.to_ascii_lowercase()));
        }
    }
    Some(out)
}

/// Whether `value` is something the decoder could have produced for a
/// column of type `oid` (named `type_name`): the right tag, and for the
/// tags whose text has a form (numeric, UUID) text of that form. NULL and
/// an unchanged TOAST value fit every column. `Err` says what was expected.
pub(crate) fn check_value(oid: u32, type_name: &str, value: &Value) -> Result<(), String> {
    let kind = ValueKind::for_type(oid, Some(type_name));
    let fits = match (kind, value) {
        (_, Value::Null | Value::UnchangedToast) => true,
        (ValueKind::Bool, Value::Boolean(_))
        | (ValueKind::Int, Value::Int(_))
        | (ValueKind::Float, Value::Float(_))
        | (ValueKind::Text, Value::Text(_))
        | (ValueKind::Bytes, Value::Bytes(_))
        | (ValueKind::Json, Value::Json(_))
        | (ValueKind::Date, Value::Date(_))
        | (ValueKind::Time, Value::Time(_))
        | (ValueKind::Timestamp, Value::Timestamp(_))
        | (ValueKind::Timestamptz, Value::Timestamptz(_))
        | (ValueKind::Interval, Value::Interval(_))
        | (ValueKind::Other, Value::Other(_)) => true,
        // Dates and times the model cannot hold arrive as their text.
        (
            ValueKind::Date | ValueKind::Timestamp | ValueKind::Timestamptz | ValueKind::Interval,
            Value::Other(_),
        ) => true,
        (ValueKind::Numeric, Value::Numeric(text)) => {
            return if is_numeric(text.as_bytes()) {
                Ok(())
            } else {
                Err(format!("`{text}` is not {NUMERIC_FORM}"))
            };
        }
        (ValueKind::Uuid, Value::Uuid(text)) => {
            return if parse_uuid(text.as_bytes()).is_some() {
                Ok(())
            } else {
                Err(format!("`{text}` is not {UUID_FORM}"))
            };
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "a {} value does not fit a column of type {type_name} (OID {oid})",
            tag(value)
        ))
    }
}

/// A plausible value for a column of type `oid` (named `type_name`): what
/// the decoder makes of text PostgreSQL could print for it. For
/// `sluice check`'s dry run of the plugin chain.
pub(crate) fn synthetic_value(oid: u32, type_name: &str) -> Value {
    let kind = ValueKind::for_type(oid, Some(type_name));
    let text: &[u8] = match kind {
        ValueKind::Bool => b"t",
        ValueKind::Int => b"1",
        ValueKind::Float => b"1.5",
        ValueKind::Numeric => b"1.50",
        ValueKind::Text => b"sluice check",
        ValueKind::Bytes => b"\\x00ff",
        ValueKind::Json => b"{}",
        ValueKind::Uuid => b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ValueKind::Date => b"2000-01-01",
        ValueKind::Time => b"12:00:00",
        ValueKind::Timestamp => b"2000-01-01 12:00:00",
        ValueKind::Timestamptz => b"2000-01-01 12:00:00+00",
        ValueKind::Interval => b"1 day",
        ValueKind::Other => b"sluice check",
    };
    decode_text(kind, text).unwrap_or(Value::Null)
}

/// A value's tag as the JSON form writes it.
fn tag(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::UnchangedToast => "unchanged-toast",
        Value::Boolean(_) => "boolean",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Numeric(_) => "numeric",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytes",
        Value::Json(_) => "json",
        Value::Uuid(_) => "uuid",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::Timestamp(_) => "timestamp",
        Value::Timestamptz(_) => "timestamptz",
        Value::Interval(_) => "interval",
        Value::Other(_) => "other",
    }
}

#[cfg(test)]
mod tests;
