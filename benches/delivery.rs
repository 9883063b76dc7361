//! End-to-end delivery benchmark (`cargo bench --bench delivery`). In one
//! run it measures, against one fast loopback receiver:
//! (a) the raw ceiling: the receiver hit directly with the same body and
//!     concurrency; (b) hookrelay deliveries/s with one webhook; (c) with
//!     each event fanned out to 100 webhooks; (d) ingest-to-receipt latency
//!     at half the sustained rate of (b); (e) peak RSS and start-up time of
//!     the release binary with 10,000 registered webhooks.
//! (b) and (c) are reported as ratios to (a), and (a), (b) and (c) also as
//! the process's CPU time per request or delivery, with the receiver's
//! part of it (it grows with each request's headers and with the number of
//! threads and connections sharing the cores). For context it measures
//! (f) the storage alone: hookrelay's own store doing (b)'s and (c)'s
//! writes and flushes at the same concurrency on every core, with no HTTP
//! at all: an upper bound on (b) and (c) while every event and attempt
//! goes to sled; and (g) a bare relay: the same HTTP stack answering 202
//! and forwarding each request with awc, storing nothing: an upper bound on
//! (b) from HTTP alone; and (h) the memory of a backlog: the release
//! binary's RSS with 100,000 events waiting behind an ordered webhook's
//! dead endpoint, against the same events delivered.
//! Loopback only; every loop is bounded in count and time.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::future::join_all;
use serde_json::{json, Value};

#[path = "support/mod.rs"]
mod support;
use support::{organisation, start_hookrelay, Hookrelay, ADMIN};

const CONCURRENCY: usize = 32;
const LIMIT: Duration = Duration::from_secs(120);

/// Counts deliveries and, for latency runs, when each `seq` (> 0) arrived.
#[derive(Default)]
struct Seen {
    count: AtomicUsize,
    arrivals: Mutex<Vec<(u64, Instant)>>,
}

