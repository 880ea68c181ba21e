//! `sluice check`'s dry run of the plugin chain: one synthetic row per
//! published table, built from the catalog (the columns the publication
//! publishes, with their real types: on PostgreSQL 15 and later only those
//! of a column list), goes through the transforms and the sink before any real row
//! flows, so that a plugin that fails on the tables it will see, or a sink
//! that publishes outside `[nats] subjects`, is found by `check` rather
//! than by `run`.
//!
//! What this keeps true: every problem is reported, not only the first —
//! each table's row runs on its own, and a failure of one plugin on one
//! table does not hide the others. The synthetic values are what the
//! decoder would produce for text PostgreSQL prints for each type, so a
//! plugin sees the same value tags as in the stream, and the same columns.
//! A row filter is not evaluated (it is SQL): [`notes`] says so for each
//! table that has one, so a failure or a pass is read with that in mind.

use tokio_postgres::Client;

use crate::lsn::Lsn;
use crate::model::{Batch, Column, Event, Operation, Relation, ReplicaIdentity, RowChange, Value};
use crate::pgoutput::synthetic_value;
use crate::plugin::{Sink, Transform};
use crate::publish::SubjectFilter;

/// A published table as the dry run tries it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedTable {
    /// The table with the columns the decoder would announce: on
    /// PostgreSQL 15 and later the publication's column list (all columns
    /// but generated ones when it has none), before that every column.
    pub relation: Relation,
    /// Whether the publication names a column list for the table.
    pub column_list: bool,
    /// The publication's row filter (the `WHERE` expression), if any.
    pub row_filter: Option<String>,
}

/// Columns and filters as PostgreSQL 15 and later publish them
/// (`pg_publication_tables.attnames` and `rowfilter`).
const PUBLISHED_COLUMNS_15: &str = "
    SELECT c.oid::int8, n.nspname::text, c.relname::text, a.attname::text,
           a.atttypid::int8, t.typname::text, a.atttypmod,
           coalesce(a.attnum = ANY (i.indkey), false),
           coalesce((SELECT r.prattrs IS NOT NULL
                       FROM pg_publication_rel r
                       JOIN pg_publication b ON b.oid = r.prpubid
                      WHERE b.pubname = p.pubname AND r.prrelid = c.oid), false),
           p.rowfilter
      FROM pg_publication_tables p
      JOIN pg_namespace n ON n.nspname = p.schemaname
      JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = ANY (p.attnames)
      JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
     WHERE p.pubname = $1
     ORDER BY n.nspname, c.relname, a.attnum";

/// Before PostgreSQL 15 a publication has neither column lists nor row
/// filters: every column is published.
const PUBLISHED_COLUMNS_14: &str = "
    SELECT c.oid::int8, n.nspname::text, c.relname::text, a.attname::text,
           a.atttypid::int8, t.typname::text, a.atttypmod,
           coalesce(a.attnum = ANY (i.indkey), false), false, NULL::text
      FROM pg_publication_tables p
      JOIN pg_namespace n ON n.nspname = p.schemaname
      JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      JOIN pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
     WHERE p.pubname = $1
     ORDER BY n.nspname, c.relname, a.attnum";

/// The tables of `publication` with the columns it publishes, as the
/// decoder would announce them (columns in attribute order, the primary
/// key marked), and its row filters.
pub async fn published_tables(
    client: &Client,
    publication: &str,
) -> Result<Vec<PublishedTable>, tokio_postgres::Error> {
    let version: String = client
        .query_one("SELECT current_setting('server_version_num')", &[])
        .await?
        .get(0);
    let query = match version.parse::<u32>() {
        Ok(v) if v < 150_000 => PUBLISHED_COLUMNS_14,
        _ => PUBLISHED_COLUMNS_15,
    };
    let rows = client.query(query, &[&publication]).await?;
    let mut tables: Vec<PublishedTable> = Vec::new();
    for row in rows {
        let oid = u32::try_from(row.get::<_, i64>(0)).unwrap_or_default();
        if tables.last().is_none_or(|t| t.relation.oid != oid) {
            tables.push(PublishedTable {
                relation: Relation {
                    oid,
                    schema: row.get(1),
                    name: row.get(2),
                    replica_identity: ReplicaIdentity::Default,
                    columns: Vec::new(),
                },
                column_list: row.get(8),
                row_filter: row.get(9),
            });
        }
        if let Some(table) = tables.last_mut() {
            table.relation.columns.push(Column {
                name: row.get(3),
                type_oid: u32::try_from(row.get::<_, i64>(4)).unwrap_or_default(),
                type_name: row.get(5),
                type_modifier: row.get(6),
                is_key: row.get(7),
            });
        }
    }
    Ok(tables)
}

