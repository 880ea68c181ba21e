//! The `[source]` keys that shape which changes PostgreSQL sends and how
//! complete their rows are: how a publication Sluice creates treats
//! partitioned tables and generated columns, whether an update's unchanged
//! TOAST values are filled from its old row, and whether changes replicated
//! from another origin are streamed.
//!
//! Kept apart from the rest of `[source]` so that each key's default and
//! range sit next to each other; whether the server supports a choice
//! (origins need PostgreSQL 16, generated columns 18) is checked at start-up
//! by `replication::setup`, which knows the server's version.

use super::fields::{Fields, Problems};

/// The keys this module reads from `[source]`.
pub(crate) const KEYS: &[&str] = &[
    "publish-via-partition-root",
    "publish-generated-columns",
    "fill-unchanged-toast",
    "origin",
];

/// Which changes the replication stream carries, per `origin`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// Every change, whatever its replication origin (PostgreSQL's default).
    #[default]
    Any,
    /// Only changes made on this server, not those a subscription or another
    /// replication tool applied under a replication origin (PostgreSQL 16+):
    /// what keeps a bidirectional setup from looping.
    None,
}

impl Origin {
    /// The value of pgoutput's `origin` option.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Any => "any",
            Origin::None => "none",
        }
    }
}

/// The change-shaping settings of `[source]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeOptions {
    /// `publish-via-partition-root` (default true): a publication Sluice
    /// creates publishes a partitioned table's changes under the root
    /// table's name and OID, not each partition's.
    pub via_partition_root: bool,
    /// `publish-generated-columns` (default true): a publication Sluice
    /// creates on PostgreSQL 18+ publishes stored generated columns
    /// (`publish_generated_columns = stored`); ignored below 18, where
    /// PostgreSQL never publishes them.
    pub generated_columns: bool,
    /// `fill-unchanged-toast` (default true): an update whose old row
    /// carries the value of a TOASTed column that PostgreSQL did not resend
    /// in the new row (REPLICA IDENTITY FULL) gets that value in its new row
    /// instead of the unchanged-toast marker.
    pub fill_unchanged_toast: bool,
    /// `origin` (default "any").
    pub origin: Origin,
}

impl Default for ChangeOptions {
    fn default() -> Self {
        ChangeOptions {
            via_partition_root: true,
            generated_columns: true,
            fill_unchanged_toast: true,
            origin: Origin::Any,
        }
    }
}

/// Reads [`KEYS`] from the `[source]` table.
pub(crate) fn read(t: &mut Fields, p: &mut Problems) -> ChangeOptions {
    let d = ChangeOptions::default();
    let origin = t.opt_parsed("origin", p, |s: String| match s.as_str() {
        "any" => Ok(Origin::Any),
        "none" => Ok(Origin::None),
        _ => Err(format!(
            "`{s}` is not an origin: use \"any\" (every change) or \"none\" (only changes made on this server)"
        )),
    });
    ChangeOptions {
        via_partition_root: t
            .opt("publish-via-partition-root", p)
            .unwrap_or(d.via_partition_root),
        generated_columns: t
            .opt("publish-generated-columns", p)
            .unwrap_or(d.generated_columns),
        fill_unchanged_toast: t
            .opt("fill-unchanged-toast", p)
            .unwrap_or(d.fill_unchanged_toast),
        origin: origin.unwrap_or(d.origin),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Manifest;
    use super::*;

    /// Loads a minimal manifest with `source` lines added to `[source]`.
    fn source(lines: &str) -> Result<ChangeOptions, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("json.wasm"), b"").unwrap();
        let text = format!(
            "[source]\nurl = \"postgres://u@h/db\"\npublication = \"p\"\nslot = \"s\"\n{lines}\n\
             [nats]\nurl = \"nats://h:4222\"\nstream = \"S\"\nsubjects = [\"cdc.>\"]\n\
             [sink]\nname = \"json\"\npath = \"json.wasm\"\n"
        );
        Manifest::parse(&text, &dir.path().join("sluice.toml"), &|_| None)
            .map(|m| m.source.changes)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_publish_via_the_root_and_fill_toast() {
        assert_eq!(source(""), Ok(ChangeOptions::default()));
        assert_eq!(
            source(
                "publish-via-partition-root = false\npublish-generated-columns = false\n\
                 fill-unchanged-toast = false\norigin = \"none\""
            ),
            Ok(ChangeOptions {
                via_partition_root: false,
                generated_columns: false,
                fill_unchanged_toast: false,
                origin: Origin::None,
            })
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = source("origin = \"local\"\nfill-unchanged-toast = \"yes\"").unwrap_err();
        assert!(
            err.contains("source.origin: `local` is not an origin: use \"any\""),
            "{err}"
        );
        assert!(err.contains("source.fill-unchanged-toast:"), "{err}");
    }
}
