//! An error and its causes as text: the one formatter of error chains, for
//! logs, the binary's last words and errors that quote a cause.
//!
//! Invariant: each cause is printed once. Many errors already write their
//! cause into their own text (`tokio_postgres::Error` and `std::io::Error`
//! wrappers do, as do our `"…: {source}"` messages), so a cause whose text
//! is already in what was printed before it is left out.

use std::error::Error;

/// `error` and each of its causes, outermost first: the one walk of a
/// chain, for the formatters below and for classifiers that look for a
/// kind of error anywhere in it.
pub fn chain<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// `error` and each of its causes, outermost first, with its text; a cause
/// whose text is already contained in the texts before it is left out.
pub fn distinct<'a>(error: &'a (dyn Error + 'static)) -> Vec<(&'a (dyn Error + 'static), String)> {
    let mut seen = String::new();
    let mut out = Vec::new();
    for e in chain(error) {
        let text = e.to_string();
        if !seen.contains(&text) {
            seen.push_str(&text);
            seen.push('\n');
            out.push((e, text));
        }
    }
    out
}

/// The reason a retried operation last failed, so that a run of identical
/// failures is logged once as a warning and the rest at debug: an outage
/// reads as one line, not one per attempt.
#[derive(Debug, Default)]
pub struct Repeats {
    last: Option<String>,
}

impl Repeats {
    /// Whether `reason` differs from the previous failure's; remembers it.
    pub fn is_new(&mut self, reason: &str) -> bool {
        if self.last.as_deref() == Some(reason) {
            return false;
        }
        self.last = Some(reason.to_owned());
        true
    }
}

/// The error and its causes on one line, separated by `: `, each once.
pub fn line(error: &(dyn Error + 'static)) -> String {
    distinct(error)
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read plugin {path}: {source}")]
    struct Quoting {
        path: &'static str,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("loading failed")]
    struct Outer(#[source] Quoting);

    #[test]
    fn repeats_are_new_only_when_the_reason_changes() {
        let mut r = Repeats::default();
        assert!(r.is_new("refused"));
        assert!(!r.is_new("refused"));
        assert!(r.is_new("timed out"));
        assert!(r.is_new("refused"));
    }

    #[test]
    fn each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let io_text = io.to_string();
        let e = Outer(Quoting {
            path: "x.wasm",
            source: io,
        });
        assert_eq!(
            line(&e),
            format!("loading failed: cannot read plugin x.wasm: {io_text}")
        );
        assert_eq!(distinct(&e).len(), 2);
    }

    /// Issue 16's example: a missing manifest printed its cause twice.
    #[test]
    fn a_missing_manifest_names_its_cause_once() {
        let e = crate::config::Manifest::load(std::path::Path::new("/nonexistent/sluice.toml"))
            .unwrap_err();
        assert_eq!(
            line(anyhow::Error::from(e).as_ref()),
            "cannot read manifest /nonexistent/sluice.toml: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_lone_error_is_its_text() {
        let io = std::io::Error::other("disk on fire");
        assert_eq!(line(&io), "disk on fire");
    }
}
