//! NATS subjects and publish permissions.
//!
//! A [`Subject`] is a concrete subject a message can be published to: dot-separated,
//! non-empty tokens, no whitespace or control characters, and no wildcard characters
//! (`*`, `>`) at all, since a sink that emits one almost certainly has a bug. A
//! [`SubjectPattern`] is what the manifest lists: the same, except that a token may be
//! exactly `*` (one token) or, as the last token only, `>` (one or more tokens).
//!
//! A [`SubjectFilter`] is the set of patterns a pipeline may publish to. The publisher
//! checks every message against it before anything reaches the wire, so a message to a
//! subject outside the list is an error and never a publish.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// Longest subject text quoted in an error message: a misbehaving plugin could return a
/// subject of megabytes, which must not end up in a log line.
const QUOTE_LIMIT: usize = 200;

/// Why a subject, a pattern or a filter is not valid, or a subject is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The text is not a valid concrete subject.
    #[error("`{subject}` is not a valid NATS subject: {reason}")]
    InvalidSubject {
        subject: String,
        reason: &'static str,
    },
    /// The text is not a valid subject pattern.
    #[error("`{pattern}` is not a valid NATS subject pattern: {reason}")]
    InvalidPattern {
        pattern: String,
        reason: &'static str,
    },
    /// A filter needs at least one pattern.
    #[error(
        "no subjects are allowed: list at least one subject (such as `cdc.>`) the pipeline may publish to"
    )]
    EmptyFilter,
    /// The subject is valid but outside the pipeline's permissions.
    #[error("subject `{subject}` is not allowed: this pipeline may publish only to {allowed}")]
    NotAllowed { subject: String, allowed: String },
}

/// A validated subject type: `new` checks the text (with or without
/// wildcards) and names the problem with `$error`; the text as `&str` and as
/// `Display`; parsing through `new`.
macro_rules! text_type {
    ($name:ident, $doc:literal, wildcards: $wildcards:expr, $error:expr) => {
        impl $name {
            #[doc = $doc]
            pub fn new(text: impl Into<String>) -> Result<Self, SubjectError> {
                let text = text.into();
                let error: fn(String, &'static str) -> SubjectError = $error;
                check_tokens(&text, $wildcards).map_err(|reason| error(quote(&text), reason))?;
                Ok($name(text))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = SubjectError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = SubjectError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $name::new(s)
            }
        }
    };
}

/// A validated concrete subject.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(String);

text_type!(
    Subject,
    "Validates `text` as a concrete subject.",
    wildcards: false,
    |subject, reason| SubjectError::InvalidSubject { subject, reason }
);

/// A validated subject pattern, which may contain the wildcards `*` and `>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct SubjectPattern(String);

impl SubjectPattern {
    /// Whether the concrete `subject` matches this pattern.
    pub fn matches(&self, subject: &Subject) -> bool {
        self.matches_text(&subject.0)
    }

    /// Whether the subject text matches, token by token, without validating it.
    fn matches_text(&self, subject: &str) -> bool {
        self.walk(subject, |_| true)
    }

    /// Whether every subject matched by `other` is also matched by this pattern: the
    /// test a JetStream stream's subjects must pass to capture what a pipeline may
    /// publish.
    pub fn covers(&self, other: &SubjectPattern) -> bool {
        // `*` matches one token, which `other` may spell as anything but `>`
        // (more than one token).
        self.walk(&other.0, |token| token != ">")
    }

    /// The NATS matching rules, in the one place they are written: `text`'s
    /// tokens against the pattern's, where `>` takes one or more tokens
    /// whatever they are, `*` one token that `star_takes`, and any other
    /// token only itself.
    fn walk(&self, text: &str, star_takes: impl Fn(&str) -> bool) -> bool {
        let mut pattern = self.0.split('.');
        let mut tokens = text.split('.');
        loop {
            match (pattern.next(), tokens.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(t)) if star_takes(t) => {}
                (Some(p), Some(t)) if p == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

text_type!(
    SubjectPattern,
    "Validates `text` as a subject pattern.",
    wildcards: true,
    |pattern, reason| SubjectError::InvalidPattern { pattern, reason }
);

/// The subjects a pipeline may publish to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectFilter {
    patterns: Vec<SubjectPattern>,
}

impl SubjectFilter {
    /// A filter allowing the subjects matched by any of `patterns` (at least one).
    pub fn new(patterns: impl IntoIterator<Item = SubjectPattern>) -> Result<Self, SubjectError> {
        let patterns: Vec<_> = patterns.into_iter().collect();
        if patterns.is_empty() {
            return Err(SubjectError::EmptyFilter);
        }
        Ok(SubjectFilter { patterns })
    }

    /// Parses each text as a pattern; the first invalid one is the error.
    pub fn parse<S: AsRef<str>>(
        patterns: impl IntoIterator<Item = S>,
    ) -> Result<Self, SubjectError> {
        let patterns = patterns
            .into_iter()
            .map(|p| SubjectPattern::new(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        SubjectFilter::new(patterns)
    }

    /// The allowed patterns, in manifest order.
    pub fn patterns(&self) -> &[SubjectPattern] {
        &self.patterns
    }

    /// Whether a pattern matches `subject`, taken as written (not validated): for
    /// checks made before a message is built, such as the plugin chain's.
    pub fn allows(&self, subject: &str) -> bool {
        self.patterns.iter().any(|p| p.matches_text(subject))
    }

    /// Validates `subject` and checks that it is allowed.
    pub fn check(&self, subject: &str) -> Result<Subject, SubjectError> {
        let subject = Subject::new(subject)?;
        if self.patterns.iter().any(|p| p.matches(&subject)) {
            Ok(subject)
        } else {
            Err(SubjectError::NotAllowed {
                subject: subject.0,
                allowed: self.describe(),
            })
        }
    }

    /// The allowed list as prose for error messages: "`a.>`" or "`a.>`, `b.*`".
    pub fn describe(&self) -> String {
        self.patterns
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The patterns as the manifest lists them: `a.>, b.*`.
impl fmt::Display for SubjectFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.patterns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p.as_str())?;
        }
        Ok(())
    }
}

/// Checks the token structure shared by subjects and patterns; the reason is a
/// sentence fragment for the error message.
fn check_tokens(text: &str, wildcards: bool) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("it is empty");
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace or a control character");
    }
    let count = text.split('.').count();
    for (i, token) in text.split('.').enumerate() {
        if token.is_empty() {
            return Err("it has an empty token (a leading, trailing or doubled `.`)");
        }
        let wild = token == "*" || token == ">";
        if wild && !wildcards {
            return Err(
                "wildcards (`*`, `>`) are not allowed in a subject messages are published to",
            );
        }
        if !wild && token.contains(['*', '>']) {
            return Err(if wildcards {
                "a wildcard (`*`, `>`) must be a whole token"
            } else {
                "wildcards (`*`, `>`) are not allowed in a subject messages are published to"
            });
        }
        if token == ">" && i + 1 != count {
            return Err("`>` may only be the last token");
        }
    }
    Ok(())
}

/// `text`, shortened for an error message if it is very long.
fn quote(text: &str) -> String {
    if text.len() <= QUOTE_LIMIT {
        return text.to_owned();
    }
    let mut end = QUOTE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests;
