//! No input crashes the host (issue 16): PostgreSQL client certificates
//! against a server that requires them, and the exact messages of the
//! `sluice` binary for inputs that used to crash it or blame the wrong
//! party (missing files with their cause once, out-of-range flags,
//! `plugin run --input` mistakes).

use std::path::Path;
use std::process::{Command, Output};

use crate::support::postgres::{ClusterOptions, PgCluster};
use crate::support::{plugin_path, unique};
use sluice_host::replication::{ConnInfo, ReplicationConnection, setup};

fn info(url: &str) -> ConnInfo {
    ConnInfo::parse_with_env(url, |_| None).expect("valid URL")
}

/// A CA, and a client certificate it signed for the role `user` (PostgreSQL
/// matches the certificate's common name against the role): (CA PEM,
/// certificate PEM, key PEM).
fn client_certificate(user: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, unique("sluice client CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, user);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// The error and its causes, each once, as the binary prints them.
fn line(e: &(dyn std::error::Error + 'static)) -> String {
    sluice_host::causes::line(e)
}

#[tokio::test]
async fn postgres_client_certificates_sslcert_sslkey_and_sslpassword() {
    let user = unique("certuser");
    let (ca, cert, key) = client_certificate(&user);
    let mut pg = PgCluster::start(ClusterOptions {
        client_ca: Some(ca),
        hba_first: vec![
            format!("hostssl all {user} 127.0.0.1/32 cert"),
            format!("hostssl replication {user} 127.0.0.1/32 cert"),
        ],
        ..ClusterOptions::default()
    });
    pg.psql("postgres", &format!("CREATE ROLE {user} LOGIN REPLICATION"));
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file, encrypted) = (
        dir.path().join("client.crt"),
        dir.path().join("client.key"),
        dir.path().join("client.enc.key"),
    );
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let converted = Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:s3cret",
        ])
        .arg("-in")
        .arg(&key_file)
        .arg("-out")
        .arg(&encrypted)
        .status()
        .expect("run openssl");
    assert!(converted.success());
    let url = |params: &str| {
        let query = match params {
            "" => "sslmode=require".to_owned(),
            _ => format!("sslmode=require&{params}"),
        };
        pg.url(&user, None, "postgres", &query)
    };
    let with_cert = format!(
        "sslcert={}&sslkey={}",
        cert_file.display(),
        key_file.display()
    );

    // Both connections present the certificate.
    let mut conn = ReplicationConnection::connect(&info(&url(&with_cert)))
        .await
        .unwrap_or_else(|e| panic!("replication connection: {}", line(&e)));
    conn.identify_system().await.unwrap();
    conn.close().await;
    setup::connect_sql(&info(&url(&with_cert)))
        .await
        .unwrap_or_else(|e| panic!("SQL connection: {}", line(&e)));

    // An encrypted key, with its password.
    let with_encrypted = |password: &str| {
        format!(
            "sslcert={}&sslkey={}{password}",
            cert_file.display(),
            encrypted.display()
        )
    };
    ReplicationConnection::connect(&info(&url(&with_encrypted("&sslpassword=s3cret"))))
        .await
        .unwrap_or_else(|e| panic!("encrypted key: {}", line(&e)))
        .close()
        .await;

    // Without the certificate, the server refuses; the refusal is quoted.
    let err = ReplicationConnection::connect(&info(&url("")))
        .await
        .unwrap_err();
    assert!(
        line(&err).contains("connection requires a valid client certificate"),
        "{}",
        line(&err)
    );

    // Each mistake names the file and the parameter at fault.
    let err = ReplicationConnection::connect(&info(&url(&with_encrypted(""))))
        .await
        .unwrap_err();
    assert_eq!(
        line(&err),
        format!(
            "the client key file {} (sslkey) is encrypted: give its password as sslpassword",
            encrypted.display()
        )
    );
    let err = ReplicationConnection::connect(&info(&url(&with_encrypted("&sslpassword=wrong"))))
        .await
        .unwrap_err();
    assert_eq!(
        line(&err),
        format!(
            "cannot decrypt the client key file {} (sslkey) with sslpassword: wrong password or an unsupported cipher",
            encrypted.display()
        )
    );
    assert!(
        !line(&err).contains("wrong\""),
        "the password is never quoted"
    );
    let err = ConnInfo::parse_with_env(&url(&format!("sslcert={}", cert_file.display())), |_| None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value for connection parameter `sslkey`: is required with sslcert"
    );
    let missing = dir.path().join("missing.key");
    let err = ReplicationConnection::connect(&info(&url(&format!(
        "sslcert={}&sslkey={}",
        cert_file.display(),
        missing.display()
    ))))
    .await
    .unwrap_err();
    assert_eq!(
        line(&err),
        format!(
            "cannot read the client key file {} (sslkey): No such file or directory (os error 2)",
            missing.display()
        )
    );
    pg.stop();
}

