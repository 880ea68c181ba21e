//! The change-event envelope shared by Sluice's JSON and MessagePack sinks
//! (cargo feature `envelope`): one message per row change, per truncated
//! table and per logical message, with the subject chosen by a template.
//!
//! [`Encoder`] holds the parsed sink configuration and turns a batch into
//! messages; the caller supplies the serde format. Envelopes borrow from the
//! batch and serialise straight into the payload buffer: no intermediate
//! value tree, no copy of row values. The format (documented in
//! `plugins/README.md`) depends on the serde format only where the format
//! itself differs: bytes are base64 text in human-readable formats (JSON)
//! and native binary otherwise (MessagePack).
//!
//! Invariants: every row's values are as many as its relation's columns,
//! and every relation index is in range, or the event is reported as
//! `bad-input` with its index; nothing is silently dropped.

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::value::non_finite_text;
#[cfg(test)]
use text::Base64;
use text::{Bytes, Iso, LsnText, Temporal};

use crate::{
    Batch, Event, LogicalMessage, Lsn, Message, Operation, PluginError, Relation, Result,
    RowChange, Truncate, Value,
};

/// The sink configuration both envelope sinks accept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    /// First subject token(s); `{prefix}` in the templates.
    #[serde(default = "default_prefix")]
    subject_prefix: String,
    /// Subject of row changes and truncates.
    #[serde(default = "default_subject")]
    subject: String,
    /// Subject of logical messages.
    #[serde(default = "default_message_subject")]
    message_subject: String,
    /// Headers added to every message.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// When set, one message per batch on this subject (`{prefix}` allowed)
    /// whose payload is the array of the batch's envelopes, instead of one
    /// message per envelope. JSON only.
    #[serde(default)]
    bundle: Option<String>,
}

fn default_prefix() -> String {
    "cdc".to_owned()
}

fn default_subject() -> String {
    "{prefix}.{schema}.{table}".to_owned()
}

fn default_message_subject() -> String {
    "{prefix}.messages".to_owned()
}

/// One piece of a subject template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    Schema,
    Table,
}

/// A parsed subject template: literals (with `{prefix}` already filled in)
/// and the `{schema}` and `{table}` placeholders.
#[derive(Debug, Clone)]
struct Template(Vec<Piece>);

impl Template {
    /// Parses `text`, the value of config key `key`; `{schema}` and
    /// `{table}` are allowed only when `tables`.
    fn parse(key: &str, text: &str, prefix: &str, tables: bool) -> Result<Self> {
        let bad = |why: String| PluginError::bad_config(format!("config key `{key}`: {why}"));
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            literal.push_str(&rest[..open]);
            if rest[open..].starts_with('}') {
                return Err(bad(format!("`}}` without `{{` in `{text}`")));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(bad(format!("`{{` without `}}` in `{text}`")));
            };
            let name = &rest[open + 1..open + close];
            match name {
                "prefix" => literal.push_str(prefix),
                "schema" | "table" if tables => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(if name == "schema" {
                        Piece::Schema
                    } else {
                        Piece::Table
                    });
                }
                _ => {
                    let allowed = if tables {
                        "{prefix}, {schema}, {table}"
                    } else {
                        "{prefix}"
                    };
                    return Err(bad(format!(
                        "unknown placeholder `{{{name}}}`; use {allowed}"
                    )));
                }
            }
            rest = &rest[open + close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        let template = Template(pieces);
        // Placeholders always render as one non-empty token, so checking a
        // sample checks every subject the template can produce.
        let sample = template.render("s", "t");
        if let Some(why) = subject_problem(&sample) {
            return Err(bad(format!(
                "`{text}` makes subjects like `{sample}`, which {why}"
            )));
        }
        Ok(template)
    }

    fn render(&self, schema: &str, table: &str) -> String {
        let mut subject = String::with_capacity(32);
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => subject.push_str(text),
                Piece::Schema => push_token(&mut subject, schema),
                Piece::Table => push_token(&mut subject, table),
            }
        }
        subject
    }
}

/// Why `subject` cannot be published to, if it cannot.
fn subject_problem(subject: &str) -> Option<&'static str> {
    if subject.split('.').any(str::is_empty) {
        Some("have an empty token")
    } else if subject.contains(['*', '>']) {
        Some("contain a wildcard")
    } else if subject.chars().any(char::is_whitespace) {
        Some("contain white space")
    } else {
        None
    }
}

/// Appends a schema or table name as one subject token: characters NATS
/// gives a meaning to (`.`, `*`, `>`, white space) become `_`, and an empty
/// name becomes `_`.
fn push_token(subject: &mut String, name: &str) {
    if name.is_empty() {
        subject.push('_');
    }
    for c in name.chars() {
        subject.push(if matches!(c, '.' | '*' | '>') || c.is_whitespace() {
            '_'
        } else {
            c
        });
    }
}

