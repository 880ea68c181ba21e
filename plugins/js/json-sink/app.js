// The JSON sink in JavaScript: the same envelope, subjects and headers as
// the Rust `json-sink`, byte for byte (format in plugins/README.md); the
// work is in ../envelope.js.

import { Encoder } from '../envelope.js';

let encoder = null;

export function init(config) {
  encoder = new Encoder(config);
}

export function encode(batch) {
  return encoder.encode(batch);
}
