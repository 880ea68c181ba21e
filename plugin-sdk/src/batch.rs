//! Reading and building batches, relations and rows.
//!
//! A row change names its table by index into its batch's `relations`, and
//! its values are positional (one per column of that relation). [`RowRef`]
//! and [`Row`] pair the two so that a plugin can ask for a column by name;
//! [`Batch::remove_column`] keeps relation and rows in step when a plugin
//! removes a column. Indexes are checked: an out-of-range index yields
//! `None`, never a panic.

use crate::{
    Batch, Column, Event, LogicalMessage, Lsn, Operation, Relation, ReplicaIdentity, RowChange,
    Truncate, Value,
};

impl Column {
    /// A column that is not part of the replica identity and has no type
    /// modifier, e.g. `Column::new("email", 25, "text")`.
    pub fn new(name: impl Into<String>, type_oid: u32, type_name: impl Into<String>) -> Self {
        Column {
            name: name.into(),
            type_oid,
            type_name: type_name.into(),
            type_modifier: -1,
            is_key: false,
        }
    }

    /// Marks the column as part of the replica identity.
    pub fn key(mut self) -> Self {
        self.is_key = true;
        self
    }
}

impl Relation {
    /// A table with the default replica identity (its primary key).
    pub fn new(
        oid: u32,
        schema: impl Into<String>,
        name: impl Into<String>,
        columns: Vec<Column>,
    ) -> Self {
        Relation {
            oid,
            schema: schema.into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Default,
            columns,
        }
    }

    /// The position of the column called `name` (exact, case-sensitive
    /// match, as PostgreSQL spells it).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|column| column.name == name)
    }
}

impl RowChange {
    /// An INSERT of `new` into the batch's relation number `relation`.
    pub fn insert(relation: u32, lsn: Lsn, new: Vec<Value>) -> Self {
        RowChange {
            op: Operation::Insert,
            relation,
            lsn,
            old: None,
            new: Some(new),
        }
    }

    /// An UPDATE to `new`, with `old` values when the replica identity
    /// provides them.
    pub fn update(relation: u32, lsn: Lsn, old: Option<Vec<Value>>, new: Vec<Value>) -> Self {
        RowChange {
            op: Operation::Update,
            relation,
            lsn,
            old,
            new: Some(new),
        }
    }

    /// A DELETE of the row identified by `old`.
    pub fn delete(relation: u32, lsn: Lsn, old: Vec<Value>) -> Self {
        RowChange {
            op: Operation::Delete,
            relation,
            lsn,
            old: Some(old),
            new: None,
        }
    }

    /// The row as it is after the change (`new`), or as it was before a
    /// delete (`old`).
    pub fn values(&self) -> Option<&[Value]> {
        self.new.as_deref().or(self.old.as_deref())
    }
}

impl From<RowChange> for Event {
    fn from(change: RowChange) -> Self {
        Event::Row(change)
    }
}

impl From<Truncate> for Event {
    fn from(truncate: Truncate) -> Self {
        Event::Truncate(truncate)
    }
}

impl From<LogicalMessage> for Event {
    fn from(message: LogicalMessage) -> Self {
        Event::Message(message)
    }
}

impl Event {
    /// The WAL position of the event.
    pub fn lsn(&self) -> Lsn {
        match self {
            Event::Row(change) => change.lsn,
            Event::Truncate(truncate) => truncate.lsn,
            Event::Message(message) => message.lsn,
        }
    }
}

