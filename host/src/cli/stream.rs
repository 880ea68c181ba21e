//! `sluice stream show`: what the pipeline's JetStream stream holds, as a
//! user reads it back — one JSON object per stored message, with its stream
//! sequence, subject, every header (the host's `Nats-Msg-Id` and `Sluice-*`
//! included) and the payload shown as `sluice plugin run` shows it.
//!
//! Read-only: it fetches messages by sequence with the stream's message-get
//! API (no consumer is created, so nothing on the server changes), skipping
//! sequences that were deleted. Meant for looking, not for consuming a large
//! stream: one request per message.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use async_nats::jetstream;
use clap::Subcommand;
use serde::Serialize;

use sluice_host::config::Manifest;
use sluice_host::model::Message;
use sluice_host::publish;

use super::message_view::MessageView;

#[derive(Debug, Subcommand)]
pub(super) enum StreamCommand {
    /// Prints the messages stored in the manifest's stream as JSON lines.
    Show {
        /// The pipeline's manifest.
        manifest: PathBuf,
        /// Only the last N messages.
        #[arg(long, value_name = "N")]
        last: Option<u64>,
    },
}

pub(super) fn run(command: StreamCommand) -> anyhow::Result<()> {
    super::async_runtime()?.block_on(async move {
        match command {
            StreamCommand::Show { manifest, last } => show(&manifest, last).await,
        }
    })
}

/// One stored message as printed.
#[derive(Serialize)]
struct StoredView<'a> {
    seq: u64,
    #[serde(flatten)]
    message: MessageView<'a>,
}

async fn show(file: &Path, last: Option<u64>) -> anyhow::Result<()> {
    let manifest = Manifest::load(file)?;
    let name = manifest.nats.stream.name.as_str();
    let client = publish::connect(&manifest.nats.connection).await?;
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream(name)
        .await
        .with_context(|| format!("cannot open JetStream stream `{name}`"))?;
    let state = stream
        .info()
        .await
        .with_context(|| format!("cannot read the state of stream `{name}`"))?
        .state
        .clone();
    if state.messages == 0 {
        eprintln!("stream `{name}` holds no messages");
        return Ok(());
    }
    let first = match last {
        Some(n) => state
            .last_sequence
            .saturating_sub(n.saturating_sub(1))
            .max(state.first_sequence),
        None => state.first_sequence,
    };
    let mut out = std::io::stdout().lock();
    for seq in first..=state.last_sequence {
        let stored = match stream.get_raw_message(seq).await {
            Ok(m) => m,
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read message {seq} of `{name}`"));
            }
        };
        let message = Message {
            subject: stored.subject.to_string(),
            headers: publish::header_pairs(&stored.headers),
            payload: stored.payload.to_vec(),
            event: None,
        };
        let view = StoredView {
            seq,
            message: MessageView::new(&message),
        };
        serde_json::to_writer(&mut out, &view)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