async fn receiver() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let server = HttpServer::new(move || {
        let s = s.clone();
        App::new()
            .app_data(web::PayloadConfig::new(8 * 1024 * 1024))
            .default_service(web::to(move |body: web::Bytes| {
                let s = s.clone();
                async move {
                    s.count.fetch_add(1, Ordering::Relaxed);
                    RECEIVER_THREAD.store(TID.with(|t| *t), Ordering::Relaxed);
                    if let Some(seq) = seq_of(&body).filter(|&q| q > 0) {
                        s.arrivals.lock().unwrap().push((seq, Instant::now()));
                    }
                    HttpResponse::Ok().finish()
                }
            }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://127.0.0.1:{}/hook", server.addrs()[0].port());
    actix_web::rt::spawn(server.run());
    (url, seen)
}

fn seq_of(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = text.split("\"seq\":").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn event(org: &str, seq: u64) -> Value {
    json!({"event": "desktop.app_tracking.captured", "version": "v1", "agent": "desktop-agent",
        "timestamp": 1716000000000u64, "seq": seq,
        "data": [{"organisation": {"organisationId": org}, "team": {"teamId": "t"}, "user": {"userId": "u"},
            "tracking": {"trackingId": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
                "app": {"name": "Google Chrome", "type": "website", "category": "Unknown Category",
                    "iconUrl": "https://www.google.com/favicon.ico", "domain": "google.com",
                    "fullUrl": "https://www.google.com", "productivityStatus": "neutral"},
                "time": {"startDate": "2024-01-15T09:00:00.000Z", "endDate": "2024-01-15T09:00:20.000Z",
                    "durationInSeconds": 20}, "trackingMode": "online", "operatingSystem": "macos"}}]})
}

async fn post(client: &awc::Client, url: &str, key: Option<&str>, body: Vec<u8>) -> u16 {
    let mut req = client
        .post(url)
        .insert_header(("content-type", "application/json"));
    if let Some(k) = key {
        req = req.insert_header(("authorization", format!("Bearer {k}")));
    }
    match req.send_body(body).await {
        Ok(mut r) => {
            let _ = r.body().await;
            r.status().as_u16()
        }
        Err(_) => 0,
    }
}

/// (a) The receiver hit directly: (requests/s, CPU per request).
async fn raw_ceiling(url: &str, body: &[u8], total: usize) -> (f64, CpuPer) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let (next, ok) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (start, cpu) = (Instant::now(), Cpu::now());
    join_all((0..CONCURRENCY).map(|_| async {
        while next.fetch_add(1, Ordering::Relaxed) < total && start.elapsed() < LIMIT {
            if post(&client, url, None, body.to_vec()).await == 200 {
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }
    }))
    .await;
    let ok = ok.into_inner();
    assert!(
        ok * 100 >= total * 99,
        "only {ok} of {total} direct requests succeeded"
    );
    let cpu = cpu.per(ok as f64);
    (ok as f64 / start.elapsed().as_secs_f64(), cpu)
}

async fn add_webhooks(h: &Hookrelay, url: &str, n: usize) {
    let client = awc::Client::default();
    for _ in 0..n {
        let mut r = client
            .post(format!("{}/v1/webhooks", h.base))
            .insert_header(("authorization", format!("Bearer {}", h.key)))
            .send_json(&json!({"name": "bench", "url": url, "events": ["*"]}))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{:?}", r.body().await);
    }
}

/// The receiver's one worker thread, as its latest request found it.
static RECEIVER_THREAD: AtomicI32 = AtomicI32::new(0);

thread_local! {
    /// This thread's id, asked once: a system call per request would be
    /// the receiver's own cost in every measure.
    // SAFETY: gettid has no preconditions.
    static TID: i32 = unsafe { libc::gettid() };
}

/// CPU time used so far, in seconds: by the whole process (the load
/// generator, the receiver and hookrelay alike) and by the receiver.
#[derive(Clone, Copy)]
struct Cpu {
    process: f64,
    receiver: Option<f64>,
    machine: Option<MachineTicks>,
}

/// µs of CPU per request or delivery, in all and the receiver's share
/// (the rest is hookrelay's and the load generator's).
#[derive(Clone, Copy)]
struct CpuPer {
    all: f64,
    receiver: Option<f64>,
    /// % of the machine's time the hypervisor gave to other guests.
    steal: Option<f64>,
}

impl Cpu {
    fn now() -> Cpu {
        Cpu {
            process: cpu_seconds(),
            receiver: thread_cpu_seconds(RECEIVER_THREAD.load(Ordering::Relaxed)),
            machine: MachineTicks::now(),
        }
    }

    /// What was used since `self`, per one of `n`.
    fn per(self, n: f64) -> CpuPer {
        let now = Cpu::now();
        let us = |s: f64| s * 1e6 / n.max(1.0);
        CpuPer {
            all: us(now.process - self.process),
            receiver: self.receiver.zip(now.receiver).map(|(a, b)| us(b - a)),
            steal: self
                .machine
                .zip(now.machine)
                .and_then(|(a, b)| a.steal_until(b)),
        }
    }
}

/// The machine's CPU time so far, from `/proc/stat`: all of it and the
/// part stolen by the hypervisor. A shared VM's neighbours move every
/// rate here, so each row says how much they took while it ran.
#[derive(Clone, Copy)]
struct MachineTicks {
    total: u64,
    steal: u64,
}

impl MachineTicks {
    fn now() -> Option<MachineTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1) // "cpu"
            .take(8) // user nice system idle iowait irq softirq steal
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        Some(MachineTicks {
            total: fields.iter().sum(),
            steal: *fields.get(7)?,
        })
    }

    /// % of the time from `self` to `later` that was stolen.
    fn steal_until(self, later: MachineTicks) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|&t| t > 0)?;
        let steal = later.steal.checked_sub(self.steal)?;
        Some(steal as f64 * 100.0 / total as f64)
    }
}

