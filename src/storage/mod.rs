//! The only module that touches sled. It owns the trees, the key layout,
//! the versioned value codec and the group-commit flusher.
//!
//! Trees and keys (every id is a UUID; v7 ids sort by creation time, and
//! keys are big-endian bytes so sled's order is time order):
//! - `meta`: `admin_key_hash` → sha256 of the generated admin key;
//!   `settled_below` → the event id below which every first attempt is
//!   settled.
//! - `orgs`: org id → `Organisation`.
//! - `api_keys`: sha256(api key) → org id.
//! - `orgs_by_reseller`: reseller id ++ org id → (): a reseller's child
//!   organisations, and the reseller itself (see `orgs.rs`).
//! - `webhooks`: webhook id → `Webhook`; `webhooks_by_owner`: owner id ++
//!   webhook id → ().
//! - `events`: event id → `StoredEvent` header, the routes of its
//!   deliveries and the raw canonical body, or, for a large body or many
//!   routes, how many there are; `event_chunks`: event id ++ chunk index
//!   (u32) → a piece of that body (from index 0) or of those routes (from
//!   index 2^31) (see `events.rs`).
//! - `queue`: webhook id ++ delivery id → `QueuedDelivery` (a webhook's
//!   outstanding deliveries that are retries, redeliveries or were moved
//!   out of memory; a first attempt is recovered from its event's record,
//!   see `unsettled.rs`), in event order.
//! - `parked`: webhook id ++ due time (Unix ms, big-endian u64) ++
//!   delivery id → (): the stored retries not due for a while, by due
//!   time, so that no actor need hold them in memory (see `queue.rs`).
//! - `log`: webhook id ++ id of the batch's first entry → a batch of
//!   `LogEntry`s in id order (see `log.rs`).
//! - `idempotency`: org id ++ sha256(idempotency key) → the event it
//!   stored (see `idempotency.rs`).
//!
//! NB: nothing written here is durable until `flush` returns; callers that
//! acknowledge a write to a client must await it.

mod codec;
mod events;
mod flusher;
pub mod idempotency;
mod log;
mod orgs;
mod pins;
mod queue;
mod routing;
mod unsettled;
mod webhooks;

use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

pub use events::StoredEvent;
pub use log::LogPage;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage: cannot decode a stored {what}: {message}")]
    Codec { what: &'static str, message: String },
    #[error("storage: flush failed: {0}")]
    Flush(String),
}

impl<E: std::fmt::Display> From<sled::transaction::TransactionError<E>> for StorageError {
    fn from(e: sled::transaction::TransactionError<E>) -> Self {
        match e {
            sled::transaction::TransactionError::Storage(s) => StorageError::Sled(s),
            sled::transaction::TransactionError::Abort(a) => StorageError::Codec {
                what: "transaction",
                message: a.to_string(),
            },
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A handle on the store; cheap to clone, shared by every thread.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    meta: sled::Tree,
    orgs: sled::Tree,
    api_keys: sled::Tree,
    orgs_by_reseller: sled::Tree,
    webhooks: sled::Tree,
    webhooks_by_owner: sled::Tree,
    events: sled::Tree,
    event_chunks: sled::Tree,
    queue: sled::Tree,
    parked: sled::Tree,
    log: sled::Tree,
    idempotency: sled::Tree,
    /// Held while a batch of log entries gets its ids (see `log.rs`).
    log_ids: std::sync::Mutex<()>,
    /// Held while a webhook is counted and stored (see `webhooks.rs`).
    webhook_creation: std::sync::Mutex<()>,
    unsettled: Arc<unsettled::Unsettled>,
    pins: pins::Pins,
    routing: routing::RoutingCache,
    org_cache: orgs::OrgCache,
    flusher: flusher::GroupCommit,
}

/// Told how long each group-commit flush took (for metrics).
pub type FlushObserver = Arc<dyn Fn(std::time::Duration) + Send + Sync>;

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        Self::open_observed(path, Arc::new(|_| {}))
    }

