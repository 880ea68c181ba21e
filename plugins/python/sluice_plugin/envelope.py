"""The change-event envelope of Sluice's JSON sink, byte for byte as the
Rust SDK writes it (format in plugins/README.md): one message per row
change, per truncated table and per logical message, in event order, each
naming its event.

`Encoder(config_text)` parses the sink configuration (`subject-prefix`,
`subject`, `message-subject`, `headers`, `bundle`) and raises `bad-config`
errors naming the key; `Encoder.encode(batch)` returns the messages — or,
with `bundle`, one message on that subject whose payload is the JSON array
of the batch's envelopes (none for an empty batch), naming no event.
"""

import base64
import json

from wit_world.imports import types

from . import bad_config, bad_input, config
from .text import float_json, iso_text, lsn_text, timestamp_text

# Rust's `char::is_whitespace` (Unicode White_Space), which is not quite
# Python's `str.isspace`.
_WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

_OPS = {
    types.Operation.INSERT: "c",
    types.Operation.UPDATE: "u",
    types.Operation.DELETE: "d",
    types.Operation.READ: "r",
}


def _string(text: str) -> str:
    """A JSON string escaped as serde_json escapes it (`"`, `\\` and control
    characters only; the same escapes as Python's json without ASCII)."""
    return json.dumps(text, ensure_ascii=False)


def _token(name: str) -> str:
    if not name:
        return "_"
    return "".join("_" if c in ".*>" or c in _WHITE_SPACE else c for c in name)


def _subject_problem(subject: str):
    if any(t == "" for t in subject.split(".")):
        return "have an empty token"
    if "*" in subject or ">" in subject:
        return "contain a wildcard"
    if any(c in _WHITE_SPACE for c in subject):
        return "contain white space"
    return None


class _Template:
    """A subject template: literals and the {schema}/{table} placeholders."""

    def __init__(self, key: str, text: str, prefix: str, tables: bool):
        def bad(why):
            return bad_config(f"config key `{key}`: {why}")

        pieces, literal, rest = [], "", text
        while True:
            opens = [i for i in (rest.find("{"), rest.find("}")) if i >= 0]
            if not opens:
                break
            at = min(opens)
            literal += rest[:at]
            if rest[at] == "}":
                raise bad(f"`}}` without `{{` in `{text}`")
            close = rest.find("}", at)
            if close < 0:
                raise bad(f"`{{` without `}}` in `{text}`")
            name = rest[at + 1 : close]
            if name == "prefix":
                literal += prefix
            elif name in ("schema", "table") and tables:
                if literal:
                    pieces.append(literal)
                    literal = ""
                pieces.append((name,))
            else:
                allowed = "{prefix}, {schema}, {table}" if tables else "{prefix}"
                raise bad(f"unknown placeholder `{{{name}}}`; use {allowed}")
            rest = rest[close + 1 :]
        literal += rest
        if literal:
            pieces.append(literal)
        self.pieces = pieces
        sample = self.render("s", "t")
        why = _subject_problem(sample)
        if why:
            raise bad(f"`{text}` makes subjects like `{sample}`, which {why}")

    def render(self, schema: str, table: str) -> str:
        out = []
        for piece in self.pieces:
            if isinstance(piece, tuple):
                out.append(_token(schema if piece[0] == "schema" else table))
            else:
                out.append(piece)
        return "".join(out)


def _value(value) -> str:
    if isinstance(value, (types.Value_Null, types.Value_UnchangedToast)):
        return "null"
    if isinstance(value, types.Value_Boolean):
        return "true" if value.value else "false"
    if isinstance(value, types.Value_Int):
        return str(value.value)
    if isinstance(value, types.Value_Float):
        f = value.value
        if f != f:
            return '"NaN"'
        if f in (float("inf"), float("-inf")):
            return '"Infinity"' if f > 0 else '"-Infinity"'
        return float_json(f)
    if isinstance(value, types.Value_Bytes):
        return '"' + base64.b64encode(bytes(value.value)).decode() + '"'
    iso = iso_text(value)
    if iso is not None:
        return '"' + iso + '"'
    return _string(value.value)