impl CpuPer {
    /// "N µs of CPU per `unit`, M of them the receiver's".
    fn per_unit(&self, unit: &str) -> String {
        let all = format!("{:.0} µs of CPU per {unit}", self.all);
        let all = match self.receiver {
            Some(r) => format!("{all}, {r:.0} of them the receiver's"),
            None => all,
        };
        match self.steal {
            Some(steal) => format!("{all}; {steal:.0} % stolen"),
            None => all,
        }
    }
}

/// On-CPU time of thread `tid` of this process (Linux's schedstat, in ns),
/// if it can be read.
fn thread_cpu_seconds(tid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// CPU time (user and system) used so far by this whole process.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// What one end-to-end run measured.
struct Run {
    deliveries_per_s: f64,
    ingests_per_s: f64,
    /// The process's CPU time per delivery: against (a)'s per request,
    /// how much more work a delivery is than one bare exchange. With both
    /// cores busy it is about 2 cores / throughput, so it moves with
    /// throughput between runs and is no steadier a measure.
    cpu: CpuPer,
}

/// Ingests `events` and waits for `events * fanout` receipts.
async fn end_to_end(h: &Hookrelay, seen: &Seen, events: usize, fanout: usize) -> Run {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let before = seen.count.load(Ordering::SeqCst);
    let expected = before + events * fanout;
    let next = AtomicUsize::new(0);
    let url = format!("{}/v1/events", h.base);
    // Built once, as (a)'s: the load generator shares the cores measured.
    let body = serde_json::to_vec(&event(&h.org, 0)).unwrap();
    let (start, cpu) = (Instant::now(), Cpu::now());
    join_all((0..CONCURRENCY).map(|_| async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= events || start.elapsed() > LIMIT {
                break;
            }
            assert_eq!(post(&client, &url, Some(&h.key), body.to_vec()).await, 202);
        }
    }))
    .await;
    let ingest = events as f64 / start.elapsed().as_secs_f64();
    while seen.count.load(Ordering::SeqCst) < expected && start.elapsed() < LIMIT {
        actix_web::rt::time::sleep(Duration::from_millis(2)).await;
    }
    let delivered = (seen.count.load(Ordering::SeqCst) - before) as f64;
    Run {
        deliveries_per_s: delivered / start.elapsed().as_secs_f64(),
        ingests_per_s: ingest,
        cpu: cpu.per(delivered),
    }
}

/// (d)'s result, in ms: over the whole run, and the lowest and highest
/// p99 of its consecutive windows of `LATENCY_WINDOW`.
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    window_p99: (f64, f64),
}

/// (d) runs this long because a single stall of about 100 ms is over 1 %
/// of a 6 s run, so it alone could decide the p99. The per-window p99s
/// show whether slow receipts come in clusters or are spread out.
const LATENCY_RUN: Duration = Duration::from_secs(30);
const LATENCY_WINDOW: Duration = Duration::from_secs(5);

/// Ingests at `rate` events/s for `LATENCY_RUN`; ingest-to-receipt latency.
async fn latency(h: &Hookrelay, seen: &Seen, rate: f64) -> Latency {
    let events = (rate * LATENCY_RUN.as_secs_f64()) as usize;
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    seen.arrivals.lock().unwrap().clear();
    let url = format!("{}/v1/events", h.base);
    let sent = Rc::new(RefCell::new(Vec::with_capacity(events)));
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    // Each request is started when it is due, not all created up front:
    // first-polling tens of thousands of futures at once stalls this
    // thread and sends the first events in one artificial burst.
    let mut requests = Vec::with_capacity(events);
    for seq in 1..=events as u64 {
        if start.elapsed() > LIMIT {
            break;
        }
        actix_web::rt::time::sleep_until((start + interval * (seq - 1) as u32).into()).await;
        let (client, url, key, sent) = (client.clone(), url.clone(), h.key.clone(), sent.clone());
        let body = serde_json::to_vec(&event(&h.org, seq)).unwrap();
        requests.push(actix_web::rt::spawn(async move {
            sent.borrow_mut().push((seq, Instant::now()));
            post(&client, &url, Some(&key), body).await;
        }));
    }
    join_all(requests).await;
    while seen.arrivals.lock().unwrap().len() < events && start.elapsed() < LIMIT {
        actix_web::rt::time::sleep(Duration::from_millis(2)).await;
    }
    let sent: std::collections::HashMap<u64, Instant> = sent.take().into_iter().collect();
    // (window, ms) of every receipt, the window by when its event was sent.
    let mut receipts: Vec<(u64, f64)> = seen
        .arrivals
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(seq, at)| {
            sent.get(seq).map(|s| {
                let window = s.duration_since(start).as_secs() / LATENCY_WINDOW.as_secs();
                (window, at.duration_since(*s).as_secs_f64() * 1000.0)
            })
        })
        .collect();
    let mut all: Vec<f64> = receipts.iter().map(|(_, ms)| *ms).collect();
    all.sort_by(|a, b| a.total_cmp(b));
    receipts.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let window_p99s: Vec<f64> = receipts
        .chunk_by(|a, b| a.0 == b.0)
        .map(|w| percentile(&w.iter().map(|(_, ms)| *ms).collect::<Vec<_>>(), 0.99))
        .collect();
    Latency {
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        max: *all.last().unwrap(),
        window_p99: (
            window_p99s.iter().copied().fold(f64::INFINITY, f64::min),
            window_p99s.iter().copied().fold(0.0, f64::max),
        ),
    }
}

