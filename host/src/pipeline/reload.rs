//! Hot reload (DESIGN §4): a new version of the plugin chain is built off
//! the hot path and swapped in at a transaction boundary.
//!
//! ```text
//! poll every 500 ms (manifest + plugin files) ─┐
//! SIGHUP ──────────────────────────────────────┴▶ build on the blocking pool:
//!     re-read manifest → refuse if a non-plugin section changed →
//!     compile + type-check + init every plugin → Chain
//!         ──▶ Replacements channel ──▶ plugin thread swaps before the
//!                                      first batch of the next transaction
//! ```
//!
//! Invariants:
//!
//! - The running chain is never touched by a reload that fails: a manifest
//!   that does not parse (a half-written file), a change outside the plugin
//!   sections (`[[transform]]`, `[sink]`, `[limits]`), or a plugin that does
//!   not compile, type-check or initialise is logged with its cause, counted
//!   in [`ReloadStats::failures`], and the old chain keeps running. The next
//!   change (or SIGHUP) tries again.
//! - A swap happens only between transactions, so every transaction's
//!   events all go through one version of the chain; no event is lost or
//!   processed twice by a reload.
//! - Changes to other sections are measured against the manifest the host
//!   is running (the one it started with), so reverting such a change makes
//!   the next plugin change reloadable again.
//!
//! Files are watched by polling their modification time and size every
//! 500 ms, and hashing their content when those change, rather than through
//! inotify: polling sees editors' write-to-temp-and-rename, Kubernetes
//! ConfigMap symlink swaps and network or container file systems alike, and
//! needs no extra dependency; half a second is nothing next to a reload. A
//! change is acted on only once a poll finds the files still, so that a
//! copy in progress is not compiled half-written (and if a write stalls
//! longer than that, the failed reload is retried on the next change).
//! The first poll compares against a [`Baseline`] taken when the host read
//! the manifest at start-up ([`load_watched`]): the manifest's fingerprint
//! is that of the very text it was parsed from, and the plugin files are
//! fingerprinted before the host loads them. So a change made while the
//! host starts (compiling plugins, setting up PostgreSQL) is reloaded on
//! the first poll rather than missed; at worst an unchanged plugin is
//! reloaded once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::chain::Chain;
use crate::config::{ErrorPolicy, Manifest, ManifestError};
use crate::plugin::{PluginError, PluginRuntime, PluginSpec};

/// How often the watched files are looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Top-level manifest sections a reload may change.
const RELOADABLE: &[&str] = &["transform", "sink", "limits"];

/// Why a reload was refused; the running chain stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read manifest {}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("changes to {} need a restart", sections.join(", "))]
    NeedsRestart { sections: Vec<String> },
    #[error("plugin \"{plugin}\" cannot be reloaded")]
    Plugin {
        plugin: String,
        #[source]
        source: PluginError,
    },
    #[error("the reload task failed: {0}")]
    Task(String),
}

