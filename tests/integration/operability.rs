//! Operating hookrelay: metrics, the request log, the command line, and
//! graceful shutdown under load.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::feed::FeedClient;
use crate::support::{
    desktop_event, eventually, expected_signature, log_of, metrics_text, open_connections,
    tracked_event, unread_bytes, ChildServer, Receiver, TestServer, ADMIN_KEY,
};

#[actix_web::test]
async fn metrics_need_the_admin_key_and_count_what_happened() {
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let rx = Receiver::start().await;
    rx.fail_first(1);
    let hook = s.webhook(&key, &rx.url, json!(["*"])).await;
    s.ingest(&key, &desktop_event("desktop.app_tracking.captured", &org))
        .await;
    eventually(
        "the retry to succeed",
        Duration::from_secs(20),
        async || {
            let log = log_of(&s, &key, hook["id"].as_str().unwrap()).await;
            log.iter()
                .any(|e| e["outcome"] == "delivered")
                .then_some(())
        },
    )
    .await;
    assert_eq!(s.raw("GET", "/metrics", None, None, None).await.0, 401);
    assert_eq!(
        s.raw("GET", "/metrics", Some(&key), None, None).await.0,
        404
    );
    let text = metrics_text(&s.base, Some(ADMIN_KEY)).await;
    for line in [
        "hookrelay_events_ingested_total{event=\"desktop.app_tracking.captured\"} 1",
        "hookrelay_delivery_attempts_total{outcome=\"pending\",status_class=\"5xx\"} 1",
        "hookrelay_delivery_attempts_total{outcome=\"delivered\",status_class=\"2xx\"} 1",
        "hookrelay_retries_scheduled_total 1",
        "hookrelay_attempt_duration_seconds_count 2",
        "hookrelay_queue_depth_total 0",
        "hookrelay_feed_sessions 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.contains("hookrelay_storage_bytes "));
    assert!(text.contains("hookrelay_storage_flush_duration_seconds_count "));

    let public = TestServer::start_with(|c| c.server.metrics_public = true).await;
    assert!(metrics_text(&public.base, None)
        .await
        .contains("hookrelay_feed_events_dropped_total 0"));
}

/// A queued delivery whose event cannot be read is given up unsent; with
/// no attempt there is no log entry, so a counter tells the operator.
#[actix_web::test]
async fn a_delivery_whose_event_is_gone_is_dropped_and_counted() {
    use hookrelay::domain::delivery::QueuedDelivery;
    let s = TestServer::start().await;
    let (_, key) = s.org("acme", "organisation", None).await;
    let rx = Receiver::start().await;
    let hook = s.webhook(&key, &rx.url, json!(["*"])).await;
    let webhook_id: uuid::Uuid = hook["id"].as_str().unwrap().parse().unwrap();
    s.app_store
        .put_delivery(&QueuedDelivery {
            id: uuid::Uuid::now_v7(),
            webhook_id,
            event_id: uuid::Uuid::now_v7(), // never stored
            event: "desktop.app_tracking.captured".into(),
            attempts: 1,
            next_attempt_at: 0,
            created_at: 0,
            only_in_event: false,
        })
        .unwrap();
    let restarted = s.crash_actor(webhook_id).await;
    assert!(restarted, "the actor reloads its queue, with the orphan");
    eventually(
        "the delivery dropped",
        Duration::from_secs(20),
        async || {
            let text = metrics_text(&s.base, Some(ADMIN_KEY)).await;
            text.contains("hookrelay_deliveries_dropped_total 1")
                .then_some(())
        },
    )
    .await;
    assert_eq!(s.app_store.queue_len(), 0, "and removed from the queue");
    assert_eq!(rx.count(), 0, "nothing was sent");
    assert!(log_of(&s, &key, &webhook_id.to_string()).await.is_empty());
}

#[actix_web::test]
async fn the_request_log_names_requests_but_never_keys_secrets_or_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[("HOOKRELAY_AUTH__ADMIN_KEY", ADMIN_KEY)]);
    let api = server.client();
    let (org_id, key) = api.org("acme").await;
    let (_, hook) = api
        .call(
            "POST",
            "/v1/webhooks",
            Some(&key),
            Some(json!({"name": "n", "url": "https://example.com/h", "events": ["*"]})),
        )
        .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    let (_, ticket) = api.call("POST", "/v1/feed/tickets", Some(&key), None).await;
    let ticket = ticket["ticket"].as_str().unwrap().to_string();
    api.call("GET", &format!("/v1/feed?ticket={ticket}"), None, None)
        .await;
    let wanted = format!(
        "GET /v1/webhooks/{}/secret 200",
        hook["id"].as_str().unwrap()
    );
    api.call(
        "GET",
        &format!("/v1/webhooks/{}/secret", hook["id"].as_str().unwrap()),
        Some(&key),
        None,
    )
    .await;
    let log = eventually(
        "the request log line",
        Duration::from_secs(10),
        async || {
            let log = server.log.lock().unwrap().join("\n");
            log.contains(&wanted).then_some(log)
        },
    )
    .await;
    assert!(
        log.lines()
            .any(|l| l.contains(&wanted) && l.contains(&format!("caller={org_id}"))),
        "{log}"
    );
    assert!(log
        .lines()
        .any(|l| l.contains("POST /v1/organisations 201") && l.contains("caller=admin")));
    for secret_text in [ADMIN_KEY, &key, &secret, &ticket] {
        assert!(
            !log.contains(secret_text),
            "the log reveals a key, secret or ticket"
        );
    }
}

