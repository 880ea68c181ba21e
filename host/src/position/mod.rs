//! Stream position: what has been read, what is stored, what may be
//! confirmed to PostgreSQL (DESIGN.md §3).
//!
//! - [`tracker`]: the flush candidate from out-of-order acknowledgements.

pub mod tracker;

pub use tracker::Tracker;
