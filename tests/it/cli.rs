//! The `sluice` binary's operator commands against a real PostgreSQL 15:
//! `sluice tail` as a child process (JSON lines on stdout, a clean stop on
//! SIGINT, the manifest's transforms applied), and `sluice slot` /
//! `sluice offset` on a manifest with a file offset store, asserting their
//! exact output and refusals.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::postgres::PgCluster;
use crate::support::{plugin_path, wait_until_blocking};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);

fn sluice() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.env("SLUICE_LOG", "warn");
    command
}

/// Runs `sluice ARGS` to completion (its stderr kept in the test logs).
fn run(args: &[&str]) -> Output {
    let out = sluice().args(args).output().expect("run sluice");
    crate::support::keep_log("cli", &out.stderr);
    out
}

fn stdout_of(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "sluice {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The error line of a failed `sluice ARGS`.
fn error_of(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap().trim_end().to_owned()
}

/// A database with `schema`, and its superuser URL.
fn database(pg: &PgCluster, prefix: &str, schema: &str) -> (String, String) {
    let db = pg.create_database(prefix);
    pg.psql(&db, schema);
    (db.clone(), pg.superuser_url(&db))
}

/// A running `sluice tail` whose stdout lines arrive on a channel.
struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Tail {
    fn start(args: &[&str]) -> Tail {
        let mut child = sluice()
            .arg("tail")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice tail");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Tail { child, lines }
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(_) => {
                let _ = self.child.kill();
                let out = self.child.wait_with_output_stderr();
                panic!("no line from sluice tail within {WAIT:?}; stderr: {out}");
            }
        }
    }

    /// Sends SIGINT and waits for the exit; returns status code and stderr.
    fn interrupt(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success());
        let child = &mut self.child;
        let status = wait_until_blocking("sluice tail to stop on SIGINT", WAIT, || {
            child.try_wait().expect("the child's status")
        });
        (status.code(), self.child.wait_with_output_stderr())
    }
}

/// A failed test leaves no `sluice tail` behind in the test process.
impl Drop for Tail {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

trait StderrText {
    fn wait_with_output_stderr(&mut self) -> String;
}

impl StderrText for Child {
    fn wait_with_output_stderr(&mut self) -> String {
        let _ = self.wait();
        let mut text = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
        }
        text
    }
}

/// Waits until `db` has a temporary slot with a position: only then does it
/// stream changes committed from now on.
fn wait_for_temporary_slot(pg: &PgCluster, db: &str) {
    pg.wait_for(
        db,
        &format!(
            "SELECT count(*) FROM pg_replication_slots \
             WHERE temporary AND database = '{db}' AND confirmed_flush_lsn IS NOT NULL"
        ),
        "1",
        WAIT,
    );
}

/// A line with the LSNs, xid and commit time (which vary) removed.
fn without_positions(line: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    for key in ["xid", "commit-lsn", "commit-time", "lsn"] {
        v.as_object_mut().unwrap().remove(key).expect(key);
    }
    v
}

