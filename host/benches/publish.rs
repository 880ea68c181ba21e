//! Publishing throughput against a real nats-server (file storage), for several
//! window sizes. Prints messages per second; asserts nothing.
//!
//! `cargo bench -p sluice-host --bench publish` (set `BENCH_MESSAGES` to change the
//! message count, 200,000 by default).

// The tests' support (tests/it/support/); a benchmark uses a part of it.
#[allow(dead_code)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use std::time::Instant;

use sluice_host::lsn::Lsn;
use sluice_host::model::Message;
use sluice_host::publish::{HostMeta, Outgoing, Publisher, PublisherConfig, SubjectFilter, msg_id};

const PAYLOAD: usize = 300;
const WINDOWS: [usize; 4] = [1, 64, 256, 1024];

fn main() {
    let messages: u64 = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let server = support::nats::NatsServer::launch();
    println!(
        "publishing {messages} messages of {PAYLOAD} bytes with Nats-Msg-Id to a file-storage stream"
    );
    println!(
        "{:>8} {:>12} {:>10} {:>10}",
        "window", "messages/s", "MB/s", "seconds"
    );
    for window in WINDOWS {
        runtime.block_on(run(&server, window, messages));
    }
}

async fn run(server: &support::nats::NatsServer, window: usize, messages: u64) {
    let js = server.jetstream().await;
    let stream = format!("BENCH{window}");
    let prefix = format!("bench.{window}");
    support::nats::create_stream(&js, &stream, &[&format!("{prefix}.>")]).await;
    let filter = SubjectFilter::parse([format!("{prefix}.>")]).expect("filter");
    let config = PublisherConfig {
        max_in_flight: window,
        stream: Some(stream.clone()),
        ..PublisherConfig::default()
    };
    let (publisher, mut completions) = Publisher::new(server.client().await, filter, config);
    let payload = vec![b'x'; PAYLOAD];
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        for expected in 0..messages {
            let done = completions
                .recv()
                .await
                .expect("completions ended")
                .expect("publish failed");
            assert_eq!(done.token, expected);
        }
    });
    for i in 0..messages {
        let commit_lsn = Lsn(0x1000 + i / 10 * 0x100);
        let message = Outgoing {
            message: Message {
                subject: format!("{prefix}.public.orders"),
                headers: Vec::new(),
                payload: payload.clone(),
                event: Some(0),
            },
            meta: HostMeta {
                msg_id: msg_id("bench", commit_lsn, 1, i % 10, 0),
                commit_lsn,
                lsn: Some(commit_lsn),
                table: Some("public.orders".into()),
                op: Some("insert"),
                error: None,
                metadata: true,
            },
        };
        publisher.publish(message, i).await.expect("publish");
    }
    reader.await.expect("reader");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(support::nats::stream_len(&js, &stream).await, messages);
    println!(
        "{window:>8} {:>12.0} {:>10.1} {seconds:>10.2}",
        messages as f64 / seconds,
        (messages as f64 * PAYLOAD as f64) / seconds / 1e6
    );
}