/// What the output should say about how a table's synthetic row differs
/// from an unrestricted one: the columns a column list leaves, and that a
/// row filter was not applied (the filter is SQL, which only PostgreSQL
/// evaluates).
pub fn notes(table: &PublishedTable) -> Vec<String> {
    let relation = &table.relation;
    let name = format!("{}.{}", relation.schema, relation.name);
    let mut notes = Vec::new();
    if table.column_list {
        let columns: Vec<&str> = relation.columns.iter().map(|c| c.name.as_str()).collect();
        notes.push(format!(
            "{name}: the publication's column list publishes only {}; the synthetic row has just these",
            columns.join(", ")
        ));
    }
    if let Some(filter) = &table.row_filter {
        notes.push(format!(
            "{name}: the publication's row filter WHERE {filter} was not applied; the synthetic row may be one it keeps out of the stream"
        ));
    }
    notes
}

/// A one-event batch: an insert into `relation` with a synthetic value in
/// every column.
pub fn synthetic_batch(relation: &Relation) -> Batch {
    let values: Vec<Value> = relation
        .columns
        .iter()
        .map(|c| synthetic_value(c.type_oid, &c.type_name))
        .collect();
    Batch {
        xid: 0,
        commit_lsn: Lsn(1),
        commit_time: 0,
        first: true,
        last: true,
        relations: vec![relation.clone()],
        events: vec![Event::Row(RowChange {
            op: Operation::Insert,
            relation: 0,
            lsn: Lsn(1),
            old: None,
            new: Some(values),
        })],
    }
}

/// Runs each relation's synthetic row through `transforms` (by name) and
/// `sink`, and returns every problem: a plugin's error, or a subject
/// outside `subjects`.
pub fn run(
    tables: &[PublishedTable],
    transforms: &mut [(String, Transform)],
    sink: &mut (String, Sink),
    subjects: &SubjectFilter,
) -> Vec<String> {
    let mut problems = Vec::new();
    'tables: for PublishedTable { relation, .. } in tables {
        let table = format!("{}.{}", relation.schema, relation.name);
        let mut batch = synthetic_batch(relation);
        for (name, transform) in transforms.iter_mut() {
            match transform.transform(batch) {
                Ok(b) => batch = b,
                Err(e) => {
                    problems.push(format!(
                        "transform \"{name}\" failed on a row of {table}: {}",
                        crate::causes::line(&e)
                    ));
                    continue 'tables;
                }
            }
        }
        match sink.1.encode(batch) {
            Ok(messages) => {
                for m in messages {
                    if let Err(e) = subjects.check(&m.subject) {
                        problems.push(format!(
                            "sink \"{}\" made a message for {table} outside nats.subjects: {e}",
                            sink.0
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!(
                "sink \"{}\" failed on a row of {table}: {}",
                sink.0,
                crate::causes::line(&e)
            )),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The synthetic values are ones `sluice plugin run --input` would
    /// accept for the column: the decoder's tags, in PostgreSQL's forms.
    #[test]
    fn synthetic_rows_are_what_the_decoder_would_produce() {
        let types = [
            (16, "bool"),
            (20, "int8"),
            (701, "float8"),
            (1700, "numeric"),
            (25, "text"),
            (17, "bytea"),
            (3802, "jsonb"),
            (2950, "uuid"),
            (1082, "date"),
            (1083, "time"),
            (1114, "timestamp"),
            (1184, "timestamptz"),
            (1186, "interval"),
            (600, "point"),
        ];
        let relation = Relation {
            oid: 1,
            schema: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: types
                .iter()
                .map(|(oid, name)| Column {
                    name: format!("c_{name}"),
                    type_oid: *oid,
                    type_name: (*name).into(),
                    type_modifier: -1,
                    is_key: false,
                })
                .collect(),
        };
        let batch = synthetic_batch(&relation);
        let text = serde_json::to_string(&batch).unwrap();
        assert_eq!(
            crate::batch_json::read(&text).unwrap(),
            std::slice::from_ref(&batch)
        );
        let Event::Row(row) = &batch.events[0] else {
            panic!("an insert")
        };
        assert!(
            row.new.iter().flatten().all(|v| *v != Value::Null),
            "{row:?}"
        );
    }
}
