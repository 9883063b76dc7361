//! How many delivery attempts may hold a connection at once, derived from
//! the process's open-file limit.
//!
//! Every attempt holds a socket. Unbounded, a backlog across many webhooks
//! (each up to `max_in_flight` at once) uses up the open-file limit, and
//! then connects fail and the API itself stops accepting connections
//! ("Too many open files"). Linux's usual soft limit, 1024, is reached by
//! 128 backlogged webhooks. So at start the soft limit is raised to the
//! hard one, and attempts beyond half of it wait for a slot, in order,
//! instead of failing: the other half is left for the API, the feed, the
//! store and idle pooled connections.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Assumed when the limit cannot be read (as Linux's usual soft limit).
const UNKNOWN_LIMIT: u64 = 1024;

/// Raises the soft open-file limit as far as the hard limit allows and
/// returns it. Never fails: on an error the current limit stands.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!("cannot raise the open-file limit: {e}");
            rlimit::Resource::NOFILE
                .get()
                .map_or(UNKNOWN_LIMIT, |(soft, _)| soft)
        }
    }
}

/// The slots for connections that attempts hold; cheap to clone, shared
/// by every thread that sends.
#[derive(Clone)]
pub struct ConnectionBudget {
    slots: Arc<Semaphore>,
    size: usize,
}

/// Held for the length of one attempt.
pub type Slot = OwnedSemaphorePermit;

impl ConnectionBudget {
    /// Half of `open_files` (at least one slot).
    pub fn for_open_files(open_files: u64) -> ConnectionBudget {
        let size = usize::try_from(open_files / 2)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        ConnectionBudget {
            slots: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Waits for a free slot; waiters are served in order.
    pub async fn slot(&self) -> Slot {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Slots held now.
    pub fn in_use(&self) -> usize {
        self.size - self.slots.available_permits()
    }

    /// A slot if one is free now.
    pub fn try_slot(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_open_files_and_never_none() {
        assert_eq!(ConnectionBudget::for_open_files(1024).size(), 512);
        assert_eq!(ConnectionBudget::for_open_files(1).size(), 1);
        assert_eq!(
            ConnectionBudget::for_open_files(u64::MAX).size(),
            Semaphore::MAX_PERMITS
        );
    }

    #[actix_web::test]
    async fn a_full_budget_makes_the_next_attempt_wait_for_a_free_slot() {
        let budget = ConnectionBudget::for_open_files(4);
        let (a, _b) = (budget.slot().await, budget.slot().await);
        assert!(budget.try_slot().is_none());
        assert_eq!(budget.in_use(), 2);
        let mut waiting = std::pin::pin!(budget.slot());
        assert!(futures_util::poll!(&mut waiting).is_pending());
        drop(a);
        let _c = waiting.await;
        assert!(
            budget.try_slot().is_none(),
            "the freed slot went to the waiter"
        );
    }
}
