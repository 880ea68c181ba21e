//! The plugin runtime (to be written).
