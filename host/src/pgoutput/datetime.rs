//! Parsers for PostgreSQL's text output of `date`, `time`, `timestamp`,
//! `timestamptz` and `interval`.
//!
//! They expect what the server prints with `DateStyle = ISO` and the default
//! `IntervalStyle = postgres`, which the host sets on the replication
//! connection: `2024-02-29`, `0044-03-15 BC`, `24:00:00`,
//! `2024-02-29 12:34:56.5+05:30`, `1 year 2 mons -3 days +04:05:06.789`.
//! Dates use the proleptic Gregorian calendar with astronomical year
//! numbering (1 BC is year 0), as PostgreSQL does.
//!
//! Each parser returns `Ok(Some(v))` for a value in the model's range,
//! `Ok(None)` for well-formed text the model cannot hold without loss
//! (a timestamp after 294247-01-10, whose microseconds since 1970 overflow
//! an i64 although PostgreSQL goes on to 294276; an instant that would
//! coincide with the ±infinity sentinels; an infinite interval from
//! PostgreSQL 17) — the caller keeps those as `Other(text)` — and `Err`
//! with what was expected when the text is not in the expected form at all.
//! Nothing is rounded: a fraction of more than six digits is an error.

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Why a text could not be parsed: what shape was expected.
pub(crate) type Expected = &'static str;

const DATE_FORM: Expected =
    "an ISO date such as `2024-02-29`, `0044-03-15 BC`, `infinity` or `-infinity`";
const TIME_FORM: Expected = "a time such as `13:45:00` or `13:45:00.123456`";
const TIMESTAMP_FORM: Expected =
    "an ISO timestamp such as `2024-02-29 13:45:00.5`, `0044-03-15 12:00:00 BC` or `infinity`";
const TIMESTAMPTZ_FORM: Expected =
    "an ISO timestamp with offset such as `2024-02-29 13:45:00.5+00`, `…+05:30` or `infinity`";
const INTERVAL_FORM: Expected =
    "an interval in the `postgres` style such as `1 year 2 mons -3 days +04:05:06.789`";

