//! The host's own model of the data that flows through a pipeline: batches
//! of one transaction's events, relations, row values and sink messages.
//!
//! It mirrors the WIT package `sluice:plugin` (`wit/types.wit`) one to one,
//! so that converting to and from the generated bindings (in `plugin`) is a
//! move, not a transformation. Keeping our own types means the decoder, the
//! publisher and the CLI never see generated code, and lets this module own
//! the JSON form users read and write (`sluice plugin run`, `sluice tail`):
//! kebab-case keys as in the WIT, LSNs in PostgreSQL's `X/X` text form,
//! non-finite floats as the strings `NaN`, `Infinity`, `-Infinity`, and bytes
//! as lowercase hex. The JSON form is lossless: every value survives a round
//! trip.

use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;

/// What `old` values of a table's row changes carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaIdentity {
    Default,
    Nothing,
    Full,
    Index,
}

/// One column of a relation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub type_name: String,
    #[serde(default = "no_modifier")]
    pub type_modifier: i32,
    #[serde(default)]
    pub is_key: bool,
}

fn no_modifier() -> i32 {
    -1
}

/// A table as last announced in the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    #[serde(default = "default_identity")]
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<Column>,
}

fn default_identity() -> ReplicaIdentity {
    ReplicaIdentity::Default
}

/// A PostgreSQL interval in its three independent parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub microseconds: i64,
}

/// One column value; see `wit/types.wit` for the meaning of each case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Value {
    Null,
    UnchangedToast,
    Boolean(bool),
    Int(i64),
    Float(#[serde(with = "float_text")] f64),
    Numeric(String),
    Text(String),
    Bytes(#[serde(with = "hex_bytes")] Vec<u8>),
    Json(String),
    Uuid(String),
    Date(i32),
    Time(i64),
    Timestamp(i64),
    Timestamptz(i64),
    Interval(Interval),
    Other(String),
}

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    Insert,
    Update,
    Delete,
    Read,
}

impl Operation {
    /// The lowercase name used in headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Read => "read",
        }
    }
}

/// A change to one row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RowChange {
    pub op: Operation,
    pub relation: u32,
    pub lsn: Lsn,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Vec<Value>>,
}

/// `TRUNCATE` of one or more tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Truncate {
    pub relations: Vec<u32>,
    #[serde(default)]
    pub cascade: bool,
    #[serde(default)]
    pub restart_identity: bool,
    pub lsn: Lsn,
}

/// A `pg_logical_emit_message` message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LogicalMessage {
    pub transactional: bool,
    pub prefix: String,
    #[serde(with = "hex_bytes")]
    pub content: Vec<u8>,
    pub lsn: Lsn,
}

/// One change in the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    Row(RowChange),
    Truncate(Truncate),
    Message(LogicalMessage),
}

impl Event {
    /// The WAL position of the event.
    pub fn lsn(&self) -> Lsn {
        match self {
            Event::Row(r) => r.lsn,
            Event::Truncate(t) => t.lsn,
            Event::Message(m) => m.lsn,
        }
    }

    /// What the event does, as the `Sluice-Op` header names it:
    /// [`Operation::as_str`], `truncate` or `message`.
    pub fn op_name(&self) -> &'static str {
        match self {
            Event::Row(r) => r.op.as_str(),
            Event::Truncate(_) => "truncate",
            Event::Message(_) => "message",
        }
    }
}

/// Consecutive events of one transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Batch {
    pub xid: u32,
    pub commit_lsn: Lsn,
    pub commit_time: i64,
    #[serde(default = "yes")]
    pub first: bool,
    #[serde(default = "yes")]
    pub last: bool,
    #[serde(default)]
    pub relations: Vec<Relation>,
    pub events: Vec<Event>,
}

fn yes() -> bool {
    true
}

/// A message for NATS produced by a sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Message {
    pub subject: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The body; in JSON it is printed as text when it is valid UTF-8 (see
    /// `MessageView` in the CLI), here it is always bytes.
    #[serde(with = "hex_bytes")]
    pub payload: Vec<u8>,
    /// Index, in the batch given to the sink, of the event the message was
    /// made from (`None` for a message made from several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<u32>,
}

