//! Portal API: appointments.
