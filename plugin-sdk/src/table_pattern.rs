//! Table patterns as plugin configurations write them: `schema.table`,
//! `schema.*` (every table of a schema) or `table` (that table in any
//! schema). The first `.` separates schema from table, so a table name may
//! itself contain dots; names match exactly, case-sensitively, as
//! PostgreSQL spells them.

use serde::Deserialize;

use crate::Relation;

/// A pattern matching tables by schema and name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TablePattern {
    schema: Option<String>,
    table: Option<String>,
}

impl TablePattern {
    /// Whether `relation` is one of the tables the pattern names.
    pub fn matches(&self, relation: &Relation) -> bool {
        self.schema
            .as_deref()
            .is_none_or(|schema| schema == relation.schema)
            && self
                .table
                .as_deref()
                .is_none_or(|table| table == relation.name)
    }
}

impl TryFrom<String> for TablePattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let (schema, table) = match text.split_once('.') {
            Some((schema, table)) => (Some(schema), table),
            None => (None, text.as_str()),
        };
        if schema == Some("") || table.is_empty() {
            return Err(format!(
                "`{text}` is not a table pattern: expected `schema.table`, `schema.*` or `table`"
            ));
        }
        Ok(TablePattern {
            schema: schema.map(str::to_owned),
            table: (table != "*").then(|| table.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Result<TablePattern, String> {
        TablePattern::try_from(text.to_owned())
    }

    #[test]
    fn patterns_match_schema_and_table() {
        let orders = Relation::new(1, "public", "orders", Vec::new());
        let dotted = Relation::new(2, "audit", "log.2024", Vec::new());
        assert!(pattern("public.orders").unwrap().matches(&orders));
        assert!(pattern("public.*").unwrap().matches(&orders));
        assert!(pattern("orders").unwrap().matches(&orders));
        assert!(!pattern("audit.*").unwrap().matches(&orders));
        assert!(!pattern("Orders").unwrap().matches(&orders));
        assert!(pattern("audit.log.2024").unwrap().matches(&dotted));
        assert_eq!(
            pattern(".x").unwrap_err(),
            "`.x` is not a table pattern: expected `schema.table`, `schema.*` or `table`"
        );
        assert!(pattern("public.").is_err());
    }
}
