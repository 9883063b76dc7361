//! The actors: the registry supervises one delivery actor per webhook,
//! whose log batches the log writer stores; the broadcaster feeds the
//! WebSocket feed sessions.

mod body_cache;
pub mod broadcaster;
pub mod delivery;
pub mod feed_budget;
pub mod feed_session;
pub mod held_budget;
mod log_buffer;
pub mod log_writer;
pub mod registry;

use std::time::Duration;

use std::sync::Arc;

use crate::domain::delivery::RetryPolicy;
use crate::metrics::Metrics;
use crate::net::client::ClientSettings;
use crate::net::connections::ConnectionBudget;
use crate::storage::Store;

/// What every delivery actor shares: the store, its log writer and the
/// delivery settings.
pub struct DeliveryContext {
    pub store: Store,
    pub log_writer: log_writer::LogWriter,
    pub policy: RetryPolicy,
    pub client: ClientSettings,
    /// Every attempt holds one of these slots while it is out.
    pub connections: ConnectionBudget,
    pub max_in_flight: usize,
    pub disable_after: Duration,
    pub metrics: Arc<Metrics>,
    /// The deliveries all actors may hold in memory.
    pub held_budget: Arc<held_budget::HeldBudget>,
}
