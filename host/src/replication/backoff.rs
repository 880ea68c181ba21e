//! Exponential backoff with jitter, for reconnecting after a transient
//! replication error.
//!
//! Invariant: every delay lies in `[initial/2, max]`; the nominal delay
//! doubles per attempt until `max` and starts over after [`Backoff::reset`]
//! (call it once a connection has streamed successfully).
//!
//! [`Backoff::for_hosts`] lowers `max` to [`WALK_MAX`] for a multi-host
//! source: there a lost connection usually means a failover, whose end
//! (a standby promoted) no attempt can hasten and each attempt only costs
//! a walk over the list, so waiting long between walks only delays the
//! first message from the new primary.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delays between reconnection attempts.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

/// The longest delay between walks over a multi-host list.
const WALK_MAX: Duration = Duration::from_secs(2);

impl Default for Backoff {
    /// 100 ms doubling up to 30 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// This backoff for a source with `hosts` hosts: `max` at most
    /// [`WALK_MAX`] when there are several.
    pub fn for_hosts(mut self, hosts: usize) -> Self {
        if hosts > 1 {
            self.max = self.max.min(WALK_MAX).max(self.initial);
            self.next = self.next.min(self.max);
        }
        self
    }

    /// The delay before the next attempt: the nominal delay with up to half
    /// of it taken off at random, so that many hosts restarted together do
    /// not reconnect in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        let random = RandomState::new().build_hasher().finish();
        let jitter = nominal.mul_f64((random % 1000) as f64 / 2000.0);
        nominal - jitter
    }

    /// Starts over from the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_bounds_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        let nominal = [100, 200, 350, 350, 350];
        for (d, n) in delays.iter().zip(nominal) {
            let n = Duration::from_millis(n);
            assert!(*d <= n && *d >= n / 2, "{d:?} vs {n:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_multi_host_source_never_waits_past_the_walk_maximum() {
        let mut one = Backoff::default().for_hosts(1);
        let mut two = Backoff::default().for_hosts(2);
        let one: Vec<_> = (0..12).map(|_| one.next_delay()).collect();
        let two: Vec<_> = (0..12).map(|_| two.next_delay()).collect();
        assert!(two.iter().all(|d| *d <= WALK_MAX), "{two:?}");
        assert!(two[11] >= WALK_MAX / 2, "{two:?}");
        assert!(one[11] > WALK_MAX, "a single host keeps doubling: {one:?}");
    }
}
