//! Transform that masks personal data column by column (configuration in
//! `plugins/README.md`): `hash` replaces a value by the SHA-256 of its text
//! (optionally salted), in lowercase hex; `redact` replaces it by a fixed
//! text; `drop` removes the column from the relation and from every row.
//!
//! Masked values are text, so a hashed or redacted column's type becomes
//! `text` (OID 25) in the relation passed on: consumers must not expect the
//! original type. NULL stays NULL and unchanged-toast stays
//! unchanged-toast, in `old` and `new` values alike. Columns are named
//! without their table and apply to every table that has them, unless
//! `tables` narrows the tables masked.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use sluice_plugin_sdk::{
    Batch, Event, Result, TablePattern, Transform, Value, config, counter, export_transform, log,
};

/// What happens to a column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Hash,
    Redact,
    Drop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    columns: BTreeMap<String, Action>,
    #[serde(default)]
    salt: String,
    #[serde(default = "default_redaction")]
    redaction: String,
    tables: Option<Vec<TablePattern>>,
}

fn default_redaction() -> String {
    "***".to_owned()
}

/// The plugin: the parsed configuration.
#[derive(Debug)]
pub struct Mask {
    columns: BTreeMap<String, Action>,
    salt: String,
    redaction: String,
    tables: Option<Vec<TablePattern>>,
}

/// OID and name of PostgreSQL's `text` type, which masked values have.
const TEXT_OID: u32 = 25;

impl Transform for Mask {
    fn init(config: &str) -> Result<Self> {
        let Config {
            columns,
            salt,
            redaction,
            tables,
        } = config::parse(config)?;
        log::info!(columns = columns.len(); "masking columns");
        Ok(Mask {
            columns,
            salt,
            redaction,
            tables,
        })
    }

    fn transform(&mut self, mut batch: Batch) -> Result<Batch> {
        let (mut hashed, mut redacted) = (0, 0);
        for relation_index in 0..batch.relations.len() {
            let relation = &batch.relations[relation_index];
            if !self
                .tables
                .as_ref()
                .is_none_or(|t| t.iter().any(|p| p.matches(relation)))
            {
                continue;
            }
            // Drop from the last column down, so that earlier indexes stay
            // valid while removing.
            for column in (0..relation_count(&batch, relation_index)).rev() {
                let name = &batch.relations[relation_index].columns[column].name;
                let Some(&action) = self.columns.get(name) else {
                    continue;
                };
                let relation = relation_index as u32;
                if action == Action::Drop {
                    batch.remove_column(relation, column);
                    continue;
                }
                let target = &mut batch.relations[relation_index].columns[column];
                target.type_oid = TEXT_OID;
                target.type_name = "text".to_owned();
                target.type_modifier = -1;
                for event in &mut batch.events {
                    let Event::Row(change) = event else { continue };
                    if change.relation != relation {
                        continue;
                    }
                    for values in [&mut change.old, &mut change.new].into_iter().flatten() {
                        let Some(value) = values.get_mut(column) else {
                            continue;
                        };
                        if value.is_null() || value.is_unchanged_toast() {
                            continue;
                        }
                        *value = match action {
                            Action::Hash => {
                                hashed += 1;
                                Value::Text(hash(&self.salt, value))
                            }
                            _ => {
                                redacted += 1;
                                Value::Text(self.redaction.clone())
                            }
                        };
                    }
                }
            }
        }
        counter::add("values_hashed", hashed);
        counter::add("values_redacted", redacted);
        Ok(batch)
    }
}

fn relation_count(batch: &Batch, relation: usize) -> usize {
    batch.relations[relation].columns.len()
}

