//! Differential testing against PostgreSQL's own `test_decoding` plugin:
//! a parser for its output lines and a renderer of Sluice's values back to
//! PostgreSQL's text forms, so both sides normalise to the same [`Record`]s.
//!
//! Normalisation (what "agree" means):
//!
//! - Both sides become a flat list of records: row changes as (table, op,
//!   old columns, new columns), truncates as (tables, flags), logical
//!   messages as (transactional, prefix, content), and `COMMIT` for the end
//!   of each transaction (non-transactional messages have none).
//! - A column is (name, text). Text is PostgreSQL's output for the value
//!   in a session with `DateStyle=ISO`, `IntervalStyle=postgres`,
//!   `TimeZone=UTC`, `extra_float_digits=3`, `bytea_output=hex` — the
//!   settings the `pg_logical_slot_get_changes` session uses. test_decoding
//!   quotes most types (`'…'` with `''` for a quote): the quotes are
//!   removed. Sluice's values are rendered back into that text
//!   ([`render`]): integers and numerics as digits, booleans as
//!   `true`/`false`, bytes as `\x` + hex, dates and times in ISO form,
//!   intervals in the `postgres` style, text-like and `other` values as is.
//! - Floats are compared as numbers: both sides are parsed to f64 and
//!   printed with Rust's shortest round-trip form (PostgreSQL prints
//!   `1e+100` where Rust prints `1e100`; the values are the same).
//! - test_decoding leaves NULLs out of old tuples (`old-key:`), so NULLs
//!   are dropped from Sluice's old values too. An unchanged TOASTed value
//!   is `unchanged-toast-datum` on both sides.

use sluice_host::model::{Batch, Event, Interval, Operation, Value};

/// One normalised change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Row {
        table: String,
        op: String,
        old: Option<Vec<(String, String)>>,
        new: Option<Vec<(String, String)>>,
    },
    Truncate {
        tables: Vec<String>,
        cascade: bool,
        restart_identity: bool,
    },
    Message {
        transactional: bool,
        prefix: String,
        content: Vec<u8>,
    },
    Commit,
}

/// Parses test_decoding's output (one entry per change, as returned by
/// `pg_logical_slot_get_changes(…, 'include-xids', '0')`).
pub(crate) fn parse(lines: &[Vec<u8>]) -> Vec<Record> {
    let mut out = Vec::new();
    for raw in lines {
        // A message's content is raw bytes; everything else is UTF-8.
        if let Some(rest) = raw.strip_prefix(b"message: transactional: ".as_slice()) {
            let at = |needle: &[u8], from: usize| {
                rest[from..]
                    .windows(needle.len())
                    .position(|w| w == needle)
                    .map(|i| i + from)
                    .expect("message field")
            };
            let p = at(b" prefix: ", 0);
            let sz = at(b", sz: ", p);
            let c = at(b" content:", sz);
            out.push(Record::Message {
                transactional: &rest[..p] == b"1",
                prefix: String::from_utf8(rest[p + 9..sz].to_vec()).expect("UTF-8 prefix"),
                content: rest[c + 9..].to_vec(),
            });
            continue;
        }
        let line = std::str::from_utf8(raw).expect("UTF-8 line");
        if line == "BEGIN" {
            continue;
        }
        if line == "COMMIT" {
            out.push(Record::Commit);
            continue;
        }
        let rest = line
            .strip_prefix("table ")
            .unwrap_or_else(|| panic!("{line}"));
        let (tables, rest) = rest.split_once(": ").expect("table name");
        let (op, rest) = rest.split_once(':').expect("operation");
        if op == "TRUNCATE" {
            out.push(Record::Truncate {
                tables: tables.split(", ").map(str::to_owned).collect(),
                cascade: rest.contains(" cascade"),
                restart_identity: rest.contains(" restart_seqs"),
            });
            continue;
        }
        let (old, new) = tuples(rest);
        let (old, new) = match op {
            "INSERT" => (None, new),
            "UPDATE" => (old, new),
            // A DELETE's only tuple is the old one.
            "DELETE" => (new, None),
            other => panic!("unknown operation {other} in {line}"),
        };
        out.push(Record::Row {
            table: tables.to_owned(),
            op: op.to_lowercase(),
            old,
            new,
        });
    }
    out
}

