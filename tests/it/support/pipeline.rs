//! Test harness for `sluice run` end to end: a manifest written for a fresh
//! database, slot, publication and stream, the `sluice` binary started as a
//! child process (its log kept in `support::log_dir`), and the waits and
//! signals the tests need around it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::nats::NatsServer;
use super::postgres::PgCluster;
use super::{wait_until, wait_until_blocking};

/// The plugin sections of the manifest: the mask transform hashing `email`,
/// then the JSON sink publishing to `cdc.<schema>.<table>`.
pub(crate) fn mask_then_json() -> String {
    format!(
        r#"
[[transform]]
name = "mask"
path = "{mask}"
config = {{ columns = {{ email = "hash" }} }}

[sink]
name = "json"
path = "{json}"
config = {{ subject-prefix = "cdc" }}
"#,
        mask = super::plugin_path("mask").display(),
        json = super::plugin_path("json-sink").display(),
    )
}

/// The plugin sections of the manifest: passthrough, then the JSON sink.
pub(crate) fn passthrough_then_json() -> String {
    format!(
        r#"
[[transform]]
name = "passthrough"
path = "{passthrough}"

[sink]
name = "json"
path = "{json}"
config = {{ subject-prefix = "cdc" }}
"#,
        passthrough = super::plugin_path("passthrough").display(),
        json = super::plugin_path("json-sink").display(),
    )
}

/// What a test may change in the manifest [`Pipeline::with`] writes.
#[derive(Debug, Clone)]
pub(crate) struct ManifestParts {
    /// `[[transform]]` and `[sink]` sections.
    pub(crate) plugins: String,
    /// Extra lines for the `[nats]` table.
    pub(crate) nats: String,
    /// `nats.url` as TOML, in place of the given server's URL (a cluster's
    /// list, say).
    pub(crate) nats_url: Option<String>,
    /// Extra lines for the `[position]` table.
    pub(crate) position: String,
    /// Extra lines for the `[source]` table.
    pub(crate) source: String,
    /// Further top-level tables (`[errors]`, say).
    pub(crate) extra: String,
}

impl Default for ManifestParts {
    fn default() -> Self {
        ManifestParts {
            plugins: mask_then_json(),
            nats: String::new(),
            nats_url: None,
            position: String::new(),
            source: String::new(),
            extra: String::new(),
        }
    }
}

/// One pipeline's database, slot, stream and manifest.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub(crate) db: String,
    pub(crate) slot: String,
    /// The JetStream stream: the pipeline's name in capitals.
    pub(crate) stream: String,
    pub(crate) manifest: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    /// A pipeline through the mask and the JSON sink, publishing `tables`.
    pub(crate) fn new(pg: &PgCluster, nats: &NatsServer, name: &str, tables: &[&str]) -> Pipeline {
        Pipeline::with(pg, nats, name, tables, ManifestParts::default())
    }

    /// A pipeline whose manifest has the given plugins and extra settings.
    pub(crate) fn with(
        pg: &PgCluster,
        nats: &NatsServer,
        name: &str,
        tables: &[&str],
        parts: ManifestParts,
    ) -> Pipeline {
        let db = pg.create_database(name);
        let slot = super::unique(&format!("slot_{name}"));
        let stream = name.to_uppercase();
        let dir = tempfile::tempdir().unwrap();
        let tables: Vec<String> = tables.iter().map(|t| format!("\"public.{t}\"")).collect();
        let manifest = format!(
            r#"
[source]
url = "{url}"
publication = "pub_{name}"
slot = "{slot}"
create-publication = [{tables}]
{source_extra}

[position]
{status_interval}
{position}

[nats]
url = {nats}
stream = "{stream}"
subjects = ["cdc.>"]
{nats_extra}

{plugins}

[pipeline]
shutdown-timeout = "10s"

{extra}
"#,
            url = pg.superuser_url(&db),
            nats = parts
                .nats_url
                .unwrap_or_else(|| format!("\"{}\"", nats.url())),
            tables = tables.join(", "),
            // Tests see confirmations quickly, unless one sets its own.
            status_interval = if parts.position.contains("status-interval") {
                ""
            } else {
                "status-interval = \"100ms\""
            },
            position = parts.position,
            nats_extra = parts.nats,
            plugins = parts.plugins,
            source_extra = parts.source,
            extra = parts.extra,
        );
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, manifest).unwrap();
        Pipeline {
            db,
            slot,
            stream,
            manifest: path,
            _dir: dir,
        }
    }

    /// `sluice run` on the manifest, with its compiled-plugin cache in
    /// `cache`, logging at info; stdout discarded.
    pub(crate) fn command(&self, cache: &Path) -> Command {
        let mut command = Command::new(sluice_binary());
        command
            .args(["run", self.manifest.to_str().unwrap()])
            .env("XDG_CACHE_HOME", cache)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null());
        command
    }

    /// Starts [`Self::command`]; its log goes to the test's stderr, and is
    /// kept in [`super::log_dir`] as `<stream>_<pid>.log`.
    pub(crate) fn start(&self, cache: &Path) -> Host {
        Host(spawn_logged(&mut self.command(cache), &self.stream))
    }

    /// The log [`Self::start`] keeps of `host`.
    pub(crate) fn log(&self, host: &Host) -> PathBuf {
        log_path(&self.stream, host.id())
    }

    /// Waits until the slot has its starting point and a walsender streams
    /// from it. (A slot being created is active before it has one, and a
    /// write committed then is not in it.)
    pub(crate) async fn wait_streaming(&self, pg: &PgCluster) {
        let q = format!(
            "SELECT count(*) FROM pg_replication_slots
             WHERE slot_name = '{}' AND active AND confirmed_flush_lsn IS NOT NULL",
            self.slot
        );
        wait_until(
            "the slot to be streamed",
            Duration::from_secs(60),
            || async { pg.psql(&self.db, &q).trim() == "1" },
        )
        .await;
    }

    /// Waits until no walsender streams from the slot.
    pub(crate) async fn wait_inactive(&self, pg: &PgCluster) {
        let q = format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND NOT active",
            self.slot
        );
        wait_until(
            "the slot to be released",
            Duration::from_secs(30),
            || async { pg.psql(&self.db, &q).trim() == "1" },
        )
        .await;
    }

    /// The slot's `confirmed_flush_lsn`, as PostgreSQL prints it.
    pub(crate) fn confirmed(&self, pg: &PgCluster) -> String {
        self.slot_column(pg, "confirmed_flush_lsn")
    }

    /// The process id of the walsender streaming from the slot (empty when
    /// none does).
    pub(crate) fn walsender_pid(&self, pg: &PgCluster) -> String {
        self.slot_column(pg, "active_pid")
    }

    fn slot_column(&self, pg: &PgCluster, column: &str) -> String {
        pg.psql(
            &self.db,
            &format!(
                "SELECT {column} FROM pg_replication_slots WHERE slot_name = '{}'",
                self.slot
            ),
        )
        .trim()
        .to_owned()
    }
}

