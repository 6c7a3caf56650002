//! Shared end-to-end test support: loopback upstream servers that record what they receive, and clients.
#![allow(dead_code)]

pub mod client;
pub mod gateway;
pub mod grpc;
pub mod h2frames;
pub mod h2origin;
pub mod harness;
pub mod process;
pub mod tls;
pub mod upstream;
