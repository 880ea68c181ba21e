//! A NATS credentials (`.creds`) file, looked into before connecting: the
//! expiry of its user JWT. A server answers an expired user with the same
//! "authorization violation" as an unknown one, so without this look the
//! operator would be left guessing; with it, `connect` names the file and the
//! time it expired.
//!
//! What this keeps true: only the JWT's claims are decoded (the seed is never
//! touched), and nothing from the file but the expiry time reaches an error.
//! A file this cannot read a JWT from is left to the client library, which
//! says what is missing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// When the user JWT in the credentials file `text` expires, if it is
/// readable and has an `exp` claim.
pub(super) fn user_jwt_expiry(text: &str) -> Option<SystemTime> {
    let jwt = user_jwt(text)?;
    let claims = jwt.split('.').nth(1)?;
    let claims = URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    // `exp` = 0 means "never" in NATS JWTs.
    (exp > 0).then(|| UNIX_EPOCH + Duration::from_secs(exp))
}

/// The line after the first `-----BEGIN … JWT-----` marker.
fn user_jwt(text: &str) -> Option<&str> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| l.starts_with("---") && l.contains("BEGIN") && l.contains("JWT"))?;
    lines.find(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(claims: &str) -> String {
        let body = URL_SAFE_NO_PAD.encode(claims);
        format!(
            "-----BEGIN NATS USER JWT-----\nhead.{body}.sig\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSU\n------END USER NKEY SEED------\n"
        )
    }

    #[test]
    fn reads_the_user_jwts_expiry() {
        assert_eq!(
            user_jwt_expiry(&creds(r#"{"sub":"U","exp":1700000000}"#)),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            user_jwt_expiry(&creds(r#"{"sub":"U","exp":1700000000}"#).replace('\n', "\r\n")),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }

    #[test]
    fn no_expiry_when_none_or_unreadable() {
        assert_eq!(user_jwt_expiry(&creds(r#"{"sub":"U"}"#)), None);
        assert_eq!(user_jwt_expiry(&creds(r#"{"exp":0}"#)), None);
        assert_eq!(user_jwt_expiry(&creds(r#"{"exp":"soon"}"#)), None);
        assert_eq!(user_jwt_expiry(&creds("not json")), None);
        assert_eq!(user_jwt_expiry("not a credentials file"), None);
        assert_eq!(user_jwt_expiry("-----BEGIN NATS USER JWT-----\n"), None);
        assert_eq!(
            user_jwt_expiry("-----BEGIN NATS USER JWT-----\nno-dots\n"),
            None
        );
        assert_eq!(
            user_jwt_expiry("-----BEGIN NATS USER JWT-----\na.%%%.c\n"),
            None
        );
    }
}
