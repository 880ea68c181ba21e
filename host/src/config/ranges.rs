//! The range of every duration, size and count the manifest and the
//! command line accept, declared once, with the check that enforces it.
//!
//! `sluice check` and the start of `sluice run` read a manifest through the
//! same parser, which calls [`DurationRange::check`], [`SizeRange::check`]
//! and [`CountRange::check`] for each such field; the CLI flags that set
//! the same limits (`sluice plugin run --deadline-ms`, `--memory-mib`) use
//! the same declarations. What this keeps true: a value inside its range
//! can be handed to timers (`tokio::time::interval`, `Instant + d`),
//! semaphores and JetStream without a panic, an overflow or a silent
//! "zero means default"; a value outside is refused with its range. The
//! bounds are documented in README.md and `examples/sluice.toml`, and
//! [`ALL`] lists them for the property test that tries each bound.

use std::time::Duration;

/// A duration field and its inclusive bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationRange {
    /// The manifest field, as written in the file.
    pub field: &'static str,
    pub min: Duration,
    pub max: Duration,
}

/// A size in bytes and its inclusive bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeRange {
    pub field: &'static str,
    pub min: u64,
    pub max: u64,
}

/// A count and its inclusive bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountRange {
    pub field: &'static str,
    pub min: u64,
    pub max: u64,
}

/// One declared range, of any kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    Duration(DurationRange),
    Size(SizeRange),
    Count(CountRange),
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// How long a clean shutdown waits for in-flight publishes.
pub const SHUTDOWN_TIMEOUT: DurationRange = DurationRange {
    field: "pipeline.shutdown-timeout",
    min: ms(100),
    max: secs(3600),
};
/// How often standby status updates go to PostgreSQL at most.
pub const STATUS_INTERVAL: DurationRange = DurationRange {
    field: "position.status-interval",
    min: ms(10),
    max: secs(3600),
};
/// How often the heartbeat writes to the source.
pub const HEARTBEAT_INTERVAL: DurationRange = DurationRange {
    field: "position.heartbeat.interval",
    min: ms(100),
    max: secs(24 * 3600),
};
/// JetStream's duplicate window (zero would mean "the server's default").
pub const DUPLICATE_WINDOW: DurationRange = DurationRange {
    field: "nats.duplicate-window",
    min: secs(1),
    max: secs(7 * 24 * 3600),
};
/// The deadline of one plugin call.
pub const PLUGIN_DEADLINE: DurationRange = DurationRange {
    field: "limits.deadline",
    min: ms(1),
    max: secs(3600),
};
/// The memory of one plugin instance.
pub const PLUGIN_MEMORY: SizeRange = SizeRange {
    field: "limits.memory",
    min: MIB,
    max: 4 * GIB,
};
/// Bytes published and not yet acknowledged (a `u32` inside the publisher).
pub const MAX_IN_FLIGHT_BYTES: SizeRange = SizeRange {
    field: "nats.max-in-flight-bytes",
    min: 1 << 10,
    max: GIB,
};
/// Fuel per plugin call (a TOML integer: at most `i64::MAX`).
pub const PLUGIN_FUEL: CountRange = CountRange {
    field: "limits.fuel",
    min: 1,
    max: i64::MAX as u64,
};
/// Publishes not yet acknowledged.
pub const MAX_IN_FLIGHT: CountRange = CountRange {
    field: "nats.max-in-flight",
    min: 1,
    max: 65_536,
};
/// JetStream stream replicas.
pub const REPLICAS: CountRange = CountRange {
    field: "nats.replicas",
    min: 1,
    max: 5,
};
/// Events in one plugin batch.
pub const BATCH_EVENTS: CountRange = CountRange {
    field: "batch.max-events",
    min: 1,
    max: 65_536,
};
/// Rows per snapshot chunk.
pub const CHUNK_ROWS: CountRange = CountRange {
    field: "snapshot.chunk-rows",
    min: 1,
    max: 1_000_000,
};
/// Tables a snapshot copies at once.
pub const PARALLEL_TABLES: CountRange = CountRange {
    field: "snapshot.parallel-tables",
    min: 1,
    max: 64,
};
/// `sluice plugin run --deadline-ms`: [`PLUGIN_DEADLINE`] in milliseconds.
pub const CLI_DEADLINE_MS: CountRange = CountRange {
    field: "--deadline-ms",
    min: PLUGIN_DEADLINE.min.as_millis() as u64,
    max: PLUGIN_DEADLINE.max.as_millis() as u64,
};
/// `sluice plugin run --memory-mib`: [`PLUGIN_MEMORY`] in MiB.
pub const CLI_MEMORY_MIB: CountRange = CountRange {
    field: "--memory-mib",
    min: PLUGIN_MEMORY.min / MIB,
    max: PLUGIN_MEMORY.max / MIB,
};

