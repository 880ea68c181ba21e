//! Reading one table in primary-key-ordered chunks on an ordinary SQL
//! connection whose transaction runs under a snapshot exported by a slot.
//!
//! A [`Reader`] owns one connection: it is opened with the host's value
//! session settings (the ones the replication connection uses, so that
//! values print the same way in both), then `BEGIN ISOLATION LEVEL
//! REPEATABLE READ, READ ONLY` and `SET TRANSACTION SNAPSHOT`, which must
//! happen while the exporting session is still waiting for its next
//! command. From then on every chunk it reads sees the database exactly as
//! of the snapshot's point, however long the copy takes.
//!
//! A chunk is keyset pagination: `WHERE (key) > (last key) ORDER BY key
//! LIMIT n`, with the last key passed back as text and cast on the server
//! to each key column's type, so that only PostgreSQL ever compares keys.
//! Memory is bounded by one chunk per reader. Values are read in text format
//! (the simple query protocol) and converted by the table's relation, as
//! pgoutput rows are. Row values never appear in errors.

use std::sync::Arc;

use tokio_postgres::{Client, SimpleQueryMessage};

use super::SnapshotError;
use super::catalog::TableInfo;
use crate::model::Value;
use crate::pgoutput::SESSION_SETTINGS;
use crate::replication::{ConnInfo, quote_ident, quote_literal, setup};

/// One connection reading under an imported snapshot.
pub(super) struct Reader {
    client: Client,
}

/// Rows of one chunk.
#[derive(Debug)]
pub(super) struct Rows {
    pub rows: Vec<Vec<Value>>,
    /// The key of the last row (text per key column); `None` when the
    /// chunk is empty.
    pub last_key: Option<Vec<String>>,
}

impl Reader {
    /// Connects and imports `snapshot` (the name `CREATE_REPLICATION_SLOT`
    /// returned).
    pub(super) async fn open(info: &ConnInfo, snapshot: &str) -> Result<Reader, SnapshotError> {
        let client = setup::connect_sql(info).await?;
        let mut sql = session_settings();
        sql.push_str("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;");
        sql.push_str(&format!(
            "SET TRANSACTION SNAPSHOT {};",
            quote_literal(snapshot)
        ));
        client.batch_execute(&sql).await.map_err(|e| {
            SnapshotError::sql(format!("cannot import the exported snapshot {snapshot}"), e)
        })?;
        Ok(Reader { client })
    }

    /// Connects without a snapshot: every chunk is read in its own
    /// transaction, as of when it runs (backfills).
    pub(super) async fn plain(info: &ConnInfo) -> Result<Reader, SnapshotError> {
        let client = setup::connect_sql(info).await?;
        client
            .batch_execute(&session_settings())
            .await
            .map_err(|e| SnapshotError::sql("cannot set up a backfill connection".into(), e))?;
        Ok(Reader { client })
    }

    /// The connection, for catalog queries under the same snapshot.
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// Up to `limit` rows of `table` whose key is after `after` (from the
    /// start when `None`), in key order.
    pub(super) async fn chunk(
        &self,
        table: &Arc<TableInfo>,
        after: Option<&[String]>,
        limit: usize,
    ) -> Result<Rows, SnapshotError> {
        let sql = chunk_query(table, after, limit);
        let messages = self.client.simple_query(&sql).await.map_err(|e| {
            SnapshotError::sql(
                format!("cannot read a chunk of table {}", table.qualified()),
                e,
            )
        })?;
        let mut rows = Vec::new();
        let mut last_key = None;
        let width = table.columns.len();
        for m in &messages {
            let SimpleQueryMessage::Row(row) = m else {
                continue;
            };
            let values = table
                .relation
                .decode_text_row((0..width).map(|i| row.get(i)))
                .map_err(|source| SnapshotError::Row {
                    table: table.qualified(),
                    error: source,
                })?;
            let key: Option<Vec<String>> = table
                .key
                .iter()
                .map(|&i| row.get(i).map(str::to_owned))
                .collect();
            last_key = Some(key.ok_or_else(|| SnapshotError::NullKey {
                table: table.qualified(),
            })?);
            rows.push(values);
        }
        Ok(Rows { rows, last_key })
    }
}

/// The settings under which values print as the replication stream prints
/// them (see [`SESSION_SETTINGS`]), as SQL.
fn session_settings() -> String {
    let mut sql = String::new();
    for (name, value) in SESSION_SETTINGS {
        sql.push_str(&format!("SET {name} = {};", quote_literal(value)));
    }
    sql.push_str("SET bytea_output = 'hex';");
    sql
}

/// The keyset query for one chunk.
fn chunk_query(table: &TableInfo, after: Option<&[String]>, limit: usize) -> String {
    let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let key_columns: Vec<String> = table
        .key
        .iter()
        .map(|&i| quote_ident(&table.columns[i].name))
        .collect();
    let mut conditions = Vec::new();
    if let Some(filter) = &table.row_filter {
        conditions.push(format!("({filter})"));
    }
    if let Some(after) = after {
        let values: Vec<String> = after
            .iter()
            .zip(&table.key)
            .map(|(text, &i)| format!("{}::{}", quote_literal(text), table.columns[i].cast))
            .collect();
        conditions.push(format!(
            "({}) > ({})",
            key_columns.join(", "),
            values.join(", ")
        ));
    }
    let mut sql = format!("SELECT {} FROM {}", columns.join(", "), table.quoted());
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(
        " ORDER BY {} LIMIT {limit}",
        key_columns.join(", ")
    ));
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::RelationCache;

    #[test]
    fn keyset_query_compares_the_key_as_a_row_on_the_server() {
        let mut cache = RelationCache::new();
        cache.apply_relation(&crate::pgoutput::RelationBody {
            xid: None,
            oid: 1,
            namespace: "s",
            name: "t",
            replica_identity: crate::model::ReplicaIdentity::Default,
            columns: vec![],
        });
        let table = TableInfo {
            schema: "s".into(),
            name: "we\"ird".into(),
            oid: 1,
            relation: cache.get(1).unwrap().clone(),
            columns: vec![
                super::super::catalog::ColumnInfo {
                    name: "a".into(),
                    cast: "integer".into(),
                },
                super::super::catalog::ColumnInfo {
                    name: "b".into(),
                    cast: "text".into(),
                },
            ],
            key: vec![1, 0],
            row_filter: Some("a > 1".into()),
            estimated_rows: 0,
        };
        assert_eq!(
            chunk_query(&table, None, 10),
            r#"SELECT "a", "b" FROM "s"."we""ird" WHERE (a > 1) ORDER BY "b", "a" LIMIT 10"#
        );
        assert_eq!(
            chunk_query(&table, Some(&["it's".into(), "7".into()]), 5),
            r#"SELECT "a", "b" FROM "s"."we""ird" WHERE (a > 1) AND ("b", "a") > ('it''s'::text, '7'::integer) LIMIT 5"#
                .replace(" LIMIT 5", r#" ORDER BY "b", "a" LIMIT 5"#)
        );
    }
}
