"""Helpers for Sluice plugins written in Python (componentize-py).

The bindings componentize-py generates from `wit/` are complete but
low-level: a value is one of sixteen dataclasses, a row is a list aligned
with its relation's columns, errors are `Err(PluginError_…)` exceptions.
This package adds what most plugins need on top:

- `column_index(relation, name)` / `get(batch, change, name)`: look a
  column up by name;
- `row(relation, **values)` and `text`, `integer`… to build rows;
- `config(text, defaults, required)`: parse the plugin's JSON
  configuration, refusing unknown keys with a `bad-config` error;
- `bad_config`, `bad_input`, `failure`: the three plugin errors, raised;
- `log` / `counter`: the host's logging and metrics;
- `value_text(value)`: a value's text, as the Rust SDK writes it.

It imports `wit_world`, the bindings componentize-py generates for the world
being built (transform or sink: both share the `types` and `host`
interfaces), so it works in either.
"""

import json
import linecache

from wit_world.imports import host, types
from componentize_py_types import Err

from .text import value_text, lsn_text, float_json, iso_text  # noqa: F401

Value = types.Value

# Sluice grants plugins no file system: any use of it fails the call with an
# error naming it. Python's tracebacks read source lines from files, which
# would turn every exception into that error and hide the real one; show
# tracebacks without source lines instead.
linecache.getline = lambda *args, **kwargs: ""
linecache.getlines = lambda *args, **kwargs: []
linecache.updatecache = lambda *args, **kwargs: []
linecache.checkcache = lambda *args, **kwargs: None
linecache.lazycache = lambda *args, **kwargs: False


# ---------------------------------------------------------------------------
# Errors: raise these from `init`, `transform` or `encode`.


def bad_config(message: str) -> Err:
    """The configuration cannot be used; `message` names the key."""
    return Err(types.PluginError_BadConfig(message))


def bad_input(event_index, message: str) -> Err:
    """One event (by index in the batch, or None) cannot be processed."""
    return Err(types.PluginError_BadInput(types.BadInput(event_index, message)))


def failure(message: str) -> Err:
    """Any other failure."""
    return Err(types.PluginError_Other(message))


# ---------------------------------------------------------------------------
# Configuration.


def config(text: str, defaults: dict, required=()) -> dict:
    """Parses the configuration JSON object: every key must be in `defaults`
    or `required`; missing optional keys take their default."""
    try:
        parsed = json.loads(text)
    except ValueError as e:
        raise bad_config(f"config: not valid JSON: {e}")
    if not isinstance(parsed, dict):
        raise bad_config("config: expected a JSON object")
    known = list(required) + list(defaults)
    for key in parsed:
        if key not in known:
            expected = ", ".join(f"`{k}`" for k in known)
            raise bad_config(f"config: unknown field `{key}`, expected one of {expected}")
    for key in required:
        if key not in parsed:
            raise bad_config(f"config: missing field `{key}`")
    out = dict(defaults)
    out.update(parsed)
    return out


# ---------------------------------------------------------------------------
# Logging and counters.


class _Log:
    """`log.info("message", table="orders")`: structured host logging."""

    def _write(self, level, message, fields):
        host.log(level, message, [(k, str(v)) for k, v in fields.items()])

    def trace(self, message, **fields):
        self._write(host.Level.TRACE, message, fields)

    def debug(self, message, **fields):
        self._write(host.Level.DEBUG, message, fields)

    def info(self, message, **fields):
        self._write(host.Level.INFO, message, fields)

    def warn(self, message, **fields):
        self._write(host.Level.WARN, message, fields)

    def error(self, message, **fields):
        self._write(host.Level.ERROR, message, fields)


log = _Log()


def counter(name: str, delta: int = 1) -> None:
    """Adds `delta` to the plugin's counter `name` (nothing for 0)."""
    if delta:
        host.counter_add(name, delta)


# ---------------------------------------------------------------------------
# Columns and rows.


def column_index(relation, name: str):
    """The index of the column called `name` in `relation`, or None."""
    for i, column in enumerate(relation.columns):
        if column.name == name:
            return i
    return None


def get(batch, change, name: str, old: bool = False):
    """The value of column `name` in a row change (its new values, or its
    old ones when `old`), or None when there is no such column or row."""
    relation = batch.relations[change.relation]
    i = column_index(relation, name)
    values = change.old if old else change.new
    if i is None or values is None:
        return None
    return values[i]


def row(relation, **values):
    """A list of values for `relation`, in column order, from keyword
    arguments named after columns; missing columns are NULL."""
    out = [types.Value_Null() for _ in relation.columns]
    for name, value in values.items():
        i = column_index(relation, name)
        if i is None:
            raise KeyError(f"{relation.schema}.{relation.name} has no column {name}")
        out[i] = value
    return out


def text(s: str):
    return types.Value_Text(s)


def integer(i: int):
    return types.Value_Int(i)


def is_null(value) -> bool:
    return isinstance(value, types.Value_Null)


def is_unchanged_toast(value) -> bool:
    return isinstance(value, types.Value_UnchangedToast)


def remove_column(batch, relation_index: int, column: int) -> None:
    """Removes a column from a relation and from every row of it."""
    del batch.relations[relation_index].columns[column]
    for event in batch.events:
        if isinstance(event, types.Event_Row) and event.value.relation == relation_index:
            for values in (event.value.old, event.value.new):
                if values is not None and column < len(values):
                    del values[column]


def table_pattern(text: str):
    """Parses `schema.table`, `schema.*` or `table` into a matcher of
    relations, as the Rust SDK's TablePattern does."""
    if "." in text:
        schema, table = text.split(".", 1)
    else:
        schema, table = None, text
    if schema == "" or table == "":
        raise ValueError(
            f"`{text}` is not a table pattern: expected `schema.table`, `schema.*` or `table`"
        )
    table = None if table == "*" else table

    def matches(relation) -> bool:
        return (schema is None or schema == relation.schema) and (
            table is None or table == relation.name
        )

    return matches
