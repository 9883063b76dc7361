//! Idempotency keys of ingest (`Idempotency-Key`): which event a key
//! stored, so that a producer retrying after a lost answer gets that event
//! again instead of a second one with new delivery ids, which receivers
//! could not tell from a new event.
//!
//! Keyed organisation ++ sha256(key), so keys are per organisation and any
//! length costs the same. A key is claimed only after its event is
//! written, and sled persists writes in order, so a claim that survives a
//! crash always names a stored event; one whose event is gone (purged, or
//! expired) counts as absent.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::codec::{decode, encode};
use super::{Result, Store};

/// How long a key is remembered (as Stripe and Svix do).
pub const KEEP_MS: u64 = 24 * 3600 * 1000;

/// What a key stored, and what it was stored from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub event_id: Uuid,
    pub deliveries: usize,
    /// sha256 of the canonical body: a retry sends the same event, a reuse
    /// of the key another.
    pub body_hash: [u8; 32],
    pub at_ms: u64,
}

fn tree_key(org: Uuid, key: &str) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(org.as_bytes());
    k[16..].copy_from_slice(&Sha256::digest(key.as_bytes()));
    k
}

pub fn body_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

impl Store {
    /// What `key` stored for `org`, if it is unexpired and its event is
    /// still there.
    pub fn remembered(&self, org: Uuid, key: &str, now: u64) -> Result<Option<Remembered>> {
        match self.inner.idempotency.get(tree_key(org, key))? {
            Some(value) => self.live(&value, now),
            None => Ok(None),
        }
    }

    /// The claim stored as `value`, if it still counts. One that cannot be
    /// decoded does not: it must not lock its key for good.
    fn live(&self, value: &[u8], now: u64) -> Result<Option<Remembered>> {
        let Ok(r) = decode::<Remembered>("idempotency key", value) else {
            return Ok(None);
        };
        let fresh = now.saturating_sub(r.at_ms) < KEEP_MS;
        let stored = fresh && self.inner.events.contains_key(r.event_id.as_bytes())?;
        Ok(stored.then_some(r))
    }

    /// Claims `key` for the event `r` names, which must be written
    /// already; `Some(other)` if a live claim of another request won.
    pub fn remember(
        &self,
        org: Uuid,
        key: &str,
        r: &Remembered,
        now: u64,
    ) -> Result<Option<Remembered>> {
        let (tree, k) = (&self.inner.idempotency, tree_key(org, key));
        loop {
            let current = tree.get(k)?;
            if let Some(value) = &current {
                if let Some(other) = self.live(value, now)? {
                    return Ok(Some(other));
                }
            }
            // Compare-and-swap: a concurrent claim makes this fail, and the
            // next turn finds it. A loser never writes, so this ends.
            if tree.compare_and_swap(k, current, Some(encode(r)))?.is_ok() {
                return Ok(None);
            }
        }
    }

    /// Forgets the keys claimed before `cutoff_ms`; returns how many.
    pub fn forget_idempotency_keys_before(&self, cutoff_ms: u64) -> Result<usize> {
        let tree = &self.inner.idempotency;
        let mut forgotten = 0;
        for item in tree.iter() {
            let (key, value) = item?;
            let expired = decode::<Remembered>("idempotency key", &value)
                .map_or(true, |r| r.at_ms < cutoff_ms);
            if expired {
                tree.remove(key)?;
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_delivery, StoredEvent};
    use super::*;
    use crate::clock::now_ms;

    /// An event written as ingest writes it, with one delivery.
    fn written(store: &Store) -> (StoredEvent, Vec<crate::domain::delivery::QueuedDelivery>) {
        let e = StoredEvent {
            id: store.open_event(1),
            event: "e".into(),
            organisation_id: Uuid::nil(),
            user_id: None,
            team_id: None,
            received_at: now_ms(),
        };
        let mut d = test_delivery(Uuid::now_v7(), e.id);
        d.only_in_event = true;
        store
            .insert_event(&e, b"{}", std::slice::from_ref(&d))
            .unwrap();
        (e, vec![d])
    }

    fn claim(e: &StoredEvent, at_ms: u64) -> Remembered {
        Remembered {
            event_id: e.id,
            deliveries: 1,
            body_hash: body_hash(b"{}"),
            at_ms,
        }
    }

    /// Two requests with one key that both found it unclaimed: the second
    /// to claim loses, takes its event back, and answers with the first.
    #[test]
    fn the_second_claim_of_a_key_loses_and_takes_its_event_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let (org, now) = (Uuid::now_v7(), now_ms());
        assert_eq!(store.remembered(org, "k", now).unwrap(), None);
        let (first, _) = written(&store);
        let (second, second_deliveries) = written(&store);
        assert_eq!(
            store.remember(org, "k", &claim(&first, now), now).unwrap(),
            None
        );
        let won = store.remember(org, "k", &claim(&second, now), now).unwrap();
        assert_eq!(won, Some(claim(&first, now)));
        store.discard_event(&second, &second_deliveries).unwrap();
        assert!(store.event(second.id).unwrap().is_none());
        assert_eq!(
            store.unsettled_count(),
            1,
            "only the first's delivery is owed"
        );
        assert_eq!(
            store.remembered(org, "k", now).unwrap(),
            Some(claim(&first, now))
        );
        assert_eq!(
            store.remembered(Uuid::now_v7(), "k", now).unwrap(),
            None,
            "per organisation"
        );
    }

    /// A claim past its day, or whose event is gone, is no claim: the key
    /// can be claimed again, and the sweep forgets the old ones.
    #[test]
    fn expired_or_orphaned_claims_count_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let (org, now) = (Uuid::now_v7(), now_ms());
        let (old, _) = written(&store);
        let long_ago = now - KEEP_MS - 1;
        assert_eq!(
            store
                .remember(org, "old", &claim(&old, long_ago), long_ago)
                .unwrap(),
            None
        );
        assert_eq!(store.remembered(org, "old", now).unwrap(), None, "expired");
        let (gone, gone_deliveries) = written(&store);
        assert_eq!(
            store
                .remember(org, "gone", &claim(&gone, now), now)
                .unwrap(),
            None
        );
        store.discard_event(&gone, &gone_deliveries).unwrap();
        assert_eq!(
            store.remembered(org, "gone", now).unwrap(),
            None,
            "its event is gone"
        );
        let (again, _) = written(&store);
        assert_eq!(
            store
                .remember(org, "gone", &claim(&again, now), now)
                .unwrap(),
            None,
            "claimed anew"
        );
        let corrupt = tree_key(org, "corrupt");
        store
            .inner
            .idempotency
            .insert(corrupt, &b"\xffjunk"[..])
            .unwrap();
        assert_eq!(
            store.remembered(org, "corrupt", now).unwrap(),
            None,
            "unreadable"
        );
        assert_eq!(
            store
                .remember(org, "corrupt", &claim(&again, now), now)
                .unwrap(),
            None
        );
        assert_eq!(
            store.forget_idempotency_keys_before(now - KEEP_MS).unwrap(),
            1
        );
        assert_eq!(
            store.remembered(org, "gone", now).unwrap(),
            Some(claim(&again, now))
        );
    }
}