/// Turns batches into envelope messages; built once per sink instance.
#[derive(Debug, Clone)]
pub struct Encoder {
    subject: Template,
    message_subject: String,
    headers: Vec<(String, String)>,
    /// The subject of bundles, when the configuration asks for them.
    bundle: Option<String>,
}

impl Encoder {
    /// Parses the sink configuration (JSON text):
    /// `subject-prefix` (default `cdc`), `subject` (default
    /// `{prefix}.{schema}.{table}`), `message-subject` (default
    /// `{prefix}.messages`), `headers` (a table of header names to
    /// values, added to every message) and `bundle` (a subject: one
    /// message per batch, see [`Encoder::encode_json`]).
    pub fn from_config(config: &str) -> Result<Self> {
        let config: Config = crate::config::parse(config)?;
        let prefix = &config.subject_prefix;
        if let Some(why) = subject_problem(prefix) {
            return Err(PluginError::bad_config(format!(
                "config key `subject-prefix`: `{prefix}` cannot start a subject: it would {why}"
            )));
        }
        let subject = Template::parse("subject", &config.subject, prefix, true)?;
        let message_subject =
            Template::parse("message-subject", &config.message_subject, prefix, false)?
                .render("", "");
        let bundle = match &config.bundle {
            Some(text) => Some(Template::parse("bundle", text, prefix, false)?.render("", "")),
            None => None,
        };
        Ok(Encoder {
            subject,
            message_subject,
            headers: config.headers.into_iter().collect(),
            bundle,
        })
    }

