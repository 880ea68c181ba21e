//! Test harness: real `nats-server` processes with JetStream, started by the tests.
//!
//! Each [`NatsServer`] runs `nats-server -js -sd <store> -p -1 -a 127.0.0.1` (plus a
//! generated config file when users, a token, NKeys, an operator (see `creds`) or TLS
//! are asked for), waits until the server accepts connections and greets with `INFO`
//! (the server opens its client port only after JetStream has started and recovered
//! its streams, so that means JetStream is ready), and kills it on drop.
//!
//! Ports: `-p -1` makes nats-server bind a port of the kernel's choosing itself, and
//! `--ports_file_dir` makes it write that port to `nats-server_<pid>.ports` in the
//! server's own directory, where [`NatsServer::start`] reads it. So no port is ever
//! chosen by the test and then bound by the server (no bind-release-rebind race
//! between tests running in parallel). [`NatsServer::stop`] and [`NatsServer::start`]
//! keep that port and the store directory, so a test can take NATS away mid-stream and
//! bring it back with its data at the address its clients know; that restart is the
//! one place a port is bound again, by the server that chose it.
//!
//! [`NatsCluster`] runs three such servers as one JetStream cluster on loopback. A
//! clustered server must be given its routes when it starts, so the cluster ports
//! are the exception to the rule above: they are picked unused by the test and bound
//! by the servers a moment later, and a launch that loses that race is tried again
//! with new ones. Each node keeps its ports and store across [`NatsServer::stop`] and
//! [`NatsServer::start`], so a test can kill one node and bring it back.
//!
//! [`read_stream`] reads every message of a stream back, with headers, by sequence.
//! [`TlsFiles`] generates a CA, a server certificate for `localhost`/`127.0.0.1` and a
//! client certificate with rcgen.
//!
//! The server's own log is in [`NatsServer::log`], and is printed when it fails to
//! start.
//!
//! Process control is blocking (it takes milliseconds); call it from a multi-threaded
//! tokio test (`#[tokio::test(flavor = "multi_thread")]`) when other tasks must keep
//! running meanwhile.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use tempfile::TempDir;

use super::{Lazy, wait_until_blocking, with_log};

