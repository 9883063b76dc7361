//! First attempts that are durable only through their event's record.
//!
//! Ingest writes no queue entry for a delivery's first attempt: the event
//! record lists its deliveries, and that is enough to recover them. A
//! delivery is *settled* once its first attempt is judged (its log entry
//! is written, and a queue entry too if it will be retried) or once it is
//! moved to the queue for another reason. This module counts the unsettled
//! deliveries per event and derives the watermark: every delivery of every
//! event whose id is below it is settled. The store persists the watermark
//! now and then; at start-up only events from there on are searched for
//! deliveries whose first attempt never happened.
//!
//! NB: the watermark is only safe if no event can get an id below it later,
//! so event ids are made here, under the same lock that computes it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use uuid::Uuid;

use super::events::decode_event;
use super::{Result, StorageError, Store, StoredEvent};
use crate::clock::now_ms;
use crate::domain::delivery::QueuedDelivery;

/// `meta` key of the persisted watermark.
const WATERMARK: &[u8] = b"settled_below";

#[derive(Default)]
pub struct Unsettled {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Event id → how many of its deliveries are unsettled (never 0).
    events: BTreeMap<Uuid, usize>,
    /// Whether anything was opened or settled since the watermark was
    /// last taken for storing: an idle server need not store it again.
    changed: bool,
}

impl Unsettled {
    /// A new event id, with `deliveries` unsettled deliveries counted.
    pub fn open_event(&self, deliveries: usize) -> Uuid {
        let mut state = self.lock();
        let id = Uuid::now_v7();
        if deliveries > 0 {
            state.events.insert(id, deliveries);
            state.changed = true;
        }
        id
    }

    /// One delivery of `event_id` is settled.
    pub fn settle(&self, event_id: Uuid) {
        let mut state = self.lock();
        if let Some(n) = state.events.get_mut(&event_id) {
            *n -= 1;
            if *n == 0 {
                state.events.remove(&event_id);
            }
            state.changed = true;
        }
    }

    /// Every delivery of every event with a smaller id is settled.
    pub fn watermark(&self) -> Uuid {
        let mut state = self.lock();
        state.changed = false;
        Self::lowest(&state)
    }

    /// The watermark, leaving the bookkeeping of what to store alone.
    pub fn settled_below(&self) -> Uuid {
        Self::lowest(&self.lock())
    }

    /// The watermark, if anything was opened or settled since it was last
    /// taken.
    pub fn watermark_if_changed(&self) -> Option<Uuid> {
        let mut state = self.lock();
        std::mem::take(&mut state.changed).then(|| Self::lowest(&state))
    }

    fn lowest(state: &State) -> Uuid {
        match state.events.keys().next() {
            Some(oldest) => *oldest,
            // Any event opened from now on gets a larger id: v7 ids made
            // in one process are monotonic, and opening takes this lock.
            None => Uuid::now_v7(),
        }
    }

    /// Unsettled deliveries in all (for tests and metrics).
    pub fn count(&self) -> usize {
        self.lock().events.values().sum()
    }

