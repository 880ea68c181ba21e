//! `sluice run` and `sluice check`: the pipeline a manifest describes, run
//! for real or only checked.

use std::path::Path;

use sluice_host::config::Manifest;
use sluice_host::position::startup::read_slot;
use sluice_host::position::store;
use sluice_host::publish;
use sluice_host::replication::setup;
use tokio_util::sync::CancellationToken;

/// Runs the pipeline until SIGINT or SIGTERM, then drains and exits 0.
pub(crate) fn run(file: &Path) -> anyhow::Result<()> {
    let (manifest, baseline) = sluice_host::pipeline::reload::load_watched(file)?;
    super::async_runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signal.cancel();
        });
        sluice_host::pipeline::run(manifest, baseline, shutdown).await
    })?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, only a definite error ends the run.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// Validates the manifest, loads and initialises every plugin, reaches
/// PostgreSQL and NATS, and says what `run` would do.
pub(crate) fn check(file: &Path) -> anyhow::Result<()> {
    let m = Manifest::load(file)?;
    println!(
        "manifest {}: valid (pipeline \"{}\")",
        file.display(),
        m.pipeline
    );
    let mut chain = super::check_chain::load(&m)?;
    super::async_runtime()?.block_on(async {
        let sql = setup::connect_sql(&m.source.conninfo).await?;
        let version: String = sql.query_one("SHOW server_version", &[]).await?.get(0);
        println!(
            "postgresql {}: reachable (server {version})",
            m.source.conninfo
        );
        match read_slot(&sql, &m.source.slot).await? {
            Some(s) => println!(
                "slot \"{}\": exists, confirmed_flush_lsn {}",
                m.source.slot,
                s.confirmed_flush_lsn
                    .map_or("NULL".to_owned(), |l| l.to_string())
            ),
            None if m.source.create_slot => {
                println!("slot \"{}\": missing, run will create it", m.source.slot)
            }
            None => println!(
                "slot \"{}\": missing, and source.create-slot = false",
                m.source.slot
            ),
        }
        print_replica_identities(&sql, &m).await?;
        for finding in sluice_host::replication::ha::check(
            &m.source.conninfo,
            &m.source.slot,
            m.source.failover,
        )
        .await
        {
            println!("{finding}");
        }
        let client = publish::connect(&m.nats.connection).await?;
        let js = async_nats::jetstream::new(client);
        match publish::verify_stream(&js, &m.nats.stream.name, &m.nats.subjects).await {
            Ok(_) => println!(
                "nats stream \"{}\": exists and covers {}",
                m.nats.stream.name, m.nats.subjects
            ),
            Err(_) if m.nats.create_stream => println!(
                "nats stream \"{}\": run will create or update it",
                m.nats.stream.name
            ),
            Err(e) => return Err(e.into()),
        }
        let mut store = store::for_manifest(&m, Some(&js)).await?;
        match store.load().await? {
            Some(o) => {
                println!("offset ({}): {}", store.describe(), o.commit_end_lsn);
                if let Some(p) = &o.snapshot {
                    let done = p.tables.iter().filter(|t| t.done).count();
                    println!(
                        "snapshot: {done} of {} table(s) copied{}",
                        p.tables.len(),
                        if p.is_complete() {
                            ""
                        } else {
                            "; run resumes the rest"
                        }
                    );
                }
            }
            None => println!(
                "offset ({}): none; the slot decides where streaming starts",
                store.describe()
            ),
        }
        super::check_chain::dry_run(&mut chain, &m, &sql).await?;
        anyhow::Ok(())
    })?;
    if m.source.snapshot != sluice_host::config::SnapshotMode::Never {
        println!(
            "source.snapshot = \"{}\": the published tables are copied when the slot is created{}",
            m.source.snapshot.as_str(),
            match m.source.snapshot {
                sluice_host::config::SnapshotMode::WhenNeeded => {
                    ", and again when the stored offset's WAL is gone"
                }
                sluice_host::config::SnapshotMode::InitialOnly => ", then run exits",
                _ => "",
            }
        );
    }
    println!(
        "run would stream publication \"{}\" through {} transform(s) and sink \"{}\" to stream \"{}\" (flush mode {:?}, mismatch strategy {:?})",
        m.source.publication,
        m.transforms.len(),
        m.sink.name,
        m.nats.stream.name,
        m.position.flush,
        m.position.mismatch
    );
    Ok(())
}

/// One line per published table: its replica identity and what a sink sees
/// for its updates and deletes.
async fn print_replica_identities(
    sql: &tokio_postgres::Client,
    m: &Manifest,
) -> anyhow::Result<()> {
    let tables = sluice_host::replication::identity::published(
        sql,
        m.source.publication.as_str(),
        m.source.changes.fill_unchanged_toast,
    )
    .await?;
    for table in tables {
        println!("{table}");
    }
    Ok(())
}