/// The server binary; `NATS_SERVER` overrides it.
fn server_binary() -> PathBuf {
    std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a clustered stream may go without a leader: nats-server waits
/// 4–9 s before it campaigns, an election can take more than one round, and
/// the tests share two cores.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Authentication and TLS settings for a server.
#[derive(Debug, Default)]
pub(crate) struct NatsServerBuilder {
    users: Vec<(String, String)>,
    nkeys: Vec<String>,
    token: Option<String>,
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    verify_clients: bool,
    /// Operator mode: the configuration lines of [`super::creds::Operator`].
    operator: Option<String>,
    /// Membership of a JetStream cluster.
    cluster: Option<Member>,
}

/// What a clustered server is told at start: its name, its cluster's, the port
/// its routes listen on and every member's route port (its own included, which
/// the server recognises and skips).
#[derive(Debug, Clone)]
struct Member {
    server_name: String,
    cluster_name: String,
    route_port: u16,
    routes: Vec<u16>,
}

impl NatsServerBuilder {
    /// Allows `user` with `password`.
    pub(crate) fn user(mut self, user: &str, password: &str) -> Self {
        self.users.push((user.to_owned(), password.to_owned()));
        self
    }

    /// Allows the NKey user with public key `public_key` (`U…`).
    pub(crate) fn nkey(mut self, public_key: &str) -> Self {
        self.nkeys.push(public_key.to_owned());
        self
    }

    /// Requires `token` (cannot be combined with users).
    pub(crate) fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Serves TLS with the certificates of `files`.
    pub(crate) fn tls(mut self, files: &TlsFiles) -> Self {
        self.tls = Some((
            files.server_cert.clone(),
            files.server_key.clone(),
            files.ca.clone(),
        ));
        self
    }

    /// Requires clients to present a certificate signed by the CA (mutual TLS).
    pub(crate) fn verify_clients(mut self) -> Self {
        self.verify_clients = true;
        self
    }

    /// Operator (JWT) mode: only users of `operator`'s account, with a `.creds`
    /// file, may connect (cannot be combined with users, NKeys or a token).
    pub(crate) fn operator(mut self, operator: &super::creds::Operator) -> Self {
        self.operator = Some(operator.server_config());
        self
    }

    /// Starts the server and waits until it accepts connections.
    pub(crate) fn launch(self) -> NatsServer {
        self.try_launch()
            .unwrap_or_else(|log| panic!("nats-server exited during start-up; its log:\n{log}"))
    }

    /// [`Self::launch`], or the server's log if it exited during start-up.
    fn try_launch(self) -> Result<NatsServer, String> {
        let work = TempDir::new().expect("create a directory for nats-server");
        let store = TempDir::new().expect("create a JetStream store directory");
        let config = self.config_text().map(|text| {
            let path = work.path().join("nats.conf");
            std::fs::write(&path, text).expect("write nats-server config");
            path
        });
        let mut server = NatsServer {
            port: None,
            work,
            store,
            config,
            tls: self.tls.is_some(),
            cluster: self.cluster,
            child: None,
        };
        server.try_start()?;
        Ok(server)
    }

    fn config_text(&self) -> Option<String> {
        let mut out = String::new();
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        if !self.users.is_empty() || !self.nkeys.is_empty() {
            out.push_str("authorization {\n  users = [\n");
            for (user, password) in &self.users {
                out.push_str(&format!(
                    "    {{ user: {}, password: {} }}\n",
                    quote(user),
                    quote(password)
                ));
            }
            for key in &self.nkeys {
                out.push_str(&format!("    {{ nkey: {} }}\n", quote(key)));
            }
            out.push_str("  ]\n}\n");
        } else if let Some(token) = &self.token {
            out.push_str(&format!("authorization {{ token: {} }}\n", quote(token)));
        }
        if let Some(operator) = &self.operator {
            out.push_str(operator);
        }
        if let Some((cert, key, ca)) = &self.tls {
            out.push_str(&format!(
                "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {}\n  timeout: 5\n}}\n",
                quote(&cert.to_string_lossy()),
                quote(&key.to_string_lossy()),
                quote(&ca.to_string_lossy()),
                self.verify_clients
            ));
        }
        (!out.is_empty()).then_some(out)
    }
}

/// A running (or stopped) nats-server with JetStream.
#[derive(Debug)]
pub(crate) struct NatsServer {
    /// The client port the server chose on its first start.
    port: Option<u16>,
    work: TempDir,
    store: TempDir,
    config: Option<PathBuf>,
    tls: bool,
    cluster: Option<Member>,
    child: Option<Child>,
}

impl NatsServer {
    /// A server without authentication or TLS.
    pub(crate) fn launch() -> NatsServer {
        NatsServerBuilder::default().launch()
    }

    /// A server with authentication and/or TLS.
    pub(crate) fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// `nats://127.0.0.1:<port>`, or `tls://…` when the server serves TLS.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port())
    }

    /// `nats://localhost:<port>` (or `tls://`): for TLS, whose certificate names
    /// `localhost` as well as `127.0.0.1`.
    pub(crate) fn url_localhost(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://localhost:{}", self.port())
    }

    pub(crate) fn port(&self) -> u16 {
        self.port.expect("the server has started once")
    }

    /// Kills the server (SIGKILL: no lame-duck mode, no goodbye to clients) and waits
    /// for it to exit. Does nothing if it is stopped.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server and waits until it accepts connections: on a port of its
    /// choosing the first time, on that same port and store directory after
    /// [`Self::stop`]. Does nothing if it is running.
    pub(crate) fn start(&mut self) {
        if let Err(log) = self.try_start() {
            panic!("nats-server exited during start-up; its log:\n{log}");
        }
    }

    /// [`Self::start`], or the server's log if it exited during start-up.
    fn try_start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        let port = self.port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut command = Command::new(server_binary());
        command
            .arg("-js")
            .arg("-sd")
            .arg(self.store.path())
            .arg("-p")
            .arg(port)
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-l")
            .arg(self.log_path())
            .arg("--ports_file_dir")
            .arg(self.work.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        if let Some(member) = &self.cluster {
            let routes: Vec<String> = member
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            command
                .args(["-n", &member.server_name])
                .args(["--cluster_name", &member.cluster_name])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", member.route_port))
                .arg("--routes")
                .arg(routes.join(","));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", server_binary().display()));
        let pid = child.id();
        self.child = Some(child);
        if self.port.is_none() {
            let log = self.log_path();
            let port = wait_until_blocking(
                with_log("nats-server to write its ports file", &log),
                START_TIMEOUT,
                || {
                    if self.exited() {
                        return Some(Err(()));
                    }
                    chosen_port(self.work.path(), pid).map(Ok)
                },
            );
            self.port = Some(port.map_err(|()| self.log())?);
        }
        let (log, port) = (self.log_path(), self.port());
        let greeted = wait_until_blocking(
            with_log(&format!("nats-server to greet on port {port}"), &log),
            START_TIMEOUT,
            || {
                if self.exited() {
                    return Some(false);
                }
                greets(port).then_some(true)
            },
        );
        if greeted { Ok(()) } else { Err(self.log()) }
    }

    /// Whether the server has exited (during start-up).
    fn exited(&mut self) -> bool {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(_)) = child.try_wait()
        {
            self.child = None;
            return true;
        }
        false
    }

    /// The server's log so far (all runs).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.work.path().join("nats.log")
    }

    /// A plain client (no credentials), failing the test if it cannot connect.
    pub(crate) async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// A JetStream context on a plain client.
    pub(crate) async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three nats-servers forming one JetStream cluster on loopback, each with its own
