//! What each published table's replica identity gives a sink: read from the
//! catalog for `sluice check`, one line per table of the publication (as
//! `pg_publication_tables` lists them: partitioned tables under their root
//! when the publication publishes via the root).
//!
//! The rule, PostgreSQL's: an update or delete logs the old values of the
//! replica identity's columns — every column for FULL, the key's for
//! DEFAULT (the primary key) and INDEX (the chosen unique index), none for
//! NOTHING or a DEFAULT table without a primary key, whose updates and
//! deletes PostgreSQL refuses while a publication publishes them. Under
//! DEFAULT and INDEX an update logs the old key only when the key changed.

use std::fmt;

use tokio_postgres::Client;

use super::SqlError;
use crate::model::ReplicaIdentity;

/// One published table's replica identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableIdentity {
    /// `schema.table`.
    pub table: String,
    pub identity: ReplicaIdentity,
    /// The identity's key columns (DEFAULT: the primary key's, INDEX: the
    /// index's), in key order; empty for FULL, NOTHING, or no primary key.
    pub key: Vec<String>,
    /// Whether unchanged TOAST values are filled from the old row
    /// (`source.fill-unchanged-toast`).
    pub fill_toast: bool,
}

/// The replica identity of every table `publication` publishes, in name
/// order (none when the publication does not exist yet).
pub async fn published(
    client: &Client,
    publication: &str,
    fill_toast: bool,
) -> Result<Vec<TableIdentity>, SqlError> {
    let rows = client
        .query(
            "SELECT pt.schemaname::text || '.' || pt.tablename::text, c.relreplident::text,
                    COALESCE((SELECT array_agg(a.attname::text ORDER BY k.ord)
                                FROM pg_index i,
                                     unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord),
                                     pg_attribute a
                               WHERE i.indrelid = c.oid AND a.attrelid = c.oid
                                 AND a.attnum = k.attnum
                                 AND CASE c.relreplident WHEN 'i' THEN i.indisreplident
                                                         WHEN 'd' THEN i.indisprimary
                                                         ELSE false END), '{}')
               FROM pg_publication_tables pt
               JOIN pg_namespace n ON n.nspname = pt.schemaname
               JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
              WHERE pt.pubname = $1
              ORDER BY pt.schemaname, pt.tablename",
            &[&publication],
        )
        .await
        .map_err(SqlError::during::<SqlError>(format!(
            "reading the replica identity of the tables of publication \"{publication}\""
        )))?;
    Ok(rows
        .iter()
        .map(|row| TableIdentity {
            table: row.get(0),
            identity: match row.get::<_, String>(1).as_str() {
                "f" => ReplicaIdentity::Full,
                "i" => ReplicaIdentity::Index,
                "n" => ReplicaIdentity::Nothing,
                _ => ReplicaIdentity::Default,
            },
            key: row.get(2),
            fill_toast,
        })
        .collect())
}

impl TableIdentity {
    /// Whether updates and deletes carry no old key at all, so that
    /// PostgreSQL refuses them while the table is published.
    pub fn refuses_changes(&self) -> bool {
        match self.identity {
            ReplicaIdentity::Nothing => true,
            ReplicaIdentity::Default | ReplicaIdentity::Index => self.key.is_empty(),
            ReplicaIdentity::Full => false,
        }
    }
}

impl fmt::Display for TableIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key.join(", ");
        match self.identity {
            _ if self.refuses_changes() => write!(
                f,
                "table {}: replica identity {} without a key: PostgreSQL refuses its updates and deletes while it is published (add a primary key, or `ALTER TABLE … REPLICA IDENTITY FULL`)",
                self.table,
                name(self.identity)
            ),
            ReplicaIdentity::Full => write!(
                f,
                "table {}: replica identity full: updates and deletes carry the whole old row{}",
                self.table,
                if self.fill_toast {
                    "; unchanged TOAST values are filled from it"
                } else {
                    "; unchanged TOAST values stay markers (fill-unchanged-toast = false)"
                }
            ),
            identity => write!(
                f,
                "table {}: replica identity {} ({key}): deletes carry the key only, updates the old key only when it changed; unchanged TOAST values arrive as markers",
                self.table,
                name(identity)
            ),
        }
    }
}

fn name(identity: ReplicaIdentity) -> &'static str {
    match identity {
        ReplicaIdentity::Default => "default",
        ReplicaIdentity::Nothing => "nothing",
        ReplicaIdentity::Full => "full",
        ReplicaIdentity::Index => "index",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(identity: ReplicaIdentity, key: &[&str]) -> TableIdentity {
        TableIdentity {
            table: "public.t".into(),
            identity,
            key: key.iter().map(|k| (*k).to_owned()).collect(),
            fill_toast: true,
        }
    }

    #[test]
    fn each_identity_says_what_a_sink_sees() {
        assert_eq!(
            table(ReplicaIdentity::Full, &[]).to_string(),
            "table public.t: replica identity full: updates and deletes carry the whole old row; unchanged TOAST values are filled from it"
        );
        assert!(
            table(ReplicaIdentity::Default, &["a", "b"])
                .to_string()
                .starts_with(
                    "table public.t: replica identity default (a, b): deletes carry the key only"
                )
        );
        for refused in [
            table(ReplicaIdentity::Nothing, &[]),
            table(ReplicaIdentity::Default, &[]),
        ] {
            assert!(refused.refuses_changes());
            assert!(
                refused
                    .to_string()
                    .contains("refuses its updates and deletes")
            );
        }
    }
}
