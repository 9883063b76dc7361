//! The delivery log: one entry per attempt, per webhook, newest last.
//!
//! Entries are stored in batches, one compressed sled value per batch
//! keyed by its first entry's id: a delivery actor gathers the attempts it
//! judges within a few milliseconds and the log writer stores them
//! together, since one sled insert per attempt cost about a sixth of all
//! CPU time at 100 webhooks (benches/delivery.rs, c).
//! Entries get their ids as their batch is written, under one lock, so
//! batches never interleave: every entry of a batch sorts after every
//! entry of the batches keyed before it. A value written before batching
//! holds one entry and still reads.

use std::collections::HashSet;

use uuid::Uuid;

use super::codec::{compress_tagged, decode, decompress};
use super::events::v7_millis;
use super::{owners, pair_key, Result, StorageError, Store};
use crate::domain::delivery::{LogEntry, Outcome};

/// First byte of a batch value; a single-entry value starts with the
/// codec's version byte instead.
const BATCH: u8 = 0xB1;

/// `BATCH`, then the entries, postcard-encoded and LZ4-compressed.
///
/// NB: a batch never held JSON, so it is encoded for size and speed: JSON
/// encoding alone took about 3 % of all CPU in benchmark (c). postcard is
/// positional, so changing `LogEntry` needs a new tag (and the old layout
/// kept for reading), as the codec's version byte does for JSON records.
/// Compressed, because sled rewrites whole leaf nodes now and then, so
/// every stored byte is written several times: LZ4 cut the bytes written
/// per delivery in benchmark (c) from about 4.1 KB to 1.2 KB and raised
/// its throughput by about a fifth.
fn encode_batch(entries: &[LogEntry]) -> Vec<u8> {
    let plain = postcard::to_allocvec(entries).expect("log entries always serialise");
    compress_tagged(BATCH, &plain)
}

/// About how large a batch may be before compression.
///
/// NB: sled 0.34's cache does not bound large values (see `CHUNKED_OVER`
/// in `events.rs`), and 32 entries that each kept 4 KiB of an endpoint's
/// response would make one of 128 KiB.
const BATCH_BYTES: usize = 8 * 1024;

/// How many of `entries` (at least one) fit in `BATCH_BYTES`, counting a
/// response body's bytes and about 256 for the rest of each entry.
fn batch_len(entries: &[LogEntry]) -> usize {
    let mut bytes = 0;
    let fit = entries.iter().take_while(|e| {
        bytes += e.response_body.len() + 256;
        bytes <= BATCH_BYTES
    });
    fit.count().max(1)
}

/// The entries of one value, in id order.
fn decode_batch(value: &[u8]) -> Result<Vec<LogEntry>> {
    let Some((&BATCH, compressed)) = value.split_first() else {
        return Ok(vec![decode("log entry", value)?]);
    };
    let plain = decompress("log batch", compressed)?;
    postcard::from_bytes(&plain).map_err(|e| StorageError::Codec {
        what: "log batch",
        message: e.to_string(),
    })
}

/// One page of the log, newest first, and the cursor of the next page.
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    pub next_before: Option<Uuid>,
}

/// How many entries a filtered page may skip before it stops looking.
const SCAN_BUDGET: usize = 10_000;

impl Store {
    /// Writes `entries` in batches of at most about `BATCH_BYTES`, giving
    /// each a new id in order.
    pub fn append_log(&self, webhook_id: Uuid, entries: &mut [LogEntry]) -> Result<()> {
        {
            let _ids = self.inner.log_ids.lock().unwrap_or_else(|e| e.into_inner());
            entries.iter_mut().for_each(|e| e.id = Uuid::now_v7());
        }
        let mut rest = &entries[..];
        while !rest.is_empty() {
            let (batch, after) = rest.split_at(batch_len(rest));
            let key = pair_key(webhook_id, batch[0].id);
            self.inner.log.insert(key, encode_batch(batch))?;
            rest = after;
        }
        Ok(())
    }

