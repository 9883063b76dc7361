//! The budget of deliveries in memory over all delivery actors
//! (`delivery.max_held_deliveries`): those each actor holds, and those
//! handed to the actors' mailboxes and not yet taken.
//!
//! A fixed window per actor bounded nothing over many webhooks: 1,000
//! webhooks behind an endpoint that accepts and never answers held 4,096
//! each, and the process 1.5 GB (about 400 bytes a held delivery, with
//! its indexes).
//! Dividing the budget by the actors running would bound it, but would
//! leave a busy webhook 64 among 10,000 quiet ones. So an actor may hold
//! what the others leave of the budget, between `MIN_WINDOW` and
//! `WINDOW`: first come, first held, and each always some.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many deliveries are held in memory by one actor; more are
/// read from sled once fewer than half are left. Enough that a burst
/// fanned out to every webhook stays in memory.
pub const WINDOW: usize = 4096;

/// However full the budget, each actor may hold this many: enough to keep
/// `max_in_flight` attempts going while more are read.
pub const MIN_WINDOW: usize = 64;

/// How long an ingest waits for the actors to take what was handed to
/// them, before it is refused.
const HANDOFF_WAIT: Duration = Duration::from_secs(10);

/// How often a waiting ingest looks again: waiting is for overload only.
const HANDOFF_POLL: Duration = Duration::from_millis(5);

pub struct HeldBudget {
    budget: usize,
    /// What the actors last said they hold, all together.
    held: AtomicUsize,
    /// Deliveries in the actors' mailboxes (see `Handed`).
    handed: AtomicUsize,
}

impl HeldBudget {
    pub fn new(budget: usize) -> Arc<Self> {
        Arc::new(HeldBudget {
            budget,
            held: AtomicUsize::new(0),
            handed: AtomicUsize::new(0),
        })
    }

    /// Deliveries held over all actors, as last told.
    pub fn held(&self) -> usize {
        self.held.load(Relaxed)
    }

    /// Deliveries handed to the actors and not yet taken.
    pub fn handed(&self) -> usize {
        self.handed.load(Relaxed)
    }

    /// Counts one delivery handed to an actor until the token is dropped.
    pub fn hand(self: &Arc<Self>) -> Handed {
        self.handed.fetch_add(1, Relaxed);
        Handed(self.clone())
    }

    /// Waits until the deliveries handed and not yet taken are within the
    /// budget; false if they are not within `HANDOFF_WAIT`.
    ///
    /// NB: a mailbox takes whatever it is sent. When ingest outruns the
    /// actors (an event fanned out to 1,000 webhooks is 1,000 messages),
    /// they piled up: 3,000 such events took the process to 912 MB
    /// before the actors caught up, and a steady overload would have
    /// grown without bound. Ingest waits here instead, before it stores.
    pub async fn room_to_hand(&self) -> bool {
        let start = Instant::now();
        while self.handed() > self.budget {
            if start.elapsed() >= HANDOFF_WAIT {
                return false;
            }
            tokio::time::sleep(HANDOFF_POLL).await;
        }
        true
    }
}

/// A delivery in an actor's mailbox, counted until the actor has taken
/// it, or the mailbox is dropped.
pub struct Handed(Arc<HeldBudget>);

impl Drop for Handed {
    fn drop(&mut self) {
        self.0.handed.fetch_sub(1, Relaxed);
    }
}

/// One actor's part: what it holds, told as that changes (so the others
/// see it before their next check, not a chunk later). Given back when
/// dropped, so an actor that stops leaves no count behind.
pub struct HeldPart {
    budget: Arc<HeldBudget>,
    told: Cell<usize>,
}

impl HeldPart {
    pub fn new(budget: Arc<HeldBudget>) -> Self {
        HeldPart {
            budget,
            told: Cell::new(0),
        }
    }

    /// Tells that the actor now holds `held`.
    pub fn tell(&self, held: usize) {
        let told = self.told.replace(held);
        if held > told {
            self.budget.held.fetch_add(held - told, Relaxed);
        } else {
            self.budget.held.fetch_sub(told - held, Relaxed);
        }
    }

    /// How many the actor may hold now: what the others leave.
    pub fn window(&self) -> usize {
        let others = self.budget.held().saturating_sub(self.told.get());
        (self.budget.budget.saturating_sub(others)).clamp(MIN_WINDOW, WINDOW)
    }
}

impl Drop for HeldPart {
    fn drop(&mut self) {
        self.tell(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_actor_may_hold_what_the_others_leave_and_always_some() {
        let budget = HeldBudget::new(10_000);
        let (a, b) = (HeldPart::new(budget.clone()), HeldPart::new(budget.clone()));
        assert_eq!(a.window(), WINDOW, "alone, the most one may");
        a.tell(4_000);
        b.tell(4_000);
        assert_eq!(a.window(), 6_000.min(WINDOW));
        let c = HeldPart::new(budget.clone());
        c.tell(1_990);
        assert_eq!(b.window(), 4_010, "its own count aside");
        c.tell(2_000);
        assert_eq!(HeldPart::new(budget.clone()).window(), MIN_WINDOW, "full");
        a.tell(100);
        assert_eq!(budget.held(), 6_100, "a change is told as it is");
        drop((a, c));
        assert_eq!(budget.held(), 4_000, "a part dropped gives its count back");
    }

    #[actix_web::test]
    async fn a_handoff_waits_while_the_mailboxes_hold_more_than_the_budget() {
        let budget = HeldBudget::new(2);
        let mut handed: Vec<Handed> = (0..3).map(|_| budget.hand()).collect();
        assert_eq!(budget.handed(), 3);
        let taken = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            handed.pop(); // an actor took one
        };
        let (room, ()) = futures_util::join!(budget.room_to_hand(), taken);
        assert!(room);
        assert_eq!(budget.handed(), 2);
        drop(handed);
        assert_eq!(budget.handed(), 0, "tokens dropped give their count back");
    }
}