impl Batch {
    /// An empty batch that is the whole of transaction `xid` (both `first`
    /// and `last` set). `commit_time` is in microseconds since the epoch.
    pub fn new(xid: u32, commit_lsn: Lsn, commit_time: i64) -> Self {
        Batch {
            xid,
            commit_lsn,
            commit_time,
            first: true,
            last: true,
            relations: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Adds `relation` (unless a relation with its OID is already listed)
    /// and returns its index, for use in row changes.
    pub fn add_relation(&mut self, relation: Relation) -> u32 {
        let index = match self
            .relations
            .iter()
            .position(|known| known.oid == relation.oid)
        {
            Some(index) => index,
            None => {
                self.relations.push(relation);
                self.relations.len() - 1
            }
        };
        index_u32(index)
    }

    /// Appends an event.
    pub fn push(&mut self, event: impl Into<Event>) {
        self.events.push(event.into());
    }

    /// The relation at `index`.
    pub fn relation(&self, index: u32) -> Option<&Relation> {
        self.relations.get(usize::try_from(index).ok()?)
    }

    /// The row changes of the batch, each with its event index and its
    /// relation. A row naming a relation the batch does not list is left
    /// out (the host never sends one).
    pub fn rows(&self) -> impl Iterator<Item = RowRef<'_>> {
        self.events
            .iter()
            .enumerate()
            .filter_map(|(index, event)| match event {
                Event::Row(change) => Some(RowRef {
                    index,
                    relation: self.relation(change.relation)?,
                    change,
                }),
                _ => None,
            })
    }

    /// Removes column `column` from relation `relation` and the matching
    /// value from the `old` and `new` values of every row of that relation,
    /// so that rows stay as long as their relation. Returns the removed
    /// column, or `None` when either index is out of range.
    pub fn remove_column(&mut self, relation: u32, column: usize) -> Option<Column> {
        let columns = &mut self
            .relations
            .get_mut(usize::try_from(relation).ok()?)?
            .columns;
        if column >= columns.len() {
            return None;
        }
        let removed = columns.remove(column);
        for event in &mut self.events {
            if let Event::Row(change) = event
                && change.relation == relation
            {
                for values in [&mut change.old, &mut change.new].into_iter().flatten() {
                    if column < values.len() {
                        values.remove(column);
                    }
                }
            }
        }
        Some(removed)
    }
}

/// Converts a list index to the WIT's `u32`. Lists crossing the component
/// boundary never hold more than `u32::MAX` items.
fn index_u32(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// A row change of a batch together with its relation and its position.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    /// The index of the event in the batch's `events`.
    pub index: usize,
    /// The table the row belongs to.
    pub relation: &'a Relation,
    /// The change itself.
    pub change: &'a RowChange,
}

impl<'a> RowRef<'a> {
    /// The kind of change.
    pub fn op(&self) -> Operation {
        self.change.op
    }

    /// The value of column `name` after the change, or before it for a
    /// delete. `None` when the table has no such column or the change
    /// carries no values.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.current()?.get(name)
    }

    /// The row after the change, or before it for a delete.
    pub fn current(&self) -> Option<Row<'a>> {
        self.after().or_else(|| self.before())
    }

    /// The new values (after the change), when the change has them.
    pub fn after(&self) -> Option<Row<'a>> {
        Some(Row {
            relation: self.relation,
            values: self.change.new.as_deref()?,
        })
    }

    /// The old values (before the change), when the change has them.
    pub fn before(&self) -> Option<Row<'a>> {
        Some(Row {
            relation: self.relation,
            values: self.change.old.as_deref()?,
        })
    }
}

/// One set of values of a row (old or new), readable by column name.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// The table the row belongs to.
    pub relation: &'a Relation,
    /// One value per column, in table order.
    pub values: &'a [Value],
}

impl<'a> Row<'a> {
    /// The value of column `name`.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.values.get(self.relation.column_index(name)?)
    }

    /// The columns and their values, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a Column, &'a Value)> {
        self.relation.columns.iter().zip(self.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Batch {
        let mut batch = Batch::new(7, 0x100, 0);
        let users = batch.add_relation(Relation::new(
            16_384,
            "public",
            "users",
            vec![
                Column::new("id", 23, "int4").key(),
                Column::new("email", 25, "text"),
            ],
        ));
        batch.push(RowChange::insert(
            users,
            0x10,
            vec![1.into(), "a@example.com".into()],
        ));
        batch.push(RowChange::delete(users, 0x20, vec![2.into(), Value::Null]));
        batch
    }

    #[test]
    fn rows_are_read_by_column_name() {
        let batch = users();
        let rows: Vec<_> = batch.rows().collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].get("email").and_then(Value::as_str),
            Some("a@example.com")
        );
        assert_eq!(rows[1].get("id").and_then(Value::as_i64), Some(2));
        assert_eq!(rows[1].index, 1);
        assert_eq!(rows[0].get("missing"), None);
        assert!(rows[1].after().is_none());
    }

    #[test]
    fn removing_a_column_keeps_rows_in_step() {
        let mut batch = users();
        assert_eq!(
            batch.remove_column(0, 0).map(|c| c.name),
            Some("id".to_owned())
        );
        assert_eq!(batch.relations[0].columns.len(), 1);
        let values: Vec<_> = batch
            .rows()
            .map(|row| row.change.values().map(<[Value]>::to_vec))
            .collect();
        assert_eq!(
            values,
            vec![Some(vec!["a@example.com".into()]), Some(vec![Value::Null])]
        );
        assert!(batch.remove_column(0, 5).is_none());
        assert!(batch.remove_column(3, 0).is_none());
    }

    #[test]
    fn relations_are_listed_once() {
        let mut batch = users();
        let again = batch.add_relation(Relation::new(16_384, "public", "users", Vec::new()));
        assert_eq!(again, 0);
        assert_eq!(batch.relations.len(), 1);
    }
}