#[test]
fn the_command_line_helps() {
    let bin = env!("CARGO_BIN_EXE_hookrelay");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .env("HOOKRELAY_AUTH__ADMIN_KEY", "a-very-secret-admin-key")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, help) = run(&["--help"]);
    assert!(ok && help.contains("--config") && help.contains("--check-config"));
    let (ok, version) = run(&["--version"]);
    assert!(ok && version.contains(env!("CARGO_PKG_VERSION")));
    let (ok, config) = run(&["--check-config"]);
    assert!(ok, "{config}");
    assert!(config.contains("admin_key = \"********\"") && !config.contains("a-very-secret"));
    assert!(
        config.contains("retry_schedule_ms") && config.contains("desktop.app_tracking.captured")
    );
    let (ok, _) = run(&["--config", "/nonexistent/hookrelay.toml", "--check-config"]);
    assert!(!ok);
}

#[actix_web::test]
async fn sigterm_under_load_loses_nothing_and_exits_within_the_grace_period() {
    const GRACE_S: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("HOOKRELAY_AUTH__ADMIN_KEY", ADMIN_KEY),
        ("HOOKRELAY_DELIVERY__ALLOW_PRIVATE_TARGETS", "true"),
        ("HOOKRELAY_DELIVERY__RETRY_SCHEDULE_MS", "100,200,400"),
        ("HOOKRELAY_SERVER__SHUTDOWN_GRACE_S", "3"),
    ];
    let rx = Receiver::start().await;
    rx.delay(60_000); // attempts stay in flight through the shutdown
    let server = ChildServer::start(dir.path(), &env);
    let api = server.client();
    let (org_id, key) = api.org("acme").await;
    api.webhook(&key, json!({"name": "n", "url": rx.url, "events": ["*"]}))
        .await;
    let mut feed = FeedClient::connect(&server.base, &key).await;

    let mut acked = HashSet::new();
    for i in 0..40 {
        let e = tracked_event("desktop.app_tracking.captured", &org_id, &format!("t{i}"));
        if let Some((202, _)) = api
            .try_call("POST", "/v1/events", Some(&key), Some(e))
            .await
        {
            acked.insert(format!("t{i}"));
        }
    }
    eventually("attempts in flight", Duration::from_secs(10), async || {
        (rx.count() >= 8).then_some(())
    })
    .await;
    let started = Instant::now();
    send_sigterm(&server);
    assert!(
        feed.closed_with().await.contains("shutting down"),
        "feed sessions get a going-away close"
    );
    let status = server.terminate_wait();
    let took = started.elapsed();
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    assert!(
        took < Duration::from_secs(GRACE_S * 4),
        "exited after {took:?} with a {GRACE_S} s grace period"
    );

    rx.delay(0);
    let _restarted = ChildServer::start(dir.path(), &env);
    eventually(
        "every acknowledged event delivered after the restart",
        Duration::from_secs(60),
        async || acked.is_subset(&rx.tracking_ids()).then_some(()),
    )
    .await;
    rx.handle.stop(false).await;
}

