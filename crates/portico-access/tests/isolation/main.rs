//! The adversarial isolation suite: patient `pat-1` (A) against `pat-12` (B), whose id
//! starts with A's, through reads, searches, Bundles and writes. Every case is refused
//! or yields only A's data.

mod bundle;
mod common;
mod fuzz;
mod read;
mod search;
mod write;