/// Reload counters, for logs and metrics.
#[derive(Debug, Default)]
pub struct ReloadStats {
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl ReloadStats {
    /// New chains built and handed to the plugin thread.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Reloads refused; the old chain kept running.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// A chain built by a reload, waiting for the plugin thread.
#[derive(Debug)]
struct Replacement {
    chain: Chain,
    generation: u64,
}

/// The plugin thread's end: new chains, newest last.
#[derive(Debug)]
pub struct Replacements(mpsc::Receiver<Replacement>);

impl Replacements {
    /// The newest chain built since the last call, if any. Call only at a
    /// transaction boundary. Older ones that were never swapped in are
    /// dropped.
    pub fn latest(&self) -> Option<Chain> {
        let newest = self.0.try_iter().last()?;
        tracing::info!(
            generation = newest.generation,
            "reloaded plugin chain now in effect"
        );
        Some(newest.chain)
    }
}

/// What the reload task needs from the running pipeline.
#[derive(Debug)]
pub struct ReloadSettings {
    /// The manifest the pipeline started with.
    pub manifest: Manifest,
    pub runtime: PluginRuntime,
    pub policy: ErrorPolicy,
    pub allowed: crate::publish::SubjectFilter,
    /// Where reloads and their failures are counted, and what the new
    /// chain reports its plugin metrics to.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// What the files looked like when the host read them.
    pub baseline: Baseline,
}

/// The manifest as the host parsed it and its files as they were then: what
/// the watcher measures changes against.
pub struct Baseline {
    /// The manifest's raw table, to find changed sections.
    running: Option<toml::Table>,
    files: Files,
}

impl std::fmt::Debug for Baseline {
    // Not the raw table: a manifest may hold a literal password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baseline")
            .field("files", &self.files.seen.len())
            .finish_non_exhaustive()
    }
}

/// Reads and validates the manifest at `file` (as [`Manifest::load`]) and
/// takes the [`Baseline`] hot reload starts from. Blocking.
pub fn load_watched(file: &Path) -> Result<(Manifest, Baseline), ManifestError> {
    // Time and size before the read: a write after it moves them, and the
    // first poll then hashes the file and compares with this text's hash.
    let meta = std::fs::metadata(file).ok();
    let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
        file: file.to_owned(),
        error: source,
    })?;
    let manifest = Manifest::parse(&text, file, &|name| std::env::var(name).ok())?;
    let mut files = Files::default();
    files.seen.insert(
        file.to_owned(),
        Fingerprint {
            modified: meta.as_ref().and_then(|m| m.modified().ok()),
            len: meta.as_ref().map(std::fs::Metadata::len),
            hash: Some(Sha256::digest(text.as_bytes()).into()),
        },
    );
    // The plugin files, before the host reads them to compile.
    files.poll(&watched_paths(&manifest));
    let baseline = Baseline {
        running: text.parse().ok(),
        files,
    };
    Ok((manifest, baseline))
}

/// The running reload task; dropping it stops the task.
#[derive(Debug)]
pub struct Reloader {
    stats: Arc<ReloadStats>,
    _stop: DropGuard,
}

impl Reloader {
    /// Starts watching the manifest and its plugin files, and SIGHUP.
    /// Returns the task's handle and the plugin thread's end of the
    /// channel. Must be called within a tokio runtime.
    pub fn spawn(settings: ReloadSettings, shutdown: &CancellationToken) -> (Self, Replacements) {
        let stats = Arc::new(ReloadStats::default());
        let stop = shutdown.child_token();
        let (tx, rx) = mpsc::channel();
        tokio::spawn(watch(settings, stats.clone(), tx, stop.clone()));
        (
            Reloader {
                stats,
                _stop: stop.drop_guard(),
            },
            Replacements(rx),
        )
    }

    /// The counters, shared with the task.
    pub fn stats(&self) -> Arc<ReloadStats> {
        self.stats.clone()
    }
}

/// Modification time, size and content hash of one file; `None` fields
/// when it does not exist or cannot be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: Option<u64>,
    hash: Option<[u8; 32]>,
}

/// The watched files and what they looked like.
#[derive(Debug, Default)]
struct Files {
    seen: HashMap<PathBuf, Fingerprint>,
}

impl Files {
    /// Watches exactly `paths` from now on, fingerprinting new ones; says
    /// whether any content changed. Blocking: stats and reads files.
    fn poll(&mut self, paths: &[PathBuf]) -> bool {
        self.seen.retain(|p, _| paths.contains(p));
        let mut changed = false;
        for path in paths {
            let meta = std::fs::metadata(path).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.as_ref().map(std::fs::Metadata::len);
            let old = self.seen.get(path);
            if old.is_some_and(|o| o.modified == modified && o.len == len) {
                continue;
            }
            // Only hash when the cheap signals moved: plugins can be tens
            // of megabytes.
            let hash = std::fs::read(path)
                .ok()
                .map(|bytes| Sha256::digest(&bytes).into());
            let new = Fingerprint {
                modified,
                len,
                hash,
            };
            changed |= old.is_some_and(|o| o.hash != new.hash);
            self.seen.insert(path.clone(), new);
        }
        changed
    }
}

/// The manifest plus every plugin file it names.
fn watched_paths(m: &Manifest) -> Vec<PathBuf> {
    let mut paths = vec![m.file.clone()];
    paths.extend(m.transforms.iter().map(|t| t.path.clone()));
    paths.push(m.sink.path.clone());
    paths
}

/// What the task keeps between reloads.
struct State {
    settings: ReloadSettings,
    /// The raw manifest the pipeline runs with, to find changed sections.
    running: Option<toml::Table>,
    files: Files,
    paths: Vec<PathBuf>,
    generation: u64,
}

