//! Acknowledgement fan-in: which transactions JetStream has stored.
//!
//! Messages and transaction ends enter one FIFO in the order the pipeline
//! publishes them; the publisher reports completions in that same order.
//! A transaction is acknowledged when every message submitted before its
//! end is stored, which also covers transactions that produced no message
//! at all (everything filtered out): they are acknowledged as soon as the
//! messages ahead of them are.

use std::collections::VecDeque;

use crate::lsn::Lsn;

/// A completed transaction, as the offset record needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    pub xid: u32,
    /// The commit record's start (`Batch::commit_lsn`).
    pub commit_lsn: Lsn,
    /// The commit record's end: the offset.
    pub end_lsn: Lsn,
    pub commit_time: i64,
    /// False for the end of a snapshot or backfill chunk: no transaction,
    /// so the tracker does not know it.
    pub transaction: bool,
    /// What the flusher records once this is stored (a snapshot chunk's
    /// progress, the backfills' state), by sequence number: recorded in the
    /// same write as the position it comes with.
    pub update: Option<u64>,
}

#[derive(Debug)]
enum Marker {
    Message,
    Commit(CommitInfo),
}

/// The FIFO of published messages and transaction ends.
#[derive(Debug, Default)]
pub struct AckQueue {
    queue: VecDeque<Marker>,
}

impl AckQueue {
    /// A message is about to be published (call before publishing, so its
    /// completion can never come first).
    pub fn message(&mut self) {
        self.queue.push_back(Marker::Message);
    }

    /// A transaction's last message has been submitted; returns the
    /// transactions acknowledged now.
    pub fn commit(&mut self, info: CommitInfo) -> Vec<CommitInfo> {
        self.queue.push_back(Marker::Commit(info));
        self.drain()
    }

    /// The oldest message in flight was stored; returns the transactions
    /// acknowledged now.
    pub fn stored(&mut self) -> Vec<CommitInfo> {
        let front = self.queue.pop_front();
        debug_assert!(
            matches!(front, Some(Marker::Message)),
            "completions follow submissions"
        );
        self.drain()
    }

    /// Messages submitted but not yet stored.
    pub fn in_flight(&self) -> usize {
        self.queue
            .iter()
            .filter(|m| matches!(m, Marker::Message))
            .count()
    }

    fn drain(&mut self) -> Vec<CommitInfo> {
        let mut done = Vec::new();
        while let Some(Marker::Commit(info)) = self.queue.front() {
            done.push(*info);
            self.queue.pop_front();
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(n: u64) -> CommitInfo {
        CommitInfo {
            xid: n as u32,
            commit_lsn: Lsn(n * 10),
            end_lsn: Lsn(n * 10 + 1),
            commit_time: 0,
            transaction: true,
            update: None,
        }
    }

    #[test]
    fn a_commit_waits_for_the_messages_before_it() {
        let mut q = AckQueue::default();
        q.message();
        q.message();
        assert!(q.commit(info(1)).is_empty());
        assert_eq!(q.commit(info(2)), [] as [CommitInfo; 0], "behind 1");
        q.message();
        assert!(q.stored().is_empty());
        assert_eq!(q.stored(), [info(1), info(2)]);
        assert_eq!(q.in_flight(), 1);
        assert!(q.commit(info(3)).is_empty());
        assert_eq!(q.stored(), [info(3)]);
        assert_eq!(q.commit(info(4)), [info(4)], "nothing in flight: at once");
    }
}
