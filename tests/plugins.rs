//! Plugin runtime tests against real components (to be written).