    /// Opens the store, reporting every flush's duration to `observer`.
    pub fn open_observed(path: &Path, observer: FlushObserver) -> Result<Store> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(200))
            .open()?;
        let tree = |name: &str| db.open_tree(name);
        let meta = tree("meta")?;
        let unsettled = Arc::new(unsettled::Unsettled::default());
        let every_second = {
            let (meta, unsettled) = (meta.clone(), unsettled.clone());
            Box::new(move || {
                if let Err(e) = unsettled::save_changed_watermark(&meta, &unsettled) {
                    ::log::error!("cannot store the settled watermark: {e}");
                }
            })
        };
        let inner = Inner {
            meta,
            orgs: tree("orgs")?,
            api_keys: tree("api_keys")?,
            orgs_by_reseller: tree("orgs_by_reseller")?,
            webhooks: tree("webhooks")?,
            webhooks_by_owner: tree("webhooks_by_owner")?,
            events: tree("events")?,
            event_chunks: tree("event_chunks")?,
            queue: tree("queue")?,
            parked: tree("parked")?,
            log: tree("log")?,
            idempotency: tree("idempotency")?,
            log_ids: Default::default(),
            webhook_creation: Default::default(),
            unsettled,
            pins: Default::default(),
            routing: Default::default(),
            org_cache: Default::default(),
            flusher: flusher::GroupCommit::start(db.clone(), observer, every_second),
            db,
        };
        let store = Store {
            inner: Arc::new(inner),
        };
        store.index_orgs_by_reseller()?;
        match store.recover_first_attempts()? {
            0 => {}
            n => ::log::warn!("queued {n} first attempts that a crash interrupted"),
        }
        Ok(store)
    }

    /// Waits until everything written before this call is on disk.
    /// Concurrent callers share one flush (group commit).
    pub async fn flush(&self) -> Result<()> {
        self.inner.flusher.flush().await
    }

    /// Flushes from a thread that may block (shutdown, tests).
    /// Stores the settled watermark first, to spare the next start-up a
    /// search.
    pub fn flush_blocking(&self) -> Result<()> {
        unsettled::save_watermark(&self.inner.meta, &self.inner.unsettled)?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// Liveness of the store: a read and the on-disk size.
    pub fn health(&self) -> Result<u64> {
        self.inner.meta.get(b"health")?;
        Ok(self.inner.db.size_on_disk()?)
    }

    pub fn admin_key_hash(&self) -> Result<Option<[u8; 32]>> {
        Ok(self
            .inner
            .meta
            .get(b"admin_key_hash")?
            .and_then(|v| v.as_ref().try_into().ok()))
    }

    pub fn set_admin_key_hash(&self, hash: [u8; 32]) -> Result<()> {
        self.inner.meta.insert(b"admin_key_hash", &hash)?;
        Ok(())
    }
}

/// `a ++ b`: the composite keys of the per-webhook trees.
fn pair_key(a: Uuid, b: Uuid) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(a.as_bytes());
    k[16..].copy_from_slice(b.as_bytes());
    k
}

fn second_id(key: &[u8]) -> Option<Uuid> {
    key.get(16..32).and_then(|b| Uuid::from_slice(b).ok())
}

/// The owners (first 16 bytes) of a tree keyed owner ++ id, in order: one
/// seek per owner, past all of its keys, rather than a read of every key.
fn owners(tree: &sled::Tree) -> impl Iterator<Item = Result<Vec<u8>>> + '_ {
    let mut from = Some(Vec::new());
    std::iter::from_fn(move || {
        let next = tree.range(from.take()?.as_slice()..).next()?;
        Some(next.map_err(Into::into).map(|(key, _)| {
            let owner = key[..key.len().min(16)].to_vec();
            // Past every key of this owner (keys are owner + 16 bytes, or
            // + a due time, whose first byte is 0 for a million years).
            from = Some([&owner[..], &[0xff; 17]].concat());
            owner
        }))
    })
}

/// Removes every key of `tree` that starts with `owner`; returns how many.
fn remove_prefix(tree: &sled::Tree, owner: &[u8]) -> Result<usize> {
    let mut removed = 0;
    for key in tree.scan_prefix(owner).keys() {
        tree.remove(key?)?;
        removed += 1;
    }
    Ok(removed)
}

/// A queued retry of `event_id` for `webhook_id`, for tests.
#[cfg(test)]
pub(crate) fn test_delivery(
    webhook_id: Uuid,
    event_id: Uuid,
) -> crate::domain::delivery::QueuedDelivery {
    crate::domain::delivery::QueuedDelivery {
        id: Uuid::now_v7(),
        webhook_id,
        event_id,
        event: "e".into(),
        attempts: 1,
        next_attempt_at: 0,
        created_at: 0,
        only_in_event: false,
    }
}

/// A v7 id made `days_ago` days ago, for tests.
#[cfg(test)]
pub(crate) fn test_id_from(days_ago: u64) -> Uuid {
    let secs = crate::clock::now_ms() / 1000 - days_ago * 86_400;
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, 0))
}

/// Stores an event with id `id` (made when the id was) and `body`, routed
/// nowhere, for tests; returns `id`.
#[cfg(test)]
pub(crate) fn test_event(store: &Store, id: Uuid, body: &[u8]) -> Uuid {
    let e = StoredEvent {
        id,
        event: "e".into(),
        organisation_id: Uuid::nil(),
        user_id: None,
        team_id: None,
        received_at: events::v7_millis(id.as_bytes()),
    };
    store.insert_event(&e, body, &[]).unwrap();
    id
}

/// A deliverable webhook of `owner` taking `events`, for tests.
#[cfg(test)]
pub(crate) fn test_webhook(owner: Uuid, events: &[&str]) -> crate::domain::webhook::Webhook {
    use crate::domain::webhook::{SignatureScheme, Webhook, WebhookStatus};
    Webhook {
        id: Uuid::now_v7(),
        organisation_id: owner,
        name: "w".into(),
        url: "http://127.0.0.1:9/".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        active: true,
        ordered: false,
        status: WebhookStatus::Enabled,
        disabled_reason: None,
        signature_scheme: SignatureScheme::default(),
        secret: "s".into(),
        created_at: 0,
        updated_at: 0,
        failure_count: 0,
        last_delivery_at: None,
        failing_since: None,
    }
}
