// Helpers for Sluice plugins written in JavaScript (componentize-js).
//
// componentize-js maps the WIT types of `wit/` to plain JavaScript: a value
// is `{tag: 'text', val: 'x'}`, records are objects with camelCase fields,
// 64-bit integers are BigInts, `list<u8>` is a Uint8Array, and a thrown
// `{tag: 'bad-config', val: '…'}` becomes the plugin error. This module adds
// what most plugins need on top: configuration parsing with unknown-key
// errors, the three plugin errors, column lookup by name, row building,
// logging, SHA-256, and the value texts and change envelope exactly as the
// Rust SDK writes them (the JSON sink and the mask depend on it).

import { log as hostLog, counterAdd } from 'sluice:plugin/host@0.1.0';

// --- Errors: throw these from init, transform or encode. -------------------

export const badConfig = (message) => ({ tag: 'bad-config', val: message });
export const badInput = (eventIndex, message) => ({
  tag: 'bad-input',
  val: { eventIndex, message },
});
export const failure = (message) => ({ tag: 'other', val: message });

// --- Configuration. --------------------------------------------------------

/** Parses the configuration JSON object: every key must be in `defaults`
 * or `required`; missing optional keys take their default. */
export function config(text, defaults, required = []) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw badConfig(`config: not valid JSON: ${e}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw badConfig('config: expected a JSON object');
  }
  const known = [...required, ...Object.keys(defaults)];
  for (const key of Object.keys(parsed)) {
    if (!known.includes(key)) {
      const expected = known.map((k) => `\`${k}\``).join(', ');
      throw badConfig(`config: unknown field \`${key}\`, expected one of ${expected}`);
    }
  }
  for (const key of required) {
    if (!(key in parsed)) throw badConfig(`config: missing field \`${key}\``);
  }
  return { ...defaults, ...parsed };
}

// --- Logging and counters. -------------------------------------------------

const write = (level) => (message, fields = {}) =>
  hostLog(level, message, Object.entries(fields).map(([k, v]) => [k, String(v)]));

/** `log.info('message', { table: 'orders' })`: structured host logging. */
export const log = {
  trace: write('trace'),
  debug: write('debug'),
  info: write('info'),
  warn: write('warn'),
  error: write('error'),
};

/** Adds `delta` to the plugin's counter `name` (nothing for 0). */
export function counter(name, delta = 1) {
  if (delta) counterAdd(name, BigInt(delta));
}

// --- Columns and rows. -----------------------------------------------------

/** The index of the column called `name` in `relation`, or -1. */
export const columnIndex = (relation, name) =>
  relation.columns.findIndex((c) => c.name === name);

/** The value of column `name` in a row change (new values, or old ones when
 * `old`), or undefined. */
export function get(batch, change, name, old = false) {
  const i = columnIndex(batch.relations[change.relation], name);
  const values = old ? change.old : change.new;
  return i < 0 || !values ? undefined : values[i];
}

/** Values for `relation` in column order from an object keyed by column
 * name; missing columns are NULL. */
export function row(relation, values) {
  const out = relation.columns.map(() => ({ tag: 'null' }));
  for (const [name, value] of Object.entries(values)) {
    const i = columnIndex(relation, name);
    if (i < 0) throw new Error(`${relation.schema}.${relation.name} has no column ${name}`);
    out[i] = value;
  }
  return out;
}

export const text = (s) => ({ tag: 'text', val: s });
export const int = (i) => ({ tag: 'int', val: BigInt(i) });

/** Removes a column from a relation and from every row of it. */
export function removeColumn(batch, relationIndex, column) {
  batch.relations[relationIndex].columns.splice(column, 1);
  for (const event of batch.events) {
    if (event.tag === 'row' && event.val.relation === relationIndex) {
      for (const values of [event.val.old, event.val.new]) {
        if (values && column < values.length) values.splice(column, 1);
      }
    }
  }
}

/** A matcher of relations for `schema.table`, `schema.*` or `table`, as the
 * Rust SDK's TablePattern. Throws a message on a malformed pattern. */
