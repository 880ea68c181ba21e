//! A plugin's standard output and error, written to the host's log: one
//! `tracing` event per line, tagged with the plugin's name and the stream
//! (info for stdout, warn for stderr). This is how `print` debugging in
//! Python or `console.log` in JavaScript reaches the operator.
//!
//! Invariants: a line is never longer than [`MAX_LINE`] bytes (longer ones
//! are split), so a plugin cannot flood one log record; a partial last line
//! is kept until its end arrives (a flush does not cut it in two) and is
//! written when the stream is dropped, never lost silently.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line passed to the log, in bytes.
const MAX_LINE: usize = 4096;

/// Which of the two output streams.
#[derive(Clone, Copy, Debug)]
enum Which {
    Stdout,
    Stderr,
}

/// The factory wasmtime-wasi asks for a stream each time the guest calls
/// `get-stdout` / `get-stderr`.
#[derive(Clone, Debug)]
pub(super) struct LogStream {
    plugin: Arc<str>,
    which: Which,
}

impl LogStream {
    pub(super) fn stdout(plugin: Arc<str>) -> Self {
        LogStream {
            plugin,
            which: Which::Stdout,
        }
    }

    pub(super) fn stderr(plugin: Arc<str>) -> Self {
        LogStream {
            plugin,
            which: Which::Stderr,
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            stream: self.clone(),
            pending: Vec::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI 0.3 guests ask for this one; none is linked.
        Box::new(tokio::io::sink())
    }
}

/// Buffers a partial line until its end arrives.
struct LineWriter {
    stream: LogStream,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        let plugin = &*self.stream.plugin;
        match self.stream.which {
            Which::Stdout => tracing::info!(plugin, stream = "stdout", "{line}"),
            Which::Stderr => tracing::warn!(plugin, stream = "stderr", "{line}"),
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            if self.pending.is_empty() {
                self.emit_clipped(&bytes[..end]);
            } else {
                self.pending.extend_from_slice(&bytes[..end]);
                let line = std::mem::take(&mut self.pending);
                self.emit_clipped(&line);
            }
            bytes = &bytes[end + 1..];
        }
        self.pending.extend_from_slice(bytes);
        while self.pending.len() >= MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            let line = std::mem::replace(&mut self.pending, rest);
            self.emit(&line);
        }
    }

    fn emit_clipped(&self, line: &[u8]) {
        for chunk in line.chunks(MAX_LINE) {
            self.emit(chunk);
        }
        if line.is_empty() {
            self.emit(line);
        }
    }

    fn drain(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Lines are written as they complete; a partial one waits for its
        // end rather than appearing as two records.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.drain();
    }
}
