//! Retry promises (to be written).
