//! Creating or verifying the JetStream stream a pipeline publishes to.
//!
//! Two modes, chosen by the manifest: [`ensure_stream`] creates the stream from a
//! [`StreamSpec`] when it does not exist, and [`verify_stream`] only checks an existing
//! one. Either way the invariant on success is that every subject pattern the pipeline
//! may publish to is covered by one of the stream's subjects, so no allowed message can
//! land in another stream or in none. Settings that differ from the spec on an existing
//! stream (storage, replicas, duplicate window) are reported, not changed: the stream
//! may be shared and is the operator's to edit.
//!
//! [`header_pairs`] turns the headers of a stored message back into a
//! repeatable list, for the commands and tests that read a stream.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::context::{
    CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind, PublishError,
    PublishErrorKind,
};
use async_nats::jetstream::stream::{
    Config, DirectGetError, DirectGetErrorKind, Info, StorageType,
};
use async_nats::jetstream::{Context, ErrorCode, kv};
use async_nats::{RequestErrorKind, StatusCode};

use super::subject::{SubjectFilter, SubjectPattern};

/// Where a stream keeps its messages (`nats.storage` in the manifest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Storage {
    #[default]
    File,
    Memory,
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Storage::File => "file",
            Storage::Memory => "memory",
        })
    }
}

impl From<Storage> for StorageType {
    fn from(s: Storage) -> Self {
        match s {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        }
    }
}

impl From<StorageType> for Storage {
    fn from(s: StorageType) -> Self {
        match s {
            StorageType::File => Storage::File,
            StorageType::Memory => Storage::Memory,
        }
    }
}

