//! The manifest's small value types: names that must be safe where they are
//! used (slot names in SQL, pipeline names in message ids and NATS keys),
//! durations and byte sizes written as text (`"1s"`, `"64MiB"`).
//!
//! Each type can only hold a valid value ("parse, don't validate"): once a
//! manifest is loaded, the rest of the host never checks them again.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Defines a string newtype whose constructor checks it.
macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s)?;
                Ok($name(s))
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::try_from(s.to_owned())
            }
        }
    };
}

checked_name!(
    /// A PostgreSQL identifier used as given (a publication name): 1 to 63
    /// bytes, no NUL. It is always quoted when sent to the server.
    Identifier,
    |s| {
        if s.is_empty() || s.len() > 63 || s.contains('\0') {
            return Err(format!("`{s}` is not a valid PostgreSQL name: it must have 1 to 63 bytes"));
        }
        Ok(())
    }
);

/// Letters, digits, `-` and `_`: safe in NATS subjects, KV keys, message ids
/// and metric labels.
fn plain_token(kind: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!(
            "`{s}` is not a valid {kind}: it must have 1 to 64 characters"
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "`{s}` is not a valid {kind}: use only letters, digits, `-` and `_`"
        ));
    }
    Ok(())
}

checked_name!(
    /// The pipeline's name: part of every `Nats-Msg-Id`, of offset keys and
    /// of metric labels.
    PipelineName,
    |s| plain_token("pipeline name", s)
);

checked_name!(
    /// A plugin's name in the manifest: names its logs, metrics and errors.
    PluginName,
    |s| plain_token("plugin name", s)
);

checked_name!(
    /// A JetStream stream name.
    StreamName,
    |s| plain_token("stream name", s)
);

/// Parses a duration written as text: `"250ms"`, `"1s"`, `"2m"`, `"1h 30m"`.
pub(crate) fn parse_duration(text: String) -> Result<Duration, String> {
    humantime::parse_duration(&text).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write e.g. \"500ms\", \"1s\", \"2m\"")
    })
}

/// The levels `[log] level` and each `target=level` directive may name.
const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Checks `[log] level`: a level (`info`), or comma-separated directives
/// each of which is a level or `target=level` (`info,sluice_host=debug`).
/// A bare word that is no level would be read by the tracing filter as a
/// target name, silently hiding every other log, so it is refused.
pub(crate) fn parse_log_level(text: String) -> Result<String, String> {
    let hint =
        "use trace, debug, info, warn, error or off, or directives like \"info,sluice_host=debug\"";
    for directive in text.split(',').map(str::trim) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.is_empty() => level,
            _ => directive,
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("`{text}` is not a log level: {hint}"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(&text)
        .map(|_| text.clone())
        .map_err(|e| format!("`{text}` is not a log filter ({e}): {hint}"))
}

/// Parses a byte size: an integer number of bytes, or text with a unit
/// (`"64MiB"`, `"1GiB"`, `"512KiB"`, `"10MB"`).
pub(crate) fn parse_bytes(raw: toml::Value) -> Result<u64, String> {
    let text = match raw {
        toml::Value::Integer(n) => {
            return u64::try_from(n).map_err(|_| format!("{n} is not a size: it is negative"));
        }
        toml::Value::String(s) => s,
        other => {
            return Err(format!(
                "must be a size like \"64MiB\", found {}",
                other.type_str()
            ));
        }
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit_size: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => u64::MAX,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| unit_size != u64::MAX)
        .and_then(|n| n.checked_mul(unit_size))
        .ok_or_else(|| {
            format!(
                "`{text}` is not a size: write a whole number with B, KiB, MiB, GiB, KB, MB or GB"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels() {
        assert_eq!(parse_log_level("info".into()), Ok("info".to_owned()));
        assert!(parse_log_level("warn,sluice_host=debug".into()).is_ok());
        assert_eq!(
            parse_log_level("loud".into()),
            Err("`loud` is not a log level: use trace, debug, info, warn, error or off, or directives like \"info,sluice_host=debug\"".to_owned())
        );
        assert!(parse_log_level("info,sluice_host=loud".into()).is_err());
        assert!(parse_log_level("".into()).is_err());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(
            parse_bytes(toml::Value::String("64MiB".into())),
            Ok(64 << 20)
        );
        assert_eq!(parse_bytes(toml::Value::Integer(1000)), Ok(1000));
        assert!(parse_bytes(toml::Value::String("64 lots".into())).is_err());
        assert!(parse_bytes(toml::Value::Integer(-1)).is_err());
        assert_eq!(
            parse_duration("250ms".into()),
            Ok(Duration::from_millis(250))
        );
        assert!(
            parse_duration("soon".into())
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