class Encoder:
    def __init__(self, config_text: str):
        c = config(
            config_text,
            {
                "subject-prefix": "cdc",
                "subject": "{prefix}.{schema}.{table}",
                "message-subject": "{prefix}.messages",
                "headers": {},
                "bundle": None,
            },
        )
        for key in ("subject-prefix", "subject", "message-subject"):
            if not isinstance(c[key], str):
                raise bad_config(f"config key `{key}`: expected a string")
        if not isinstance(c["headers"], dict) or not all(
            isinstance(v, str) for v in c["headers"].values()
        ):
            raise bad_config("config key `headers`: expected a table of strings")
        prefix = c["subject-prefix"]
        why = _subject_problem(prefix)
        if why:
            raise bad_config(
                f"config key `subject-prefix`: `{prefix}` cannot start a subject: it would {why}"
            )
        self.subject = _Template("subject", c["subject"], prefix, True)
        self.message_subject = _Template(
            "message-subject", c["message-subject"], prefix, False
        ).render("", "")
        self.headers = sorted(c["headers"].items())
        self.bundle = None
        if c["bundle"] is not None:
            if not isinstance(c["bundle"], str):
                raise bad_config("config key `bundle`: expected a string")
            self.bundle = _Template("bundle", c["bundle"], prefix, False).render("", "")

    def encode(self, batch):
        tail = (
            f'","commit_lsn":"{lsn_text(batch.commit_lsn)}","xid":{batch.xid},'
            f'"commit_time":"{timestamp_text(batch.commit_time, True)}",'
            f'"commit_time_us":{batch.commit_time}}}'
        )
        heads = {}  # relation index -> '"schema":…,"table":…,"lsn":"'
        names = {}  # relation index -> column names as JSON strings
        subjects = {}
        messages = []
        relations = batch.relations

        def relation_at(index, event):
            if index >= len(relations):
                raise bad_input(
                    event,
                    f"the event names relation {index}, the batch lists {len(relations)}",
                )
            if index not in heads:
                r = relations[index]
                heads[index] = (
                    f'"source":{{"schema":{_string(r.schema)},"table":{_string(r.name)},"lsn":"'
                )
                names[index] = [_string(c.name) for c in r.columns]
                subjects[index] = self.subject.render(r.schema, r.name)
            return relations[index]

        def message(event, subject, payload):
            messages.append(
                types.Message(subject, list(self.headers), payload.encode(), event)
            )

        for index, event in enumerate(batch.events):
            if isinstance(event, types.Event_Row):
                change = event.value
                relation = relation_at(change.relation, index)
                width = len(relation.columns)
                for side, values in (("old", change.old), ("new", change.new)):
                    if values is not None and len(values) != width:
                        raise bad_input(
                            index,
                            f"the {side} row of {relation.schema}.{relation.name} has "
                            f"{len(values)} values for {width} columns",
                        )
                cols = names[change.relation]
                parts = [
                    '{"op":"',
                    _OPS[change.op],
                    '",',
                    heads[change.relation],
                    lsn_text(change.lsn),
                    tail,
                    ',"before":',
                    _columns(cols, change.old),
                    ',"after":',
                    _columns(cols, change.new),
                ]
                if change.new is not None:
                    toasted = [
                        n
                        for n, v in zip(cols, change.new)
                        if isinstance(v, types.Value_UnchangedToast)
                    ]
                    if toasted:
                        parts += [',"unchanged_toast":[', ",".join(toasted), "]"]
                parts.append("}")
                message(index, subjects[change.relation], "".join(parts))
            elif isinstance(event, types.Event_Truncate):
                t = event.value
                flags = (
                    f'"truncate":{{"cascade":{_bool(t.cascade)},'
                    f'"restart_identity":{_bool(t.restart_identity)}}}}}'
                )
                for table in t.relations:
                    relation_at(table, index)
                    payload = (
                        '{"op":"t",' + heads[table] + lsn_text(t.lsn) + tail + "," + flags
                    )
                    message(index, subjects[table], payload)
            else:
                m = event.value
                payload = (
                    '{"op":"m","source":{"lsn":"'
                    + lsn_text(m.lsn)
                    + tail
                    + ',"message":{"prefix":'
                    + _string(m.prefix)
                    + ',"transactional":'
                    + _bool(m.transactional)
                    + ',"content":"'
                    + base64.b64encode(bytes(m.content)).decode()
                    + '"}}'
                )
                message(index, self.message_subject, payload)
        if self.bundle is not None:
            if not batch.events:
                return []
            payload = b"[" + b",".join(m.payload for m in messages) + b"]"
            return [types.Message(self.bundle, list(self.headers), payload, None)]
        return messages


def _bool(b: bool) -> str:
    return "true" if b else "false"


def _columns(names, values) -> str:
    if values is None:
        return "null"
    return (
        "{"
        + ",".join(
            n + ":" + _value(v)
            for n, v in zip(names, values)
            if not isinstance(v, types.Value_UnchangedToast)
        )
        + "}"
    )
