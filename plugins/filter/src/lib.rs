//! Transform that drops events: by table, schema, operation, or the value
//! of a column (configuration in `plugins/README.md`).
//!
//! The configuration holds up to two matchers, `keep` and `drop`; an event
//! passes when it matches `keep` (if given) and does not match `drop` (if
//! given). A matcher's fields must all hold; each list matches any of its
//! entries. A truncate of several tables is narrowed to the tables that
//! pass, and dropped when none does. Every other event passes whole or not
//! at all; dropped events are counted in `events_filtered`.

mod predicate;

use serde::Deserialize;
use sluice_plugin_sdk::{
    Batch, Event, Operation, Relation, Result, RowChange, TablePattern, Transform, config, counter,
    export_transform,
};

use crate::predicate::Where;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    keep: Option<Matcher>,
    drop: Option<Matcher>,
}

/// Which events a matcher selects; absent fields select everything.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Matcher {
    tables: Option<Vec<TablePattern>>,
    schemas: Option<Vec<String>>,
    operations: Option<Vec<Kind>>,
    r#where: Option<Where>,
}

/// Event kinds, as `operations` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Insert,
    Update,
    Delete,
    Read,
    Truncate,
    Message,
}

impl From<Operation> for Kind {
    fn from(op: Operation) -> Self {
        match op {
            Operation::Insert => Kind::Insert,
            Operation::Update => Kind::Update,
            Operation::Delete => Kind::Delete,
            Operation::Read => Kind::Read,
        }
    }
}

impl Matcher {
    fn selects_kind(&self, kind: Kind) -> bool {
        self.operations
            .as_ref()
            .is_none_or(|kinds| kinds.contains(&kind))
    }

    fn selects_table(&self, relation: &Relation) -> bool {
        self.tables
            .as_ref()
            .is_none_or(|tables| tables.iter().any(|t| t.matches(relation)))
            && self
                .schemas
                .as_ref()
                .is_none_or(|schemas| schemas.contains(&relation.schema))
    }

    fn has_table_condition(&self) -> bool {
        self.tables.is_some() || self.schemas.is_some()
    }

    fn selects_row(&self, relation: &Relation, change: &RowChange) -> bool {
        self.selects_kind(change.op.into())
            && self.selects_table(relation)
            && self
                .r#where
                .as_ref()
                .is_none_or(|predicate| predicate.holds(relation, change))
    }

    /// Truncates carry no row, so a matcher with a `where` never selects
    /// them.
    fn selects_truncated(&self, relation: &Relation) -> bool {
        self.selects_kind(Kind::Truncate) && self.selects_table(relation) && self.r#where.is_none()
    }

    /// Logical messages belong to no table and carry no row.
    fn selects_message(&self) -> bool {
        self.selects_kind(Kind::Message) && !self.has_table_condition() && self.r#where.is_none()
    }
}

/// The plugin: the parsed matchers.
#[derive(Debug)]
pub struct Filter {
    keep: Option<Matcher>,
    drop: Option<Matcher>,
}

impl Filter {
    fn passes(&self, selects: impl Fn(&Matcher) -> bool) -> bool {
        self.keep.as_ref().is_none_or(&selects) && !self.drop.as_ref().is_some_and(&selects)
    }
}

impl Transform for Filter {
    fn init(config: &str) -> Result<Self> {
        let Config { keep, drop } = config::parse(config)?;
        Ok(Filter { keep, drop })
    }

    fn transform(&mut self, mut batch: Batch) -> Result<Batch> {
        let before = batch.events.len();
        let relations = &batch.relations;
        // A relation index out of range passes untouched: the host checks
        // indexes, and a filter must not hide the host's error.
        batch.events.retain_mut(|event| match event {
            Event::Row(change) => match relations.get(change.relation as usize) {
                Some(relation) => self.passes(|m| m.selects_row(relation, change)),
                None => true,
            },
            Event::Truncate(truncate) => {
                truncate
                    .relations
                    .retain(|&index| match relations.get(index as usize) {
                        Some(relation) => self.passes(|m| m.selects_truncated(relation)),
                        None => true,
                    });
                !truncate.relations.is_empty()
            }
            Event::Message(_) => self.passes(Matcher::selects_message),
        });
        counter::add("events_filtered", (before - batch.events.len()) as u64);
        Ok(batch)
    }
}

export_transform!(Filter);

#[cfg(test)]
mod tests;
