//! The relation cache: the latest shape of every table seen in the stream,
//! and the conversion of row tuples into values by that shape.
//!
//! pgoutput sends a Relation message before the first change to a table in
//! a session and again whenever the table's definition may have changed
//! (ADD / DROP / RENAME COLUMN, a type change), always before the change
//! that needs it; so the cache simply replaces its entry on every Relation
//! message, and rows are always read with the shape in force when they were
//! written. Type messages name non-built-in types (extensions, enums,
//! domains, composites) before the Relation that uses them; built-in types
//! (OID below 10000) are named from a table of PostgreSQL's catalog.
//!
//! Invariants: a row for a relation that was never announced is an error
//! (`UnknownRelation`), never guessed; a tuple whose column count differs
//! from the relation's is an error; per column the value conversion is
//! chosen once, when the Relation arrives.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{Column, Relation, Value};

use super::message::{ColumnData, RelationBody, TupleData, TypeBody};
use super::value::{ValueError, ValueKind, decode_text};

/// Why a row could not be turned into values.
#[derive(Debug, thiserror::Error)]
pub enum RelationError {
    #[error(
        "row for relation OID {oid}, which no Relation message announced (the stream must be read from the start of a session)"
    )]
    UnknownRelation { oid: u32 },
    #[error(
        "row for {relation} has {found} columns, but its Relation message announced {expected}"
    )]
    ColumnCount {
        relation: String,
        expected: usize,
        found: usize,
    },
    #[error("column {column} ({type_name}) of {relation}: {error}")]
    Value {
        relation: String,
        column: String,
        type_name: String,
        error: ValueError,
    },
}

/// One cached relation: the model's description plus how to convert each
/// column.
#[derive(Clone, Debug)]
pub struct CachedRelation {
    relation: Arc<Relation>,
    kinds: Box<[ValueKind]>,
}

impl CachedRelation {
    /// The relation as the model describes it.
    pub fn relation(&self) -> &Arc<Relation> {
        &self.relation
    }

    fn qualified_name(&self) -> String {
        format!("{}.{}", self.relation.schema, self.relation.name)
    }

    /// A row of `found` columns fits this relation only with one value per
    /// column.
    fn check_width(&self, found: usize) -> Result<(), RelationError> {
        if found == self.kinds.len() {
            return Ok(());
        }
        Err(RelationError::ColumnCount {
            relation: self.qualified_name(),
            expected: self.kinds.len(),
            found,
        })
    }

    /// Converts a tuple of this relation into one value per column.
    pub fn decode_tuple(&self, tuple: &TupleData<'_>) -> Result<Vec<Value>, RelationError> {
        self.check_width(tuple.len())?;
        let mut values = Vec::with_capacity(self.kinds.len());
        for (index, (data, kind)) in tuple.iter().zip(self.kinds.iter()).enumerate() {
            let value = match data {
                ColumnData::Null => Ok(Value::Null),
                ColumnData::UnchangedToast => Ok(Value::UnchangedToast),
                ColumnData::Text(text) => decode_text(*kind, text),
                ColumnData::Binary(_) => Err(ValueError::Binary),
            };
            values.push(value.map_err(|source| self.value_error(index, source))?);
        }
        // Unreachable for a tuple that `decode` validated; kept so that a
        // short iteration can never pass as a complete row.
        self.check_width(values.len())?;
        Ok(values)
    }
}

impl CachedRelation {
    /// Converts a row read by an SQL query (text format, as `SELECT` under
    /// the host's session settings prints it, `None` for NULL) into one
    /// value per column: the same conversion as for the stream, so that a
    /// snapshot row and a streamed row of the same data are equal.
    pub fn decode_text_row<'a>(
        &self,
        columns: impl ExactSizeIterator<Item = Option<&'a str>>,
    ) -> Result<Vec<Value>, RelationError> {
        self.check_width(columns.len())?;
        let mut values = Vec::with_capacity(self.kinds.len());
        for (index, (text, kind)) in columns.zip(self.kinds.iter()).enumerate() {
            let value = match text {
                None => Ok(Value::Null),
                Some(text) => decode_text(*kind, text.as_bytes()),
            };
            values.push(value.map_err(|source| self.value_error(index, source))?);
        }
        Ok(values)
    }

    /// Column `index` could not be converted: the error names the relation,
    /// the column and its type.
    fn value_error(&self, index: usize, source: ValueError) -> RelationError {
        let column = &self.relation.columns[index];
        RelationError::Value {
            relation: self.qualified_name(),
            column: column.name.clone(),
            type_name: column.type_name.clone(),
            error: source,
        }
    }
}

