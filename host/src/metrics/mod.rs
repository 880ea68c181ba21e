//! Metrics and health of `sluice run`: what the pipeline counts, and the
//! `/metrics`, `/healthz` and `/readyz` endpoints that expose it ([`server`]).
//!
//! One [`Metrics`] per process, shared as `Arc<Metrics>`. The hot path only
//! touches atomics: counters and histograms are bumped where things happen
//! (the source loop, the plugin chain, the publisher's completions), while
//! values that live elsewhere — the publisher's window, the server's WAL end,
//! plugins' own counters — are sampled when `/metrics` is scraped, so the
//! pipeline never has to push them.
//!
//! Every metric name is a constant in [`names`]. The exposition is the
//! OpenMetrics text format, which Prometheus scrapes natively; counters get
//! the `_total` suffix there, as OpenMetrics requires.
//!
//! Readiness: 200 once streaming has started and while the NATS connection
//! is up; 503 before, during a NATS reconnect, and once the pipeline drains.

pub mod server;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::ErrorPolicy;
use crate::lsn::Lsn;
use crate::plugin::Counters;
use crate::publish::PublisherMonitor;
use crate::source::ServerWalEnd;

pub use server::{ServeError, serve};

/// Metric names, as registered. Counters appear with a `_total` suffix in
/// the exposition (`sluice_events_decoded_total`).
pub mod names {
    /// Counter: change events decoded from the replication stream (rows,
    /// truncates, logical messages), before any plugin.
    pub const EVENTS_DECODED: &str = "sluice_events_decoded";
    /// Counter `{plugin}`: events handed to a plugin, per call (a batch
    /// split after a failure is counted again, event by event).
    pub const PLUGIN_EVENTS_IN: &str = "sluice_plugin_events_in";
    /// Counter `{plugin}`: what a plugin returned: events for a transform,
    /// messages for the sink.
    pub const PLUGIN_MESSAGES_OUT: &str = "sluice_plugin_messages_out";
    /// Histogram `{plugin}`: duration of one plugin call, in seconds.
    pub const PLUGIN_CALL_SECONDS: &str = "sluice_plugin_call_duration_seconds";
    /// Counter `{plugin, name}`: what plugins added with `host.counter-add`.
    pub const PLUGIN_COUNTER: &str = "sluice_plugin_counter";
    /// Counter: messages JetStream stored (including duplicates it dropped).
    pub const MESSAGES_PUBLISHED: &str = "sluice_messages_published";
    /// Histogram: seconds from handing a message to the publisher until its
    /// acknowledgement is reported in order (includes waiting for room in
    /// the window).
    pub const PUBLISH_SECONDS: &str = "sluice_publish_duration_seconds";
    /// Gauge: messages handed to the publisher and not yet acknowledged.
    pub const PUBLISHES_IN_FLIGHT: &str = "sluice_publishes_in_flight";
    /// Counter: messages sent again after a transient failure (no
    /// acknowledgement in time, no responders, a lost connection).
    pub const PUBLISH_RETRIES: &str = "sluice_publish_retries";
    /// Counter: offset records that failed because the offset store was
    /// out of reach (each confirmed nothing; the next one tries again).
    pub const OFFSET_RECORD_FAILURES: &str = "sluice_offset_record_failures";
    /// Gauge: the newest transaction end acknowledged by JetStream and
    /// stored (what the slot is told, except in `manual` flush mode), as a
    /// byte position in the WAL.
    pub const CONFIRMED_LSN: &str = "sluice_confirmed_lsn";
    /// Gauge: the server's WAL end, from the last XLogData or keepalive.
    pub const SERVER_WAL_END_LSN: &str = "sluice_server_wal_end_lsn";
    /// Gauge: server WAL end minus confirmed LSN, in bytes.
    pub const REPLICATION_LAG_BYTES: &str = "sluice_replication_lag_bytes";
    /// Counter: plugin reloads swapped in.
    pub const RELOADS: &str = "sluice_reloads";
    /// Counter: plugin reloads refused (the old version kept running).
    pub const RELOAD_FAILURES: &str = "sluice_reload_failures";
    /// Counter `{policy}`: events a plugin failed on, by the error policy
    /// that handled them (`stop`, `dead-letter`, `skip`).
    pub const ERRORS: &str = "sluice_errors";
    /// Counter `{table}`: rows a snapshot read and handed to the plugin
    /// chain, by `schema.table`.
    pub const SNAPSHOT_ROWS: &str = "sluice_snapshot_rows";
}

