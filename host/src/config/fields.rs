//! A walker over one TOML table that deserialises its fields one at a time,
//! so that a manifest with several mistakes reports all of them at once,
//! each with its path in the file (`nats.subjects[1]`, `transform[0].path`).
//!
//! Serde alone stops at the first error of a struct. Here every field is
//! taken out of its table and deserialised on its own; what fails is
//! recorded and the walk goes on. Keys left in a table when the walk
//! finishes are unknown keys, reported as errors too.

use serde::de::DeserializeOwned;

/// One mistake in a manifest: where, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The path of the offending key, e.g. `source.slot`; empty for the file
    /// as a whole.
    pub path: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects problems while the manifest is read.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<Problem>);

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// A table being read, with the path that leads to it.
#[derive(Debug)]
pub(crate) struct Fields {
    path: String,
    table: toml::Table,
}

impl Fields {
    pub(crate) fn new(path: impl Into<String>, table: toml::Table) -> Self {
        Fields {
            path: path.into(),
            table,
        }
    }

    /// The path of `key` inside this table.
    pub(crate) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Whether the table has `key` (not yet taken).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// Takes an optional field. `None` when absent or invalid (recorded).
    pub(crate) fn opt<T: DeserializeOwned>(&mut self, key: &str, p: &mut Problems) -> Option<T> {
        let value = self.table.remove(key)?;
        match T::deserialize(value) {
            Ok(v) => Some(v),
            Err(e) => {
                p.push(self.path_of(key), clean(&e.to_string()));
                None
            }
        }
    }

    /// Takes an optional field and converts it with `parse`, whose error text
    /// is recorded against the field's path.
    pub(crate) fn opt_parsed<R: DeserializeOwned, T>(
        &mut self,
        key: &str,
        p: &mut Problems,
        parse: impl FnOnce(R) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.opt::<R>(key, p)?;
        match parse(raw) {
            Ok(v) => Some(v),
            Err(message) => {
                p.push(self.path_of(key), message);
                None
            }
        }
    }

    /// Like [`Fields::opt_parsed`] for a required field.
    pub(crate) fn req_parsed<R: DeserializeOwned, T>(
        &mut self,
        key: &str,
        p: &mut Problems,
        parse: impl FnOnce(R) -> Result<T, String>,
    ) -> Option<T> {
        if !self.has(key) {
            p.push(self.path_of(key), "is required but missing");
            return None;
        }
        self.opt_parsed(key, p, parse)
    }

    /// Takes a sub-table; `None` when absent or not a table (recorded).
    pub(crate) fn table(&mut self, key: &str, p: &mut Problems) -> Option<Fields> {
        let path = self.path_of(key);
        match self.table.remove(key)? {
            toml::Value::Table(t) => Some(Fields::new(path, t)),
            other => {
                p.push(path, format!("must be a table, found {}", other.type_str()));
                None
            }
        }
    }

    /// Takes an array of tables (`[[transform]]`); empty when absent.
    pub(crate) fn tables(&mut self, key: &str, p: &mut Problems) -> Vec<Fields> {
        let path = self.path_of(key);
        match self.table.remove(key) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    toml::Value::Table(t) => Some(Fields::new(format!("{path}[{i}]"), t)),
                    other => {
                        p.push(
                            format!("{path}[{i}]"),
                            format!("must be a table, found {}", other.type_str()),
                        );
                        None
                    }
                })
                .collect(),
            Some(other) => {
                p.push(
                    path,
                    format!("must be an array of tables, found {}", other.type_str()),
                );
                Vec::new()
            }
        }
    }

    /// Takes a field as raw TOML, for values that are passed on as they are
    /// (a plugin's `config`).
    pub(crate) fn raw(&mut self, key: &str) -> Option<toml::Value> {
        self.table.remove(key)
    }

    /// Reports every key that was not taken as unknown.
    pub(crate) fn finish(self, known: &[&str], p: &mut Problems) {
        for key in self.table.keys() {
            let hint = closest(key, known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            p.push(self.path_of(key), format!("unknown key{hint}"));
        }
    }
}

/// The known key nearest to a misspelt one, when it is close enough to be a
/// likely typo.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters; manifests keys are short.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Serde's messages sometimes end in a newline or mention internal type
/// names; keep the first line only.
fn clean(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_keys_only() {
        assert_eq!(
            closest("publicaton", &["publication", "slot"]),
            Some("publication")
        );
        assert_eq!(closest("zzz", &["publication", "slot"]), None);
    }
}
