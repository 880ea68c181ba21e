//! Stream position: what has been read, what is stored, what may be
//! confirmed to PostgreSQL (DESIGN.md §3).
//!
//! - [`tracker`]: the flush candidate from out-of-order acknowledgements.
//! - [`offset`]: the offset record, the durable "streamed up to here".
//! - [`progress`]: snapshot progress, stored inside the offset record.
//! - [`store`]: where the offset lives (memory, file, NATS KV); a store
//!   never moves backwards.
//! - [`startup`]: reconciling the offset with the slot at start-up (the
//!   mismatch strategies), and carrying the decision out.

pub mod offset;
pub mod progress;
pub mod startup;
pub mod store;
pub mod tracker;

pub use offset::OffsetRecord;
pub use progress::{BackfillProgress, SnapshotProgress, TableProgress};
pub use store::{OffsetStore, StoreError};
pub use tracker::Tracker;
