// The mask transform in JavaScript: hashes, redacts or drops columns by
// name, exactly as the Rust `mask` plugin does (configuration and semantics
// in plugins/README.md), so that either can replace the other.
//
// `hash` is the lowercase hex SHA-256 of the salt followed by the value's
// bytes (UTF-8 text for text-like values, raw bytes for bytea, the SDK's
// text for the others); `hash` and `redact` turn the column's type into
// `text`; NULL and unchanged-toast values stay as they are; `drop` removes
// the column from the relation and every row.

import {
  badConfig, config, counter, log, removeColumn, sha256hex, tablePattern, valueText,
} from '../sluice-plugin.js';

const TEXT_OID = 25;
const ACTIONS = ['hash', 'redact', 'drop'];
const utf8 = new TextEncoder();

let mask = null;

export function init(text) {
  const c = config(text, { salt: '', redaction: '***', tables: null }, ['columns']);
  if (typeof c.columns !== 'object' || c.columns === null || Array.isArray(c.columns)) {
    throw badConfig('config key `columns`: expected a map of column name to action');
  }
  for (const [name, action] of Object.entries(c.columns)) {
    if (!ACTIONS.includes(action)) {
      throw badConfig(`config key \`columns.${name}\`: unknown variant \`${action}\`, expected one of \`hash\`, \`redact\`, \`drop\``);
    }
  }
  let tables = null;
  if (c.tables !== null) {
    try {
      tables = c.tables.map(tablePattern);
    } catch (e) {
      throw badConfig(`config key \`tables\`: ${e}`);
    }
  }
  mask = {
    columns: new Map(Object.entries(c.columns)),
    salt: utf8.encode(c.salt),
    redaction: c.redaction,
    tables,
  };
  log.info('masking columns', { columns: mask.columns.size });
}

function hash(value) {
  const bytes = value.tag === 'bytes' ? value.val : utf8.encode(valueText(value));
  return sha256hex(mask.salt, bytes);
}

export function transform(batch) {
  let hashed = 0;
  let redacted = 0;
  const rowsOf = new Map();
  for (const event of batch.events) {
    if (event.tag === 'row') {
      const list = rowsOf.get(event.val.relation) ?? [];
      list.push(event.val);
      rowsOf.set(event.val.relation, list);
    }
  }
  batch.relations.forEach((relation, r) => {
    if (mask.tables !== null && !mask.tables.some((matches) => matches(relation))) return;
    // From the last column down, so that dropping keeps the indexes still
    // to visit valid.
    for (let c = relation.columns.length - 1; c >= 0; c--) {
      const action = mask.columns.get(relation.columns[c].name);
      if (action === undefined) continue;
      if (action === 'drop') {
        removeColumn(batch, r, c);
        continue;
      }
      Object.assign(relation.columns[c], { typeOid: TEXT_OID, typeName: 'text', typeModifier: -1 });
      for (const change of rowsOf.get(r) ?? []) {
        for (const values of [change.old, change.new]) {
          if (!values || c >= values.length) continue;
          const value = values[c];
          if (value.tag === 'null' || value.tag === 'unchanged-toast') continue;
          if (action === 'hash') {
            hashed++;
            values[c] = { tag: 'text', val: hash(value) };
          } else {
            redacted++;
            values[c] = { tag: 'text', val: mask.redaction };
          }
        }
      }
    }
  });
  counter('values_hashed', hashed);
  counter('values_redacted', redacted);
  return batch;
}
