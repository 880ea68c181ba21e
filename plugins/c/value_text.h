// A value's text exactly as the Rust SDK's `Value::write_text` writes it
// (what the mask plugin hashes): booleans `true`/`false`, integers in
// decimal, floats in Rust's `{}` form (shortest round-trip digits, never an
// exponent; `NaN`, `Infinity`, `-Infinity`), dates and times in ISO 8601
// with PostgreSQL's infinities, intervals as ISO 8601 durations.
#ifndef SLUICE_VALUE_TEXT_H
#define SLUICE_VALUE_TEXT_H

#include "transform.h"

// Writes the text of a boolean, int, float, date, time, timestamp,
// timestamptz or interval value into `out` (at least 512 bytes, enough for
// the longest float) and returns its length; 0 for other variants.
size_t value_text(const sluice_plugin_types_value_t *value, char *out);

#endif
