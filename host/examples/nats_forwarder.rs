//! The bare forwarder the OLTP benchmark (`scripts/bench-oltp`) measures
//! Sluice against: `pg_recvlogical` with test_decoding on stdin, one
//! JetStream message per row change out, each with a `Nats-Msg-Id`, acks
//! awaited in a window of 1,024. No decoding into values, no plugins, no
//! position handling: the ceiling of "one message per row" on this
//! machine's nats-server.
//!
//! `pg_recvlogical … -f - | nats_forwarder NATS_URL SUBJECT_PREFIX [--host-headers]`;
//! prints the messages stored and the rate once stdin ends.
//!
//! `--host-headers` adds what Sluice adds to every message besides the id
//! (`Nats-Expected-Stream`, `Sluice-Table`, `Sluice-Op`, `Sluice-Commit-Lsn`,
//! `Sluice-Lsn`, with values of the same length), so that the benchmark can
//! show what those headers cost the client and nats-server on their own.

use std::collections::VecDeque;
use std::time::Instant;

use async_nats::jetstream::{self, message::PublishMessage};
use tokio::io::{AsyncBufReadExt, BufReader};

const WINDOW: usize = 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(prefix)) = (args.next(), args.next()) else {
        anyhow::bail!(
            "usage: nats_forwarder NATS_URL SUBJECT_PREFIX [--host-headers] < test_decoding lines"
        );
    };
    let host_headers = match args.next().as_deref() {
        None => false,
        Some("--host-headers") => true,
        Some(other) => anyhow::bail!("nats_forwarder: unknown argument `{other}`"),
    };
    let stream = prefix.to_uppercase();
    let js = jetstream::new(async_nats::connect(&url).await?);
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{prefix}.>")],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let mut lines = BufReader::with_capacity(1 << 20, tokio::io::stdin()).lines();
    let mut acks = VecDeque::with_capacity(WINDOW);
    let mut sent = 0u64;
    let mut started = None;
    while let Some(line) = lines.next_line().await? {
        // "table public.t: INSERT: id[bigint]:1 …"; BEGIN and COMMIT lines are skipped.
        let Some(table) = line
            .strip_prefix("table ")
            .and_then(|rest| rest.split(':').next())
        else {
            continue;
        };
        started.get_or_insert_with(Instant::now);
        sent += 1;
        let mut headers = async_nats::HeaderMap::new();
        if host_headers {
            // What Sluice sends, with values as long as its own: the
            // message number stands in for LSNs and the transaction.
            let lsn = 0x1000_0000 + sent * 160;
            let id = format!("{prefix}:{lsn:016X}:{}:{}:0", sent / 100, sent % 100);
            let lsn = format!("0/{lsn:X}");
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert("Nats-Expected-Stream", stream.as_str());
            headers.insert("Sluice-Table", table);
            headers.insert("Sluice-Op", "insert");
            headers.insert("Sluice-Commit-Lsn", lsn.as_str());
            headers.insert("Sluice-Lsn", lsn.as_str());
        } else {
            headers.insert("Nats-Msg-Id", format!("fwd-{sent}").as_str());
        }
        let message = PublishMessage::build()
            .payload(line.clone().into())
            .headers(headers);
        acks.push_back(
            js.send_publish(format!("{prefix}.{table}"), message)
                .await?,
        );
        if acks.len() >= WINDOW
            && let Some(ack) = acks.pop_front()
        {
            ack.await?;
        }
    }
    for ack in acks {
        ack.await?;
    }
    let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!("stored {sent} messages in {seconds:.3} s");
    Ok(())
}