async fn watch(
    mut settings: ReloadSettings,
    stats: Arc<ReloadStats>,
    tx: mpsc::Sender<Replacement>,
    stop: CancellationToken,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file changes only");
            None
        }
    };
    let paths = watched_paths(&settings.manifest);
    let Baseline { running, files } = std::mem::replace(
        &mut settings.baseline,
        Baseline {
            running: None,
            files: Files::default(),
        },
    );
    let mut state = State {
        settings,
        running,
        files,
        paths,
        generation: 0,
    };
    tracing::info!(
        files = state.paths.len(),
        "watching the manifest and plugin files for changes (and SIGHUP)"
    );

    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = false;
    loop {
        let hup = async {
            match hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let forced = tokio::select! {
            () = stop.cancelled() => return,
            _ = hup => {
                tracing::info!("SIGHUP received: reloading the plugin chain");
                true
            }
            _ = tick.tick() => false,
        };
        let Some((next, changed)) = blocking(stop.clone(), move || {
            let changed = state.files.poll(&state.paths);
            (state, changed)
        })
        .await
        else {
            return;
        };
        state = next;
        // Act once the files are still, or at once on SIGHUP.
        if !forced {
            if changed {
                pending = true;
                continue;
            }
            if !pending {
                continue;
            }
        }
        pending = false;
        if !forced {
            tracing::info!("manifest or plugin file changed: reloading the plugin chain");
        }
        let Some((next, built)) = blocking(stop.clone(), move || {
            let built = build(&mut state);
            (state, built)
        })
        .await
        else {
            return;
        };
        state = next;
        match built {
            Ok(chain) => {
                state.generation += 1;
                stats.reloads.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &state.settings.metrics {
                    m.reload_succeeded();
                }
                tracing::info!(
                    generation = state.generation,
                    reloads = stats.reloads(),
                    "new plugin chain ready; it takes over at the next transaction boundary"
                );
                let replacement = Replacement {
                    chain,
                    generation: state.generation,
                };
                if tx.send(replacement).is_err() {
                    // The plugin thread has ended: nothing left to reload.
                    return;
                }
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &state.settings.metrics {
                    m.reload_failed();
                }
                tracing::error!(
                    error = %crate::causes::line(&e),
                    reload_failures = stats.failures(),
                    "reload failed; the running plugin chain stays in place"
                );
            }
        }
    }
}

/// Runs `f` on the blocking pool; `None` when stopping or the task died.
async fn blocking<T: Send + 'static>(
    stop: CancellationToken,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    tokio::select! {
        () = stop.cancelled() => None,
        r = tokio::task::spawn_blocking(f) => match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(error = %e, "the reload task failed; hot reload is off");
                None
            }
        },
    }
}

/// Re-reads the manifest and builds the chain it describes. Blocking.
fn build(state: &mut State) -> Result<Chain, ReloadError> {
    let file = state.settings.manifest.file.clone();
    let text = std::fs::read_to_string(&file).map_err(|source| ReloadError::Read {
        file: file.clone(),
        source,
    })?;
    let manifest = Manifest::parse(&text, &file, &|name| std::env::var(name).ok())?;
    // Watch the plugin files the newest manifest names, so that fixing a
    // new file that failed to load is seen.
    state.paths = watched_paths(&manifest);
    state.files.poll(&state.paths);

    let raw: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ReloadError::Manifest(ManifestError::Syntax {
            file: file.clone(),
            message: e.to_string(),
        })
    })?;
    let sections = changed_sections(state.running.as_ref(), &raw);
    if !sections.is_empty() {
        return Err(ReloadError::NeedsRestart { sections });
    }
    let chain = instantiate(&state.settings, &manifest)?;
    state.running = Some(raw);
    Ok(chain)
}

/// Compiles, type-checks and initialises every plugin of `m`. Blocking.
fn instantiate(settings: &ReloadSettings, m: &Manifest) -> Result<Chain, ReloadError> {
    let runtime = &settings.runtime;
    let failed = |spec: &PluginSpec| {
        let plugin = spec.name.clone();
        move |source| ReloadError::Plugin { plugin, source }
    };
    let mut transforms = Vec::with_capacity(m.transforms.len());
    for spec in &m.transforms {
        let instance = runtime
            .load_transform(spec.clone())
            .and_then(|t| t.instantiate())
            .map_err(failed(spec))?;
        transforms.push(instance);
    }
    let sink = runtime
        .load_sink(m.sink.clone())
        .and_then(|s| s.instantiate())
        .map_err(failed(&m.sink))?;
    Ok(Chain::new(
        transforms,
        sink,
        settings.policy.clone(),
        settings.allowed.clone(),
    ))
}

