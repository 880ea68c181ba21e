//! JetStream publishing against a real nats-server: order, headers, de-duplication,
//! the window, completion order, surviving a server restart, permissions, stream
//! set-up, rejections, authentication and TLS.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::support::nats::{NatsServer, TlsFiles, create_stream, read_stream, stream_len};
use crate::support::wait_until;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::FutureExt;
use sluice_host::lsn::Lsn;
use sluice_host::model::Message;
use sluice_host::publish::{
    Completions, HostMeta, NatsAuth, NatsOptions, Outgoing, PublishError, Publisher,
    PublisherConfig, Rejection, Secret, Storage, StreamError, StreamSpec, SubjectFilter,
    SubjectPattern, TlsOptions, connect, ensure_stream, msg_id, verify_stream,
};

const PIPELINE: &str = "orders";

/// The `i`-th test message: transaction `i / 10`, event `i % 10`.
fn message(subject: &str, i: u64, payload_len: usize) -> Outgoing {
    let commit_lsn = Lsn(0x1000 + (i / 10) * 0x100);
    let mut payload = format!("{{\"i\":{i}}}").into_bytes();
    payload.resize(payload_len.max(payload.len()), b' ');
    Outgoing {
        message: Message {
            subject: subject.to_owned(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            payload,
            event: Some(0),
        },
        meta: HostMeta {
            msg_id: msg_id(PIPELINE, commit_lsn, 1, i % 10, 0),
            commit_lsn,
            lsn: Some(Lsn(commit_lsn.0 - 0x80 + i % 10)),
            table: Some("public.orders".into()),
            op: Some("insert"),
            error: None,
            metadata: true,
        },
    }
}

fn config(window: usize) -> PublisherConfig {
    PublisherConfig {
        max_in_flight: window,
        ..PublisherConfig::default()
    }
}

fn filter(patterns: &[&str]) -> SubjectFilter {
    SubjectFilter::parse(patterns).unwrap()
}

/// Receives `n` completions and checks they carry tokens `0..n` in order.
async fn expect_in_order(
    completions: &mut Completions<u64>,
    n: u64,
) -> Vec<sluice_host::publish::Completed<u64>> {
    let mut out = Vec::new();
    for expected in 0..n {
        let done = tokio::time::timeout(Duration::from_secs(30), completions.recv())
            .await
            .unwrap_or_else(|_| panic!("no completion for token {expected} within 30 s"))
            .expect("completions ended early")
            .unwrap_or_else(|e| panic!("token {expected} failed: {e}"));
        assert_eq!(done.token, expected, "completions out of order");
        out.push(done);
    }
    out
}

#[tokio::test]
async fn publishes_in_order_with_host_headers() {
    let server = NatsServer::launch();
    let js = server.jetstream().await;
    create_stream(&js, "CDC", &["cdc.>"]).await;
    let (publisher, mut completions) =
        Publisher::new(server.client().await, filter(&["cdc.>"]), config(64));

    let n = 500;
    // Completions are read concurrently, as a pipeline does: unread ones hold the window.
    let reader = tokio::spawn(async move { expect_in_order(&mut completions, n).await });
    for i in 0..n {
        publisher
            .publish(message(&format!("cdc.public.orders.{}", i % 3), i, 0), i)
            .await
            .unwrap();
    }
    let done = reader.await.unwrap();
    for (i, c) in done.iter().enumerate() {
        assert_eq!(c.sequence, i as u64 + 1);
        assert!(!c.duplicate);
    }

    let stored = read_stream(&js, "CDC").await;
    assert_eq!(stored.len(), n as usize);
    let first = &stored[0];
    assert_eq!(first.subject, "cdc.public.orders.0");
    assert_eq!(first.payload, b"{\"i\":0}");
    assert_eq!(
        first.headers,
        vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            (
                "Nats-Msg-Id".to_owned(),
                "orders:0000000000001000:1:0:0".to_owned()
            ),
            ("Sluice-Commit-Lsn".to_owned(), "0/1000".to_owned()),
            ("Sluice-Lsn".to_owned(), "0/F80".to_owned()),
            ("Sluice-Op".to_owned(), "insert".to_owned()),
            ("Sluice-Table".to_owned(), "public.orders".to_owned()),
        ]
    );
    for (i, m) in stored.iter().enumerate() {
        let i = i as u64;
        assert_eq!(m.sequence, i + 1);
        assert_eq!(m.subject, format!("cdc.public.orders.{}", i % 3));
        assert_eq!(m.msg_id(), Some(message("x", i, 0).meta.msg_id.as_str()));
    }
    let stats = publisher.stats();
    assert_eq!((stats.stored, stats.duplicates, stats.retries), (n, 0, 0));
}

