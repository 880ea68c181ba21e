"""The mask transform in Python: hashes, redacts or drops columns by name,
exactly as the Rust `mask` plugin does (configuration and semantics in
plugins/README.md), so that either can replace the other.

`hash` is the lowercase hex SHA-256 of the salt followed by the value's
bytes (UTF-8 text for text-like values, raw bytes for bytea, the SDK's text
for the others); `hash` and `redact` turn the column's type into `text`;
NULL and unchanged-toast values stay as they are; `drop` removes the
column from the relation and every row.
"""

import hashlib

import wit_world
from wit_world.imports import types

import sluice_plugin as sp

TEXT_OID = 25
ACTIONS = ("hash", "redact", "drop")


class Mask:
    """The parsed configuration."""

    def __init__(self, config: str) -> None:
        c = sp.config(config, {"salt": "", "redaction": "***", "tables": None}, ["columns"])
        if not isinstance(c["columns"], dict):
            raise sp.bad_config("config key `columns`: expected a map of column name to action")
        for name, action in c["columns"].items():
            if action not in ACTIONS:
                raise sp.bad_config(
                    f"config key `columns.{name}`: unknown variant `{action}`, "
                    "expected one of `hash`, `redact`, `drop`"
                )
        self.columns = c["columns"]
        self.salt = c["salt"].encode()
        self.redaction = c["redaction"]
        self.tables = None
        if c["tables"] is not None:
            try:
                self.tables = [sp.table_pattern(t) for t in c["tables"]]
            except ValueError as e:
                raise sp.bad_config(f"config key `tables`: {e}")
        sp.log.info("masking columns", columns=len(self.columns))

    def hash(self, value) -> str:
        digest = hashlib.sha256(self.salt)
        if isinstance(value, types.Value_Bytes):
            digest.update(bytes(value.value))
        else:
            digest.update(sp.value_text(value).encode())
        return digest.hexdigest()

    def transform(self, batch: types.Batch) -> types.Batch:
        hashed = redacted = 0
        rows_of = {}
        for event in batch.events:
            if isinstance(event, types.Event_Row):
                rows_of.setdefault(event.value.relation, []).append(event.value)
        for r, relation in enumerate(batch.relations):
            if self.tables is not None and not any(m(relation) for m in self.tables):
                continue
            # From the last column down, so that dropping keeps the
            # indexes still to visit valid.
            for c in reversed(range(len(relation.columns))):
                action = self.columns.get(relation.columns[c].name)
                if action is None:
                    continue
                if action == "drop":
                    sp.remove_column(batch, r, c)
                    continue
                column = relation.columns[c]
                column.type_oid, column.type_name, column.type_modifier = TEXT_OID, "text", -1
                for change in rows_of.get(r, ()):
                    for values in (change.old, change.new):
                        if values is None or c >= len(values):
                            continue
                        value = values[c]
                        if isinstance(value, (types.Value_Null, types.Value_UnchangedToast)):
                            continue
                        if action == "hash":
                            hashed += 1
                            values[c] = types.Value_Text(self.hash(value))
                        else:
                            redacted += 1
                            values[c] = types.Value_Text(self.redaction)
        sp.counter("values_hashed", hashed)
        sp.counter("values_redacted", redacted)
        return batch


# componentize-py makes a new `WitWorld` object for every call, so what
# `init` parses lives in the module, one per instance.
_mask = None


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        global _mask
        _mask = Mask(config)

    def transform(self, batch: types.Batch) -> types.Batch:
        return _mask.transform(batch)