/// Signals the child as an operator's `kill` would, without waiting.
fn send_sigterm(server: &ChildServer) {
    std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
}

/// A loopback receiver is allowed, and the grace period is long enough
/// for every attempt these tests leave in flight to finish.
const GRACEFUL_ENV: [(&str, &str); 3] = [
    ("HOOKRELAY_AUTH__ADMIN_KEY", ADMIN_KEY),
    ("HOOKRELAY_DELIVERY__ALLOW_PRIVATE_TARGETS", "true"),
    ("HOOKRELAY_SERVER__SHUTDOWN_GRACE_S", "10"),
];

/// An attempt in flight at SIGTERM that finishes within the grace period
/// is logged before the process exits: after a restart its entry is there
/// and it is not sent again.
#[actix_web::test]
async fn an_attempt_finished_during_shutdown_is_logged_and_not_sent_again() {
    const APP: &str = "desktop.app_tracking.captured";
    let dir = tempfile::tempdir().unwrap();
    let env = GRACEFUL_ENV;
    let rx = Receiver::start().await;
    rx.delay(500);
    let server = ChildServer::start(dir.path(), &env);
    let api = server.client();
    let (org_id, key) = api.org("acme").await;
    // Ordered: one attempt at a time, in event order, so a first attempt
    // sent again after the restart would arrive before a later event.
    let webhook = json!({"name": "n", "url": rx.url, "events": ["*"], "ordered": true});
    let hook = api.webhook(&key, webhook).await;
    for _ in 0..3 {
        api.ingest(&key, desktop_event(APP, &org_id)).await;
    }
    eventually(
        "the first attempt in flight",
        Duration::from_secs(10),
        async || (rx.count() == 1).then_some(()),
    )
    .await;
    assert!(server.terminate().success(), "SIGTERM exits 0");
    assert_eq!(rx.count(), 1, "nothing new starts during shutdown");
    let first = rx.delivery_ids().into_iter().next().unwrap();

    rx.delay(0);
    let restarted = ChildServer::start(dir.path(), &env);
    let api = restarted.client();
    api.ingest(&key, desktop_event(APP, &org_id)).await;
    eventually(
        "the rest, and the new event",
        Duration::from_secs(20),
        async || (rx.count() >= 4).then_some(()),
    )
    .await;
    assert_eq!(rx.count(), 4, "the first was not sent again");
    assert_eq!(rx.delivery_ids().len(), 4);
    let path = format!("/v1/webhooks/{hook}/deliveries?limit=50");
    let (_, log) = api.call("GET", &path, Some(&key), None).await;
    let logged = log["data"].as_array().unwrap();
    assert!(
        logged
            .iter()
            .any(|e| e["delivery_id"] == first.as_str() && e["outcome"] == "delivered"),
        "the shutdown's attempt is in the log: {log}"
    );
}

/// An ingest still arriving when SIGTERM comes is answered 202 during the
/// grace period, and its delivery reaches an actor that is already
/// draining. Shutdown itself must store it: after the restart it is
/// delivered from its queue entry, not found again by the search that
/// follows a crash.
#[actix_web::test]
async fn an_event_acknowledged_during_shutdown_is_stored_by_the_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const APP: &str = "desktop.app_tracking.captured";
    let dir = tempfile::tempdir().unwrap();
    let env = GRACEFUL_ENV;
    let rx = Receiver::start().await;
    rx.delay(1_500); // the first attempt keeps the drain waiting
    let server = ChildServer::start(dir.path(), &env);
    let api = server.client();
    let (org_id, key) = api.org("acme").await;
    api.webhook(&key, json!({"name": "n", "url": rx.url, "events": ["*"]}))
        .await;
    let event = |tracking: &str| tracked_event(APP, &org_id, tracking);
    api.ingest(&key, event("before")).await;
    eventually(
        "the first attempt in flight",
        Duration::from_secs(10),
        async || (rx.count() == 1).then_some(()),
    )
    .await;

    // Half of an ingest before the signal, the rest once shutdown began.
    let body = serde_json::to_vec(&event("during")).unwrap();
    let (head, tail) = body.split_at(body.len() / 2);
    let addr = server.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    conn.write_all(head).await.unwrap();
    // Only once a worker has read it is the request under way: a
    // connection still in the listen backlog is reset when shutdown
    // closes the listener.
    let (server_port, client_port) = (
        conn.peer_addr().unwrap().port(),
        conn.local_addr().unwrap().port(),
    );
    eventually(
        "the server to read the request so far",
        Duration::from_secs(10),
        async || (unread_bytes(server_port, client_port) == Some(0)).then_some(()),
    )
    .await;
    send_sigterm(&server);
    eventually("shutdown to begin", Duration::from_secs(10), async || {
        let log = server.log.lock().unwrap();
        log.iter()
            .any(|l| l.contains("SIGTERM received"))
            .then_some(())
    })
    .await;
    conn.write_all(tail).await.unwrap();
    let mut answer = Vec::new();
    let read = conn.read_to_end(&mut answer);
    actix_web::rt::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("an answer within the grace period")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(server.terminate_wait().success(), "exit 0 after SIGTERM");

    rx.delay(0);
    let restarted = ChildServer::start(dir.path(), &env);
    eventually(
        "the event acknowledged during shutdown delivered",
        Duration::from_secs(30),
        async || rx.tracking_ids().contains("during").then_some(()),
    )
    .await;
    let log = restarted.log.lock().unwrap();
    assert!(
        !log.iter().any(|l| l.contains("a crash interrupted")),
        "a clean shutdown stored it; nothing was left for crash recovery: {log:?}"
    );
}

