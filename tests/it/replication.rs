//! Replication client tests against a real PostgreSQL 15 started by the
//! harness: connection and authentication (trust, cleartext, md5, SCRAM),
//! TLS modes, Unix sockets, slots, the CopyBoth stream, the flush hook,
//! setup checks and connection loss.

use std::error::Error;
use std::time::Duration;

use crate::support::postgres::{Auth, ClusterOptions, PgCluster, generate_certs};
use crate::support::unique;
use sluice_host::lsn::Lsn;
use sluice_host::replication::setup::{self, PublicationScope, SetupError, SetupSpec, TableName};
use sluice_host::replication::{
    ConnInfo, CreateSlotOptions, PgOutputOptions, ReplicationConnection, ReplicationError,
    ReplicationEvent, ReplicationStream, SlotName, SnapshotAction, StreamOptions,
};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);

fn info(url: &str) -> ConnInfo {
    ConnInfo::parse_with_env(url, |_| None).expect("valid URL")
}

/// The error and all its causes, as a user sees them with `{:#}`.
fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

async fn connect(url: &str) -> ReplicationConnection {
    ReplicationConnection::connect(&info(url))
        .await
        .unwrap_or_else(|e| panic!("connect: {}", chain(&e)))
}

/// `server_version_num`, which tests branch on where behaviour differs by
/// version, agrees with the version the server shows (`15.4 (Debian …)`).
#[test]
fn the_harness_reads_the_server_version() {
    let pg = PgCluster::shared();
    let num = pg.server_version_num();
    let shown = pg.psql("postgres", "SHOW server_version");
    let major: u32 = shown
        .split(['.', ' '])
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("server_version `{shown}`"));
    assert_eq!(num / 10_000, major, "server_version `{shown}`");
    assert!(
        num >= 150_000,
        "Sluice needs PostgreSQL 15 or newer: {shown}"
    );
}

#[tokio::test]
async fn every_password_method_connects_and_identifies_the_system() {
    let pg = PgCluster::shared();
    let db = pg.create_database("auth");
    let system_id = pg.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    );
    for (auth, password) in [
        (Auth::Trust, None),
        (Auth::Password, Some("clear pass")),
        (Auth::Md5, Some("md5 p@ss:/?")),
        (Auth::ScramSha256, Some("scram 'pass'")),
    ] {
        let user = unique(&format!("{auth:?}").to_lowercase());
        pg.create_user(&user, password.unwrap_or("unused"), auth);
        for sslmode in ["disable", "require"] {
            let url = pg.url(&user, password, &db, &format!("sslmode={sslmode}"));
            let mut conn = connect(&url).await;
            let id = conn.identify_system().await.unwrap();
            assert_eq!(id.system_id.to_string(), system_id, "{auth:?}");
            assert_eq!(id.timeline, 1);
            assert_eq!(id.dbname.as_deref(), Some(db.as_str()));
            assert!(id.xlogpos > Lsn::ZERO);
            let ssl = pg.psql(
                "postgres",
                &format!(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = {}",
                    conn.backend_pid()
                ),
            );
            assert_eq!(ssl, if sslmode == "require" { "t" } else { "f" });
            conn.close().await;
        }
    }
}

