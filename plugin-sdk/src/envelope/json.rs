//! The envelope written as JSON directly, without serde, for the JSON sink's
//! hot path: one row change per message, thousands per second.
//!
//! What makes it fast is what does not depend on the event: the keys, the
//! `source` fields of the batch (`commit_lsn`, `xid`, `commit_time`…) and
//! of the relation (`schema`, `table`, each column's quoted name) are
//! rendered once per batch, and an event only adds its LSN and its values.
//! Strings are copied in one piece when nothing in them needs escaping,
//! which is checked eight bytes at a time.
//!
//! Invariant: the output is byte for byte what serde_json writes for the
//! same [`Envelope`] — `tests.rs` checks both on every kind of value. Every
//! piece that could differ (escaping, floats, base64, truncates, logical
//! messages) is delegated to serde_json itself; this module writes by hand
//! only ASCII punctuation, integers, and text that needs no escaping.

use serde::Serialize;

use super::text::{Temporal, Text};
use super::{Encoder, Envelope, Kind, ValueOut, cannot_serialise, op_code};
use crate::{Batch, Message, PluginError, Relation, Result, RowChange, Value};

/// The JSON pieces of one relation, rendered on its first row in a batch.
struct RelationJson {
    /// `"source":{"schema":"…","table":"…","lsn":"`, up to the event's LSN.
    source_head: Vec<u8>,
    /// Each column's name as a JSON string (quoted and escaped).
    names: Vec<Vec<u8>>,
    /// The size of this relation's last payload: the next one is allocated
    /// once at about the right size.
    last_len: usize,
}