/// Every manifest range (the CLI's are derived from two of them).
pub const ALL: &[Declared] = &[
    Declared::Duration(SHUTDOWN_TIMEOUT),
    Declared::Duration(STATUS_INTERVAL),
    Declared::Duration(HEARTBEAT_INTERVAL),
    Declared::Duration(DUPLICATE_WINDOW),
    Declared::Duration(PLUGIN_DEADLINE),
    Declared::Size(PLUGIN_MEMORY),
    Declared::Size(MAX_IN_FLIGHT_BYTES),
    Declared::Count(PLUGIN_FUEL),
    Declared::Count(MAX_IN_FLIGHT),
    Declared::Count(REPLICAS),
    Declared::Count(BATCH_EVENTS),
    Declared::Count(CHUNK_ROWS),
    Declared::Count(PARALLEL_TABLES),
];

impl DurationRange {
    /// `d` when inside the range; otherwise the message for the field,
    /// quoting the value as the user wrote it.
    pub fn check(&self, written: &str, d: Duration) -> Result<Duration, String> {
        if (self.min..=self.max).contains(&d) {
            Ok(d)
        } else {
            Err(format!(
                "`{written}` is out of range: use {} to {}",
                humantime::format_duration(self.min),
                humantime::format_duration(self.max)
            ))
        }
    }

    /// Parses and checks a duration written as text (`"250ms"`, `"1s"`).
    pub(crate) fn parse(&self, text: String) -> Result<Duration, String> {
        let d = super::values::parse_duration(text.clone())?;
        self.check(&text, d)
    }
}

impl SizeRange {
    /// `n` bytes when inside the range; otherwise the message.
    pub fn check(&self, written: &str, n: u64) -> Result<u64, String> {
        if (self.min..=self.max).contains(&n) {
            Ok(n)
        } else {
            Err(self.out_of_range(written))
        }
    }

    fn out_of_range(&self, written: &str) -> String {
        format!(
            "`{written}` is out of range: use {} to {}",
            size_text(self.min),
            size_text(self.max)
        )
    }

    /// Parses and checks a size: a number of bytes or text with a unit.
    pub(crate) fn parse(&self, raw: toml::Value) -> Result<u64, String> {
        let written = match &raw {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let toml::Value::Integer(n) = raw
            && n < 0
        {
            return Err(self.out_of_range(&written));
        }
        let n = super::values::parse_bytes(raw)?;
        self.check(&written, n)
    }
}

impl CountRange {
    /// `n` when inside the range; otherwise the message.
    pub fn check(&self, n: i128) -> Result<u64, String> {
        match u64::try_from(n) {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
            _ => Err(format!(
                "{n} is out of range: use {} to {}",
                self.min, self.max
            )),
        }
    }

    /// Checks a TOML integer and converts it to `usize`.
    pub(crate) fn parse_usize(&self, n: i64) -> Result<usize, String> {
        let v = self.check(i128::from(n))?;
        usize::try_from(v).map_err(|_| format!("{n} is too large for this machine"))
    }

    /// Checks a command-line value (`--deadline-ms 0`), naming the flag.
    pub fn check_flag(&self, n: u64) -> Result<u64, String> {
        self.check(i128::from(n))
            .map_err(|e| format!("{} {e}", self.field))
    }
}

/// A byte count in the largest binary unit that divides it.
fn size_text(n: u64) -> String {
    for (unit, size) in [("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_the_value_and_the_range() {
        assert_eq!(
            STATUS_INTERVAL.parse("0s".into()),
            Err("`0s` is out of range: use 10ms to 1h".to_owned())
        );
        assert_eq!(
            MAX_IN_FLIGHT_BYTES.parse(toml::Value::Integer(0)),
            Err("`0` is out of range: use 1KiB to 1GiB".to_owned())
        );
        assert_eq!(
            CLI_DEADLINE_MS.check_flag(0),
            Err("--deadline-ms 0 is out of range: use 1 to 3600000".to_owned())
        );
        assert_eq!(
            PLUGIN_MEMORY.parse(toml::Value::String("4GiB".into())),
            Ok(4 * GIB)
        );
        assert_eq!(size_text(1536), "1536B");
    }
}
