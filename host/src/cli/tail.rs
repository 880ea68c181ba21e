//! `sluice tail`: the decoded change stream as JSON lines on stdout, through
//! the manifest's transforms, until SIGINT or SIGTERM.
//!
//! The source is a manifest (its connection, publication, slot and
//! transforms) or `--url` with `--publication`. Without a durable slot
//! (`--from-start`, or `--url` without `--slot`) tail reads a new TEMPORARY
//! slot that the server drops when tail stops, so nothing is left behind;
//! on a durable slot it confirms nothing unless `--confirm` says so (see
//! `sluice_host::tail`).
//!
//! A signal is a clean stop (exit 0); so is a closed stdout (`| head`). A
//! plugin error stops tail with the error on stderr and exit status 1.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use sluice_host::config::{Identifier, Manifest};
use sluice_host::model::Batch;
use sluice_host::plugin::{PluginRuntime, Transform};
use sluice_host::replication::{ConnInfo, SlotName};
use sluice_host::tail::{self, BatchTransform, TailError, TailOptions};

use super::plugin::RuntimeArgs;

#[derive(Debug, Args)]
pub(super) struct TailArgs {
    /// The pipeline's manifest: connection, publication, slot, transforms.
    #[arg(value_name = "MANIFEST", required_unless_present = "url")]
    manifest: Option<PathBuf>,
    /// A PostgreSQL URL, instead of a manifest.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "manifest",
        requires = "publication"
    )]
    url: Option<String>,
    /// The publication to read (with --url).
    #[arg(long, value_name = "NAME", requires = "url")]
    publication: Option<String>,
    /// Read this durable slot (default: the manifest's; with --url, a
    /// temporary slot).
    #[arg(long, value_name = "NAME")]
    slot: Option<String>,
    /// Read a new TEMPORARY slot, which sees changes committed from now on
    /// and is dropped when tail stops.
    #[arg(long, conflicts_with_all = ["slot", "confirm"])]
    from_start: bool,
    /// Confirm what was printed on the durable slot, consuming it.
    #[arg(long)]
    confirm: bool,
    /// Print the changes as decoded, without the manifest's transforms.
    #[arg(long, requires = "manifest")]
    no_transforms: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub(super) fn run(args: TailArgs) -> anyhow::Result<()> {
    let (options, specs) = match &args.manifest {
        Some(file) => {
            let manifest = Manifest::load(file)?;
            let mut options = TailOptions::from_manifest(&manifest);
            if let Some(slot) = &args.slot {
                options.source.slot = slot_name(slot)?;
            }
            let specs = if args.no_transforms {
                Vec::new()
            } else {
                manifest.transforms
            };
            (options, specs)
        }
        None => {
            // clap guarantees --url and --publication here.
            let url = args.url.as_deref().unwrap_or_default();
            let conninfo = ConnInfo::parse(url).context("--url")?;
            let publication: Identifier = args
                .publication
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|e| anyhow::anyhow!("--publication: {e}"))?;
            let slot = args.slot.as_deref().map(slot_name).transpose()?;
            (TailOptions::new(conninfo, publication, slot), Vec::new())
        }
    };
    let options = TailOptions {
        from_start: options.from_start || args.from_start,
        confirm: args.confirm,
        ..options
    };
    if args.confirm && options.from_start {
        anyhow::bail!("--confirm needs a durable slot: name one with --slot (or in the manifest)");
    }

    let plugins = if specs.is_empty() {
        None
    } else {
        Some(args.runtime.runtime()?)
    };
    super::async_runtime()?.block_on(async move {
        let shutdown = shutdown_signal()?;
        let mut chain = match plugins {
            Some(runtime) => Some(load_chain(runtime, specs).await?),
            None => None,
        };
        let mut hook = chain.as_mut().map(|chain| {
            move |batch: Batch| -> Result<Vec<Batch>, Box<dyn std::error::Error + Send + Sync>> {
                let mut batch = batch;
                for transform in chain.iter_mut() {
                    batch = transform.transform(batch)?;
                }
                Ok(vec![batch])
            }
        });
        let hook = hook.as_mut().map(|f| f as &mut BatchTransform<'_>);
        let mut stdout = tokio::io::stdout();
        match tail::run(options, hook, &mut stdout, shutdown).await {
            Ok(summary) => {
                tracing::info!(
                    slot = %summary.slot,
                    transactions = summary.transactions,
                    lines = summary.lines,
                    "tail stopped"
                );
                Ok(())
            }
            // A reader that stopped reading (`sluice tail … | head`) ends
            // tail as a signal would.
            Err(TailError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(e.into()),
        }
    })
}

fn slot_name(name: &str) -> anyhow::Result<SlotName> {
    SlotName::new(name).with_context(|| format!("--slot {name}"))
}

/// Compiles (on a blocking thread) and instantiates the transforms, in
/// manifest order.
async fn load_chain(
    runtime: PluginRuntime,
    specs: Vec<sluice_host::plugin::PluginSpec>,
) -> anyhow::Result<Vec<Transform>> {
    tokio::task::spawn_blocking(move || {
        specs
            .into_iter()
            .map(|spec| Ok(runtime.load_transform(spec)?.instantiate()?))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    .context("loading the transforms panicked")?
}

/// A future that resolves on the first SIGINT or SIGTERM. The handlers are
/// installed now, so a signal during start-up is a clean stop too.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
