//! Operational metrics in Prometheus text format (`GET /metrics`). Label
//! sets are bounded: event types come from the catalog, status classes
//! are five, and per-webhook queue depth is reported for the deepest
//! `TOP_QUEUES` webhooks only, beside the total.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use uuid::Uuid;

const TOP_QUEUES: usize = 10;

pub struct Metrics {
    registry: Registry,
    pub events_ingested: IntCounterVec,
    pub deliveries: IntCounterVec,
    pub attempt_latency: Histogram,
    pub retries_scheduled: IntCounter,
    pub webhooks_disabled: IntCounter,
    pub feed_sessions: IntGauge,
    pub feed_dropped: IntCounter,
    pub flush_latency: Histogram,
    queue_depth: IntGaugeVec,
    queue_depth_total: IntGauge,
    storage_bytes: IntGauge,
    /// Each webhook actor's latest queue depth, reported as it changes.
    depths: Mutex<HashMap<Uuid, usize>>,
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
            deliveries: counter_vec(
                "delivery_attempts_total",
                "Delivery attempts, by outcome and response status class",
                &["outcome", "status_class"],
            ),
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
            feed_sessions: register(
                &r,
                IntGauge::new("feed_sessions", "Live feed sessions connected").expect("valid"),
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

    /// A webhook actor's queue depth (queued + in flight) changed.
    pub fn set_queue_depth(&self, webhook: Uuid, depth: usize) {
        let mut d = self.depths.lock().unwrap_or_else(|e| e.into_inner());
        if depth == 0 {
            d.remove(&webhook);
        } else {
            d.insert(webhook, depth);
        }
    }

    /// `2xx` … `5xx`, or `none` when no answer came.
    pub fn status_class(status: Option<u16>) -> &'static str {
        match status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            _ => "none",
        }
    }

    /// The text exposition, with the scrape-time gauges refreshed.
    pub fn render(&self, storage_bytes: u64) -> String {
        self.storage_bytes.set(storage_bytes as i64);
        {
            let depths = self.depths.lock().unwrap_or_else(|e| e.into_inner());
            self.queue_depth_total
                .set(depths.values().sum::<usize>() as i64);
            let mut top: Vec<(&Uuid, &usize)> = depths.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1));
            self.queue_depth.reset();
            for (id, depth) in top.into_iter().take(TOP_QUEUES) {
                self.queue_depth
                    .with_label_values(&[&id.to_string()])
                    .set(*depth as i64);
            }
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