#[tokio::test]
async fn scram_over_tls_binds_the_channel() {
    let pg = PgCluster::shared();
    let db = pg.create_database("plus");
    let user = unique("plus");
    pg.create_user(&user, "secret", Auth::ScramSha256);
    // PostgreSQL offers SCRAM-SHA-256-PLUS over TLS; the client picks it
    // (the rcgen certificate is ECDSA P-256 with SHA-256, a defined hash).
    // A wrong binding would fail authentication, so success is the proof.
    let url = pg.url(&user, Some("secret"), &db, "sslmode=require");
    let mut conn = connect(&url).await;
    conn.identify_system().await.unwrap();
    conn.close().await;
    // The SQL connection binds too.
    let client = setup::connect_sql(&info(&url)).await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_that_hides_the_password() {
    let pg = PgCluster::shared();
    let db = pg.create_database("wrongpw");
    for auth in [Auth::Md5, Auth::ScramSha256, Auth::Password] {
        let user = unique("wrongpw");
        pg.create_user(&user, "right-password", auth);
        let secret = "Wr0ng-Secret-Value";
        let url = pg.url(&user, Some(secret), &db, "sslmode=disable");
        let err = ReplicationConnection::connect(&info(&url))
            .await
            .unwrap_err();
        let text = chain(&err);
        assert_eq!(
            text,
            format!(
                "connecting to 127.0.0.1:{} as user \"{user}\": FATAL: password authentication failed for user \"{user}\" (SQLSTATE 28P01)",
                pg.port()
            )
        );
        assert!(!format!("{err:?}").contains(secret));
        assert!(!err.is_transient());
        assert_eq!(err.server_error().unwrap().code, "28P01");

        let err = setup::connect_sql(&info(&url)).await.unwrap_err();
        let text = chain(&err);
        assert!(
            text.starts_with(&format!(
                "cannot connect to PostgreSQL at 127.0.0.1:{}: FATAL: password authentication failed for user \"{user}\" (SQLSTATE 28P01)",
                pg.port()
            )),
            "{text}"
        );
        assert!(!text.contains(secret) && !format!("{err:?}").contains(secret));
    }
}

#[tokio::test]
async fn missing_password_says_where_to_put_it_and_pgpassword_works() {
    let pg = PgCluster::shared();
    let db = pg.create_database("pgpass");
    let user = unique("pgpass");
    pg.create_user(&user, "from-env", Auth::ScramSha256);
    let url = pg.url(&user, None, &db, "sslmode=disable");
    let err = ReplicationConnection::connect(&info(&url))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the server asks for a password for user \"{user}\", but none was given: put it in the connection URL or in PGPASSWORD"
        )
    );
    let with_env =
        ConnInfo::parse_with_env(&url, |k| (k == "PGPASSWORD").then(|| "from-env".into())).unwrap();
    let mut conn = ReplicationConnection::connect(&with_env).await.unwrap();
    conn.identify_system().await.unwrap();
    conn.close().await;
}