/// Retention, as a restart with a shorter `retention.days` applies it:
/// the delivery log and the events it covers are purged, but an event
/// whose delivery is still owed (a retry waiting while its webhook is
/// disabled) is kept, and is delivered, signed, once it is re-enabled.
#[actix_web::test]
async fn the_retention_sweep_purges_history_but_not_what_is_still_owed() {
    const APP: &str = "desktop.app_tracking.captured";
    const ACTIVITY: &str = "desktop.activity_tracking.captured";
    let dir = tempfile::tempdir().unwrap();
    let (rx, down) = (Receiver::start().await, Receiver::start().await);
    down.answer(500);
    let failing = [
        ("HOOKRELAY_DELIVERY__RETRY_SCHEDULE_MS", "50,100"),
        ("HOOKRELAY_DELIVERY__DISABLE_AFTER_HOURS", "0.00001"), // 36 ms
    ];
    let env = [GRACEFUL_ENV.as_slice(), &failing].concat();
    let server = ChildServer::start(dir.path(), &env);
    let api = server.client();
    let (org_id, key) = api.org("acme").await;
    let live = api
        .webhook(
            &key,
            json!({"name": "live", "url": rx.url, "events": ["*"]}),
        )
        .await;
    let owed = api
        .webhook(
            &key,
            json!({"name": "owed", "url": down.url, "events": [ACTIVITY]}),
        )
        .await;
    let mut ids = Vec::new();
    for event in [APP, ACTIVITY] {
        let (status, body) = api
            .call(
                "POST",
                "/v1/events",
                Some(&key),
                Some(desktop_event(event, &org_id)),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap());
    }
    let (live_log, owed_hook) = (
        format!("/v1/webhooks/{live}/deliveries"),
        format!("/v1/webhooks/{owed}"),
    );
    eventually(
        "both events delivered, the other webhook disabled",
        Duration::from_secs(20),
        async || {
            let (_, page) = api.call("GET", &live_log, Some(&key), None).await;
            let (_, hook) = api.call("GET", &owed_hook, Some(&key), None).await;
            (page["data"].as_array()?.len() == 2 && hook["status"] == "disabled").then_some(())
        },
    )
    .await;
    let written = Instant::now();
    assert!(server.terminate().success());

    // Shorter than the age of everything written, whenever the sweep runs.
    let days = (written.elapsed().as_secs_f64() / 86_400.0).to_string();
    let env = [
        env.as_slice(),
        &[("HOOKRELAY_RETENTION__DAYS", days.as_str())],
    ]
    .concat();
    let server = ChildServer::start(dir.path(), &env);
    let api = server.client();
    eventually(
        "the sweep to empty the log",
        Duration::from_secs(20),
        async || {
            let (_, page) = api.call("GET", &live_log, Some(&key), None).await;
            page["data"].as_array()?.is_empty().then_some(())
        },
    )
    .await;
    down.answer(200);
    let enable = Some(json!({"status": "enabled"}));
    let (status, _) = api.call("PATCH", &owed_hook, Some(&key), enable).await;
    assert_eq!(status, 200);
    let got = eventually("the owed retry", Duration::from_secs(20), async || {
        let all = down.all();
        all.last().filter(|_| all.len() == 3).cloned()
    })
    .await;
    assert_eq!(got.header("x-webhook-event"), Some(ACTIVITY));
    let (_, secret) = api
        .call("GET", &format!("{owed_hook}/secret"), Some(&key), None)
        .await;
    let ts = got.header("x-webhook-timestamp").unwrap();
    assert_eq!(
        got.header("x-webhook-signature"),
        Some(expected_signature(secret["secret"].as_str().unwrap(), ts, &got.body).as_str())
    );
    assert!(server.terminate().success());
    let store = hookrelay::storage::Store::open(&dir.path().join("data")).unwrap();
    assert!(
        store.event(ids[0]).unwrap().is_none(),
        "the delivered event is purged"
    );
    assert!(
        store.event(ids[1]).unwrap().is_some(),
        "the owed one was kept"
    );
}

