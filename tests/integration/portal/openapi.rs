//! Portal API: openapi.
