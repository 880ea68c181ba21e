//! `sluice check`'s part about plugins: every plugin loaded and
//! initialised, each failure reported (not only the first), and, once
//! PostgreSQL is reachable, one synthetic row per published table run
//! through the chain ([`sluice_host::dry_run`]), so that plugin errors and
//! subjects outside `[nats] subjects` show before any row flows. A table
//! whose publication narrows its columns or filters its rows gets a line
//! saying so before the verdict.

use sluice_host::causes;
use sluice_host::config::Manifest;
use sluice_host::plugin::{Sink, Transform};

/// The manifest's plugins, instantiated.
pub(super) struct Chain {
    transforms: Vec<(String, Transform)>,
    sink: (String, Sink),
}

/// Loads and initialises every plugin, printing each success; fails with
/// every plugin's problem when any failed.
pub(super) fn load(m: &Manifest) -> anyhow::Result<Chain> {
    let rt = m.plugin_runtime()?;
    let mut problems = Vec::new();
    let mut transforms = Vec::new();
    for (i, spec) in m.transforms.iter().enumerate() {
        let what = format!("transform \"{}\" ({})", spec.name, spec.path.display());
        match rt
            .load_transform(spec.clone())
            .and_then(|p| p.instantiate())
        {
            Ok(t) => {
                println!("{what}: loaded and initialised");
                transforms.push((spec.name.to_string(), t));
            }
            Err(e) => problems.push(format!("transform[{i}]: {}", causes::line(&e))),
        }
    }
    let spec = &m.sink;
    let sink = match rt.load_sink(spec.clone()).and_then(|p| p.instantiate()) {
        Ok(s) => {
            println!(
                "sink \"{}\" ({}): loaded and initialised",
                spec.name,
                spec.path.display()
            );
            Some((spec.name.to_string(), s))
        }
        Err(e) => {
            problems.push(format!("sink: {}", causes::line(&e)));
            None
        }
    };
    match sink {
        Some(sink) if problems.is_empty() => Ok(Chain { transforms, sink }),
        _ => Err(listed("plugin", problems)),
    }
}

/// Runs a synthetic row of each published table through the chain.
pub(super) async fn dry_run(
    chain: &mut Chain,
    m: &Manifest,
    sql: &tokio_postgres::Client,
) -> anyhow::Result<()> {
    let publication = m.source.publication.as_str();
    let tables = sluice_host::dry_run::published_tables(sql, publication).await?;
    if tables.is_empty() {
        println!("plugin chain: publication \"{publication}\" has no tables yet; no row tried");
        return Ok(());
    }
    for note in tables.iter().flat_map(sluice_host::dry_run::notes) {
        println!("plugin chain: {note}");
    }
    let problems = sluice_host::dry_run::run(
        &tables,
        &mut chain.transforms,
        &mut chain.sink,
        &m.nats.subjects,
    );
    if !problems.is_empty() {
        return Err(listed("plugin chain", problems));
    }
    println!(
        "plugin chain: a synthetic row of each of {} published tables passed every plugin, subjects within {}",
        tables.len(),
        m.nats.subjects
    );
    Ok(())
}

/// One error listing every problem.
fn listed(what: &str, problems: Vec<String>) -> anyhow::Error {
    let count = problems.len();
    let mut text = format!(
        "{count} {what} problem{}:",
        if count == 1 { "" } else { "s" }
    );
    for p in problems {
        text.push_str("\n  - ");
        text.push_str(&p);
    }
    anyhow::Error::msg(text)
}
