//! Test harness: real PostgreSQL 15 clusters, started by the tests.
//!
//! [`PgCluster::shared`] is one cluster per test binary (wal_level=logical,
//! TLS on), in which each test takes its own database with
//! [`PgCluster::create_database`]; [`PgCluster::start`] starts a private one
//! (e.g. with `wal_level=replica`), stopped on drop.
//!
//! PostgreSQL refuses to run as root, so initdb, postgres and psql run as
//! the `postgres` user (`runuser`) in a temporary directory that user owns,
//! on a free loopback port, with the Unix socket in that directory.
//!
//! No cluster outlives its test process: postgres runs under a small shell
//! watchdog whose standard input is a pipe held by the test process. When
//! the process exits, however it exits (statics are never dropped), the pipe
//! closes, and the watchdog stops postgres and deletes the directory.
//!
//! Authentication (pg_hba.conf): the superuser `postgres` is trusted; other
//! roles get the method of the group they belong to — create them with
//! [`PgCluster::create_user`].

#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How a test role authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
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
pub struct ClusterOptions {
    /// `logical` (default) or `replica` (for the negative test).
    pub wal_level: &'static str,
    /// Generate a CA and a server certificate for `localhost` and turn
    /// `ssl` on.
    pub tls: bool,
    /// Extra `postgresql.conf` lines.
    pub extra_conf: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            wal_level: "logical",
            tls: true,
            extra_conf: Vec::new(),
        }
    }
}

/// The TLS material of a cluster started with `tls: true`.
#[derive(Debug)]
pub struct TlsFiles {
    /// PEM of the CA that signed the server certificate.
    pub ca_cert: PathBuf,
    /// DNS names in the server certificate (`localhost` only: connecting by
    /// IP address fails `verify-full`, which tests use on purpose).
    pub server_names: Vec<String>,
}

/// A running PostgreSQL cluster.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    tls: Option<TlsFiles>,
    watchdog: Option<Child>,
    stdin: Option<ChildStdin>,
    /// Watchdogs of postmasters started by [`PgCluster::restart`], newest
    /// last; each stops its postmaster (but removes nothing) when its pipe
    /// closes.
    restarted: Vec<(Child, Option<ChildStdin>)>,
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

