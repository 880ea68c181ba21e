// See value_text.h. The date and time arithmetic follows the Rust SDK's
// temporal.rs: Euclidean division where Rust uses div_euclid/rem_euclid,
// C's truncating `/` and `%` where Rust uses its own (the same semantics).
#include "value_text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECOND 1000000LL
#define MINUTE (60 * SECOND)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)

static int64_t div_euclid(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b < 0) ? q - 1 : q;
}

static int64_t rem_euclid(int64_t a, int64_t b) {
  int64_t r = a % b;
  return r < 0 ? r + b : r;
}

static size_t fraction(int64_t micros, char *out) {
  return micros ? (size_t)sprintf(out, ".%06lld", (long long)micros) : 0;
}

static size_t civil_date(int64_t days, char *out) {
  int64_t shifted = days + 719468;
  int64_t era = div_euclid(shifted, 146097);
  int64_t doe = rem_euclid(shifted, 146097);
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mi = (5 * doy + 2) / 153;
  int64_t day = doy - (153 * mi + 2) / 5 + 1;
  int64_t month = mi < 10 ? mi + 3 : mi - 9;
  int64_t year = yoe + era * 400 + (month <= 2);
  const char *format = year > 9999 ? "+%lld-%02lld-%02lld"
                       : year < 0  ? "-%04lld-%02lld-%02lld"
                                   : "%04lld-%02lld-%02lld";
  long long shown = year < 0 ? -year : year;
  return (size_t)sprintf(out, format, shown, (long long)month, (long long)day);
}

static size_t time_text(int64_t micros, char *out) {
  int64_t hours = div_euclid(micros, HOUR);
  int64_t rest = rem_euclid(micros, HOUR);
  // Rust's `{:02}` counts the sign in the width, as printf's `%02lld` does.
  size_t n = (size_t)sprintf(out, "%02lld:%02lld:%02lld", (long long)hours,
                             (long long)(rest / MINUTE), (long long)(rest % MINUTE / SECOND));
  return n + fraction(rest % SECOND, out + n);
}

static size_t timestamp_text(int64_t micros, int utc, char *out) {
  if (micros == INT64_MAX) return (size_t)sprintf(out, "infinity");
  if (micros == INT64_MIN) return (size_t)sprintf(out, "-infinity");
  size_t n = civil_date(div_euclid(micros, DAY), out);
  out[n++] = 'T';
  n += time_text(rem_euclid(micros, DAY), out + n);
  if (utc) out[n++] = 'Z';
  out[n] = '\0';
  return n;
}

static size_t interval_text(const sluice_plugin_types_interval_t *iv, char *out) {
  if (iv->months == 0 && iv->days == 0 && iv->microseconds == 0) return (size_t)sprintf(out, "PT0S");
  size_t n = (size_t)sprintf(out, "P");
  long long parts[3] = {iv->months / 12, iv->months % 12, iv->days};
  const char units[3] = {'Y', 'M', 'D'};
  for (int i = 0; i < 3; i++) {
    if (parts[i]) n += (size_t)sprintf(out + n, "%lld%c", parts[i], units[i]);
  }
  int64_t us = iv->microseconds;
  if (us == 0) return n;
  n += (size_t)sprintf(out + n, "T");
  long long hm[2] = {us / HOUR, us % HOUR / MINUTE};
  if (hm[0]) n += (size_t)sprintf(out + n, "%lldH", hm[0]);
  if (hm[1]) n += (size_t)sprintf(out + n, "%lldM", hm[1]);
  int64_t seconds = us % MINUTE;
  if (seconds) {
    uint64_t magnitude = seconds < 0 ? (uint64_t)(-seconds) : (uint64_t)seconds;
    n += (size_t)sprintf(out + n, "%s%llu", seconds < 0 ? "-" : "",
                         (unsigned long long)(magnitude / SECOND));
    n += fraction((int64_t)(magnitude % SECOND), out + n);
    out[n++] = 'S';
    out[n] = '\0';
  }
  return n;
}

// Rust's `{}` for a finite f64: the shortest digits that read back as the
// same double (found by trying 1 to 17 significant digits), in plain
// decimal.
static size_t float_text(double f, char *out) {
  if (isnan(f)) return (size_t)sprintf(out, "NaN");
  if (isinf(f)) return (size_t)sprintf(out, f > 0 ? "Infinity" : "-Infinity");
  size_t n = 0;
  if (signbit(f)) out[n++] = '-';
  double magnitude = fabs(f);
  if (magnitude == 0) {
    out[n++] = '0';
    out[n] = '\0';
    return n;
  }
  char scientific[40];
  for (int precision = 1; precision <= 17; precision++) {
    snprintf(scientific, sizeof scientific, "%.*e", precision - 1, magnitude);
    if (strtod(scientific, NULL) == magnitude) break;
  }
  // scientific is "D.DDDDe±XX": collect the digits and the exponent.
  char digits[20];
  size_t count = 0;
  char *p = scientific;
  for (; *p != 'e'; p++) {
    if (*p != '.') digits[count++] = *p;
  }
  int exponent = atoi(p + 1);
  while (count > 1 && digits[count - 1] == '0') count--;
  int point = exponent + 1;  // the value is 0.DIGITS × 10^point
  if (point <= 0) {
    n += (size_t)sprintf(out + n, "0.");
    for (int i = 0; i < -point; i++) out[n++] = '0';
    memcpy(out + n, digits, count);
    n += count;
  } else if ((size_t)point >= count) {
    memcpy(out + n, digits, count);
    n += count;
    for (size_t i = count; i < (size_t)point; i++) out[n++] = '0';
  } else {
    memcpy(out + n, digits, (size_t)point);
    n += (size_t)point;
    out[n++] = '.';
    memcpy(out + n, digits + point, count - (size_t)point);
    n += count - (size_t)point;
  }
  out[n] = '\0';
  return n;
}

size_t value_text(const sluice_plugin_types_value_t *v, char *out) {
  switch (v->tag) {
    case SLUICE_PLUGIN_TYPES_VALUE_BOOLEAN:
      return (size_t)sprintf(out, v->val.boolean ? "true" : "false");
    case SLUICE_PLUGIN_TYPES_VALUE_INT:
      return (size_t)sprintf(out, "%lld", (long long)v->val.int_);
    case SLUICE_PLUGIN_TYPES_VALUE_FLOAT:
      return float_text(v->val.float_, out);
    case SLUICE_PLUGIN_TYPES_VALUE_DATE:
      if (v->val.date == INT32_MAX) return (size_t)sprintf(out, "infinity");
      if (v->val.date == INT32_MIN) return (size_t)sprintf(out, "-infinity");
      return civil_date(v->val.date, out);
    case SLUICE_PLUGIN_TYPES_VALUE_TIME:
      return time_text(v->val.time, out);
    case SLUICE_PLUGIN_TYPES_VALUE_TIMESTAMP:
      return timestamp_text(v->val.timestamp, 0, out);
    case SLUICE_PLUGIN_TYPES_VALUE_TIMESTAMPTZ:
      return timestamp_text(v->val.timestamptz, 1, out);
    case SLUICE_PLUGIN_TYPES_VALUE_INTERVAL:
      return interval_text(&v->val.interval, out);
    default:
      return 0;
  }
}
