//! Test support: the real server on 127.0.0.1:0 over a temporary sled
//! directory, an HTTP client, loopback receivers, and polling helpers.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hookrelay::app::Application;
use hookrelay::config::Config;
use serde_json::{json, Value};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

pub struct TestServer {
    pub base: String,
    pub app_store: hookrelay::storage::Store,
    pub registry: actix::Addr<hookrelay::actors::registry::Registry>,
    pub broadcaster: actix::Addr<hookrelay::actors::broadcaster::Broadcaster>,
    pub _dir: Arc<tempfile::TempDir>,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.bind = "127.0.0.1:0".into();
    c.server.workers = 2;
    c.storage.path = dir.join("data");
    c.auth.admin_key = Some(ADMIN_KEY.into());
    c.delivery.allow_private_targets = true;
    c.delivery.retry_schedule_ms = vec![50, 100, 200];
    c.delivery.timeout_ms = 2_000;
    c
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let app = Application::build(config).await.expect("server starts");
        let server = TestServer {
            base: format!("http://127.0.0.1:{}", app.port()),
            app_store: app.store(),
            registry: app.registry(),
            broadcaster: app.broadcaster(),
            _dir: dir,
        };
        actix_web::rt::spawn(app.run_until_stopped());
        server
    }

    /// What a webhook's delivery actor holds (`None`: no actor).
    pub async fn depth(
        &self,
        webhook_id: uuid::Uuid,
    ) -> Option<hookrelay::actors::delivery::Holding> {
        let asked = hookrelay::actors::registry::QueueDepth { webhook_id };
        self.registry.send(asked).await.unwrap()
    }

    /// Panics a webhook's delivery actor, which its supervisor restarts
    /// from what sled holds; false if it has no actor.
    pub async fn crash_actor(&self, webhook_id: uuid::Uuid) -> bool {
        let crash = hookrelay::actors::registry::CrashActor { webhook_id };
        self.registry.send(crash).await.unwrap()
    }

    pub async fn app_broadcaster_stats(&self) -> hookrelay::actors::broadcaster::FeedStats {
        self.broadcaster
            .send(hookrelay::actors::broadcaster::Stats)
            .await
            .unwrap()
    }

    /// Sends a request and returns the status and the JSON body (or Null).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.raw(method, path, key, Some("application/json"), bytes)
            .await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        let mut req = client.request(method.parse().unwrap(), format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.insert_header(("authorization", format!("Bearer {k}")));
        }
        if let Some(ct) = content_type {
            req = req.insert_header(("content-type", ct));
        }
        let mut resp = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        }
        .expect("request sent");
        let status = resp.status().as_u16();
        let bytes = resp
            .body()
            .limit(64 * 1024 * 1024)
            .await
            .expect("body read");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            // Non-JSON bodies (metrics, the dashboard) come back as text.
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    /// Creates an organisation as the admin; returns (id, api key).
    pub async fn org(&self, name: &str, kind: &str, reseller: Option<&str>) -> (String, String) {
        let (status, body) = self
            .call(
                "POST",
                "/v1/organisations",
                Some(ADMIN_KEY),
                Some(json!({"name": name, "kind": kind, "reseller_id": reseller})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().unwrap().into(),
            body["api_key"].as_str().unwrap().into(),
        )
    }

    /// Creates a webhook with `key`; returns the 201 body.
    pub async fn webhook(&self, key: &str, url: &str, events: Value) -> Value {
        let (status, body) = self
            .call(
                "POST",
                "/v1/webhooks",
                Some(key),
                Some(json!({"name": "hook", "url": url, "events": events})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Ingests an event; returns the 202 body.
    pub async fn ingest(&self, key: &str, event: &Value) -> Value {
        let (status, body) = self
            .call("POST", "/v1/events", Some(key), Some(event.clone()))
            .await;
        assert_eq!(status, 202, "{body}");
        body
    }
}

/// A desktop event of the seeds' shape for `org`.
pub fn desktop_event(event: &str, org: &str) -> Value {
    let item = json!({
        "organisation": {"organisationId": org},
        "team": {"teamId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"},
        "user": {"userId": "7d9f3c2e-1111-4b50-8888-8dd25736052a"},
        "tracking": {"trackingId": uuid::Uuid::new_v4().to_string(), "app": {"name": "Google Chrome"},
            "time": {"durationInSeconds": 20}}
    });
    let data = if event == "desktop.activity_tracking.captured" {
        item
    } else {
        json!([item])
    };
    json!({"event": event, "version": "v1", "agent": "desktop-agent", "timestamp": 1769591066292u64, "data": data})
}

/// `desktop_event` whose (first) item carries `tracking` as its
/// trackingId, so a test can tell which events reached a receiver.
pub fn tracked_event(event: &str, org: &str, tracking: &str) -> Value {
    let mut e = desktop_event(event, org);
    e["data"][0]["tracking"]["trackingId"] = json!(tracking);
    e
}

/// Polls `check` until it returns `Some`, or panics after `limit`.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request a receiver saw.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status answered (0 until the answer is chosen).
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted answer: a status and headers.
pub type Answer = (u16, Vec<(&'static str, String)>);

/// How a receiver answers: a status, after an optional delay.
pub struct Behaviour {
    pub status: std::sync::atomic::AtomicU16,
    pub delay_ms: std::sync::atomic::AtomicU64,
    /// Answer 500 to this many requests first.
    pub fail_first: std::sync::atomic::AtomicUsize,
    /// Answers (status, headers) for the next requests, in order.
    pub script: Mutex<std::collections::VecDeque<Answer>>,
}

/// A loopback HTTP receiver that records every request.
pub struct Receiver {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Received>>>,
    pub behaviour: Arc<Behaviour>,
    pub handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let behaviour = Arc::new(Behaviour {
            status: 200.into(),
            delay_ms: 0.into(),
            fail_first: 0.into(),
            script: Default::default(),
        });
        let (s, b) = (seen.clone(), behaviour.clone());
        let server = HttpServer::new(move || {
            let (s, b) = (s.clone(), b.clone());
            App::new()
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                    let (s, b) = (s.clone(), b.clone());
                    async move {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect();
                        let index = {
                            let mut seen = s.lock().unwrap();
                            seen.push(Received {
                                path: req.path().to_string(),
                                headers,
                                body: body.to_vec(),
                                status: 0,
                            });
                            seen.len() - 1
                        };
                        let delay = b.delay_ms.load(SeqCst);
                        if delay > 0 {
                            actix_web::rt::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let failing = b
                            .fail_first
                            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        let status = if failing { 500 } else { b.status.load(SeqCst) };
                        let (status, headers) = b
                            .script
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or((status, vec![]));
                        s.lock().unwrap()[index].status = status;
                        let mut answer = HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(status).unwrap(),
                        );
                        for header in headers {
                            answer.insert_header(header);
                        }
                        answer.body("receiver says hi")
                    }
                }))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            seen,
            behaviour,
            handle,
        }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn port(&self) -> u16 {
        let authority = self.url.trim_start_matches("http://");
        authority.split(['/', ':']).nth(1).unwrap().parse().unwrap()
    }

    pub fn all(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// The trackingIds of every event received (see `tracked_event`).
    pub fn tracking_ids(&self) -> std::collections::HashSet<String> {
        self.all()
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter_map(|b| {
                b["data"][0]["tracking"]["trackingId"]
                    .as_str()
                    .map(String::from)
            })
            .collect()
    }

    /// The distinct `x-webhook-id`s received: one per delivery.
    pub fn delivery_ids(&self) -> std::collections::HashSet<String> {
        self.all()
            .iter()
            .flat_map(|r| r.headers.clone())
            .filter_map(|(name, value)| (name == "x-webhook-id").then_some(value))
            .collect()
    }

    pub fn answer(&self, status: u16) {
        self.behaviour.status.store(status, SeqCst);
    }

    pub fn fail_first(&self, n: usize) {
        self.behaviour.fail_first.store(n, SeqCst);
    }

    /// Answers the next requests with these statuses and headers, then
    /// as before.
    pub fn script(&self, answers: Vec<Answer>) {
        self.behaviour.script.lock().unwrap().extend(answers);
    }

    pub fn delay(&self, ms: u64) {
        self.behaviour.delay_ms.store(ms, SeqCst);
    }
}

/// The release or debug `hookrelay` binary running as a child process.
pub struct ChildServer {
    pub child: std::process::Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ChildServer {
    /// Starts the binary on `dir` with extra `HOOKRELAY_*` variables and
    /// waits for it to say where it listens.
    pub fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> ChildServer {
        let cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"));
        Self::spawn(cmd, dir, env)
    }

    /// As `start`, under an open-file limit of `soft` (and `hard`), set by
    /// util-linux's `prlimit`, which then runs the binary in its place.
    pub fn start_with_open_files(
        dir: &std::path::Path,
        env: &[(&str, &str)],
        (soft, hard): (u64, u64),
    ) -> ChildServer {
        let mut cmd = std::process::Command::new("prlimit");
        cmd.arg(format!("--nofile={soft}:{hard}"))
            .arg(env!("CARGO_BIN_EXE_hookrelay"));
        Self::spawn(cmd, dir, env)
    }

    fn spawn(
        mut cmd: std::process::Command,
        dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> ChildServer {
        use std::io::BufRead;
        cmd.current_dir(dir)
            .env("HOOKRELAY_SERVER__BIND", "127.0.0.1:0")
            .env("HOOKRELAY_STORAGE__PATH", dir.join("data"))
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hookrelay");
        let stderr = child.stderr.take().unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("hookrelay did not start: {:?}", log.lock().unwrap()));
        ChildServer {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    /// A TestServer-like view to send requests through.
    pub fn client(&self) -> RemoteServer {
        RemoteServer {
            base: self.base.clone(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself (after a signal sent elsewhere).
    pub fn terminate_wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.child.wait().expect("wait")
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests to a server known only by its base URL.
pub struct RemoteServer {
    pub base: String,
}

impl RemoteServer {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.try_call(method, path, key, body)
            .await
            .expect("request sent")
    }

    /// Creates an organisation as the admin; returns (id, api key).
    pub async fn org(&self, name: &str) -> (String, String) {
        let body = json!({"name": name, "kind": "organisation"});
        let (status, org) = self
            .call("POST", "/v1/organisations", Some(ADMIN_KEY), Some(body))
            .await;
        assert_eq!(status, 201, "{org}");
        (
            org["id"].as_str().unwrap().into(),
            org["api_key"].as_str().unwrap().into(),
        )
    }

    /// Creates a webhook from `body`; returns its id.
    pub async fn webhook(&self, key: &str, body: Value) -> String {
        let (status, hook) = self
            .call("POST", "/v1/webhooks", Some(key), Some(body))
            .await;
        assert_eq!(status, 201, "{hook}");
        hook["id"].as_str().unwrap().into()
    }

    /// Publishes an event, which must be accepted; returns the answer.
    pub async fn ingest(&self, key: &str, event: Value) -> Value {
        let (status, body) = self
            .call("POST", "/v1/events", Some(key), Some(event))
            .await;
        assert_eq!(status, 202, "{body}");
        body
    }

    /// `None` when the server could not be reached.
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        let mut req = client.request(method.parse().unwrap(), format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.insert_header(("authorization", format!("Bearer {k}")));
        }
        let mut resp = match body {
            Some(b) => {
                req.insert_header(("content-type", "application/json"))
                    .send_body(serde_json::to_vec(&b).unwrap())
                    .await
            }
            None => req.send().await,
        }
        .ok()?;
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(64 * 1024 * 1024).await.ok()?;
        Some((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

/// `hex(HMAC_SHA256(timestamp + "." + body, secret))`, computed here
/// independently of hookrelay's signing module.
pub fn expected_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The delivery log of a webhook, newest first.
pub async fn log_of(s: &TestServer, key: &str, webhook: &str) -> Vec<Value> {
    let (status, page) = s
        .call(
            "GET",
            &format!("/v1/webhooks/{webhook}/deliveries?limit=250"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().clone()
}

/// Installs a Node test directory's packages from its lock file once per
/// test process. NB: `npm ci` first deletes node_modules, so two tests
/// installing the same directory at once would break each other.
pub fn npm_ci(dir: &std::path::Path, marker: &str) {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if dir.join("node_modules").join(marker).exists() {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .expect("npm is needed for the Node.js test receivers and the browser tests");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

/// How many TCP connections process `pid` holds open to these loopback
/// ports (established, or closed by the peer but not yet by it).
pub fn open_connections(pid: u32, ports: &[u16]) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the process runs");
    let sockets: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).expect("the process runs");
    // Columns: sl local_address rem_address st ... uid timeout inode.
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.len() > 9 && sockets.contains(cols[9]))
        .filter_map(|cols| u16::from_str_radix(cols[2].rsplit(':').next()?, 16).ok())
        .filter(|port| ports.contains(port))
        .count()
}

/// Bytes received on the loopback connection from `peer_port` to
/// `local_port` that its owner has not read yet (`None` while there is no
/// such connection). Whatever process holds it: a connection still in a
/// listen backlog counts too, with everything sent to it unread.
pub fn unread_bytes(local_port: u16, peer_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/self/net/tcp").ok()?;
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    // Columns: sl local_address rem_address st tx_queue:rx_queue ...
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.len() > 4)
        .find(|cols| port(cols[1]) == Some(local_port) && port(cols[2]) == Some(peer_port))
        .and_then(|cols| u64::from_str_radix(cols[4].split(':').nth(1)?, 16).ok())
}

/// The text of `GET /metrics`.
pub async fn metrics_text(base: &str, key: Option<&str>) -> String {
    let mut req = awc::Client::default().get(format!("{base}/metrics"));
    if let Some(k) = key {
        req = req.insert_header(("authorization", format!("Bearer {k}")));
    }
    let mut resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap()
}

/// Every page of `GET {path}?limit=N`, followed by its cursor.
pub async fn all_pages(s: &TestServer, path: &str, key: &str, limit: usize) -> Vec<Vec<String>> {
    let (mut pages, mut before) = (Vec::new(), String::new());
    for _ in 0..50 {
        let page_path = format!("{path}?limit={limit}{before}");
        let (status, page) = s.call("GET", &page_path, Some(key), None).await;
        assert_eq!(status, 200, "{page}");
        pages.push(ids(&page));
        match page["next_before"].as_str() {
            Some(cursor) => before = format!("&before={cursor}"),
            None => return pages,
        }
    }
    panic!("the cursor never ended");
}

/// The ids of a list's `data`, in order.
pub fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect()
}
