//! Ingested events: a small header and the canonical body, stored with the
//! deliveries they create.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::codec::{decode, encode};
use super::{pair_key, Result, StorageError, Store};
use crate::domain::delivery::QueuedDelivery;

/// What is known of an event besides its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: Uuid,
    pub event: String,
    pub organisation_id: Uuid,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub received_at: u64,
}

/// `[u32 header length][header][body]`: the body is kept as raw bytes so
/// a multi-megabyte screenshot is never re-escaped.
fn encode_event(e: &StoredEvent, body: &[u8]) -> Vec<u8> {
    let header = encode(e);
    let mut out = Vec::with_capacity(4 + header.len() + body.len());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    out
}

fn decode_event(bytes: &[u8]) -> Result<(StoredEvent, &[u8])> {
    let bad = || StorageError::Codec {
        what: "event",
        message: "truncated record".into(),
    };
    let len = u32::from_be_bytes(
        bytes
            .get(..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let header = bytes.get(4..4 + len).ok_or_else(bad)?;
    Ok((decode("event", header)?, &bytes[4 + len..]))
}

/// The Unix ms a v7 UUID was made at.
pub(super) fn v7_millis(id: &[u8]) -> u64 {
    id.get(..6)
        .map_or(0, |b| b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
}

impl Store {
    /// Writes an event and its deliveries. Not yet durable: await `flush`
    /// before acknowledging.
    ///
    /// NB: plain inserts, not a sled transaction. sled 0.34 writes out and
    /// syncs its IO buffer twice for every transaction or batch, which made
    /// ingest 2.5 times slower. Atomicity is not needed: the
    /// flush that precedes the 202 covers every insert, and a crash before
    /// it leaves an unacknowledged event, which the producer sends again.
    /// The event goes first so a queued delivery always finds its body.
    pub fn insert_event(
        &self,
        e: &StoredEvent,
        body: &[u8],
        deliveries: &[QueuedDelivery],
    ) -> Result<()> {
        let i = &self.inner;
        i.events.insert(e.id.as_bytes(), encode_event(e, body))?;
        for d in deliveries {
            i.queue.insert(pair_key(d.webhook_id, d.id), encode(d))?;
        }
        Ok(())
    }

    pub fn event(&self, id: Uuid) -> Result<Option<(StoredEvent, Vec<u8>)>> {
        match self.inner.events.get(id.as_bytes())? {
            Some(v) => {
                let (e, body) = decode_event(&v)?;
                Ok(Some((e, body.to_vec())))
            }
            None => Ok(None),
        }
    }

    /// The newest events, newest first, at most `limit`, with bodies.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<(StoredEvent, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.inner.events.iter().rev().take(limit) {
            let (_, v) = item?;
            let (e, body) = decode_event(&v)?;
            out.push((e, body.to_vec()));
        }
        Ok(out)
    }

    /// Deletes events made before `cutoff_ms`; returns how many.
    pub fn purge_events_before(&self, cutoff_ms: u64) -> Result<usize> {
        let mut n = 0;
        for key in self.inner.events.iter().keys() {
            let key = key?;
            if v7_millis(&key) >= cutoff_ms {
                break;
            }
            self.inner.events.remove(key)?;
            n += 1;
        }
        Ok(n)
    }
}