/// A cursor over ASCII text.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a [u8]) -> Self {
        Cursor { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn at_end(&self) -> bool {
        self.pos == self.s.len()
    }

    fn rest(&self) -> &'a [u8] {
        &self.s[self.pos..]
    }

    /// One or more decimal digits, at most 18 so that the value fits an i64.
    fn digits(&mut self) -> Option<(i64, usize)> {
        let start = self.pos;
        let mut v: i64 = 0;
        while let Some(b @ b'0'..=b'9') = self.peek() {
            if self.pos - start == 18 {
                return None;
            }
            v = v * 10 + i64::from(b - b'0');
            self.pos += 1;
        }
        let n = self.pos - start;
        (n > 0).then_some((v, n))
    }

    /// Exactly `n` digits.
    fn fixed(&mut self, n: usize) -> Option<i64> {
        match self.digits()? {
            (v, len) if len == n => Some(v),
            _ => None,
        }
    }

    /// `.` and 1–6 digits, as microseconds; nothing if there is no `.`.
    fn fraction(&mut self) -> Option<i64> {
        if !self.eat(b'.') {
            return Some(0);
        }
        let (v, n) = self.digits()?;
        if n > 6 {
            return None;
        }
        Some(v * 10i64.pow(6 - n as u32))
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (astronomical
/// year), by counting whole 400-year eras, which repeat exactly.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12; // March = 0 … February = 11
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD` (the year may have more than four digits); returns the
/// year as printed (before any BC adjustment), month and day.
fn ymd(c: &mut Cursor<'_>) -> Option<(i64, i64, i64)> {
    let (year, len) = c.digits()?;
    if len < 4 || !c.eat(b'-') {
        return None;
    }
    let month = c.fixed(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let day = c.fixed(2)?;
    Some((year, month, day))
}

/// `Some(true)` for `infinity`, `Some(false)` for `-infinity`.
fn infinite(s: &[u8]) -> Option<bool> {
    match s {
        b"infinity" => Some(true),
        b"-infinity" => Some(false),
        _ => None,
    }
}

/// What is left after a date: nothing (AD, `false`) or ` BC` (`true`).
fn era(c: &Cursor<'_>) -> Option<bool> {
    match c.rest() {
        b"" => Some(false),
        b" BC" => Some(true),
        _ => None,
    }
}

/// Checks the calendar and returns days since 1970 for a printed year.
fn civil_days(printed_year: i64, month: i64, day: i64, bc: bool) -> Option<i64> {
    if printed_year == 0 || !(1..=12).contains(&month) {
        return None;
    }
    let year = if bc { 1 - printed_year } else { printed_year };
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// `date`: days since 1970-01-01; `infinity` and `-infinity` are `i32::MAX`
/// and `i32::MIN`.
pub(crate) fn parse_date(s: &[u8]) -> Result<Option<i32>, Expected> {
    if let Some(future) = infinite(s) {
        return Ok(Some(if future { i32::MAX } else { i32::MIN }));
    }
    let mut c = Cursor::new(s);
    let (year, month, day) = ymd(&mut c).ok_or(DATE_FORM)?;
    let bc = era(&c).ok_or(DATE_FORM)?;
    let days = civil_days(year, month, day, bc).ok_or(DATE_FORM)?;
    Ok(i32::try_from(days)
        .ok()
        .filter(|d| *d != i32::MAX && *d != i32::MIN))
}

/// `HH:MM:SS[.ffffff]` as microseconds since midnight; 24:00:00 is allowed.
fn time_of_day(c: &mut Cursor<'_>) -> Option<i64> {
    let hour = c.fixed(2)?;
    let (minute, second, fraction) = minutes_seconds(c)?;
    // PostgreSQL rejects leap seconds in time values, so 60 never appears.
    if hour > 24
        || minute > 59
        || second > 59
        || (hour == 24 && (minute, second, fraction) != (0, 0, 0))
    {
        return None;
    }
    Some(((hour * 60 + minute) * 60 + second) * MICROS_PER_SECOND + fraction)
}

/// `:MM:SS[.ffffff]`, the part of a time after its hours: minutes, seconds
/// and microseconds, unchecked.
fn minutes_seconds(c: &mut Cursor<'_>) -> Option<(i64, i64, i64)> {
    if !c.eat(b':') {
        return None;
    }
    let minutes = c.fixed(2)?;
    if !c.eat(b':') {
        return None;
    }
    let seconds = c.fixed(2)?;
    Some((minutes, seconds, c.fraction()?))
}

/// `time`: microseconds since midnight.
pub(crate) fn parse_time(s: &[u8]) -> Result<i64, Expected> {
    let mut c = Cursor::new(s);
    let micros = time_of_day(&mut c).ok_or(TIME_FORM)?;
    if !c.at_end() {
        return Err(TIME_FORM);
    }
    Ok(micros)
}

/// A UTC offset `+HH`, `+HH:MM` or `+HH:MM:SS` (or `-`), in seconds east.
fn utc_offset(c: &mut Cursor<'_>) -> Option<i64> {
    let sign = if c.eat(b'+') {
        1
    } else if c.eat(b'-') {
        -1
    } else {
        return None;
    };
    let hours = c.fixed(2)?;
    let mut minutes = 0;
    let mut seconds = 0;
    if c.eat(b':') {
        minutes = c.fixed(2)?;
        if c.eat(b':') {
            seconds = c.fixed(2)?;
        }
    }
    if minutes > 59 || seconds > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60 + seconds))
}

/// The instant as microseconds since 1970, or `None` when it does not fit
/// an i64 or lands on a sentinel.
fn to_micros(days: i64, time: i64, offset_seconds: i64) -> Option<i64> {
    let micros = i128::from(days) * i128::from(MICROS_PER_DAY) + i128::from(time)
        - i128::from(offset_seconds) * i128::from(MICROS_PER_SECOND);
    i64::try_from(micros)
        .ok()
        .filter(|m| *m != i64::MAX && *m != i64::MIN)
}

fn parse_timestamp_with(
    s: &[u8],
    with_offset: bool,
    form: Expected,
) -> Result<Option<i64>, Expected> {
    if let Some(future) = infinite(s) {
        return Ok(Some(if future { i64::MAX } else { i64::MIN }));
    }
    let mut c = Cursor::new(s);
    let (year, month, day) = ymd(&mut c).ok_or(form)?;
    if !c.eat(b' ') {
        return Err(form);
    }
    let time = time_of_day(&mut c).ok_or(form)?;
    let offset = if with_offset {
        utc_offset(&mut c).ok_or(form)?
    } else {
        0
    };
    let bc = era(&c).ok_or(form)?;
    let days = civil_days(year, month, day, bc).ok_or(form)?;
    Ok(to_micros(days, time, offset))
}

/// `timestamp`: microseconds since 1970-01-01 00:00:00 (no zone);
/// `infinity` and `-infinity` are `i64::MAX` and `i64::MIN`.
pub(crate) fn parse_timestamp(s: &[u8]) -> Result<Option<i64>, Expected> {
    parse_timestamp_with(s, false, TIMESTAMP_FORM)
}

/// `timestamptz`: microseconds since 1970-01-01 00:00:00 UTC, whatever
/// offset the server printed; infinities as for `timestamp`.
pub(crate) fn parse_timestamptz(s: &[u8]) -> Result<Option<i64>, Expected> {
    parse_timestamp_with(s, true, TIMESTAMPTZ_FORM)
}

/// An interval in its three independent parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IntervalParts {
    pub(crate) months: i32,
    pub(crate) days: i32,
    pub(crate) micros: i64,
}

/// `interval` in the `postgres` IntervalStyle: optional `N year(s)`,
/// `N mon(s)`, `N day(s)` fields, each signed, then an optional signed
/// `H:MM:SS[.ffffff]` where the hours may exceed 24.
pub(crate) fn parse_interval(s: &[u8]) -> Result<Option<IntervalParts>, Expected> {
    // PostgreSQL 17 added infinite intervals; the model has no sentinel.
    if s == b"infinity" || s == b"-infinity" {
        return Ok(None);
    }
    let text = std::str::from_utf8(s).map_err(|_| INTERVAL_FORM)?;
    let mut months: i64 = 0;
    let mut days: i64 = 0;
    let mut micros: i128 = 0;
    let mut seen_fields = 0u8;
    let mut seen_time = false;
    let mut tokens = text.split(' ');
    while let Some(token) = tokens.next() {
        if seen_time {
            return Err(INTERVAL_FORM);
        }
        let (negative, unsigned) = match token.as_bytes().first() {
            Some(b'-') => (true, &token[1..]),
            Some(b'+') => (false, &token[1..]),
            _ => (false, token),
        };
        if unsigned.contains(':') {
            micros = interval_time(unsigned).ok_or(INTERVAL_FORM)?;
            if negative {
                micros = -micros;
            }
            seen_time = true;
            continue;
        }
        let mut c = Cursor::new(unsigned.as_bytes());
        let (n, _) = c.digits().ok_or(INTERVAL_FORM)?;
        if !c.at_end() {
            return Err(INTERVAL_FORM);
        }
        let n = if negative { -n } else { n };
        // Fields come in a fixed order, each at most once.
        let (bit, target, scale) = match tokens.next().ok_or(INTERVAL_FORM)? {
            "year" | "years" => (1, &mut months, 12),
            "mon" | "mons" => (2, &mut months, 1),
            "day" | "days" => (4, &mut days, 1),
            _ => return Err(INTERVAL_FORM),
        };
        if seen_fields >= bit {
            return Err(INTERVAL_FORM);
        }
        seen_fields |= bit;
        *target = n
            .checked_mul(scale)
            .and_then(|v| target.checked_add(v))
            .ok_or(INTERVAL_FORM)?;
    }
    if seen_fields == 0 && !seen_time {
        return Err(INTERVAL_FORM);
    }
    Ok(Some(IntervalParts {
        months: i32::try_from(months).map_err(|_| INTERVAL_FORM)?,
        days: i32::try_from(days).map_err(|_| INTERVAL_FORM)?,
        micros: i64::try_from(micros).map_err(|_| INTERVAL_FORM)?,
    }))
}

/// `H:MM:SS[.ffffff]` with any number of hour digits, as microseconds.
fn interval_time(s: &str) -> Option<i128> {
    let mut c = Cursor::new(s.as_bytes());
    let (hours, _) = c.digits()?;
    let (minutes, seconds, fraction) = minutes_seconds(&mut c)?;
    if !c.at_end() || minutes > 59 || seconds > 59 {
        return None;
    }
    Some(
        (i128::from(hours) * 3600 + i128::from(minutes) * 60 + i128::from(seconds))
            * i128::from(MICROS_PER_SECOND)
            + i128::from(fraction),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = MICROS_PER_DAY;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        // Julian day 0 is 4714-11-24 BC (Gregorian), 2440588 days before 1970.
        assert_eq!(days_from_civil(-4713, 11, 24), -2_440_588);
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date(b"1970-01-01"), Ok(Some(0)));
        assert_eq!(parse_date(b"2024-02-29"), Ok(Some(19_782)));
        assert_eq!(parse_date(b"infinity"), Ok(Some(i32::MAX)));
        assert_eq!(parse_date(b"-infinity"), Ok(Some(i32::MIN)));
        // The earliest date PostgreSQL accepts, and 1 BC (year 0, a leap year).
        assert_eq!(parse_date(b"4714-11-24 BC"), Ok(Some(-2_440_588)));
        assert_eq!(
            parse_date(b"4713-01-01 BC"),
            Ok(Some(days_from_civil(-4712, 1, 1) as i32))
        );
        assert_eq!(
            parse_date(b"0001-02-29 BC"),
            Ok(Some(days_from_civil(0, 2, 29) as i32))
        );
        assert_eq!(parse_date(b"0001-01-01"), Ok(Some(-719_162)));
        // The latest date PostgreSQL accepts still fits.
        assert_eq!(parse_date(b"5874897-12-31"), Ok(Some(2_145_042_905)));
        for bad in [
            &b"2023-02-29"[..],
            b"2024-13-01",
            b"2024-00-10",
            b"0000-01-01",
            b"24-01-01",
            b"2024-1-01",
            b"2024-01-01 AD",
            b"2024-01-01 ",
            b"01/02/2024",
            b"",
            b"Infinity",
        ] {
            assert_eq!(
                parse_date(bad),
                Err(DATE_FORM),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time(b"00:00:00"), Ok(0));
        assert_eq!(
            parse_time(b"13:45:06"),
            Ok((13 * 3600 + 45 * 60 + 6) * MICROS_PER_SECOND)
        );
        assert_eq!(parse_time(b"24:00:00"), Ok(DAY));
        assert_eq!(parse_time(b"23:59:59.999999"), Ok(DAY - 1));
        for (text, frac) in [
            ("00:00:00.1", 100_000),
            ("00:00:00.12", 120_000),
            ("00:00:00.123", 123_000),
            ("00:00:00.1234", 123_400),
            ("00:00:00.12345", 123_450),
            ("00:00:00.123456", 123_456),
            ("00:00:00.000001", 1),
        ] {
            assert_eq!(parse_time(text.as_bytes()), Ok(frac), "{text}");
        }
        for bad in [
            &b"24:00:00.000001"[..],
            b"24:00:01",
            b"23:60:00",
            b"23:59:60",
            b"00:00:00.1234567",
            b"00:00:00.",
            b"0:00:00",
            b"00:00",
            b"00:00:00+00",
        ] {
            assert_eq!(
                parse_time(bad),
                Err(TIME_FORM),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp(b"1970-01-01 00:00:00"), Ok(Some(0)));
        assert_eq!(
            parse_timestamp(b"2000-01-01 00:00:00.5"),
            Ok(Some(946_684_800_000_000 + 500_000))
        );
        assert_eq!(parse_timestamp(b"1969-12-31 23:59:59.999999"), Ok(Some(-1)));
        assert_eq!(parse_timestamp(b"infinity"), Ok(Some(i64::MAX)));
        assert_eq!(parse_timestamp(b"-infinity"), Ok(Some(i64::MIN)));
        assert_eq!(
            parse_timestamp(b"4714-11-24 00:00:00 BC"),
            Ok(Some(-2_440_588 * DAY))
        );
        assert_eq!(
            parse_timestamp(b"0001-12-31 23:59:59 BC"),
            Ok(Some(days_from_civil(1, 1, 1) * DAY - MICROS_PER_SECOND))
        );
        // The last instant that fits an i64 after 1970, and beyond it.
        assert_eq!(
            parse_timestamp(b"294247-01-10 04:00:54.775806"),
            Ok(Some(i64::MAX - 1))
        );
        assert_eq!(parse_timestamp(b"294247-01-10 04:00:54.775807"), Ok(None));
        assert_eq!(parse_timestamp(b"294276-12-31 23:59:59.999999"), Ok(None));
        assert_eq!(
            parse_timestamp(b"2024-01-01 00:00:00+00"),
            Err(TIMESTAMP_FORM)
        );
        assert_eq!(parse_timestamp(b"2024-01-01T00:00:00"), Err(TIMESTAMP_FORM));
    }

    #[test]
    fn timestamptz_offsets() {
        let noon = (19_782 * DAY) + 12 * 3600 * MICROS_PER_SECOND;
        assert_eq!(parse_timestamptz(b"2024-02-29 12:00:00+00"), Ok(Some(noon)));
        assert_eq!(
            parse_timestamptz(b"2024-02-29 12:00:00+05"),
            Ok(Some(noon - 5 * 3600 * MICROS_PER_SECOND))
        );
        assert_eq!(
            parse_timestamptz(b"2024-02-29 12:00:00-03:30"),
            Ok(Some(noon + (3 * 3600 + 1800) * MICROS_PER_SECOND))
        );
        // Local mean time offsets have seconds (Europe/Amsterdam before 1937).
        assert_eq!(
            parse_timestamptz(b"1900-01-01 00:00:00+00:19:32"),
            Ok(Some(
                days_from_civil(1900, 1, 1) * DAY - (19 * 60 + 32) * MICROS_PER_SECOND
            ))
        );
        assert_eq!(
            parse_timestamptz(b"2024-02-29 12:00:00.123+00"),
            Ok(Some(noon + 123_000))
        );
        assert_eq!(
            parse_timestamptz(b"0044-03-15 12:00:00+00 BC"),
            Ok(Some(
                days_from_civil(-43, 3, 15) * DAY + 12 * 3600 * MICROS_PER_SECOND
            ))
        );
        assert_eq!(parse_timestamptz(b"infinity"), Ok(Some(i64::MAX)));
        for bad in [
            &b"2024-02-29 12:00:00"[..],
            b"2024-02-29 12:00:00+0",
            b"2024-02-29 12:00:00+00:60",
            b"2024-02-29 12:00:00 UTC",
            b"2024-02-29 12:00:00+00 AD",
        ] {
            assert_eq!(
                parse_timestamptz(bad),
                Err(TIMESTAMPTZ_FORM),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn iv(months: i32, days: i32, micros: i64) -> Result<Option<IntervalParts>, Expected> {
        Ok(Some(IntervalParts {
            months,
            days,
            micros,
        }))
    }

    #[test]
    fn intervals_in_postgres_style() {
        assert_eq!(parse_interval(b"00:00:00"), iv(0, 0, 0));
        assert_eq!(
            parse_interval(b"1 year 2 mons 3 days 04:05:06.789"),
            iv(14, 3, ((4 * 60 + 5) * 60 + 6) * MICROS_PER_SECOND + 789_000)
        );
        assert_eq!(
            parse_interval(b"-1 days +02:03:00"),
            iv(0, -1, (2 * 60 + 3) * 60 * MICROS_PER_SECOND)
        );
        assert_eq!(parse_interval(b"1 day"), iv(0, 1, 0));
        assert_eq!(parse_interval(b"-2 years -1 mons"), iv(-25, 0, 0));
        assert_eq!(parse_interval(b"1 mon -00:00:00.000001"), iv(1, 0, -1));
        assert_eq!(parse_interval(b"-00:00:01"), iv(0, 0, -MICROS_PER_SECOND));
        assert_eq!(
            parse_interval(b"100:00:00"),
            iv(0, 0, 100 * 3600 * MICROS_PER_SECOND)
        );
        // The extremes of each part.
        assert_eq!(
            parse_interval(b"-178956970 years -8 mons -2147483648 days -2562047788:00:54.775808"),
            iv(i32::MIN, i32::MIN, i64::MIN)
        );
        assert_eq!(
            parse_interval(b"178956970 years 7 mons 2147483647 days 2562047788:00:54.775807"),
            iv(i32::MAX, i32::MAX, i64::MAX)
        );
        assert_eq!(parse_interval(b"infinity"), Ok(None));
        for bad in [
            &b""[..],
            b"1",
            b"1 week",
            b"1 day 1 year",
            b"1 day 1 day",
            b"00:00:00 1 day",
            b"P1Y2M",
            b"@ 1 day",
            b"1 day  00:00:00",
            b"00:60:00",
            b"178956971 years",
            b"2147483648 days",
            b"2562047788:00:54.775808",
        ] {
            assert_eq!(
                parse_interval(bad),
                Err(INTERVAL_FORM),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

/// Checks the parsers against 2,000 random values printed by a real
/// PostgreSQL 15, each next to the number PostgreSQL itself computed for it
/// (`testdata/pg15_datetimes.sql`): dates and timestamps across the whole
/// range from 4713 BC to 294276 AD, times, intervals with mixed signs, and
/// timestamptz in zones with half-hour and local-mean-time offsets.
#[cfg(test)]
mod against_postgres {
    use super::*;

    const CAPTURE: &str = include_str!("testdata/pg15_datetimes.txt");

    #[test]
    fn every_captured_value_matches_postgres() {
        let mut checked = 0;
        let mut beyond_model = 0;
        for line in CAPTURE.lines() {
            let mut parts = line.split('|');
            let (kind, text, expected) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let bytes = text.as_bytes();
            match kind {
                "date" => {
                    assert_eq!(
                        parse_date(bytes),
                        Ok(Some(expected.parse().unwrap())),
                        "{line}"
                    )
                }
                "time" => assert_eq!(parse_time(bytes), Ok(expected.parse().unwrap()), "{line}"),
                "timestamp" | "timestamptz" => {
                    let parsed = if kind == "timestamp" {
                        parse_timestamp(bytes)
                    } else {
                        parse_timestamptz(bytes)
                    };
                    // PostgreSQL's range goes past what an i64 of µs since
                    // 1970 holds; those must come back as "keep the text".
                    let want = expected.parse::<i64>().ok();
                    beyond_model += usize::from(want.is_none());
                    assert_eq!(parsed, Ok(want), "{line}");
                }
                "interval" => {
                    let mut n = expected.split(' ').map(|v| v.parse::<i64>().unwrap());
                    let (months, days, micros) =
                        (n.next().unwrap(), n.next().unwrap(), n.next().unwrap());
                    let want = IntervalParts {
                        months: months.try_into().unwrap(),
                        days: days.try_into().unwrap(),
                        micros,
                    };
                    assert_eq!(parse_interval(bytes), Ok(Some(want)), "{line}");
                }
                other => panic!("unknown kind {other}"),
            }
            checked += 1;
        }
        assert_eq!(checked, 2_000);
        assert!(beyond_model < 20, "{beyond_model} values beyond the model");
    }
}