/// Top-level sections, other than the plugin ones, that differ between the
/// running manifest and the new one, as `[name]`. Without a running copy
/// (the file was unreadable when watching began) nothing can be compared,
/// and the reload is allowed.
fn changed_sections(running: Option<&toml::Table>, new: &toml::Table) -> Vec<String> {
    let Some(running) = running else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = running.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !RELOADABLE.contains(&k.as_str()))
        .filter(|k| running.get(*k) != new.get(*k))
        .map(|k| format!("[{k}]"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn only_non_plugin_sections_count_as_changes() {
        let old = table(
            "[source]\nslot = \"a\"\n[[transform]]\nname = \"m\"\n[sink]\nname = \"j\"\n[limits]\nmemory = 1",
        );
        let plugins = table(
            "[source]\nslot = \"a\"\n[[transform]]\nname = \"x\"\n[sink]\nname = \"y\"\n[limits]\nmemory = 2",
        );
        assert!(changed_sections(Some(&old), &plugins).is_empty());
        let source = table("[source]\nslot = \"b\"\n[sink]\nname = \"j\"\n[nats]\nurl = \"n\"");
        assert_eq!(
            changed_sections(Some(&old), &source),
            ["[nats]", "[source]"]
        );
        assert!(changed_sections(None, &source).is_empty());
    }

    #[test]
    fn the_restart_error_names_the_sections() {
        let e = ReloadError::NeedsRestart {
            sections: vec!["[source]".into()],
        };
        assert_eq!(e.to_string(), "changes to [source] need a restart");
    }

    #[test]
    fn files_report_content_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "one").unwrap();
        let paths = vec![a.clone(), dir.path().join("missing")];
        let mut files = Files::default();
        assert!(!files.poll(&paths), "the first look is the baseline");
        assert!(!files.poll(&paths));
        std::fs::write(&a, "two!").unwrap();
        assert!(files.poll(&paths));
        assert!(!files.poll(&paths));
        // Same content, new modification time: not a change.
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(!files.poll(&paths));
        std::fs::remove_file(&a).unwrap();
        assert!(files.poll(&paths), "a deleted file is a change");
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;

    const MANIFEST: &str = r#"
[source]
url = "postgres://sluice@localhost:5432/app"
publication = "p"
slot = "s"
[nats]
url = "nats://localhost:4222"
stream = "CDC"
subjects = ["cdc.>"]
[[transform]]
name = "mask"
path = "mask.wasm"
config = { columns = { email = "ACTION" } }
[sink]
name = "json"
path = "json-sink.wasm"
"#;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_manifest_change_yields_a_new_chain() {
        let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/plugins");
        if !plugins.join("mask.wasm").exists() {
            eprintln!("skipped: build/plugins is missing (run scripts/build-plugins)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for f in ["mask.wasm", "json-sink.wasm"] {
            std::fs::copy(plugins.join(f), dir.path().join(f)).unwrap();
        }
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, MANIFEST.replace("ACTION", "hash")).unwrap();
        let (manifest, baseline) = load_watched(&file).unwrap();
        let runtime = PluginRuntime::new(crate::plugin::RuntimeConfig {
            cache_dir: None,
            ..Default::default()
        })
        .unwrap();
        let shutdown = CancellationToken::new();
        let (reloader, replacements) = Reloader::spawn(
            ReloadSettings {
                manifest,
                runtime,
                policy: ErrorPolicy::Stop,
                allowed: crate::publish::SubjectFilter::parse(["cdc.>"]).unwrap(),
                metrics: None,
                baseline,
            },
            &shutdown,
        );
        // At once: a change before the watcher's first poll counts too.
        std::fs::write(&file, MANIFEST.replace("ACTION", "redact")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while reloader.stats().reloads() == 0 {
            assert!(std::time::Instant::now() < deadline, "no reload");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(replacements.latest().is_some());
    }
}
