//! Outbound network safety, the HTTP client deliveries go through, and how
//! many of them may hold a connection at once.

pub mod client;
pub mod connections;
pub mod ssrf;
