//! Each webhook's outstanding deliveries, in event order, and an index of
//! its parked retries by due time.
//!
//! NB: the queue is the record; the index only says when to look. A
//! parked retry is indexed after its record is written, and an entry is
//! checked against the record when it is taken: one whose record is gone
//! or has been rescheduled since is dropped. An entry lost to a crash
//! between the two writes is made again when the actor next reads that
//! record (it reads its whole queue, in event order, after a restart).

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

    /// Indexes a stored retry of `webhook_id` as parked until `due`
    /// (idempotent: a record read again after a restart is indexed once).
    pub fn park(&self, webhook_id: Uuid, due: u64, id: Uuid) -> Result<()> {
        let key = parked_key(webhook_id, due, id);
        let absent: Option<&[u8]> = None;
        let _ = self.inner.parked.compare_and_swap(key, absent, Some(&[]))?;
        Ok(())
    }

    /// When the first of a webhook's parked retries is due, if any.
    pub fn first_parked_due(&self, webhook_id: Uuid) -> Result<Option<u64>> {
        let from = parked_key(webhook_id, 0, Uuid::nil());
        let to = parked_key(webhook_id, u64::MAX, Uuid::max());
        let first = self.inner.parked.range(from..=to).next().transpose()?;
        Ok(first.and_then(|(key, _)| due_of(&key)))
    }

    /// Takes up to `limit` of a webhook's parked retries due by `until`
    /// out of the index, earliest first, with their records; an entry
    /// whose record is gone or was rescheduled is dropped (see above).
    pub fn take_due_parked(
        &self,
        webhook_id: Uuid,
        until: u64,
        limit: usize,
    ) -> Result<Vec<QueuedDelivery>> {
        let from = parked_key(webhook_id, 0, Uuid::nil());
        let to = parked_key(webhook_id, until, Uuid::max());
        let mut due = Vec::new();
        for key in self.inner.parked.range(from..=to).keys().take(limit) {
            let key = key?;
            self.inner.parked.remove(&key)?;
            let id = key.get(24..).and_then(|b| Uuid::from_slice(b).ok());
            let (Some(at), Some(id)) = (due_of(&key), id) else {
                continue;
            };
            match self.queued_delivery(webhook_id, id) {
                Ok(Some(d)) if d.next_attempt_at == at => due.push(d),
                Ok(_) => {}
                Err(e) => ::log::error!("webhook {webhook_id}: cannot read parked {id}: {e}"),
            }
        }
        Ok(due)
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

    /// Removes queued deliveries, and their parked index entries, whose
    /// webhook no longer exists (an ingest that raced the webhook's
    /// deletion can leave some, and so can a stop during a removal);
    /// returns how many deliveries.
    /// Reads one key per webhook with a queue, jumping from one webhook's
    /// entries to the next, so it costs little at start-up.
    /// NB: a webhook's record is stored before anything can be queued for
    /// it, so one created meanwhile is never mistaken for deleted.
    pub fn purge_orphan_deliveries(&self) -> Result<usize> {
        let removed = self.purge_orphans(&self.inner.queue)?;
        self.purge_orphans(&self.inner.parked)?; // index entries only
        Ok(removed)
    }

    /// Removes the keys of `tree` (keyed webhook ++ ...) whose webhook no
    /// longer exists; returns how many.
    fn purge_orphans(&self, tree: &sled::Tree) -> Result<usize> {
        let mut removed = 0;
        for owner in owners(tree) {
            let owner = owner?;
            if !self.inner.webhooks.contains_key(&owner)? {
                removed += remove_prefix(tree, &owner)?;
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

/// webhook ++ due (big-endian, so keys sort by due time) ++ delivery.
fn parked_key(webhook_id: Uuid, due: u64, id: Uuid) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..16].copy_from_slice(webhook_id.as_bytes());
    k[16..24].copy_from_slice(&due.to_be_bytes());
    k[24..].copy_from_slice(id.as_bytes());
    k
}

fn due_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(16..24)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::super::test_delivery;
    use super::*;

    fn parked_retry(store: &Store, webhook_id: Uuid, due: u64) -> QueuedDelivery {
        let mut d = test_delivery(webhook_id, Uuid::now_v7());
        d.next_attempt_at = due;
        store.put_delivery(&d).unwrap();
        store.park(webhook_id, due, d.id).unwrap();
        d
    }

    #[test]
    fn parked_retries_are_taken_when_due_earliest_first_and_stale_entries_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let (w, other) = (Uuid::now_v7(), Uuid::now_v7());
        let late = parked_retry(&store, w, 3_000);
        let early = parked_retry(&store, w, 1_000);
        let gone = parked_retry(&store, w, 1_500);
        let moved = parked_retry(&store, w, 2_000);
        parked_retry(&store, other, 500);
        store.park(w, early.next_attempt_at, early.id).unwrap(); // once only
        store.remove_delivery(w, gone.id).unwrap(); // delivered meanwhile
        let mut rescheduled = moved.clone();
        rescheduled.next_attempt_at = 9_000;
        store.put_delivery(&rescheduled).unwrap();

        assert_eq!(store.first_parked_due(w).unwrap(), Some(1_000));
        let taken = store.take_due_parked(w, 2_500, 10).unwrap();
        assert_eq!(taken, vec![early], "only the current record due by then");
        assert_eq!(
            store.first_parked_due(w).unwrap(),
            Some(3_000),
            "the rest left"
        );
        assert_eq!(store.take_due_parked(w, 10_000, 10).unwrap(), vec![late]);
        assert_eq!(store.first_parked_due(w).unwrap(), None);
        assert_eq!(
            store.first_parked_due(other).unwrap(),
            Some(500),
            "per webhook"
        );
        assert_eq!(
            store.queue_len(),
            4,
            "taking from the index keeps the records"
        );
    }

    #[test]
    fn a_deleted_webhooks_queue_and_parked_retries_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let gone = Uuid::now_v7(); // no webhook record: deleted
        parked_retry(&store, gone, 1_000);
        parked_retry(&store, gone, 2_000);
        assert_eq!(store.purge_orphan_deliveries().unwrap(), 2);
        assert_eq!(store.queue_len(), 0);
        assert_eq!(store.first_parked_due(gone).unwrap(), None);
    }
}