/// The `p` quantile of `sorted` (ascending, not empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// The release binary, started as a child on a free loopback port with
/// `env`, storing in `dir`: (child, base URL), or `None` if not built.
fn spawn_release(
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Option<(std::process::Child, String)> {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/hookrelay");
    if !bin.exists() {
        eprintln!("(e), (h) skipped: build target/release/hookrelay first (cargo build --release)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(&bin)
        .current_dir(dir)
        .env("HOOKRELAY_SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("HOOKRELAY_STORAGE__PATH", dir.join("data"))
        .env("HOOKRELAY_AUTH__ADMIN_KEY", ADMIN)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    Some((child, format!("http://127.0.0.1:{port}")))
}

/// Ready means serving HTTP with `actors` webhook actors started; how
/// long that took (s).
async fn wait_ready(base: &str, actors: u64) -> f64 {
    let client = awc::Client::default();
    let start = Instant::now();
    while start.elapsed() < LIMIT {
        if let Ok(mut r) = client.get(format!("{base}/healthz")).send().await {
            let health: Value = r.json().await.unwrap_or_default();
            if health["webhook_actors"].as_u64() == Some(actors) {
                return start.elapsed().as_secs_f64();
            }
        }
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    f64::NAN
}

/// A child's resident memory (MB): `field` is `VmRSS` (now) or `VmHWM`
/// (peak).
fn memory_mb(child: &std::process::Child, field: &str) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_default();
    let kb = line
        .split_whitespace()
        .nth(1)
        .and_then(|kb| kb.parse::<f64>().ok());
    kb.map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `n` POSTs of `body` to `url`, 16 at a time, each answered `status`.
async fn post_many(url: &str, key: &str, body: &[u8], n: usize, status: u16) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let (next, start) = (AtomicUsize::new(0), Instant::now());
    join_all((0..16).map(|_| async {
        while next.fetch_add(1, Ordering::Relaxed) < n && start.elapsed() < LIMIT {
            assert_eq!(post(&client, url, Some(key), body.to_vec()).await, status);
        }
    }))
    .await;
}

/// (e) The release binary with 10,000 webhooks: (peak RSS MB, restart s).
async fn ten_thousand_webhooks() -> Option<(f64, f64)> {
    let dir = tempfile::tempdir().unwrap();
    // All 10,000 in one organisation, ten times the default quota.
    let unlimited = [("HOOKRELAY_LIMITS__WEBHOOKS_PER_ORGANISATION", "0")];
    let (mut child, base) = spawn_release(dir.path(), &unlimited)?;
    wait_ready(&base, 0).await;
    let (_, key) = organisation(&base).await;
    let webhook =
        json!({"name": "w", "url": "https://example.com/hook", "events": ["*"], "active": false});
    let body = serde_json::to_vec(&webhook).unwrap();
    post_many(&format!("{base}/v1/webhooks"), &key, &body, 10_000, 201).await;
    child.kill().ok();
    child.wait().ok();
    let (mut child, base) = spawn_release(dir.path(), &unlimited)?;
    let started = wait_ready(&base, 10_000).await;
    let rss = memory_mb(&child, "VmHWM:");
    child.kill().ok();
    child.wait().ok();
    Some((rss, started))
}

/// (h) A backlog's memory: the release binary's RSS (MB) once 100,000
/// events have been ingested for one webhook at `url`. Against a dead
/// endpoint (nothing listens) with `ordered`, all of them wait behind the
/// head; against the benchmark's receiver they are delivered as they come:
/// the same writes without a backlog, the baseline. A backlog held in
/// memory would cost about 300 bytes a delivery: 29 MB more.
async fn memory_after_ingest(url: &str, ordered: bool) -> Option<f64> {
    let dir = tempfile::tempdir().unwrap();
    let env = [("HOOKRELAY_DELIVERY__ALLOW_PRIVATE_TARGETS", "true")];
    let (mut child, base) = spawn_release(dir.path(), &env)?;
    wait_ready(&base, 0).await;
    let (org, key) = organisation(&base).await;
    let webhook = json!({"name": "h", "url": url, "events": ["*"], "ordered": ordered});
    let (client, hooks) = (awc::Client::default(), format!("{base}/v1/webhooks"));
    let body = serde_json::to_vec(&webhook).unwrap();
    assert_eq!(post(&client, &hooks, Some(&key), body).await, 201);
    let body = serde_json::to_vec(&event(&org, 0)).unwrap();
    post_many(&format!("{base}/v1/events"), &key, &body, 100_000, 202).await;
    let rss = memory_mb(&child, "VmRSS:");
    child.kill().ok();
    child.wait().ok();
    Some(rss)
}

/// (f) The store alone, as (b) and (c) use it: per event a durable ingest
/// (insert, group-commit flush) and per delivery a log entry, written in
/// batches per webhook as the delivery actors write them, from
/// `CONCURRENCY` tasks spread over one thread per core.
/// Deliveries/s.
fn storage_ceiling(events: usize, fanout: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = hookrelay::storage::Store::open(&dir.path().join("data")).unwrap();
    let hooks: Vec<uuid::Uuid> = (0..fanout).map(|_| uuid::Uuid::now_v7()).collect();
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                actix_web::rt::System::new().block_on(join_all(
                    (0..CONCURRENCY / threads).map(|_| store_writes(&store, &hooks, &next, events)),
                ))
            });
        }
    });
    (events * fanout) as f64 / start.elapsed().as_secs_f64()
}

