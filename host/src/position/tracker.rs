//! The position tracker: which LSN is safe to confirm to the server.
//!
//! Transactions are registered in commit order as the decoder completes
//! them; acknowledgements (every message of a transaction stored by
//! JetStream) may arrive in any order. The tracker yields the flush
//! candidate: the commit end LSN of the newest transaction such that it and
//! every earlier one are acknowledged. Invariants, checked in debug builds
//! and by the tests:
//!
//! - the candidate never moves backwards;
//! - it never passes a transaction that is registered but unacknowledged,
//!   nor one that is still being received;
//! - `received` (what the host has read from the server, the standby
//!   status's write LSN) is always at least the candidate.
//!
//! A keepalive from the server may move the candidate to the server's WAL
//! end, but only when nothing is in flight: no transaction partly received,
//! none registered and unacknowledged. That is the `connector-and-driver`
//! flush mode's safety condition (DESIGN §3): WAL that holds no change for
//! the publication can be recycled without skipping an event in flight.

use std::collections::VecDeque;

use crate::lsn::Lsn;

/// Tracks registered transactions and their acknowledgements.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Registered, not yet contiguously acknowledged transactions, in commit
    /// order, with whether each is acknowledged.
    pending: VecDeque<(Lsn, bool)>,
    /// A transaction has begun and not yet completed.
    receiving: bool,
    /// The newest LSN read from the server.
    received: Lsn,
    /// The flush candidate.
    confirmed: Lsn,
}

impl Tracker {
    /// A tracker whose candidate starts at `start` (the position streaming
    /// resumes from: everything up to it is already confirmed).
    pub fn new(start: Lsn) -> Self {
        Tracker {
            confirmed: start,
            received: start,
            ..Tracker::default()
        }
    }

    /// Data up to `lsn` was read from the server.
    pub fn received(&mut self, lsn: Lsn) {
        self.received = self.received.max(lsn);
    }

    /// A transaction's first event was read.
    pub fn transaction_begun(&mut self) {
        self.receiving = true;
    }

    /// A transaction was read completely; it commits at `commit_end`.
    /// Returns false (and ignores it) when `commit_end` is not after every
    /// transaction registered before, which would break commit order.
    pub fn transaction_complete(&mut self, commit_end: Lsn) -> bool {
        self.receiving = false;
        let newest = self.pending.back().map_or(self.confirmed, |(lsn, _)| *lsn);
        if commit_end <= newest {
            return false;
        }
        self.received(commit_end);
        self.pending.push_back((commit_end, false));
        true
    }

    /// Every message of the transaction committing at `commit_end` is
    /// stored. Unknown LSNs (already confirmed, or never registered) are
    /// ignored and reported as false.
    pub fn acknowledged(&mut self, commit_end: Lsn) -> bool {
        let Ok(i) = self
            .pending
            .binary_search_by_key(&commit_end, |(lsn, _)| *lsn)
        else {
            return false;
        };
        self.pending[i].1 = true;
        while let Some(&(lsn, true)) = self.pending.front() {
            debug_assert!(
                lsn > self.confirmed,
                "flush candidate must only move forward"
            );
            self.confirmed = lsn;
            self.pending.pop_front();
        }
        true
    }

    /// The server's keepalive reports its WAL end: when nothing is in
    /// flight, everything up to it may be confirmed. Returns the new
    /// candidate if it moved.
    pub fn idle_until(&mut self, wal_end: Lsn) -> Option<Lsn> {
        self.received(wal_end);
        if self.receiving || !self.pending.is_empty() || wal_end <= self.confirmed {
            return None;
        }
        self.confirmed = wal_end;
        Some(wal_end)
    }

    /// Whether no transaction is partly received or unacknowledged.
    pub fn is_idle(&self) -> bool {
        !self.receiving && self.pending.is_empty()
    }

    /// The flush candidate: safe to store as the offset and then confirm.
    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    /// The newest LSN read from the server (never below the candidate).
    pub fn received_lsn(&self) -> Lsn {
        debug_assert!(self.received >= self.confirmed);
        self.received
    }

    /// How many transactions wait for acknowledgement.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn moves_over_a_contiguous_prefix_only() {
        let mut t = Tracker::new(Lsn(10));
        for lsn in [20, 30, 40] {
            t.transaction_begun();
            assert!(t.transaction_complete(Lsn(lsn)));
        }
        assert!(t.acknowledged(Lsn(30)));
        assert_eq!(t.confirmed(), Lsn(10), "30 waits for 20");
        assert!(t.acknowledged(Lsn(20)));
        assert_eq!(t.confirmed(), Lsn(30));
        assert!(!t.acknowledged(Lsn(20)), "already confirmed");
        assert!(t.acknowledged(Lsn(40)));
        assert_eq!(t.confirmed(), Lsn(40));
        assert!(t.is_idle());
    }

    #[test]
    fn keepalive_flush_waits_for_everything_in_flight() {
        let mut t = Tracker::new(Lsn(10));
        t.transaction_begun();
        assert_eq!(
            t.idle_until(Lsn(100)),
            None,
            "a transaction is being received"
        );
        assert!(t.transaction_complete(Lsn(50)));
        assert_eq!(t.idle_until(Lsn(100)), None, "a transaction awaits its ack");
        t.acknowledged(Lsn(50));
        assert_eq!(t.idle_until(Lsn(100)), Some(Lsn(100)));
        assert_eq!(t.idle_until(Lsn(90)), None, "never backwards");
        assert_eq!(t.confirmed(), Lsn(100));
        assert!(
            !t.transaction_complete(Lsn(100)),
            "commit order is enforced"
        );
    }

    proptest! {
        /// Whatever the order of acknowledgements, the candidate is always
        /// the newest LSN of the acknowledged prefix, and only moves forward.
        #[test]
        fn candidate_is_the_acknowledged_prefix(order in Just((0..40usize).collect::<Vec<_>>()).prop_shuffle()) {
            let mut t = Tracker::new(Lsn(0));
            let lsns: Vec<Lsn> = (1..=40u64).map(|i| Lsn(i * 100)).collect();
            for l in &lsns {
                t.transaction_begun();
                prop_assert!(t.transaction_complete(*l));
            }
            let mut acked = vec![false; lsns.len()];
            let mut last = Lsn(0);
            for i in order {
                t.acknowledged(lsns[i]);
                acked[i] = true;
                let prefix = acked.iter().take_while(|a| **a).count();
                let expected = if prefix == 0 { Lsn(0) } else { lsns[prefix - 1] };
                prop_assert_eq!(t.confirmed(), expected);
                prop_assert!(t.confirmed() >= last);
                prop_assert!(t.received_lsn() >= t.confirmed());
                last = t.confirmed();
            }
        }
    }
}