/// A running `sluice run`, killed when the test ends (or fails) first, so
/// that a failed test leaves no host behind.
#[derive(Debug)]
pub(crate) struct Host(pub(crate) Child);

impl std::ops::Deref for Host {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `command` (a `sluice` process) with its stderr going to the
/// test's stderr and kept in [`super::log_dir`] as `<name>_<pid>.log`.
pub(crate) fn spawn_logged(command: &mut Command, name: &str) -> Child {
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice");
    let log = log_path(name, child.id());
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || copy_log(stderr, &log));
    child
}

/// Where [`spawn_logged`] keeps the log of process `pid` started as `name`.
fn log_path(name: &str, pid: u32) -> PathBuf {
    super::log_dir().join(format!("{name}_{pid}.log"))
}

/// Copies a child's stderr to the test's stderr and to the file `log` until
/// the child closes it.
fn copy_log(mut stderr: impl Read, log: &Path) {
    let mut file =
        std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
    let mut buf = [0u8; 8192];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = std::io::stderr().write_all(&buf[..n]);
        let _ = file.write_all(&buf[..n]);
    }
}

/// The `sluice` binary: cargo's, unless `SLUICE_BIN` names another one
/// (several worktrees sharing one `CARGO_TARGET_DIR` overwrite each other's
/// `target/debug/sluice`).
pub(crate) fn sluice_binary() -> PathBuf {
    std::env::var_os("SLUICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sluice")))
}

/// Sends `sig` (`-TERM`, `-KILL`…) to `child`.
pub(crate) fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for `child` to exit, or panics after `timeout`.
pub(crate) fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    wait_until_blocking("sluice to exit", timeout, || {
        child.try_wait().expect("the child's status")
    })
}

/// A field of `/proc/<pid>/status` in bytes (`VmHWM`, `VmRSS`…), while the
/// process runs.
pub(crate) fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line
        .trim()
        .strip_suffix("kB")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected {field} line: {line}"));
    kb * 1024
}

/// Parses PostgreSQL's `X/Y` LSN notation.
pub(crate) fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    let hi = u64::from_str_radix(hi, 16).unwrap_or_else(|_| panic!("not an LSN: {text:?}"));
    let lo = u64::from_str_radix(lo, 16).unwrap_or_else(|_| panic!("not an LSN: {text:?}"));
    (hi << 32) | lo
}
