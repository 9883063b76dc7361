//! Writes the delivery actors' log batches on a thread of its own, then
//! finishes the deliveries those batches record.
//!
//! NB: a sled insert now and then stalls for several milliseconds (a log
//! segment rolling over); written on a delivery arbiter, that stall held
//! up every delivery of the arbiter and made most of the ingest-to-receipt
//! latency tail (benchmark d). Here it delays only the log and the
//! queue-entry removal that follows it.

use actix::prelude::*;
use uuid::Uuid;

use crate::domain::delivery::{LogEntry, QueuedDelivery};
use crate::storage::Store;

pub struct LogWriter {
    store: Store,
}

impl LogWriter {
    /// Starts the writer on its own thread.
    pub fn start(store: Store) -> Addr<LogWriter> {
        SyncArbiter::start(1, move || LogWriter {
            store: store.clone(),
        })
    }
}

impl Actor for LogWriter {
    type Context = SyncContext<Self>;
}

/// One webhook's judged attempts, and the deliveries they finished (to
/// leave the queue, or settle, once their entries are written).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteLog {
    pub webhook_id: Uuid,
    pub entries: Vec<LogEntry>,
    pub finished: Vec<QueuedDelivery>,
}

/// Answered once every batch sent before it is written.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Written;

impl Handler<WriteLog> for LogWriter {
    type Result = ();

    fn handle(&mut self, mut msg: WriteLog, _: &mut SyncContext<Self>) {
        let store = &self.store;
        let id = msg.webhook_id;
        // Deleting a webhook removed its log: add nothing back.
        let written = match store.webhook_exists(id) {
            Ok(true) => store.append_log(id, &mut msg.entries),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            log::error!("webhook {id}: cannot write the delivery log: {e}");
        }
        for d in &msg.finished {
            if let Err(e) = store.finish_delivery(d) {
                log::error!("cannot remove delivery {}: {e}", d.id);
            }
        }
    }
}

impl Handler<Written> for LogWriter {
    type Result = ();

    fn handle(&mut self, _: Written, _: &mut SyncContext<Self>) {}
}