    /// Each change is one map call, so a poisoned lock is still consistent.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Stores the current watermark in `meta`; durable with the next flush.
///
/// NB: every settle counted before this call followed its own writes, so
/// those writes precede this one in sled's log, and sled recovers a prefix
/// of its log: a recovered watermark never runs ahead of what it covers.
pub(super) fn save_watermark(meta: &sled::Tree, unsettled: &Unsettled) -> Result<()> {
    meta.insert(WATERMARK, unsettled.watermark().as_bytes())?;
    Ok(())
}

/// `save_watermark`, but only if it may have moved since last taken.
pub(super) fn save_changed_watermark(meta: &sled::Tree, unsettled: &Unsettled) -> Result<()> {
    if let Some(watermark) = unsettled.watermark_if_changed() {
        meta.insert(WATERMARK, watermark.as_bytes())?;
    }
    Ok(())
}

impl Store {
    /// At start-up, before any actor runs: queues every first attempt that
    /// an event at or above the stored watermark lists, that was never
    /// settled (no queue entry, no log entry), and whose webhook still
    /// exists. Then stores a watermark of this process, so no event made
    /// from now on is below the stored one. Returns how many it queued.
    pub(super) fn recover_first_attempts(&self) -> Result<usize> {
        let i = &self.inner;
        let from = i
            .meta
            .get(WATERMARK)?
            .and_then(|v| Uuid::from_slice(&v).ok())
            .unwrap_or(Uuid::nil());
        let mut logged: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
        let mut recovered = 0;
        for item in i.events.range(from.as_bytes().as_slice()..) {
            let (key, record) = item?;
            // One damaged record loses its own first attempts, not the
            // start of the whole server.
            let (event, routes) = match self.routed(&record) {
                Ok(found) => found,
                Err(e @ StorageError::Codec { .. }) => {
                    let id = Uuid::from_slice(&key).unwrap_or_default();
                    ::log::error!("event {id}'s first attempts cannot be recovered: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            for route in routes.chunks_exact(32) {
                let (webhook, id) = (&route[..16], &route[16..]);
                if i.queue.contains_key(route)? || !i.webhooks.contains_key(webhook)? {
                    continue;
                }
                let webhook_id = Uuid::from_slice(webhook).unwrap_or_default();
                let id = Uuid::from_slice(id).unwrap_or_default();
                let seen = match logged.entry(webhook_id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(self.deliveries_logged_since(webhook_id, from)?)
                    }
                };
                if seen.contains(&id) {
                    continue;
                }
                self.put_delivery(&QueuedDelivery {
                    id,
                    webhook_id,
                    event_id: event.id,
                    event: event.event.as_str().into(),
                    attempts: 0,
                    next_attempt_at: now_ms(),
                    created_at: event.received_at,
                    only_in_event: false,
                })?;
                recovered += 1;
            }
        }
        save_watermark(&i.meta, &i.unsettled)?;
        self.flush_blocking()?;
        Ok(recovered)
    }

    /// An event record's header and routes (32-byte pairs).
    fn routed(&self, record: &[u8]) -> Result<(StoredEvent, Vec<u8>)> {
        let parts = decode_event(record)?;
        let routes = self.event_routes(&parts)?.into_owned();
        Ok((parts.header, routes))
    }

    /// Unsettled first attempts in memory (for metrics and tests).
    pub fn unsettled_count(&self) -> usize {
        self.inner.unsettled.count()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_delivery, test_webhook};
    use super::*;

    #[test]
    fn a_damaged_event_record_costs_only_its_own_first_attempts_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let hook = test_webhook(Uuid::now_v7(), &["e"]);
        let first_attempt = |event| QueuedDelivery {
            attempts: 0,
            only_in_event: true,
            ..test_delivery(hook.id, event)
        };
        let header = |id| StoredEvent {
            id,
            event: "e".into(),
            organisation_id: hook.organisation_id,
            user_id: None,
            team_id: None,
            received_at: now_ms(),
        };
        let lost;
        {
            let store = Store::open(&path).unwrap();
            store.insert_webhook(&hook).unwrap();
            let garbled = store.open_event(1);
            let record = b"\xE2 not an event";
            store
                .inner
                .events
                .insert(garbled.as_bytes(), &record[..])
                .unwrap();
            // Routed to 200 webhooks, and one chunk of its routes lost.
            let short = store.open_event(200);
            let routes: Vec<_> = (0..200).map(|_| first_attempt(short)).collect();
            store.insert_event(&header(short), b"{}", &routes).unwrap();
            let key = [short.as_bytes(), &0x8000_0000u32.to_be_bytes()[..]].concat();
            store.inner.event_chunks.remove(key).unwrap().unwrap();
            let intact = store.open_event(1);
            lost = first_attempt(intact);
            let one = std::slice::from_ref(&lost);
            store.insert_event(&header(intact), b"{}", one).unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(&path).expect("starts despite the damage");
        let queued = store.queued_deliveries(hook.id).unwrap();
        let ids: Vec<Uuid> = queued.iter().map(|d| d.id).collect();
        assert_eq!(ids, vec![lost.id], "the intact event's first attempt");
    }

    #[test]
    fn the_watermark_waits_for_the_oldest_unsettled_event() {
        let u = Unsettled::default();
        let a = u.open_event(2);
        let b = u.open_event(1);
        assert_eq!(u.watermark(), a);
        u.settle(a);
        assert_eq!(u.watermark(), a, "one delivery of a is still unsettled");
        u.settle(a);
        assert_eq!(u.watermark(), b);
        u.settle(b);
        let w = u.watermark();
        assert!(w > b, "with nothing unsettled it passes every event");
        assert!(u.open_event(1) > w, "a later event is never below it");
        assert_eq!(u.count(), 1);
    }

    #[test]
    fn an_unchanged_watermark_is_not_offered_again() {
        let u = Unsettled::default();
        assert_eq!(u.watermark_if_changed(), None, "nothing happened yet");
        let a = u.open_event(1);
        assert_eq!(u.watermark_if_changed(), Some(a));
        assert_eq!(u.watermark_if_changed(), None, "idle since");
        u.settle(a);
        assert!(u.watermark_if_changed().is_some_and(|w| w > a));
        u.settle(a); // already settled: no change
        assert_eq!(u.watermark_if_changed(), None);
    }

    #[test]
    fn an_event_without_deliveries_holds_nothing_back() {
        let u = Unsettled::default();
        let e = u.open_event(0);
        assert!(u.watermark() > e);
        u.settle(e); // harmless
        assert_eq!(u.count(), 0);
    }
}
