//! The `Lsn` newtype: a position in PostgreSQL's write-ahead log.
//!
//! An LSN is a 64-bit byte offset that PostgreSQL prints as two hexadecimal
//! halves, `XXXXXXXX/XXXXXXXX`. This module owns parsing and printing of that
//! form; everything else in the host passes `Lsn` values, never raw `u64`s, so
//! that positions cannot be confused with counts or sizes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A WAL position. Ordered as PostgreSQL orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid LSN `0/0`, which PostgreSQL uses for "none".
    pub const ZERO: Lsn = Lsn(0);

    /// The number of WAL bytes from `earlier` to `self`, zero if `earlier`
    /// is not earlier.
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    /// `X/X`: each half in uppercase hexadecimal without leading zeros.
    /// Written by hand: every published message carries two LSNs in its
    /// headers, and the formatting machinery cost more than the digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 17];
        let mut len = push_hex(&mut buf, 0, (self.0 >> 32) as u32);
        buf[len] = b'/';
        len = push_hex(&mut buf, len + 1, self.0 as u32);
        // Only ASCII digits and `/` were written.
        f.pad(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?)
    }
}

/// Writes `value` in uppercase hexadecimal without leading zeros (`0` for
/// zero) at `buf[at..]`; returns the index after the last digit.
fn push_hex(buf: &mut [u8; 17], at: usize, value: u32) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let digits = (8 - value.leading_zeros() as usize / 4).max(1);
    for i in 0..digits {
        let nibble = (value >> (4 * (digits - 1 - i))) & 0xF;
        buf[at + i] = DIGITS[nibble as usize];
    }
    at + digits
}

/// Why a text is not an LSN.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{text}` is not an LSN: expected two hexadecimal numbers of at most 8 digits separated by `/`, as in `0/16B3748`"
)]
pub struct ParseLsnError {
    text: String,
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError { text: s.to_owned() };
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |h: &str| {
            if h.is_empty() || h.len() > 8 {
                return Err(err());
            }
            u32::from_str_radix(h, 16).map_err(|_| err())
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    /// Accepts PostgreSQL's text form or a plain integer.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Int(u64),
        }
        match Repr::deserialize(d)? {
            Repr::Text(t) => t.parse().map_err(serde::de::Error::custom),
            Repr::Int(i) => Ok(Lsn(i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text() {
        for text in ["0/0", "0/16B3748", "FFFFFFFF/FFFFFFFF", "1/0"] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn.to_string(), text);
        }
        assert_eq!("1/2".parse::<Lsn>().unwrap(), Lsn((1 << 32) | 2));
    }

    #[test]
    fn prints_as_postgresql_does() {
        let mut values = vec![
            0,
            1,
            0xF,
            0x10,
            u64::MAX,
            1 << 32,
            0xFFFF_FFFF,
            0x1_0000_0001,
        ];
        // Every digit count in each half.
        for shift in 0..64 {
            values.push(1 << shift);
            values.push((1u64 << shift).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        for v in values {
            let expected = format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF);
            assert_eq!(Lsn(v).to_string(), expected);
        }
        assert_eq!(format!("[{:>8}]", Lsn(0x10)), "[    0/10]");
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "",
            "0",
            "/0",
            "0/",
            "0/0/0",
            "123456789/0",
            "g/0",
            "-1/0",
            " 0/0",
        ] {
            let err = text.parse::<Lsn>().unwrap_err();
            assert!(err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn serde_accepts_text_and_integers() {
        let a: Lsn = serde_json::from_str("\"0/10\"").unwrap();
        let b: Lsn = serde_json::from_str("16").unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"0/10\"");
    }
}