type PluginLabels = [(&'static str, String); 1];

/// The process's metrics and readiness. See the module documentation.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events_decoded: Counter,
    plugin_events_in: Family<PluginLabels, Counter>,
    plugin_messages_out: Family<PluginLabels, Counter>,
    plugin_call_seconds: Family<PluginLabels, Histogram, fn() -> Histogram>,
    messages_published: Counter,
    publish_seconds: Histogram,
    reloads: Counter,
    reload_failures: Counter,
    record_failures: Counter,
    errors: Family<[(&'static str, &'static str); 1], Counter>,
    snapshot_rows: Family<[(&'static str, String); 1], Counter>,
    sampled: std::sync::Arc<Sampled>,
}

/// The counters of one plugin, resolved once so that a call bumps them
/// without building labels.
#[derive(Clone, Debug)]
pub struct PluginProbe {
    plugin: String,
    events_in: Counter,
    messages_out: Counter,
    call_seconds: Histogram,
}

impl PluginProbe {
    /// The plugin these counters are labelled with.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Records one call that took `input` events, returned `output` events
    /// or messages (0 when it failed) and took `elapsed`.
    pub fn call(&self, input: usize, output: usize, elapsed: Duration) {
        self.events_in.inc_by(input as u64);
        self.messages_out.inc_by(output as u64);
        self.call_seconds.observe(elapsed.as_secs_f64());
    }
}

/// Plugin calls: 10 µs to ~10 s (a call is bounded by its deadline).
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 4.0, 11))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let events_decoded = Counter::default();
        registry.register(
            names::EVENTS_DECODED,
            "Change events decoded from the replication stream",
            events_decoded.clone(),
        );
        let plugin_events_in = Family::<PluginLabels, Counter>::default();
        registry.register(
            names::PLUGIN_EVENTS_IN,
            "Events handed to a plugin, per call",
            plugin_events_in.clone(),
        );
        let plugin_messages_out = Family::<PluginLabels, Counter>::default();
        registry.register(
            names::PLUGIN_MESSAGES_OUT,
            "Events a transform returned, or messages a sink returned",
            plugin_messages_out.clone(),
        );
        let plugin_call_seconds =
            Family::<PluginLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                call_buckets,
            );
        registry.register(
            names::PLUGIN_CALL_SECONDS,
            "Duration of one plugin call",
            plugin_call_seconds.clone(),
        );
        let messages_published = Counter::default();
        registry.register(
            names::MESSAGES_PUBLISHED,
            "Messages JetStream stored",
            messages_published.clone(),
        );
        // 100 µs to ~100 s: an ack is quick, a window held up by a retry is not.
        let publish_seconds = Histogram::new(exponential_buckets(1e-4, 4.0, 11));
        registry.register(
            names::PUBLISH_SECONDS,
            "Time from handing a message to the publisher until its acknowledgement, in order",
            publish_seconds.clone(),
        );
        let reloads = Counter::default();
        registry.register(names::RELOADS, "Plugin reloads swapped in", reloads.clone());
        let reload_failures = Counter::default();
        registry.register(
            names::RELOAD_FAILURES,
            "Plugin reloads refused; the previous version kept running",
            reload_failures.clone(),
        );
        let record_failures = Counter::default();
        registry.register(
            names::OFFSET_RECORD_FAILURES,
            "Offset records that failed because the offset store was out of reach",
            record_failures.clone(),
        );
        let errors = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            names::ERRORS,
            "Events a plugin failed on, by the error policy that handled them",
            errors.clone(),
        );
        let snapshot_rows = Family::<[(&'static str, String); 1], Counter>::default();
        registry.register(
            names::SNAPSHOT_ROWS,
            "Rows a snapshot read and handed to the plugin chain, by table",
            snapshot_rows.clone(),
        );
        let sampled = std::sync::Arc::new(Sampled::default());
        registry.register_collector(Box::new(sampled.clone()));
        Metrics {
            registry,
            events_decoded,
            plugin_events_in,
            plugin_messages_out,
            plugin_call_seconds,
            messages_published,
            publish_seconds,
            reloads,
            reload_failures,
            record_failures,
            errors,
            snapshot_rows,
            sampled,
        }
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and the registry holds only
        // well-formed names.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }

    /// A snapshot handed `n` rows of `table` (`schema.table`) on.
    pub fn snapshot_rows(&self, table: &str, n: u64) {
        self.snapshot_rows
            .get_or_create_owned(&[("table", table.to_owned())])
            .inc_by(n);
    }

    pub fn events_decoded(&self, n: usize) {
        self.events_decoded.inc_by(n as u64);
    }

    /// The counters of `plugin`; keep the probe rather than calling this per
    /// call.
    pub fn plugin(&self, plugin: &str) -> PluginProbe {
        let labels = [("plugin", plugin.to_owned())];
        PluginProbe {
            plugin: plugin.to_owned(),
            events_in: self.plugin_events_in.get_or_create_owned(&labels),
            messages_out: self.plugin_messages_out.get_or_create_owned(&labels),
            call_seconds: self.plugin_call_seconds.get_or_create_owned(&labels),
        }
    }

    /// `n` events failed and were handled by `policy`.
    pub fn errors(&self, policy: &ErrorPolicy, n: u64) {
        if n == 0 {
            return;
        }
        let policy = match policy {
            ErrorPolicy::Stop => "stop",
            ErrorPolicy::DeadLetter { .. } => "dead-letter",
            ErrorPolicy::Skip => "skip",
        };
        self.errors.get_or_create(&[("policy", policy)]).inc_by(n);
    }

    /// A message was stored by JetStream, `elapsed` after it was handed over.
    pub fn published(&self, elapsed: Duration) {
        self.messages_published.inc();
        self.publish_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn reload_succeeded(&self) {
        self.reloads.inc();
    }

    pub fn reload_failed(&self) {
        self.reload_failures.inc();
    }

    /// An offset record failed for a reason that may pass.
    pub fn record_failed(&self) {
        self.record_failures.inc();
    }

    /// The position confirmed so far (never moves back).
    pub fn confirmed(&self, lsn: Lsn) {
        self.sampled.confirmed.fetch_max(lsn.0, Ordering::Relaxed);
    }

    /// Where the publisher's window is sampled from.
    pub fn watch_publisher(&self, monitor: PublisherMonitor) {
        *lock(&self.sampled.publisher) = Some(monitor);
    }

    /// Where the server's WAL end is sampled from.
    pub fn watch_server(&self, wal_end: ServerWalEnd) {
        *lock(&self.sampled.wal_end) = Some(wal_end);
    }

    /// Where plugins' own counters are read from.
    pub fn watch_plugin_counters(&self, counters: Counters) {
        *lock(&self.sampled.plugin_counters) = Some(counters);
    }

    /// Streaming has started (`true`) or the pipeline is draining (`false`).
    pub fn set_streaming(&self, streaming: bool) {
        self.sampled.streaming.store(streaming, Ordering::Relaxed);
    }

    /// The NATS connection that readiness depends on.
    pub fn watch_nats(&self, client: async_nats::Client) {
        *lock(&self.sampled.nats) = Some(client);
    }

    /// Whether `/readyz` says 200: streaming, and NATS connected.
    pub fn is_ready(&self) -> bool {
        let nats_up = lock(&self.sampled.nats)
            .as_ref()
            .is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected);
        nats_up && self.sampled.streaming.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Values read at scrape time, and readiness.
#[derive(Debug, Default)]
struct Sampled {
    confirmed: AtomicU64,
    publisher: Mutex<Option<PublisherMonitor>>,
    wal_end: Mutex<Option<ServerWalEnd>>,
    plugin_counters: Mutex<Option<Counters>>,
    nats: Mutex<Option<async_nats::Client>>,
    streaming: AtomicBool,
}

/// LSNs are u64 byte positions; gauges are encoded as i64. A WAL position
/// past 2^63 bytes is not reachable in practice; clamp rather than wrap.
fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Encodes one gauge with its name and help text.
fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let g = gauge(v);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = lock(&self.publisher).as_ref().map(PublisherMonitor::stats);
        encode_gauge(
            &mut encoder,
            names::PUBLISHES_IN_FLIGHT,
            "Messages handed to the publisher and not yet acknowledged",
            stats.as_ref().map_or(0, |s| s.in_flight) as u64,
        )?;
        // One publisher per process, so its count only grows.
        let retries = ConstCounter::new(stats.map_or(0, |s| s.retries));
        retries.encode(encoder.encode_descriptor(
            names::PUBLISH_RETRIES,
            "Messages sent again after a transient failure (no acknowledgement in time, no responders, a lost connection)",
            None,
            retries.metric_type(),
        )?)?;

        let confirmed = self.confirmed.load(Ordering::Relaxed);
        encode_gauge(
            &mut encoder,
            names::CONFIRMED_LSN,
            "Newest transaction end acknowledged by JetStream and stored, as a WAL byte position",
            confirmed,
        )?;

        let wal_end = lock(&self.wal_end).as_ref().map_or(0, |w| w.get().0);
        if wal_end > 0 {
            encode_gauge(
                &mut encoder,
                names::SERVER_WAL_END_LSN,
                "The server's WAL end from its last XLogData or keepalive",
                wal_end,
            )?;
            // Unknown until something is confirmed: a lag against 0/0
            // would be the whole WAL, which is noise, not lag.
            if confirmed > 0 {
                encode_gauge(
                    &mut encoder,
                    names::REPLICATION_LAG_BYTES,
                    "Server WAL end minus confirmed LSN, in bytes",
                    wal_end.saturating_sub(confirmed),
                )?;
            }
        }

        let counters = lock(&self.plugin_counters)
            .as_ref()
            .map(Counters::snapshot)
            .unwrap_or_default();
        if !counters.is_empty() {
            let mut family = encoder.encode_descriptor(
                names::PLUGIN_COUNTER,
                "Counters plugins added to with host.counter-add",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (plugin, name, value) in counters {
                let labels = [("plugin", plugin), ("name", name)];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::new();
        m.events_decoded(3);
        let probe = m.plugin("json");
        probe.call(3, 2, Duration::from_millis(2));
        m.errors(&ErrorPolicy::Skip, 1);
        m.errors(&ErrorPolicy::Stop, 0);
        m.reload_failed();
        m.record_failed();
        m.confirmed(Lsn(100));
        let text = m.render();
        for line in [
            "sluice_events_decoded_total 3",
            "sluice_plugin_events_in_total{plugin=\"json\"} 3",
            "sluice_plugin_messages_out_total{plugin=\"json\"} 2",
            "sluice_plugin_call_duration_seconds_count{plugin=\"json\"} 1",
            "sluice_errors_total{policy=\"skip\"} 1",
            "sluice_reload_failures_total 1",
            "sluice_reloads_total 0",
            "sluice_confirmed_lsn 100",
            "sluice_publishes_in_flight 0",
            "sluice_publish_retries_total 0",
            "sluice_offset_record_failures_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        // No stop errors were counted, so no series for them.
        assert!(!text.contains("policy=\"stop\""), "{text}");
        // Without a WAL end, no lag is made up.
        assert!(!text.contains(names::REPLICATION_LAG_BYTES), "{text}");
    }

    #[test]
    fn not_ready_without_nats() {
        let m = Metrics::new();
        m.set_streaming(true);
        assert!(!m.is_ready());
    }
}
