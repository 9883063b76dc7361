//! The background sweep that purges events and delivery log entries older
//! than `retention.days`, and idempotency keys older than a day, at
//! start-up and every hour.

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
