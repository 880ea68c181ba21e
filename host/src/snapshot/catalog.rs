//! What a snapshot needs to know about a published table, read from the
//! catalog: its columns as pgoutput would announce them, its primary key
//! (the order of keyset pagination), the publication's row filter, and an
//! estimate of its size for the progress display.
//!
//! Which table and which columns: exactly what `pg_publication_tables`
//! says the publication publishes, never re-derived. It lists a partitioned
//! table under its root when the publication has
//! `publish_via_partition_root` (one `SELECT` from the root then reads every
//! partition, and the rows carry the root's OID and name, as the stream's
//! do), and under each leaf otherwise. Its `attnames` is the column list;
//! on PostgreSQL 15–17 it also names generated columns, which pgoutput never
//! sends there, so those are left out below 18; on 18 it names exactly the
//! published ones (stored generated columns with
//! `publish_generated_columns = stored` or a column list naming them). Its
//! `rowfilter` is the publication's row filter.
//!
//! The table's [`CachedRelation`] is built through the same
//! [`RelationCache`] the stream uses, from the same facts a Relation
//! message carries, so that a `read` row and a streamed row of the same data
//! have the same relation and the same values. Invariant: a table without a
//! primary key is refused by name ([`SnapshotError::NoPrimaryKey`]) rather
//! than read in an order that could not be resumed.

use std::sync::Arc;

use tokio_postgres::Client;

use super::SnapshotError;
use crate::model::ReplicaIdentity;
use crate::pgoutput::{CachedRelation, RelationBody, RelationCache, RelationColumn, TypeBody};
use crate::replication::quote_ident;

/// The first OID of a type that is not built in; pgoutput sends Type
/// messages for those.
const FIRST_USER_OID: u32 = 10_000;

/// One column the snapshot selects.
#[derive(Clone, Debug)]
pub(super) struct ColumnInfo {
    pub name: String,
    /// `format_type(atttypid, NULL)`, to cast a key's text back.
    pub cast: String,
}

/// A published table, ready to be read.
#[derive(Clone, Debug)]
pub(super) struct TableInfo {
    pub schema: String,
    pub name: String,
    pub oid: u32,
    pub relation: CachedRelation,
    /// The columns pgoutput streams, in table order.
    pub columns: Vec<ColumnInfo>,
    /// Indexes into `columns` of the primary key, in key order.
    pub key: Vec<usize>,
    /// The publication's row filter (PostgreSQL 15+), as SQL.
    pub row_filter: Option<String>,
    /// `pg_class.reltuples`, 0 when unknown.
    pub estimated_rows: u64,
}