    /// Encodes every event of `batch` with `serialize`, which appends one
    /// envelope to the buffer it is given (e.g. `serde_json::to_writer`).
    /// Row changes give one message each, truncates one per truncated
    /// table, logical messages one each; in event order, each naming its
    /// event in `Message::event`.
    pub fn encode<E: fmt::Display>(
        &self,
        batch: &Batch,
        mut serialize: impl FnMut(&Envelope<'_>, &mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Vec<Message>> {
        let mut messages = Vec::with_capacity(batch.events.len());
        self.each_envelope(batch, |index, envelope, subject| {
            let mut payload = Vec::with_capacity(envelope.size_hint());
            serialize(&envelope, &mut payload).map_err(|error| cannot_serialise(index, error))?;
            messages.push(self.message(Some(index), subject, payload));
            Ok(())
        })?;
        Ok(messages)
    }

    /// Encodes every event of `batch` as JSON: the same bytes as
    /// [`Encoder::encode`] with `serde_json::to_writer`, several times
    /// faster for row changes (see `json.rs`). With `bundle` configured,
    /// one message instead, on the bundle subject, whose payload is the
    /// JSON array of those envelopes (none for an empty batch); it names no
    /// single event.
    pub fn encode_json(&self, batch: &Batch) -> Result<Vec<Message>> {
        json::encode(self, batch)
    }

    /// The subject of bundles, when the configuration asks for one message
    /// per batch. Only [`Encoder::encode_json`] bundles: a sink that uses
    /// [`Encoder::encode`] should refuse the key at `init`.
    pub fn bundle_subject(&self) -> Option<&str> {
        self.bundle.as_deref()
    }

    /// The message for the batch's event at `event` (`None`: a bundle).
    fn message(&self, event: Option<usize>, subject: String, payload: Vec<u8>) -> Message {
        Message {
            subject,
            headers: self.headers.clone(),
            payload,
            event: event.and_then(|e| u32::try_from(e).ok()),
        }
    }

    /// Calls `emit` with each envelope of `batch`, its event's index and its
    /// subject, in publishing order, after checking the event against the
    /// batch's relations.
    fn each_envelope(
        &self,
        batch: &Batch,
        mut emit: impl FnMut(usize, Envelope<'_>, String) -> Result<()>,
    ) -> Result<()> {
        let source = BatchSource::new(batch);
        // Subjects depend only on the relation: render each once per batch.
        let mut subjects: Vec<Option<String>> = vec![None; batch.relations.len()];
        for (index, event) in batch.events.iter().enumerate() {
            match event {
                Event::Row(change) => {
                    let relation = relation_at(batch, change.relation, index)?;
                    check_width(relation, change, index)?;
                    let subject = self.subject_for(&mut subjects, batch, change.relation);
                    let envelope = Envelope(Kind::Row {
                        source: source.at(change.lsn),
                        relation,
                        change,
                    });
                    emit(index, envelope, subject)?;
                }
                Event::Truncate(truncate) => {
                    for &table in &truncate.relations {
                        let relation = relation_at(batch, table, index)?;
                        let subject = self.subject_for(&mut subjects, batch, table);
                        let envelope = Envelope(Kind::Truncate {
                            source: source.at(truncate.lsn),
                            relation,
                            truncate,
                        });
                        emit(index, envelope, subject)?;
                    }
                }
                Event::Message(message) => {
                    let source = source.at(message.lsn);
                    let envelope = Envelope(Kind::Message { source, message });
                    emit(index, envelope, self.message_subject.clone())?;
                }
            }
        }
        Ok(())
    }

    fn subject_for(&self, cache: &mut [Option<String>], batch: &Batch, relation: u32) -> String {
        let index = relation as usize;
        // `relation_at` has checked the index.
        let relation = &batch.relations[index];
        cache[index]
            .get_or_insert_with(|| self.subject.render(&relation.schema, &relation.name))
            .clone()
    }
}

fn cannot_serialise(event: usize, error: impl fmt::Display) -> PluginError {
    PluginError::bad_input(event, format!("cannot serialise the event: {error}"))
}

fn relation_at(batch: &Batch, relation: u32, event: usize) -> Result<&Relation> {
    batch.relation(relation).ok_or_else(|| {
        PluginError::bad_input(
            event,
            format!(
                "the event names relation {relation}, the batch lists {}",
                batch.relations.len()
            ),
        )
    })
}

fn check_width(relation: &Relation, change: &RowChange, event: usize) -> Result<()> {
    for (side, values) in [("old", &change.old), ("new", &change.new)] {
        if let Some(values) = values
            && values.len() != relation.columns.len()
        {
            return Err(PluginError::bad_input(
                event,
                format!(
                    "the {side} row of {}.{} has {} values for {} columns",
                    relation.schema,
                    relation.name,
                    values.len(),
                    relation.columns.len()
                ),
            ));
        }
    }
    Ok(())
}

/// The transaction fields every envelope's `source` repeats.
#[derive(Debug, Clone, Copy)]
struct BatchSource {
    xid: u32,
    commit_lsn: Lsn,
    commit_time: i64,
}

impl BatchSource {
    fn new(batch: &Batch) -> Self {
        BatchSource {
            xid: batch.xid,
            commit_lsn: batch.commit_lsn,
            commit_time: batch.commit_time,
        }
    }

    fn at(self, lsn: Lsn) -> EventSource {
        EventSource { batch: self, lsn }
    }
}

#[derive(Debug, Clone, Copy)]
struct EventSource {
    batch: BatchSource,
    lsn: Lsn,
}

/// One envelope, borrowing from its batch; serialise it with any serde
/// format.
#[derive(Debug)]
pub struct Envelope<'a>(Kind<'a>);

#[derive(Debug)]
enum Kind<'a> {
    Row {
        source: EventSource,
        relation: &'a Relation,
        change: &'a RowChange,
    },
    Truncate {
        source: EventSource,
        relation: &'a Relation,
        truncate: &'a Truncate,
    },
    Message {
        source: EventSource,
        message: &'a LogicalMessage,
    },
}

impl Envelope<'_> {
    /// A guess at the serialised size, to allocate the payload once.
    fn size_hint(&self) -> usize {
        match &self.0 {
            Kind::Row { relation, .. } => 256 + 48 * relation.columns.len(),
            Kind::Truncate { .. } => 256,
            Kind::Message { message, .. } => 256 + message.content.len() * 4 / 3,
        }
    }
}

impl Serialize for Envelope<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Kind::Row {
                source,
                relation,
                change,
            } => {
                let toasted = change.new.iter().flatten().any(Value::is_unchanged_toast);
                let mut map = serializer.serialize_map(Some(4 + usize::from(toasted)))?;
                map.serialize_entry("op", op_code(change.op))?;
                map.serialize_entry(
                    "source",
                    &Source {
                        event: *source,
                        relation: Some(relation),
                    },
                )?;
                map.serialize_entry(
                    "before",
                    &change.old.as_deref().map(|v| Columns(relation, v)),
                )?;
                map.serialize_entry(
                    "after",
                    &change.new.as_deref().map(|v| Columns(relation, v)),
                )?;
                if toasted {
                    let values = change.new.as_deref().unwrap_or_default();
                    map.serialize_entry("unchanged_toast", &ToastedNames(relation, values))?;
                }
                map.end()
            }
            Kind::Truncate {
                source,
                relation,
                truncate,
            } => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("op", "t")?;
                map.serialize_entry(
                    "source",
                    &Source {
                        event: *source,
                        relation: Some(relation),
                    },
                )?;
                map.serialize_entry(
                    "truncate",
                    &TruncateFlags {
                        cascade: truncate.cascade,
                        restart_identity: truncate.restart_identity,
                    },
                )?;
                map.end()
            }
            Kind::Message { source, message } => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("op", "m")?;
                map.serialize_entry(
                    "source",
                    &Source {
                        event: *source,
                        relation: None,
                    },
                )?;
                map.serialize_entry("message", &MessageBody(message))?;
                map.end()
            }
        }
    }
}

