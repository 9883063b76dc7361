//! Group commit: one thread flushes sled for every caller waiting at that
//! moment, so concurrent acknowledgements share an fsync. The same thread
//! runs a small job about once a second (storing the settled watermark).
//! Under concurrent load it lingers briefly before each flush so that more
//! callers share it: a flush costs a write, a `sync_file_range` and thread
//! wake-ups, and on a busy machine that CPU is better spent elsewhere.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Result, StorageError};

const SECOND: Duration = Duration::from_secs(1);

/// How long a flush waits for more callers once concurrency is evident.
/// In the delivery benchmark's (b) it cut flushes threefold and raised
/// throughput by about 7 %; much longer and closed-loop callers starve.
const LINGER: Duration = Duration::from_micros(250);

type Waiter = oneshot::Sender<std::result::Result<(), String>>;

pub struct GroupCommit {
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Waiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupCommit {
    /// The thread ends when the store (and so `tx`) is dropped.
    pub fn start(
        db: sled::Db,
        observer: super::FlushObserver,
        every_second: Box<dyn Fn() + Send>,
    ) -> GroupCommit {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new()
            .name("hookrelay-flush".into())
            .spawn(move || {
                let mut last_tick = Instant::now();
                let mut last_batch = 0;
                loop {
                    if last_tick.elapsed() >= SECOND {
                        every_second();
                        last_tick = Instant::now();
                    }
                    let first = match rx.recv_timeout(SECOND) {
                        Ok(first) => first,
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    // NB: every waiter queued now wrote before queueing, so
                    // the flush that starts after draining covers them all.
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    // A lone caller (one producer posting serially) is
                    // never delayed: nobody else would share its flush.
                    if batch.len() > 1 || last_batch > 1 {
                        std::thread::sleep(LINGER);
                        batch.extend(rx.try_iter());
                    }
                    last_batch = batch.len();
                    let started = Instant::now();
                    let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    observer(started.elapsed());
                    for w in batch {
                        let _ = w.send(result.clone());
                    }
                }
            })
            .expect("spawn flush thread");
        GroupCommit {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    pub async fn flush(&self) -> Result<()> {
        let stopped = || StorageError::Flush("flusher stopped".into());
        let (tx, rx) = oneshot::channel();
        let sender = self.tx.as_ref().ok_or_else(stopped)?;
        sender.send(tx).map_err(|_| stopped())?;
        rx.await
            .map_err(|_| stopped())?
            .map_err(StorageError::Flush)
    }
}

/// Waits for the thread, so that once the last `Store` handle is gone so is
/// its hold on the sled directory (and another process or store can open
/// it at once).
impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