/// store. Stopped on drop.
#[derive(Debug)]
pub(crate) struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the three nodes and waits until JetStream has a metadata leader.
    pub(crate) async fn launch() -> NatsCluster {
        const ATTEMPTS: usize = 3;
        let mut logs = Vec::new();
        for _ in 0..ATTEMPTS {
            // The route ports are picked before the servers bind them; a
            // node that loses one to another process exits, and the whole
            // cluster is started again with new ones.
            let ports: Vec<u16> = (0..3).map(|_| super::postgres::unused_port()).collect();
            let cluster_name = super::unique("cluster");
            let mut nodes = Vec::new();
            for (i, &route_port) in ports.iter().enumerate() {
                let builder = NatsServerBuilder {
                    cluster: Some(Member {
                        server_name: format!("n{i}"),
                        cluster_name: cluster_name.clone(),
                        route_port,
                        routes: ports.clone(),
                    }),
                    ..NatsServerBuilder::default()
                };
                match builder.try_launch() {
                    Ok(node) => nodes.push(node),
                    Err(log) => {
                        logs.push(log);
                        break;
                    }
                }
            }
            if nodes.len() == ports.len() {
                let cluster = NatsCluster { nodes };
                cluster.wait_ready().await;
                return cluster;
            }
        }
        panic!(
            "a NATS cluster did not start in {ATTEMPTS} attempts; the logs of the nodes that exited:\n{}",
            logs.join("\n---\n")
        );
    }

    /// Every node's client URL, as a manifest's `nats.url` list (TOML).
    pub(crate) fn url_list(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// Node `i`.
    pub(crate) fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// A JetStream context on a client that knows every node, so it works
    /// while any one of them is down.
    pub(crate) async fn jetstream(&self) -> jetstream::Context {
        let urls: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .map(|n| n.url().parse().expect("a node's URL"))
            .collect();
        let client = async_nats::connect(urls.as_slice())
            .await
            .unwrap_or_else(|e| panic!("connect to the cluster {urls:?}: {e}"));
        jetstream::new(client)
    }

    /// Waits until JetStream answers through every running node: the cluster
    /// has a metadata leader and each node has caught up with it.
    pub(crate) async fn wait_ready(&self) {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let client = node.client().await;
            super::wait_until(
                Lazy(|| {
                    format!(
                        "JetStream to answer on {}; its log:\n{}",
                        node.url(),
                        node.log()
                    )
                }),
                ELECTION_TIMEOUT,
                || async { api_answers(&client).await },
            )
            .await;
        }
    }

    /// The index of the node leading `stream` (JetStream names its leader by
    /// server name, `n<index>`), once it has one.
    pub(crate) async fn leader_of(&self, stream: &str) -> usize {
        let js = self.jetstream().await;
        super::wait_until(
            format!("stream {stream} to have a leader"),
            ELECTION_TIMEOUT,
            || async {
                let info: serde_json::Value = js
                    .request(format!("STREAM.INFO.{stream}"), &())
                    .await
                    .ok()?;
                let leader = info["cluster"]["leader"].as_str()?;
                leader.strip_prefix('n')?.parse::<usize>().ok()
            },
        )
        .await
    }
}

