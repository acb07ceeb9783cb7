//! Portico's integration tests: one binary that drives the real gateway router and the
//! real sandbox EHR over loopback sockets.

mod cache;
mod facade;
mod fault_matrix;
mod faults;
mod gateway;
mod isolation;
mod login;
mod portal;
mod proxies;
mod replicas;
mod smart;
mod smart_facade;
mod streaming;
mod support;
mod upstream;
mod web;