/// The envelope's `op`: Debezium's one-letter codes.
fn op_code(op: Operation) -> &'static str {
    match op {
        Operation::Insert => "c",
        Operation::Update => "u",
        Operation::Delete => "d",
        Operation::Read => "r",
    }
}

struct Source<'a> {
    event: EventSource,
    relation: Option<&'a Relation>,
}

impl Serialize for Source<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let EventSource { batch, lsn } = self.event;
        let mut map =
            serializer.serialize_map(Some(5 + 2 * usize::from(self.relation.is_some())))?;
        if let Some(relation) = self.relation {
            map.serialize_entry("schema", &relation.schema)?;
            map.serialize_entry("table", &relation.name)?;
        }
        map.serialize_entry("lsn", &LsnText(lsn))?;
        map.serialize_entry("commit_lsn", &LsnText(batch.commit_lsn))?;
        map.serialize_entry("xid", &batch.xid)?;
        map.serialize_entry(
            "commit_time",
            &Iso(Temporal::Timestamptz(batch.commit_time)),
        )?;
        map.serialize_entry("commit_time_us", &batch.commit_time)?;
        map.end()
    }
}

#[derive(Serialize)]
struct TruncateFlags {
    cascade: bool,
    restart_identity: bool,
}

struct MessageBody<'a>(&'a LogicalMessage);

impl Serialize for MessageBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("prefix", &self.0.prefix)?;
        map.serialize_entry("transactional", &self.0.transactional)?;
        map.serialize_entry("content", &Bytes(&self.0.content))?;
        map.end()
    }
}

/// A row's values as a map from column name to value; unchanged-toast
/// values are left out (their names are listed in `unchanged_toast`).
struct Columns<'a>(&'a Relation, &'a [Value]);

impl Serialize for Columns<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Columns(relation, values) = *self;
        let known = values
            .iter()
            .filter(|value| !value.is_unchanged_toast())
            .count();
        let mut map = serializer.serialize_map(Some(known))?;
        for (column, value) in relation.columns.iter().zip(values) {
            if !value.is_unchanged_toast() {
                map.serialize_entry(&column.name, &ValueOut(value))?;
            }
        }
        map.end()
    }
}

struct ToastedNames<'a>(&'a Relation, &'a [Value]);

impl Serialize for ToastedNames<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ToastedNames(relation, values) = *self;
        let toasted = || {
            relation
                .columns
                .iter()
                .zip(values)
                .filter(|(_, value)| value.is_unchanged_toast())
        };
        let mut seq = serializer.serialize_seq(Some(toasted().count()))?;
        for (column, _) in toasted() {
            seq.serialize_element(&column.name)?;
        }
        seq.end()
    }
}

/// How a column value appears in an envelope.
struct ValueOut<'a>(&'a Value);

impl Serialize for ValueOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            // Unchanged-toast never reaches here (`Columns` leaves it out);
            // should it, null is the closest honest rendering.
            Value::Null | Value::UnchangedToast => serializer.serialize_unit(),
            Value::Boolean(value) => serializer.serialize_bool(*value),
            Value::Int(value) => serializer.serialize_i64(*value),
            Value::Float(value) => match non_finite_text(*value) {
                Some(text) => serializer.serialize_str(text),
                None => serializer.serialize_f64(*value),
            },
            Value::Numeric(text)
            | Value::Text(text)
            | Value::Json(text)
            | Value::Uuid(text)
            | Value::Other(text) => serializer.serialize_str(text),
            Value::Bytes(bytes) => Bytes(bytes).serialize(serializer),
            Value::Date(days) => Iso(Temporal::Date(*days)).serialize(serializer),
            Value::Time(micros) => Iso(Temporal::Time(*micros)).serialize(serializer),
            Value::Timestamp(micros) => Iso(Temporal::Timestamp(*micros)).serialize(serializer),
            Value::Timestamptz(micros) => Iso(Temporal::Timestamptz(*micros)).serialize(serializer),
            Value::Interval(interval) => Iso(Temporal::Interval(*interval)).serialize(serializer),
        }
    }
}

mod json;
#[cfg(test)]
mod tests;
mod text;
