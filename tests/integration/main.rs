//! hookrelay's integration tests: the real server, real sled directories,
//! real HTTP receivers. One binary, one module per concern.

mod support;

mod browser;
mod crash;
mod delivery;
mod feed;
mod ingest;
mod interop;
mod malformed;
mod openapi;
mod operability;
mod process;
mod readme;
mod simulations;
mod tenancy;
mod webhooks;
