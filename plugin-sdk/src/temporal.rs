//! ISO 8601 text for PostgreSQL's date and time values.
//!
//! Values arrive as integers from the Unix epoch (days for `date`,
//! microseconds for the others), with PostgreSQL's `infinity` sentinels: the
//! integer type's maximum is `infinity`, its minimum `-infinity`, and both
//! are written as those words. Years outside 0000–9999 are written with a
//! sign and astronomical numbering (year 0 is 1 BC), as ISO 8601's expanded
//! form allows. Fractions of a second appear only when not zero, always
//! with six digits. Nothing is rounded.

use std::fmt::{self, Write};

use crate::Interval;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Writes a `date` (days since 1970-01-01) as `YYYY-MM-DD`.
pub fn write_date(days: i32, out: &mut impl Write) -> fmt::Result {
    match days {
        i32::MAX => out.write_str("infinity"),
        i32::MIN => out.write_str("-infinity"),
        days => write_civil_date(i64::from(days), out),
    }
}

/// Writes a `time` (microseconds since midnight) as `HH:MM:SS[.ffffff]`.
/// PostgreSQL allows `24:00:00`, which is written as such.
pub fn write_time(micros: i64, out: &mut impl Write) -> fmt::Result {
    let hours = micros.div_euclid(MICROS_PER_HOUR);
    let rest = micros.rem_euclid(MICROS_PER_HOUR);
    let (minutes, seconds) = (
        rest / MICROS_PER_MINUTE,
        rest % MICROS_PER_MINUTE / MICROS_PER_SECOND,
    );
    let fraction = rest % MICROS_PER_SECOND;
    if !(0..100).contains(&hours) {
        // Only reachable from a raw `time` outside PostgreSQL's range.
        write!(out, "{hours:02}:{minutes:02}:{seconds:02}")?;
        return write_fraction(fraction, out);
    }
    // Sinks write one of these per timestamp value: digits by hand, since
    // `core::fmt` padding costs several times more than the arithmetic.
    let mut text = *b"00:00:00.000000";
    put_digits(&mut text[0..2], hours);
    put_digits(&mut text[3..5], minutes);
    put_digits(&mut text[6..8], seconds);
    let len = if fraction == 0 {
        8
    } else {
        put_digits(&mut text[9..15], fraction);
        15
    };
    out.write_str(ascii(&text[..len])?)
}

/// Writes a `timestamp` or `timestamptz` (microseconds since 1970-01-01) as
/// `YYYY-MM-DDTHH:MM:SS[.ffffff]`, followed by `Z` when `utc` (a
/// `timestamptz`, which is always UTC on the wire).
pub fn write_timestamp(micros: i64, utc: bool, out: &mut impl Write) -> fmt::Result {
    match micros {
        i64::MAX => out.write_str("infinity"),
        i64::MIN => out.write_str("-infinity"),
        micros => {
            write_civil_date(micros.div_euclid(MICROS_PER_DAY), out)?;
            out.write_char('T')?;
            write_time(micros.rem_euclid(MICROS_PER_DAY), out)?;
            if utc { out.write_char('Z') } else { Ok(()) }
        }
    }
}

/// Writes an `interval` as an ISO 8601 duration, the way PostgreSQL's
/// `intervalstyle = iso_8601` does: each part carries its own sign, zero
/// parts are left out, and the zero interval is `PT0S`. Months become years
/// and months (a year is always 12 months); days and microseconds are kept
/// apart, since a day is not always 24 hours.
pub fn write_interval(interval: &Interval, out: &mut impl Write) -> fmt::Result {
    let Interval {
        months,
        days,
        microseconds,
    } = *interval;
    if months == 0 && days == 0 && microseconds == 0 {
        return out.write_str("PT0S");
    }
    out.write_char('P')?;
    let (years, months) = (months / 12, months % 12);
    for (amount, unit) in [
        (i64::from(years), 'Y'),
        (i64::from(months), 'M'),
        (i64::from(days), 'D'),
    ] {
        if amount != 0 {
            write!(out, "{amount}{unit}")?;
        }
    }
    if microseconds == 0 {
        return Ok(());
    }
    out.write_char('T')?;
    let hours = microseconds / MICROS_PER_HOUR;
    let minutes = microseconds % MICROS_PER_HOUR / MICROS_PER_MINUTE;
    let seconds = microseconds % MICROS_PER_MINUTE;
    for (amount, unit) in [(hours, 'H'), (minutes, 'M')] {
        if amount != 0 {
            write!(out, "{amount}{unit}")?;
        }
    }
    if seconds != 0 {
        let sign = if seconds < 0 { "-" } else { "" };
        let seconds = seconds.unsigned_abs();
        write!(out, "{sign}{}", seconds / 1_000_000)?;
        write_fraction(i64::try_from(seconds % 1_000_000).unwrap_or(0), out)?;
        out.write_char('S')?;
    }
    Ok(())
}

/// Writes `.ffffff` for a non-zero count of microseconds below one second.
fn write_fraction(micros: i64, out: &mut impl Write) -> fmt::Result {
    if micros != 0 {
        write!(out, ".{micros:06}")
    } else {
        Ok(())
    }
}