/// One (f) task: stores events and their attempts until `events` are taken.
async fn store_writes(
    store: &hookrelay::storage::Store,
    hooks: &[uuid::Uuid],
    next: &AtomicUsize,
    events: usize,
) {
    use hookrelay::domain::delivery::{AttemptResult, LogEntry, Outcome, QueuedDelivery};
    let body = serde_json::to_vec(&event(&uuid::Uuid::nil().to_string(), 0)).unwrap();
    let result = AttemptResult {
        status_code: Some(200),
        latency_ms: 1,
        request_headers: hookrelay::signing::delivery_headers(&hookrelay::signing::SignInput {
            scheme: hookrelay::domain::webhook::SignatureScheme::Trackpilots,
            secret: "0123456789abcdef0123456789abcdef",
            delivery_id: &uuid::Uuid::now_v7().to_string(),
            event: "desktop.app_tracking.captured",
            timestamp_ms: 1716000000000,
            body: &body,
        }),
        attempted_at: 1716000000000,
        ..Default::default()
    };
    let mut unlogged: std::collections::HashMap<uuid::Uuid, Vec<_>> = Default::default();
    let start = Instant::now();
    while next.fetch_add(1, Ordering::Relaxed) < events && start.elapsed() < LIMIT {
        let e = hookrelay::storage::StoredEvent {
            id: store.open_event(hooks.len()),
            event: "desktop.app_tracking.captured".into(),
            organisation_id: uuid::Uuid::nil(),
            user_id: Some("u".into()),
            team_id: Some("t".into()),
            received_at: 1716000000000,
        };
        let event_type: std::sync::Arc<str> = e.event.as_str().into();
        let queued: Vec<QueuedDelivery> = hooks
            .iter()
            .map(|&webhook_id| QueuedDelivery {
                id: uuid::Uuid::now_v7(),
                webhook_id,
                event_id: e.id,
                event: event_type.clone(),
                attempts: 0,
                next_attempt_at: 0,
                created_at: 0,
                only_in_event: true,
            })
            .collect();
        store.insert_event(&e, &body, &queued).unwrap();
        store.flush().await.unwrap();
        for d in &queued {
            let entry = LogEntry::of_attempt(
                (d.id, e.id, &event_type),
                1,
                Outcome::Delivered,
                result.clone(),
                None,
            );
            let batch = unlogged.entry(d.webhook_id).or_default();
            batch.push((entry, e.id));
            if batch.len() == LOG_BATCH {
                write_log(store, d.webhook_id, batch);
            }
        }
    }
    for (webhook_id, batch) in &mut unlogged {
        write_log(store, *webhook_id, batch);
    }
}

