//! A delivery actor's attempts that are judged but not yet in the log.
//!
//! The actor hands them to the log writer as one batch a few milliseconds
//! after the first (or at once when the buffer is full), because one sled
//! insert per attempt was the largest cost of fanning out (see
//! `storage/log.rs`). A delivery that is finished (delivered, or failed
//! for good) goes with its entry and leaves the queue only once the entry
//! is written, so a crash in between sends it again instead of losing the
//! entry; a first attempt counts as settled only from then on as well.

use actix::SpawnHandle;
use uuid::Uuid;

use crate::domain::delivery::{LogEntry, QueuedDelivery};

/// Entries per batch at most.
pub const FULL: usize = 32;

#[derive(Default)]
pub struct LogBuffer {
    entries: Vec<LogEntry>,
    /// Deliveries to forget once their entries are written.
    finished: Vec<QueuedDelivery>,
    /// The pending write, if one is scheduled.
    pub timer: Option<SpawnHandle>,
}

impl LogBuffer {
    /// Adds an entry; true once the buffer is full.
    pub fn push(&mut self, entry: LogEntry, finished: Option<QueuedDelivery>) -> bool {
        self.entries.push(entry);
        self.finished.extend(finished);
        self.entries.len() >= FULL
    }

    /// Whether `delivery_id` is finished and waits for its entry.
    pub fn holds(&self, delivery_id: Uuid) -> bool {
        self.finished.iter().any(|d| d.id == delivery_id)
    }

    /// Empties the buffer: the entries to write, then the deliveries to
    /// forget once they are written.
    pub fn take(&mut self) -> (Vec<LogEntry>, Vec<QueuedDelivery>) {
        (
            std::mem::take(&mut self.entries),
            std::mem::take(&mut self.finished),
        )
    }
}