impl PgCluster {
    /// The cluster shared by every test in this binary (logical, TLS on).
    pub fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| PgCluster::start(ClusterOptions::default()))
    }

    /// Starts a new cluster; panics with the server log if it cannot.
    pub fn start(options: ClusterOptions) -> PgCluster {
        let (uid, gid) = (id("-u"), id("-g"));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sluice-pg-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create cluster dir");
        chown(&dir, Some(uid), Some(gid)).expect("chown cluster dir");
        let data = dir.join("data");

        run_as_postgres(
            Command::new(format!("{PG_BIN}/initdb"))
                .args(["-D", path_str(&data), "-U", "postgres", "--no-sync"])
                .args(["-E", "UTF8", "--locale=C", "-A", "trust"])
                .current_dir(&dir),
            "initdb",
        );

        let port = free_port();
        let mut conf = vec![
            format!("port = {port}"),
            "listen_addresses = '127.0.0.1'".into(),
            format!("unix_socket_directories = '{}'", dir.display()),
            format!("wal_level = {}", options.wal_level),
            "max_replication_slots = 20".into(),
            "max_wal_senders = 20".into(),
            "max_connections = 100".into(),
            "fsync = off".into(),
            "synchronous_commit = off".into(),
            "full_page_writes = off".into(),
            "shared_buffers = 32MB".into(),
            "wal_sender_timeout = 60s".into(),
            "log_min_messages = warning".into(),
        ];
        let tls = options.tls.then(|| {
            let files = write_tls_files(&data, uid, gid);
            conf.push("ssl = on".into());
            conf.push("ssl_cert_file = 'server.crt'".into());
            conf.push("ssl_key_file = 'server.key'".into());
            files
        });
        conf.extend(options.extra_conf.iter().cloned());
        // For chasing a server-side question without editing the tests,
        // e.g. SLUICE_TEST_PG_CONF="log_min_messages = debug1".
        if let Ok(extra) = std::env::var("SLUICE_TEST_PG_CONF") {
            conf.extend(extra.split(';').map(str::to_owned));
        }
        append(&data.join("postgresql.conf"), &conf.join("\n"));
        fs::write(data.join("pg_hba.conf"), hba()).expect("write pg_hba.conf");

        // The watchdog: postgres in the background, then wait for our end
        // of the pipe to close, then an immediate shutdown and clean-up.
        let log = dir.join("postgres.log");
        let script = format!(
            "{PG_BIN}/postgres -D '{}' </dev/null >>'{}' 2>&1 & pid=$!; \
             cat >/dev/null; kill -QUIT $pid 2>/dev/null; wait $pid; rm -rf '{}'",
            data.display(),
            log.display(),
            dir.display()
        );
        let mut watchdog = Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c", &script])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        let stdin = watchdog.stdin.take();
        let cluster = PgCluster {
            dir,
            port,
            tls,
            watchdog: Some(watchdog),
            stdin,
            restarted: Vec::new(),
        };
        cluster.wait_ready();
        for auth in [Auth::Trust, Auth::Password, Auth::Md5, Auth::ScramSha256] {
            cluster.psql("postgres", &format!("CREATE ROLE {} NOLOGIN", auth.group()));
        }
        cluster
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let ok = Command::new(format!("{PG_BIN}/pg_isready"))
                .args([
                    "-q",
                    "-h",
                    path_str(&self.dir),
                    "-p",
                    &self.port.to_string(),
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start within {STARTUP_TIMEOUT:?}; log:\n{}",
                fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the Unix socket `.s.PGSQL.<port>`.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// A URL for `user` (and `password`) on TCP 127.0.0.1; `params` is
    /// appended as the query string (e.g. `sslmode=disable`).
    pub fn url(&self, user: &str, password: Option<&str>, db: &str, params: &str) -> String {
        self.url_for_host("127.0.0.1", user, password, db, params)
    }

    /// As [`Self::url`], for a given host name.
    pub fn url_for_host(
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
    pub fn socket_url(&self, user: &str, password: Option<&str>, db: &str) -> String {
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
    pub fn superuser_url(&self, db: &str) -> String {
        self.url("postgres", None, db, "sslmode=disable")
    }

    /// Creates a fresh database named after `prefix` and returns its name.
    pub fn create_database(&self, prefix: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        name
    }

    /// Creates a login role with REPLICATION that authenticates with `auth`.
    /// The password is stored the way `auth` needs it.
    pub fn create_user(&self, name: &str, password: &str, auth: Auth) {
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
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/psql")])
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

    /// [`Self::psql`] off the async runtime's thread.
    pub async fn sql(&'static self, db: &str, sql: &str) -> String {
        let (db, sql) = (db.to_owned(), sql.to_owned());
        tokio::task::spawn_blocking(move || self.psql(&db, &sql))
            .await
            .expect("psql task")
    }

    /// Polls `query` (as superuser) until its output equals `expected`.
    pub fn wait_for(&self, db: &str, query: &str, expected: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.psql(db, query);
            if got == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{query}` returned `{got}`, still not `{expected}` after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Crashes the server: SIGKILL to the postmaster and every one of its
    /// children at once, as a power cut would (the data files keep what the
    /// OS cache holds, so nothing committed is lost even with `fsync = off`).
    /// Waits until they are all gone. [`Self::restart`] brings it back.
    pub fn crash(&self) {
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
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
        {
            assert!(
                Instant::now() < deadline,
                "postgres processes survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same directory and port (after
    /// [`Self::crash`]) and waits until it accepts connections, crash
    /// recovery done.
    pub fn restart(&mut self) {
        let log = self.dir.join("postgres.log");
        let script = format!(
            "{PG_BIN}/postgres -D '{}' </dev/null >>'{}' 2>&1 & pid=$!; \
             cat >/dev/null; kill -QUIT $pid 2>/dev/null; wait $pid",
            self.dir.join("data").display(),
            log.display(),
        );
        let mut watchdog = Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c", &script])
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        let stdin = watchdog.stdin.take();
        self.restarted.push((watchdog, stdin));
        self.wait_ready();
    }

    /// Stops the cluster now (immediate shutdown) and removes its files.
    pub fn stop(&mut self) {
        // Newer postmasters first: the first watchdog removes the directory.
        while let Some((mut child, stdin)) = self.restarted.pop() {
            drop(stdin);
            let _ = child.wait();
        }
        drop(self.stdin.take());
        if let Some(mut child) = self.watchdog.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
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
    TlsFiles {
        ca_cert,
        server_names: vec!["localhost".into()],
    }
}

/// Generates a self-signed CA and a server certificate for `names`:
/// (CA PEM, server certificate PEM, server key PEM).
pub fn generate_certs(names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("sluice test CA {}", COUNTER.fetch_add(1, Ordering::Relaxed)),
    );
    let ca = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("server params");
    let server = params.signed_by(&server_key, &issuer).expect("server cert");
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

fn run_as_postgres(cmd: &mut Command, what: &str) {
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

fn id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id postgres");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the `postgres` user exists")
}

/// A port nobody listens on now. (Another process could take it before
/// postgres binds it; on a test machine that is rare enough.)
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
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

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|s| s == "Z")
        })
        .unwrap_or(true)
}

fn append(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open conf");
    writeln!(f, "\n{text}").expect("append conf");
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Percent-encodes for a URL component.
pub fn encode(s: &str) -> String {
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