/// What a delivery actor batches into one log write at most.
const LOG_BATCH: usize = 32;

/// Writes one webhook's entries as one batch, then settles their events.
fn write_log(
    store: &hookrelay::storage::Store,
    webhook_id: uuid::Uuid,
    batch: &mut Vec<(hookrelay::domain::delivery::LogEntry, uuid::Uuid)>,
) {
    let (mut entries, events): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
    store.append_log(webhook_id, &mut entries).unwrap();
    events.into_iter().for_each(|e| store.settle(e));
}

/// (g) A bare relay on the same two-worker HTTP stack: every request is
/// answered 202 at once and forwarded with awc to the receiver; nothing is
/// parsed, stored or signed. Deliveries/s: what HTTP alone leaves for (b).
async fn bare_relay(target: &str, seen: &Seen, body: &[u8], events: usize) -> f64 {
    let target = target.to_string();
    let server = HttpServer::new(move || {
        let target = target.clone();
        App::new().default_service(web::to(move |body: web::Bytes| {
            let target = target.clone();
            actix_web::rt::spawn(async move {
                thread_local!(static CLIENT: awc::Client = awc::Client::default());
                let client = CLIENT.with(|c| c.clone());
                post(&client, &target, None, body.to_vec()).await;
            });
            async { HttpResponse::Accepted().finish() }
        }))
    })
    .workers(2)
    .bind("127.0.0.1:0")
    .unwrap();
    let url = format!("http://127.0.0.1:{}/relay", server.addrs()[0].port());
    actix_web::rt::spawn(server.run());
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let before = seen.count.load(Ordering::SeqCst);
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    join_all((0..CONCURRENCY).map(|_| async {
        while next.fetch_add(1, Ordering::Relaxed) < events && start.elapsed() < LIMIT {
            assert_eq!(post(&client, &url, None, body.to_vec()).await, 202);
        }
    }))
    .await;
    while seen.count.load(Ordering::SeqCst) < before + events && start.elapsed() < LIMIT {
        actix_web::rt::time::sleep(Duration::from_millis(2)).await;
    }
    (seen.count.load(Ordering::SeqCst) - before) as f64 / start.elapsed().as_secs_f64()
}

