//! Decoding throughput: a synthetic stream of 1,000,000 inserts into a
//! 6-column table (int4, numeric, text, text, timestamptz, bool), in
//! transactions of 1,000 rows, through (1) the message decoder alone and
//! (2) the whole path the pipeline drives: decode, relation cache, value
//! conversion and batching (256 events per batch). Prints events/s.
//!
//! Run: `cargo bench -p sluice-host --bench decode` (release profile).

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::time::Instant;

use sluice_host::lsn::Lsn;
use sluice_host::pgoutput::{Batcher, PgOutputMessage, decode};

const ROWS: usize = 1_000_000;
const ROWS_PER_TRANSACTION: usize = 1_000;
const RELATION: u32 = 16_384;

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn text(out: &mut Vec<u8>, s: &str) {
    out.push(b't');
    out.extend_from_slice(&(s.len() as i32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The stream as (XLogData start LSN, payload) pairs.
fn stream() -> Vec<(Lsn, Vec<u8>)> {
    let mut messages = Vec::with_capacity(ROWS + 3 * ROWS / ROWS_PER_TRANSACTION);
    let mut lsn = 0x1000_0000u64;
    let mut relation = vec![b'R'];
    relation.extend_from_slice(&RELATION.to_be_bytes());
    string(&mut relation, "public");
    string(&mut relation, "orders");
    relation.push(b'd');
    relation.extend_from_slice(&6i16.to_be_bytes());
    for (key, name, oid) in [
        (1u8, "id", 23u32),
        (0, "total", 1700),
        (0, "email", 25),
        (0, "note", 25),
        (0, "created_at", 1184),
        (0, "paid", 16),
    ] {
        relation.push(key);
        string(&mut relation, name);
        relation.extend_from_slice(&oid.to_be_bytes());
        relation.extend_from_slice(&(-1i32).to_be_bytes());
    }
    for txn in 0..ROWS / ROWS_PER_TRANSACTION {
        let commit_lsn = lsn + 200 * ROWS_PER_TRANSACTION as u64;
        let time = 770_000_000_000_000i64 + txn as i64;
        let mut begin = vec![b'B'];
        begin.extend_from_slice(&commit_lsn.to_be_bytes());
        begin.extend_from_slice(&time.to_be_bytes());
        begin.extend_from_slice(&(1000 + txn as u32).to_be_bytes());
        messages.push((Lsn(lsn), begin));
        messages.push((Lsn(lsn), relation.clone()));
        for i in 0..ROWS_PER_TRANSACTION {
            let id = txn * ROWS_PER_TRANSACTION + i;
            let mut row = vec![b'I'];
            row.extend_from_slice(&RELATION.to_be_bytes());
            row.push(b'N');
            row.extend_from_slice(&6i16.to_be_bytes());
            text(&mut row, &id.to_string());
            text(&mut row, &format!("{}.{:02}", id % 100_000, id % 100));
            text(&mut row, &format!("customer-{id}@example.com"));
            text(&mut row, "left at the door, ring twice please");
            text(
                &mut row,
                &format!(
                    "2024-02-29 12:{:02}:{:02}.{:06}+00",
                    id % 60,
                    id / 60 % 60,
                    id % 1_000_000
                ),
            );
            text(&mut row, if id.is_multiple_of(2) { "t" } else { "f" });
            messages.push((Lsn(lsn), row));
            lsn += 200;
        }
        let mut commit = vec![b'C', 0];
        commit.extend_from_slice(&commit_lsn.to_be_bytes());
        commit.extend_from_slice(&(commit_lsn + 48).to_be_bytes());
        commit.extend_from_slice(&time.to_be_bytes());
        messages.push((Lsn(commit_lsn), commit));
        lsn = commit_lsn + 48;
    }
    messages
}

fn report(what: &str, seconds: f64, bytes: usize) {
    println!(
        "{what:<44} {:>6.3} s  {:>10.0} events/s  {:>7.1} MB/s",
        seconds,
        ROWS as f64 / seconds,
        bytes as f64 / seconds / 1e6
    );
}

fn main() {
    let messages = stream();
    let bytes: usize = messages.iter().map(|(_, m)| m.len()).sum();
    println!(
        "{ROWS} inserts, {} messages, {:.1} MB of pgoutput",
        messages.len(),
        bytes as f64 / 1e6
    );

    for round in 1..=3 {
        let start = Instant::now();
        let mut columns = 0usize;
        for (_, payload) in &messages {
            if let PgOutputMessage::Insert(insert) = decode(payload, false).expect("valid stream") {
                columns += insert.new.len();
            }
        }
        black_box(columns);
        report(
            &format!("round {round}: decode only"),
            start.elapsed().as_secs_f64(),
            bytes,
        );

        let start = Instant::now();
        let mut batcher = Batcher::new(NonZeroUsize::new(256).expect("non-zero"));
        let (mut events, mut batches) = (0usize, 0usize);
        for (lsn, payload) in &messages {
            let out = batcher.push_bytes(payload, *lsn).expect("valid stream");
            if let Some(batch) = out.batch {
                events += batch.events.len();
                batches += 1;
                black_box(batch);
            }
        }
        assert_eq!(events, ROWS);
        black_box(batches);
        report(
            &format!("round {round}: decode + values + batches"),
            start.elapsed().as_secs_f64(),
            bytes,
        );
    }
}
