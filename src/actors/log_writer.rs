//! Writes the delivery actors' log batches on a thread of its own, then
//! finishes the deliveries those batches record.
//!
//! NB: a sled insert now and then stalls for several milliseconds (a log
//! segment rolling over); written on a delivery arbiter, that stall held
//! up every delivery of the arbiter and made most of the ingest-to-receipt
//! latency tail (benchmark d). Here it delays only the log and the
//! queue-entry removal that follows it.
//!
//! It is a plain thread fed by a channel rather than an actix
//! `SyncArbiter`: that one forwards each message through an actor on the
//! arbiter that started it, so every batch woke the main thread on its way
//! here, and its worker spun and yielded the core before each wait.

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::domain::delivery::{LogEntry, QueuedDelivery};
use crate::storage::Store;

/// The writer's handle; the thread ends once every clone is dropped and
/// what was sent before is written.
#[derive(Clone)]
pub struct LogWriter {
    jobs: mpsc::Sender<Job>,
}

/// One webhook's judged attempts, and the deliveries they finished (to
/// leave the queue, or settle, once their entries are written).
pub struct WriteLog {
    pub webhook_id: Uuid,
    pub entries: Vec<LogEntry>,
    pub finished: Vec<QueuedDelivery>,
}

enum Job {
    Write(WriteLog),
    /// Answered once every batch sent before it is written.
    Written(oneshot::Sender<()>),
}

impl LogWriter {
    /// Starts the writer on its own thread.
    pub fn start(store: Store) -> LogWriter {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("hookrelay-log".into())
            .spawn(move || run(&store, queue))
            .expect("cannot start the delivery-log thread");
        LogWriter { jobs }
    }

    /// Hands a batch to the writer; never blocks.
    pub fn write(&self, batch: WriteLog) {
        // Fails only once the thread is gone, which it is only at exit.
        let _ = self.jobs.send(Job::Write(batch));
    }

    /// Resolves once every batch sent before this call is written.
    pub fn written(&self) -> impl std::future::Future<Output = ()> {
        let (done, wait) = oneshot::channel();
        let _ = self.jobs.send(Job::Written(done));
        async move {
            let _ = wait.await;
        }
    }
}

/// How long the writer lets batches gather after a wake-up. Most batches
/// hold an entry or two (an actor gathers 2 ms of its own attempts), and
/// woken for each, the writer spent more on waking than on writing.
const LINGER: Duration = Duration::from_millis(1);

fn run(store: &Store, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        if matches!(first, Job::Write(_)) {
            std::thread::sleep(LINGER);
        }
        // try_iter keeps taking what arrives while these are written.
        for job in std::iter::once(first).chain(queue.try_iter()) {
            run_job(store, job);
        }
    }
}

fn run_job(store: &Store, job: Job) {
    match job {
        Job::Write(batch) => {
            // A panic here must not stop the log for every webhook.
            let wrote =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(store, batch)));
            if wrote.is_err() {
                log::error!("a delivery-log batch panicked while being written");
            }
        }
        Job::Written(done) => {
            let _ = done.send(());
        }
    }
}

fn write(store: &Store, mut batch: WriteLog) {
    let id = batch.webhook_id;
    // Deleting a webhook removed its log: add nothing back.
    let written = match store.webhook_exists(id) {
        Ok(true) => store.append_log(id, &mut batch.entries),
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        log::error!("webhook {id}: cannot write the delivery log: {e}");
    }
    for d in &batch.finished {
        if let Err(e) = store.finish_delivery(d) {
            log::error!("cannot remove delivery {}: {e}", d.id);
        }
    }
}
