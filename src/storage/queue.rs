//! Each webhook's outstanding deliveries, in event order.

use uuid::Uuid;

use super::codec::{decode, encode};
use super::{pair_key, Result, Store};
use crate::domain::delivery::QueuedDelivery;

impl Store {
    pub fn queued_deliveries(&self, webhook_id: Uuid) -> Result<Vec<QueuedDelivery>> {
        self.inner
            .queue
            .scan_prefix(webhook_id.as_bytes())
            .values()
            .map(|v| decode("delivery", &v?))
            .collect()
    }

    pub fn queued_delivery(&self, webhook_id: Uuid, id: Uuid) -> Result<Option<QueuedDelivery>> {
        self.inner
            .queue
            .get(pair_key(webhook_id, id))?
            .map(|v| decode("delivery", &v))
            .transpose()
    }

    pub fn put_delivery(&self, d: &QueuedDelivery) -> Result<()> {
        self.inner
            .queue
            .insert(pair_key(d.webhook_id, d.id), encode(d))?;
        Ok(())
    }

    pub fn remove_delivery(&self, webhook_id: Uuid, id: Uuid) -> Result<()> {
        self.inner.queue.remove(pair_key(webhook_id, id))?;
        Ok(())
    }

    /// Outstanding deliveries of all webhooks (for metrics and tests).
    pub fn queue_len(&self) -> usize {
        self.inner.queue.len()
    }
}
