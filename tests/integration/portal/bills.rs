//! Portal API: bills.
