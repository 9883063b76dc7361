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

    /// Removes queued deliveries whose webhook no longer exists (an ingest
    /// that raced the webhook's deletion can leave some); returns how many.
    /// NB: a webhook's record is stored before anything can be queued for
    /// it, so one created meanwhile is never mistaken for deleted.
    pub fn purge_orphan_deliveries(&self) -> Result<usize> {
        let (mut removed, mut owner) = (0, None::<(Vec<u8>, bool)>);
        for key in self.inner.queue.iter().keys() {
            let key = key?;
            let prefix = &key[..key.len().min(16)];
            let exists = match &owner {
                Some((p, exists)) if p.as_slice() == prefix => *exists,
                _ => {
                    let exists = self.inner.webhooks.contains_key(prefix)?;
                    owner = Some((prefix.to_vec(), exists));
                    exists
                }
            };
            if !exists {
                self.inner.queue.remove(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Outstanding deliveries of all webhooks (for metrics and tests).
    pub fn queue_len(&self) -> usize {
        self.inner.queue.len()
    }
}