impl RelationJson {
    fn new(relation: &Relation) -> serde_json::Result<Self> {
        let mut source_head = br#""source":{"schema":"#.to_vec();
        serde_json::to_writer(&mut source_head, &relation.schema)?;
        source_head.extend_from_slice(br#","table":"#);
        serde_json::to_writer(&mut source_head, &relation.name)?;
        source_head.extend_from_slice(br#","lsn":""#);
        let names = relation
            .columns
            .iter()
            .map(|column| serde_json::to_vec(&column.name))
            .collect::<serde_json::Result<_>>()?;
        Ok(RelationJson {
            source_head,
            names,
            last_len: 0,
        })
    }
}

/// `","commit_lsn":"…","xid":…,"commit_time":"…","commit_time_us":…}`:
/// the rest of every `source` of the batch, after the event's LSN.
fn source_tail(batch: &Batch) -> Vec<u8> {
    let mut tail = br#"","commit_lsn":""#.to_vec();
    tail.extend_from_slice(Text::lsn(batch.commit_lsn).as_bytes());
    tail.extend_from_slice(br#"","xid":"#);
    tail.extend_from_slice(itoa::Buffer::new().format(batch.xid).as_bytes());
    tail.extend_from_slice(br#","commit_time":"#);
    match Text::iso(Temporal::Timestamptz(batch.commit_time)) {
        Ok(text) => push_ascii_str(&mut tail, text.as_bytes()),
        // Cannot happen (every timestamp fits a `Text`); if it did, an
        // empty string beats a panic.
        Err(_) => tail.extend_from_slice(br#""""#),
    }
    tail.extend_from_slice(br#","commit_time_us":"#);
    tail.extend_from_slice(itoa::Buffer::new().format(batch.commit_time).as_bytes());
    tail.push(b'}');
    tail
}

pub(super) fn encode(encoder: &Encoder, batch: &Batch) -> Result<Vec<Message>> {
    let tail = source_tail(batch);
    let mut relations: Vec<Option<RelationJson>> = Vec::new();
    relations.resize_with(batch.relations.len(), || None);
    let mut write = |index: usize, envelope: &Envelope<'_>, payload: &mut Vec<u8>| {
        match &envelope.0 {
            Kind::Row {
                relation, change, ..
            } => {
                // `each_envelope` has checked the index.
                let cached = match &mut relations[change.relation as usize] {
                    Some(cached) => cached,
                    slot => slot.insert(
                        RelationJson::new(relation).map_err(|e| cannot_serialise(index, e))?,
                    ),
                };
                payload.reserve(cached.last_len + 64);
                let start = payload.len();
                write_row(payload, cached, &tail, change)
                    .map_err(|e| cannot_serialise(index, e))?;
                cached.last_len = payload.len() - start;
            }
            // Rare: serde_json writes them.
            Kind::Truncate { .. } | Kind::Message { .. } => {
                payload.reserve(envelope.size_hint());
                serde_json::to_writer(&mut *payload, envelope)
                    .map_err(|e| cannot_serialise(index, e))?;
            }
        }
        Ok::<_, PluginError>(())
    };
    if let Some(subject) = encoder.bundle_subject() {
        if batch.events.is_empty() {
            return Ok(Vec::new());
        }
        let mut payload = vec![b'['];
        encoder.each_envelope(batch, |index, envelope, _| {
            if payload.len() > 1 {
                payload.push(b',');
            }
            write(index, &envelope, &mut payload)
        })?;
        payload.push(b']');
        return Ok(vec![encoder.message(None, subject.to_owned(), payload)]);
    }
    let mut messages = Vec::with_capacity(batch.events.len());
    encoder.each_envelope(batch, |index, envelope, subject| {
        let mut payload = Vec::new();
        write(index, &envelope, &mut payload)?;
        messages.push(encoder.message(Some(index), subject, payload));
        Ok(())
    })?;
    Ok(messages)
}

/// Writes the envelope of a row change whose width has been checked.
fn write_row(
    out: &mut Vec<u8>,
    relation: &RelationJson,
    tail: &[u8],
    change: &RowChange,
) -> serde_json::Result<()> {
    out.extend_from_slice(br#"{"op":""#);
    out.extend_from_slice(op_code(change.op).as_bytes());
    out.extend_from_slice(br#"","#);
    out.extend_from_slice(&relation.source_head);
    out.extend_from_slice(Text::lsn(change.lsn).as_bytes());
    out.extend_from_slice(tail);
    out.extend_from_slice(br#","before":"#);
    write_columns(out, relation, change.old.as_deref())?;
    out.extend_from_slice(br#","after":"#);
    write_columns(out, relation, change.new.as_deref())?;
    if let Some(new) = &change.new
        && new.iter().any(Value::is_unchanged_toast)
    {
        out.extend_from_slice(br#","unchanged_toast":["#);
        let toasted = relation
            .names
            .iter()
            .zip(new)
            .filter(|(_, value)| value.is_unchanged_toast());
        for (i, (name, _)) in toasted.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(name);
        }
        out.push(b']');
    }
    out.push(b'}');
    Ok(())
}

/// A row's values as an object keyed by column name, unchanged-toast values
/// left out; `null` for no row.
fn write_columns(
    out: &mut Vec<u8>,
    relation: &RelationJson,
    values: Option<&[Value]>,
) -> serde_json::Result<()> {
    let Some(values) = values else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    out.push(b'{');
    let mut first = true;
    for (name, value) in relation.names.iter().zip(values) {
        if value.is_unchanged_toast() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(name);
        out.push(b':');
        write_value(out, value)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_value(out: &mut Vec<u8>, value: &Value) -> serde_json::Result<()> {
    let temporal = match value {
        Value::Null | Value::UnchangedToast => {
            out.extend_from_slice(b"null");
            return Ok(());
        }
        Value::Boolean(true) => {
            out.extend_from_slice(b"true");
            return Ok(());
        }
        Value::Boolean(false) => {
            out.extend_from_slice(b"false");
            return Ok(());
        }
        Value::Int(value) => {
            out.extend_from_slice(itoa::Buffer::new().format(*value).as_bytes());
            return Ok(());
        }
        Value::Numeric(text)
        | Value::Text(text)
        | Value::Json(text)
        | Value::Uuid(text)
        | Value::Other(text) => return write_str(out, text),
        Value::Date(days) => Temporal::Date(*days),
        Value::Time(micros) => Temporal::Time(*micros),
        Value::Timestamp(micros) => Temporal::Timestamp(*micros),
        Value::Timestamptz(micros) => Temporal::Timestamptz(*micros),
        Value::Interval(interval) => Temporal::Interval(*interval),
        // Floats (shortest round-trip digits, non-finite as strings) and
        // base64: serde_json's own rendering.
        Value::Float(_) | Value::Bytes(_) => {
            return ValueOut(value).serialize(&mut serde_json::Serializer::new(out));
        }
    };
    match Text::iso(temporal) {
        Ok(text) => push_ascii_str(out, text.as_bytes()),
        Err(_) => return ValueOut(value).serialize(&mut serde_json::Serializer::new(out)),
    }
    Ok(())
}

/// A JSON string, escaped exactly as serde_json escapes it.
fn write_str(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    if needs_escaping(text.as_bytes()) {
        serde_json::to_writer(out, text)
    } else {
        push_ascii_str(out, text.as_bytes());
        Ok(())
    }
}

/// Quotes text that needs no escaping (ISO dates and times, LSNs, or text
/// checked with [`needs_escaping`]).
fn push_ascii_str(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

/// Whether a JSON string of `bytes` needs escapes: a `"`, a `\` or a
/// control character below U+0020 (serde_json escapes nothing else).
fn needs_escaping(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Per byte, the classic SWAR tests: `x - 1` borrows into the high bit
    // only for a zero byte (`has_zero`), and `x - n` for a byte below `n`
    // when `n <= 0x80` (`has_below`). Exact, with no false positives.
    let has_below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0;
    let has_byte = |x: u64, b: u8| has_below(x ^ (ONES * u64::from(b)), 1);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        if has_below(x, 0x20) || has_byte(x, b'"') || has_byte(x, b'\\') {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_detected_in_every_position() {
        assert!(!needs_escaping(b""));
        assert!(!needs_escaping(
            "plain text, é and ünïcödé ✓ 0123456789".as_bytes()
        ));
        assert!(!needs_escaping(&[
            0x7F, 0x20, 0xFF, 0x80, b'!', b'#', b'[', b']'
        ]));
        for len in 1..20 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1F, b'\n'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert!(needs_escaping(&bytes), "{bytes:?}");
                }
            }
        }
    }
}
