//! The manifest's sections as typed settings, and how each is read from its
//! TOML table. Defaults live here, next to the field they belong to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Manifest;
use super::fields::{Fields, Problems};
use super::nats::nats;
use super::ranges;
use super::values::{Identifier, PipelineName, PluginName, parse_log_level};
use crate::plugin::{Limits, PluginSpec, WasiGrants};
use crate::publish::{NatsOptions, StreamSpec, Subject, SubjectFilter};
use crate::replication::setup::{PublicationScope, TableName};
use crate::replication::{ConnInfo, SlotName};
use crate::secret::Secret;
use crate::snapshot::{SnapshotMode, SnapshotSettings};

/// `[source]`: the PostgreSQL side.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// Where and how to connect (its `Display` hides the password).
    pub conninfo: ConnInfo,
    pub publication: Identifier,
    pub slot: SlotName,
    /// Create the slot when it does not exist (and no durable offset says
    /// it should).
    pub create_slot: bool,
    /// Create the publication when it does not exist.
    pub create_publication: Option<PublicationScope>,
    /// When the published tables' existing rows are copied into the stream.
    pub snapshot: SnapshotMode,
    /// `source.failover`: make the slot a failover slot. `None` (not given)
    /// means "yes on PostgreSQL 17+, no below"; `Some(true)` on a server
    /// older than 17 is an error at start-up.
    pub failover: Option<bool>,
    /// Partitions, generated columns, unchanged TOAST, origins.
    pub changes: super::changes::ChangeOptions,
    /// `source.on-ghost-changes`: what to do when a promoted server lacks
    /// changes the stream already holds (DESIGN.md §3, "Failover").
    pub on_ghost_changes: GhostChanges,
}

/// `source.on-ghost-changes`: after a promotion, the stream holds changes
/// the new primary never had (past the timeline's switch point).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GhostChanges {
    /// Stop with an error naming the range (the default).
    #[default]
    Refuse,
    /// Publish one marker message naming the range to `subject`
    /// (`source.ghost-subject`), then stream on from the new timeline.
    Mark { subject: String },
}

impl GhostChanges {
    /// The value as the manifest spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            GhostChanges::Refuse => "refuse",
            GhostChanges::Mark { .. } => "mark",
        }
    }

    /// Whether ghost changes are accepted and marked.
    pub fn marks(&self) -> bool {
        matches!(self, GhostChanges::Mark { .. })
    }
}

/// Where the offset is stored (DESIGN §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetStoreSpec {
    Memory,
    File { path: PathBuf },
    NatsKv { bucket: String },
}

/// How a stored offset and the slot are reconciled at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MismatchStrategy {
    NoValidation,
    TrustOffset,
    TrustSlot,
    TrustGreaterLsn,
}

/// When the host confirms positions to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlushMode {
    Manual,
    Connector,
    ConnectorAndDriver,
}

/// Periodic writes to the source so that a quiet slot still moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub interval: Duration,
    /// SQL to run instead of the default `pg_logical_emit_message`.
    pub sql: Option<String>,
}

/// `[position]`.
#[derive(Clone, Debug)]
pub struct PositionSettings {
    pub store: OffsetStoreSpec,
    pub mismatch: MismatchStrategy,
    pub flush: FlushMode,
    /// How often standby status updates are sent at most (unless the server
    /// asks for one).
    pub status_interval: Duration,
    pub heartbeat: Option<Heartbeat>,
}

/// `[nats]`, parsed into the publisher's own types: the one place the
/// manifest's NATS keys are mapped.
#[derive(Clone, Debug)]
pub struct NatsSettings {
    /// Servers (secret: a URL may hold a password), authentication and TLS.
    pub connection: NatsOptions,
    /// The stream: created from this when `create_stream`, otherwise only
    /// verified to capture `subjects`.
    pub stream: StreamSpec,
    /// The subjects this pipeline may publish to (NATS wildcards allowed).
    pub subjects: SubjectFilter,
    pub create_stream: bool,
    pub max_in_flight: usize,
    pub max_in_flight_bytes: u64,
    /// Whether change messages carry `Sluice-Table`, `Sluice-Op`,
    /// `Sluice-Commit-Lsn` and `Sluice-Lsn` (`metadata-headers`, default
    /// on). Dead letters and host-made markers always carry them.
    pub metadata_headers: bool,
}

/// `[batch]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    pub max_events: usize,
}

/// `[errors]`: what happens when a plugin fails on an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorPolicy {
    Stop,
    DeadLetter { subject: String },
    Skip,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Human,
    Json,
}

