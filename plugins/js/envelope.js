// The change-event envelope of Sluice's JSON sink, byte for byte as the Rust
// SDK writes it (format in plugins/README.md): one message per row change,
// per truncated table and per logical message, in event order, each naming
// its event. `new Encoder(configText)` parses the sink configuration and
// throws `bad-config` errors naming the key; `encoder.encode(batch)` returns
// the messages — or, with `bundle`, one message on that subject whose
// payload is the JSON array of the batch's envelopes (none for an empty
// batch), naming no event.

import {
  badConfig, badInput, base64, config, floatJson, isoText, lsnText, s64, timestampText,
} from './sluice-plugin.js';

// Rust's `char::is_whitespace` (Unicode White_Space).
const WHITE_SPACE = new Set(
  '\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006' +
    '\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000',
);
const OPS = { insert: 'c', update: 'u', delete: 'd', read: 'r' };
const utf8 = new TextEncoder();

// JSON.stringify escapes strings exactly as serde_json does: `"`, `\`,
// control characters (short forms where JSON has them, else \u00xx).
const string = (s) => JSON.stringify(s);
const token = (name) =>
  name === '' ? '_' : Array.from(name, (c) => ('.*>'.includes(c) || WHITE_SPACE.has(c) ? '_' : c)).join('');

function subjectProblem(subject) {
  if (subject.split('.').some((t) => t === '')) return 'have an empty token';
  if (subject.includes('*') || subject.includes('>')) return 'contain a wildcard';
  if (Array.from(subject).some((c) => WHITE_SPACE.has(c))) return 'contain white space';
  return null;
}

class Template {
  constructor(key, text, prefix, tables) {
    const bad = (why) => badConfig(`config key \`${key}\`: ${why}`);
    const pieces = [];
    let literal = '';
    let rest = text;
    for (;;) {
      const at = [rest.indexOf('{'), rest.indexOf('}')].filter((i) => i >= 0);
      if (at.length === 0) break;
      const open = Math.min(...at);
      literal += rest.slice(0, open);
      if (rest[open] === '}') throw bad(`\`}\` without \`{\` in \`${text}\``);
      const close = rest.indexOf('}', open);
      if (close < 0) throw bad(`\`{\` without \`}\` in \`${text}\``);
      const name = rest.slice(open + 1, close);
      if (name === 'prefix') {
        literal += prefix;
      } else if ((name === 'schema' || name === 'table') && tables) {
        if (literal) pieces.push(literal);
        literal = '';
        pieces.push({ placeholder: name });
      } else {
        const allowed = tables ? '{prefix}, {schema}, {table}' : '{prefix}';
        throw bad(`unknown placeholder \`{${name}}\`; use ${allowed}`);
      }
      rest = rest.slice(close + 1);
    }
    literal += rest;
    if (literal) pieces.push(literal);
    this.pieces = pieces;
    const sample = this.render('s', 't');
    const why = subjectProblem(sample);
    if (why) throw bad(`\`${text}\` makes subjects like \`${sample}\`, which ${why}`);
  }

  render(schema, table) {
    return this.pieces
      .map((p) => (typeof p === 'string' ? p : token(p.placeholder === 'schema' ? schema : table)))
      .join('');
  }
}

function value(v) {
  switch (v.tag) {
    case 'null': case 'unchanged-toast': return 'null';
    case 'boolean': return v.val ? 'true' : 'false';
    case 'int': return s64(v.val).toString();
    case 'float':
      if (Number.isNaN(v.val)) return '"NaN"';
      if (!Number.isFinite(v.val)) return v.val > 0 ? '"Infinity"' : '"-Infinity"';
      return floatJson(v.val);
    case 'bytes': return '"' + base64(v.val) + '"';
    case 'numeric': case 'text': case 'json': case 'uuid': case 'other': return string(v.val);
    default: return '"' + isoText(v) + '"';
  }
}

function columns(names, values) {
  if (!values) return 'null';
  const parts = [];
  for (let i = 0; i < names.length; i++) {
    if (values[i].tag !== 'unchanged-toast') parts.push(names[i] + ':' + value(values[i]));
  }
  return '{' + parts.join(',') + '}';
}

