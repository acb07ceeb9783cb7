//! Portal API: medications.