/// `[log]`.
#[derive(Clone, Debug)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `sluice=debug`.
    pub level: String,
}

const TOP: &[&str] = &[
    "pipeline",
    "source",
    "position",
    "nats",
    "transform",
    "sink",
    "limits",
    "batch",
    "snapshot",
    "errors",
    "metrics",
    "log",
];

/// Reads every section, recording every problem; `None` when a required part
/// is missing or invalid.
pub(crate) fn read(
    table: toml::Table,
    file: &Path,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<Manifest> {
    let mut top = Fields::new("", table);
    let pipeline_name = top.table("pipeline", p).map(|mut t| {
        let name = t.opt_parsed("name", p, |s: String| PipelineName::try_from(s));
        let timeout = t.opt_parsed("shutdown-timeout", p, |s| ranges::SHUTDOWN_TIMEOUT.parse(s));
        t.finish(&["name", "shutdown-timeout"], p);
        (name, timeout)
    });
    let source = section(&mut top, "source", p).and_then(|t| source(t, env, p));
    let position = top
        .table("position", p)
        .map_or_else(|| Some(default_position()), |t| position(t, dir, p));
    let nats = section(&mut top, "nats", p).and_then(|t| nats(t, dir, p));
    let defaults = top
        .table("limits", p)
        .map_or_else(Limits::default, |t| limits(t, Limits::default(), p));
    let transforms: Vec<Option<PluginSpec>> = top
        .tables("transform", p)
        .into_iter()
        .map(|t| plugin(t, dir, defaults, p))
        .collect();
    let sink = section(&mut top, "sink", p).and_then(|t| plugin(t, dir, defaults, p));
    let batch = top
        .table("batch", p)
        .map_or(Some(BatchSettings { max_events: 256 }), |mut t| {
            let max = t.opt_parsed("max-events", p, |n: i64| {
                ranges::BATCH_EVENTS.parse_usize(n)
            });
            t.finish(&["max-events"], p);
            Some(BatchSettings {
                max_events: max.unwrap_or(256),
            })
        });
    let snapshot = top
        .table("snapshot", p)
        .map_or_else(SnapshotSettings::default, |t| snapshot_settings(t, p));
    let errors = top
        .table("errors", p)
        .map_or(Some(ErrorPolicy::Stop), |t| errors(t, p));
    let metrics = top.table("metrics", p).and_then(|mut t| {
        let addr = t.opt_parsed("address", p, |s: String| {
            s.parse::<SocketAddr>().map_err(|_| {
                format!("`{s}` is not a socket address: write e.g. \"127.0.0.1:9187\"")
            })
        });
        t.finish(&["address"], p);
        addr
    });
    let log = top.table("log", p).map_or(
        LogSettings {
            format: LogFormat::Human,
            level: "info".into(),
        },
        |mut t| {
            let format = t.opt("format", p).unwrap_or(LogFormat::Human);
            let level = t
                .opt_parsed("level", p, parse_log_level)
                .unwrap_or_else(|| "info".into());
            t.finish(&["format", "level"], p);
            LogSettings { format, level }
        },
    );
    top.finish(TOP, p);

    if let (Some(source), Some(position)) = (&source, &position)
        && source.snapshot != SnapshotMode::Never
        && position.store == OffsetStoreSpec::Memory
    {
        p.push(
            "source.snapshot",
            format!(
                "\"{}\" needs a durable position.store (\"file\" or \"nats-kv\"): snapshot progress must survive a crash, or an interrupted snapshot would be skipped",
                source.snapshot.as_str()
            ),
        );
    }
    let (source, position, nats, sink, batch, errors) =
        (source?, position?, nats?, sink?, batch?, errors?);
    let transforms: Vec<PluginSpec> = transforms.into_iter().collect::<Option<_>>()?;
    cross_checks(&nats, &transforms, &sink, &errors, &position, p);
    if let GhostChanges::Mark { subject } = &source.on_ghost_changes
        && !nats.subjects.allows(subject)
    {
        p.push(
            "source.ghost-subject",
            format!(
                "`{subject}` is not among nats.subjects ({}): the pipeline could not publish there",
                nats.subjects
            ),
        );
    }

    let (name, timeout) = pipeline_name.unwrap_or((None, None));
    let pipeline = name.unwrap_or_else(|| {
        PipelineName::try_from(source.slot.as_str().to_owned())
            .unwrap_or_else(|_| PipelineName::try_from("sluice".to_owned()).expect("valid name"))
    });
    Some(Manifest {
        file: file.to_owned(),
        pipeline,
        source,
        position,
        nats,
        transforms,
        sink,
        batch,
        snapshot,
        errors,
        metrics,
        log,
        shutdown_timeout: timeout.unwrap_or(Duration::from_secs(10)),
    })
}

/// A required section.
fn section(top: &mut Fields, key: &str, p: &mut Problems) -> Option<Fields> {
    if !top.has(key) {
        p.push(key, format!("the [{key}] section is required but missing"));
        return None;
    }
    top.table(key, p)
}

fn source(
    mut t: Fields,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<SourceSettings> {
    // Connection errors never quote the URL: it may hold a password.
    let conninfo = t.req_parsed("url", p, |s: Secret| {
        ConnInfo::parse_with_env(s.expose(), env).map_err(|e| e.to_string())
    });
    let publication = t.req_parsed("publication", p, |s: String| Identifier::try_from(s));
    let slot = t.req_parsed("slot", p, |s: String| {
        SlotName::new(s).map_err(|e| e.to_string())
    });
    let create_slot = t.opt("create-slot", p).unwrap_or(true);
    let failover = t.opt("failover", p);
    let changes = super::changes::read(&mut t, p);
    let snapshot = t
        .opt_parsed("snapshot", p, |s: String| match s.as_str() {
            "never" => Ok(SnapshotMode::Never),
            "initial" => Ok(SnapshotMode::Initial),
            "when-needed" => Ok(SnapshotMode::WhenNeeded),
            "initial-only" => Ok(SnapshotMode::InitialOnly),
            _ => Err(format!(
                "`{s}` is not a snapshot mode: use \"never\", \"initial\", \"when-needed\" or \"initial-only\""
            )),
        })
        .unwrap_or(SnapshotMode::Never);
    let create_publication = t.opt_parsed("create-publication", p, |v: toml::Value| match v {
        toml::Value::String(s) if s == "all-tables" => Ok(PublicationScope::AllTables),
        toml::Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|i| match i {
                toml::Value::String(s) if !s.is_empty() => Ok(table_name(&s)),
                other => Err(format!("table names must be strings, found {other}")),
            })
            .collect::<Result<_, _>>()
            .map(PublicationScope::Tables),
        _ => Err(
            "must be \"all-tables\" or a non-empty list of tables like [\"public.orders\"]"
                .to_owned(),
        ),
    });
    let on_ghost_changes = ghost_changes(&mut t, p);
    let known = [
        "url",
        "publication",
        "slot",
        "create-slot",
        "create-publication",
        "snapshot",
        "failover",
        "on-ghost-changes",
        "ghost-subject",
    ];
    t.finish(&[&known[..], super::changes::KEYS].concat(), p);
    Some(SourceSettings {
        conninfo: conninfo?,
        publication: publication?,
        slot: slot?,
        create_slot,
        create_publication,
        snapshot,
        failover,
        changes,
        on_ghost_changes: on_ghost_changes?,
    })
}

/// `source.on-ghost-changes` and the `source.ghost-subject` that `"mark"`
/// needs (whether NATS may publish there is a cross-check).
fn ghost_changes(t: &mut Fields, p: &mut Problems) -> Option<GhostChanges> {
    // Asked before the values are taken out of the table.
    let had_mode = t.has("on-ghost-changes");
    let had_subject = t.has("ghost-subject");
    let mode = t.opt_parsed("on-ghost-changes", p, |s: String| match s.as_str() {
        "refuse" | "mark" => Ok(s),
        _ => Err(format!(
            "`{s}` is not a way to handle ghost changes: use \"refuse\" or \"mark\""
        )),
    });
    let subject = t.opt_parsed("ghost-subject", p, |s: String| {
        Subject::new(s)
            .map(|s| s.as_str().to_owned())
            .map_err(|e| e.to_string())
    });
    let path = t.path_of("ghost-subject");
    match mode.as_deref() {
        Some("mark") => match subject {
            Some(subject) => Some(GhostChanges::Mark { subject }),
            None => {
                if !had_subject {
                    p.push(path, "is required when source.on-ghost-changes = \"mark\"");
                }
                None
            }
        },
        Some(_) => {
            if had_subject {
                p.push(path, "only applies when source.on-ghost-changes = \"mark\"");
            }
            Some(GhostChanges::Refuse)
        }
        None if had_mode => None,
        None => {
            if had_subject {
                p.push(path, "only applies when source.on-ghost-changes = \"mark\"");
            }
            Some(GhostChanges::Refuse)
        }
    }
}

fn snapshot_settings(mut t: Fields, p: &mut Problems) -> SnapshotSettings {
    let d = SnapshotSettings::default();
    let chunk_rows = t.opt_parsed("chunk-rows", p, |n: i64| ranges::CHUNK_ROWS.parse_usize(n));
    let parallel_tables = t.opt_parsed("parallel-tables", p, |n: i64| {
        ranges::PARALLEL_TABLES.parse_usize(n)
    });
    t.finish(&["chunk-rows", "parallel-tables"], p);
    SnapshotSettings {
        chunk_rows: chunk_rows.unwrap_or(d.chunk_rows),
        parallel_tables: parallel_tables.unwrap_or(d.parallel_tables),
    }
}

/// `schema.table`, or `table` in `public`. Names are taken as written
/// (they are quoted when sent to the server).
fn table_name(text: &str) -> TableName {
    match text.split_once('.') {
        Some((schema, name)) => TableName {
            schema: schema.to_owned(),
            name: name.to_owned(),
        },
        None => TableName {
            schema: "public".to_owned(),
            name: text.to_owned(),
        },
    }
}

fn default_position() -> PositionSettings {
    PositionSettings {
        store: OffsetStoreSpec::Memory,
        mismatch: MismatchStrategy::NoValidation,
        flush: FlushMode::Connector,
        status_interval: Duration::from_secs(1),
        heartbeat: None,
    }
}

fn position(mut t: Fields, dir: &Path, p: &mut Problems) -> Option<PositionSettings> {
    let d = default_position();
    let store_kind = t.opt_parsed("store", p, |s: String| match s.as_str() {
        "memory" | "file" | "nats-kv" => Ok(s),
        _ => Err(format!(
            "`{s}` is not an offset store: use \"memory\", \"file\" or \"nats-kv\""
        )),
    });
    let path = t.opt::<PathBuf>("store-path", p);
    let bucket = t.opt_parsed("store-bucket", p, |s: String| {
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(s)
        } else {
            Err(format!(
                "`{s}` is not a bucket name: use letters, digits, `-` and `_`"
            ))
        }
    });
    let store = match store_kind.as_deref() {
        Some("file") => match path {
            Some(path) => Some(OffsetStoreSpec::File {
                path: dir.join(path),
            }),
            None => {
                p.push(
                    t.path_of("store-path"),
                    "is required when position.store = \"file\"",
                );
                None
            }
        },
        Some("nats-kv") => Some(OffsetStoreSpec::NatsKv {
            bucket: bucket.unwrap_or_else(|| "sluice_offsets".into()),
        }),
        Some(_) | None => {
            if path.is_some() {
                p.push(
                    t.path_of("store-path"),
                    "only applies when position.store = \"file\"",
                );
            }
            store_kind
                .is_some()
                .then_some(OffsetStoreSpec::Memory)
                .or(Some(d.store.clone()))
        }
    };
    let mismatch = t.opt("mismatch", p).unwrap_or(d.mismatch);
    let flush = t.opt("flush", p).unwrap_or(d.flush);
    let status_interval = t
        .opt_parsed("status-interval", p, |s| ranges::STATUS_INTERVAL.parse(s))
        .unwrap_or(d.status_interval);
    let heartbeat = t.table("heartbeat", p).and_then(|mut h| {
        let interval = h.req_parsed("interval", p, |s| ranges::HEARTBEAT_INTERVAL.parse(s));
        let sql = h.opt::<String>("sql", p);
        h.finish(&["interval", "sql"], p);
        Some(Heartbeat {
            interval: interval?,
            sql,
        })
    });
    t.finish(
        &[
            "store",
            "store-path",
            "store-bucket",
            "mismatch",
            "flush",
            "status-interval",
            "heartbeat",
        ],
        p,
    );
    Some(PositionSettings {
        store: store?,
        mismatch,
        flush,
        status_interval,
        heartbeat,
    })
}

