//! Ingested events: a small header and the canonical body, stored with the
//! deliveries they create.

use std::borrow::Cow;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::codec::{compress_tagged, decode, decompress, encode};
use super::{pair_key, remove_prefix, Result, StorageError, Store};
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

/// The record's layout: `[ROUTED_LZ4]` and then, LZ4-compressed, `[u32
/// header length][header][u32 route count][routes: webhook id ++ delivery
/// id, 32 bytes each][body]`; or `[ROUTED_CHUNKED]`, the same uncompressed
/// up to the routes and then `[u32 chunk count]`, with the body in
/// `event_chunks` (see `CHUNKED_OVER`); or, for an event routed to more
/// than `INLINE_ROUTES` webhooks, `[ROUTED_APART][u32 header
/// length][header][u32 route count][u32 chunk count]`, with both the body
/// and the routes in `event_chunks` (see `FIRST_ROUTE_CHUNK`). The routes
/// are what recovers first attempts after a crash (see `unsettled.rs`);
/// the body is kept as raw bytes so a multi-megabyte screenshot is never
/// re-escaped. Older versions wrote `[ROUTED]`, the routed layout
/// uncompressed, and before routes were kept, `[u32 header
/// length][header][body]`; both still read.
const ROUTED: u8 = 0xE1;
const ROUTED_LZ4: u8 = 0xE2;
const ROUTED_CHUNKED: u8 = 0xE3;
const ROUTED_APART: u8 = 0xE4;

/// Bodies over this size are stored in chunks of it.
///
/// NB: sled 0.34's cache does not bound large values. Its LRU splits
/// `cache_capacity` over 256 shards (256 KiB each at 64 MiB), weighs a
/// shard's pages only after 64 accesses to it, and never evicts a shard's
/// last page. Large values come with few accesses per byte, and a leaf of
/// up to 16 values of 200 KB is larger than a shard. In a probe, 8,000
/// screenshots of 200 KB took the process to 1.9 GB, growing with every
/// one. In sled alone, values of 100 KB and of 1 MB grew without bound,
/// while values of 8 KiB held at 75 MB after 800 MB of inserts (and values
/// of 24 KiB at 183 MB).
const CHUNKED_OVER: usize = 8 * 1024;

/// An event routed to more webhooks than this keeps its routes in
/// `event_chunks`, `ROUTES_PER_CHUNK` to a chunk, for the reason above: at
/// 32 bytes a route, the 1,000 webhooks an organisation may have (and its
/// reseller's) made records of 32 KB and more, and in sled alone values of
/// 32 KiB leveled off at 228 MB and of 64 KiB at 462 MB.
const INLINE_ROUTES: usize = 128;
const ROUTES_PER_CHUNK: usize = CHUNKED_OVER / 32;

/// The index of an event's first route chunk. Body chunks count up from 0
/// and route chunks from here, so each is one key range of the event.
const FIRST_ROUTE_CHUNK: u32 = 0x8000_0000;

/// A record that keeps its body and routes is at most about 12 KiB, and
/// is stored compressed: sled keeps a small value inside its leaf and
/// rewrites the whole leaf every few inserts (and on every split, which
/// time-ordered keys make frequent), so each byte of it is written several
/// times.
fn encode_event(e: &StoredEvent, routes: &[QueuedDelivery], body: &[u8]) -> Vec<u8> {
    let header = encode(e);
    let mut out = vec![ROUTED_CHUNKED]; // the tag, changed below if need be
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&(routes.len() as u32).to_be_bytes());
    if routes_apart(routes) {
        out[0] = ROUTED_APART;
        out.extend_from_slice(&chunk_count(body.len()).to_be_bytes());
        return out;
    }
    routes
        .iter()
        .for_each(|d| out.extend_from_slice(&pair_key(d.webhook_id, d.id)));
    if body_chunked(body, routes) {
        out.extend_from_slice(&chunk_count(body.len()).to_be_bytes());
        return out;
    }
    out.extend_from_slice(body);
    compress_tagged(ROUTED_LZ4, &out[1..])
}

