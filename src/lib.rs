//! Coregate: a thread-per-core edge gateway.
//!
//! The data path, on one core, from accept to close:
//!
//! ```text
//! listener   accept on this core's SO_REUSEPORT socket (io_uring, compio)
//! conn       HTTP/1 codec: head (h1::head) + body framing (h1::body) -> neutral head (message)
//! proxy      sanitize (sanitize, path) -> route (route) -> act (action: redirect, direct
//!            response, weighted split, rewrites) -> pick (balance)
//!            -> checkout (pool) or connect (upstream) -> forward head and body (upstream)
//!            -> relay the response -> checkin -> record the Outcome (stats)
//! ```
//!
//! Shared and immutable: the [`snapshot::Snapshot`] compiled from a validated
//! [`config::Config`]. Per core and never shared: the [`worker::Worker`] with its view of the
//! snapshot, balancer state, upstream pools and counters.

// The config dump's one json! literal nests deeper than the default limit of 128.
#![recursion_limit = "256"]

pub mod access_log;
pub mod action;
pub mod admin;
pub mod balance;
pub mod config;
pub mod conn;
pub mod control;
pub mod demo;
pub mod dns;
pub mod edit_sink;
pub mod error;
pub mod gateway;
pub mod h1;
pub mod h2;
pub mod header_edit;
pub mod health;
pub mod hosts;
pub mod listener;
pub mod message;
pub mod notify;
pub mod outlier;
pub mod park;
pub mod path;
pub mod pool;
pub mod proxy;
pub mod resolve;
pub mod retire;
pub mod route;
pub mod route_match;
pub mod rt;
pub mod sanitize;
pub mod slot;
pub mod snapshot;
pub mod spare;
pub mod stats;
pub mod sticky;
#[cfg(test)]
mod testing;
pub mod timer;
pub mod tls;
pub mod trace;
pub mod transport;
pub mod upstream;
pub mod worker;
pub mod zipkin;

pub use gateway::{Gateway, StartError};