/// The open-file limit of the tests below, soft and hard alike (so that
/// hookrelay cannot raise it): room for half as many attempts at once.
const OPEN_FILES: u64 = 256;

/// A backlog wanting more sockets than the open-file limit allows waits
/// for connection slots rather than failing: at most half the limit is
/// out at once, ingest and the API keep answering, a test event is
/// refused with 503 rather than queued, and every delivery succeeds at
/// its first attempt. An attempt still waiting when its webhook is paused
/// is not sent until the webhook is resumed.
#[actix_web::test]
async fn a_backlog_beyond_the_open_file_limit_waits_for_connection_slots() {
    const WEBHOOKS: usize = 40; // × max_in_flight 8: 320 sockets wanted
    const EVENTS: usize = 8;
    const SLOTS: usize = OPEN_FILES as usize / 2;
    const APP: &str = "desktop.app_tracking.captured";
    const ACTIVITY: &str = "desktop.activity_tracking.captured";
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    rx.delay(2_000); // each round of attempts holds its slots this long
    let limit = (OPEN_FILES, OPEN_FILES);
    let server = ChildServer::start_with_open_files(dir.path(), &GRACEFUL_ENV, limit);
    let api = server.client();
    let (org_id, key) = api.org("acme").await;
    let mut hooks = Vec::new();
    for i in 0..WEBHOOKS {
        let body = json!({"name": format!("h{i}"), "url": rx.url, "events": [APP]});
        hooks.push(api.webhook(&key, body).await);
    }
    for i in 0..EVENTS {
        api.ingest(&key, tracked_event(APP, &org_id, &format!("t{i}")))
            .await;
    }
    // Queued behind all of those, then paused while it waits for a slot.
    let paused_rx = Receiver::start().await;
    let body = json!({"name": "paused", "url": paused_rx.url, "events": [ACTIVITY]});
    let paused = format!("/v1/webhooks/{}", api.webhook(&key, body).await);
    api.ingest(&key, desktop_event(ACTIVITY, &org_id)).await;
    let pause = Some(json!({"active": false}));
    assert_eq!(api.call("PATCH", &paused, Some(&key), pause).await.0, 200);
    eventually("the first round out", Duration::from_secs(20), async || {
        (rx.count() >= SLOTS).then_some(())
    })
    .await;
    assert_eq!(rx.count(), SLOTS, "attempts out at once");
    let metrics = metrics_text(&server.base, Some(ADMIN_KEY)).await;
    for line in [
        format!("hookrelay_delivery_connection_slots {SLOTS}"),
        format!("hookrelay_delivery_connections_in_use {SLOTS}"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    let simulation = json!({"event": APP});
    let path = format!("/v1/webhooks/{}/simulations", hooks[0]);
    let (status, body) = api.call("POST", &path, Some(&key), Some(simulation)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("service_unavailable"))
    );
    let (status, _) = api.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);

    let logs = eventually(
        "every delivery logged",
        Duration::from_secs(60),
        async || {
            let mut logs = Vec::new();
            for hook in &hooks {
                let path = format!("/v1/webhooks/{hook}/deliveries");
                let (_, page) = api.call("GET", &path, Some(&key), None).await;
                logs.extend(page["data"].as_array()?.clone());
            }
            (logs.len() >= WEBHOOKS * EVENTS).then_some(logs)
        },
    )
    .await;
    let first_try = |e: &serde_json::Value| e["outcome"] == "delivered" && e["attempt"] == 1;
    let failed: Vec<_> = logs.iter().filter(|e| !first_try(e)).collect();
    assert!(
        failed.is_empty(),
        "{} not delivered at once: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(rx.count(), WEBHOOKS * EVENTS, "each sent once");
    assert_eq!(paused_rx.count(), 0, "sent while its webhook was paused");
    let resume = Some(json!({"active": true}));
    assert_eq!(api.call("PATCH", &paused, Some(&key), resume).await.0, 200);
    eventually(
        "the paused delivery after resuming",
        Duration::from_secs(20),
        async || (paused_rx.count() == 1).then_some(()),
    )
    .await;
    rx.handle.stop(false).await;
}

/// A soft open-file limit below the hard one (Linux's usual 1024) is
/// raised at start, so a larger backlog can be out at once.
#[actix_web::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    assert!(
        hard > OPEN_FILES,
        "the test needs a hard limit above {OPEN_FILES}"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start_with_open_files(dir.path(), &GRACEFUL_ENV, (OPEN_FILES, hard));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(soft, [hard.to_string(), hard.to_string()], "{open_files}");
    let said = format!(
        "open-file limit {hard}: up to {} delivery attempts",
        hard / 2
    );
    assert!(
        server.log.lock().unwrap().iter().any(|l| l.contains(&said)),
        "the start-up log says {said:?}"
    );
}