/// The stream a pipeline wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: String,
    /// The stream's subjects; usually the pipeline's allowed subjects.
    pub subjects: Vec<SubjectPattern>,
    pub storage: Storage,
    pub replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id`: replays older than this are not
    /// de-duplicated.
    pub duplicate_window: Duration,
}

impl StreamSpec {
    /// A file-backed, single-replica stream with JetStream's default two-minute
    /// duplicate window.
    pub fn new(name: impl Into<String>, subjects: Vec<SubjectPattern>) -> Self {
        StreamSpec {
            name: name.into(),
            subjects,
            storage: Storage::File,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }

    fn config(&self) -> Config {
        Config {
            name: self.name.clone(),
            subjects: self
                .subjects
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            storage: self.storage.into(),
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            ..Config::default()
        }
    }
}

/// What [`ensure_stream`] found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamReport {
    /// Whether the stream was created just now.
    pub created: bool,
    /// Settings of an existing stream that differ from the spec, one sentence each.
    pub differences: Vec<String>,
}

/// Why the stream is not usable.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "JetStream stream `{stream}` does not exist; create it, or let Sluice create it by configuring the stream"
    )]
    NotFound { stream: String },
    #[error(
        "JetStream stream `{stream}` does not capture every subject this pipeline may publish to: {uncovered} not covered by the stream's subjects {stream_subjects}"
    )]
    SubjectsNotCovered {
        stream: String,
        uncovered: String,
        stream_subjects: String,
    },
    /// `source` is JetStream's own answer when it gave one (its text is
    /// `reason`, so an error chain prints it once), else the client's error.
    #[error("cannot create JetStream stream `{stream}`: {reason}")]
    Create {
        stream: String,
        reason: String,
        #[source]
        source: BoxError,
    },
    /// `source` as for [`StreamError::Create`].
    #[error("cannot look up JetStream stream `{stream}`: {reason}")]
    Lookup {
        stream: String,
        reason: String,
        #[source]
        source: BoxError,
    },
}

impl StreamError {
    /// Whether asking again later may succeed ([`jetstream_busy`]). A
    /// refusal or a stream that does not fit stays.
    pub fn is_transient(&self) -> bool {
        match self {
            StreamError::Create { source, .. } | StreamError::Lookup { source, .. } => {
                jetstream_busy(&**source)
            }
            StreamError::NotFound { .. } | StreamError::SubjectsNotCovered { .. } => false,
        }
    }
}

/// Whether `error` or one of its causes says JetStream did not answer in
/// time, had nobody to answer yet, or answered that its cluster has no
/// leader: what a NATS restart or a JetStream cluster electing a leader
/// looks like to a client, whether it asked about a stream or a key-value
/// bucket (the offset store).
///
/// "No responders" counts: in a cluster, a stream or bucket just created,
/// or whose leader was just lost, has no responder on the server the
/// client is connected to until the cluster has settled. It is also what a
/// bucket deleted under a running host answers, which is then waited for
/// with a warning naming it.
pub fn jetstream_busy(error: &(dyn std::error::Error + 'static)) -> bool {
    crate::causes::chain(error).any(|e| no_responder(e) || timed_out_or_leaderless(e))
}

/// Whether `error` itself says JetStream did not answer in time, or that its
/// cluster has no leader ([`jetstream_busy`] walks the chain).
fn timed_out_or_leaderless(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(api) = e.downcast_ref::<async_nats::jetstream::Error>() {
        api.error_code() == ErrorCode::CLUSTER_NOT_AVAILABLE
    } else if let Some(e) = e.downcast_ref::<CreateStreamError>() {
        match e.kind() {
            CreateStreamErrorKind::TimedOut => true,
            CreateStreamErrorKind::JetStream(api) => {
                api.error_code() == ErrorCode::CLUSTER_NOT_AVAILABLE
            }
            _ => false,
        }
    } else if let Some(e) = e.downcast_ref::<GetStreamError>() {
        e.kind() == GetStreamErrorKind::Request
    } else if let Some(e) = e.downcast_ref::<kv::EntryError>() {
        e.kind() == kv::EntryErrorKind::TimedOut
    } else if let Some(e) = e.downcast_ref::<kv::UpdateError>() {
        e.kind() == kv::UpdateErrorKind::TimedOut
    } else if let Some(e) = e.downcast_ref::<PublishError>() {
        matches!(
            e.kind(),
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
        )
    } else if let Some(e) = e.downcast_ref::<DirectGetError>() {
        e.kind() == DirectGetErrorKind::TimedOut
    } else if let Some(e) = e.downcast_ref::<async_nats::RequestError>() {
        matches!(
            e.kind(),
            RequestErrorKind::TimedOut | RequestErrorKind::NoResponders
        )
    } else {
        false
    }
}

/// Whether `error` itself is the client's form of JetStream's "no
/// responders" to a publish or a direct get (async-nats reports the former
/// as `StreamNotFound`): nobody in reach serves that stream now.
pub fn no_responder(error: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(e) = error.downcast_ref::<PublishError>() {
        e.kind() == PublishErrorKind::StreamNotFound
    } else if let Some(e) = error.downcast_ref::<DirectGetError>() {
        matches!(e.kind(), DirectGetErrorKind::ErrorResponse(status, _) if status == StatusCode::NO_RESPONDERS)
    } else {
        false
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Verifies that the stream `name` exists and captures every pattern in `allowed`.
pub async fn verify_stream(
    js: &Context,
    name: &str,
    allowed: &SubjectFilter,
) -> Result<Info, StreamError> {
    let info = lookup(js, name)
        .await?
        .ok_or_else(|| StreamError::NotFound {
            stream: name.to_owned(),
        })?;
    check_coverage(&info, allowed)?;
    Ok(info)
}

/// Creates the stream from `spec` unless it exists, then verifies it against
/// `allowed` and reports settings that differ from `spec`.
pub async fn ensure_stream(
    js: &Context,
    spec: &StreamSpec,
    allowed: &SubjectFilter,
) -> Result<StreamReport, StreamError> {
    let (info, created) = match lookup(js, &spec.name).await? {
        Some(info) => (info, false),
        None => {
            let stream = js.create_stream(spec.config()).await.map_err(|e| {
                let (reason, source) = create_reason(e);
                StreamError::Create {
                    stream: spec.name.clone(),
                    reason,
                    source,
                }
            })?;
            tracing::info!(stream = %spec.name, storage = %spec.storage, replicas = spec.replicas, "created JetStream stream");
            // The create/lookup response carries the stream's info.
            let info = stream.cached_info().clone();
            (info, true)
        }
    };
    check_coverage(&info, allowed)?;
    let differences = if created {
        Vec::new()
    } else {
        differences(spec, &info.config)
    };
    for difference in &differences {
        tracing::warn!(stream = %spec.name, "{difference}");
    }
    Ok(StreamReport {
        created,
        differences,
    })
}

async fn lookup(js: &Context, name: &str) -> Result<Option<Info>, StreamError> {
    let lookup_error = |error: GetStreamError| {
        let (reason, source): (String, BoxError) = match error.kind() {
            GetStreamErrorKind::EmptyName => {
                ("the stream name is empty".to_owned(), Box::new(error))
            }
            GetStreamErrorKind::InvalidStreamName => (
                "the stream name is not valid (no spaces, `.`, `*`, `>`, `/` or `\\`)".to_owned(),
                Box::new(error),
            ),
            GetStreamErrorKind::Request => ("JetStream did not answer".to_owned(), Box::new(error)),
            GetStreamErrorKind::JetStream(api) => (api.to_string(), Box::new(api)),
        };
        StreamError::Lookup {
            stream: name.to_owned(),
            reason,
            source,
        }
    };
    match js.get_stream(name).await {
        Ok(stream) => {
            // The create/lookup response carries the stream's info.
            let info = stream.cached_info().clone();
            Ok(Some(info))
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(js_err)
                if js_err.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(lookup_error(e)),
        },
    }
}

/// Why JetStream did not create the stream, and the error behind it.
fn create_reason(error: CreateStreamError) -> (String, BoxError) {
    let reason = match error.kind() {
        CreateStreamErrorKind::JetStream(api) => return (api.to_string(), Box::new(api)),
        CreateStreamErrorKind::JetStreamUnavailable => {
            "JetStream is not enabled on the server".to_owned()
        }
        CreateStreamErrorKind::TimedOut => "JetStream did not answer in time".to_owned(),
        CreateStreamErrorKind::InvalidStreamName | CreateStreamErrorKind::EmptyStreamName => {
            "the stream name is not valid (no spaces, `.`, `*`, `>`, `/` or `\\`)".to_owned()
        }
        other => other.to_string(),
    };
    (reason, Box::new(error))
}

fn check_coverage(info: &Info, allowed: &SubjectFilter) -> Result<(), StreamError> {
    // A stream subject the server accepted but we cannot parse covers nothing here.
    let stream_subjects: Vec<SubjectPattern> = info
        .config
        .subjects
        .iter()
        .filter_map(|s| SubjectPattern::new(s.as_str()).ok())
        .collect();
    let uncovered: Vec<String> = allowed
        .patterns()
        .iter()
        .filter(|p| !stream_subjects.iter().any(|s| s.covers(p)))
        .map(|p| format!("`{p}`"))
        .collect();
    if uncovered.is_empty() {
        return Ok(());
    }
    let listed = info
        .config
        .subjects
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>();
    Err(StreamError::SubjectsNotCovered {
        stream: info.config.name.clone(),
        uncovered: uncovered.join(", "),
        stream_subjects: if listed.is_empty() {
            "(none)".to_owned()
        } else {
            listed.join(", ")
        },
    })
}

fn differences(spec: &StreamSpec, actual: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let storage = Storage::from(actual.storage);
    if storage != spec.storage {
        out.push(format!(
            "stream uses {storage} storage, the manifest asks for {}",
            spec.storage
        ));
    }
    if actual.num_replicas != spec.replicas {
        out.push(format!(
            "stream has {} replica(s), the manifest asks for {}",
            actual.num_replicas, spec.replicas
        ));
    }
    if actual.duplicate_window != spec.duplicate_window {
        out.push(format!(
            "stream's duplicate window is {:?}, the manifest asks for {:?}; replays older than the window are not de-duplicated",
            actual.duplicate_window, spec.duplicate_window
        ));
    }
    out
}

/// A stored message's headers as (name, value) pairs, sorted by name. The
/// client keeps headers in a hash map; the sort is stable, so the values of
/// one name keep their order and the output is repeatable.
pub fn header_pairs(headers: &async_nats::HeaderMap) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().to_owned()))
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}
