//! The live feed's send budget: a token bucket of WebSocket frames per
//! second, shared by all sessions. Fanning an event out costs one token per
//! session that may see it; an event that does not fit is not sent live
//! (the sessions are told `lagged` with the next one that is). This bounds
//! the CPU the feed can take from ingest and delivery however many
//! dashboards are open, while a handful of sessions still get every event.

use std::time::Instant;

pub struct FrameBudget {
    /// Frames per second; 0 means unlimited.
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl FrameBudget {
    /// Starts full: one second's worth of frames.
    pub fn new(frames_per_s: u64, now: Instant) -> Self {
        FrameBudget {
            rate: frames_per_s as f64,
            tokens: frames_per_s as f64,
            at: now,
        }
    }

    /// Takes `frames` tokens if they are there.
    pub fn try_take(&mut self, frames: usize, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        // An event seen by more sessions than a full second's budget would
        // never fit; let it through once the bucket is full.
        let cost = (frames as f64).min(self.rate);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spends_a_second_of_frames_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(1000, t0);
        assert!((0..10).all(|_| b.try_take(100, t0)));
        assert!(!b.try_take(100, t0), "the first second's frames are spent");
        assert!(!b.try_take(100, t0 + Duration::from_millis(50)));
        assert!(b.try_take(100, t0 + Duration::from_millis(101))); // 101 tokens; 1 left
        assert!(!b.try_take(2, t0 + Duration::from_millis(101)));
    }

    #[test]
    fn never_holds_more_than_a_second_of_frames() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(1000, t0);
        let later = t0 + Duration::from_secs(60);
        assert!(b.try_take(1000, later));
        assert!(!b.try_take(1, later));
    }

    #[test]
    fn an_event_larger_than_the_bucket_goes_when_it_is_full() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(100, t0);
        assert!(b.try_take(5000, t0));
        assert!(!b.try_take(5000, t0 + Duration::from_millis(500)));
        assert!(b.try_take(5000, t0 + Duration::from_millis(1500)));
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(0, t0);
        assert!((0..1000).all(|_| b.try_take(1_000_000, t0)));
    }
}
