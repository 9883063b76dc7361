//! How many bytes of large request bodies (events, simulations) the server
//! holds at once, over all requests: `server.max_body_bytes_in_flight`.
//!
//! NB: an ingest holds several copies of its body at its peak (as read,
//! parsed, normalised, stored): one 42 MB screenshot took the process from
//! 22 to 226 MB, and eight at once to 1.36 GB. Without this budget, enough
//! producers uploading screenshots at the same moment could exhaust the
//! machine's memory. A body takes room as its bytes arrive, not as its
//! length is declared, so a client that announces 50 MB and sends nothing
//! holds nothing. Its first bytes wait up to `WAIT` for room; after that it
//! gets 503 if the room is not free at once, because waiting while holding
//! part of the budget could deadlock with others doing the same.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How long a body's first bytes wait for room before the request gets 503.
const WAIT: Duration = Duration::from_secs(10);

/// Shared by all requests; counts KiB, as a semaphore's batch is a `u32`.
#[derive(Clone)]
pub struct BodyBudget {
    kib: Arc<Semaphore>,
}

/// The room one request's body holds; it is given back when this is dropped.
pub struct BodyHold {
    /// `None`: a body too small to count.
    kib: Option<Arc<Semaphore>>,
    held: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        let kib = (bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            kib: Arc::new(Semaphore::new(kib)),
        }
    }

    /// A hold of nothing yet.
    pub fn hold(&self) -> BodyHold {
        BodyHold {
            kib: Some(self.kib.clone()),
            held: None,
        }
    }
}

impl BodyHold {
    /// For bodies bounded small (management requests): holds nothing.
    pub fn unbudgeted() -> BodyHold {
        BodyHold {
            kib: None,
            held: None,
        }
    }

    /// Holds room for at least `bytes`: waiting up to `WAIT` for it while
    /// nothing is held yet, otherwise only if it is free now.
    pub async fn grow_to(&mut self, bytes: usize) -> Result<(), ApiError> {
        let (Some(kib), Some(more)) = (&self.kib, self.missing(bytes)) else {
            return Ok(());
        };
        let permit = match &self.held {
            None => {
                let room = kib.clone().acquire_many_owned(more);
                tokio::time::timeout(WAIT, room)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Some(_) => kib.clone().try_acquire_many_owned(more).ok(),
        };
        self.add(permit.ok_or_else(busy)?);
        Ok(())
    }

    /// KiB to take beyond what is held to cover `bytes`, if any.
    fn missing(&self, bytes: usize) -> Option<u32> {
        let needed = bytes.div_ceil(1024);
        let held = self.held.as_ref().map_or(0, |p| p.num_permits());
        let more = u32::try_from(needed.saturating_sub(held)).unwrap_or(u32::MAX);
        (more > 0).then_some(more)
    }

    fn add(&mut self, permit: OwnedSemaphorePermit) {
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
    }
}

fn busy() -> ApiError {
    ApiError::unavailable(
        "server_busy",
        "the server is receiving too many large bodies at once; retry shortly",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn room_is_shared_and_given_back() {
        let budget = BodyBudget::new(100 * 1024);
        let mut first = budget.hold();
        first.grow_to(60 * 1024).await.unwrap();
        let mut second = budget.hold();
        second.grow_to(40 * 1024).await.unwrap();
        second.grow_to(30 * 1024).await.unwrap(); // already held
        let over = second.grow_to(41 * 1024).await;
        assert!(over.is_err(), "1 KiB over the budget, refused at once");
        drop(first);
        second.grow_to(100 * 1024).await.unwrap();
        assert_eq!(budget.kib.available_permits(), 0);
        drop(second);
        assert_eq!(budget.kib.available_permits(), 100);
    }

    #[actix_web::test]
    async fn a_waiting_body_gets_the_room_once_another_gives_it_back() {
        let budget = BodyBudget::new(100 * 1024);
        let mut first = budget.hold();
        first.grow_to(80 * 1024).await.unwrap();
        let mut second = budget.hold(); // holding nothing, so it may wait
        let waiting = second.grow_to(50 * 1024);
        let give_back = async { drop(first) };
        let (got, ()) = futures_util::join!(waiting, give_back);
        got.unwrap();
        assert_eq!(budget.kib.available_permits(), 50);
    }
}
