//! Crash safety (to be written).
