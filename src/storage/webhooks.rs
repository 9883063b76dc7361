//! Webhook records and the owner index.

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use uuid::Uuid;

use super::codec::{decode, encode};
use super::routing::routing_changed;
use super::{pair_key, second_id, Result, Store};
use crate::domain::webhook::Webhook;

impl Store {
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
        let mut out = Vec::new();
        for item in self
            .inner
            .webhooks_by_owner
            .scan_prefix(owner.as_bytes())
            .rev()
        {
            let (k, _) = item?;
            if let Some(w) = second_id(&k)
                .map(|id| self.webhook(id))
                .transpose()?
                .flatten()
            {
                out.push(w);
            }
        }
        Ok(out)
    }

    /// Every webhook, newest first.
    pub fn all_webhooks(&self) -> Result<Vec<Webhook>> {
        self.inner
            .webhooks
            .iter()
            .rev()
            .map(|item| decode("webhook", &item?.1))
            .collect()
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

    /// Removes a webhook with its index entry, queue and log.
    pub fn delete_webhook(&self, w: &Webhook) -> Result<bool> {
        let i = &self.inner;
        let existed = i.webhooks.remove(w.id.as_bytes())?.is_some();
        i.webhooks_by_owner
            .remove(pair_key(w.organisation_id, w.id))?;
        i.routing.invalidate();
        for tree in [&i.queue, &i.log] {
            let mut batch = sled::Batch::default();
            for item in tree.scan_prefix(w.id.as_bytes()).keys() {
                batch.remove(item?);
            }
            tree.apply_batch(batch)?;
        }
        Ok(existed)
    }
}
