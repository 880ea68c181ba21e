"""Text forms of values, exactly as the Rust SDK writes them (the JSON
envelope and the mask plugin depend on it): LSNs as PostgreSQL prints them,
dates and times in ISO 8601 with PostgreSQL's infinities, intervals as ISO
8601 durations, floats in shortest round-trip form.

Python's integers never overflow, so Rust's truncating division and
remainder are spelled out where the Rust code uses them on signed values.
"""

from wit_world.imports import types

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def _tdiv(a: int, b: int) -> int:
    """Division truncated toward zero, as Rust's `/` on integers."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _trem(a: int, b: int) -> int:
    """Remainder with the dividend's sign, as Rust's `%` on integers."""
    return a - b * _tdiv(a, b)


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _fraction(micros: int) -> str:
    return f".{micros:06d}" if micros else ""


def _civil_date(days: int) -> str:
    shifted = days + 719_468
    era = shifted // 146_097
    doe = shifted % 146_097
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mi = (5 * doy + 2) // 153
    day = doy - (153 * mi + 2) // 5 + 1
    month = mi + 3 if mi < 10 else mi - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    if 0 <= year <= 9999:
        return f"{year:04d}-{month:02d}-{day:02d}"
    if year > 9999:
        return f"+{year}-{month:02d}-{day:02d}"
    return f"-{-year:04d}-{month:02d}-{day:02d}"


def date_text(days: int) -> str:
    if days == I32_MAX:
        return "infinity"
    if days == I32_MIN:
        return "-infinity"
    return _civil_date(days)


def time_text(micros: int) -> str:
    hours = micros // HOUR
    rest = micros % HOUR
    minutes, seconds = rest // MINUTE, rest % MINUTE // SECOND
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{_fraction(rest % SECOND)}"


def timestamp_text(micros: int, utc: bool) -> str:
    if micros == I64_MAX:
        return "infinity"
    if micros == I64_MIN:
        return "-infinity"
    text = _civil_date(micros // DAY) + "T" + time_text(micros % DAY)
    return text + "Z" if utc else text


def interval_text(iv) -> str:
    months, days, micros = iv.months, iv.days, iv.microseconds
    if months == 0 and days == 0 and micros == 0:
        return "PT0S"
    out = ["P"]
    for amount, unit in ((_tdiv(months, 12), "Y"), (_trem(months, 12), "M"), (days, "D")):
        if amount:
            out.append(f"{amount}{unit}")
    if micros == 0:
        return "".join(out)
    out.append("T")
    hours = _tdiv(micros, HOUR)
    minutes = _tdiv(_trem(micros, HOUR), MINUTE)
    seconds = _trem(micros, MINUTE)
    for amount, unit in ((hours, "H"), (minutes, "M")):
        if amount:
            out.append(f"{amount}{unit}")
    if seconds:
        sign = "-" if seconds < 0 else ""
        seconds = abs(seconds)
        out.append(f"{sign}{seconds // SECOND}{_fraction(seconds % SECOND)}S")
    return "".join(out)


def _digits(f: float):
    """(sign, digits, point) of a finite float's shortest round-trip form:
    the value is sign 0.DIGITS × 10^point, DIGITS without leading or
    trailing zeros ("0" for zero, with point 1)."""
    r = repr(f)
    sign = ""
    if r[0] == "-":
        sign, r = "-", r[1:]
    mantissa, _, exponent = r.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + frac) - len((whole + frac).lstrip("0")))
    digits = digits.rstrip("0")
    if not digits:
        return sign, "0", 1
    return sign, digits, point


def float_display(f: float) -> str:
    """Rust's `{}` for an f64: plain decimal, never an exponent (`1` for
    1.0, `-0` for -0.0, `0.0000001` for 1e-7); NaN and infinities as
    PostgreSQL spells them."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "Infinity" if f > 0 else "-Infinity"
    sign, digits, point = _digits(f)
    if digits == "0":
        return sign + "0"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def float_json(f: float) -> str:
    """serde_json's text of a finite f64 (its `zmij` formatter): plain
    decimal when the decimal exponent E is in -5..=15 (`1.0`, `0.001`,
    `1000000000000000.0`), otherwise `1e+16`, `1.5e-7` (no padding);
    `-0.0` for negative zero."""
    sign, digits, point = _digits(f)
    if digits == "0":
        return sign + "0.0"
    exponent = point - 1  # the value is D.DDD × 10^exponent
    if -5 <= exponent <= 15:
        if len(digits) <= point:
            return sign + digits + "0" * (point - len(digits)) + ".0"
        if point >= 1:
            return f"{sign}{digits[:point]}.{digits[point:]}"
        return f"{sign}0.{'0' * -point}{digits}"
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def iso_text(value):
    """The ISO 8601 text of a date or time value, or None for other values."""
    if isinstance(value, types.Value_Date):
        return date_text(value.value)
    if isinstance(value, types.Value_Time):
        return time_text(value.value)
    if isinstance(value, types.Value_Timestamp):
        return timestamp_text(value.value, False)
    if isinstance(value, types.Value_Timestamptz):
        return timestamp_text(value.value, True)
    if isinstance(value, types.Value_Interval):
        return interval_text(value.value)
    return None


_TEXT_LIKE = (
    types.Value_Text,
    types.Value_Numeric,
    types.Value_Json,
    types.Value_Uuid,
    types.Value_Other,
)


def value_text(value):
    """A value's text as the Rust SDK's `Value::write_text` writes it (what
    the mask plugin hashes): text-like values as they are, bytes as
    lowercase hex, floats by `float_display`, dates and times in ISO 8601;
    None for NULL and unchanged-toast."""
    if isinstance(value, _TEXT_LIKE):
        return value.value
    if isinstance(value, types.Value_Boolean):
        return "true" if value.value else "false"
    if isinstance(value, types.Value_Int):
        return str(value.value)
    if isinstance(value, types.Value_Float):
        return float_display(value.value)
    if isinstance(value, types.Value_Bytes):
        return bytes(value.value).hex()
    return iso_text(value)
