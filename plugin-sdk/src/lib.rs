//! Sluice plugin SDK (to be written).
