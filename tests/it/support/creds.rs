//! Test harness: decentralised NATS authentication made inside the test. An
//! [`Operator`] holds an operator, a system account and one account with
//! JetStream enabled (no limits), each as a JWT signed with its issuer's NKey;
//! [`Operator::server_config`] is the nats-server configuration that trusts
//! them (`operator`, `system_account`, `resolver: MEMORY`, `resolver_preload`),
//! and [`Operator::creds_file`] writes a `.creds` file for a new user of the
//! account, as `nsc` would.
//!
//! No `nsc` is needed: a NATS JWT is `base64url(header).base64url(claims)`
//! followed by `.` and the base64url Ed25519 signature of that text by the
//! issuer's NKey, with the header `{"typ":"JWT","alg":"ed25519-nkey"}`; the
//! claims carry `jti`, `iat`, `iss`, `sub`, `name`, optionally `exp`, and a
//! `nats` object whose `type` says what the subject is (version 2 claims, as
//! nats-server 2.2 and later read them).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// An operator with a system account and a JetStream-enabled account.
#[derive(Debug)]
pub(crate) struct Operator {
    operator_jwt: String,
    system: KeyPair,
    system_jwt: String,
    account: KeyPair,
    account_jwt: String,
}

impl Operator {
    pub(crate) fn new() -> Operator {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let operator_jwt = encode(
            &operator,
            &operator.public_key(),
            "sluice-test-operator",
            None,
            json!({ "type": "operator", "version": 2, "system_account": system.public_key() }),
        );
        let system_jwt = encode(
            &operator,
            &system.public_key(),
            "SYS",
            None,
            account_claims(false),
        );
        let account_jwt = encode(
            &operator,
            &account.public_key(),
            "SLUICE",
            None,
            account_claims(true),
        );
        Operator {
            operator_jwt,
            system,
            system_jwt,
            account,
            account_jwt,
        }
    }

    /// The nats-server configuration lines that trust this operator and know
    /// its two accounts.
    pub(crate) fn server_config(&self) -> String {
        let (sys, acc) = (self.system.public_key(), self.account.public_key());
        format!(
            "operator: \"{}\"\nsystem_account: \"{sys}\"\nresolver: MEMORY\nresolver_preload: {{\n  {sys}: \"{}\"\n  {acc}: \"{}\"\n}}\n",
            self.operator_jwt, self.system_jwt, self.account_jwt
        )
    }

    /// Writes `dir/name` holding a new user of the account (a JWT that
    /// expires at `expires`, in seconds since the epoch, if given) and the
    /// user's seed, and returns its path.
    pub(crate) fn creds_file(&self, dir: &Path, name: &str, expires: Option<u64>) -> PathBuf {
        user_creds(&self.account, dir, name, expires)
    }
}

/// A `.creds` file for a user of an account no server trusts.
pub(crate) fn stranger_creds_file(dir: &Path, name: &str) -> PathBuf {
    user_creds(&KeyPair::new_account(), dir, name, None)
}

fn user_creds(account: &KeyPair, dir: &Path, name: &str, expires: Option<u64>) -> PathBuf {
    let user = KeyPair::new_user();
    let jwt = encode(
        account,
        &user.public_key(),
        name,
        expires,
        json!({
            "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        }),
    );
    let seed = user.seed().expect("a new user key has a seed");
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         The seed below proves the user's identity: keep it secret.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    );
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a .creds file");
    path
}

/// An account's `nats` claims: no limits on connections, subscriptions and
/// payloads, and JetStream with no limits when `jetstream`.
fn account_claims(jetstream: bool) -> Value {
    let mut limits = json!({
        "subs": -1, "data": -1, "payload": -1,
        "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
    });
    if jetstream {
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[key] = json!(-1);
        }
    }
    json!({
        "limits": limits,
        "default_permissions": { "pub": {}, "sub": {} },
        "type": "account",
        "version": 2,
    })
}

/// A JWT about `subject` signed by `issuer`.
fn encode(
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    expires: Option<u64>,
    nats: Value,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs();
    let mut claims = json!({
        "iat": now,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    if let Some(exp) = expires {
        claims["exp"] = json!(exp);
    }
    // A unique id: a digest of the claims without it.
    let digest = Sha256::digest(claims.to_string().as_bytes());
    let jti: String = digest.iter().map(|b| format!("{b:02X}")).collect();
    claims["jti"] = json!(jti);
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign a JWT");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}
