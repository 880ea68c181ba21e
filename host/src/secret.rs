//! [`Secret`]: a password, token, NKey seed or URL with a password in it.
//!
//! The one type the whole host keeps such values in. Its invariant: the value
//! is never printed. `Debug` and `Display` write `***`, so a secret inside a
//! logged or `{:?}`-printed structure (the manifest, connection options) or
//! inside an error message shows nothing; [`Secret::expose`] is for the one
//! call that hands the value to a client library.

use std::fmt;

use serde::Deserialize;

/// A value that must not appear in logs or errors.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for handing to the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(s.to_string(), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(s.expose(), "hunter2");
        let parsed: Secret = serde_json::from_str(r#""t0ken""#).unwrap();
        assert_eq!(parsed, Secret::new("t0ken"));
    }
}
