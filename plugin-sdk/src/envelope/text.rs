//! The envelope's short texts — LSNs, dates and times, base64 — formatted
//! on the stack, so that each reaches the serialiser as one `&str` with no
//! allocation and no per-fragment escaping.
//!
//! Invariant: a [`Text`] only ever holds whole `&str`s written into it, so
//! it is always valid UTF-8; what does not fit is refused with
//! `fmt::Error`, never truncated. Every text formatted here fits: the
//! longest, an interval of extreme parts, is 56 bytes.

use std::fmt;

use serde::ser::{Error as _, Serialize, Serializer};

use crate::{Interval, Lsn, temporal};

const CAPACITY: usize = 64;

/// A short text on the stack.
#[derive(Clone, Copy)]
pub(super) struct Text {
    bytes: [u8; CAPACITY],
    len: usize,
}

impl Text {
    pub(super) fn new() -> Self {
        Text {
            bytes: [0; CAPACITY],
            len: 0,
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub(super) fn as_str(&self) -> &str {
        // Valid by construction (see the module's invariant).
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }

    /// An LSN as PostgreSQL prints it, e.g. `0/16B3748`.
    pub(super) fn lsn(lsn: Lsn) -> Self {
        let mut text = Text::new();
        text.push_hex(lsn >> 32);
        text.bytes[text.len] = b'/';
        text.len += 1;
        text.push_hex(lsn & 0xFFFF_FFFF);
        text
    }

    /// Uppercase hexadecimal without leading zeros, as `{:X}` writes a
    /// 32-bit value. Never overflows: called twice on an empty text.
    fn push_hex(&mut self, value: u64) {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        let digits = (64 - value.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            let nibble = (value >> (4 * (digits - 1 - i))) & 0xF;
            self.bytes[self.len + i] = DIGITS[nibble as usize];
        }
        self.len += digits;
    }

    /// The ISO 8601 text of a date or time value.
    pub(super) fn iso(value: Temporal) -> Result<Self, fmt::Error> {
        let mut text = Text::new();
        match value {
            Temporal::Date(days) => temporal::write_date(days, &mut text)?,
            Temporal::Time(micros) => temporal::write_time(micros, &mut text)?,
            Temporal::Timestamp(micros) => temporal::write_timestamp(micros, false, &mut text)?,
            Temporal::Timestamptz(micros) => temporal::write_timestamp(micros, true, &mut text)?,
            Temporal::Interval(interval) => temporal::write_interval(&interval, &mut text)?,
        }
        Ok(text)
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > CAPACITY {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// An LSN as PostgreSQL prints it, e.g. `0/16B3748`.
pub(super) struct LsnText(pub(super) Lsn);

impl Serialize for LsnText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(Text::lsn(self.0).as_str())
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Temporal {
    Date(i32),
    Time(i64),
    Timestamp(i64),
    Timestamptz(i64),
    Interval(Interval),
}

/// ISO 8601 text of a date or time value, written without allocating.
pub(super) struct Iso(pub(super) Temporal);

impl Serialize for Iso {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = Text::iso(self.0)
            .map_err(|_| S::Error::custom("a date or time value too long to format"))?;
        serializer.serialize_str(text.as_str())
    }
}

/// Bytes: base64 (standard alphabet, padded) in human-readable formats,
/// native binary in the others.
pub(super) struct Bytes<'a>(pub(super) &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(&Base64(self.0))
        } else {
            serializer.serialize_bytes(self.0)
        }
    }
}

pub(super) struct Base64<'a>(pub(super) &'a [u8]);

impl fmt::Display for Base64<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        // Encode a few hundred bytes at a time on the stack, so that a large
        // value costs no allocation and few writes.
        let mut buffer = [0u8; 512];
        for chunk in self.0.chunks(384) {
            let mut len = 0;
            for group in chunk.chunks(3) {
                let b = [
                    group[0],
                    *group.get(1).unwrap_or(&0),
                    *group.get(2).unwrap_or(&0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
                    buffer[len + i] = if i <= group.len() {
                        ALPHABET[(n >> shift & 63) as usize]
                    } else {
                        b'='
                    };
                }
                len += 4;
            }
            // Only ASCII from ALPHABET and '=' was written.
            f.write_str(std::str::from_utf8(&buffer[..len]).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    #[test]
    fn lsns_as_postgresql_prints_them() {
        for lsn in [0, 1, 0x16B_3748, 0x1_0000_2000, 0xFFFF_FFFF, u64::MAX] {
            assert_eq!(
                Text::lsn(lsn).as_str(),
                format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
            );
        }
    }

    #[test]
    fn the_longest_interval_fits() {
        let extreme = Interval {
            months: i32::MIN,
            days: i32::MIN,
            microseconds: i64::MIN,
        };
        let text = Text::iso(Temporal::Interval(extreme)).unwrap();
        assert_eq!(
            text.as_str(),
            "P-178956970Y-8M-2147483648DT-2562047788H-54.775808S"
        );
        let mut full = Text::new();
        assert!(full.write_str(&"x".repeat(CAPACITY + 1)).is_err());
        assert_eq!(full.as_str(), "");
    }
}
