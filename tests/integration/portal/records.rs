//! Portal API: records.