/// Writes the proleptic Gregorian date `days` after 1970-01-01, using the
/// 400-year-era decomposition (every era has exactly 146 097 days), which
/// is exact for every `i64` input PostgreSQL can produce.
fn write_civil_date(days: i64, out: &mut impl Write) -> fmt::Result {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of a
    // year of the computation.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    if (0..=9999).contains(&year) {
        let mut text = *b"0000-00-00";
        put_digits(&mut text[0..4], year);
        put_digits(&mut text[5..7], month);
        put_digits(&mut text[8..10], day);
        return out.write_str(ascii(&text)?);
    }
    if year > 9999 {
        write!(out, "+{year}")?;
    } else {
        write!(out, "-{:04}", year.unsigned_abs())?;
    }
    write!(out, "-{month:02}-{day:02}")
}

/// Writes `value` (in `0..10^digits.len()`) into `digits` as zero-padded
/// decimal.
fn put_digits(digits: &mut [u8], mut value: i64) {
    for digit in digits.iter_mut().rev() {
        // `value` is not negative, so the remainder is a single digit.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The text of an ASCII buffer filled by [`put_digits`].
fn ascii(bytes: &[u8]) -> Result<&str, fmt::Error> {
    std::str::from_utf8(bytes).map_err(|_| fmt::Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(write: impl FnOnce(&mut String) -> fmt::Result) -> String {
        let mut out = String::new();
        write(&mut out).unwrap();
        out
    }

    #[test]
    fn dates() {
        assert_eq!(render(|o| write_date(0, o)), "1970-01-01");
        assert_eq!(render(|o| write_date(-1, o)), "1969-12-31");
        assert_eq!(render(|o| write_date(11_016, o)), "2000-02-29");
        assert_eq!(render(|o| write_date(19_782, o)), "2024-02-29");
        assert_eq!(render(|o| write_date(2_932_897, o)), "+10000-01-01");
        // 0001-01-01 is day -719162; the day before is 1 BC, astronomical year 0.
        assert_eq!(render(|o| write_date(-719_162, o)), "0001-01-01");
        assert_eq!(render(|o| write_date(-719_163, o)), "0000-12-31");
        assert_eq!(render(|o| write_date(-719_529, o)), "-0001-12-31");
        assert_eq!(render(|o| write_date(i32::MAX, o)), "infinity");
        assert_eq!(render(|o| write_date(i32::MIN, o)), "-infinity");
    }

    #[test]
    fn times_and_timestamps() {
        assert_eq!(render(|o| write_time(0, o)), "00:00:00");
        assert_eq!(render(|o| write_time(MICROS_PER_DAY, o)), "24:00:00");
        assert_eq!(render(|o| write_time(45_296_000_007, o)), "12:34:56.000007");
        assert_eq!(
            render(|o| write_timestamp(0, true, o)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            render(|o| write_timestamp(-1, false, o)),
            "1969-12-31T23:59:59.999999"
        );
        assert_eq!(
            render(|o| write_timestamp(1_714_566_896_123_456, true, o)),
            "2024-05-01T12:34:56.123456Z"
        );
        assert_eq!(render(|o| write_timestamp(i64::MAX, true, o)), "infinity");
        assert_eq!(render(|o| write_timestamp(i64::MIN, false, o)), "-infinity");
    }

    /// The digits written by hand match `core::fmt`'s padding for every
    /// time of day and for dates across the four-digit years.
    #[test]
    fn hand_written_digits_match_fmt() {
        for micros in (0..MICROS_PER_DAY).step_by(999_983).chain([1, 999_999]) {
            let (h, rest) = (micros / MICROS_PER_HOUR, micros % MICROS_PER_HOUR);
            let (m, s, f) = (
                rest / MICROS_PER_MINUTE,
                rest % MICROS_PER_MINUTE / MICROS_PER_SECOND,
                rest % MICROS_PER_SECOND,
            );
            let mut expected = format!("{h:02}:{m:02}:{s:02}");
            if f != 0 {
                expected += &format!(".{f:06}");
            }
            assert_eq!(render(|o| write_time(micros, o)), expected);
        }
        for days in (-719_528..2_932_897).step_by(997) {
            let text = render(|o| write_date(days, o));
            let (year, rest) = text.split_at(4);
            assert!(year.bytes().all(|b| b.is_ascii_digit()), "{text}");
            assert_eq!(rest.len(), 6, "{text}");
        }
    }

    #[test]
    fn intervals() {
        let iso = |months, days, microseconds| {
            render(|o| {
                write_interval(
                    &Interval {
                        months,
                        days,
                        microseconds,
                    },
                    o,
                )
            })
        };
        assert_eq!(iso(0, 0, 0), "PT0S");
        assert_eq!(iso(14, 3, 3_723_500_000), "P1Y2M3DT1H2M3.500000S");
        assert_eq!(iso(-1, 0, -1_000_001), "P-1MT-1.000001S");
        assert_eq!(iso(0, 1, 0), "P1D");
    }
}