impl TableInfo {
    /// `schema.table` as written in messages.
    pub(super) fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// `"schema"."table"` for SQL.
    pub(super) fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

fn sql_error(during: String) -> impl FnOnce(tokio_postgres::Error) -> SnapshotError {
    move |source| SnapshotError::sql(during, source)
}

/// The publication's tables, `(schema, table)`, in name order.
pub(super) async fn published_tables(
    client: &Client,
    publication: &str,
) -> Result<Vec<(String, String)>, SnapshotError> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables
              WHERE pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await
        .map_err(sql_error(format!(
            "cannot list the tables of publication \"{publication}\""
        )))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Why `schema.table` is not among the publication's tables: a partition
/// whose publication publishes it as part of a root in the list names that
/// root, so that the operator reads the table the stream names.
async fn not_published(
    client: &Client,
    publication: &str,
    schema: &str,
    table: &str,
) -> SnapshotError {
    let root: Option<String> = client
        .query_opt(
            "SELECT pt.schemaname::text || '.' || pt.tablename::text
               FROM pg_namespace n
               JOIN pg_class c ON c.relnamespace = n.oid
               JOIN pg_partition_ancestors(c.oid) a(relid) ON a.relid <> c.oid
               JOIN pg_class r ON r.oid = a.relid
               JOIN pg_namespace rn ON rn.oid = r.relnamespace
               JOIN pg_publication_tables pt
                 ON pt.pubname = $1 AND pt.schemaname = rn.nspname AND pt.tablename = r.relname
              WHERE n.nspname = $2 AND c.relname = $3 AND c.relispartition
              LIMIT 1",
            &[&publication, &schema, &table],
        )
        .await
        .ok()
        .flatten()
        .map(|row| row.get(0));
    let table = format!("{schema}.{table}");
    let publication = publication.to_owned();
    match root {
        Some(root) => SnapshotError::PublishedViaRoot {
            table,
            root,
            publication,
        },
        None => SnapshotError::NotPublished { table, publication },
    }
}

/// Describes `schema.table` as published by `publication`.
pub(super) async fn describe(
    client: &Client,
    publication: &str,
    schema: &str,
    table: &str,
) -> Result<Arc<TableInfo>, SnapshotError> {
    let qualified = format!("{schema}.{table}");
    let during = || format!("cannot read the catalog entry of table {qualified}");
    let published = client
        .query_opt(
            "SELECT attnames::text[], rowfilter FROM pg_publication_tables
              WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
            &[&publication, &schema, &table],
        )
        .await
        .map_err(sql_error(during()))?;
    let Some(published) = published else {
        return Err(not_published(client, publication, schema, table).await);
    };
    let attnames: Option<Vec<String>> = published.get(0);
    let row_filter: Option<String> = published.get(1);
    let class = client
        .query_one(
            "SELECT c.oid, c.relreplident::text, GREATEST(c.reltuples, 0)::float8
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await
        .map_err(sql_error(during()))?;
    let oid: u32 = class.get(0);
    let identity: String = class.get(1);
    let estimated: f64 = class.get(2);
    let columns = client
        .query(
            "SELECT a.attnum, a.attname::text, a.atttypid, a.atttypmod,
                    format_type(a.atttypid, NULL), t.typname::text,
                    CASE WHEN tn.nspname = 'pg_catalog' THEN '' ELSE tn.nspname::text END,
                    COALESCE(i.indisprimary, false), COALESCE(i.indisreplident, false)
               FROM pg_attribute a
               JOIN pg_type t ON t.oid = a.atttypid
               JOIN pg_namespace tn ON tn.oid = t.typnamespace
               LEFT JOIN LATERAL (
                   SELECT bool_or(x.indisprimary) AS indisprimary,
                          bool_or(x.indisreplident) AS indisreplident
                     FROM pg_index x
                    WHERE x.indrelid = a.attrelid AND a.attnum = ANY (x.indkey)
                      AND (x.indisprimary OR x.indisreplident)) i ON true
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
                AND (a.attgenerated = ''
                     OR current_setting('server_version_num')::int4 >= 180000)
              ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(sql_error(during()))?;
    let key_order = client
        .query(
            "SELECT k.attnum FROM pg_index i,
                    unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
              WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(sql_error(during()))?;

    let replica_identity = match identity.as_str() {
        "n" => ReplicaIdentity::Nothing,
        "f" => ReplicaIdentity::Full,
        "i" => ReplicaIdentity::Index,
        _ => ReplicaIdentity::Default,
    };
    let mut cache = RelationCache::new();
    let mut infos = Vec::new();
    let mut attnums = Vec::new();
    let mut relation_columns = Vec::new();
    let mut names = Vec::new();
    for row in &columns {
        let name: String = row.get(1);
        if attnames.as_ref().is_some_and(|list| !list.contains(&name)) {
            continue;
        }
        let attnum: i16 = row.get(0);
        let type_oid: u32 = row.get(2);
        let type_modifier: i32 = row.get(3);
        let cast: String = row.get(4);
        let typname: String = row.get(5);
        let namespace: String = row.get(6);
        let primary: bool = row.get(7);
        let replident: bool = row.get(8);
        if type_oid >= FIRST_USER_OID {
            cache.apply_type(&TypeBody {
                xid: None,
                oid: type_oid,
                namespace: &namespace,
                name: &typname,
            });
        }
        // Which columns pgoutput flags as key: all for FULL, the replica
        // identity index's for INDEX, the primary key's for DEFAULT.
        let is_key = match replica_identity {
            ReplicaIdentity::Full => true,
            ReplicaIdentity::Index => replident,
            ReplicaIdentity::Default => primary,
            ReplicaIdentity::Nothing => false,
        };
        attnums.push(attnum);
        relation_columns.push((u8::from(is_key), type_oid, type_modifier));
        names.push(name.clone());
        infos.push(ColumnInfo { name, cast });
    }
    let body = RelationBody {
        xid: None,
        oid,
        namespace: if schema == "pg_catalog" { "" } else { schema },
        name: table,
        replica_identity,
        columns: relation_columns
            .iter()
            .zip(&names)
            .map(|(&(flags, type_oid, type_modifier), name)| RelationColumn {
                flags,
                name,
                type_oid,
                type_modifier,
            })
            .collect(),
    };
    cache.apply_relation(&body);
    let relation = cache
        .get(oid)
        .expect("the relation was just cached")
        .clone();
    let mut key = Vec::new();
    for row in &key_order {
        let attnum: i16 = row.get(0);
        match attnums.iter().position(|a| *a == attnum) {
            Some(i) => key.push(i),
            None => {
                return Err(SnapshotError::KeyNotPublished {
                    table: qualified,
                    publication: publication.to_owned(),
                });
            }
        }
    }
    if key.is_empty() {
        return Err(SnapshotError::NoPrimaryKey { table: qualified });
    }
    Ok(Arc::new(TableInfo {
        schema: schema.to_owned(),
        name: table.to_owned(),
        oid,
        relation,
        columns: infos,
        key,
        row_filter,
        // reltuples is an estimate; rounding it is fine.
        estimated_rows: estimated as u64,
    }))
}