#[tokio::test]
async fn republished_ids_are_deduplicated() {
    let server = NatsServer::launch();
    let js = server.jetstream().await;
    create_stream(&js, "CDC", &["cdc.>"]).await;
    let n = 100;
    for round in 0..2 {
        // A fresh publisher, as after a host restart that replays the transactions.
        let (publisher, mut completions) =
            Publisher::new(server.client().await, filter(&["cdc.>"]), config(32));
        let reader = tokio::spawn(async move { expect_in_order(&mut completions, n).await });
        for i in 0..n {
            publisher.publish(message("cdc.t", i, 0), i).await.unwrap();
        }
        let done = reader.await.unwrap();
        assert!(
            done.iter().all(|c| c.duplicate == (round == 1)),
            "round {round}: {done:?}"
        );
        // A duplicate ack names the sequence of the copy already stored.
        assert!(
            done.iter()
                .enumerate()
                .all(|(i, c)| c.sequence == i as u64 + 1)
        );
    }
    let stored = read_stream(&js, "CDC").await;
    assert_eq!(stored.len(), n as usize);
    let ids: HashSet<_> = stored
        .iter()
        .map(|m| m.msg_id().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), n as usize);
}

#[tokio::test]
async fn large_window_keeps_order() {
    let server = NatsServer::launch();
    let js = server.jetstream().await;
    create_stream(&js, "CDC", &["cdc.>"]).await;
    let (publisher, mut completions) =
        Publisher::new(server.client().await, filter(&["cdc.>"]), config(4096));
    let n = 5_000;
    let reader = tokio::spawn(async move { expect_in_order(&mut completions, n).await });
    for i in 0..n {
        // Sizes vary so that the server's work per message varies too.
        publisher
            .publish(message("cdc.t", i, (i as usize * 37) % 2000), i)
            .await
            .unwrap();
    }
    reader.await.unwrap();
    let stored = read_stream(&js, "CDC").await;
    let got: Vec<_> = stored
        .iter()
        .map(|m| m.msg_id().unwrap().to_owned())
        .collect();
    let want: Vec<_> = (0..n).map(|i| message("x", i, 0).meta.msg_id).collect();
    assert_eq!(got, want);
    assert!(
        publisher.stats().max_awaiting_ack > 64,
        "{:?}",
        publisher.stats()
    );
}