#[tokio::test]
async fn tls_verification_modes() {
    let pg = PgCluster::shared();
    let db = pg.create_database("tls");
    let user = unique("tls");
    pg.create_user(&user, "pw", Auth::ScramSha256);
    let ca = pg
        .tls()
        .expect("shared cluster has TLS")
        .ca_cert
        .display()
        .to_string();

    // verify-full against the name in the certificate.
    let url = pg.url_for_host(
        "localhost",
        &user,
        Some("pw"),
        &db,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let mut conn = connect(&url).await;
    conn.identify_system().await.unwrap();
    conn.close().await;
    setup::connect_sql(&info(&url))
        .await
        .expect("SQL connection with verify-full");

    // verify-full by IP address: the certificate names only `localhost`.
    let url = pg.url(
        &user,
        Some("pw"),
        &db,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let err = ReplicationConnection::connect(&info(&url))
        .await
        .unwrap_err();
    let text = chain(&err);
    assert!(
        text.starts_with(&format!("TLS handshake with 127.0.0.1:{} failed: invalid peer certificate: certificate not valid for name \"127.0.0.1\"", pg.port())),
        "{text}"
    );
    assert!(
        !err.is_transient(),
        "a certificate mismatch will not go away"
    );
    assert!(setup::connect_sql(&info(&url)).await.is_err());

    // verify-ca does not check the name.
    let url = pg.url(
        &user,
        Some("pw"),
        &db,
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    connect(&url).await.close().await;

    // An unknown CA fails verify-ca and verify-full alike.
    let (other_ca, _, _) = generate_certs(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    for mode in ["verify-ca", "verify-full"] {
        let url = pg.url_for_host(
            "localhost",
            &user,
            Some("pw"),
            &db,
            &format!("sslmode={mode}&sslrootcert={}", other.display()),
        );
        let err = ReplicationConnection::connect(&info(&url))
            .await
            .unwrap_err();
        let text = chain(&err);
        assert!(
            text.contains("invalid peer certificate: UnknownIssuer"),
            "{text}"
        );
    }

    // verify-full without any root certificate says how to give one.
    let url = pg.url_for_host("localhost", &user, Some("pw"), &db, "sslmode=verify-full");
    let err = ReplicationConnection::connect(&info(&url))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "sslmode=verify-full needs trusted root certificates: set `sslrootcert=/path/to/ca.pem`"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn tls_required_from_a_server_without_tls_is_refused() {
    let mut pg = PgCluster::start(ClusterOptions {
        tls: false,
        ..ClusterOptions::default()
    });
    let url = pg.url("postgres", None, "postgres", "sslmode=require");
    let err = ReplicationConnection::connect(&info(&url))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the server at 127.0.0.1:{} does not accept TLS, but sslmode=require requires it",
            pg.port()
        )
    );
    // `prefer` falls back to plain TCP.
    let url = pg.url("postgres", None, "postgres", "sslmode=prefer");
    connect(&url).await.close().await;
    pg.stop();
}

#[tokio::test]
async fn unix_socket_connection() {
    let pg = PgCluster::shared();
    let db = pg.create_database("unix");
    let user = unique("unix");
    pg.create_user(&user, "sock pw", Auth::ScramSha256);
    let url = pg.socket_url(&user, Some("sock pw"), &db);
    let conninfo = info(&url);
    assert_eq!(
        conninfo.target(),
        format!("{}/.s.PGSQL.{}", pg.socket_dir().display(), pg.port())
    );
    let mut conn = connect(&url).await;
    assert_eq!(
        conn.identify_system().await.unwrap().dbname.as_deref(),
        Some(db.as_str())
    );
    conn.close().await;
    // The same through `host=` in the query string.
    let url = format!(
        "postgres://{user}:sock%20pw@/{db}?host={}&port={}",
        pg.socket_dir().display(),
        pg.port()
    );
    connect(&url).await.close().await;
}

/// A database with table `t (id int primary key, v text)` and publication
/// `pub`; returns (db, replication URL).
fn streaming_db(pg: &PgCluster, prefix: &str) -> (String, String) {
    let db = pg.create_database(prefix);
    pg.psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE t",
    );
    (db.clone(), pg.url("postgres", None, &db, "sslmode=disable"))
}

async fn start(
    conn: ReplicationConnection,
    slot: &SlotName,
    options: StreamOptions,
) -> ReplicationStream {
    conn.start_replication(slot, Lsn::ZERO, &PgOutputOptions::new("pub"), options)
        .await
        .unwrap_or_else(|e| panic!("start: {}", chain(&e)))
}

/// Receives XLogData payloads until a Commit ('C'); returns the tags and
/// the commit's end LSN.
async fn next_transaction(stream: &mut ReplicationStream) -> (Vec<char>, Lsn) {
    let mut tags = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("a transaction within the timeout")
            .unwrap_or_else(|e| panic!("stream: {}", chain(&e)))
            .expect("stream still open");
        if let ReplicationEvent::XLogData { data, .. } = event {
            let tag = char::from(data[0]);
            tags.push(tag);
            if tag == 'C' {
                // Commit: tag, flags, commit LSN, end LSN, timestamp.
                let end = u64::from_be_bytes(data[10..18].try_into().unwrap());
                return (tags, Lsn(end));
            }
        }
    }
}

#[tokio::test]
async fn streams_pgoutput_messages_for_an_insert() {
    let pg = PgCluster::shared();
    let (db, url) = streaming_db(pg, "stream");
    let slot = SlotName::new(unique("s")).unwrap();
    let mut conn = connect(&url).await;
    let created = conn
        .create_slot(
            &slot,
            CreateSlotOptions {
                temporary: true,
                snapshot: SnapshotAction::Nothing,
                failover: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(created.slot_name, slot.as_str());
    assert_eq!(created.output_plugin.as_deref(), Some("pgoutput"));
    assert_eq!(created.snapshot_name, None);
    assert!(created.consistent_point > Lsn::ZERO);

    let mut stream = start(conn, &slot, StreamOptions::default()).await;
    pg.psql(&db, "INSERT INTO t VALUES (1, 'one')");
    let (tags, end) = next_transaction(&mut stream).await;
    assert_eq!(tags, ['B', 'R', 'I', 'C']);
    assert!(end > created.consistent_point);

    // A logical message arrives too ('M'), outside a transaction here.
    pg.psql(
        &db,
        "SELECT pg_logical_emit_message(false, 'sluice', 'hello')",
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let ReplicationEvent::XLogData { data, .. } = event {
            assert_eq!(data[0], b'M');
            assert!(data.ends_with(b"hello"));
            break;
        }
    }

    // Clean stop: the session runs commands again, and drops its slot.
    let mut conn = stream.stop().await.unwrap();
    conn.identify_system().await.unwrap();
    conn.drop_slot(&slot, false).await.unwrap();
    assert_eq!(
        pg.psql(
            &db,
            &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'")
        ),
        "0"
    );
    conn.close().await;
}

#[tokio::test]
async fn keepalive_replies_confirm_only_what_the_hook_says() {
    let pg = PgCluster::shared();
    let (db, _) = streaming_db(pg, "flush");
    // A role whose walsender asks for a reply after one second of silence
    // (wal_sender_timeout is per session), so keepalive replies — not the
    // periodic updates, set to an hour here — carry the flush position.
    let user = unique("flush");
    pg.create_user(&user, "pw", Auth::ScramSha256);
    pg.psql(
        "postgres",
        &format!("ALTER ROLE \"{user}\" SET wal_sender_timeout = '2s'"),
    );
    pg.psql(&db, &format!("GRANT SELECT ON t TO \"{user}\""));
    let url = pg.url(&user, Some("pw"), &db, "sslmode=disable");
    let slot = SlotName::new(unique("f")).unwrap();
    let mut conn = connect(&url).await;
    let created = conn
        .create_slot(
            &slot,
            CreateSlotOptions {
                temporary: false,
                snapshot: SnapshotAction::Nothing,
                failover: false,
            },
        )
        .await
        .unwrap();

    let (tx, rx) = watch::channel(Lsn::ZERO);
    let options = StreamOptions {
        status_interval: Duration::from_secs(3600),
        flushed: Some(rx),
    };
    let mut stream = start(conn, &slot, options).await;
    pg.psql(&db, "INSERT INTO t VALUES (1, 'a')");
    let (_, end1) = next_transaction(&mut stream).await;
    pg.psql(&db, "INSERT INTO t VALUES (2, 'b')");
    let (_, end2) = next_transaction(&mut stream).await;
    let confirmed =
        format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'");

    // Nothing flushed yet: replies carry 0/0 and the slot stays put.
    answer_keepalive(&mut stream).await;
    answer_keepalive(&mut stream).await;
    assert_eq!(
        pg.psql(&db, &confirmed),
        created.consistent_point.to_string()
    );

    // The tracker says the first transaction is durable.
    tx.send(end1).unwrap();
    answer_keepalive(&mut stream).await;
    pg.wait_for(&db, &confirmed, &end1.to_string(), WAIT);
    assert_eq!(stream.flushed(), end1);
    assert!(stream.written() >= end2, "write covers what was received");

    // Then the second; a stale lower value afterwards changes nothing.
    stream.set_flushed(end2);
    tx.send(end1).unwrap();
    answer_keepalive(&mut stream).await;
    pg.wait_for(&db, &confirmed, &end2.to_string(), WAIT);
    assert_eq!(stream.flushed(), end2);

    stream.shutdown().await.unwrap();
    pg.psql(&db, &format!("SELECT pg_drop_replication_slot('{slot}')"));
}

/// Waits for a keepalive that asks for a reply, then lets the stream send
/// the reply (on the following call to `next`).
async fn answer_keepalive(stream: &mut ReplicationStream) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("keepalive")
            .unwrap()
            .unwrap();
        if let ReplicationEvent::Keepalive {
            reply_requested: true,
            ..
        } = event
        {
            break;
        }
    }
    // Sends the pending reply, then waits for more; nothing is lost when
    // the wait is cut short.
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
}

#[tokio::test]
async fn losing_the_walsender_is_a_transient_error() {
    let pg = PgCluster::shared();
    let (db, url) = streaming_db(pg, "loss");
    let slot = SlotName::new(unique("l")).unwrap();
    let mut conn = connect(&url).await;
    conn.create_slot(
        &slot,
        CreateSlotOptions {
            temporary: true,
            snapshot: SnapshotAction::Nothing,
            failover: false,
        },
    )
    .await
    .unwrap();
    let mut stream = start(conn, &slot, StreamOptions::default()).await;
    let pid = stream.backend_pid();
    assert_eq!(
        pg.psql(&db, &format!("SELECT pg_terminate_backend({pid})")),
        "t"
    );
    let err = loop {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("error within timeout")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended cleanly"),
            Err(e) => break e,
        }
    };
    assert!(err.is_transient(), "{err:?}");
    let text = chain(&err);
    assert!(
        text == "streaming: FATAL: terminating connection due to administrator command (SQLSTATE 57P01)"
            || text.starts_with("lost the connection to PostgreSQL"),
        "{text}"
    );
    // A refused connection is transient too.
    let err = ReplicationConnection::connect(&info("postgres://u@127.0.0.1:1/db?sslmode=disable"))
        .await
        .unwrap_err();
    assert!(err.is_transient());
    assert!(matches!(err, ReplicationError::Connect { .. }));
}

