//! Webhook records and the owner index.

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use uuid::Uuid;

use super::codec::{decode, encode};
use super::routing::routing_changed;
use super::{pair_key, remove_prefix, second_id, Result, Store};
use crate::domain::webhook::Webhook;

impl Store {
    /// Stores a new webhook unless its owner has `limit` already (0: no
    /// limit); false if refused. Creations are counted one at a time, so
    /// concurrent ones cannot pass the limit together.
    pub fn insert_webhook_within(&self, w: &Webhook, limit: usize) -> Result<bool> {
        let _one_at_a_time = self
            .inner
            .webhook_creation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if limit > 0 && self.webhook_count_of(w.organisation_id) >= limit {
            return Ok(false);
        }
        self.insert_webhook(w)?;
        Ok(true)
    }

    fn webhook_count_of(&self, owner: Uuid) -> usize {
        let owned = self.inner.webhooks_by_owner.scan_prefix(owner.as_bytes());
        owned.count()
    }

    pub fn insert_webhook(&self, w: &Webhook) -> Result<()> {
        let i = &self.inner;
        (&i.webhooks, &i.webhooks_by_owner).transaction(|(hooks, owners)| {
            hooks.insert(w.id.as_bytes(), encode(w))?;
            owners.insert(&pair_key(w.organisation_id, w.id), &[])?;
            Ok::<_, ConflictableTransactionError<String>>(())
        })?;
        i.routing.invalidate();
        Ok(())
    }

    pub fn webhook(&self, id: Uuid) -> Result<Option<Webhook>> {
        self.inner
            .webhooks
            .get(id.as_bytes())?
            .map(|v| decode("webhook", &v))
            .transpose()
    }

    pub fn webhook_exists(&self, id: Uuid) -> Result<bool> {
        Ok(self.inner.webhooks.contains_key(id.as_bytes())?)
    }

    /// The webhooks of one owner, newest first (ids are time-ordered).
    pub fn webhooks_of(&self, owner: Uuid) -> Result<Vec<Webhook>> {
        self.webhooks_page(Some(owner), None, usize::MAX)
    }

    /// Every webhook, newest first.
    pub fn all_webhooks(&self) -> Result<Vec<Webhook>> {
        self.webhooks_page(None, None, usize::MAX)
    }

    /// Up to `limit` webhooks older than `before` (all if `None`), newest
    /// first: of one owner, or of everyone.
    pub fn webhooks_page(
        &self,
        owner: Option<Uuid>,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Webhook>> {
        let i = &self.inner;
        let before = before.unwrap_or(Uuid::max());
        let Some(owner) = owner else {
            return i
                .webhooks
                .range(..&before.as_bytes()[..])
                .rev()
                .take(limit)
                .map(|item| decode("webhook", &item?.1))
                .collect();
        };
        let keys = i
            .webhooks_by_owner
            .range(pair_key(owner, Uuid::nil())..pair_key(owner, before))
            .keys()
            .rev();
        let mut out = Vec::new();
        for key in keys {
            if out.len() == limit {
                break;
            }
            // A delete removes the record before its index entry.
            if let Some(w) = second_id(&key?)
                .map(|id| self.webhook(id))
                .transpose()?
                .flatten()
            {
                out.push(w);
            }
        }
        Ok(out)
    }

    /// Reads, changes and writes a webhook atomically; `None` if it is gone.
    /// `change` may run more than once under contention.
    pub fn update_webhook(
        &self,
        id: Uuid,
        mut change: impl FnMut(&mut Webhook),
    ) -> Result<Option<Webhook>> {
        let (mut decode_error, mut reroute) = (None, false);
        let updated = self.inner.webhooks.update_and_fetch(id.as_bytes(), |old| {
            let old = old?;
            match decode::<Webhook>("webhook", old) {
                Ok(before) => {
                    let mut w = before.clone();
                    change(&mut w);
                    // The last run is the one stored.
                    reroute = routing_changed(&before, &w);
                    Some(encode(&w))
                }
                Err(e) => {
                    decode_error = Some(e);
                    Some(old.to_vec())
                }
            }
        })?;
        if reroute {
            self.inner.routing.invalidate();
        }
        if let Some(e) = decode_error {
            return Err(e);
        }
        updated.map(|v| decode("webhook", &v)).transpose()
    }

    /// Removes a webhook and its index entry, and then, on a thread of its
    /// own, its queue (with its parked retries) and its log. Once the
    /// record is gone nothing routes to the webhook and its actor stops, so
    /// nothing more is sent; but an endpoint failing for days leaves
    /// millions of queued retries and log batches, which took the DELETE
    /// request tens of seconds to remove.
    /// What a stop leaves of them, start-up (the queue) and the retention
    /// sweep (the log) purge.
    ///
    /// NB: key by key, not in one `sled::Batch`: applying a batch holds a
    /// lock that stops every other write to the store until it is done.
    pub fn delete_webhook(&self, w: &Webhook) -> Result<bool> {
        let i = &self.inner;
        let existed = i.webhooks.remove(w.id.as_bytes())?.is_some();
        i.webhooks_by_owner
            .remove(pair_key(w.organisation_id, w.id))?;
        i.routing.invalidate();
        let trees = [
            ("queue", i.queue.clone()),
            ("parked", i.parked.clone()),
            ("log", i.log.clone()),
        ];
        let id = w.id;
        let removal = std::thread::Builder::new()
            .name("webhook-removal".into())
            .spawn(move || {
                for (what, tree) in &trees {
                    if let Err(e) = remove_prefix(tree, id.as_bytes()) {
                        ::log::error!("cannot remove the {what} of deleted webhook {id}: {e}");
                    }
                }
            });
        if let Err(e) = removal {
            ::log::error!("cannot start removing the queue and log of webhook {id}: {e}");
        }
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_delivery, test_webhook};
    use super::*;
    use crate::domain::delivery::{AttemptResult, LogEntry, Outcome};

    fn log_some(store: &Store, webhook_id: Uuid) {
        let d = test_delivery(webhook_id, Uuid::now_v7());
        let result = AttemptResult::default();
        let mut entries: Vec<_> = (0..3)
            .map(|_| {
                LogEntry::of_attempt(
                    (d.id, d.event_id, &d.event),
                    1,
                    Outcome::Failed,
                    result.clone(),
                    None,
                )
            })
            .collect();
        store.append_log(webhook_id, &mut entries).unwrap();
    }

    fn logged(store: &Store, webhook_id: Uuid) -> usize {
        store
            .log_page(webhook_id, 100, None, None)
            .unwrap()
            .entries
            .len()
    }

    #[test]
    fn deleting_a_webhook_removes_its_queue_and_log_soon() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let owner = Uuid::now_v7();
        let (gone, kept) = (test_webhook(owner, &["*"]), test_webhook(owner, &["*"]));
        for w in [&gone, &kept] {
            store.insert_webhook(w).unwrap();
            store
                .put_delivery(&test_delivery(w.id, Uuid::now_v7()))
                .unwrap();
            log_some(&store, w.id);
        }
        assert!(store.delete_webhook(&gone).unwrap());
        assert!(store.webhook(gone.id).unwrap().is_none());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while logged(&store, gone.id) > 0 || !store.queued_deliveries(gone.id).unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the queue or the log is never removed"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(store.queued_deliveries(kept.id).unwrap().len(), 1);
        assert_eq!(logged(&store, kept.id), 3, "another webhook's log stays");
    }
}
