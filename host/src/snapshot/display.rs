//! The snapshot's progress on the terminal: one line per table with rows
//! read, the estimate of the total (`pg_class.reltuples`), the rate and the
//! time left, redrawn every second, only when stderr is a terminal (logs
//! and pipes get the `tracing` lines instead).
//!
//! Readers count rows as they read them ([`Counts`]); the display only
//! reads the counters, so it costs the readers one atomic add per chunk.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One table's counters.
#[derive(Debug)]
pub(super) struct TableCounts {
    name: String,
    estimate: u64,
    read: AtomicU64,
    started: std::sync::OnceLock<Instant>,
    done: AtomicBool,
}

impl TableCounts {
    pub(super) fn started(&self) {
        let _ = self.started.set(Instant::now());
    }

    pub(super) fn read(&self, rows: u64) {
        self.read.fetch_add(rows, Ordering::Relaxed);
    }

    pub(super) fn done(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Every table's counters, shared by the readers and the display.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) tables: Vec<Arc<TableCounts>>,
}

impl Counts {
    /// Adds a table whose total is estimated at `estimate` rows, of which
    /// `already` were read before (a resumed snapshot).
    pub(super) fn add(&mut self, name: String, estimate: u64, already: u64) -> Arc<TableCounts> {
        let t = Arc::new(TableCounts {
            name,
            estimate,
            read: AtomicU64::new(already),
            started: std::sync::OnceLock::new(),
            done: AtomicBool::new(false),
        });
        self.tables.push(t.clone());
        t
    }
}

/// Formats one table's line.
fn line(t: &TableCounts, now: Instant, base: u64) -> String {
    let read = t.read.load(Ordering::Relaxed);
    let mut s = format!("  {:<32} {:>12} rows", t.name, read);
    if t.estimate > 0 {
        let _ = write!(s, " of ~{}", t.estimate.max(read));
    }
    if t.done.load(Ordering::Relaxed) {
        s.push_str("  done");
        return s;
    }
    let Some(started) = t.started.get() else {
        s.push_str("  waiting");
        return s;
    };
    let secs = now.duration_since(*started).as_secs_f64();
    let rate = if secs > 0.0 {
        (read.saturating_sub(base)) as f64 / secs
    } else {
        0.0
    };
    let _ = write!(s, "  {rate:>9.0} rows/s");
    if rate > 0.0 && t.estimate > read {
        let left = (t.estimate - read) as f64 / rate;
        let _ = write!(s, "  ETA {}s", left.ceil() as u64);
    }
    s
}

/// Redraws the progress every second until `stop` is set; does nothing
/// unless stderr is a terminal.
pub(super) fn spawn(counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    if !std::io::stderr().is_terminal() || counts.tables.is_empty() {
        return;
    }
    let base: Vec<u64> = counts
        .tables
        .iter()
        .map(|t| t.read.load(Ordering::Relaxed))
        .collect();
    tokio::spawn(async move {
        let mut drawn = 0usize;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let finished = stop.load(Ordering::Relaxed);
            let now = Instant::now();
            let mut out = String::new();
            if drawn > 0 {
                let _ = write!(out, "\x1b[{drawn}A");
            }
            for (t, b) in counts.tables.iter().zip(&base) {
                let _ = writeln!(out, "\x1b[2K{}", line(t, now, *b));
            }
            drawn = counts.tables.len();
            let _ = std::io::stderr().write_all(out.as_bytes());
            if finished {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_rows_rate_and_time_left() {
        let mut c = Counts::default();
        let t = c.add("public.items".into(), 1000, 100);
        assert!(line(&t, Instant::now(), 100).ends_with("waiting"));
        t.started();
        t.read(400);
        let later = *t.started.get().unwrap() + Duration::from_secs(2);
        let text = line(&t, later, 100);
        assert!(text.contains("500 rows of ~1000"), "{text}");
        assert!(text.contains("200 rows/s"), "{text}");
        assert!(text.contains("ETA 3s"), "{text}");
        t.done();
        assert!(line(&t, later, 100).ends_with("done"));
    }
}