fn spec(publication: &str, slot: &str) -> SetupSpec {
    SetupSpec {
        publication: publication.into(),
        create_publication: None,
        slot: SlotName::new(slot).unwrap(),
        create_slot: true,
    }
}

fn problems(err: SetupError) -> Vec<String> {
    match err {
        SetupError::Problems(p) => p.iter().map(ToString::to_string).collect(),
        other => panic!("expected problems, got {}", chain(&other)),
    }
}

#[tokio::test]
async fn setup_checks_publication_and_replica_identity() {
    let pg = PgCluster::shared();
    let db = pg.create_database("setup");
    pg.psql(&db, "CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE loose (v text); CREATE TABLE \"Odd\" (v text)");
    let url = pg.url("postgres", None, &db, "sslmode=disable");
    let slot = unique("setup");

    let err = setup::check(&info(&url), &spec("mypub", &slot))
        .await
        .unwrap_err();
    assert_eq!(
        problems(err),
        [format!(
            "publication \"mypub\" does not exist in database \"{db}\": create it with `CREATE PUBLICATION \"mypub\" FOR ALL TABLES`, or let sluice create it"
        )]
    );

    // Created on request, for listed tables; the keyless one is named.
    let mut s = spec("mypub", &slot);
    s.create_publication = Some(PublicationScope::Tables(vec![
        TableName {
            schema: "public".into(),
            name: "keyed".into(),
        },
        TableName {
            schema: "public".into(),
            name: "loose".into(),
        },
        TableName {
            schema: "public".into(),
            name: "Odd".into(),
        },
    ]));
    let err = setup::check(&info(&url), &s).await.unwrap_err();
    assert_eq!(
        problems(err),
        [
            "table \"public\".\"Odd\" in publication \"mypub\" has no primary key and REPLICA IDENTITY DEFAULT, so its updates and deletes carry no old key (PostgreSQL refuses them while the table is published): add a primary key, or run `ALTER TABLE \"public\".\"Odd\" REPLICA IDENTITY FULL;`",
            "table \"public\".\"loose\" in publication \"mypub\" has no primary key and REPLICA IDENTITY DEFAULT, so its updates and deletes carry no old key (PostgreSQL refuses them while the table is published): add a primary key, or run `ALTER TABLE \"public\".\"loose\" REPLICA IDENTITY FULL;`",
        ]
    );
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'mypub'"),
        "Odd,keyed,loose"
    );

    pg.psql(
        &db,
        "ALTER TABLE loose REPLICA IDENTITY FULL; ALTER TABLE \"Odd\" ADD PRIMARY KEY (v)",
    );
    let report = setup::check(&info(&url), &spec("mypub", &slot))
        .await
        .unwrap();
    assert!(!report.publication_created);
    assert_eq!(report.slot, None);

    // Creating FOR ALL TABLES needs a superuser; a plain owner gets the reason.
    let user = unique("owner");
    pg.create_user(&user, "pw", Auth::ScramSha256);
    pg.psql(
        "postgres",
        &format!("GRANT CREATE ON DATABASE \"{db}\" TO \"{user}\""),
    );
    let as_user = pg.url(&user, Some("pw"), &db, "sslmode=disable");
    let mut s = spec("allpub", &slot);
    s.create_publication = Some(PublicationScope::AllTables);
    let err = setup::check(&info(&as_user), &s).await.unwrap_err();
    assert_eq!(
        problems(err),
        [
            "cannot create publication \"allpub\" with `CREATE PUBLICATION \"allpub\" FOR ALL TABLES`: ERROR: must be superuser to create FOR ALL TABLES publication (SQLSTATE 42501)"
        ]
    );
    let report = setup::check(&info(&url), &s).await.unwrap();
    assert!(report.publication_created);
}