/// `cargo bench --bench delivery -- b c` runs only the named measures
/// (for profiling one at a time); no names runs them all.
fn wanted(part: &str) -> bool {
    let picked: Vec<String> = std::env::args().skip(1).filter(|a| a.len() == 1).collect();
    picked.is_empty() || picked.iter().any(|p| p == part)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    actix_web::rt::System::new().block_on(async {
        let (url, seen) = receiver().await;
        let h = start_hookrelay().await;
        let body = serde_json::to_vec(&event(&h.org, 0)).unwrap();
        raw_ceiling(&url, &body, 2_000).await; // warm-up
        let (raw, raw_cpu) = raw_ceiling(&url, &body, 100_000).await;
        let mut rows = vec![format!("| (a) raw ceiling, receiver hit directly | {raw:.0} req/s ({}) | baseline |", raw_cpu.per_unit("request"))];
        if wanted("b") || wanted("d") {
            add_webhooks(&h, &url, 1).await;
            end_to_end(&h, &seen, 1_000, 1).await; // warm-up
            let run = end_to_end(&h, &seen, 40_000, 1).await;
            let one = run.deliveries_per_s;
            rows.push(format!("| (b) hookrelay, 1 webhook | {one:.0} deliveries/s = {:.0} % of (a) (durable ingests acknowledged at {:.0}/s; {}) | ≥ 35 % |", one / raw * 100.0, run.ingests_per_s, run.cpu.per_unit("delivery")));
            if wanted("d") {
                let l = latency(&h, &seen, one / 2.0).await;
                rows.push(format!("| (d) ingest→receipt latency at {:.0} events/s for {} s | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (p99 of each {} s: {:.1}–{:.1} ms) | p99 ≤ 10 ms |", one / 2.0, LATENCY_RUN.as_secs(), l.p50, l.p99, l.max, LATENCY_WINDOW.as_secs(), l.window_p99.0, l.window_p99.1));
            }
        }
        if wanted("c") {
            let fan = start_hookrelay().await;
            add_webhooks(&fan, &url, 100).await;
            end_to_end(&fan, &seen, 20, 100).await; // warm-up
            // 200,000 deliveries: over fewer, (c) moved by a tenth between runs.
            let run = end_to_end(&fan, &seen, 2_000, 100).await;
            let hundred = run.deliveries_per_s;
            rows.push(format!("| (c) hookrelay, fan-out to 100 webhooks | {hundred:.0} deliveries/s = {:.0} % of (a) ({}) | ≥ 50 % |", hundred / raw * 100.0, run.cpu.per_unit("delivery")));
        }
        if wanted("f") {
            let one = storage_ceiling(10_000, 1);
            let hundred = storage_ceiling(200, 100);
            rows.push(format!("| (f) the store alone, (b)'s and (c)'s writes, no HTTP | 1 webhook: {one:.0} deliveries/s = {:.0} % of (a); 100 webhooks: {hundred:.0} = {:.0} % | context |", one / raw * 100.0, hundred / raw * 100.0));
        }
        if wanted("g") {
            bare_relay(&url, &seen, &body, 2_000).await; // warm-up
            let relay = bare_relay(&url, &seen, &body, 40_000).await;
            rows.push(format!("| (g) a bare relay (202, forward with awc; no parsing, storage or signing) | {relay:.0} deliveries/s = {:.0} % of (a) | context |", relay / raw * 100.0));
        }
        if wanted("e") {
            rows.push(match ten_thousand_webhooks().await {
                Some((rss, secs)) => format!("| (e) 10,000 webhooks | peak RSS {rss:.0} MB, ready in {secs:.2} s | < 150 MB, < 2 s |"),
                None => "| (e) 10,000 webhooks | skipped (no release binary) | < 150 MB, < 2 s |".into(),
            });
        }
        if wanted("h") {
            // Port 9 (discard) on loopback: nothing listens there.
            let backlog = memory_after_ingest("http://127.0.0.1:9/", true).await;
            let delivered = memory_after_ingest(&url, false).await;
            rows.push(match (backlog, delivered) {
                (Some(b), Some(d)) => format!("| (h) RSS after 100,000 events for one webhook: all waiting behind an ordered webhook's dead endpoint, against all delivered | {b:.0} MB against {d:.0} MB ({:.2}×) | context |", b / d),
                _ => "| (h) a backlog's memory | skipped (no release binary) | context |".into(),
            });
        }
        rows.sort(); // by measure letter
        println!("| measure | result | target |");
        println!("|---|---|---|");
        for row in rows {
            println!("{row}");
        }
    });
}
