//! Operational metrics in Prometheus text format (`GET /metrics`). Label
//! sets are bounded: event types come from the catalog, status classes
//! are five, and per-webhook queue depth is reported for the deepest
//! `TOP_QUEUES` webhooks only, beside the total.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use uuid::Uuid;

use crate::domain::delivery::Outcome;

const TOP_QUEUES: usize = 10;

/// The label values of `delivery_attempts_total`, indexed by `outcome_row`
/// and `status_column`.
const OUTCOMES: [&str; 3] = ["delivered", "pending", "failed"];
const STATUS_CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "none"];

fn outcome_row(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Delivered => 0,
        Outcome::Pending => 1,
        Outcome::Failed => 2,
    }
}

/// `2xx` … `5xx`, or `none` when no answer came.
fn status_column(status: Option<u16>) -> usize {
    match status {
        Some(200..=299) => 0,
        Some(300..=399) => 1,
        Some(400..=499) => 2,
        Some(500..=599) => 3,
        _ => 4,
    }
}

/// One webhook actor's queue depth (queued + in flight), which the actor
/// stores as it changes and a scrape reads.
pub type DepthSlot = Arc<AtomicUsize>;

pub struct Metrics {
    registry: Registry,
    pub events_ingested: IntCounterVec,
    /// `delivery_attempts_total` by outcome and status class, resolved
    /// once: a label lookup per attempt hashed both labels every time.
    attempts: Vec<[IntCounter; 5]>,
    pub attempt_latency: Histogram,
    pub retries_scheduled: IntCounter,
    pub webhooks_disabled: IntCounter,
    /// Deliveries given up unsent: their event could not be read.
    pub deliveries_dropped: IntCounter,
    pub feed_sessions: IntGauge,
    /// Set at scrape time from the connection budget.
    pub connections_in_use: IntGauge,
    pub connection_slots: IntGauge,
    /// Set at scrape time from the held budget.
    pub deliveries_held: IntGauge,
    pub deliveries_handed: IntGauge,
    pub feed_dropped: IntCounter,
    pub flush_latency: Histogram,
    queue_depth: IntGaugeVec,
    queue_depth_total: IntGauge,
    storage_bytes: IntGauge,
    /// Each webhook actor's queue depth. NB: an actor writes its slot with
    /// one atomic store, where a map behind one lock was taken twice per
    /// delivery from every arbiter; a slot whose actor is gone is dropped
    /// at the next scrape.
    depths: Mutex<HashMap<Uuid, DepthSlot>>,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new_custom(Some("hookrelay".into()), None).expect("valid prefix");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            register(
                &r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("valid metric"),
            )
        };
        let secs = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
        ];
        Metrics {
            events_ingested: counter_vec(
                "events_ingested_total",
                "Events accepted, by event type",
                &["event"],
            ),
            attempts: attempt_counters(&counter_vec(
                "delivery_attempts_total",
                "Delivery attempts, by outcome and response status class",
                &["outcome", "status_class"],
            )),
            attempt_latency: histogram(
                "attempt_duration_seconds",
                "Time from sending an attempt to its answer",
                secs.clone(),
            ),
            retries_scheduled: register(
                &r,
                IntCounter::new("retries_scheduled_total", "Retries scheduled").expect("valid"),
            ),
            webhooks_disabled: register(
                &r,
                IntCounter::new(
                    "webhooks_disabled_total",
                    "Webhooks disabled after sustained failure",
                )
                .expect("valid"),
            ),
            deliveries_dropped: register(
                &r,
                IntCounter::new(
                    "deliveries_dropped_total",
                    "Deliveries given up unsent because their event could not be read",
                )
                .expect("valid"),
            ),
            feed_sessions: register(
                &r,
                IntGauge::new("feed_sessions", "Live feed sessions connected").expect("valid"),
            ),
            connections_in_use: register(
                &r,
                IntGauge::new(
                    "delivery_connections_in_use",
                    "Connection slots held by delivery attempts (attempts beyond the slots wait)",
                )
                .expect("valid"),
            ),
            connection_slots: register(
                &r,
                IntGauge::new(
                    "delivery_connection_slots",
                    "Delivery attempts that may be out at once (half the open-file limit)",
                )
                .expect("valid"),
            ),
            deliveries_held: register(
                &r,
                IntGauge::new(
                    "deliveries_held",
                    "Deliveries the delivery actors hold in memory (delivery.max_held_deliveries bounds them)",
                )
                .expect("valid"),
            ),
            deliveries_handed: register(
                &r,
                IntGauge::new(
                    "deliveries_handed",
                    "Deliveries handed to the delivery actors and not yet taken; past delivery.max_held_deliveries, ingest waits",
                )
                .expect("valid"),
            ),
            feed_dropped: register(
                &r,
                IntCounter::new(
                    "feed_events_dropped_total",
                    "Feed events not sent to a session (its buffer was full, or over the frame budget)",
                )
                .expect("valid"),
            ),
            flush_latency: histogram(
                "storage_flush_duration_seconds",
                "Durable flush (group commit) latency",
                secs,
            ),
            queue_depth: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "queue_depth",
                        "Outstanding deliveries of the deepest webhook queues",
                    ),
                    &["webhook"],
                )
                .expect("valid"),
            ),
            queue_depth_total: register(
                &r,
                IntGauge::new("queue_depth_total", "Outstanding deliveries in all").expect("valid"),
            ),
            storage_bytes: register(
                &r,
                IntGauge::new("storage_bytes", "Size of the sled store on disk").expect("valid"),
            ),
            depths: Mutex::new(HashMap::new()),
            registry: r,
        }
    }

    /// The slot a webhook's actor reports its queue depth in.
    pub fn queue_depth_slot(&self, webhook: Uuid) -> DepthSlot {
        let mut depths = self.depths.lock().unwrap_or_else(|e| e.into_inner());
        depths.entry(webhook).or_default().clone()
    }

    pub fn count_attempt(&self, outcome: Outcome, status: Option<u16>) {
        self.attempts[outcome_row(outcome)][status_column(status)].inc();
    }

    /// The text exposition, with the scrape-time gauges refreshed.
    pub fn render(&self, storage_bytes: u64) -> String {
        self.storage_bytes.set(storage_bytes as i64);
        {
            let mut depths = self.depths.lock().unwrap_or_else(|e| e.into_inner());
            depths.retain(|_, slot| Arc::strong_count(slot) > 1);
            let mut top: Vec<(&Uuid, usize)> = depths
                .iter()
                .map(|(id, slot)| (id, slot.load(Ordering::Relaxed)))
                .filter(|&(_, depth)| depth > 0)
                .collect();
            self.queue_depth_total
                .set(top.iter().map(|&(_, depth)| depth).sum::<usize>() as i64);
            top.sort_by_key(|&(_, depth)| std::cmp::Reverse(depth));
            self.queue_depth.reset();
            for (id, depth) in top.into_iter().take(TOP_QUEUES) {
                self.queue_depth
                    .with_label_values(&[&id.to_string()])
                    .set(depth as i64);
            }
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Every (outcome, status class) series of `vec`, in `OUTCOMES` ×
/// `STATUS_CLASSES` order.
fn attempt_counters(vec: &IntCounterVec) -> Vec<[IntCounter; 5]> {
    OUTCOMES
        .iter()
        .map(|outcome| STATUS_CLASSES.map(|class| vec.with_label_values(&[outcome, class])))
        .collect()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn queue_depths_are_summed_and_a_gone_actor_is_dropped() {
        let m = Metrics::new();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let slot_a = m.queue_depth_slot(a);
        let slot_b = m.queue_depth_slot(b);
        slot_a.store(3, Ordering::Relaxed);
        slot_b.store(4, Ordering::Relaxed);
        let text = m.render(0);
        assert_eq!(
            line(&text, "hookrelay_queue_depth_total"),
            Some("hookrelay_queue_depth_total 7")
        );
        let a_line = format!("hookrelay_queue_depth{{webhook=\"{a}\"}} 3");
        assert!(text.lines().any(|l| l == a_line), "{text}");

        drop(slot_a); // its actor is gone
        slot_b.store(0, Ordering::Relaxed); // idle
        let text = m.render(0);
        assert_eq!(
            line(&text, "hookrelay_queue_depth_total"),
            Some("hookrelay_queue_depth_total 0")
        );
        assert!(line(&text, "hookrelay_queue_depth{").is_none(), "{text}");
        assert_eq!(
            m.depths.lock().unwrap().len(),
            1,
            "only the live actor's slot stays"
        );
    }

    #[test]
    fn attempts_are_counted_by_outcome_and_status_class() {
        let m = Metrics::new();
        m.count_attempt(Outcome::Delivered, Some(204));
        m.count_attempt(Outcome::Pending, None);
        m.count_attempt(Outcome::Pending, None);
        let text = m.render(0);
        for expected in [
            "hookrelay_delivery_attempts_total{outcome=\"delivered\",status_class=\"2xx\"} 1",
            "hookrelay_delivery_attempts_total{outcome=\"pending\",status_class=\"none\"} 2",
            "hookrelay_delivery_attempts_total{outcome=\"failed\",status_class=\"5xx\"} 0",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} in {text}");
        }
    }
}