/// Floats as JSON numbers when finite and as `"NaN"`, `"Infinity"`,
/// `"-Infinity"` otherwise, since JSON has no literal for those.
mod float_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(f64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(n) => Ok(n),
            Repr::Text(t) => match t.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                _ => Err(D::Error::custom(format!(
                    "`{t}` is not a float: use a JSON number, \"NaN\", \"Infinity\" or \"-Infinity\""
                ))),
            },
        }
    }
}

/// Bytes as a lowercase hex string, the way PostgreSQL prints `bytea`
/// (without its `\x` prefix).
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        decode(&text).ok_or_else(|| {
            D::Error::custom(format!(
                "`{}` is not hex: bytes are written as pairs of hex digits, e.g. \"00ff\"",
                text.chars().take(40).collect::<String>()
            ))
        })
    }

    pub(crate) fn encode(v: &[u8]) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(v.len() * 2);
        for b in v {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        out
    }

    pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
        let text = text.strip_prefix("\\x").unwrap_or(text);
        if !text.len().is_multiple_of(2) {
            return None;
        }
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        text.as_bytes()
            .chunks_exact(2)
            .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
            .collect()
    }
}

/// Test data shared by the modules' unit tests.
#[cfg(test)]
impl Batch {
    /// One transaction on `public.t` (OID 1), whose columns are `int4`s named
    /// `columns` (`id` is the key), carrying `events`.
    pub(crate) fn on_table_t(columns: &[&str], events: Vec<Event>) -> Batch {
        let columns = columns
            .iter()
            .map(|name| Column {
                name: (*name).into(),
                type_oid: 23,
                type_name: "int4".into(),
                type_modifier: -1,
                is_key: *name == "id",
            })
            .collect();
        Batch {
            xid: 7,
            commit_lsn: Lsn(0x100),
            commit_time: 5,
            first: true,
            last: true,
            relations: vec![Relation {
                oid: 1,
                schema: "public".into(),
                name: "t".into(),
                replica_identity: ReplicaIdentity::Default,
                columns,
            }],
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Batch {
        let events = vec![Event::Row(RowChange {
            op: Operation::Update,
            relation: 0,
            lsn: Lsn(0x16B3700),
            old: Some(vec![Value::Float(f64::NEG_INFINITY)]),
            new: Some(vec![
                Value::Float(f64::INFINITY),
                Value::Float(1.5),
                Value::Bytes(vec![0, 255, 16]),
                Value::Null,
                Value::UnchangedToast,
                Value::Interval(Interval {
                    months: 1,
                    days: -2,
                    microseconds: 3,
                }),
            ]),
        })];
        Batch {
            xid: 7,
            commit_lsn: Lsn(0x16B3748),
            commit_time: 1_700_000_000_000_000,
            ..Batch::on_table_t(&["id"], events)
        }
    }

    #[test]
    fn json_round_trips_every_special_value() {
        let batch = sample();
        let text = serde_json::to_string(&batch).unwrap();
        assert!(text.contains(r#"{"float":"Infinity"}"#), "{text}");
        assert!(text.contains(r#"{"bytes":"00ff10"}"#), "{text}");
        assert!(text.contains(r#""commit-lsn":"0/16B3748""#), "{text}");
        let back: Batch = serde_json::from_str(&text).unwrap();
        assert_eq!(back, batch);
    }

    #[test]
    fn nan_survives_json() {
        let text = serde_json::to_string(&Value::Float(f64::NAN)).unwrap();
        assert_eq!(text, r#"{"float":"NaN"}"#);
        match serde_json::from_str::<Value>(&text).unwrap() {
            Value::Float(f) => assert!(f.is_nan()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_hex_and_floats() {
        let err = serde_json::from_str::<Value>(r#"{"bytes":"0g"}"#).unwrap_err();
        assert!(err.to_string().contains("is not hex"), "{err}");
        let err = serde_json::from_str::<Value>(r#"{"float":"inf"}"#).unwrap_err();
        assert!(err.to_string().contains("is not a float"), "{err}");
    }
}
