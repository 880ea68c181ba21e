//! The `sluice:plugin/host` interface as the host implements it, and the
//! state every plugin instance's store carries.
//!
//! `log` becomes a `tracing` event tagged with the plugin's name (and a
//! panic message is kept for the trap error that follows it); `counter-add`
//! adds to an in-process [`Counters`] registry that the metrics exporter will
//! read. Neither can fail or trap: a plugin that logs or counts badly (an
//! over-long message, a malformed counter name) is clipped or ignored with a
//! warning, never stopped for it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use super::bindings::host;
use super::limits::MemoryCap;
use super::wasi::{self, WasiGrants};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Longest log message or field value passed through, in bytes: plugins
/// must not be able to flood the host's log with megabytes per line.
const MAX_LOG_TEXT: usize = 4096;
/// Longest counter name accepted.
const MAX_COUNTER_NAME: usize = 64;

/// Counters that plugins add to with `host.counter-add`, per plugin and name.
///
/// Cheap to clone: clones share the same registry.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    inner: Arc<Mutex<CounterMap>>,
}

/// Counter values by (plugin, counter name).
type CounterMap = BTreeMap<(Arc<str>, String), u64>;

impl Counters {
    /// The current value of one counter (0 if never added to).
    pub fn get(&self, plugin: &str, name: &str) -> u64 {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .find(|((p, n), _)| &**p == plugin && n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Every counter as `(plugin, name, value)`, sorted.
    pub fn snapshot(&self) -> Vec<(String, String, u64)> {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|((p, n), v)| (p.to_string(), n.clone(), *v))
            .collect()
    }

    fn add(&self, plugin: &Arc<str>, name: String, delta: u64) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let value = map.entry((Arc::clone(plugin), name)).or_insert(0);
        *value = value.saturating_add(delta);
    }
}

/// The data of one instance's store.
pub(super) struct HostState {
    pub(super) plugin: Arc<str>,
    pub(super) counters: Counters,
    pub(super) memory: MemoryCap,
    /// WASI state, built from the plugin's grants (see `wasi`).
    pub(super) wasi: WasiCtx,
    /// The WASI resources (streams, pollables…) the instance holds.
    pub(super) table: ResourceTable,
    /// The last panic message the plugin logged during the current call
    /// (an error-level record starting with `panicked at `, as the Rust
    /// SDK's panic hook writes just before the panic traps). The runtime
    /// clears it before each call and shows it in the trap's error.
    pub(super) panic: Option<String>,
}

impl HostState {
    pub(super) fn new(
        plugin: Arc<str>,
        counters: Counters,
        memory: MemoryCap,
        grants: WasiGrants,
    ) -> Self {
        HostState {
            wasi: wasi::context(&plugin, grants),
            plugin,
            counters,
            memory,
            table: ResourceTable::new(),
            panic: None,
        }
    }
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("plugin", &self.plugin)
            .field("memory", &self.memory)
            .field("panic", &self.panic)
            .finish_non_exhaustive()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// How Rust words a panic, and the SDK's panic hook with it.
const PANIC_PREFIX: &str = "panicked at ";

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String, fields: Vec<(String, String)>) {
        let message = clip(&message);
        if level == host::Level::Error && message.starts_with(PANIC_PREFIX) {
            self.panic = Some(message.to_owned());
        }
        let mut rendered = String::new();
        for (key, value) in &fields {
            if !rendered.is_empty() {
                rendered.push(' ');
            }
            let _ = write!(rendered, "{}={:?}", clip(key), clip(value));
        }
        let plugin = &*self.plugin;
        // `tracing` needs the level at compile time, hence one arm per level.
        match level {
            host::Level::Trace => tracing::trace!(plugin, fields = %rendered, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, fields = %rendered, "{message}"),
            host::Level::Info => tracing::info!(plugin, fields = %rendered, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, fields = %rendered, "{message}"),
            host::Level::Error => tracing::error!(plugin, fields = %rendered, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        if !is_counter_name(&name) {
            tracing::warn!(
                plugin = &*self.plugin,
                name = clip(&name),
                "ignoring counter with an invalid name: use 1 to {MAX_COUNTER_NAME} characters of a-z, 0-9 and _"
            );
            return;
        }
        self.counters.add(&self.plugin, name, delta);
    }
}

fn is_counter_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_COUNTER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn clip(text: &str) -> &str {
    if text.len() <= MAX_LOG_TEXT {
        return text;
    }
    let mut end = MAX_LOG_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::host::Host as _;

    #[test]
    fn counters_add_per_plugin_and_ignore_bad_names() {
        let counters = Counters::default();
        let mut state = HostState::new(
            Arc::from("mask"),
            counters.clone(),
            MemoryCap::new(1 << 20),
            WasiGrants::NONE,
        );
        state.counter_add("rows_masked".into(), 2);
        state.counter_add("rows_masked".into(), 3);
        state.counter_add("Bad Name".into(), 1);
        assert_eq!(counters.get("mask", "rows_masked"), 5);
        assert_eq!(
            counters.snapshot(),
            vec![("mask".into(), "rows_masked".into(), 5)]
        );
    }

    #[test]
    fn clip_respects_char_boundaries() {
        let text = "é".repeat(MAX_LOG_TEXT);
        assert!(clip(&text).len() <= MAX_LOG_TEXT);
    }
}