/// Relations and type names announced so far in this replication session.
#[derive(Clone, Debug, Default)]
pub struct RelationCache {
    relations: HashMap<u32, CachedRelation>,
    /// Type OID → (name as Type messages gave it, display name).
    types: HashMap<u32, (String, String)>,
}

impl RelationCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers a non-built-in type's name.
    pub fn apply_type(&mut self, body: &TypeBody<'_>) {
        let display = match body.namespace {
            "" | "public" | "pg_catalog" => body.name.to_owned(),
            namespace => format!("{namespace}.{}", body.name),
        };
        self.types.insert(body.oid, (body.name.to_owned(), display));
    }

    /// Replaces the relation's entry. Returns whether its shape differs
    /// from the one cached before (a re-sent identical Relation returns
    /// false), so that a batch in progress can be cut where it changed.
    pub fn apply_relation(&mut self, body: &RelationBody<'_>) -> bool {
        let mut kinds = Vec::with_capacity(body.columns.len());
        let columns = body
            .columns
            .iter()
            .map(|c| {
                let user_type = self.types.get(&c.type_oid);
                kinds.push(ValueKind::for_type(
                    c.type_oid,
                    user_type.map(|(name, _)| name.as_str()),
                ));
                Column {
                    name: c.name.to_owned(),
                    type_oid: c.type_oid,
                    type_name: type_name(
                        c.type_oid,
                        user_type.map(|(_, display)| display.as_str()),
                    ),
                    type_modifier: c.type_modifier,
                    is_key: c.is_key(),
                }
            })
            .collect();
        let relation = Relation {
            oid: body.oid,
            // pgoutput sends an empty namespace for pg_catalog.
            schema: if body.namespace.is_empty() {
                "pg_catalog".to_owned()
            } else {
                body.namespace.to_owned()
            },
            name: body.name.to_owned(),
            replica_identity: body.replica_identity,
            columns,
        };
        let kinds = kinds.into_boxed_slice();
        let changed = self
            .relations
            .get(&body.oid)
            .is_none_or(|old| *old.relation != relation || old.kinds != kinds);
        if changed {
            self.relations.insert(
                body.oid,
                CachedRelation {
                    relation: Arc::new(relation),
                    kinds,
                },
            );
        }
        changed
    }

    /// The relation with this OID.
    pub fn get(&self, oid: u32) -> Result<&CachedRelation, RelationError> {
        self.relations
            .get(&oid)
            .ok_or(RelationError::UnknownRelation { oid })
    }

    /// How many relations are cached.
    pub fn len(&self) -> usize {
        self.relations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }
}

/// The name shown for a type: PostgreSQL's own for built-in types, the
/// Type message's for others, and `oid:N` when neither is known (a type the
/// server did not describe, which it always does for non-built-in types).
fn type_name(oid: u32, user: Option<&str>) -> String {
    if let Ok(i) = BUILTIN_TYPES.binary_search_by_key(&oid, |(o, _)| *o) {
        return BUILTIN_TYPES[i].1.to_owned();
    }
    match user {
        Some(name) => name.to_owned(),
        None => format!("oid:{oid}"),
    }
}

