//! What one plugin instance may consume: linear memory, wall-clock time per
//! call, and optionally fuel (executed instructions).
//!
//! Memory is capped by a [`ResourceLimiter`] on the instance's store, below
//! the pooling allocator's engine-wide slot size. The limiter refuses the
//! `memory.grow` (the guest sees `-1`, as the Wasm specification allows)
//! rather than trapping, and records that it did: a guest allocator that
//! cannot cope then traps, and the runtime reports the trap as the memory
//! limit it really is.
//!
//! Time is capped with epoch interruption: the engine's ticker thread bumps
//! the epoch every tick, and each call sets its deadline in ticks, so a
//! guest in an endless loop traps within one tick of its deadline.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Limits for one plugin instance; each call is checked against them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory of the instance, in bytes.
    pub memory: u64,
    /// Maximum wall-clock time of one call (`init`, `transform`, `encode`).
    pub deadline: Duration,
    /// Fuel given to each call, when the runtime meters fuel.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            deadline: Duration::from_secs(1),
            fuel: None,
        }
    }
}

impl Limits {
    /// The number of epoch ticks that covers `deadline` at least: one more
    /// than the quotient, because the current tick is partly gone already.
    pub(super) fn deadline_ticks(&self, tick: Duration) -> u64 {
        let tick = tick.as_nanos().max(1);
        let ticks = self.deadline.as_nanos().div_ceil(tick) + 1;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }
}

/// The store's resource limiter: a memory cap that remembers being hit.
#[derive(Debug)]
pub(super) struct MemoryCap {
    limit: usize,
    hit: bool,
}

impl MemoryCap {
    pub(super) fn new(limit: u64) -> Self {
        MemoryCap {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            hit: false,
        }
    }

    /// Whether a growth was refused since the instance was created.
    pub(super) fn was_hit(&self) -> bool {
        self.hit
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's per-table element
        // limit; they hold function references, not data.
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_covers_a_partial_tick() {
        let limits = Limits {
            deadline: Duration::from_millis(100),
            ..Limits::default()
        };
        assert_eq!(limits.deadline_ticks(Duration::from_millis(5)), 21);
        assert_eq!(limits.deadline_ticks(Duration::from_millis(3)), 35);
    }

    #[test]
    fn memory_cap_refuses_and_remembers() {
        let mut cap = MemoryCap::new(1 << 20);
        assert!(cap.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!cap.was_hit());
        assert!(!cap.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert!(cap.was_hit());
    }
}