type Tuple = Option<Vec<(String, String)>>;

/// ` old-key: a[t]:v … new-tuple: a[t]:v …` or just ` a[t]:v …`: (old, new).
fn tuples(mut s: &str) -> (Tuple, Tuple) {
    let mut old = None;
    let mut current: Vec<(String, String)> = Vec::new();
    let mut in_old = false;
    let mut saw_any = false;
    loop {
        s = s.trim_start_matches(' ');
        if s.is_empty() {
            break;
        }
        if let Some(r) = s.strip_prefix("old-key:") {
            in_old = true;
            s = r;
            continue;
        }
        if let Some(r) = s.strip_prefix("new-tuple:") {
            if in_old {
                old = Some(std::mem::take(&mut current));
            }
            in_old = false;
            s = r;
            continue;
        }
        if let Some(r) = s.strip_prefix("(no-tuple-data)") {
            s = r;
            saw_any = false;
            continue;
        }
        let (name, r) = identifier(s);
        let r = r.strip_prefix('[').expect("[type]");
        let end = r.find("]:").expect("]:");
        let type_name = &r[..end];
        let r = &r[end + 2..];
        let (value, r) = literal(r);
        current.push((name, normalise_text(type_name, &value)));
        saw_any = true;
        s = r;
    }
    let new = (saw_any || !current.is_empty()).then_some(current);
    (old, new)
}

fn identifier(s: &str) -> (String, &str) {
    if let Some(r) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = r.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if r[i + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                } else {
                    return (name, &r[i + 1..]);
                }
            } else {
                name.push(c);
            }
        }
        panic!("unterminated identifier in {s}");
    }
    let end = s.find('[').expect("column name");
    (s[..end].to_owned(), &s[end..])
}

/// A quoted literal (quotes removed, `''` → `'`) or a bare token.
fn literal(s: &str) -> (String, &str) {
    if let Some(r) = s.strip_prefix('\'') {
        let mut value = String::new();
        let mut chars = r.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if r[i + 1..].starts_with('\'') {
                    value.push('\'');
                    chars.next();
                } else {
                    return (value, &r[i + 1..]);
                }
            } else {
                value.push(c);
            }
        }
        panic!("unterminated literal");
    }
    let end = s.find(' ').unwrap_or(s.len());
    (s[..end].to_owned(), &s[end..])
}

/// Floats become Rust's canonical form; everything else stays.
fn normalise_text(type_name: &str, text: &str) -> String {
    match type_name {
        "real" | "double precision" if text != "null" && text != "unchanged-toast-datum" => {
            canonical_float(text.parse().expect("float text"))
        }
        _ => text.to_owned(),
    }
}

fn canonical_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f:?}")
    }
}

/// Sluice's batches and transaction ends, normalised. `ends` says after
/// which batches a transaction ended (a `COMMIT`, skipped for xid 0).
pub(crate) fn from_batch(batch: &Batch, out: &mut Vec<Record>) {
    for event in &batch.events {
        match event {
            Event::Row(row) => {
                let rel = &batch.relations[row.relation as usize];
                let columns = |values: &Option<Vec<Value>>, drop_nulls: bool| {
                    values.as_ref().map(|values| {
                        rel.columns
                            .iter()
                            .zip(values)
                            .filter(|(_, v)| !(drop_nulls && **v == Value::Null))
                            .map(|(c, v)| (c.name.clone(), render(v)))
                            .collect::<Vec<_>>()
                    })
                };
                out.push(Record::Row {
                    table: format!("{}.{}", rel.schema, rel.name),
                    op: match row.op {
                        Operation::Insert => "insert",
                        Operation::Update => "update",
                        Operation::Delete => "delete",
                        Operation::Read => "read",
                    }
                    .to_owned(),
                    old: columns(&row.old, true),
                    new: columns(&row.new, false),
                });
            }
            Event::Truncate(t) => out.push(Record::Truncate {
                tables: t
                    .relations
                    .iter()
                    .map(|i| {
                        let r = &batch.relations[*i as usize];
                        format!("{}.{}", r.schema, r.name)
                    })
                    .collect(),
                cascade: t.cascade,
                restart_identity: t.restart_identity,
            }),
            Event::Message(m) => out.push(Record::Message {
                transactional: m.transactional,
                prefix: m.prefix.clone(),
                content: m.content.clone(),
            }),
        }
    }
}