/// Connections to endpoints no longer sent to are closed rather than kept
/// in a pool for ever: a deleted webhook's idle connections close within
/// about twice `connection_lifetime_s`, a test event's as soon as it is
/// answered, and the webhook that is left keeps delivering.
#[actix_web::test]
async fn idle_connections_of_endpoints_no_longer_sent_to_are_closed() {
    const APP: &str = "desktop.app_tracking.captured";
    let dir = tempfile::tempdir().unwrap();
    let lifetime = [("HOOKRELAY_DELIVERY__CONNECTION_LIFETIME_S", "1")];
    let env = [GRACEFUL_ENV.as_slice(), &lifetime].concat();
    let (gone, kept, tested) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    gone.delay(200); // several attempts at once: several connections
    let server = ChildServer::start(dir.path(), &env);
    let api = server.client();
    let (org_id, key) = api.org("acme").await;
    let mut hooks = Vec::new();
    for rx in [&gone, &kept, &tested] {
        let body = json!({"name": "n", "url": rx.url, "events": ["*"]});
        hooks.push(api.webhook(&key, body).await);
    }
    for _ in 0..8 {
        api.ingest(&key, desktop_event(APP, &org_id)).await;
    }
    eventually(
        "the events delivered",
        Duration::from_secs(20),
        async || (gone.count() == 8 && kept.count() == 8).then_some(()),
    )
    .await;
    let path = format!("/v1/webhooks/{}", hooks[0]);
    assert_eq!(api.call("DELETE", &path, Some(&key), None).await.0, 204);
    let path = format!("/v1/webhooks/{}/simulations", hooks[2]);
    let (status, sim) = api
        .call("POST", &path, Some(&key), Some(json!({"event": APP})))
        .await;
    assert_eq!(
        (status, &sim["result"]),
        (200, &json!("delivered")),
        "{sim}"
    );

    let closed = [gone.port(), tested.port()];
    eventually(
        "their connections closed",
        Duration::from_secs(20),
        async || (open_connections(server.pid(), &closed) == 0).then_some(()),
    )
    .await;
    api.ingest(&key, desktop_event(APP, &org_id)).await;
    eventually(
        "the webhook left still delivers",
        Duration::from_secs(20),
        async || (kept.count() == 9).then_some(()),
    )
    .await;
    // The ids and statuses say, if this fails, whether the extra request
    // was a retry (a repeated x-webhook-id) or a new delivery.
    let seen: Vec<_> = gone
        .all()
        .into_iter()
        .map(|r| {
            let id = r.headers.iter().find(|(k, _)| k == "x-webhook-id");
            (id.map(|(_, v)| v.clone()), r.status)
        })
        .collect();
    assert_eq!(
        gone.count(),
        8,
        "nothing sent to the deleted webhook: {seen:?}"
    );
}
