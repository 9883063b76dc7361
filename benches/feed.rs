//! Live-feed benchmark (`cargo bench --bench feed`). In one run: ingest
//! throughput with no feed sessions (the baseline), event-to-every-session
//! latency with 1,000 WebSocket sessions connected, and ingest throughput
//! with those sessions connected, as a ratio to the baseline. The baseline
//! is the mean of one measure before the sessions connect and one after
//! they have all closed, so the store's growth during the run favours
//! neither side. Loopback only; every loop is bounded in count and time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use awc::ws::{Frame, Message};
use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;

#[path = "support/mod.rs"]
mod support;
use support::{start_hookrelay, Hookrelay, ADMIN};

const SESSIONS: usize = 1_000;
const CONCURRENCY: usize = 32;
/// Events per ingest-rate measurement.
const INGESTS: usize = 6_000;
/// Events per second in the latency measurement: 1,000 sessions make that
/// half of the feed's default frame budget (`feed.max_frames_per_s`), so
/// every event goes to every session.
const LATENCY_RATE: u64 = 5;
const LIMIT: Duration = Duration::from_secs(120);

/// Per event id: how many sessions got it, and when the last one did.
type Arrivals = Rc<RefCell<HashMap<String, (usize, Instant)>>>;

fn event(org: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"event": "desktop.activity_tracking.captured", "version": "v1", "agent": "desktop-agent",
        "timestamp": 1716000000000u64, "data": {"organisation": {"organisationId": org}, "team": {"teamId": "t"},
        "user": {"userId": "u"}, "activity": {"workMode": true}}}))
    .unwrap()
}

/// Ingests one event; returns its id.
async fn ingest(client: &awc::Client, s: &Hookrelay) -> String {
    let mut r = client
        .post(format!("{}/v1/events", s.base))
        .insert_header(("authorization", format!("Bearer {}", s.key)))
        .insert_header(("content-type", "application/json"))
        .send_body(event(&s.org))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Acknowledged ingests per second at `CONCURRENCY`.
async fn ingest_rate(s: &Hookrelay, total: usize) -> f64 {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    join_all((0..CONCURRENCY).map(|_| async {
        while next.fetch_add(1, Ordering::Relaxed) < total && start.elapsed() < LIMIT {
            ingest(&client, s).await;
        }
    }))
    .await;
    total as f64 / start.elapsed().as_secs_f64()
}

/// Opens one session and reads it, answering pings, until the server
/// closes it or `stop` changes (then it closes it).
async fn session(s: &Hookrelay, arrivals: Arrivals, mut stop: watch::Receiver<bool>) {
    let mut r = awc::Client::default()
        .post(format!("{}/v1/feed/tickets", s.base))
        .insert_header(("authorization", format!("Bearer {}", s.key)))
        .send()
        .await
        .unwrap();
    let ticket = r.json::<Value>().await.unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!(
        "{}/v1/feed?ticket={ticket}",
        s.base.replace("http://", "ws://")
    );
    let (_, mut framed) = awc::Client::default()
        .ws(url)
        .max_frame_size(1 << 20)
        .connect()
        .await
        .unwrap();
    actix_web::rt::spawn(async move {
        loop {
            let frame = tokio::select! {
                frame = framed.next() => frame,
                _ = stop.changed() => {
                    let _ = framed.send(Message::Close(None)).await;
                    break;
                }
            };
            let Some(Ok(frame)) = frame else { break };
            match frame {
                Frame::Text(text) => {
                    let now = Instant::now();
                    // Event frames begin {"type":"event","id":"<uuid>": read
                    // the id without parsing, so the 1,000 readers sharing
                    // these cores with the server stay cheap.
                    const HEAD: &[u8] = br#"{"type":"event","id":""#;
                    if text.starts_with(HEAD) && text.len() >= HEAD.len() + 36 {
                        let id = String::from_utf8_lossy(&text[HEAD.len()..HEAD.len() + 36])
                            .into_owned();
                        let mut a = arrivals.borrow_mut();
                        let entry = a.entry(id).or_insert((0, now));
                        entry.0 += 1;
                        entry.1 = entry.1.max(now);
                    }
                }
                Frame::Ping(p) => {
                    let _ = framed.send(Message::Pong(p)).await;
                }
                Frame::Close(_) => break,
                _ => {}
            }
        }
    });
}

/// Feed sessions the server counts, from its metrics.
async fn sessions_connected(s: &Hookrelay) -> Option<u64> {
    let mut r = awc::Client::default()
        .get(format!("{}/metrics", s.base))
        .insert_header(("authorization", format!("Bearer {ADMIN}")))
        .send()
        .await
        .ok()?;
    let text = String::from_utf8(r.body().await.ok()?.to_vec()).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("hookrelay_feed_sessions "))?
        .trim()
        .parse()
        .ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    actix_web::rt::System::new().block_on(async {
        let s = start_hookrelay().await;
        ingest_rate(&s, 500).await; // warm-up
        let before = ingest_rate(&s, INGESTS).await;

        let arrivals: Arrivals = Rc::default();
        let (stop, stopped) = watch::channel(false);
        for _ in 0..SESSIONS / 50 {
            join_all((0..50).map(|_| session(&s, arrivals.clone(), stopped.clone()))).await;
        }

        // Latency: 100 events at LATENCY_RATE, each timed to its last session.
        let client = awc::Client::default();
        let mut sent = Vec::new();
        for _ in 0..100 {
            let at = Instant::now();
            sent.push((ingest(&client, &s).await, at));
            actix_web::rt::time::sleep(Duration::from_millis(1000 / LATENCY_RATE)).await;
        }
        // Shed events never reach everyone: stop 5 s after the last ingest.
        let start = Instant::now();
        while sent.iter().any(|(id, _)| arrivals.borrow().get(id).is_none_or(|a| a.0 < SESSIONS)) && start.elapsed() < Duration::from_secs(5) {
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        let mut to_all: Vec<f64> = sent
            .iter()
            .filter_map(|(id, at)| arrivals.borrow().get(id).map(|(n, last)| (*n, last.duration_since(*at))))
            .filter(|(n, _)| *n == SESSIONS)
            .map(|(_, d)| d.as_secs_f64() * 1000.0)
            .collect();
        to_all.sort_by(|a, b| a.total_cmp(b));
        let complete = to_all.len();

        let with = ingest_rate(&s, INGESTS).await;

        stop.send(true).unwrap();
        let start = Instant::now();
        while sessions_connected(&s).await != Some(0) && start.elapsed() < LIMIT {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        let after = ingest_rate(&s, INGESTS).await;
        let without = (before + after) / 2.0;

        println!("| measure | result | target |");
        println!("|---|---|---|");
        println!("| ingest, no feed sessions | {without:.0} events/s (before {before:.0}, after {after:.0}) | baseline |");
        println!(
            "| event → all {SESSIONS} sessions at {LATENCY_RATE} events/s ({complete}/100 reached all) | p50 {:.1} ms, p99 {:.1} ms | p99 ≤ 50 ms |",
            percentile(&to_all, 0.5),
            percentile(&to_all, 0.99)
        );
        println!("| ingest with {SESSIONS} sessions connected | {with:.0} events/s = {:.0} % of baseline | ≥ 80 % |", with / without * 100.0);
    });
}