/// `pg_type.typname` of PostgreSQL 15's built-in base, range and multirange
/// types and their arrays, by OID (sorted). Built-in OIDs are stable across
/// major versions.
const BUILTIN_TYPES: &[(u32, &str)] = &[
    (16, "bool"),
    (17, "bytea"),
    (18, "char"),
    (19, "name"),
    (20, "int8"),
    (21, "int2"),
    (22, "int2vector"),
    (23, "int4"),
    (24, "regproc"),
    (25, "text"),
    (26, "oid"),
    (27, "tid"),
    (28, "xid"),
    (29, "cid"),
    (30, "oidvector"),
    (114, "json"),
    (142, "xml"),
    (143, "_xml"),
    (194, "pg_node_tree"),
    (199, "_json"),
    (271, "_xid8"),
    (600, "point"),
    (601, "lseg"),
    (602, "path"),
    (603, "box"),
    (604, "polygon"),
    (628, "line"),
    (629, "_line"),
    (650, "cidr"),
    (651, "_cidr"),
    (700, "float4"),
    (701, "float8"),
    (718, "circle"),
    (719, "_circle"),
    (774, "macaddr8"),
    (775, "_macaddr8"),
    (790, "money"),
    (791, "_money"),
    (829, "macaddr"),
    (869, "inet"),
    (1000, "_bool"),
    (1001, "_bytea"),
    (1002, "_char"),
    (1003, "_name"),
    (1005, "_int2"),
    (1006, "_int2vector"),
    (1007, "_int4"),
    (1008, "_regproc"),
    (1009, "_text"),
    (1010, "_tid"),
    (1011, "_xid"),
    (1012, "_cid"),
    (1013, "_oidvector"),
    (1014, "_bpchar"),
    (1015, "_varchar"),
    (1016, "_int8"),
    (1017, "_point"),
    (1018, "_lseg"),
    (1019, "_path"),
    (1020, "_box"),
    (1021, "_float4"),
    (1022, "_float8"),
    (1027, "_polygon"),
    (1028, "_oid"),
    (1033, "aclitem"),
    (1034, "_aclitem"),
    (1040, "_macaddr"),
    (1041, "_inet"),
    (1042, "bpchar"),
    (1043, "varchar"),
    (1082, "date"),
    (1083, "time"),
    (1114, "timestamp"),
    (1115, "_timestamp"),
    (1182, "_date"),
    (1183, "_time"),
    (1184, "timestamptz"),
    (1185, "_timestamptz"),
    (1186, "interval"),
    (1187, "_interval"),
    (1231, "_numeric"),
    (1263, "_cstring"),
    (1266, "timetz"),
    (1270, "_timetz"),
    (1560, "bit"),
    (1561, "_bit"),
    (1562, "varbit"),
    (1563, "_varbit"),
    (1700, "numeric"),
    (1790, "refcursor"),
    (2201, "_refcursor"),
    (2202, "regprocedure"),
    (2203, "regoper"),
    (2204, "regoperator"),
    (2205, "regclass"),
    (2206, "regtype"),
    (2207, "_regprocedure"),
    (2208, "_regoper"),
    (2209, "_regoperator"),
    (2210, "_regclass"),
    (2211, "_regtype"),
    (2949, "_txid_snapshot"),
    (2950, "uuid"),
    (2951, "_uuid"),
    (2970, "txid_snapshot"),
    (3220, "pg_lsn"),
    (3221, "_pg_lsn"),
    (3361, "pg_ndistinct"),
    (3402, "pg_dependencies"),
    (3614, "tsvector"),
    (3615, "tsquery"),
    (3642, "gtsvector"),
    (3643, "_tsvector"),
    (3644, "_gtsvector"),
    (3645, "_tsquery"),
    (3734, "regconfig"),
    (3735, "_regconfig"),
    (3769, "regdictionary"),
    (3770, "_regdictionary"),
    (3802, "jsonb"),
    (3807, "_jsonb"),
    (3904, "int4range"),
    (3905, "_int4range"),
    (3906, "numrange"),
    (3907, "_numrange"),
    (3908, "tsrange"),
    (3909, "_tsrange"),
    (3910, "tstzrange"),
    (3911, "_tstzrange"),
    (3912, "daterange"),
    (3913, "_daterange"),
    (3926, "int8range"),
    (3927, "_int8range"),
    (4072, "jsonpath"),
    (4073, "_jsonpath"),
    (4089, "regnamespace"),
    (4090, "_regnamespace"),
    (4096, "regrole"),
    (4097, "_regrole"),
    (4191, "regcollation"),
    (4192, "_regcollation"),
    (4451, "int4multirange"),
    (4532, "nummultirange"),
    (4533, "tsmultirange"),
    (4534, "tstzmultirange"),
    (4535, "datemultirange"),
    (4536, "int8multirange"),
    (4600, "pg_brin_bloom_summary"),
    (4601, "pg_brin_minmax_multi_summary"),
    (5017, "pg_mcv_list"),
    (5038, "pg_snapshot"),
    (5039, "_pg_snapshot"),
    (5069, "xid8"),
    (6150, "_int4multirange"),
    (6151, "_nummultirange"),
    (6152, "_tsmultirange"),
    (6153, "_tstzmultirange"),
    (6155, "_datemultirange"),
    (6157, "_int8multirange"),
];

#[cfg(test)]
mod tests;
