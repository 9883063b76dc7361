//! Each webhook's outstanding deliveries, in event order.

use std::collections::HashSet;

use uuid::Uuid;

use super::codec::{decode, encode};
use super::events::v7_millis;
use super::{owners, pair_key, remove_prefix, second_id, Result, Store};
use crate::domain::delivery::QueuedDelivery;

impl Store {
    /// A webhook's queued deliveries in event order (for tests).
    pub fn queued_deliveries(&self, webhook_id: Uuid) -> Result<Vec<QueuedDelivery>> {
        self.inner
            .queue
            .scan_prefix(webhook_id.as_bytes())
            .values()
            .map(|v| decode("delivery", &v?))
            .collect()
    }

    /// Up to `limit` of a webhook's queued deliveries after `after` (from
    /// the first if `None`), in event order, each with its id, so that a
    /// long queue can be read a chunk at a time. A record that cannot be
    /// decoded is an `Err` in its place: the next chunk still starts
    /// after it.
    pub fn queued_after(
        &self,
        webhook_id: Uuid,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<(Uuid, Result<QueuedDelivery>)>> {
        let mut chunk = Vec::new();
        for item in self.queue_range(webhook_id, after).take(limit) {
            let (key, value) = item?;
            chunk.push((id_of(&key), decode("delivery", &value)));
        }
        Ok(chunk)
    }

    /// How many of a webhook's queued deliveries follow `after`, counting
    /// at most `limit` of them, and the id of the last one counted: a long
    /// queue is counted a chunk at a time, without decoding it.
    pub fn count_queued_after(
        &self,
        webhook_id: Uuid,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<(usize, Option<Uuid>)> {
        let (mut n, mut last) = (0, None);
        for key in self.queue_range(webhook_id, after).keys().take(limit) {
            last = Some(id_of(&key?));
            n += 1;
        }
        Ok((n, last))
    }

    fn queue_range(&self, webhook_id: Uuid, after: Option<Uuid>) -> sled::Iter {
        use std::ops::Bound::{Excluded, Included};
        let start = match after {
            Some(id) => Excluded(pair_key(webhook_id, id)),
            None => Included(pair_key(webhook_id, Uuid::nil())),
        };
        let end = Included(pair_key(webhook_id, Uuid::max()));
        self.inner.queue.range((start, end))
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

    /// Ends a delivery for good (delivered, failed, dropped or deleted):
    /// settles a first attempt held only in memory, or removes the
    /// delivery from the queue tree.
    pub fn finish_delivery(&self, d: &QueuedDelivery) -> Result<()> {
        if d.only_in_event {
            self.settle(d.event_id);
            return Ok(());
        }
        self.remove_delivery(d.webhook_id, d.id)
    }

    /// Removes queued deliveries whose webhook no longer exists (an ingest
    /// that raced the webhook's deletion can leave some); returns how many.
    /// Reads one key per webhook with a queue, jumping from one webhook's
    /// entries to the next, so it costs little at start-up.
    /// NB: a webhook's record is stored before anything can be queued for
    /// it, so one created meanwhile is never mistaken for deleted.
    pub fn purge_orphan_deliveries(&self) -> Result<usize> {
        let (queue, mut removed) = (&self.inner.queue, 0);
        for owner in owners(queue) {
            let owner = owner?;
            if !self.inner.webhooks.contains_key(&owner)? {
                removed += remove_prefix(queue, &owner)?;
            }
        }
        Ok(removed)
    }

    /// The events made before `cutoff_ms` that a queued delivery still
    /// needs (retries, redeliveries, deliveries waiting for an inactive or
    /// disabled webhook). A record that cannot be read can never be sent,
    /// so it keeps nothing (and does not stop the sweep).
    pub(super) fn queued_events_before(&self, cutoff_ms: u64) -> Result<HashSet<Uuid>> {
        /// Only the field wanted, so the rest is skipped, not built.
        #[derive(serde::Deserialize)]
        struct EventOf {
            event_id: Uuid,
        }
        let mut needed = HashSet::new();
        for item in self.inner.queue.iter() {
            let (key, value) = item?;
            match decode::<EventOf>("delivery", &value) {
                Ok(d) if v7_millis(d.event_id.as_bytes()) < cutoff_ms => {
                    needed.insert(d.event_id);
                }
                Ok(_) => {}
                Err(e) => ::log::warn!("retention skips queue entry {key:?}: {e}"),
            }
        }
        Ok(needed)
    }

    /// Outstanding deliveries of all webhooks (for metrics and tests).
    pub fn queue_len(&self) -> usize {
        self.inner.queue.len()
    }
}

/// The delivery id of a queue key (webhook ++ id). Were a key malformed,
/// the next chunk would start past the webhook's end rather than over
/// again.
fn id_of(key: &[u8]) -> Uuid {
    second_id(key).unwrap_or(Uuid::max())
}
