//! The one wasmtime [`Engine`] of the process and its epoch ticker.
//!
//! The engine compiles with Cranelift, enables the component model, uses the
//! pooling allocator (instances are created and dropped often: after every
//! trap, and on reload, so their memory slots are recycled rather than
//! mapped anew), and epoch interruption for per-call deadlines. Fuel
//! metering is off unless asked for, since it slows every guest loop down.
//!
//! Invariant: the ticker thread runs for as long as the [`Ticker`] lives and
//! stops (and is joined) when it is dropped; without it no deadline fires.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;

/// Engine-wide settings; per-instance limits are [`Limits`](super::Limits).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How often the epoch advances: the granularity of deadlines.
    pub epoch_tick: Duration,
    /// Meter fuel, so that [`Limits::fuel`](super::Limits::fuel) can be used.
    pub fuel: bool,
    /// The largest memory limit any instance may be given (the pooling
    /// allocator's slot size).
    pub max_memory: u64,
    /// How many plugin instances may exist at once (pool size).
    pub max_instances: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            epoch_tick: Duration::from_millis(5),
            fuel: false,
            max_memory: 1 << 30,
            max_instances: 256,
        }
    }
}

pub(super) fn build(config: &EngineConfig) -> Result<Engine, PluginError> {
    let mut pool = PoolingAllocationConfig::new();
    let max_memory = usize::try_from(config.max_memory).unwrap_or(usize::MAX);
    pool.max_memory_size(max_memory)
        .total_component_instances(config.max_instances)
        // Components made by componentize-py or componentize-js hold many
        // core instances and memories; leave room for a handful each.
        .total_core_instances(config.max_instances.saturating_mul(4))
        .total_memories(config.max_instances.saturating_mul(2))
        .total_tables(config.max_instances.saturating_mul(4));

    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(config.fuel)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm).map_err(|source| PluginError::Engine { source })
}

/// Advances the engine's epoch every tick on a thread of its own.
#[derive(Debug)]
pub(super) struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    pub(super) fn start(engine: Engine, tick: Duration) -> Result<Self, PluginError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    // `park_timeout` rather than `sleep`, so that dropping
                    // the ticker wakes the thread at once.
                    std::thread::park_timeout(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Engine {
                source: wasmtime::Error::from(e),
            })?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The thread only loops on the flag: joining cannot block long.
            let _ = thread.join();
        }
    }
}