export function tablePattern(pattern) {
  const dot = pattern.indexOf('.');
  const schema = dot < 0 ? null : pattern.slice(0, dot);
  let table = dot < 0 ? pattern : pattern.slice(dot + 1);
  if (schema === '' || table === '') {
    throw `\`${pattern}\` is not a table pattern: expected \`schema.table\`, \`schema.*\` or \`table\``;
  }
  if (table === '*') table = null;
  return (r) => (schema === null || schema === r.schema) && (table === null || table === r.name);
}

// --- SHA-256 (FIPS 180-4), for hashing values. -----------------------------

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** The lowercase hex SHA-256 of the concatenated byte arrays. */
export function sha256hex(...parts) {
  let length = 0;
  for (const p of parts) length += p.length;
  // Message, 0x80, zero padding, 64-bit big-endian bit length.
  const padded = new Uint8Array((((length + 8) >> 6) + 1) << 6);
  let at = 0;
  for (const p of parts) {
    padded.set(p, at);
    at += p.length;
  }
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(length / 0x20000000));
  view.setUint32(padded.length - 4, (length << 3) >>> 0);
  const h = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const w = new Uint32Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let block = 0; block < padded.length; block += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + 4 * i);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
      const t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  return Array.from(h, (x) => x.toString(16).padStart(8, '0')).join('');
}

// --- Value texts, as the Rust SDK writes them. -----------------------------

/** A WIT `s64` as a signed BigInt: componentize-js 0.23 lifts some `s64`s
 * (record fields such as a batch's `commitTime`) as unsigned. */
export const s64 = (v) => BigInt.asIntN(64, BigInt(v));

const I32_MIN = -(2 ** 31), I32_MAX = 2 ** 31 - 1;
const I64_MIN = -(2n ** 63n), I64_MAX = 2n ** 63n - 1n;
const SECOND = 1_000_000n, MINUTE = 60n * SECOND, HOUR = 60n * MINUTE, DAY = 24n * HOUR;

// BigInt `/` and `%` truncate, as Rust's do; these are the Euclidean ones
// (for a positive divisor).
const floorDiv = (a, b) => (a % b < 0n ? a / b - 1n : a / b);
const floorMod = (a, b) => ((a % b) + b) % b;
// Rust's `{:0width$}`: the width counts the sign.
const pad = (n, width) =>
  n < 0n ? '-' + (-n).toString().padStart(width - 1, '0') : n.toString().padStart(width, '0');
const fraction = (micros) => (micros ? '.' + micros.toString().padStart(6, '0') : '');