    /// A webhook's entries from its newest batch keyed below `before`
    /// backwards, newest first, without those at or after `before`.
    fn entries_before(
        &self,
        webhook_id: Uuid,
        before: Uuid,
    ) -> impl Iterator<Item = Result<LogEntry>> + '_ {
        let range = pair_key(webhook_id, Uuid::nil())..pair_key(webhook_id, before);
        self.inner
            .log
            .range(range)
            .rev()
            .flat_map(|item| {
                let batch = item.map_err(Into::into).and_then(|(_, v)| decode_batch(&v));
                match batch {
                    Ok(entries) => entries.into_iter().rev().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                }
            })
            .filter(move |e| e.as_ref().map_or(true, |e| e.id < before))
    }

    /// Entries older than `before` (or the newest), matching `outcome`.
    pub fn log_page(
        &self,
        webhook_id: Uuid,
        limit: usize,
        before: Option<Uuid>,
        outcome: Option<Outcome>,
    ) -> Result<LogPage> {
        let mut entries = Vec::new();
        let mut last_seen = None;
        let older = self.entries_before(webhook_id, before.unwrap_or(Uuid::max()));
        for (scanned, entry) in older.enumerate() {
            if entries.len() == limit || scanned == SCAN_BUDGET {
                break;
            }
            let entry = entry?;
            last_seen = Some(entry.id);
            if outcome.is_none_or(|o| o == entry.outcome) {
                entries.push(entry);
            }
        }
        // NB: a batch keyed below the last entry seen holds at least one
        // older entry (its first), and batches do not interleave.
        let more = match last_seen {
            Some(id) => self
                .inner
                .log
                .range(pair_key(webhook_id, Uuid::nil())..pair_key(webhook_id, id))
                .next_back()
                .is_some(),
            None => false,
        };
        Ok(LogPage {
            entries,
            next_before: if more { last_seen } else { None },
        })
    }

    /// The delivery ids of a webhook's entries from `since` on (and of
    /// a few just before it).
    pub(super) fn deliveries_logged_since(
        &self,
        webhook_id: Uuid,
        since: Uuid,
    ) -> Result<HashSet<Uuid>> {
        let mut ids = HashSet::new();
        for batch in self.batches_from(webhook_id, since)? {
            for entry in decode_batch(&batch?.1)? {
                ids.insert(entry.delivery_id);
            }
        }
        Ok(ids)
    }

    /// A webhook's batches, oldest first, from the one that may hold
    /// `since` (it may be keyed before it) on.
    fn batches_from(&self, webhook_id: Uuid, since: Uuid) -> Result<sled::Iter> {
        let log = &self.inner.log;
        let from = log
            .range(pair_key(webhook_id, Uuid::nil())..pair_key(webhook_id, since))
            .next_back()
            .transpose()?
            .map_or(pair_key(webhook_id, since).to_vec(), |(k, _)| k.to_vec());
        Ok(log.range(from..=pair_key(webhook_id, Uuid::max()).to_vec()))
    }

    /// An entry whose id or delivery id is `id`; every entry of one
    /// delivery names the same event. Both are v7 ids made no later than
    /// the entries they name (a second is allowed for other threads'
    /// clocks), and a delivery's first attempt follows it closely, so the
    /// search runs forward from `id`'s time over at most `SCAN_BUDGET`
    /// entries: an unknown id costs a bounded search, not the whole log.
    pub fn find_log(&self, webhook_id: Uuid, id: Uuid) -> Result<Option<LogEntry>> {
        if id.get_version_num() != 7 {
            return Ok(None);
        }
        let from_ms = v7_millis(id.as_bytes()).saturating_sub(1000);
        let mut from = [0u8; 16];
        from[..6].copy_from_slice(&from_ms.to_be_bytes()[2..]);
        let mut scanned = 0;
        for batch in self.batches_from(webhook_id, Uuid::from_bytes(from))? {
            for entry in decode_batch(&batch?.1)? {
                if entry.id == id || entry.delivery_id == id {
                    return Ok(Some(entry));
                }
                scanned += 1;
                if scanned == SCAN_BUDGET {
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Deletes the entries written before `cutoff_ms` (a batch's entries
    /// all get their ids at once); returns how many batches it deleted.
    /// Reads each webhook's batches oldest first only up to the cutoff,
    /// then jumps to the next webhook, so an hourly sweep does not read
    /// the whole log.
    /// NB: key by key: one `sled::Batch` of them would stop every other
    /// write to the store while it is applied.
    pub fn purge_log_before(&self, cutoff_ms: u64) -> Result<usize> {
        let (log, mut n) = (&self.inner.log, 0);
        for owner in owners(log) {
            for old in log.scan_prefix(owner?).keys() {
                let old = old?;
                if old.get(16..).is_none_or(|id| v7_millis(id) >= cutoff_ms) {
                    break;
                }
                log.remove(old)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::encode;
    use super::*;
    use crate::domain::delivery::AttemptResult;

    fn entry(outcome: Outcome) -> LogEntry {
        let result = AttemptResult {
            status_code: Some(200),
            ..Default::default()
        };
        let (delivery, event) = (Uuid::now_v7(), Uuid::now_v7());
        LogEntry::of_attempt((delivery, event, &"e".into()), 1, outcome, result, None)
    }

    /// A store whose webhook `hook` has a value written before batching,
    /// then batches of 3, 1 and 4: eight entries, returned oldest first.
    fn store_with_log(dir: &std::path::Path, hook: Uuid) -> (Store, Vec<LogEntry>) {
        let store = Store::open(&dir.join("data")).unwrap();
        let old = LogEntry {
            id: Uuid::now_v7(), // as given when entries were written one by one
            ..entry(Outcome::Delivered)
        };
        let key = pair_key(hook, old.id);
        store.inner.log.insert(key, encode(&old)).unwrap();
        let mut all = vec![old];
        for n in [3, 1, 4] {
            let outcomes = [Outcome::Failed, Outcome::Delivered];
            let mut batch: Vec<_> = (0..n).map(|i| entry(outcomes[i % 2])).collect();
            store.append_log(hook, &mut batch).unwrap();
            all.extend(batch);
        }
        store
            .append_log(Uuid::now_v7(), &mut [entry(Outcome::Failed)])
            .unwrap();
        (store, all)
    }

    fn ids(entries: &[LogEntry]) -> Vec<Uuid> {
        entries.iter().map(|e| e.id).collect()
    }

    #[test]
    fn pages_split_batches_and_reassemble_the_log_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let hook = Uuid::now_v7();
        let (store, all) = store_with_log(dir.path(), hook);
        let newest_first: Vec<Uuid> = ids(&all).into_iter().rev().collect();
        assert!(
            newest_first.is_sorted_by(|a, b| a > b),
            "ids follow write order"
        );
        let (mut paged, mut before) = (vec![], None);
        for _ in 0..10 {
            let page = store.log_page(hook, 3, before, None).unwrap();
            paged.extend(ids(&page.entries));
            before = page.next_before;
            if before.is_none() {
                break;
            }
        }
        assert_eq!(paged, newest_first);
        let failed = store
            .log_page(hook, 10, None, Some(Outcome::Failed))
            .unwrap();
        let want = all.iter().rev().filter(|e| e.outcome == Outcome::Failed);
        assert_eq!(ids(&failed.entries), want.map(|e| e.id).collect::<Vec<_>>());
    }

    #[test]
    fn entries_with_large_responses_are_split_into_small_batches_that_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let hook = Uuid::now_v7();
        let mut entries: Vec<LogEntry> = (0..40)
            .map(|i| LogEntry {
                response_body: format!("{i:03}").repeat(1000), // 3 KB
                ..entry(Outcome::Delivered)
            })
            .collect();
        store.append_log(hook, &mut entries).unwrap();
        let values: Vec<_> = store
            .inner
            .log
            .iter()
            .values()
            .map(|v| v.unwrap())
            .collect();
        assert_eq!(values.len(), 40 / 2, "two 3 KB entries per batch");
        let page = store.log_page(hook, 100, None, None).unwrap();
        let newest_first: Vec<Uuid> = ids(&entries).into_iter().rev().collect();
        assert_eq!(ids(&page.entries), newest_first);
        assert_eq!(page.entries[39].response_body, entries[0].response_body);
    }

    #[test]
    fn any_entry_is_found_and_counted_from_its_own_batch_on() {
        let dir = tempfile::tempdir().unwrap();
        let hook = Uuid::now_v7();
        let (store, all) = store_with_log(dir.path(), hook);
        let middle = &all[2]; // the second entry of the first batch
        let found = store.find_log(hook, middle.delivery_id).unwrap().unwrap();
        assert_eq!(found.id, middle.id);
        assert_eq!(
            store.find_log(hook, middle.id).unwrap().unwrap().id,
            middle.id
        );
        assert!(store.find_log(hook, Uuid::now_v7()).unwrap().is_none());
        let since = store.deliveries_logged_since(hook, middle.id).unwrap();
        for later in &all[2..] {
            assert!(since.contains(&later.delivery_id));
        }
        assert!(
            !since.contains(&all[0].delivery_id),
            "older batches are not read"
        );
    }

    #[test]
    fn an_old_entry_is_found_from_its_own_time_past_many_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let hook = Uuid::now_v7();
        let mut first = [entry(Outcome::Delivered)];
        store.append_log(hook, &mut first).unwrap();
        for _ in 0..(SCAN_BUDGET / 32 + 10) {
            let mut batch: Vec<_> = (0..32).map(|_| entry(Outcome::Failed)).collect();
            store.append_log(hook, &mut batch).unwrap();
        }
        let found = store.find_log(hook, first[0].delivery_id).unwrap();
        assert_eq!(found.map(|e| e.id), Some(first[0].id));
        assert!(
            store.find_log(hook, Uuid::new_v4()).unwrap().is_none(),
            "not a v7 id"
        );
        assert!(store.find_log(hook, Uuid::now_v7()).unwrap().is_none());
    }

    #[test]
    fn the_sweep_deletes_only_batches_written_before_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let hook = Uuid::now_v7();
        let (store, all) = store_with_log(dir.path(), hook);
        let secs = crate::clock::now_ms() / 1000 - 40 * 86_400;
        let old = LogEntry {
            id: Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, 0)),
            ..entry(Outcome::Delivered)
        };
        store
            .inner
            .log
            .insert(pair_key(hook, old.id), encode(&old))
            .unwrap();
        assert!(store.find_log(hook, old.id).unwrap().is_some());
        let (above, below) = (Uuid::max(), Uuid::nil()); // either side of `hook`
        for owner in [above, below] {
            let key = pair_key(owner, old.id);
            store.inner.log.insert(key, encode(&old)).unwrap();
        }

        let thirty_days_ago = crate::clock::now_ms() - 30 * 86_400_000;
        assert_eq!(store.purge_log_before(thirty_days_ago).unwrap(), 3);
        for owner in [hook, above, below] {
            assert!(store.find_log(owner, old.id).unwrap().is_none());
        }
        let page = store.log_page(hook, 100, None, None).unwrap();
        assert_eq!(page.entries.len(), all.len(), "every newer entry stays");
    }

    #[test]
    fn a_damaged_batch_is_an_error_not_a_panic() {
        let entries = [entry(Outcome::Delivered), entry(Outcome::Failed)];
        let bytes = encode_batch(&entries);
        assert_eq!(ids(&decode_batch(&bytes).unwrap()), ids(&entries));
        assert!(bytes.len() < encode(&entries[0]).len() * 2, "compressed");
        for cut in [1, 3, 5, 9, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode_batch(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let huge = [&[BATCH][..], &u32::MAX.to_le_bytes(), &[0; 8]].concat();
        assert!(decode_batch(&huge).is_err());
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 0xFF;
        let _ = decode_batch(&flipped); // an error or wrong entries, never a panic
    }
}
