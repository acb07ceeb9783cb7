//! Portal API: messages.
