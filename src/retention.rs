//! The background sweep that purges events and delivery log entries older
//! than `retention.days`, idempotency keys older than a day, and queued
//! deliveries whose webhook is gone, at start-up and every hour.

use std::time::Duration;

use actix::prelude::*;

use crate::clock::now_ms;
use crate::storage::{self, Store};

const SWEEP_EVERY: Duration = Duration::from_secs(3600);

pub struct Retention {
    store: Store,
    days: f64,
    /// Whether a sweep is running; the next waits for the next hour.
    sweeping: bool,
}

impl Retention {
    pub fn new(store: Store, days: f64) -> Self {
        Retention {
            store,
            days,
            sweeping: false,
        }
    }

    /// Sweeps on a thread of its own: a large purge reads every key, and
    /// this actor's arbiter also runs the registry and the feed. Not on
    /// tokio's blocking pool: the runtime waits for that pool's tasks when
    /// it shuts down, so a long sweep would hold up the exit; this thread
    /// is abandoned (what it purged stays purged, the rest waits).
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.sweeping, true) {
            return;
        }
        let store = self.store.clone();
        let cutoff = now_ms().saturating_sub((self.days * 86_400_000.0) as u64);
        let (done, outcome) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || done.send(purge(&store, cutoff)));
        if let Err(e) = spawned {
            self.sweeping = false;
            return log::error!("cannot start the retention sweep: {e}");
        }
        ctx.spawn(outcome.into_actor(self).map(|outcome, act, _| {
            act.sweeping = false;
            match outcome {
                Ok(Ok((0, 0))) => {}
                Ok(Ok((events, batches))) => log::info!(
                    "retention purged {events} events and {batches} batches of log entries"
                ),
                Ok(Err(e)) => log::error!("retention sweep failed: {e}"),
                Err(_) => log::error!("retention sweep stopped before it finished"),
            }
        }));
    }
}

/// (events, log batches) deleted from before `cutoff` (Unix ms).
/// Also forgets idempotency keys past their 24 hours, whatever `cutoff`.
fn purge(store: &Store, cutoff: u64) -> storage::Result<(usize, usize)> {
    let keys_until = now_ms().saturating_sub(storage::idempotency::KEEP_MS);
    store.forget_idempotency_keys_before(keys_until)?;
    // First, as a queued delivery keeps its event: one left by an ingest
    // or redelivery that raced its webhook's deletion would otherwise keep
    // that event (screenshots and all) until the next restart.
    let orphans = store.purge_orphan_deliveries()?;
    if orphans > 0 {
        log::info!("retention purged {orphans} deliveries queued for deleted webhooks");
    }
    Ok((
        store.purge_events_before(cutoff)?,
        store.purge_log_before(cutoff)?,
    ))
}

impl Actor for Retention {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.sweep(ctx);
        ctx.run_interval(SWEEP_EVERY, Self::sweep);
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::storage::{test_delivery, test_event, test_id_from, test_webhook};

    fn old_event(store: &Store, days_ago: u64) -> Uuid {
        test_event(store, test_id_from(days_ago), &[b'x'; 20_000])
    }

    #[test]
    fn a_delivery_queued_for_a_deleted_webhook_keeps_neither_itself_nor_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let live = test_webhook(Uuid::now_v7(), &["e"]);
        store.insert_webhook(&live).unwrap();
        let (retried, orphaned) = (old_event(&store, 40), old_event(&store, 40));
        store
            .put_delivery(&test_delivery(live.id, retried))
            .unwrap();
        // As an ingest racing the webhook's deletion leaves it.
        let deleted = Uuid::now_v7();
        store
            .put_delivery(&test_delivery(deleted, orphaned))
            .unwrap();

        let thirty_days_ago = now_ms() - 30 * 86_400_000;
        assert_eq!(purge(&store, thirty_days_ago).unwrap(), (1, 0));
        assert!(store.event(orphaned).unwrap().is_none());
        assert!(store.queued_deliveries(deleted).unwrap().is_empty());
        assert!(
            store.event(retried).unwrap().is_some(),
            "a live retry needs it"
        );
        assert_eq!(store.queued_deliveries(live.id).unwrap().len(), 1);
    }
}
