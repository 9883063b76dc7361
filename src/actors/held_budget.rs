//! The budget of deliveries held in memory over all delivery actors
//! (`delivery.max_held_deliveries`), and each actor's part of it.
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

/// At most this many deliveries are held in memory by one actor; more are
/// read from sled once fewer than half are left. Enough that a burst
/// fanned out to every webhook stays in memory.
pub const WINDOW: usize = 4096;

/// However full the budget, each actor may hold this many: enough to keep
/// `max_in_flight` attempts going while more are read.
pub const MIN_WINDOW: usize = 64;

pub struct HeldBudget {
    budget: usize,
    /// What the actors last said they hold, all together.
    held: AtomicUsize,
}

impl HeldBudget {
    pub fn new(budget: usize) -> Arc<Self> {
        Arc::new(HeldBudget {
            budget,
            held: AtomicUsize::new(0),
        })
    }

    /// Deliveries held over all actors, as last told.
    pub fn held(&self) -> usize {
        self.held.load(Relaxed)
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
}