fn sluice(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env("SLUICE_LOG", "warn")
        .args(args)
        .output()
        .expect("run sluice");
    crate::support::keep_log("inputs", &out.stderr);
    out
}

/// The exit code 1 and the whole of stderr.
fn failure(args: &[&str]) -> String {
    let out = sluice(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "sluice {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.trim_end().to_owned()
}

/// Issue 16's example printed `No such file or directory (os error 2)`
/// twice or three times: every command prints each cause once.
#[test]
fn a_missing_file_is_reported_with_its_cause_once() {
    let missing = "/nonexistent/sluice.toml";
    for command in ["check", "run", "tail"] {
        assert_eq!(
            failure(&[command, missing]),
            format!(
                "error: cannot read manifest {missing}: No such file or directory (os error 2)"
            ),
            "sluice {command}"
        );
    }
    assert_eq!(
        failure(&["plugin", "run", "--input", "/nonexistent/batches.json"]),
        "error: cannot read /nonexistent/batches.json: No such file or directory (os error 2)"
    );
    let stderr = failure(&["plugin", "inspect", "/nonexistent/p.wasm"]);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn plugin_run_flags_outside_their_range_are_refused() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events.json");
    let input = input.to_str().unwrap();
    for (flag, value, expected) in [
        (
            "--deadline-ms",
            "0",
            "error: --deadline-ms 0 is out of range: use 1 to 3600000",
        ),
        (
            "--deadline-ms",
            "18446744073709551615",
            "error: --deadline-ms 18446744073709551615 is out of range: use 1 to 3600000",
        ),
        (
            "--memory-mib",
            "0",
            "error: --memory-mib 0 is out of range: use 1 to 4096",
        ),
        (
            "--memory-mib",
            "4097",
            "error: --memory-mib 4097 is out of range: use 1 to 4096",
        ),
    ] {
        assert_eq!(
            failure(&["plugin", "run", "--input", input, flag, value]),
            expected
        );
    }
}

/// A mistake in `--input` is the input's: the message names the input,
/// the batch, the event and the column, and no plugin.
#[test]
fn plugin_run_blames_the_input_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let row = |value: &str, type_oid: u32, type_name: &str, relation: u32| {
        format!(
            r#"{{"xid":1,"commit-lsn":"0/20","commit-time":0,
            "relations":[{{"oid":1,"schema":"public","name":"t","columns":[
              {{"name":"c","type-oid":{type_oid},"type-name":"{type_name}"}}]}}],
            "events":[{{"row":{{"op":"insert","relation":{relation},"lsn":"0/18","new":[{value}]}}}}]}}"#
        )
    };
    let mask = plugin_path("mask");
    let mask = mask.to_str().unwrap();
    for (name, text, expected) in [
        (
            "relation.json",
            row(r#"{"int":1}"#, 23, "int4", 2),
            "batch 0: event 0 refers to relation 2, but the batch has 1 relations",
        ),
        (
            "uuid.json",
            row(r#"{"uuid":"not-a-uuid"}"#, 2950, "uuid", 0),
            "batch 0: event 0: new value of column c: `not-a-uuid` is not a UUID such as `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`",
        ),
        (
            "numeric.json",
            row(r#"{"numeric":"12abc"}"#, 1700, "numeric", 0),
            "batch 0: event 0: new value of column c: `12abc` is not a decimal number such as `-12.340`, `NaN`, `Infinity` or `-Infinity`",
        ),
        (
            "lsn.json",
            row(r#"{"int":1}"#, 23, "int4", 0).replace(r#""lsn":"0/18""#, r#""lsn":24"#),
            "batch 0: event 0: lsn is a JSON number; write LSNs as text like \"0/16B3600\"",
        ),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let file = file.to_str().unwrap();
        assert_eq!(
            failure(&[
                "plugin",
                "run",
                "--transform",
                mask,
                "--config",
                r#"mask={"columns":{"c":"redact"}}"#,
                "--input",
                file,
            ]),
            format!("error: input {file}: {expected}")
        );
    }
}

/// `sluice check MANIFEST` with its plugin cache in `cache`: exit code,
/// stdout and stderr (kept in the test logs).
fn sluice_check(manifest: &Path, cache: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg(manifest)
        .env("XDG_CACHE_HOME", cache)
        .env("SLUICE_LOG", "warn")
        .output()
        .unwrap();
    crate::support::keep_log("check", &out.stderr);
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `sluice check` runs a synthetic row of each published table (its real
/// columns and types) through the chain: a sink publishing outside
/// `[nats] subjects` is found before any row flows, for every table; and
/// every broken plugin is reported, not only the first.
#[tokio::test]
async fn check_runs_the_chain_and_reports_every_problem() {
    use crate::support::nats::NatsServer;
    use crate::support::pipeline::{ManifestParts, Pipeline};
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let check = |p: &Pipeline| sluice_check(&p.manifest, cache.path());
    let plugins = |mask_config: &str, prefix: &str| {
        format!(
            "[[transform]]\nname = \"mask\"\npath = \"{}\"\nconfig = {mask_config}\n\n\
             [sink]\nname = \"json\"\npath = \"{}\"\nconfig = {{ subject-prefix = \"{prefix}\" }}\n",
            plugin_path("mask").display(),
            plugin_path("json-sink").display(),
        )
    };
    let pipeline = |name: &str, plugins: String| {
        let p = Pipeline::with(
            pg,
            &nats,
            name,
            &["accounts", "events"],
            ManifestParts {
                plugins,
                ..ManifestParts::default()
            },
        );
        pg.psql(
            &p.db,
            &format!(
                "CREATE TABLE accounts (id uuid PRIMARY KEY, email text, balance numeric(12,2), opened date);
                 CREATE TABLE events (id bigint PRIMARY KEY, body jsonb, at timestamptz, tags text[]);
                 CREATE PUBLICATION pub_{name} FOR TABLE accounts, events;"
            ),
        );
        p
    };

    let good = pipeline(
        "chk_good",
        plugins("{ columns = { email = \"hash\" } }", "cdc"),
    );
    let (code, stdout, stderr) = check(&good);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("plugin chain: a synthetic row of each of 2 published tables passed every plugin, subjects within cdc.>"),
        "{stdout}"
    );

    let outside = pipeline(
        "chk_outside",
        plugins("{ columns = { email = \"hash\" } }", "audit"),
    );
    let (code, _, stderr) = check(&outside);
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr.trim_end(),
        "error: 2 plugin chain problems:\n  \
         - sink \"json\" made a message for public.accounts outside nats.subjects: subject `audit.public.accounts` is not allowed: this pipeline may publish only to `cdc.>`\n  \
         - sink \"json\" made a message for public.events outside nats.subjects: subject `audit.public.events` is not allowed: this pipeline may publish only to `cdc.>`"
    );

    let broken = pipeline(
        "chk_broken",
        plugins("{ }", "cdc").replace("subject-prefix = \"cdc\"", "subject-prefix = 7"),
    );
    let (code, _, stderr) = check(&broken);
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr.trim_end(),
        "error: 2 plugin problems:\n  \
         - transform[0]: plugin \"mask\" rejected its configuration: config: missing field `columns`\n  \
         - sink: plugin \"json\" rejected its configuration: config key `subject-prefix`: invalid type: integer `7`, expected a string"
    );
}

/// On PostgreSQL 15 and later, `sluice check`'s synthetic row carries only
/// the columns a publication's column list publishes (as the stream will):
/// a transform that fails on an unpublished column passes, and fails once
/// the column is published. A row filter is named as not applied.
#[tokio::test]
async fn check_gives_the_chain_only_the_published_columns() {
    use crate::support::nats::NatsServer;
    use crate::support::pipeline::{ManifestParts, Pipeline};
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let plugins = format!(
        "[[transform]]\nname = \"picky\"\npath = \"{}\"\n\
         config = {{ fail-on = {{ column = \"secret\", equals = \"sluice check\" }} }}\n\n\
         [sink]\nname = \"json\"\npath = \"{}\"\nconfig = {{ subject-prefix = \"cdc\" }}\n",
        plugin_path("misbehave").display(),
        plugin_path("json-sink").display(),
    );
    // The chain's lines of `sluice check` on a publication of `tables`.
    let check = |name: &str, tables: &str| {
        let p = Pipeline::with(
            pg,
            &nats,
            name,
            &["accounts", "events"],
            ManifestParts {
                plugins: plugins.clone(),
                ..ManifestParts::default()
            },
        );
        pg.psql(
            &p.db,
            &format!(
                "CREATE TABLE accounts (id int PRIMARY KEY, email text, secret text);
                 CREATE TABLE events (id bigint PRIMARY KEY, note text);
                 CREATE PUBLICATION pub_{name} FOR TABLE {tables};"
            ),
        );
        let (code, stdout, stderr) = sluice_check(&p.manifest, cache.path());
        let chain: Vec<String> = stdout
            .lines()
            .filter(|l| l.starts_with("plugin chain:"))
            .map(str::to_owned)
            .collect();
        (code, chain, stderr)
    };

    let (code, chain, stderr) = check(
        "chk_columns",
        "accounts (id, email), events WHERE (id > 10)",
    );
    assert_eq!(code, Some(0), "{chain:?}\n{stderr}");
    assert_eq!(
        chain,
        [
            "plugin chain: public.accounts: the publication's column list publishes only id, email; the synthetic row has just these",
            "plugin chain: public.events: the publication's row filter WHERE (id > 10) was not applied; the synthetic row may be one it keeps out of the stream",
            "plugin chain: a synthetic row of each of 2 published tables passed every plugin, subjects within cdc.>",
        ]
    );

    let (code, chain, stderr) = check("chk_all_columns", "accounts, events");
    assert_eq!(code, Some(1));
    assert_eq!(chain, Vec::<String>::new());
    assert_eq!(
        stderr.trim_end(),
        "error: 1 plugin chain problem:\n  \
         - transform \"picky\" failed on a row of public.accounts: \
         plugin \"picky\" could not process event 0: misbehave: told to fail on secret = \"sluice check\""
    );
}

/// The manifest's settings at the bounds of their ranges (`config::ranges`):
/// `sluice run` starts and streams a row at the low bounds and at the high
/// ones, and stops cleanly on SIGTERM; its log never says `panicked`.
#[tokio::test]
async fn run_starts_and_streams_with_every_setting_at_its_bounds() {
    use crate::support::nats::{NatsServer, stream_len};
    use crate::support::pipeline::{
        ManifestParts, Pipeline, passthrough_then_json, signal, wait_exit,
    };
    use crate::support::{poll_until, wait_until};
    use std::time::Duration;
    let pg = PgCluster::shared();
    // Replicas stay 1 (one nats-server); every other bound is tried.
    let low = ManifestParts {
        plugins: passthrough_then_json(),
        position: "status-interval = \"10ms\"\n[position.heartbeat]\ninterval = \"100ms\"".into(),
        nats: "duplicate-window = \"1s\"\nmax-in-flight = 1\nmax-in-flight-bytes = \"1KiB\"".into(),
        extra: "[batch]\nmax-events = 1\n[snapshot]\nchunk-rows = 1\nparallel-tables = 1\n".into(),
        ..ManifestParts::default()
    };
    // A 1 ms deadline or a single unit of fuel may well fail the plugins'
    // first call: a definite error that stops the run, never a panic.
    let low_limits = ManifestParts {
        plugins: passthrough_then_json(),
        extra: "[limits]\nmemory = \"1MiB\"\ndeadline = \"1ms\"\nfuel = 1\n".into(),
        ..ManifestParts::default()
    };
    let high = ManifestParts {
        plugins: passthrough_then_json(),
        position: "status-interval = \"1h\"\n[position.heartbeat]\ninterval = \"1day\"".into(),
        nats: "duplicate-window = \"7days\"\nmax-in-flight = 65536\nmax-in-flight-bytes = \"1GiB\"".into(),
        extra: "[limits]\nmemory = \"4GiB\"\ndeadline = \"1h\"\nfuel = 9223372036854775807\n\
                [batch]\nmax-events = 65536\n[snapshot]\nchunk-rows = 1000000\nparallel-tables = 64\n"
            .into(),
        ..ManifestParts::default()
    };
    for (name, parts, must_stream) in [
        ("bounds_low", low, true),
        ("bounds_high", high, true),
        ("bounds_low_limits", low_limits, false),
    ] {
        // Each pipeline publishes to `cdc.>`: one server each.
        let nats = NatsServer::launch();
        let js = nats.jetstream().await;
        let p = Pipeline::with(pg, &nats, name, &["items"], parts);
        pg.psql(&p.db, "CREATE TABLE items (id bigint PRIMARY KEY, v text)");
        // The low manifest's shutdown-timeout is its lowest too.
        if name == "bounds_low" {
            let text = std::fs::read_to_string(&p.manifest).unwrap();
            std::fs::write(
                &p.manifest,
                text.replace("shutdown-timeout = \"10s\"", "shutdown-timeout = \"100ms\""),
            )
            .unwrap();
        }
        let cache = tempfile::tempdir().unwrap();
        let log = cache.path().join("sluice.log");
        let host = std::cell::RefCell::new(
            p.command(cache.path())
                .stderr(crate::support::kept_log_file("inputs", &log))
                .spawn()
                .unwrap(),
        );
        let exited = || host.borrow_mut().try_wait().unwrap().is_some();
        let streaming = poll_until(Duration::from_secs(60), || async {
            if exited() {
                return Some(false);
            }
            let q = format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active AND confirmed_flush_lsn IS NOT NULL",
                p.slot
            );
            (pg.psql(&p.db, &q).trim() == "1").then_some(true)
        })
        .await;
        let text = || std::fs::read_to_string(&log).unwrap_or_default();
        if must_stream {
            assert_eq!(
                streaming,
                Some(true),
                "{name}: sluice run did not stream:\n{}",
                text()
            );
        }
        if streaming == Some(true) {
            pg.psql(&p.db, "INSERT INTO items VALUES (1, 'x')");
            wait_until(
                format!("{name}: the row or an exit"),
                Duration::from_secs(60),
                || async { exited() || stream_len(&js, &p.stream).await >= 1 },
            )
            .await;
        }
        if !exited() {
            signal(&host.borrow(), "-TERM");
        }
        let status = wait_exit(&mut host.borrow_mut(), Duration::from_secs(60));
        let log = text();
        assert!(!log.contains("panicked"), "{name}:\n{log}");
        assert_ne!(status.code(), Some(101), "{name}:\n{log}");
        if must_stream {
            assert!(status.success(), "{name}:\n{log}");
            assert!(stream_len(&js, &p.stream).await >= 1, "{name}:\n{log}");
        }
    }
}
