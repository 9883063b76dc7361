//! Group commit: one thread flushes sled for every caller waiting at that
//! moment, so concurrent acknowledgements share an fsync.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::{Result, StorageError};

type Waiter = oneshot::Sender<std::result::Result<(), String>>;

pub struct GroupCommit {
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Waiter>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupCommit {
    /// The thread ends when the store (and so `tx`) is dropped.
    pub fn start(db: sled::Db, observer: super::FlushObserver) -> GroupCommit {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let thread = std::thread::Builder::new()
            .name("hookrelay-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // NB: every waiter queued now wrote before queueing, so
                    // the flush that starts after draining covers them all.
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let started = std::time::Instant::now();
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
