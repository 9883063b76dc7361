//! The product's vocabulary, free of HTTP and storage: organisations,
//! webhooks (with their parse-don't-validate URL), the event catalog,
//! ingested events, and delivery attempts with their retry schedule.

pub mod catalog;
pub mod delivery;
pub mod event;
pub mod organisation;
pub mod webhook;
