//! The manifest's `[nats]` section, read straight into the publisher's
//! own types: connection options (servers, authentication, TLS), the
//! stream spec, the subject filter and the window. Every mistake is
//! collected with its path, as everywhere in the manifest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fields::{Fields, Problems};
use super::ranges;
use super::sections::{NatsSettings, existing_file};
use super::values::StreamName;
use crate::publish::{NatsAuth, NatsOptions, Storage, StreamSpec, SubjectFilter, TlsOptions};
use crate::secret::Secret;

pub(super) fn nats(mut t: Fields, dir: &Path, p: &mut Problems) -> Option<NatsSettings> {
    let urls = nats_urls(&mut t, p);
    let stream = t.req_parsed("stream", p, |s: String| StreamName::try_from(s));
    let subjects = t.req_parsed("subjects", p, |v: Vec<String>| {
        if v.is_empty() {
            return Err("must list at least one subject the pipeline may publish to".to_owned());
        }
        SubjectFilter::parse(&v).map_err(|e| e.to_string())
    });
    let create_stream = t.opt("create-stream", p).unwrap_or(true);
    let metadata_headers = t.opt("metadata-headers", p).unwrap_or(true);
    let storage = t.opt("storage", p).unwrap_or(Storage::File);
    let replicas = t.opt_parsed("replicas", p, |n: i64| ranges::REPLICAS.parse_usize(n));
    let duplicate_window =
        t.opt_parsed("duplicate-window", p, |s| ranges::DUPLICATE_WINDOW.parse(s));
    let max_in_flight = t.opt_parsed("max-in-flight", p, |n: i64| {
        ranges::MAX_IN_FLIGHT.parse_usize(n)
    });
    let max_in_flight_bytes = t.opt_parsed("max-in-flight-bytes", p, |v| {
        ranges::MAX_IN_FLIGHT_BYTES.parse(v)
    });
    let auth = nats_auth(&mut t, dir, p);
    let tls = t.table("tls", p).map(|s| nats_tls(s, dir, p));
    t.finish(
        &[
            "url",
            "stream",
            "subjects",
            "create-stream",
            "storage",
            "replicas",
            "duplicate-window",
            "max-in-flight",
            "max-in-flight-bytes",
            "metadata-headers",
            "user",
            "password",
            "token",
            "nkey-seed",
            "credentials",
            "tls",
        ],
        p,
    );
    let subjects = subjects?;
    let connection = NatsOptions {
        servers: urls?,
        auth: auth?,
        tls: tls.unwrap_or_default(),
        ..NatsOptions::new(Vec::<String>::new())
    };
    Some(NatsSettings {
        connection,
        stream: StreamSpec {
            name: stream?.as_str().to_owned(),
            subjects: subjects.patterns().to_vec(),
            storage,
            replicas: replicas.unwrap_or(1),
            duplicate_window: duplicate_window.unwrap_or(Duration::from_secs(120)),
        },
        subjects,
        create_stream,
        max_in_flight: max_in_flight.unwrap_or(1024),
        max_in_flight_bytes: max_in_flight_bytes.unwrap_or(64 << 20),
        metadata_headers,
    })
}

/// `nats.url`: one URL or a list, each kept secret (it may hold a password).
fn nats_urls(t: &mut Fields, p: &mut Problems) -> Option<Vec<Secret>> {
    let urls = t.req_parsed("url", p, |v: toml::Value| match v {
        toml::Value::String(s) => Ok(vec![Secret::new(s)]),
        toml::Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|i| match i {
                toml::Value::String(s) => Ok(Secret::new(s)),
                _ => Err("must be a URL or a list of URLs".to_owned()),
            })
            .collect(),
        _ => Err(
            "must be a URL or a non-empty list of URLs like \"nats://localhost:4222\"".to_owned(),
        ),
    });
    let mut valid = true;
    for (i, u) in urls.iter().flatten().enumerate() {
        let ok = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|s| u.expose().starts_with(s))
            || !u.expose().contains("://");
        let at = format!("{}[{i}]", t.path_of("url"));
        if !ok {
            p.push(at, "must be a nats://, tls://, ws:// or wss:// URL");
            valid = false;
        } else if let Err(e) = u.expose().parse::<async_nats::ServerAddr>() {
            // The parser's text names the part at fault, never the URL
            // (which may hold a password).
            p.push(at, format!("is not a valid URL: {e}"));
            valid = false;
        }
    }
    urls.filter(|_| valid)
}

/// The one way `[nats]` authenticates: user and password, token, NKey seed,
/// credentials file, or none.
fn nats_auth(t: &mut Fields, dir: &Path, p: &mut Problems) -> Option<NatsAuth> {
    let user = t.opt::<String>("user", p);
    let password = t.opt::<Secret>("password", p);
    let token = t.opt::<Secret>("token", p);
    let nkey = t.opt::<Secret>("nkey-seed", p);
    let creds = t.opt::<PathBuf>("credentials", p);
    let methods = [
        user.is_some() || password.is_some(),
        token.is_some(),
        nkey.is_some(),
        creds.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        p.push(
            t.path_of("user"),
            "choose one way to authenticate: user and password, token, nkey-seed or credentials",
        );
        return None;
    }
    match (user, password) {
        (Some(user), Some(password)) => return Some(NatsAuth::UserPassword { user, password }),
        (Some(_), None) => {
            p.push(t.path_of("password"), "is required with nats.user");
            return None;
        }
        (None, Some(_)) => {
            p.push(t.path_of("user"), "is required with nats.password");
            return None;
        }
        (None, None) => {}
    }
    if let Some(token) = token {
        return Some(NatsAuth::Token(token));
    }
    if let Some(seed) = nkey {
        // The seed is a secret: the message never quotes it.
        if nkeys::KeyPair::from_seed(seed.expose()).is_err() {
            p.push(
                t.path_of("nkey-seed"),
                "is not a valid NKey seed: write the user seed (`SU…`, 58 characters) that `nsc` or `nk -gen user` printed",
            );
            return None;
        }
        return Some(NatsAuth::NKey(seed));
    }
    match creds {
        Some(c) => {
            existing_file(dir.join(c), t.path_of("credentials"), p).map(NatsAuth::CredentialsFile)
        }
        None => Some(NatsAuth::None),
    }
}

/// `[nats.tls]`.
fn nats_tls(mut s: Fields, dir: &Path, p: &mut Problems) -> TlsOptions {
    let mut file = |key: &str, p: &mut Problems| {
        let path = s.opt::<PathBuf>(key, p)?;
        existing_file(dir.join(path), s.path_of(key), p)
    };
    let ca_file = file("ca", p);
    let client_cert = file("cert", p);
    let client_key = file("key", p);
    if client_cert.is_some() != client_key.is_some() {
        p.push(
            s.path_of("cert"),
            "a client certificate needs both `cert` and `key`",
        );
    }
    let required = s.opt("required", p).unwrap_or(true);
    s.finish(&["ca", "cert", "key", "required"], p);
    TlsOptions {
        required,
        ca_file,
        client_cert,
        client_key,
    }
}