/// Whether the JetStream API answers `client` without an error (a cluster
/// without a metadata leader answers 503).
async fn api_answers(client: &async_nats::Client) -> bool {
    let Ok(Ok(reply)) = tokio::time::timeout(
        Duration::from_secs(2),
        client.request("$JS.API.INFO", "".into()),
    )
    .await
    else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&reply.payload)
        .map(|v| v.get("error").is_none())
        .unwrap_or(false)
}

/// Whether `port` answers with the server's `INFO` line.
fn greets(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO ")
}

/// The client port in the ports file that server `pid` wrote in `dir`
/// (`{"nats":["nats://127.0.0.1:<port>"]}`), once it has written it.
fn chosen_port(dir: &Path, pid: u32) -> Option<u16> {
    let suffix = format!("_{pid}.ports");
    let file = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))?;
    let text = std::fs::read_to_string(file.path()).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = ports["nats"][0].as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// Creates a stream capturing `subjects` with file storage (test helper).
pub(crate) async fn create_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &[&str],
) -> jetstream::stream::Stream {
    js.create_stream(jetstream::stream::Config {
        name: name.to_owned(),
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("create stream {name}: {e}"))
}

/// A message as stored in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredMessage {
    pub(crate) sequence: u64,
    pub(crate) subject: String,
    /// Headers sorted by name (multiple values of a name in order).
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) payload: Vec<u8>,
}

impl StoredMessage {
    /// The first value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Nats-Msg-Id` header.
    pub(crate) fn msg_id(&self) -> Option<&str> {
        self.header("Nats-Msg-Id")
    }
}

impl From<jetstream::message::StreamMessage> for StoredMessage {
    fn from(m: jetstream::message::StreamMessage) -> Self {
        StoredMessage {
            sequence: m.sequence,
            subject: m.subject.to_string(),
            headers: sluice_host::publish::header_pairs(&m.headers),
            payload: m.payload.to_vec(),
        }
    }
}

/// Every message currently in `stream`, in sequence order, read one by one with the
/// stream's message-get API (which works without `allow_direct`). Deleted sequences
/// are skipped.
pub(crate) async fn read_stream(js: &jetstream::Context, stream: &str) -> Vec<StoredMessage> {
    let handle = js
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("look up stream {stream}: {e}"));
    let state = handle
        .get_info()
        .await
        .unwrap_or_else(|e| panic!("stream {stream} info: {e}"))
        .state;
    let mut out = Vec::with_capacity(state.messages as usize);
    if state.messages == 0 {
        return out;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        match handle.get_raw_message(sequence).await {
            Ok(message) => out.push(message.into()),
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
            Err(e) => panic!("read message {sequence} of stream {stream}: {e}"),
        }
    }
    out
}

/// Number of messages in `stream`.
pub(crate) async fn stream_len(js: &jetstream::Context, stream: &str) -> u64 {
    let handle = js.get_stream(stream).await.expect("look up stream");
    handle.get_info().await.expect("stream info").state.messages
}

/// Number of messages in `stream`, or `None` while JetStream does not
/// answer (a cluster's node is down, or electing a leader).
pub(crate) async fn try_stream_len(js: &jetstream::Context, stream: &str) -> Option<u64> {
    let handle = js.get_stream(stream).await.ok()?;
    Some(handle.get_info().await.ok()?.state.messages)
}

/// Certificates for a TLS test: a CA, a server certificate for `localhost` and
/// `127.0.0.1`, and a client certificate, all as PEM files in a temporary directory.
#[derive(Debug)]
pub(crate) struct TlsFiles {
    _dir: TempDir,
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
}

impl TlsFiles {
    pub(crate) fn generate() -> TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };

        let dir = TempDir::new().expect("create a directory for certificates");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write a PEM file");
            path
        };
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sluice test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let ca = write("ca.pem", ca_cert.pem());
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().expect("generate key");
            let mut params = CertificateParams::new(names).expect("certificate params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).expect("sign certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (cert, key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
        let server_cert = write("server.pem", cert);
        let server_key = write("server-key.pem", key);
        let (cert, key) = leaf(vec!["sluice-client".into()], "sluice-client");
        let client_cert = write("client.pem", cert);
        let client_key = write("client-key.pem", key);
        TlsFiles {
            _dir: dir,
            ca,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }
}
