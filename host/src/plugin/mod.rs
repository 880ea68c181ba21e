//! The plugin runtime: runs user-supplied WebAssembly components (the
//! `transform` and `sink` worlds of `wit/`) under limits, and contains their
//! failures.
//!
//! How the pipeline uses it:
//!
//! ```text
//! PluginRuntime::new(config)                 once per process: engine, epoch ticker, cache
//!   .load_transform(spec) / .load_sink(spec) compile (or hit the cache) and type-check
//!       -> TransformPlugin / SinkPlugin      cheap to clone; a factory of instances
//!   .instantiate()                           instantiate + init (config errors show here)
//!       -> Transform / Sink                  one live instance, replaced after a trap
//!   .transform(batch) / .encode(batch)       synchronous; run on a blocking thread;
//!       -> Err(CallError { error, input })   the batch comes back on failure
//! ```
//!
//! Loading compiles, which takes seconds for large components; the async
//! `load_*` variants run it on tokio's blocking pool so the runtime's worker
//! threads never stall. Calls are synchronous (see [`instance`] for why).
//!
//! Submodules, one responsibility each: [`engine`] (the wasmtime engine and
//! its epoch ticker), `bindings` (generated code, private), [`cache`]
//! (compiled components in memory and on disk), `inspect` (which world a
//! component implements), [`instance`] (live instances and their
//! replacement), [`limits`], `host_api` (the `host` imports), `validate`
//! (checks on what a transform returns), [`wasi`] (WASI grants, linking and
//! standard output to the log), `error`.

mod bindings;
pub mod cache;
pub mod engine;
mod error;
mod host_api;
mod inspect;
pub mod instance;
pub mod limits;
mod validate;
pub mod wasi;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

pub use cache::{CacheStats, default_cache_dir};
pub use engine::EngineConfig;
pub use error::{CallError, PluginError};
pub use host_api::Counters;
pub use inspect::{Inspection, World};
pub use instance::{Sink, SinkPlugin, Transform, TransformPlugin};
pub use limits::Limits;
pub use validate::InvalidOutput;
pub(crate) use validate::check_shape;
pub use wasi::{Capability, WasiGrants};

use cache::ComponentCache;
use host_api::HostState;
use instance::{Prepared, WorldBindings};

/// Settings of a [`PluginRuntime`].
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub engine: EngineConfig,
    /// Where compiled components are kept across restarts; `None` keeps
    /// them in memory only.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            engine: EngineConfig::default(),
            cache_dir: default_cache_dir(),
        }
    }
}

impl RuntimeConfig {
    /// The runtime for a pipeline's plugins: an engine whose memory ceiling
    /// is the largest any of them may use, metering fuel when any of them
    /// has a fuel limit, and the default cache folder.
    pub fn for_plugins<'a>(specs: impl IntoIterator<Item = &'a PluginSpec>) -> Self {
        let mut engine = EngineConfig {
            max_memory: 0,
            fuel: false,
            ..EngineConfig::default()
        };
        for spec in specs {
            engine.max_memory = engine.max_memory.max(spec.limits.memory);
            engine.fuel |= spec.limits.fuel.is_some();
        }
        if engine.max_memory == 0 {
            engine.max_memory = 64 << 20;
        }
        RuntimeConfig {
            engine,
            ..RuntimeConfig::default()
        }
    }
}

/// One plugin as the manifest describes it.
#[derive(Clone, Debug)]
pub struct PluginSpec {
    /// The name errors, logs and counters use.
    pub name: String,
    /// The component file.
    pub path: PathBuf,
    /// The plugin's configuration as JSON text (`{}` when there is none).
    pub config: String,
    pub limits: Limits,
    /// The WASI capabilities granted to it (none by default).
    pub wasi: WasiGrants,
}

impl PluginSpec {
    /// A spec named after the file's stem (`plugins/mask.wasm` is `mask`),
    /// with an empty configuration and default limits.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        PluginSpec {
            name,
            path,
            config: "{}".into(),
            limits: Limits::default(),
            wasi: WasiGrants::NONE,
        }
    }
}

/// The engine, linker, component cache and counter registry shared by every
/// plugin of the process. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PluginRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    cache: ComponentCache,
    counters: Counters,
    config: EngineConfig,
    // Shared with every prepared plugin; the thread stops when the last
    // holder is dropped.
    ticker: Arc<engine::Ticker>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("config", &self.config)
            .field("cache", &self.cache)
            .finish()
    }
}

