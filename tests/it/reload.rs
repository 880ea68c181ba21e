//! Hot reload end to end: `sluice run` with a real PostgreSQL, nats-server
//! and components, while rows stream, the manifest's plugin configuration
//! and then the plugin file itself are replaced. What is asserted is what a
//! user sees: every row in the stream exactly once, each transaction
//! processed by one version, versions only moving forward, a corrupt file
//! refused with its error in the log while the old version keeps running, a
//! change to `[source]` refused, and SIGHUP reloading.

use crate::support::pipeline::{Host, ManifestParts, Pipeline, signal, wait_exit};
use crate::support::{Lazy, plugin_path, poll_until, wait_until, wait_until_blocking};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::nats::{NatsServer, read_stream, stream_len};
use crate::support::postgres::PgCluster;

const TRANSACTIONS: usize = 500;
const ROWS: usize = 100;

/// The host's stderr, captured to a file.
struct Log(PathBuf);

impl Log {
    fn text(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }

    /// Lines holding every one of `parts`.
    fn count(&self, parts: &[&str]) -> usize {
        self.text()
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    async fn wait(&self, parts: &[&str], n: usize) {
        let what = Lazy(|| format!("{n} log line(s) with {parts:?}; the log:\n{}", self.text()));
        wait_until(what, Duration::from_secs(60), || async {
            self.count(parts) >= n
        })
        .await;
    }
}

/// mask (hashing `email`) then the JSON sink, both from copies in `dir`
/// that the test replaces.
fn plugins_in(dir: &Path) -> String {
    format!(
        r#"
[[transform]]
name = "mask"
path = "{dir}/mask.wasm"
config = {{ columns = {{ email = "hash" }} }}

[sink]
name = "json"
path = "{dir}/json-sink.wasm"
config = {{ subject-prefix = "cdc" }}
"#,
        dir = dir.display(),
    )
}

/// Replaces `path`'s content in one step, as an editor or deploy tool does.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// How a message's email looks: which version of the chain made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Form {
    /// The first version: mask hashing (64 hex digits).
    Hashed,
    /// The manifest changed to redact.
    Redacted,
    /// mask.wasm replaced by passthrough: the address as written.
    Plain,
}