/// A value in PostgreSQL's text form (see the module documentation).
pub(crate) fn render(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::UnchangedToast => "unchanged-toast-datum".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => canonical_float(*f),
        Value::Numeric(s) | Value::Text(s) | Value::Json(s) | Value::Uuid(s) | Value::Other(s) => {
            s.clone()
        }
        Value::Bytes(b) => {
            let mut s = String::from("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        Value::Date(d) => match *d {
            i32::MAX => "infinity".into(),
            i32::MIN => "-infinity".into(),
            d => date(i64::from(d)),
        },
        Value::Time(t) => time(*t),
        Value::Timestamp(t) | Value::Timestamptz(t) => {
            let tz = matches!(v, Value::Timestamptz(_));
            match *t {
                i64::MAX => "infinity".into(),
                i64::MIN => "-infinity".into(),
                t => {
                    let days = t.div_euclid(86_400_000_000);
                    let micros = t.rem_euclid(86_400_000_000);
                    let (d, bc) = date_parts(days);
                    format!(
                        "{d} {}{}{}",
                        time(micros),
                        if tz { "+00" } else { "" },
                        if bc { " BC" } else { "" }
                    )
                }
            }
        }
        Value::Interval(i) => interval(i),
    }
}

/// Days since 1970-01-01 → (`YYYY-MM-DD`, BC?), proleptic Gregorian.
fn date_parts(days: i64) -> (String, bool) {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (shown, bc) = if year <= 0 {
        (1 - year, true)
    } else {
        (year, false)
    };
    (format!("{shown:04}-{month:02}-{day:02}"), bc)
}

fn date(days: i64) -> String {
    let (d, bc) = date_parts(days);
    if bc { format!("{d} BC") } else { d }
}

/// Microseconds since midnight → `HH:MM:SS[.ffffff]` (trailing zeros cut).
fn time(micros: i64) -> String {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let mut s = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    s.push_str(&fraction(frac));
    s
}

fn fraction(frac: i64) -> String {
    if frac == 0 {
        return String::new();
    }
    let digits = format!(".{:06}", frac.abs());
    digits.trim_end_matches('0').to_owned()
}

/// PostgreSQL's `postgres` IntervalStyle (EncodeInterval).
fn interval(i: &Interval) -> String {
    let mut out = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |value: i64, unit: &str, out: &mut String| {
        if value == 0 {
            return;
        }
        out.push_str(&format!(
            "{}{}{value} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            if value != 1 { "s" } else { "" }
        ));
        is_before = value < 0;
        is_zero = false;
    };
    let months = i64::from(i.months);
    part(months / 12, "year", &mut out);
    part(months % 12, "mon", &mut out);
    part(i64::from(i.days), "day", &mut out);
    let t = i.microseconds;
    let hour = t / 3_600_000_000;
    let min = t / 60_000_000 % 60;
    let sec = t / 1_000_000 % 60;
    let frac = t % 1_000_000;
    if is_zero || t != 0 {
        let minus = t < 0;
        out.push_str(&format!(
            "{}{}{:02}:{:02}:{:02}{}",
            if is_zero { "" } else { " " },
            if minus {
                "-"
            } else if is_before {
                "+"
            } else {
                ""
            },
            hour.abs(),
            min.abs(),
            sec.abs(),
            fraction(frac)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_intervals_like_postgres() {
        use super::{Interval, interval};
        let iv = |months, days, microseconds| {
            interval(&Interval {
                months,
                days,
                microseconds,
            })
        };
        assert_eq!(iv(0, 0, 0), "00:00:00");
        assert_eq!(
            iv(14, -3, 14_706_789_000),
            "1 year 2 mons -3 days +04:05:06.789"
        );
        assert_eq!(iv(-1, 0, -1), "-1 mons -00:00:00.000001");
        assert_eq!(iv(0, 1, 0), "1 day");
    }

    #[test]
    fn renders_dates() {
        use super::date;
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_782), "2024-02-29");
        // 1 BC is year 0 of the proleptic calendar.
        assert_eq!(date(-719_528), "0001-01-01 BC");
    }
}