#[test]
fn tail_with_a_url_prints_changes_and_stops_cleanly_on_sigint() {
    let pg = PgCluster::shared();
    let (db, url) = database(
        pg,
        "clitail",
        "CREATE TABLE t (id int PRIMARY KEY, name text);
         CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let mut tail = Tail::start(&["--url", &url, "--publication", "pub", "--from-start"]);
    wait_for_temporary_slot(pg, &db);
    pg.psql(&db, "INSERT INTO t VALUES (1, 'one'); DELETE FROM t;");
    let lines = [tail.line(), tail.line()];
    assert_eq!(
        lines.map(|l| without_positions(&l)),
        [
            serde_json::json!({"op":"insert","schema":"public","table":"t","new":{"id":{"int":1},"name":{"text":"one"}}}),
            serde_json::json!({"op":"delete","schema":"public","table":"t","old":{"id":{"int":1},"name":"null"}}),
        ]
    );
    let (code, stderr) = tail.interrupt();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    pg.wait_for(
        &db,
        &format!("SELECT count(*) FROM pg_replication_slots WHERE database = '{db}'"),
        "0",
        WAIT,
    );
}

/// A manifest for `url` with a file offset store and `transforms` (TOML).
fn manifest(dir: &Path, url: &str, slot: &str, transforms: &str) -> PathBuf {
    let text = format!(
        r#"
[source]
url = "{url}"
publication = "pub"
slot = "{slot}"
create-slot = false

[position]
store = "file"
store-path = "{offset}"

[nats]
url = "nats://127.0.0.1:4222"
stream = "CDC"
subjects = ["cdc.>"]

{transforms}

[sink]
name = "json"
path = "{sink}"
"#,
        offset = dir.join("offset.json").display(),
        sink = plugin_path("json-sink").display(),
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn tail_with_a_manifest_runs_its_transforms() {
    let pg = PgCluster::shared();
    let (db, url) = database(
        pg,
        "climask",
        "CREATE TABLE users (id int PRIMARY KEY, email text);
         CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let dir = tempfile::tempdir().unwrap();
    let transform = format!(
        "[[transform]]\nname = \"mask\"\npath = \"{}\"\nconfig = {{ columns = {{ email = \"hash\" }} }}",
        plugin_path("mask").display()
    );
    let file = manifest(dir.path(), &url, "unused_slot", &transform);
    let cache = dir.path().join("cache");
    let mut tail = Tail::start(&[
        file.to_str().unwrap(),
        "--from-start",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    wait_for_temporary_slot(pg, &db);
    pg.psql(&db, "INSERT INTO users VALUES (7, 'ada@example.com')");
    let hashed = format!("{:x}", Sha256::digest(b"ada@example.com"));
    assert_eq!(
        without_positions(&tail.line()),
        serde_json::json!({"op":"insert","schema":"public","table":"users","new":{"id":{"int":7},"email":{"text":hashed}}})
    );
    let (code, stderr) = tail.interrupt();
    assert_eq!(code, Some(0), "stderr: {stderr}");
}

#[test]
fn tail_stops_with_the_plugin_error_when_a_transform_fails() {
    let pg = PgCluster::shared();
    let (_db, url) = database(
        pg,
        "clibad",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let dir = tempfile::tempdir().unwrap();
    let transform = format!(
        "[[transform]]\nname = \"mask\"\npath = \"{}\"\nconfig = {{ columns = {{ email = \"scramble\" }} }}",
        plugin_path("mask").display()
    );
    let file = manifest(dir.path(), &url, "unused_slot", &transform);
    let cache = dir.path().join("cache");
    let out = run(&[
        "tail",
        file.to_str().unwrap(),
        "--from-start",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("scramble"), "{stderr}");
}

/// The value of the `key: value` line of `text`.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}:` line in:\n{text}"))
}

/// The start-up decisions `sluice slot status` prints.
fn decisions(status: &str) -> Vec<&str> {
    status
        .lines()
        .skip_while(|l| !l.starts_with("start-up would"))
        .skip(1)
        .collect()
}

#[test]
fn slot_and_offset_commands_show_move_and_refuse() {
    let pg = PgCluster::shared();
    let (db, url) = database(
        pg,
        "clislot",
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let slot = format!("cli_slot_{}", std::process::id());
    pg.psql(
        &db,
        &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = manifest(dir.path(), &url, &slot, "");
    let m = file.to_str().unwrap();
    let store = format!("offset file {}", dir.path().join("offset.json").display());

    // Nothing stored yet: every strategy starts at the slot.
    assert_eq!(
        stdout_of(&["offset", "show", m]),
        format!("store: {store}\noffset: none\n")
    );
    let s = pg.psql(
        &db,
        &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    );
    let status = stdout_of(&["slot", "status", m]);
    assert_eq!(field(&status, "slot"), slot);
    assert_eq!(field(&status, "plugin"), "pgoutput");
    assert_eq!(field(&status, "active"), "no");
    assert_eq!(field(&status, "confirmed_flush_lsn"), s);
    assert_eq!(field(&status, "wal_status"), "reserved");
    let retained = field(&status, "wal_retained");
    let bytes: u64 = retained.strip_suffix(" bytes").unwrap().parse().unwrap();
    assert!(bytes > 0, "{retained}");
    assert_eq!(field(&status, "offset"), "none");
    assert_eq!(
        decisions(&status),
        [
            format!("  no-validation (manifest): start at {s}"),
            format!("  trust-offset: start at {s}"),
            format!("  trust-slot: start at {s}"),
            format!("  trust-greater-lsn: start at {s}"),
        ]
    );

    // An offset ahead of the slot.
    // The shared cluster runs with synchronous_commit = off: make this commit
    // flush before reading the flush LSN, or it may still be the slot's.
    pg.psql(
        &db,
        "SET synchronous_commit = on; INSERT INTO t SELECT generate_series(1, 100)",
    );
    let o = pg.psql(&db, "SELECT pg_current_wal_flush_lsn()");
    assert_eq!(
        stdout_of(&["offset", "set", m, &o]),
        format!(
            "stored offset {o} for replication slot \"{slot}\" in {store} (no offset was stored)\n"
        )
    );
    let status = stdout_of(&["slot", "status", m]);
    assert_eq!(field(&status, "offset"), o);
    assert_eq!(
        decisions(&status),
        [
            format!("  no-validation (manifest): start at {o}"),
            format!("  trust-offset: advance the slot to {o}, then start at {o}"),
            format!("  trust-slot: start at {o}"),
            format!("  trust-greater-lsn: advance the slot to {o}, then start at {o}"),
        ]
    );

    // Neither the offset nor the slot moves backwards.
    assert_eq!(
        error_of(&["offset", "set", m, &s]),
        format!(
            "error: refusing to store offset {s} for slot \"{slot}\" in {store}: it holds {o}, and a stored offset never moves backwards; to move it back, run `sluice offset clear {m}` first, then set it again"
        )
    );
    assert_eq!(
        error_of(&["slot", "advance", m, "0/1"]),
        format!(
            "error: refusing to move replication slot \"{slot}\" backwards from {s} to 0/1: PostgreSQL can only advance a slot"
        )
    );
    assert_eq!(
        stdout_of(&["slot", "advance", m, &o]),
        format!("advanced replication slot \"{slot}\" from {s} to {o}\n")
    );
    assert_eq!(
        stdout_of(&["slot", "advance", m, &o]),
        format!("replication slot \"{slot}\" is already at {o}\n")
    );
    let status = stdout_of(&["slot", "status", m]);
    assert_eq!(field(&status, "confirmed_flush_lsn"), o);
    assert!(
        decisions(&status)
            .iter()
            .all(|d| d.ends_with(&format!(": start at {o}"))),
        "{status}"
    );

    // An active slot is neither advanced nor dropped.
    let tail = Tail::start(&[m]);
    let active = format!(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{slot}' AND active"
    );
    let pid = wait_until_blocking("tail to make the slot active", WAIT, || {
        let pid = pg.psql(&db, &active);
        (!pid.is_empty()).then_some(pid)
    });
    for action in ["drop", "advance"] {
        let mut args = vec!["slot", action, m];
        if action == "advance" {
            args.push("FFFF/0");
        }
        assert_eq!(
            error_of(&args),
            format!(
                "error: refusing to {action} replication slot \"{slot}\": it is active, read by the process with pid {pid}; stop that reader (a running pipeline or tail) first"
            )
        );
    }
    assert_eq!(
        field(&stdout_of(&["slot", "status", m]), "active"),
        format!("yes (pid {pid})")
    );
    let (code, stderr) = tail.interrupt();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    pg.wait_for(
        &db,
        &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        "f",
        WAIT,
    );

    // Dropping the slot while an offset is stored: start-up would refuse.
    assert_eq!(
        stdout_of(&["slot", "drop", m]),
        format!(
            "dropped replication slot \"{slot}\" (it was at {o})\nnote: {store} still holds offset {o}: the next start refuses to create a new slot over it; re-snapshot, or accept the gap with `sluice offset clear {m}`\n"
        )
    );
    let status = stdout_of(&["slot", "status", m]);
    assert_eq!(field(&status, "slot"), format!("{slot} (does not exist)"));
    let refusals = decisions(&status);
    assert_eq!(refusals.len(), 4);
    assert!(
        refusals[1].starts_with(&format!(
            "  trust-offset: refuse: refusing to start: replication slot \"{slot}\" does not exist, but {store} holds offset {o}"
        )),
        "{status}"
    );
    assert_eq!(
        error_of(&["slot", "drop", m]),
        format!("error: replication slot \"{slot}\" does not exist")
    );

    assert_eq!(
        stdout_of(&["offset", "clear", m]),
        format!("cleared offset {o} for replication slot \"{slot}\" from {store}\n")
    );
    assert_eq!(
        stdout_of(&["offset", "clear", m]),
        format!("{store} holds no offset: nothing to clear\n")
    );
    let status = stdout_of(&["slot", "status", m]);
    assert_eq!(
        decisions(&status)[0],
        format!(
            "  no-validation (manifest): refuse: replication slot \"{slot}\" does not exist and source.create-slot = false: create it with `SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');`, or set source.create-slot = true"
        )
    );
}
