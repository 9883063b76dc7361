//! hookrelay's integration tests: the real server, real sled directories,
//! real HTTP receivers. One binary, one module per concern.

#[allow(dead_code)] // helpers shared by modules still being written
mod support;

mod malformed;
mod process;
mod tenancy;
mod webhooks;