#[tokio::test]
async fn window_bounds_messages_and_bytes_in_flight() {
    let server = NatsServer::launch();
    let js = server.jetstream().await;
    create_stream(&js, "CDC", &["cdc.>"]).await;

    let (publisher, mut completions) =
        Publisher::new(server.client().await, filter(&["cdc.>"]), config(8));
    let reader = tokio::spawn(async move { expect_in_order(&mut completions, 1000).await });
    for i in 0..1000 {
        publisher.publish(message("cdc.t", i, 0), i).await.unwrap();
    }
    reader.await.unwrap();
    let stats = publisher.stats();
    assert_eq!(stats.max_in_flight, 8, "{stats:?}");
    assert!(stats.max_awaiting_ack <= 8, "{stats:?}");
    assert_eq!((stats.in_flight, stats.in_flight_bytes), (0, 0));

    // A byte window of three messages of 1,169 bytes (1,000 payload, the rest headers).
    let bytes = PublisherConfig {
        max_in_flight: 100,
        max_in_flight_bytes: 3_600,
        ..PublisherConfig::default()
    };
    let (publisher, mut completions) =
        Publisher::new(server.client().await, filter(&["cdc.>"]), bytes);
    let reader = tokio::spawn(async move { expect_in_order(&mut completions, 300).await });
    for i in 0..300 {
        publisher
            .publish(message("cdc.t", 1000 + i, 1_000), i)
            .await
            .unwrap();
    }
    reader.await.unwrap();
    let stats = publisher.stats();
    assert!(
        (3_000..=3_600).contains(&stats.max_in_flight_bytes),
        "{stats:?}"
    );
    assert_eq!(stats.max_in_flight, 3, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_window_makes_publish_wait() {
    let mut server = NatsServer::launch();
    let js = server.jetstream().await;
    create_stream(&js, "CDC", &["cdc.>"]).await;
    let (publisher, mut completions) =
        Publisher::new(server.client().await, filter(&["cdc.>"]), config(4));
    // Without a server no ack comes back, so the window fills and stays full.
    server.stop();
    for i in 0..4 {
        publisher.publish(message("cdc.t", i, 0), i).await.unwrap();
    }
    assert_eq!(publisher.stats().in_flight, 4);
    let mut fifth = Box::pin(publisher.publish(message("cdc.t", 4, 0), 4));
    assert!(
        (&mut fifth).now_or_never().is_none(),
        "publish must wait while the window is full"
    );

    server.start();
    let reader = tokio::spawn(async move { expect_in_order(&mut completions, 5).await });
    fifth.await.unwrap();
    reader.await.unwrap();
    let js = server.jetstream().await;
    assert_eq!(stream_len(&js, "CDC").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_server_restart_without_loss_or_duplicates() {
    let mut server = NatsServer::launch();
    let js = server.jetstream().await;
    create_stream(&js, "RESTART", &["restart.>"]).await;

    let cfg = PublisherConfig {
        max_in_flight: 64,
        ack_timeout: Duration::from_secs(1),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        stream: Some("RESTART".into()),
        ..PublisherConfig::default()
    };
    let (publisher, mut completions) =
        Publisher::new(server.client().await, filter(&["restart.>"]), cfg);
    let publisher = Arc::new(publisher);
    let n: u64 = 3_000;

    // Every message has its own subject, so that the checker can ask the stream
    // whether a message is there without trusting anything the publisher says.
    // The second half waits for the outage, so that it is felt: on a quiet
    // machine all 3,000 could otherwise be stored before the server stops.
    let (outage_tx, mut outage) = tokio::sync::watch::channel(false);
    let producer = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            for i in 0..n {
                if i == n / 2 {
                    outage.wait_for(|down| *down).await.unwrap();
                }
                publisher
                    .publish(message(&format!("restart.{i}"), i, 100), i)
                    .await
                    .unwrap();
            }
        })
    };
    // Completions are taken as they come, so that a checker waiting for NATS
    // to come back never holds the publisher's window (a report holds its
    // message's permits until it is received).
    let (reported_tx, mut reported) = tokio::sync::mpsc::unbounded_channel();
    let receiver = tokio::spawn(async move {
        for expected in 0..n {
            let done = completions
                .recv()
                .await
                .expect("completions ended")
                .expect("publish failed");
            assert_eq!(done.token, expected, "completions out of order");
            reported_tx.send(expected).unwrap();
        }
    });
    let completed = Arc::new(AtomicU64::new(0));
    let checker = {
        let completed = completed.clone();
        let checker_js = js.clone();
        tokio::spawn(async move {
            let stream = checker_js.get_stream("RESTART").await.unwrap();
            while let Some(expected) = reported.recv().await {
                // The stream must hold the message now; retry only while NATS is away.
                let subject = format!("restart.{expected}");
                let stored = wait_until(
                    "the stream to be readable",
                    Duration::from_secs(60),
                    || async {
                        match stream.get_last_raw_message_by_subject(&subject).await {
                            Ok(m) => Some(m),
                            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                                panic!("token {expected} reported complete but its message is not in the stream")
                            }
                            Err(_) => None,
                        }
                    },
                )
                .await;
                let id = stored
                    .headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_owned());
                assert_eq!(
                    id.as_deref(),
                    Some(message("x", expected, 0).meta.msg_id.as_str())
                );
                completed.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    wait_until(
        "a quarter of the messages",
        Duration::from_secs(30),
        || async { completed.load(Ordering::SeqCst) >= n / 4 },
    )
    .await;
    server.stop();
    outage_tx.send(true).unwrap();
    // Keep NATS away until the publisher has noticed (an ack timed out or the
    // connection broke), so the outage is felt mid-stream. (Whether the window
    // is full by then depends on how fast the producer is on a loaded machine.)
    wait_until(
        "the publisher to notice the outage",
        Duration::from_secs(30),
        || async { publisher.stats().transient_failures > 0 },
    )
    .await;
    let before = completed.load(Ordering::SeqCst);
    assert!(before < n, "the outage must interrupt the stream");
    server.start();

    tokio::time::timeout(Duration::from_secs(120), producer)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), receiver)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), checker)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(completed.load(Ordering::SeqCst), n, "every message checked");

    let stored = read_stream(&js, "RESTART").await;
    let ids: Vec<_> = stored
        .iter()
        .map(|m| m.msg_id().unwrap().to_owned())
        .collect();
    let unique: HashSet<_> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates in the stream");
    let want: HashSet<_> = (0..n).map(|i| message("x", i, 0).meta.msg_id).collect();
    assert_eq!(unique, want, "messages lost");
    let stats = publisher.stats();
    assert!(stats.retries > 0, "{stats:?}");
    eprintln!("restart: {stats:?}");
}