export class Encoder {
  constructor(configText) {
    const c = config(configText, {
      'subject-prefix': 'cdc',
      subject: '{prefix}.{schema}.{table}',
      'message-subject': '{prefix}.messages',
      headers: {},
      bundle: null,
    });
    for (const key of ['subject-prefix', 'subject', 'message-subject']) {
      if (typeof c[key] !== 'string') throw badConfig(`config key \`${key}\`: expected a string`);
    }
    if (typeof c.headers !== 'object' || c.headers === null ||
        Object.values(c.headers).some((v) => typeof v !== 'string')) {
      throw badConfig('config key `headers`: expected a table of strings');
    }
    const prefix = c['subject-prefix'];
    const why = subjectProblem(prefix);
    if (why) {
      throw badConfig(`config key \`subject-prefix\`: \`${prefix}\` cannot start a subject: it would ${why}`);
    }
    this.subject = new Template('subject', c.subject, prefix, true);
    this.messageSubject = new Template('message-subject', c['message-subject'], prefix, false).render('', '');
    // Sorted by name, as the Rust sink's BTreeMap (UTF-16 order equals byte
    // order outside the surrogate range, which header names do not use).
    if (c.bundle !== null && typeof c.bundle !== 'string') {
      throw badConfig('config key `bundle`: expected a string');
    }
    this.bundle = c.bundle === null ? null : new Template('bundle', c.bundle, prefix, false).render('', '');
    this.headers = Object.entries(c.headers).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  encode(batch) {
    const tail = `","commit_lsn":"${lsnText(batch.commitLsn)}","xid":${batch.xid},` +
      `"commit_time":"${timestampText(batch.commitTime, true)}","commit_time_us":${s64(batch.commitTime)}}`;
    const cached = new Map();
    const messages = [];
    const relationAt = (index, event) => {
      if (index >= batch.relations.length) {
        throw badInput(event, `the event names relation ${index}, the batch lists ${batch.relations.length}`);
      }
      let c = cached.get(index);
      if (!c) {
        const r = batch.relations[index];
        c = {
          relation: r,
          head: `"source":{"schema":${string(r.schema)},"table":${string(r.name)},"lsn":"`,
          names: r.columns.map((col) => string(col.name)),
          subject: this.subject.render(r.schema, r.name),
        };
        cached.set(index, c);
      }
      return c;
    };
    const message = (event, subject, payload) =>
      messages.push({ subject, headers: this.headers.map(([k, v]) => [k, v]), payload, event });
    batch.events.forEach((event, index) => {
      if (event.tag === 'row') {
        const change = event.val;
        const c = relationAt(change.relation, index);
        const width = c.relation.columns.length;
        for (const [side, values] of [['old', change.old], ['new', change.new]]) {
          if (values && values.length !== width) {
            throw badInput(index,
              `the ${side} row of ${c.relation.schema}.${c.relation.name} has ${values.length} values for ${width} columns`);
          }
        }
        let payload = `{"op":"${OPS[change.op]}",${c.head}${lsnText(change.lsn)}${tail}` +
          `,"before":${columns(c.names, change.old)},"after":${columns(c.names, change.new)}`;
        if (change.new) {
          const toasted = c.names.filter((_, i) => change.new[i].tag === 'unchanged-toast');
          if (toasted.length) payload += `,"unchanged_toast":[${toasted.join(',')}]`;
        }
        message(index, c.subject, payload + '}');
      } else if (event.tag === 'truncate') {
        const t = event.val;
        const flags = `"truncate":{"cascade":${t.cascade},"restart_identity":${t.restartIdentity}}}`;
        for (const table of t.relations) {
          const c = relationAt(table, index);
          message(index, c.subject, `{"op":"t",${c.head}${lsnText(t.lsn)}${tail},${flags}`);
        }
      } else {
        const m = event.val;
        message(index, this.messageSubject,
          `{"op":"m","source":{"lsn":"${lsnText(m.lsn)}${tail},"message":{"prefix":${string(m.prefix)},` +
          `"transactional":${m.transactional},"content":"${base64(m.content)}"}}`);
      }
    });
    if (this.bundle !== null) {
      if (batch.events.length === 0) return [];
      const payload = '[' + messages.map((m) => m.payload).join(',') + ']';
      return [{ subject: this.bundle, headers: this.headers.map(([k, v]) => [k, v]), payload: utf8.encode(payload) }];
    }
    for (const m of messages) m.payload = utf8.encode(m.payload);
    return messages;
  }
}
