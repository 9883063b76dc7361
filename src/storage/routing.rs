//! Which webhooks take an owner's events, kept in memory for ingest.
//!
//! Ingest routes every event; reading and decoding each of an owner's
//! webhook records per event cost about 100 decodes per event at 100
//! webhooks (benchmark c). This keeps, per owner, the ids and event
//! filters of its deliverable webhooks, and forgets all of it whenever a
//! webhook is created, deleted, or changes in a way that alters routing
//! (active, status, events); the next event reads sled again.
//!
//! NB: a lookup notes the generation before it reads sled and files its
//! result only if no change came in between, so a read that raced a
//! change is never served after the change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::{Result, Store};
use crate::domain::webhook::{self, Webhook};

/// What routing needs of one deliverable webhook.
struct Route {
    id: Uuid,
    events: Vec<String>,
}

#[derive(Default)]
pub struct RoutingCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by every change that can alter routing.
    generation: u64,
    /// Owner id → its routes, all read in the current generation.
    owners: HashMap<Uuid, Arc<[Route]>>,
}

impl RoutingCache {
    /// Forgets everything: a webhook's routing changed.
    pub fn invalidate(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.owners.clear();
    }

    /// Each change is one statement, so a poisoned lock is still sound.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a change from `before` to `after` can change routing.
pub(super) fn routing_changed(before: &Webhook, after: &Webhook) -> bool {
    before.is_deliverable() != after.is_deliverable() || before.events != after.events
}

impl Store {
    /// The deliverable webhooks of `owner` that take `event`.
    pub fn routes(&self, owner: Uuid, event: &str) -> Result<Vec<Uuid>> {
        let routes = self.routes_of(owner)?;
        let takes = |r: &&Route| webhook::takes(&r.events, event);
        Ok(routes.iter().filter(takes).map(|r| r.id).collect())
    }

    fn routes_of(&self, owner: Uuid) -> Result<Arc<[Route]>> {
        let cache = &self.inner.routing;
        let generation = {
            let state = cache.lock();
            if let Some(routes) = state.owners.get(&owner) {
                return Ok(routes.clone());
            }
            state.generation
        };
        let routes: Arc<[Route]> = self
            .webhooks_of(owner)?
            .into_iter()
            .filter(Webhook::is_deliverable)
            .map(|w| Route {
                id: w.id,
                events: w.events,
            })
            .collect();
        let mut state = cache.lock();
        if state.generation == generation {
            state.owners.insert(owner, routes.clone());
        }
        Ok(routes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_webhook as webhook;
    use super::*;
    use crate::domain::webhook::WebhookStatus;

    #[test]
    fn every_routing_change_shows_in_the_next_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let (owner, other) = (Uuid::now_v7(), Uuid::now_v7());
        let all = webhook(owner, &["*"]);
        let one = webhook(owner, &["a"]);
        store.insert_webhook(&all).unwrap();
        store.insert_webhook(&webhook(other, &["*"])).unwrap();
        assert_eq!(store.routes(owner, "a").unwrap(), vec![all.id]);

        store.insert_webhook(&one).unwrap();
        let mut both = store.routes(owner, "a").unwrap();
        both.sort();
        assert_eq!(both, vec![all.id, one.id]);
        assert_eq!(store.routes(owner, "b").unwrap(), vec![all.id]);

        store
            .update_webhook(one.id, |w| w.events = vec!["b".into()])
            .unwrap();
        assert_eq!(store.routes(owner, "a").unwrap(), vec![all.id]);
        store.update_webhook(all.id, |w| w.active = false).unwrap();
        assert_eq!(store.routes(owner, "b").unwrap(), vec![one.id]);
        store
            .update_webhook(one.id, |w| w.status = WebhookStatus::Disabled)
            .unwrap();
        assert!(store.routes(owner, "b").unwrap().is_empty());
        store
            .update_webhook(one.id, |w| w.status = WebhookStatus::Enabled)
            .unwrap();
        assert_eq!(store.routes(owner, "b").unwrap(), vec![one.id]);
        store.delete_webhook(&one).unwrap();
        assert!(store.routes(owner, "b").unwrap().is_empty());
    }

    #[test]
    fn a_change_that_does_not_route_keeps_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let hook = webhook(Uuid::now_v7(), &["*"]);
        store.insert_webhook(&hook).unwrap();
        store.routes(hook.organisation_id, "a").unwrap();
        let generation = store.inner.routing.lock().generation;
        store
            .update_webhook(hook.id, |w| w.last_delivery_at = Some(1))
            .unwrap();
        store
            .update_webhook(hook.id, |w| w.failure_count += 1)
            .unwrap();
        assert_eq!(store.inner.routing.lock().generation, generation);
        assert!(store
            .inner
            .routing
            .lock()
            .owners
            .contains_key(&hook.organisation_id));
    }
}