#[tokio::test]
async fn forbidden_subject_is_rejected_before_publishing() {
    let server = NatsServer::launch();
    let js = server.jetstream().await;
    create_stream(&js, "ALL", &["cdc.>", "other.>"]).await;
    let (publisher, _completions) = Publisher::<u64>::new(
        server.client().await,
        filter(&["cdc.>", "audit.*"]),
        config(8),
    );

    let err = publisher
        .publish(message("other.secret", 0, 0), 0)
        .await
        .unwrap_err();
    assert!(err.is_message_error());
    assert_eq!(
        err.to_string(),
        "subject `other.secret` is not allowed: this pipeline may publish only to `cdc.>`, `audit.*`"
    );
    let err = publisher
        .publish(message("cdc.*", 1, 0), 1)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`cdc.*` is not a valid NATS subject: wildcards (`*`, `>`) are not allowed in a subject messages are published to"
    );
    let mut sneaky = message("cdc.t", 2, 0);
    sneaky
        .message
        .headers
        .push(("Nats-Msg-Id".into(), "forged".into()));
    let err = publisher.publish(sneaky, 2).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "header `Nats-Msg-Id` on a message to `cdc.t` is reserved: a sink may not set headers starting with `Nats-` or `Sluice-` (the host sets them)"
    );
    assert_eq!(stream_len(&js, "ALL").await, 0);
}