impl PluginRuntime {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, PluginError> {
        let engine = engine::build(&config.engine)?;
        let mut linker = Linker::new(&engine);
        bindings::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .and_then(|()| wasi::link::add_always(&mut linker))
            .map_err(|source| PluginError::Engine { source })?;
        let ticker = engine::Ticker::start(engine.clone(), config.engine.epoch_tick)?;
        let cache = ComponentCache::new(engine.clone(), config.cache_dir);
        Ok(PluginRuntime {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache,
                counters: Counters::default(),
                config: config.engine,
                ticker: Arc::new(ticker),
            }),
        })
    }

    /// The counters plugins add to.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// How components were obtained so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Compiles (or loads from the cache) and type-checks a transform.
    /// Blocking: call from a blocking thread, or use [`Self::load_transform_async`].
    pub fn load_transform(&self, spec: PluginSpec) -> Result<TransformPlugin, PluginError> {
        self.prepare(spec, World::Transform).map(TransformPlugin)
    }

    /// Compiles (or loads from the cache) and type-checks a sink. Blocking.
    pub fn load_sink(&self, spec: PluginSpec) -> Result<SinkPlugin, PluginError> {
        self.prepare(spec, World::Sink).map(SinkPlugin)
    }

    /// [`Self::load_transform`] on tokio's blocking pool.
    pub async fn load_transform_async(
        &self,
        spec: PluginSpec,
    ) -> Result<TransformPlugin, PluginError> {
        let runtime = self.clone();
        tokio::task::spawn_blocking(move || runtime.load_transform(spec))
            .await
            .map_err(|source| PluginError::Join { source })?
    }

    /// [`Self::load_sink`] on tokio's blocking pool.
    pub async fn load_sink_async(&self, spec: PluginSpec) -> Result<SinkPlugin, PluginError> {
        let runtime = self.clone();
        tokio::task::spawn_blocking(move || runtime.load_sink(spec))
            .await
            .map_err(|source| PluginError::Join { source })?
    }

    /// Says which world the component at `path` implements and what it
    /// imports, after checking that this host could run it (with no WASI
    /// grants). Blocking (may compile).
    pub fn inspect(&self, path: &Path) -> Result<Inspection, PluginError> {
        let spec = PluginSpec::from_path(path);
        let component = self.inner.cache.load(path)?;
        let (inspection, pre) = inspect::check(
            &self.inner.engine,
            &self.inner.linker,
            &spec.name,
            &component,
            None,
            spec.wasi,
        )?;
        let mismatch = |source| PluginError::Mismatch {
            plugin: spec.name.clone(),
            expected: inspection.world,
            source,
        };
        match inspection.world {
            World::Transform => bindings::Transform::pre(pre).map(drop).map_err(mismatch)?,
            World::Sink => bindings::Sink::pre(pre).map(drop).map_err(mismatch)?,
        }
        Ok(inspection)
    }

    fn prepare<B: WorldBindings>(
        &self,
        spec: PluginSpec,
        world: World,
    ) -> Result<Prepared<B>, PluginError> {
        let inner = &self.inner;
        if spec.limits.fuel.is_some() && !inner.config.fuel {
            return Err(PluginError::FuelDisabled { plugin: spec.name });
        }
        if spec.limits.memory > inner.config.max_memory {
            return Err(PluginError::MemoryLimitTooHigh {
                plugin: spec.name,
                limit: spec.limits.memory,
                max: inner.config.max_memory,
            });
        }
        let component = inner.cache.load(&spec.path)?;
        let (_, pre) = inspect::check(
            &inner.engine,
            &inner.linker,
            &spec.name,
            &component,
            Some(world),
            spec.wasi,
        )?;
        let pre = B::pre(pre).map_err(|source| PluginError::Mismatch {
            plugin: spec.name.clone(),
            expected: world,
            source,
        })?;
        Ok(Prepared {
            plugin: Arc::from(spec.name),
            engine: inner.engine.clone(),
            pre,
            config: Arc::from(spec.config),
            limits: spec.limits,
            wasi: spec.wasi,
            tick: inner.config.epoch_tick,
            counters: inner.counters.clone(),
            ticker: Arc::clone(&inner.ticker),
        })
    }
}