/// SHA-256 of `salt` followed by the value's bytes, in lowercase hex: the
/// UTF-8 text of text-like values, the raw bytes of `bytea`, and the
/// envelope's text for the others (`42`, `true`, `2024-02-29`).
fn hash(salt: &str, value: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    match (value.as_str(), value.as_bytes()) {
        (Some(text), _) => hasher.update(text.as_bytes()),
        (_, Some(bytes)) => hasher.update(bytes),
        _ => {
            let mut text = String::new();
            value.write_text(&mut text);
            hasher.update(text.as_bytes());
        }
    }
    let mut hex = String::with_capacity(64);
    for byte in hasher.finalize() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

export_transform!(Mask);

#[cfg(test)]
mod tests {
    use sluice_plugin_sdk::{Column, PluginError, Relation, RowChange, testing};

    use super::*;

    fn users() -> Batch {
        let mut batch = Batch::new(1, 0x100, 0);
        let users = batch.add_relation(Relation::new(
            1,
            "public",
            "users",
            vec![
                Column::new("id", 23, "int4").key(),
                Column::new("email", 1043, "varchar"),
                Column::new("phone", 25, "text"),
                Column::new("ssn", 25, "text"),
            ],
        ));
        let orders = batch.add_relation(Relation::new(
            2,
            "public",
            "orders",
            vec![
                Column::new("id", 23, "int4").key(),
                Column::new("email", 25, "text"),
            ],
        ));
        batch.push(RowChange::update(
            users,
            1,
            Some(vec![
                1.into(),
                "old@example.com".into(),
                Value::Null,
                "123".into(),
            ]),
            vec![
                1.into(),
                "a@example.com".into(),
                "555".into(),
                Value::UnchangedToast,
            ],
        ));
        batch.push(RowChange::insert(
            orders,
            2,
            vec![7.into(), "a@example.com".into()],
        ));
        batch
    }

    // echo -n 'a@example.com' | sha256sum
    const A_HASH: &str = "08168cd80dfd534ab0f10af10f1303fe00af2d43ab5c1432360d137f8197e17a";

    #[test]
    fn hashes_redacts_and_drops() {
        testing::reset();
        let mut mask =
            Mask::init(r#"{"columns": {"email": "hash", "phone": "redact", "ssn": "drop"}}"#)
                .unwrap();
        let out = mask.transform(users()).unwrap();
        let users = &out.relations[0];
        let names: Vec<_> = users
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_name.as_str()))
            .collect();
        assert_eq!(
            names,
            [("id", "int4"), ("email", "text"), ("phone", "text")]
        );
        assert_eq!(users.columns[1].type_oid, TEXT_OID);
        let Event::Row(update) = &out.events[0] else {
            panic!("not a row")
        };
        assert_eq!(
            update.new,
            Some(vec![1.into(), A_HASH.into(), "***".into()])
        );
        assert_eq!(update.old.as_ref().unwrap()[2], Value::Null);
        let Event::Row(insert) = &out.events[1] else {
            panic!("not a row")
        };
        assert_eq!(insert.new, Some(vec![7.into(), A_HASH.into()]));
        assert_eq!(testing::counter("values_hashed"), 3);
        assert_eq!(testing::counter("values_redacted"), 1);
    }

    #[test]
    fn salt_tables_and_redaction() {
        let mut mask = Mask::init(
            r#"{"columns": {"email": "hash", "id": "redact"}, "salt": "pepper", "redaction": "", "tables": ["public.orders"]}"#,
        )
        .unwrap();
        let out = mask.transform(users()).unwrap();
        let Event::Row(update) = &out.events[0] else {
            panic!("not a row")
        };
        assert_eq!(
            update.new.as_ref().unwrap()[1],
            Value::from("a@example.com"),
            "users untouched"
        );
        let Event::Row(insert) = &out.events[1] else {
            panic!("not a row")
        };
        // echo -n 'peppera@example.com' | sha256sum
        assert_eq!(
            insert.new,
            Some(vec![
                "".into(),
                "b933d59aaed37a1cf390cf5d081b2bc732116ea629ebd8fd26836f4b4d4849f0".into()
            ])
        );
    }

    #[test]
    fn bad_configs_name_the_key() {
        let error = |config: &str| Mask::init(config).unwrap_err();
        assert_eq!(
            error(r#"{"columns": {"email": "encrypt"}}"#),
            PluginError::bad_config(
                "config key `columns.email`: unknown variant `encrypt`, expected one of `hash`, `redact`, `drop`"
            )
        );
        assert_eq!(
            error("{}"),
            PluginError::bad_config("config: missing field `columns`")
        );
    }
}
