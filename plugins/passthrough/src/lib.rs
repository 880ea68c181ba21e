//! The identity transform: every batch is passed on unchanged. It is the
//! smallest possible plugin, the baseline of the pipeline benchmark, and a
//! template for new transforms. It accepts any configuration.

use sluice_plugin_sdk::{Batch, Result, Transform, export_transform};

/// The plugin; it keeps no state.
#[derive(Debug)]
pub struct Passthrough;

impl Transform for Passthrough {
    fn init(_config: &str) -> Result<Self> {
        Ok(Passthrough)
    }

    fn transform(&mut self, batch: Batch) -> Result<Batch> {
        Ok(batch)
    }
}

export_transform!(Passthrough);

#[cfg(test)]
mod tests {
    use sluice_plugin_sdk::{Column, Relation, RowChange};

    use super::*;

    #[test]
    fn returns_the_batch_unchanged() {
        let mut batch = Batch::new(42, 0x2000, 1_700_000_000_000_000);
        let table = batch.add_relation(Relation::new(
            1,
            "public",
            "t",
            vec![Column::new("id", 23, "int4")],
        ));
        batch.push(RowChange::insert(table, 0x1000, vec![1.into()]));
        let mut plugin = Passthrough::init("{}").unwrap();
        assert_eq!(plugin.transform(batch.clone()).unwrap(), batch);
    }
}
