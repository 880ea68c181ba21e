//! `sluice backfill MANIFEST TABLE [--where SQL]`: asks the manifest's
//! pipeline to read a table's current rows into the stream while it keeps
//! streaming (see `sluice_host::snapshot` for how it stays consistent).
//!
//! The request is written into the WAL, so it reaches the pipeline through
//! its slot: a running host starts at once, a stopped one when it starts.
//! The table must be in the publication and have a primary key; both are
//! checked here, so a mistake is reported to the operator and not only in
//! the host's log. A source that resolves to a standby is refused: see
//! the error's text.

use std::path::Path;

use anyhow::Context as _;
use sluice_host::config::Manifest;
use sluice_host::replication::setup::{connect_sql, sql_role};
use sluice_host::snapshot::{BackfillRequest, request_backfill};

pub(super) fn run(manifest: &Path, table: String, condition: Option<String>) -> anyhow::Result<()> {
    let m = Manifest::load(manifest)?;
    super::async_runtime()?.block_on(async move {
        let sql = connect_sql(&m.source.conninfo).await?;
        if sql_role(&sql).await?.in_recovery {
            anyhow::bail!(
                "cannot request a backfill of {table}: source.url ({}) resolves to a standby, and backfills are not supported when decoding from a standby: their watermarks are written on the primary, and each chunk would have to be read on the standby only once it has replayed its low watermark",
                m.source.conninfo.targets()
            );
        }
        let request = BackfillRequest { table, condition };
        let lsn = request_backfill(
            &sql,
            m.pipeline.as_str(),
            m.source.publication.as_str(),
            m.source.slot.as_str(),
            &request,
        )
        .await
        .with_context(|| format!("cannot request a backfill of {}", request.table))?;
        println!(
            "backfill of {} requested at {lsn}: pipeline \"{}\" reads it in while streaming",
            request.table, m.pipeline
        );
        Ok(())
    })
}
