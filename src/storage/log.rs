//! The delivery log: one entry per attempt, per webhook, newest last.

use std::collections::HashSet;

use uuid::Uuid;

use super::codec::{decode, encode};
use super::events::v7_millis;
use super::{pair_key, Result, Store};
use crate::domain::delivery::{LogEntry, Outcome};

/// One page of the log, newest first, and the cursor of the next page.
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    pub next_before: Option<Uuid>,
}

/// How many entries a filtered page may skip before it stops looking.
const SCAN_BUDGET: usize = 10_000;

impl Store {
    pub fn append_log(&self, webhook_id: Uuid, entry: &LogEntry) -> Result<()> {
        self.inner
            .log
            .insert(pair_key(webhook_id, entry.id), encode(entry))?;
        Ok(())
    }

    /// Entries older than `before` (or the newest), matching `outcome`.
    pub fn log_page(
        &self,
        webhook_id: Uuid,
        limit: usize,
        before: Option<Uuid>,
        outcome: Option<Outcome>,
    ) -> Result<LogPage> {
        let start = pair_key(webhook_id, Uuid::nil());
        let end = match before {
            Some(b) => pair_key(webhook_id, b),
            None => pair_key(webhook_id, Uuid::max()),
        };
        let mut entries = Vec::new();
        let mut last_seen = None;
        for (scanned, item) in self.inner.log.range(start..end).rev().enumerate() {
            if entries.len() == limit || scanned == SCAN_BUDGET {
                break;
            }
            let entry: LogEntry = decode("log entry", &item?.1)?;
            last_seen = Some(entry.id);
            if outcome.is_none_or(|o| o == entry.outcome) {
                entries.push(entry);
            }
        }
        let more = match last_seen {
            Some(id) => self
                .inner
                .log
                .range(start..pair_key(webhook_id, id))
                .next_back()
                .is_some(),
            None => false,
        };
        Ok(LogPage {
            entries,
            next_before: if more { last_seen } else { None },
        })
    }

    /// The delivery ids of a webhook's entries from `since` on.
    pub(super) fn deliveries_logged_since(
        &self,
        webhook_id: Uuid,
        since: Uuid,
    ) -> Result<HashSet<Uuid>> {
        let range = pair_key(webhook_id, since)..=pair_key(webhook_id, Uuid::max());
        let mut ids = HashSet::new();
        for item in self.inner.log.range(range) {
            let entry: LogEntry = decode("log entry", &item?.1)?;
            ids.insert(entry.delivery_id);
        }
        Ok(ids)
    }

    /// The newest entry whose id or delivery id is `id`.
    pub fn find_log(&self, webhook_id: Uuid, id: Uuid) -> Result<Option<LogEntry>> {
        for item in self.inner.log.scan_prefix(webhook_id.as_bytes()).rev() {
            let entry: LogEntry = decode("log entry", &item?.1)?;
            if entry.id == id || entry.delivery_id == id {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Deletes entries written before `cutoff_ms`; returns how many.
    pub fn purge_log_before(&self, cutoff_ms: u64) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in self.inner.log.iter().keys() {
            let key = key?;
            if v7_millis(&key[16..]) < cutoff_ms {
                batch.remove(key);
                n += 1;
            }
        }
        self.inner.log.apply_batch(batch)?;
        Ok(n)
    }
}