#[tokio::test]
async fn creates_and_verifies_streams() {
    let server = NatsServer::launch();
    let js = server.jetstream().await;
    let allowed = filter(&["cdc.>"]);
    let pattern = |s: &str| SubjectPattern::new(s).unwrap();

    let err = verify_stream(&js, "CDC", &allowed).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "JetStream stream `CDC` does not exist; create it, or let Sluice create it by configuring the stream"
    );

    let mut spec = StreamSpec::new("CDC", vec![pattern("cdc.>")]);
    spec.storage = Storage::Memory;
    spec.duplicate_window = Duration::from_secs(300);
    let report = ensure_stream(&js, &spec, &allowed).await.unwrap();
    assert!(
        report.created && report.differences.is_empty(),
        "{report:?}"
    );
    let info = verify_stream(&js, "CDC", &allowed).await.unwrap();
    assert_eq!(info.config.duplicate_window, Duration::from_secs(300));

    // Existing stream, different settings: reported, not changed.
    spec.storage = Storage::File;
    let report = ensure_stream(&js, &spec, &allowed).await.unwrap();
    assert!(!report.created);
    assert_eq!(
        report.differences,
        vec!["stream uses memory storage, the manifest asks for file".to_owned()]
    );

    create_stream(&js, "NARROW", &["narrow.orders.*"]).await;
    let err = verify_stream(&js, "NARROW", &filter(&["narrow.orders.*", "narrow.>"]))
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::SubjectsNotCovered { .. }));
    assert_eq!(
        err.to_string(),
        "JetStream stream `NARROW` does not capture every subject this pipeline may publish to: `narrow.>` not covered by the stream's subjects `narrow.orders.*`"
    );

    let bad = StreamSpec::new("has space", vec![pattern("x.>")]);
    let err = ensure_stream(&js, &bad, &filter(&["x.>"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot look up JetStream stream `has space`"),
        "{err}"
    );

    // JetStream refuses the new stream: its reason is printed once, not
    // again as the client's "jetstream error: …" cause.
    let overlap = StreamSpec::new("OVERLAP", vec![pattern("cdc.>")]);
    let err = ensure_stream(&js, &overlap, &allowed).await.unwrap_err();
    let line = sluice_host::causes::line(&err);
    assert!(
        line.starts_with("cannot create JetStream stream `OVERLAP`: subjects overlap"),
        "{line}"
    );
    assert_eq!(line.matches("overlap").count(), 1, "{line}");
}

#[tokio::test]
async fn definite_rejections_stop_the_publisher() {
    let server = NatsServer::launch();
    let js = server.jetstream().await;
    create_stream(&js, "CDC", &["cdc.>"]).await;

    // The subject belongs to CDC, but the publisher expects another stream.
    let cfg = PublisherConfig {
        stream: Some("ELSEWHERE".into()),
        ..config(8)
    };
    let (publisher, mut completions) =
        Publisher::new(server.client().await, filter(&["cdc.>"]), cfg);
    publisher
        .publish(message("cdc.t", 0, 0), 0u64)
        .await
        .unwrap();
    match completions.recv().await.unwrap() {
        Err(PublishError::Rejected {
            kind: Rejection::WrongStream,
            msg_id,
            reason,
            ..
        }) => {
            assert_eq!(msg_id, "orders:0000000000001000:1:0:0");
            assert_eq!(
                reason,
                "expected stream does not match (code 400, error code 10060)"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(completions.recv().await.is_none());
    let err = publisher
        .publish(message("cdc.t", 1, 0), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Stopped(_)), "{err}");
    assert!(err.to_string().starts_with("the publisher stopped after an earlier failure: JetStream rejected message `orders:0000000000001000:1:0:0` to `cdc.t`"), "{err}");

    // A full stream (limits with discard-new) refuses the message after the limit.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "SMALL".into(),
        subjects: vec!["small.>".into()],
        max_messages: 3,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .unwrap();
    let (publisher, mut completions) =
        Publisher::new(server.client().await, filter(&["small.>"]), config(8));
    for i in 0..4u64 {
        publisher
            .publish(message("small.t", i, 0), i)
            .await
            .unwrap();
    }
    expect_in_order(&mut completions, 3).await;
    match completions.recv().await.unwrap() {
        Err(
            e @ PublishError::Rejected {
                kind: Rejection::StorageFull,
                ..
            },
        ) => {
            assert_eq!(
                e.to_string(),
                "JetStream rejected message `orders:0000000000001000:1:3:0` to `small.t`: maximum messages exceeded (code 503, error code 10077)"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Publishes one message over a connection made from `options`.
async fn publish_one(options: &NatsOptions) {
    let client = connect(options)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let js = async_nats::jetstream::new(client.clone());
    create_stream(&js, "AUTH", &["auth.>"]).await;
    let (publisher, mut completions) = Publisher::new(client, filter(&["auth.>"]), config(4));
    publisher
        .publish(message("auth.t", 0, 0), 0u64)
        .await
        .unwrap();
    expect_in_order(&mut completions, 1).await;
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[tokio::test]
async fn user_password_and_token_authenticate() {
    let server = NatsServer::builder().user("sluice", "s3cret-pw").launch();
    let mut options = NatsOptions::new([server.url()]);
    options.auth = NatsAuth::UserPassword {
        user: "sluice".into(),
        password: Secret::new("s3cret-pw"),
    };
    publish_one(&options).await;

    options.auth = NatsAuth::UserPassword {
        user: "sluice".into(),
        password: Secret::new("wrong-pw-123"),
    };
    let err = connect(&options).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to NATS at {}: the server rejected the credentials (authorization violation)",
            server.url()
        )
    );
    let chain = error_chain(&err);
    assert!(
        !chain.contains("wrong-pw-123") && !format!("{err:?}").contains("wrong-pw-123"),
        "{chain}"
    );

    let server = NatsServer::builder().token("t0ken-value").launch();
    let mut options = NatsOptions::new([server.url()]);
    options.auth = NatsAuth::Token(Secret::new("t0ken-value"));
    publish_one(&options).await;
    options.auth = NatsAuth::Token(Secret::new("bad-t0ken"));
    let err = connect(&options).await.unwrap_err();
    assert!(!error_chain(&err).contains("bad-t0ken"));
}

#[tokio::test]
async fn nkey_authenticates() {
    let user = nkeys::KeyPair::new_user();
    let server = NatsServer::builder().nkey(&user.public_key()).launch();
    let mut options = NatsOptions::new([server.url()]);
    options.auth = NatsAuth::NKey(Secret::new(user.seed().unwrap()));
    publish_one(&options).await;

    let stranger = nkeys::KeyPair::new_user();
    options.auth = NatsAuth::NKey(Secret::new(stranger.seed().unwrap()));
    let err = connect(&options).await.unwrap_err();
    assert!(
        err.to_string().contains("rejected the credentials"),
        "{err}"
    );
}

/// Decentralised authentication: a nats-server in operator mode trusts an
/// account (with JetStream) whose user signs in with a `.creds` file; a file
/// whose user the server does not know, one whose JWT has expired and one
/// that is no credentials file each fail with an error naming the file.
#[tokio::test]
async fn credentials_file_authenticates_in_operator_mode() {
    use crate::support::creds::{Operator, stranger_creds_file};
    let operator = Operator::new();
    let server = NatsServer::builder().operator(&operator).launch();
    let dir = tempfile::tempdir().unwrap();
    let mut options = NatsOptions::new([server.url()]);
    let creds = operator.creds_file(dir.path(), "sluice.creds", None);
    options.auth = NatsAuth::CredentialsFile(creds.clone());
    publish_one(&options).await;
    // Without credentials, the server lets no one in.
    let err = connect(&NatsOptions::new([server.url()]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to NATS at {}: the server rejected the credentials (authorization violation)",
            server.url()
        )
    );

    let stranger = stranger_creds_file(dir.path(), "stranger.creds");
    options.auth = NatsAuth::CredentialsFile(stranger.clone());
    let err = connect(&options).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to NATS at {}: the server rejected the user of the credentials file {} (authorization violation)",
            server.url(),
            stranger.display()
        )
    );

    // 2023-11-14T22:13:20Z
    let expired = operator.creds_file(dir.path(), "expired.creds", Some(1_700_000_000));
    options.auth = NatsAuth::CredentialsFile(expired.clone());
    let err = connect(&options).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the user JWT in the NATS credentials file {} expired at 2023-11-14T22:13:20Z: issue the user new credentials",
            expired.display()
        )
    );
    // An expiry still ahead is no obstacle.
    let later = operator.creds_file(dir.path(), "later.creds", Some(4_000_000_000));
    options.auth = NatsAuth::CredentialsFile(later);
    connect(&options)
        .await
        .unwrap_or_else(|e| panic!("connect: {}", error_chain(&e)));

    let garbage = dir.path().join("garbage.creds");
    std::fs::write(&garbage, "user = \"sluice\"\n").unwrap();
    options.auth = NatsAuth::CredentialsFile(garbage.clone());
    let err = connect(&options).await.unwrap_err();
    assert_eq!(
        error_chain(&err),
        format!(
            "cannot read the NATS credentials file {}: cannot parse user JWT from the credentials file",
            garbage.display()
        )
    );
    let missing = dir.path().join("missing.creds");
    options.auth = NatsAuth::CredentialsFile(missing.clone());
    let err = connect(&options).await.unwrap_err();
    assert_eq!(
        error_chain(&err),
        format!(
            "cannot read the NATS credentials file {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[tokio::test]
async fn tls_with_custom_ca_and_client_certificate() {
    let files = TlsFiles::generate();
    let server = NatsServer::builder().tls(&files).launch();
    let mut options = NatsOptions::new([server.url()]);
    options.tls = TlsOptions {
        required: true,
        ca_file: Some(files.ca.clone()),
        ..TlsOptions::default()
    };
    publish_one(&options).await;

    // Without our CA the server's certificate is not trusted.
    let untrusted = NatsOptions {
        tls: TlsOptions {
            required: true,
            ..TlsOptions::default()
        },
        ..options.clone()
    };
    let err = connect(&untrusted).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to NATS at {}: the TLS handshake or TLS setup failed",
            server.url()
        )
    );
    assert!(
        error_chain(&err).contains("UnknownIssuer"),
        "{}",
        error_chain(&err)
    );

    // Mutual TLS: the server demands a client certificate.
    let server = NatsServer::builder().tls(&files).verify_clients().launch();
    let mut options = NatsOptions::new([server.url_localhost()]);
    options.tls = TlsOptions {
        required: true,
        ca_file: Some(files.ca.clone()),
        client_cert: Some(files.client_cert.clone()),
        client_key: Some(files.client_key.clone()),
    };
    publish_one(&options).await;
    options.tls.client_key = None;
    let err = connect(&options).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the NATS TLS client certificate needs both a certificate and a key file"
    );
}
