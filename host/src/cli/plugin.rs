//! `sluice plugin inspect` and `sluice plugin run`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use sluice_host::config::ranges;
use sluice_host::model::Batch;
use sluice_host::plugin::{
    EngineConfig, Limits, PluginRuntime, PluginSpec, RuntimeConfig, Sink, Transform, WasiGrants,
    World, default_cache_dir,
};

use super::input::read_batches;
use super::message_view::MessageView;

/// Runtime settings shared by the plugin commands.
#[derive(Debug, Args)]
pub(super) struct RuntimeArgs {
    /// Where compiled components are cached [default: $XDG_CACHE_HOME/sluice]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not read or write the disk cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
}

impl RuntimeArgs {
    pub(super) fn runtime(&self) -> anyhow::Result<PluginRuntime> {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(default_cache_dir)
        };
        Ok(PluginRuntime::new(RuntimeConfig {
            engine: EngineConfig::default(),
            cache_dir,
        })?)
    }
}

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// A transform component; repeat for a chain, applied in order.
    #[arg(long = "transform", value_name = "FILE")]
    transforms: Vec<PathBuf>,
    /// The sink component; without it the transformed batches are printed.
    #[arg(long, value_name = "FILE")]
    sink: Option<PathBuf>,
    /// A plugin's configuration as JSON, by the plugin's file stem
    /// (e.g. `mask='{"columns":["email"]}'`).
    #[arg(long = "config", value_name = "NAME=JSON")]
    configs: Vec<String>,
    /// WASI capabilities granted to a plugin, by the plugin's file stem
    /// (e.g. `app=clocks,random`); none are granted otherwise.
    #[arg(long = "wasi", value_name = "NAME=LIST")]
    grants: Vec<String>,
    /// Batches as a JSON array or JSON lines; `-` reads standard input.
    #[arg(long, value_name = "FILE", default_value = "-")]
    input: PathBuf,
    /// Deadline of each plugin call, in milliseconds (1 to 3600000).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    deadline_ms: u64,
    /// Memory limit of each plugin instance, in MiB (1 to 4096).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    memory_mib: u64,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub(super) fn inspect(file: &Path, args: &RuntimeArgs) -> anyhow::Result<()> {
    let runtime = args.runtime()?;
    let inspection = runtime.inspect(file)?;
    let world = match inspection.world {
        World::Transform => "transform",
        World::Sink => "sink",
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "file: {}", file.display())?;
    writeln!(out, "world: {world} (sluice:plugin/{world}@0.1.0)")?;
    writeln!(out, "exports: {}", inspection.exports.join(", "))?;
    writeln!(
        out,
        "imports: {}",
        if inspection.imports.is_empty() {
            "none".into()
        } else {
            inspection.imports.join(", ")
        }
    )?;
    let wasi: Vec<String> = inspection
        .capabilities
        .iter()
        .map(|c| format!("{c} (refused unless granted)"))
        .collect();
    if !wasi.is_empty() {
        writeln!(out, "wasi: {}", wasi.join(", "))?;
    }
    Ok(())
}

pub(super) fn run(args: RunArgs) -> anyhow::Result<()> {
    let deadline_ms = ranges::CLI_DEADLINE_MS
        .check_flag(args.deadline_ms)
        .map_err(anyhow::Error::msg)?;
    let memory_mib = ranges::CLI_MEMORY_MIB
        .check_flag(args.memory_mib)
        .map_err(anyhow::Error::msg)?;
    let limits = Limits {
        memory: memory_mib << 20,
        deadline: Duration::from_millis(deadline_ms),
        fuel: None,
    };
    let mut specs: Vec<PluginSpec> = args
        .transforms
        .iter()
        .chain(args.sink.as_ref())
        .map(|path| PluginSpec {
            limits,
            ..PluginSpec::from_path(path)
        })
        .collect();
    apply_configs(&mut specs, &args.configs)?;
    apply_grants(&mut specs, &args.grants)?;
    let sink_spec = args.sink.is_some().then(|| specs.pop()).flatten();

    let runtime = args.runtime.runtime()?;
    let mut transforms: Vec<Transform> = specs
        .into_iter()
        .map(|spec| Ok(runtime.load_transform(spec)?.instantiate()?))
        .collect::<anyhow::Result<_>>()?;
    let mut sink: Option<Sink> = sink_spec
        .map(|spec| runtime.load_sink(spec)?.instantiate())
        .transpose()?;

    let batches = read_batches(&args.input)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (index, batch) in batches.into_iter().enumerate() {
        let (xid, commit) = (batch.xid, batch.commit_lsn);
        let at = || format!("batch {index} (xid {xid}, commit LSN {commit})");
        let mut batch: Batch = batch;
        for transform in &mut transforms {
            batch = transform.transform(batch).with_context(at)?;
        }
        match &mut sink {
            Some(sink) => {
                for message in sink.encode(batch).with_context(at)? {
                    serde_json::to_writer(&mut out, &MessageView::new(&message))?;
                    out.write_all(b"\n")?;
                }
            }
            None => {
                serde_json::to_writer(&mut out, &batch)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Grants each `--wasi NAME=LIST` to the plugins whose name is NAME.
fn apply_grants(specs: &mut [PluginSpec], grants: &[String]) -> anyhow::Result<()> {
    for grant in grants {
        let (name, list) = grant.split_once('=').with_context(|| {
            format!("--wasi {grant}: expected NAME=LIST, e.g. app=clocks,random")
        })?;
        let names: Vec<&str> = list.split(',').filter(|n| !n.is_empty()).collect();
        let parsed =
            WasiGrants::parse(&names).map_err(|e| anyhow::anyhow!("--wasi {name}: {e}"))?;
        let mut matched = false;
        for spec in specs.iter_mut().filter(|s| s.name == name) {
            spec.wasi = parsed;
            matched = true;
        }
        anyhow::ensure!(
            matched,
            "--wasi {name}: no plugin is named \"{name}\" (a plugin is named after its file stem)"
        );
    }
    Ok(())
}

/// Hands each `--config NAME=JSON` to the plugins whose name is NAME.
fn apply_configs(specs: &mut [PluginSpec], configs: &[String]) -> anyhow::Result<()> {
    for config in configs {
        let (name, json) = config.split_once('=').with_context(|| {
            format!(
                "--config {config}: expected NAME=JSON, e.g. mask='{{\"columns\":[\"email\"]}}'"
            )
        })?;
        serde_json::from_str::<serde::de::IgnoredAny>(json)
            .with_context(|| format!("--config {name}: the configuration is not valid JSON"))?;
        let mut matched = false;
        for spec in specs.iter_mut().filter(|s| s.name == name) {
            spec.config = json.to_owned();
            matched = true;
        }
        if !matched {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            anyhow::bail!(
                "--config {name}: no plugin is named \"{name}\" (a plugin is named after its file stem; the plugins are: {})",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            );
        }
    }
    Ok(())
}