fn form(email: &str) -> Form {
    if email == "***" {
        Form::Redacted
    } else if email.ends_with("@example.com") {
        Form::Plain
    } else {
        assert_eq!(email.len(), 64, "unexpected email form {email}");
        Form::Hashed
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_are_swapped_between_transactions_without_losing_a_row() {
    let pg = PgCluster::shared();
    let nats = NatsServer::launch();
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["mask", "json-sink", "passthrough"] {
        std::fs::copy(plugin_path(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    let p = Pipeline::with(
        pg,
        &nats,
        "reload",
        &["items"],
        ManifestParts {
            plugins: plugins_in(dir.path()),
            ..ManifestParts::default()
        },
    );
    let db = p.db.clone();
    pg.psql(&db, "CREATE TABLE items (id int PRIMARY KEY, email text)");
    let original = std::fs::read_to_string(&p.manifest).unwrap();
    let write_manifest = |action: &str, publication: &str| {
        let text = original
            .replace(r#"email = "hash""#, &format!(r#"email = "{action}""#))
            .replace(
                r#"publication = "pub_reload""#,
                &format!(r#"publication = "{publication}""#),
            );
        replace(&p.manifest, text.as_bytes())
    };
    let log = Log(dir.path().join("stderr.log"));
    let mut host = p
        .command(cache.path())
        .env("NO_COLOR", "1")
        .stderr(crate::support::kept_log_file("reload", &log.0))
        .spawn()
        .map(Host)
        .expect("start sluice run");
    log.wait(&["watching the manifest and plugin files"], 1)
        .await;
    // The host watches its files before it creates the slot; a row written
    // before the slot has its starting point would not be in it.
    p.wait_streaming(pg).await;

    // The writer commits transactions up to `allowed`, which the test
    // raises step by step, so that rows are written under every version
    // and while every reload is under way.
    let allowed = Arc::new(AtomicUsize::new(150));
    let writer = {
        let (db, allowed) = (db.clone(), allowed.clone());
        std::thread::spawn(move || {
            for t in 0..TRANSACTIONS {
                wait_until_blocking(
                    "the test to allow more rows",
                    Duration::from_secs(120),
                    || t < allowed.load(Ordering::Acquire),
                );
                let values: Vec<String> = (0..ROWS)
                    .map(|i| {
                        let id = t * ROWS + i;
                        format!("({id}, 'u{id}@example.com')")
                    })
                    .collect();
                PgCluster::shared().psql(
                    &db,
                    &format!("INSERT INTO items VALUES {}", values.join(",")),
                );
            }
        })
    };
    let js = nats.jetstream().await;
    let len = || async { stream_len(&js, "RELOAD").await as usize };
    let long = Duration::from_secs(120);
    wait_until("hashed rows", long, || async { len().await >= 5_000 }).await;

    // 1. The plugin's configuration changes in the manifest.
    write_manifest("redact", "pub_reload");
    allowed.store(300, Ordering::Release);
    log.wait(&["reloaded plugin chain now in effect"], 1).await;

    // 2. A corrupt plugin file is refused; the redacting chain stays.
    let mut junk = vec![0u8; 4096];
    let mut x = 0x2545_f491_u32;
    for b in &mut junk {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    replace(&dir.path().join("mask.wasm"), &junk);
    let refused = [
        "reload failed; the running plugin chain stays in place",
        "plugin \"mask\" cannot be reloaded",
        "is not a WebAssembly file",
    ];
    log.wait(&refused, 1).await;
    let refused_at = len().await;
    allowed.store(400, Ordering::Release);
    wait_until("rows after the refusal", long, || async {
        len().await >= refused_at + 5_000
    })
    .await;
    let before_replacement = len().await;

    // 3. A half-written file (the first half of a component) is refused
    //    too; then the whole replacement lands and takes over.
    let passthrough = std::fs::read(dir.path().join("passthrough.wasm")).unwrap();
    replace(
        &dir.path().join("mask.wasm"),
        &passthrough[..passthrough.len() / 2],
    );
    log.wait(&["reload failed", "plugin \"mask\" cannot be reloaded"], 2)
        .await;
    replace(&dir.path().join("mask.wasm"), &passthrough);
    allowed.store(TRANSACTIONS, Ordering::Release);
    log.wait(&["reloaded plugin chain now in effect"], 2).await;
    writer.join().unwrap();
    let total = TRANSACTIONS * ROWS;
    if poll_until(long, || async { len().await >= total })
        .await
        .is_none()
    {
        {
            // Which rows are missing, and what the slot says of them.
            let stored: HashSet<i64> = read_stream(&js, "RELOAD")
                .await
                .iter()
                .filter_map(|m| {
                    let body: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
                    body["after"]["id"].as_i64()
                })
                .collect();
            let missing: Vec<i64> = (0..total as i64)
                .filter(|id| !stored.contains(id))
                .collect();
            let slot = pg.psql(
                &db,
                &format!(
                    "SELECT pg_current_wal_lsn() || ' confirmed ' || confirmed_flush_lsn
                     FROM pg_replication_slots WHERE slot_name = '{}'",
                    p.slot
                ),
            );
            panic!(
                "timed out waiting for every row: {} of {total}; missing ids {:?}{}; WAL {slot}\nthe log:\n{}",
                stored.len(),
                &missing[..missing.len().min(10)],
                if missing.len() > 10 { " …" } else { "" },
                log.text()
            );
        }
    }

    // 4. SIGHUP reloads even when no file changed.
    let ready = ["new plugin chain ready"];
    let ready_before = log.count(&ready);
    signal(&host.0, "-HUP");
    log.wait(&["SIGHUP received: reloading the plugin chain"], 1)
        .await;
    log.wait(&ready, ready_before + 1).await;

    // 5. A change to [source] needs a restart: refused, still running.
    write_manifest("hash", "pub_other");
    log.wait(&["reload failed", "changes to [source] need a restart"], 1)
        .await;
    assert!(host.0.try_wait().unwrap().is_none(), "sluice exited");

    signal(&host.0, "-TERM");
    let status = wait_exit(&mut host.0, Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", log.text());

    let messages = read_stream(&js, "RELOAD").await;
    assert_eq!(messages.len(), total, "no row lost or duplicated");
    let mut ids = Vec::with_capacity(total);
    let mut forms = Vec::with_capacity(total);
    let mut per_transaction: HashMap<String, Form> = HashMap::new();
    for m in &messages {
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        ids.push(body["after"]["id"].as_i64().unwrap());
        let f = form(body["after"]["email"].as_str().unwrap());
        forms.push(f);
        let commit = m.header("Sluice-Commit-Lsn").unwrap().to_owned();
        let first = *per_transaction.entry(commit).or_insert(f);
        assert_eq!(first, f, "one transaction went through two versions");
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..total as i64).collect::<Vec<_>>(), "every id once");
    // Versions only move forward: once a message shows the new form, every
    // later message does.
    assert!(forms.is_sorted(), "a message went back to an older version");
    for f in [Form::Hashed, Form::Redacted, Form::Plain] {
        assert!(forms.contains(&f), "no message made by {f:?}");
    }
    // Between the refusal of the corrupt file and the replacement, the
    // redacting version kept running.
    assert!(
        forms[refused_at..before_replacement]
            .iter()
            .all(|f| *f == Form::Redacted),
        "the refused file changed the output"
    );
    assert_eq!(forms.last(), Some(&Form::Plain));
    // Shown with `--nocapture`: what an operator sees.
    for line in log
        .text()
        .lines()
        .filter(|l| l.contains("pipeline::reload"))
    {
        println!("{line}");
    }
    assert_eq!(
        log.count(&["reload failed; the running plugin chain stays in place"]),
        3,
        "{}",
        log.text()
    );
}
