//! The one error type of the plugin runtime.
//!
//! Every variant names the plugin (or the file) at fault, so that a user who
//! runs a chain of five plugins knows which one to look at. Plugins are pure
//! functions of their input, so almost everything a plugin does wrong is
//! *definite*: the same batch fails the same way again, which is why the
//! error policy (`[errors]`) handles a failing batch instead of retrying it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::World;
use super::validate::InvalidOutput;
use super::wasi::Refused;

/// A failure of the plugin runtime or of a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a WebAssembly file (it does not start with the `\\0asm` magic bytes)", path.display())]
    NotWasm { path: PathBuf },
    #[error(
        "{} is a core WebAssembly module, not a component: build it as a component \
         (e.g. wit-bindgen with wasm-component-ld, or `wasm-tools component new`)",
        path.display()
    )]
    CoreModule { path: PathBuf },
    #[error("cannot compile plugin {}", path.display())]
    Compile {
        path: PathBuf,
        #[source]
        source: wasmtime::Error,
    },
    #[error("plugin \"{plugin}\" is a {actual} component, not a {expected}")]
    WrongWorld {
        plugin: String,
        expected: World,
        actual: World,
    },
    #[error(
        "plugin \"{plugin}\" implements neither the transform nor the sink world of \
         sluice:plugin@0.1.0: it exports {}",
        list_or_nothing(exports)
    )]
    UnknownWorld {
        plugin: String,
        exports: Vec<String>,
    },
    #[error("plugin \"{plugin}\" does not match the {expected} world of sluice:plugin@0.1.0")]
    Mismatch {
        plugin: String,
        expected: World,
        #[source]
        source: wasmtime::Error,
    },
    #[error("plugin \"{plugin}\" {refused}")]
    NotGranted { plugin: String, refused: Refused },
    #[error(
        "plugin \"{plugin}\" imports interfaces the host does not provide: {} \
         (Sluice provides sluice:plugin and WASI 0.2's io, cli, clocks, random, sockets and filesystem)",
        imports.join(", ")
    )]
    UnknownImports {
        plugin: String,
        imports: Vec<String>,
    },
    #[error("plugin \"{plugin}\" could not be instantiated")]
    Instantiate {
        plugin: String,
        #[source]
        source: wasmtime::Error,
    },
    #[error("plugin \"{plugin}\" rejected its configuration: {message}")]
    BadConfig { plugin: String, message: String },
    #[error("plugin \"{plugin}\" failed to initialise: {message}")]
    InitFailed { plugin: String, message: String },
    #[error("plugin \"{plugin}\" trapped: {trap}")]
    Trapped {
        plugin: String,
        trap: String,
        #[source]
        source: wasmtime::Error,
    },
    #[error("plugin \"{plugin}\" exceeded its {} deadline", Millis(*deadline))]
    Deadline { plugin: String, deadline: Duration },
    #[error("plugin \"{plugin}\" exceeded its memory limit of {}", Bytes(*limit))]
    MemoryLimit { plugin: String, limit: u64 },
    #[error("plugin \"{plugin}\" ran out of fuel ({fuel} units per call)")]
    OutOfFuel { plugin: String, fuel: u64 },
    #[error("plugin \"{plugin}\" could not process {}: {message}", EventRef(*event_index))]
    BadInput {
        plugin: String,
        event_index: Option<u32>,
        message: String,
    },
    #[error("plugin \"{plugin}\" failed: {message}")]
    Failed { plugin: String, message: String },
    #[error("plugin \"{plugin}\" returned invalid output: {error}")]
    InvalidOutput {
        plugin: String,
        error: InvalidOutput,
    },
    #[error(
        "plugin \"{plugin}\" asks for a fuel limit, but fuel metering is disabled for this host"
    )]
    FuelDisabled { plugin: String },
    #[error("plugin \"{plugin}\": memory limit {} is above the host's maximum of {}", Bytes(*limit), Bytes(*max))]
    MemoryLimitTooHigh {
        plugin: String,
        limit: u64,
        max: u64,
    },
    #[error("cannot set up the WebAssembly engine")]
    Engine {
        #[source]
        source: wasmtime::Error,
    },
    #[error("a plugin task was cancelled or panicked")]
    Join {
        #[source]
        source: tokio::task::JoinError,
    },
}

impl PluginError {
    /// For a `bad-input` error, the index of the failing event in the batch
    /// the plugin was given, when the plugin said which one it was.
    pub fn event_index(&self) -> Option<u32> {
        match self {
            PluginError::BadInput { event_index, .. } => *event_index,
            _ => None,
        }
    }
}

/// A failed `transform` or `encode` call: the error, and the batch the
/// plugin was given, handed back so that the error policy can split it or
/// dead-letter it without the happy path ever copying a batch.
#[derive(Debug)]
pub struct CallError {
    pub error: PluginError,
    /// Boxed: errors are rare, and a large `Err` would make every `Result`
    /// of the happy path larger.
    pub input: Box<crate::model::Batch>,
}

// The call error *is* the plugin error, with the input attached: it shows
// as the plugin error and has the same causes.
impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl From<CallError> for PluginError {
    fn from(e: CallError) -> Self {
        e.error
    }
}

/// A duration printed in whole milliseconds (`100 ms`), the unit limits are
/// configured in.
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// A byte count printed in the largest binary unit that divides it.
pub(crate) struct Bytes(pub(crate) u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{} {unit}", self.0 / size);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

struct EventRef(Option<u32>);

impl fmt::Display for EventRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(i) => write!(f, "event {i}"),
            None => f.write_str("an event"),
        }
    }
}

fn list_or_nothing(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_the_largest_exact_unit() {
        assert_eq!(Bytes(64 << 20).to_string(), "64 MiB");
        assert_eq!(Bytes(1 << 30).to_string(), "1 GiB");
        assert_eq!(Bytes(1536).to_string(), "1536 bytes");
        assert_eq!(Bytes(3 << 10).to_string(), "3 KiB");
        assert_eq!(Bytes(10).to_string(), "10 bytes");
    }

    #[test]
    fn deadline_text() {
        let e = PluginError::Deadline {
            plugin: "slow".into(),
            deadline: Duration::from_millis(100),
        };
        assert_eq!(
            e.to_string(),
            "plugin \"slow\" exceeded its 100 ms deadline"
        );
    }
}