export const lsnText = (lsn) =>
  `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;

function civilDate(days) {
  const shifted = days + 719_468n;
  const era = floorDiv(shifted, 146_097n);
  const doe = floorMod(shifted, 146_097n);
  const yoe = (doe - doe / 1_460n + doe / 36_524n - doe / 146_096n) / 365n;
  const doy = doe - (365n * yoe + yoe / 4n - yoe / 100n);
  const mi = (5n * doy + 2n) / 153n;
  const day = doy - (153n * mi + 2n) / 5n + 1n;
  const month = mi < 10n ? mi + 3n : mi - 9n;
  const year = yoe + era * 400n + (month <= 2n ? 1n : 0n);
  const md = `-${pad(month, 2)}-${pad(day, 2)}`;
  if (year >= 0n && year <= 9999n) return pad(year, 4) + md;
  if (year > 9999n) return `+${year}${md}`;
  return `-${pad(-year, 4)}${md}`;
}

export function dateText(days) {
  if (days === I32_MAX) return 'infinity';
  if (days === I32_MIN) return '-infinity';
  return civilDate(BigInt(days));
}

export function timeText(micros) {
  micros = s64(micros);
  const hours = floorDiv(micros, HOUR);
  const rest = floorMod(micros, HOUR);
  return `${pad(hours, 2)}:${pad(rest / MINUTE, 2)}:${pad((rest % MINUTE) / SECOND, 2)}${fraction(rest % SECOND)}`;
}

export function timestampText(micros, utc) {
  micros = s64(micros);
  if (micros === I64_MAX) return 'infinity';
  if (micros === I64_MIN) return '-infinity';
  const text = civilDate(floorDiv(micros, DAY)) + 'T' + timeText(floorMod(micros, DAY));
  return utc ? text + 'Z' : text;
}

export function intervalText({ months, days, microseconds }) {
  microseconds = s64(microseconds);
  if (months === 0 && days === 0 && microseconds === 0n) return 'PT0S';
  let out = 'P';
  const years = Math.trunc(months / 12);
  for (const [amount, unit] of [[years, 'Y'], [months - years * 12, 'M'], [days, 'D']]) {
    if (amount) out += `${amount}${unit}`;
  }
  if (microseconds === 0n) return out;
  out += 'T';
  const hours = microseconds / HOUR;
  const minutes = (microseconds % HOUR) / MINUTE;
  let seconds = microseconds % MINUTE;
  for (const [amount, unit] of [[hours, 'H'], [minutes, 'M']]) {
    if (amount) out += `${amount}${unit}`;
  }
  if (seconds) {
    const sign = seconds < 0n ? '-' : '';
    if (seconds < 0n) seconds = -seconds;
    out += `${sign}${seconds / SECOND}${fraction(seconds % SECOND)}S`;
  }
  return out;
}

/** [sign, digits, point] of a finite number's shortest round-trip form: the
 * value is sign 0.DIGITS × 10^point ('0' with point 1 for zero). */
function digitsOf(f) {
  const sign = f < 0 || Object.is(f, -0) ? '-' : '';
  if (f === 0) return [sign, '0', 1];
  const [mantissa, exponent] = Math.abs(f).toExponential().split('e');
  const digits = mantissa.replace('.', '').replace(/0+$/, '');
  return [sign, digits, Number(exponent) + 1];
}

/** Rust's `{}` for an f64: plain decimal, never an exponent. */
export function floatDisplay(f) {
  if (Number.isNaN(f)) return 'NaN';
  if (!Number.isFinite(f)) return f > 0 ? 'Infinity' : '-Infinity';
  const [sign, digits, point] = digitsOf(f);
  if (digits === '0') return sign + '0';
  if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`;
  if (point >= digits.length) return sign + digits + '0'.repeat(point - digits.length);
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

/** serde_json's text of a finite f64: plain decimal when the decimal
 * exponent is in -5..=15, otherwise `1e+16`, `1.5e-7`. */
export function floatJson(f) {
  const [sign, digits, point] = digitsOf(f);
  if (digits === '0') return sign + '0.0';
  const exponent = point - 1;
  if (exponent >= -5 && exponent <= 15) {
    if (digits.length <= point) return sign + digits + '0'.repeat(point - digits.length) + '.0';
    if (point >= 1) return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
    return `${sign}0.${'0'.repeat(-point)}${digits}`;
  }
  const mantissa = digits[0] + (digits.length > 1 ? '.' + digits.slice(1) : '');
  return `${sign}${mantissa}e${exponent >= 0 ? '+' : '-'}${Math.abs(exponent)}`;
}

/** The ISO 8601 text of a date or time value, or undefined. */
export function isoText(value) {
  switch (value.tag) {
    case 'date': return dateText(value.val);
    case 'time': return timeText(value.val);
    case 'timestamp': return timestampText(value.val, false);
    case 'timestamptz': return timestampText(value.val, true);
    case 'interval': return intervalText(value.val);
    default: return undefined;
  }
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/** A value's text as the Rust SDK's `Value::write_text` writes it (what the
 * mask hashes); undefined for NULL and unchanged-toast. */
export function valueText(value) {
  switch (value.tag) {
    case 'text': case 'numeric': case 'json': case 'uuid': case 'other': return value.val;
    case 'boolean': return value.val ? 'true' : 'false';
    case 'int': return s64(value.val).toString();
    case 'float': return floatDisplay(value.val);
    case 'bytes': return hex(value.val);
    default: return isoText(value);
  }
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Standard, padded base64. */
export function base64(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63];
    out += i + 1 < bytes.length ? B64[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.length ? B64[n & 63] : '=';
  }
  return out;
}