/// `path` when it is a file; otherwise a problem at `at`.
pub(super) fn existing_file(path: PathBuf, at: String, p: &mut Problems) -> Option<PathBuf> {
    if path.is_file() {
        Some(path)
    } else {
        p.push(at, format!("file {} does not exist", path.display()));
        None
    }
}

fn limits(mut t: Fields, base: Limits, p: &mut Problems) -> Limits {
    let memory = t.opt_parsed("memory", p, |v| ranges::PLUGIN_MEMORY.parse(v));
    let deadline = t.opt_parsed("deadline", p, |s| ranges::PLUGIN_DEADLINE.parse(s));
    let fuel = t.opt_parsed("fuel", p, |n: i64| ranges::PLUGIN_FUEL.check(i128::from(n)));
    t.finish(&["memory", "deadline", "fuel"], p);
    Limits {
        memory: memory.unwrap_or(base.memory),
        deadline: deadline.unwrap_or(base.deadline),
        fuel: fuel.or(base.fuel),
    }
}

fn plugin(mut t: Fields, dir: &Path, defaults: Limits, p: &mut Problems) -> Option<PluginSpec> {
    let name = t.req_parsed("name", p, |s: String| PluginName::try_from(s));
    let path = t.req_parsed("path", p, |f: PathBuf| {
        let path = dir.join(&f);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("plugin file {} does not exist", path.display()))
        }
    });
    let config = match t.raw("config") {
        None => Some("{}".to_owned()),
        Some(v @ toml::Value::Table(_)) => match serde_json::to_string(&v) {
            Ok(json) => Some(json),
            Err(e) => {
                p.push(
                    t.path_of("config"),
                    format!("cannot be passed to the plugin as JSON: {e}"),
                );
                None
            }
        },
        Some(other) => {
            p.push(
                t.path_of("config"),
                format!("must be a table, found {}", other.type_str()),
            );
            None
        }
    };
    let limits = t
        .table("limits", p)
        .map_or(defaults, |l| limits(l, defaults, p));
    // WASI capabilities are granted only by name, plugin by plugin: never
    // by default, never for the whole pipeline.
    let wasi = t
        .opt_parsed("wasi", p, |names: Vec<String>| WasiGrants::parse(&names))
        .unwrap_or_default();
    t.finish(&["name", "path", "config", "limits", "wasi"], p);
    Some(PluginSpec {
        name: name?.into(),
        path: path?,
        config: config?,
        limits,
        wasi,
    })
}

