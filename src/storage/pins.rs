//! Events that a redelivery holds against retention.
//!
//! Retention keeps an old event only if a queued delivery needs it, and it
//! learns that from one scan of the queue before it deletes. A redelivery
//! of an old event queued after that scan would see its event deleted
//! under it: sent from memory this time, but lost if the process dies
//! before it is sent, although it was acknowledged with a 202.
//!
//! So a redelivery pins its event before it reads it, and retention
//! deletes no pinned event: a pin taken before retention's check keeps the
//! event; one taken after it finds the event gone. Once its queue entry is
//! written, a pin is kept until the next sweep starts, since that sweep's
//! scan is the first certain to see the entry.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use uuid::Uuid;

use super::{Result, Store};
use crate::domain::delivery::QueuedDelivery;

/// Event id → redeliveries of it still writing their queue entry (0: all
/// written, kept until the next sweep starts).
#[derive(Default)]
pub(super) struct Pins(Mutex<HashMap<Uuid, usize>>);

impl Pins {
    fn pin(&self, event: Uuid) {
        *self.lock().entry(event).or_default() += 1;
    }

    fn written(&self, event: Uuid) {
        if let Some(writing) = self.lock().get_mut(&event) {
            *writing = writing.saturating_sub(1);
        }
    }

    /// Call before the sweep scans the queue.
    pub(super) fn sweep_starts(&self) {
        self.lock().retain(|_, writing| *writing > 0);
    }

    /// Runs `delete` unless `event` is pinned, under the lock a pin takes.
    pub(super) fn unless_pinned(
        &self,
        event: Uuid,
        delete: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        let pins = self.lock();
        if pins.contains_key(&event) {
            return Ok(false);
        }
        delete()?;
        Ok(true)
    }

    /// Each change is one map call, so a poisoned lock is still consistent.
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store {
    /// Queues `d`, a redelivery of a stored event, and returns that
    /// event's body; `None` if retention has purged the event, and then
    /// nothing is queued. Not yet durable: await `flush`.
    pub fn queue_redelivery(&self, d: &QueuedDelivery) -> Result<Option<Vec<u8>>> {
        let pins = &self.inner.pins;
        pins.pin(d.event_id);
        let queued = self.event(d.event_id).and_then(|found| {
            let Some((_, body)) = found else {
                return Ok(None);
            };
            self.put_delivery(d)?;
            Ok(Some(body))
        });
        pins.written(d.event_id);
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_delivery, test_event, test_id_from};
    use super::*;
    use crate::clock::now_ms;

    fn old_event(store: &Store) -> Uuid {
        test_event(store, test_id_from(40), b"{}")
    }

    fn thirty_days_ago() -> u64 {
        now_ms() - 30 * 86_400_000
    }

    #[test]
    fn a_pinned_event_outlives_the_sweep_that_could_not_see_its_redelivery() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let event = old_event(&store);
        // As a redelivery between retention's scan and its deletions.
        store.inner.pins.pin(event);
        assert_eq!(store.purge_events_before(thirty_days_ago()).unwrap(), 0);
        store
            .put_delivery(&test_delivery(Uuid::now_v7(), event))
            .unwrap();
        store.inner.pins.written(event);
        assert_eq!(store.purge_events_before(thirty_days_ago()).unwrap(), 0);
        assert!(store.inner.pins.lock().is_empty(), "the queue keeps it now");
        assert!(store.event(event).unwrap().is_some());
    }

    #[test]
    fn a_redelivery_after_retention_queues_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let event = old_event(&store);
        assert_eq!(store.purge_events_before(thirty_days_ago()).unwrap(), 1);
        let d = test_delivery(Uuid::now_v7(), event);
        assert_eq!(store.queue_redelivery(&d).unwrap(), None);
        assert_eq!(store.queue_len(), 0);
    }

    #[test]
    fn every_redelivery_answered_with_a_body_keeps_its_event_through_concurrent_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let events: Vec<Uuid> = (0..400).map(|_| old_event(&store)).collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        let queued: Vec<Uuid> = std::thread::scope(|s| {
            s.spawn(|| {
                // Bounded: the redeliveries end in well under this many.
                for _ in 0..10_000 {
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    store.purge_events_before(thirty_days_ago()).unwrap();
                }
            });
            let queued = events
                .iter()
                .rev()
                .filter(|&&e| {
                    let d = test_delivery(Uuid::now_v7(), e);
                    store.queue_redelivery(&d).unwrap().is_some()
                })
                .copied()
                .collect();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            queued
        });
        store.purge_events_before(thirty_days_ago()).unwrap();
        let lost: Vec<&Uuid> = queued
            .iter()
            .filter(|&&e| store.event(e).unwrap().is_none())
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} queued redeliveries lost their event",
            lost.len(),
            queued.len()
        );
        assert_eq!(store.queue_len(), queued.len());
    }
}