fn routes_apart(routes: &[QueuedDelivery]) -> bool {
    routes.len() > INLINE_ROUTES
}

/// Whether the body goes to `event_chunks`: if it is large, or if the
/// routes go there (a record then holds only counts).
fn body_chunked(body: &[u8], routes: &[QueuedDelivery]) -> bool {
    body.len() > CHUNKED_OVER || routes_apart(routes)
}

fn chunk_count(body_len: usize) -> u32 {
    body_len.div_ceil(CHUNKED_OVER) as u32
}

/// `event_chunks`' key of chunk `index` of event `id`.
fn chunk_key(id: Uuid, index: u32) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(id.as_bytes());
    key[16..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The parts of a stored record: header, routes (32-byte pairs, or how
/// many are in `event_chunks`), body (empty if it is stored in `chunks`
/// chunks).
pub(super) struct Parts<'a> {
    pub header: StoredEvent,
    pub routes: Cow<'a, [u8]>,
    pub routes_apart: Option<u32>,
    pub body: Cow<'a, [u8]>,
    pub chunks: Option<u32>,
}

pub(super) fn decode_event(bytes: &[u8]) -> Result<Parts<'_>> {
    match bytes.split_first() {
        Some((&ROUTED_LZ4, compressed)) => {
            let plain = decompress("event", compressed)?;
            let parts = decode_routed(&plain)?;
            Ok(Parts {
                routes: Cow::Owned(parts.routes.into_owned()),
                body: Cow::Owned(parts.body.into_owned()),
                ..parts
            })
        }
        Some((&ROUTED, rest)) => decode_routed(rest),
        Some((&ROUTED_CHUNKED, rest)) => {
            let parts = decode_routed(rest)?;
            Ok(Parts {
                chunks: Some(read_u32(&parts.body).ok_or_else(truncated)?),
                body: Cow::Borrowed(&[]),
                ..parts
            })
        }
        Some((&ROUTED_APART, rest)) => {
            let (header, counts) = take_sized(rest, 1).ok_or_else(truncated)?;
            let count = |at| counts.get(at..).and_then(read_u32).ok_or_else(truncated);
            Ok(Parts {
                header: decode("event", header)?,
                routes: Cow::Borrowed(&[]),
                routes_apart: Some(count(0)?),
                body: Cow::Borrowed(&[]),
                chunks: Some(count(4)?),
            })
        }
        _ => {
            let (header, body) = take_sized(bytes, 1).ok_or_else(truncated)?;
            Ok(Parts {
                header: decode("event", header)?,
                routes: Cow::Borrowed(&[]),
                routes_apart: None,
                body: Cow::Borrowed(body),
                chunks: None,
            })
        }
    }
}

/// The routed layout after its tag.
fn decode_routed(bytes: &[u8]) -> Result<Parts<'_>> {
    let (header, rest) = take_sized(bytes, 1).ok_or_else(truncated)?;
    let (routes, body) = take_sized(rest, 32).ok_or_else(truncated)?;
    Ok(Parts {
        header: decode("event", header)?,
        routes: Cow::Borrowed(routes),
        routes_apart: None,
        body: Cow::Borrowed(body),
        chunks: None,
    })
}

/// The big-endian u32 at the front of `bytes`.
fn read_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

fn truncated() -> StorageError {
    StorageError::Codec {
        what: "event",
        message: "truncated record".into(),
    }
}