fn errors(mut t: Fields, p: &mut Problems) -> Option<ErrorPolicy> {
    let policy = t.opt_parsed("policy", p, |s: String| match s.as_str() {
        "stop" | "dead-letter" | "skip" => Ok(s),
        _ => Err(format!(
            "`{s}` is not an error policy: use \"stop\", \"dead-letter\" or \"skip\""
        )),
    });
    let subject = t.opt_parsed("dead-letter-subject", p, |s: String| {
        Subject::new(s)
            .map(|s| s.as_str().to_owned())
            .map_err(|e| e.to_string())
    });
    let had_subject = t.has("dead-letter-subject");
    let path = t.path_of("dead-letter-subject");
    t.finish(&["policy", "dead-letter-subject"], p);
    match policy.as_deref() {
        Some("dead-letter") => match subject {
            Some(subject) => Some(ErrorPolicy::DeadLetter { subject }),
            None => {
                if !had_subject {
                    p.push(path, "is required when errors.policy = \"dead-letter\"");
                }
                None
            }
        },
        Some("skip") => Some(ErrorPolicy::Skip),
        Some(_) | None => Some(ErrorPolicy::Stop),
    }
}

/// Checks that need several sections at once.
fn cross_checks(
    nats: &NatsSettings,
    transforms: &[PluginSpec],
    sink: &PluginSpec,
    errors: &ErrorPolicy,
    position: &PositionSettings,
    p: &mut Problems,
) {
    let mut seen = std::collections::HashSet::new();
    for (i, t) in transforms.iter().enumerate() {
        if !seen.insert(t.name.as_str()) {
            p.push(
                format!("transform[{i}].name"),
                format!(
                    "`{}` is used by another plugin: names must be unique",
                    t.name
                ),
            );
        }
    }
    if seen.contains(sink.name.as_str()) {
        p.push(
            "sink.name",
            format!(
                "`{}` is used by a transform: names must be unique",
                sink.name
            ),
        );
    }
    if let ErrorPolicy::DeadLetter { subject } = errors
        && !nats.subjects.allows(subject)
    {
        p.push(
            "errors.dead-letter-subject",
            format!(
                "`{subject}` is not among nats.subjects ({}): the pipeline could not publish there",
                nats.subjects
            ),
        );
    }
    if position.flush == FlushMode::Manual && position.heartbeat.is_some() {
        p.push(
            "position.heartbeat",
            "has no effect with position.flush = \"manual\": the host never advances the slot",
        );
    }
}
