//! The background sweep that purges events and delivery log entries older
//! than `retention.days`.

use std::time::Duration;

use actix::prelude::*;

use crate::clock::now_ms;
use crate::storage::Store;

const SWEEP_EVERY: Duration = Duration::from_secs(3600);

pub struct Retention {
    pub store: Store,
    pub days: u64,
}

impl Retention {
    fn sweep(&self) {
        let cutoff = now_ms().saturating_sub(self.days * 86_400_000);
        match (
            self.store.purge_events_before(cutoff),
            self.store.purge_log_before(cutoff),
        ) {
            (Ok(events), Ok(batches)) if events + batches > 0 => {
                log::info!("retention purged {events} events and {batches} batches of log entries")
            }
            (Err(e), _) | (_, Err(e)) => log::error!("retention sweep failed: {e}"),
            _ => {}
        }
    }
}

impl Actor for Retention {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.sweep();
        ctx.run_interval(SWEEP_EVERY, |act, _| act.sweep());
    }
}
