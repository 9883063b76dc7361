//! The background sweep that purges events and delivery log entries older
//! than `retention.days`, at start-up and every hour.

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

    /// Sweeps on a blocking thread: a large purge reads every key, and
    /// this actor's arbiter also runs the registry and the feed.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.sweeping, true) {
            return;
        }
        let store = self.store.clone();
        let cutoff = now_ms().saturating_sub((self.days * 86_400_000.0) as u64);
        let purge = actix_web::rt::task::spawn_blocking(move || purge(&store, cutoff));
        ctx.spawn(purge.into_actor(self).map(|outcome, act, _| {
            act.sweeping = false;
            match outcome {
                Ok(Ok((0, 0))) => {}
                Ok(Ok((events, batches))) => log::info!(
                    "retention purged {events} events and {batches} batches of log entries"
                ),
                Ok(Err(e)) => log::error!("retention sweep failed: {e}"),
                Err(e) => log::error!("retention sweep stopped: {e}"),
            }
        }));
    }
}

/// (events, log batches) deleted from before `cutoff` (Unix ms).
fn purge(store: &Store, cutoff: u64) -> storage::Result<(usize, usize)> {
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