#[tokio::test]
async fn setup_checks_role_and_slot() {
    let pg = PgCluster::shared();
    let db = pg.create_database("slotchk");
    pg.psql(&db, "CREATE PUBLICATION p FOR ALL TABLES");
    let url = pg.url("postgres", None, &db, "sslmode=disable");

    // A role without REPLICATION.
    let user = unique("norepl");
    pg.create_user(&user, "pw", Auth::ScramSha256);
    pg.psql("postgres", &format!("ALTER ROLE \"{user}\" NOREPLICATION"));
    let err = setup::check(
        &info(&pg.url(&user, Some("pw"), &db, "sslmode=disable")),
        &spec("p", &unique("x")),
    )
    .await
    .unwrap_err();
    assert_eq!(
        problems(err),
        [format!(
            "role \"{user}\" may not start replication (it has neither REPLICATION nor SUPERUSER): run `ALTER ROLE \"{user}\" WITH REPLICATION;` as a superuser"
        )]
    );

    // A missing slot that may not be created.
    let missing = unique("missing");
    let mut s = spec("p", &missing);
    s.create_slot = false;
    let err = setup::check(&info(&url), &s).await.unwrap_err();
    assert_eq!(
        problems(err),
        [format!(
            "replication slot \"{missing}\" does not exist: create it with `SELECT pg_create_logical_replication_slot('{missing}', 'pgoutput');`, or let sluice create it"
        )]
    );

    // Another output plugin, and a physical slot.
    let decoding = unique("decoding");
    pg.psql(
        &db,
        &format!("SELECT pg_create_logical_replication_slot('{decoding}', 'test_decoding')"),
    );
    let err = setup::check(&info(&url), &spec("p", &decoding))
        .await
        .unwrap_err();
    assert_eq!(
        problems(err),
        [format!(
            "replication slot \"{decoding}\" uses the output plugin \"test_decoding\", but sluice needs \"pgoutput\": choose another slot name, or drop it with `SELECT pg_drop_replication_slot('{decoding}');`"
        )]
    );
    pg.psql(
        &db,
        &format!("SELECT pg_drop_replication_slot('{decoding}')"),
    );
    let physical = unique("physical");
    pg.psql(
        &db,
        &format!("SELECT pg_create_physical_replication_slot('{physical}')"),
    );
    let err = setup::check(&info(&url), &spec("p", &physical))
        .await
        .unwrap_err();
    assert_eq!(
        problems(err),
        [format!(
            "replication slot \"{physical}\" is a physical slot, but sluice needs a logical slot with the pgoutput plugin: choose another slot name, or drop it with `SELECT pg_drop_replication_slot('{physical}');`"
        )]
    );
    pg.psql(
        &db,
        &format!("SELECT pg_drop_replication_slot('{physical}')"),
    );

    // A slot in use by a running stream.
    let busy = SlotName::new(unique("busy")).unwrap();
    let mut conn = connect(&url).await;
    conn.create_slot(
        &busy,
        CreateSlotOptions {
            temporary: false,
            snapshot: SnapshotAction::Nothing,
            failover: false,
        },
    )
    .await
    .unwrap();
    let stream = conn
        .start_replication(
            &busy,
            Lsn::ZERO,
            &PgOutputOptions::new("p"),
            StreamOptions::default(),
        )
        .await
        .unwrap();
    let pid = stream.backend_pid();
    let err = setup::check(&info(&url), &spec("p", busy.as_str()))
        .await
        .unwrap_err();
    assert_eq!(
        problems(err),
        [format!(
            "replication slot \"{busy}\" is in use by process {pid}: stop the other consumer, or end it with `SELECT pg_terminate_backend({pid});`"
        )]
    );
    // Once released, the slot passes and its position is reported.
    stream.shutdown().await.unwrap();
    pg.wait_for(
        &db,
        &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{busy}'"),
        "f",
        WAIT,
    );
    let report = setup::check(&info(&url), &spec("p", busy.as_str()))
        .await
        .unwrap();
    assert!(report.slot.unwrap().confirmed_flush_lsn.is_some());
    pg.psql(&db, &format!("SELECT pg_drop_replication_slot('{busy}')"));
}

#[tokio::test]
async fn setup_checks_wal_level_and_slot_capacity() {
    let mut pg = PgCluster::start(ClusterOptions {
        wal_level: "replica",
        tls: false,
        extra_conf: vec!["max_replication_slots = 1".into()],
        ..ClusterOptions::default()
    });
    pg.psql(
        "postgres",
        "CREATE PUBLICATION p FOR ALL TABLES; SELECT pg_create_physical_replication_slot('taken')",
    );
    let url = pg.url("postgres", None, "postgres", "sslmode=disable");
    let err = setup::check(&info(&url), &spec("p", "wanted"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "PostgreSQL is not ready for logical replication:\n  \
         - wal_level is `replica`, but logical replication needs `logical`: run `ALTER SYSTEM SET wal_level = logical;` as a superuser, then restart PostgreSQL\n  \
         - cannot create replication slot \"wanted\": all 1 slots allowed by max_replication_slots are in use; drop an unused slot (see `SELECT slot_name, active FROM pg_replication_slots;`) or raise max_replication_slots and restart PostgreSQL"
    );
    assert!(!err.is_transient());
    pg.stop();
}
