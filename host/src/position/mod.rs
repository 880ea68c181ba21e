//! Stream position: what has been read, what is stored, what may be
//! confirmed to PostgreSQL (DESIGN.md §3).
//!
//! - [`confirm`]: the one owner of what may be confirmed to PostgreSQL:
//!   acknowledgements in, the offset recorded, the flush LSN out.
//! - [`history`]: which timeline wrote a position (for message ids).
//! - [`offset`]: the offset record, the durable "streamed up to here".
//! - [`progress`]: snapshot progress, stored inside the offset record.
//! - [`store`]: where the offset lives (memory, file, NATS KV); a store
//!   never moves backwards.
//! - [`startup`]: reconciling the offset with the slot at start-up (the
//!   mismatch strategies), and carrying the decision out.

pub mod confirm;
pub mod history;
pub mod offset;
pub mod progress;
pub mod startup;
pub mod store;

pub use confirm::{
    Confirmer, ConfirmerSettings, RecordWrite, RecordWritten, Ticket, Transaction, Update,
};
pub use offset::OffsetRecord;
pub use progress::{BackfillProgress, SnapshotProgress, TableProgress};
pub use store::{OffsetStore, StoreError};
