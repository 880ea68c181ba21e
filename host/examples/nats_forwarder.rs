//! The bare forwarder the OLTP benchmark (`scripts/bench-oltp`) measures
//! Sluice against: `pg_recvlogical` with test_decoding on stdin, one
//! JetStream message per row change out, each with a `Nats-Msg-Id`, acks
//! awaited in a window of 1,024. No decoding into values, no plugins, no
//! position handling: the ceiling of "one message per row" on this
//! machine's nats-server.
//!
//! `pg_recvlogical … -f - | nats_forwarder NATS_URL SUBJECT_PREFIX`; prints
//! the messages stored and the rate once stdin ends.

use std::collections::VecDeque;
use std::time::Instant;

use async_nats::jetstream::{self, message::PublishMessage};
use tokio::io::{AsyncBufReadExt, BufReader};

const WINDOW: usize = 1024;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(prefix)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: nats_forwarder NATS_URL SUBJECT_PREFIX < test_decoding lines");
    };
    let js = jetstream::new(async_nats::connect(&url).await?);
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
        headers.insert("Nats-Msg-Id", format!("fwd-{sent}").as_str());
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