/// Splits `[u32 count][count * unit bytes]` off the front of `bytes`.
fn take_sized(bytes: &[u8], unit: usize) -> Option<(&[u8], &[u8])> {
    let count = read_u32(bytes)? as usize;
    let len = count.checked_mul(unit)?;
    let rest = &bytes[4..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The Unix ms a v7 UUID was made at.
pub(super) fn v7_millis(id: &[u8]) -> u64 {
    id.get(..6)
        .map_or(0, |b| b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
}

impl Store {
    /// A new event id, counting `deliveries` unsettled first attempts
    /// until each is settled (see `unsettled.rs`); pass it to
    /// `insert_event`.
    pub fn open_event(&self, deliveries: usize) -> Uuid {
        self.inner.unsettled.open_event(deliveries)
    }

    /// Writes an event (with an id from `open_event`) and the routes of its
    /// deliveries in one record, after the chunks of a large body: no queue
    /// entry is written for a first attempt. Not yet durable: await `flush`
    /// before acknowledging. On failure the deliveries are settled, as
    /// nothing will send them.
    pub fn insert_event(
        &self,
        e: &StoredEvent,
        body: &[u8],
        deliveries: &[QueuedDelivery],
    ) -> Result<()> {
        // The chunks first: a crash leaves a record only with its chunks.
        let written = self.insert_chunks(e.id, body, deliveries).and_then(|()| {
            let record = encode_event(e, deliveries, body);
            Ok(self.inner.events.insert(e.id.as_bytes(), record)?)
        });
        if written.is_err() {
            deliveries.iter().for_each(|d| self.settle(d.event_id));
        }
        written?;
        Ok(())
    }

    /// Takes back an event written but neither flushed nor handed to its
    /// actors (its idempotency key had been claimed meanwhile): removes it
    /// and settles its deliveries, which nothing will send.
    pub fn discard_event(&self, e: &StoredEvent, deliveries: &[QueuedDelivery]) -> Result<()> {
        deliveries.iter().for_each(|d| self.settle(d.event_id));
        self.inner.events.remove(e.id.as_bytes())?;
        self.remove_chunks(e.id)
    }

    /// A large body, and the routes of an event routed to many webhooks,
    /// go to `event_chunks`; the rest stays in the record.
    fn insert_chunks(&self, id: Uuid, body: &[u8], routes: &[QueuedDelivery]) -> Result<()> {
        let chunks = &self.inner.event_chunks;
        if body_chunked(body, routes) {
            for (i, chunk) in body.chunks(CHUNKED_OVER).enumerate() {
                chunks.insert(chunk_key(id, i as u32), chunk)?;
            }
        }
        if routes_apart(routes) {
            for (i, some) in routes.chunks(ROUTES_PER_CHUNK).enumerate() {
                let pairs: Vec<u8> = some
                    .iter()
                    .flat_map(|d| pair_key(d.webhook_id, d.id))
                    .collect();
                chunks.insert(chunk_key(id, FIRST_ROUTE_CHUNK + i as u32), pairs)?;
            }
        }
        Ok(())
    }

    fn remove_chunks(&self, id: Uuid) -> Result<()> {
        remove_prefix(&self.inner.event_chunks, id.as_bytes()).map(|_| ())
    }

    /// A decoded record's header and body, the body read from its chunks
    /// if it has them.
    fn whole(&self, parts: Parts<'_>) -> Result<(StoredEvent, Vec<u8>)> {
        let Some(count) = parts.chunks else {
            return Ok((parts.header, parts.body.into_owned()));
        };
        let id = parts.header.id;
        // Bounded: a damaged count must not reserve terabytes.
        let mut body = Vec::with_capacity(count.min(1024) as usize * CHUNKED_OVER);
        let found = self.read_chunks(id, 0..FIRST_ROUTE_CHUNK, &mut body)?;
        if found != count {
            return Err(StorageError::Codec {
                what: "event",
                message: format!("{found} of the {count} chunks of event {id}'s body found"),
            });
        }
        Ok((parts.header, body))
    }

    /// A decoded record's routes as 32-byte pairs, read from their chunks
    /// if the record has none.
    pub(super) fn event_routes<'a>(&self, parts: &'a Parts<'_>) -> Result<Cow<'a, [u8]>> {
        let Some(count) = parts.routes_apart else {
            return Ok(Cow::Borrowed(&parts.routes));
        };
        let id = parts.header.id;
        let mut pairs = Vec::new();
        self.read_chunks(id, FIRST_ROUTE_CHUNK..u32::MAX, &mut pairs)?;
        if pairs.len() != count as usize * 32 {
            return Err(StorageError::Codec {
                what: "event",
                message: format!(
                    "{} of the {count} routes of event {id} found",
                    pairs.len() / 32
                ),
            });
        }
        Ok(Cow::Owned(pairs))
    }

    /// Appends event `id`'s chunks with an index in `indices`, in order, to
    /// `out`; returns how many it found.
    fn read_chunks(&self, id: Uuid, indices: Range<u32>, out: &mut Vec<u8>) -> Result<u32> {
        let keys = chunk_key(id, indices.start)..chunk_key(id, indices.end);
        let mut found = 0;
        for chunk in self.inner.event_chunks.range(keys).values() {
            out.extend_from_slice(&chunk?);
            found += 1;
        }
        Ok(found)
    }

    /// A first attempt of `event_id` was judged or moved to the queue.
    pub fn settle(&self, event_id: Uuid) {
        self.inner.unsettled.settle(event_id);
    }

    /// Moves a first attempt held only in memory to the queue tree, where
    /// its actor's start-up load finds it, and settles it; if its webhook
    /// is gone it only settles (nothing will send it). On failure it stays
    /// unsettled: found in its event's record at the next start.
    pub fn queue_first_attempt(&self, d: &QueuedDelivery) -> Result<()> {
        if self.webhook_exists(d.webhook_id)? {
            self.put_delivery(d)?;
        }
        self.settle(d.event_id);
        Ok(())
    }

    pub fn event(&self, id: Uuid) -> Result<Option<(StoredEvent, Vec<u8>)>> {
        match self.inner.events.get(id.as_bytes())? {
            Some(v) => self.whole(decode_event(&v)?).map(Some),
            None => Ok(None),
        }
    }

    /// The newest events, newest first, at most `limit`, with their
    /// bodies if those are at most `max_body` bytes. A record that cannot
    /// be read is logged and passed over.
    ///
    /// NB: the feed refills its snapshot from these at start-up; reading
    /// every body could mean gigabytes if the newest events are screenshots.
    pub fn recent_events(
        &self,
        limit: usize,
        max_body: usize,
    ) -> Result<Vec<(StoredEvent, Option<Vec<u8>>)>> {
        let mut out = Vec::new();
        for item in self.inner.events.iter().rev().take(limit) {
            let (key, v) = item?;
            match self.with_body_up_to(&v, max_body) {
                Ok(found) => out.push(found),
                Err(e @ StorageError::Codec { .. }) => {
                    let id = Uuid::from_slice(&key).unwrap_or_default();
                    ::log::error!("event {id} left out of the recent events: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn with_body_up_to(
        &self,
        record: &[u8],
        max_body: usize,
    ) -> Result<(StoredEvent, Option<Vec<u8>>)> {
        let parts = decode_event(record)?;
        let at_least = match parts.chunks {
            Some(n) => (n as usize).saturating_sub(1) * CHUNKED_OVER + 1,
            None => parts.body.len(),
        };
        if at_least > max_body {
            return Ok((parts.header, None));
        }
        let (header, body) = self.whole(parts)?;
        Ok((header, Some(body).filter(|b| b.len() <= max_body)))
    }

    /// Deletes the events made before `cutoff_ms` that nothing will send
    /// again: every first attempt of theirs is settled and no queued
    /// delivery needs them. Returns how many it deleted.
    pub fn purge_events_before(&self, cutoff_ms: u64) -> Result<usize> {
        // In this order: a first attempt is queued before it is settled,
        // so one settled after the watermark is read is in the queue read;
        // a redelivery is queued before its pin is dropped (see `pins.rs`).
        self.inner.pins.sweep_starts();
        let unsettled_from = self.inner.unsettled.settled_below();
        let needed = self.queued_events_before(cutoff_ms)?;
        let events = &self.inner.events;
        let mut n = 0;
        for key in events.range(..&unsettled_from.as_bytes()[..]).keys() {
            let key = key?;
            if v7_millis(&key) >= cutoff_ms {
                break;
            }
            let Ok(id) = Uuid::from_slice(&key) else {
                events.remove(&key)?; // not an event's key: nothing needs it
                n += 1;
                continue;
            };
            if needed.contains(&id) {
                continue;
            }
            let deleted = self.inner.pins.unless_pinned(id, || {
                events.remove(&key)?;
                self.remove_chunks(id)
            })?;
            n += deleted as usize;
        }
        self.purge_orphan_chunks_before(cutoff_ms)?;
        Ok(n)
    }

    /// Removes chunks made before `cutoff_ms` whose record is gone: those a
    /// crash left between writing the chunks and their record.
    fn purge_orphan_chunks_before(&self, cutoff_ms: u64) -> Result<()> {
        let chunks = &self.inner.event_chunks;
        // (event id, whether its record exists), asked once per event.
        let mut last: Option<(sled::IVec, bool)> = None;
        for key in chunks.iter().keys() {
            let key = key?;
            if v7_millis(&key) >= cutoff_ms {
                break;
            }
            // A key shorter than an id is not ours to keep either.
            let id = sled::IVec::from(key.get(..16).unwrap_or_default());
            let kept = match &last {
                Some((seen, kept)) if *seen == id => *kept,
                _ => self.inner.events.contains_key(&id)?,
            };
            if !kept {
                chunks.remove(&key)?;
            }
            last = Some((id, kept));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_delivery, test_event, test_id_from};
    use super::*;
    use crate::clock::now_ms;

    fn stored(store: &Store, id: Uuid) -> Uuid {
        test_event(store, id, b"{}")
    }

    fn kept(store: &Store, id: Uuid) -> bool {
        store.event(id).unwrap().is_some()
    }

    fn header(id: Uuid) -> StoredEvent {
        StoredEvent {
            id,
            event: "desktop.screenshot.captured".into(),
            organisation_id: Uuid::now_v7(),
            user_id: Some("u-1".into()),
            team_id: None,
            received_at: 1_716_000_000_000,
        }
    }

    #[test]
    fn small_records_are_compressed_large_ones_kept_as_sent_and_all_read_back() {
        let e = header(Uuid::now_v7());
        let routes = [
            test_delivery(Uuid::now_v7(), e.id),
            test_delivery(Uuid::now_v7(), e.id),
        ];
        let pairs: Vec<u8> = routes
            .iter()
            .flat_map(|d| pair_key(d.webhook_id, d.id))
            .collect();
        let small =
            br#"{"data":[{"app":{"name":"Google Chrome"}},{"app":{"name":"Google Chrome"}}]}"#;
        let record = encode_event(&e, &routes, small);
        assert_eq!(record[0], ROUTED_LZ4);
        let parts = decode_event(&record).unwrap();
        assert_eq!(parts.header, e);
        assert_eq!(&parts.routes[..], &pairs[..]);
        assert_eq!((&parts.body[..], parts.chunks), (&small[..], None));
        // A large body is not in the record, only how many chunks it has.
        let large = format!(r#"{{"image":"{}"}}"#, "QUJD".repeat(CHUNKED_OVER));
        let record = encode_event(&e, &routes, large.as_bytes());
        assert_eq!(record[0], ROUTED_CHUNKED);
        assert!(record.len() < 400, "{} bytes", record.len());
        let parts = decode_event(&record).unwrap();
        assert_eq!((&parts.header, &parts.routes[..]), (&e, &pairs[..]));
        assert_eq!((parts.body.len(), parts.chunks), (0, Some(5)));
        // Routed to many webhooks: the record holds only counts.
        let many: Vec<QueuedDelivery> = (0..2100)
            .map(|_| test_delivery(Uuid::now_v7(), e.id))
            .collect();
        let record = encode_event(&e, &many, small);
        assert_eq!(record[0], ROUTED_APART);
        assert!(record.len() < 400, "{} bytes", record.len());
        let parts = decode_event(&record).unwrap();
        assert_eq!(parts.header, e);
        assert_eq!((parts.routes_apart, parts.chunks), (Some(2100), Some(1)));
        // Written uncompressed by an older version.
        let compressed = encode_event(&e, &routes, small);
        let plain = super::super::codec::decompress("event", &compressed[1..]).unwrap();
        let old = [&[ROUTED][..], &plain].concat();
        let parts = decode_event(&old).unwrap();
        assert_eq!(
            (&parts.routes[..], &parts.body[..]),
            (&pairs[..], &small[..])
        );
        // Written before routes were kept: no tag, no routes.
        let header_bytes = encode(&e);
        let legacy = [
            &(header_bytes.len() as u32).to_be_bytes()[..],
            &header_bytes,
            small,
        ]
        .concat();
        let parts = decode_event(&legacy).unwrap();
        assert_eq!((parts.header, &parts.body[..]), (e, &small[..]));
        assert!(parts.routes.is_empty());
    }

    #[test]
    fn a_large_body_is_stored_in_chunks_read_back_whole_and_removed_with_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let e = header(Uuid::now_v7());
        let body: Vec<u8> = (0..CHUNKED_OVER * 7 / 2).map(|i| (i % 251) as u8).collect();
        store.insert_event(&e, &body, &[]).unwrap();
        assert_eq!(store.inner.event_chunks.len(), 4);
        assert_eq!(store.event(e.id).unwrap(), Some((e.clone(), body.clone())));
        let recent = |max_body| store.recent_events(1, max_body).unwrap();
        assert_eq!(recent(body.len()), vec![(e.clone(), Some(body.clone()))]);
        assert_eq!(
            recent(body.len() - 1),
            vec![(e.clone(), None)],
            "one byte too many"
        );
        assert_eq!(recent(1024), vec![(e.clone(), None)]);
        // A damaged record is passed over, not the end of the list.
        let newer = header(Uuid::now_v7());
        store
            .inner
            .events
            .insert(newer.id.as_bytes(), &b"\xE3"[..])
            .unwrap();
        let both = store.recent_events(2, body.len()).unwrap();
        assert_eq!(both, vec![(e.clone(), Some(body.clone()))]);
        store.inner.events.remove(newer.id.as_bytes()).unwrap();
        // A lost chunk is an error, not a shorter body.
        let last = chunk_key(e.id, 3);
        let saved = store.inner.event_chunks.remove(last).unwrap().unwrap();
        assert!(store.event(e.id).is_err());
        store.inner.event_chunks.insert(last, saved).unwrap();
        store.discard_event(&e, &[]).unwrap();
        assert_eq!(
            (store.event(e.id).unwrap(), store.inner.event_chunks.len()),
            (None, 0)
        );
    }

    #[test]
    fn an_event_routed_to_many_webhooks_keeps_its_routes_in_chunks_read_back_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let routed = |e: &StoredEvent, n| -> Vec<QueuedDelivery> {
            (0..n)
                .map(|_| test_delivery(Uuid::now_v7(), e.id))
                .collect()
        };
        let pairs = |routes: &[QueuedDelivery]| -> Vec<u8> {
            routes
                .iter()
                .flat_map(|d| pair_key(d.webhook_id, d.id))
                .collect()
        };
        let record = |e: &StoredEvent| store.inner.events.get(e.id.as_bytes()).unwrap().unwrap();
        let routes_of = |e: &StoredEvent| -> Result<Vec<u8>> {
            let record = record(e);
            Ok(store.event_routes(&decode_event(&record)?)?.into_owned())
        };

        let small = header(Uuid::now_v7());
        let small_routes = routed(&small, 1000);
        store.insert_event(&small, b"{}", &small_routes).unwrap();
        assert!(record(&small).len() < 400, "{} bytes", record(&small).len());
        let chunks = store.inner.event_chunks.len();
        assert_eq!(chunks, 1 + 4, "the body and 1000 routes, 256 to a chunk");
        assert_eq!(routes_of(&small).unwrap(), pairs(&small_routes));
        let body = store.event(small.id).unwrap().unwrap().1;
        assert_eq!(body, b"{}", "the body without the routes");

        let large = header(Uuid::now_v7());
        let large_routes = routed(&large, INLINE_ROUTES + 1);
        let large_body = vec![b'x'; CHUNKED_OVER * 3 / 2];
        store
            .insert_event(&large, &large_body, &large_routes)
            .unwrap();
        assert_eq!(store.event(large.id).unwrap().unwrap().1, large_body);
        assert_eq!(routes_of(&large).unwrap(), pairs(&large_routes));

        // A lost route chunk is an error, not fewer routes.
        let last = chunk_key(small.id, FIRST_ROUTE_CHUNK + 3);
        store.inner.event_chunks.remove(last).unwrap().unwrap();
        assert!(routes_of(&small).is_err());
        store.discard_event(&small, &small_routes).unwrap();
        store.discard_event(&large, &large_routes).unwrap();
        assert_eq!(store.inner.event_chunks.len(), 0);
    }

    #[test]
    fn retention_removes_an_old_events_chunks_and_those_a_crash_left_without_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let big = vec![b'x'; CHUNKED_OVER * 2];
        let old = header(test_id_from(40));
        store.insert_event(&old, &big, &[]).unwrap();
        // Chunks written, then a crash before their record.
        let orphan = test_id_from(40);
        store.insert_chunks(orphan, &big, &[]).unwrap();
        let recent = header(Uuid::now_v7());
        store.insert_event(&recent, &big, &[]).unwrap();
        assert_eq!(store.inner.event_chunks.len(), 6);
        let cutoff = now_ms() - 30 * 86_400_000;
        assert_eq!(store.purge_events_before(cutoff).unwrap(), 1);
        assert_eq!(store.inner.event_chunks.len(), 2, "only the recent event's");
        assert_eq!(store.event(recent.id).unwrap().unwrap().1, big);
    }

    #[test]
    fn a_damaged_event_record_is_an_error_not_a_panic() {
        let e = header(Uuid::now_v7());
        let record = encode_event(&e, &[test_delivery(Uuid::now_v7(), e.id)], b"{\"a\":1}");
        for cut in [1, 3, 5, record.len() / 2, record.len() - 1] {
            assert!(decode_event(&record[..cut]).is_err(), "cut at {cut}");
        }
        let huge = [&[ROUTED_LZ4][..], &u32::MAX.to_le_bytes(), &[0; 8]].concat();
        assert!(decode_event(&huge).is_err());
        let mut flipped = record.clone();
        flipped[record.len() / 2] ^= 0xFF;
        let _ = decode_event(&flipped); // an error or a wrong record, never a panic
        let many: Vec<QueuedDelivery> = (0..=INLINE_ROUTES)
            .map(|_| test_delivery(Uuid::now_v7(), e.id))
            .collect();
        let apart = encode_event(&e, &many, b"{}");
        for cut in 1..apart.len() {
            assert!(decode_event(&apart[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn old_events_go_unless_a_queued_delivery_needs_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let old = stored(&store, test_id_from(40));
        let old_but_queued = stored(&store, test_id_from(35));
        let older_than_queued = stored(&store, test_id_from(50));
        let recent = stored(&store, test_id_from(2));
        store
            .put_delivery(&test_delivery(Uuid::now_v7(), old_but_queued))
            .unwrap();
        store
            .put_delivery(&test_delivery(Uuid::now_v7(), recent))
            .unwrap();

        // A queue entry that cannot be read can never be sent: the sweep
        // goes on without it.
        store
            .inner
            .queue
            .insert([7u8; 32], &b"\x01{damaged"[..])
            .unwrap();

        let thirty_days_ago = now_ms() - 30 * 86_400_000;
        assert_eq!(store.purge_events_before(thirty_days_ago).unwrap(), 2);
        assert!(!kept(&store, old) && !kept(&store, older_than_queued));
        assert!(kept(&store, old_but_queued), "a retry still needs it");
        assert!(kept(&store, recent));
        assert_eq!(store.purge_events_before(thirty_days_ago).unwrap(), 0);
    }

    #[test]
    fn an_event_with_an_unsettled_first_attempt_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let settled = stored(&store, store.open_event(0));
        let unsettled = stored(&store, store.open_event(1));
        let later = stored(&store, store.open_event(0));
        // A cutoff past every event: only what may still be sent stays.
        assert_eq!(store.purge_events_before(now_ms() + 3_600_000).unwrap(), 1);
        assert!(!kept(&store, settled));
        assert!(kept(&store, unsettled) && kept(&store, later));
        store.settle(unsettled);
        assert_eq!(store.purge_events_before(now_ms() + 3_600_000).unwrap(), 2);
    }
}
