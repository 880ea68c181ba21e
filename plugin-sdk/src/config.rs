//! Parsing a plugin's configuration.
//!
//! The host passes the plugin's manifest table as JSON text. [`parse`]
//! deserialises it into the plugin's own `serde` type and turns every
//! failure into a `bad-config` error that names the key at fault, so the
//! operator sees e.g. ``config key `where.column`: invalid type: integer
//! `3`, expected a string``. Mark config types
//! `#[serde(deny_unknown_fields)]` so that a misspelt key is an error
//! rather than silently ignored.

use serde::de::DeserializeOwned;

use crate::{PluginError, Result};

/// Deserialises `config` (JSON text; empty text counts as `{}`) into `T`.
pub fn parse<T: DeserializeOwned>(config: &str) -> Result<T> {
    let config = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    let mut json = serde_json::Deserializer::from_str(config);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let mut path = error.path().to_string();
        let reason = without_position(error.inner());
        // The path of an unknown field ends with that field, which the
        // reason names already: point at the table that holds it instead.
        if reason.starts_with("unknown field") {
            path = path
                .rsplit_once('.')
                .map_or_else(String::new, |(parent, _)| parent.to_owned());
        }
        // Only data errors sit at a key; a syntax error has no meaningful
        // path (serde_path_to_error shows `?`).
        if !error.inner().is_data() || matches!(path.as_str(), "" | "." | "?") {
            PluginError::bad_config(format!("config: {reason}"))
        } else {
            PluginError::bad_config(format!("config key `{path}`: {reason}"))
        }
    })?;
    json.end().map_err(|error| {
        PluginError::bad_config(format!("config: {}", without_position(&error)))
    })?;
    Ok(value)
}

/// serde_json's message without its "at line 1 column 30" suffix: the host
/// generated the JSON from the manifest, so the position in it means
/// nothing to the operator; the key path does.
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) if error.line() != 0 => text[..at].to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Config {
        #[serde(default)]
        subject_prefix: Option<String>,
        #[serde(default)]
        r#where: Option<Where>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Where {
        column: String,
    }

    fn error(config: &str) -> String {
        match parse::<Config>(config) {
            Err(PluginError::BadConfig(message)) => message,
            other => panic!("expected bad-config, got {other:?}"),
        }
    }

    #[test]
    fn empty_config_is_an_empty_table() {
        assert_eq!(
            parse::<Config>("").unwrap(),
            Config {
                subject_prefix: None,
                r#where: None
            }
        );
        assert_eq!(
            parse::<Config>("{}").unwrap(),
            Config {
                subject_prefix: None,
                r#where: None
            }
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            error(r#"{"where": {"column": 3}}"#),
            "config key `where.column`: invalid type: integer `3`, expected a string"
        );
        assert_eq!(
            error(r#"{"subject-prefx": "x"}"#),
            "config: unknown field `subject-prefx`, expected `subject-prefix` or `where`"
        );
        assert_eq!(
            error(r#"{"where": {"colum": "x"}}"#),
            "config key `where`: unknown field `colum`, expected `column`"
        );
        assert_eq!(error("{"), "config: EOF while parsing an object");
        assert_eq!(error("{} x"), "config: trailing characters");
    }
}
