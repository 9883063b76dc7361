//! Event bodies a delivery actor keeps in memory for the deliveries it
//! holds, within a byte budget; a delivery whose body is not kept reads
//! it from sled when its turn comes.
//!
//! NB: a budget in bytes rather than a count of bodies: a backlog of
//! small events (the common case) stays in memory, and a stalled endpoint
//! still cannot pin more than the budget of large screenshots. A body is
//! shared (`Bytes`) by all the deliveries of its event, so the real cost
//! across actors is lower than the sum of their budgets.
//!
//! NB: ordered by delivery id, not hashed: ids are time-ordered and bodies
//! are mostly taken oldest first, so a take touches the hot left edge of
//! the tree, where a hash table's random probe into thousands of entries
//! per actor missed the cache (about 3 % of a delivery arbiter's time in
//! the fan-out benchmark).

use std::collections::BTreeMap;

use actix_web::web::Bytes;
use uuid::Uuid;

/// Bytes of bodies kept per actor.
const BUDGET: usize = 2 * 1024 * 1024;

#[derive(Default)]
pub struct BodyCache {
    /// Delivery id → its event's body.
    bodies: BTreeMap<Uuid, Bytes>,
    bytes: usize,
}

impl BodyCache {
    /// Keeps `body` for delivery `id` if it fits in what is left.
    pub fn keep(&mut self, id: Uuid, body: Bytes) {
        if self.bytes + body.len() <= BUDGET && !self.bodies.contains_key(&id) {
            self.bytes += body.len();
            self.bodies.insert(id, body);
        }
    }

    pub fn take(&mut self, id: Uuid) -> Option<Bytes> {
        let body = self.bodies.remove(&id)?;
        self.bytes -= body.len();
        Some(body)
    }

    pub fn clear(&mut self) {
        self.bodies.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bodies_until_the_budget_is_spent() {
        let mut cache = BodyCache::default();
        let half = Bytes::from(vec![b'x'; BUDGET / 2]);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        cache.keep(a, half.clone());
        cache.keep(b, half.clone());
        cache.keep(c, Bytes::from_static(b"{}"));
        assert!(cache.take(c).is_none(), "over budget: left to sled");
        assert_eq!(cache.take(a), Some(half.clone()));
        cache.keep(c, Bytes::from_static(b"{}"));
        assert_eq!(cache.take(c).as_deref(), Some(&b"{}"[..]), "room again");
        cache.keep(b, Bytes::new()); // a second keep changes nothing
        assert_eq!(cache.take(b), Some(half));
        assert_eq!(cache.bytes, 0);
    }
}
