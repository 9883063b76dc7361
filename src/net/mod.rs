//! Outbound network safety and the HTTP client deliveries go through.

pub mod client;
pub mod connections;
pub mod ssrf;
