//! Counters the host exports as the Prometheus metric
//! `sluice_plugin_counter_total{plugin, name}`.
//!
//! On WebAssembly [`add`] calls the host's `counter-add` import; off
//! WebAssembly it adds to an in-memory counter that tests read through
//! [`crate::testing::counter`]. Names are short snake_case words, e.g.
//! `rows_masked`.

/// Adds `delta` to the counter `name`. A zero delta costs nothing: it is
/// not sent to the host.
pub fn add(name: &str, delta: u64) {
    if delta == 0 {
        return;
    }
    #[cfg(target_arch = "wasm32")]
    crate::__bindings::transform::sluice::plugin::host::counter_add(name, delta);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_counter(name, delta);
}
