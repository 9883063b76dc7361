//! The live feed (SPEC §8) with real WebSocket clients.

use std::time::Duration;

use awc::ws::{Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::support::{desktop_event, ChildServer, TestServer, ADMIN_KEY};

const APP: &str = "desktop.app_tracking.captured";
const SHOT: &str = "desktop.screenshot_tracking.captured";
const ACTIVITY: &str = "desktop.activity_tracking.captured";

type Framed = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

pub struct FeedClient {
    framed: Framed,
    pub hello: Value,
}

async fn ticket(base: &str, key: &str) -> String {
    let (status, body) = try_ticket(base, key).await;
    assert_eq!(status, 201, "{body}");
    body["ticket"].as_str().unwrap().to_string()
}

/// POST /v1/feed/tickets: the status and the JSON answer.
async fn try_ticket(base: &str, key: &str) -> (u16, Value) {
    let mut r = awc::Client::default()
        .post(format!("{base}/v1/feed/tickets"))
        .insert_header(("authorization", format!("Bearer {key}")))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json::<Value>().await.unwrap())
}

/// The HTTP status of a refused upgrade, or 101.
async fn upgrade_status(base: &str, query: &str) -> u16 {
    let url = format!("{}/v1/feed{query}", base.replace("http://", "ws://"));
    match awc::Client::default().ws(url).connect().await {
        Ok(_) => 101,
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => s.as_u16(),
        Err(e) => panic!("upgrade failed oddly: {e}"),
    }
}

impl FeedClient {
    pub async fn connect(base: &str, key: &str) -> FeedClient {
        let t = ticket(base, key).await;
        let url = format!("{}/v1/feed?ticket={t}", base.replace("http://", "ws://"));
        let (_, framed) = awc::Client::builder()
            .max_http_version(awc::http::Version::HTTP_11)
            .finish()
            .ws(url)
            .max_frame_size(64 * 1024 * 1024)
            .connect()
            .await
            .expect("feed upgrade");
        let mut c = FeedClient {
            framed,
            hello: Value::Null,
        };
        c.hello = c.next(Duration::from_secs(10)).await.expect("hello");
        assert_eq!(c.hello["type"], "hello");
        c
    }

    /// The next JSON text frame, or None on close or after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        match self.frame(wait).await? {
            Ok(text) => Some(serde_json::from_str(&text).unwrap()),
            Err(_) => None,
        }
    }

    /// Ok(text) or Err(close reason).
    async fn frame(&mut self, wait: Duration) -> Option<Result<String, String>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .ok()??;
            match frame.ok()? {
                Frame::Text(b) => return Some(Ok(String::from_utf8(b.to_vec()).unwrap())),
                Frame::Close(reason) => {
                    return Some(Err(reason.and_then(|r| r.description).unwrap_or_default()))
                }
                Frame::Ping(p) => {
                    let _ = self.framed.send(Message::Pong(p)).await;
                }
                _ => {}
            }
        }
    }

    /// The next `n` event messages.
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let m = self
                .next(Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("only {} of {n} events", out.len()));
            if m["type"] == "event" {
                out.push(m);
            }
        }
        out
    }

    async fn send_text(&mut self, text: String) {
        self.framed.send(Message::Text(text.into())).await.unwrap();
    }

    /// The close reason the server sends next.
    pub async fn closed_with(&mut self) -> String {
        loop {
            match self.frame(Duration::from_secs(10)).await {
                Some(Err(reason)) => return reason,
                Some(Ok(_)) => continue,
                None => panic!("no close frame"),
            }
        }
    }
}

#[actix_web::test]
async fn each_caller_sees_exactly_what_its_scope_allows() {
    let s = TestServer::start().await;
    let (reseller, rkey) = s.org("Reseller Co", "reseller", None).await;
    let (child, ckey) = s.org("Child Org", "organisation", Some(&reseller)).await;
    let (other, okey) = s.org("Other Org", "organisation", None).await;
    let mut c = FeedClient::connect(&s.base, &ckey).await;
    let mut r = FeedClient::connect(&s.base, &rkey).await;
    let mut a = FeedClient::connect(&s.base, ADMIN_KEY).await;
    let mut o = FeedClient::connect(&s.base, &okey).await;

    let sent = desktop_event(APP, &child);
    let id = s.ingest(&ckey, &sent).await["id"].clone();
    s.ingest(&okey, &desktop_event(ACTIVITY, &other)).await;
    for client in [&mut c, &mut r, &mut a] {
        let e = client.events(1).await.remove(0);
        assert_eq!(e["id"], id);
        assert_eq!(e["event"], APP);
        assert_eq!(e["organisation"], json!({"id": child, "name": "Child Org"}));
        assert_eq!(
            e["reseller"],
            json!({"id": reseller, "name": "Reseller Co"})
        );
        assert_eq!(e["user_id"], sent["data"][0]["user"]["userId"]);
        assert_eq!(e["team_id"], sent["data"][0]["team"]["teamId"]);
        assert_eq!(e["payload"], sent);
        assert!(e["received_at"].as_str().unwrap().ends_with('Z'));
    }
    let first_for_other = o.events(1).await.remove(0);
    assert_eq!(
        first_for_other["organisation"]["id"],
        other.as_str(),
        "another tenant never sees the child's event"
    );
    assert_eq!(first_for_other["reseller"], Value::Null);
    assert_eq!(
        a.events(1).await[0]["organisation"]["id"],
        other.as_str(),
        "the admin sees everything"
    );
}

#[actix_web::test]
async fn hello_carries_subscribed_types_and_the_latest_events() {
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    s.webhook(&key, "http://127.0.0.1:1/", json!([ACTIVITY, APP]))
        .await;
    let empty = FeedClient::connect(&s.base, &key).await;
    assert_eq!(
        empty.hello["event_types"],
        json!([APP, ACTIVITY]),
        "catalog order, subscribed only"
    );
    assert_eq!(empty.hello["recent"], json!([]));
    let mut last = Value::Null;
    for kind in [APP, ACTIVITY, SHOT] {
        for _ in 0..12 {
            last = s.ingest(&key, &desktop_event(kind, &org)).await["id"].clone();
        }
    }
    let mut watcher = FeedClient::connect(&s.base, &key).await;
    let _ = watcher.next(Duration::from_millis(1)).await;
    // Reconnect until the broadcaster has taken every event in.
    let hello = crate::support::eventually(
        "the newest event in hello",
        Duration::from_secs(10),
        async || {
            let c = FeedClient::connect(&s.base, &key).await;
            (c.hello["recent"][0]["id"] == last).then_some(c.hello)
        },
    )
    .await;
    let recent = hello["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 30, "30 in all");
    for kind in [APP, ACTIVITY, SHOT] {
        assert_eq!(
            recent.iter().filter(|e| e["event"] == kind).count(),
            10,
            "10 of {kind}"
        );
    }
    let times: Vec<&str> = recent
        .iter()
        .map(|e| e["received_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let admin = FeedClient::connect(&s.base, ADMIN_KEY).await;
    assert_eq!(admin.hello["event_types"].as_array().unwrap().len(), 3);
}

#[actix_web::test]
async fn the_snapshot_is_refilled_from_storage_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("HOOKRELAY_AUTH__ADMIN_KEY", ADMIN_KEY)];
    let server = ChildServer::start(dir.path(), &env);
    let api = server.client();
    let (id, key) = api.org("acme").await;
    let (id, key) = (id.as_str(), key.as_str());
    for kind in [APP, ACTIVITY, SHOT] {
        assert_eq!(
            api.call(
                "POST",
                "/v1/events",
                Some(key),
                Some(desktop_event(kind, id))
            )
            .await
            .0,
            202
        );
    }
    assert!(server.terminate().success());
    let server = ChildServer::start(dir.path(), &env);
    let c = FeedClient::connect(&server.base, key).await;
    let kinds: Vec<&str> = c.hello["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, [SHOT, ACTIVITY, APP]);
    assert_eq!(c.hello["recent"][0]["organisation"]["name"], "acme");
}

#[actix_web::test]
async fn a_stalled_client_is_dropped_for_while_others_get_everything() {
    let s = TestServer::start_with(|c| c.feed.session_buffer = 8).await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let mut stalled = FeedClient::connect(&s.base, &key).await;
    let mut live = FeedClient::connect(&s.base, &key).await;
    let mut event = desktop_event(APP, &org);
    event["data"][0]["padding"] = json!("x".repeat(32 * 1024));
    const N: usize = 1500;
    let reader = async {
        let got = live.events(N).await;
        got.len()
    };
    let writer = async {
        for _ in 0..N {
            s.ingest(&key, &event).await;
        }
    };
    let (got, ()) = futures_util::join!(reader, writer);
    assert_eq!(got, N, "the live client received every event");
    let stats = s.app_broadcaster_stats().await;
    assert!(
        stats.dropped > 0,
        "events were dropped for the stalled session: {stats:?}"
    );
    // Once it reads again, the stalled client learns it lagged (with the
    // next event that reaches it) or that it was closed for it.
    let mut told = false;
    'rounds: for _ in 0..50 {
        s.ingest(&key, &desktop_event(ACTIVITY, &org)).await;
        while let Some(frame) = stalled.frame(Duration::from_millis(500)).await {
            match frame {
                Ok(text) if text.contains("\"type\":\"lagged\"") => {
                    let m: Value = serde_json::from_str(&text).unwrap();
                    assert!(m["dropped"].as_u64().unwrap() > 0);
                    told = true;
                    break 'rounds;
                }
                Ok(_) => continue,
                Err(reason) => {
                    assert!(reason.contains("behind"), "{reason}");
                    told = true;
                    break 'rounds;
                }
            }
        }
    }
    assert!(told, "the stalled client was told it lagged");
}

/// Narrows `c` to activity events and waits until the broadcaster applies
/// it (ingesting app and activity pairs of `org` until only activity comes).
async fn subscribe_to_activity(c: &mut FeedClient, s: &TestServer, org: &str, key: &str) {
    c.send_text(json!({"type": "subscribe", "events": [ACTIVITY]}).to_string())
        .await;
    crate::support::eventually(
        "the subscription to apply",
        Duration::from_secs(10),
        async || {
            s.ingest(key, &desktop_event(APP, org)).await;
            s.ingest(key, &desktop_event(ACTIVITY, org)).await;
            let e = c.events(1).await.remove(0);
            (e["event"] == ACTIVITY).then_some(())
        },
    )
    .await;
}

#[actix_web::test]
async fn subscribe_narrows_the_stream() {
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let mut c = FeedClient::connect(&s.base, &key).await;
    subscribe_to_activity(&mut c, &s, &org, &key).await;
    s.ingest(&key, &desktop_event(APP, &org)).await;
    s.ingest(&key, &desktop_event(ACTIVITY, &org)).await;
    assert_eq!(c.events(1).await[0]["event"], ACTIVITY);
}

/// Subscriptions sent faster than the broadcaster takes them are merged,
/// and the latest one is the one that applies.
#[actix_web::test]
async fn of_many_subscriptions_sent_at_once_the_latest_applies() {
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let mut c = FeedClient::connect(&s.base, &key).await;
    let app_only = json!({"type": "subscribe", "events": [APP]}).to_string();
    for _ in 0..2_000 {
        c.framed
            .feed(Message::Text(app_only.clone().into()))
            .await
            .unwrap();
    }
    subscribe_to_activity(&mut c, &s, &org, &key).await;
    for _ in 0..3 {
        s.ingest(&key, &desktop_event(APP, &org)).await;
        s.ingest(&key, &desktop_event(ACTIVITY, &org)).await;
        assert_eq!(c.events(1).await[0]["event"], ACTIVITY);
    }
}

/// Reads until the event `last` arrives: (event ids seen, the event types
/// seen, the sum of every `lagged` count).
async fn read_until(c: &mut FeedClient, last: &Value) -> (Vec<Value>, Vec<Value>, u64) {
    let (mut ids, mut kinds, mut lagged) = (Vec::new(), Vec::new(), 0);
    loop {
        let m = c
            .next(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("the newest event never came; saw {} events", ids.len()));
        match m["type"].as_str() {
            Some("lagged") => lagged += m["dropped"].as_u64().unwrap(),
            Some("event") => {
                ids.push(m["id"].clone());
                kinds.push(m["event"].clone());
                if &m["id"] == last {
                    return (ids, kinds, lagged);
                }
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[actix_web::test]
async fn beyond_the_frame_budget_sessions_learn_what_they_missed_and_catch_up() {
    let s = TestServer::start_with(|c| c.feed.max_frames_per_s = 40).await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let mut all = FeedClient::connect(&s.base, &key).await;
    let mut only = FeedClient::connect(&s.base, &key).await;
    subscribe_to_activity(&mut only, &s, &org, &key).await;
    // Both sessions read past everything the warm-up sent.
    let marker = s.ingest(&key, &desktop_event(ACTIVITY, &org)).await["id"].clone();
    read_until(&mut all, &marker).await;
    read_until(&mut only, &marker).await;

    // Far more than 40 frames/s can carry to two sessions.
    const N: usize = 100;
    let mut last = Value::Null;
    for i in 0..N {
        let kind = if i % 2 == 0 { APP } else { ACTIVITY };
        last = s.ingest(&key, &desktop_event(kind, &org)).await["id"].clone();
    }
    let (ids, _, lagged) = read_until(&mut all, &last).await;
    assert!(lagged > 0, "some events were shed and reported");
    assert_eq!(
        ids.len() as u64 + lagged,
        N as u64,
        "every event sent or counted"
    );
    let (ids, kinds, lagged) = read_until(&mut only, &last).await;
    assert!(kinds.iter().all(|k| k == ACTIVITY), "{kinds:?}");
    assert_eq!(
        ids.len() as u64 + lagged,
        N as u64 / 2,
        "a filtered session is told only of events it wants"
    );
}

#[actix_web::test]
async fn bad_tickets_are_refused_before_the_upgrade() {
    let s = TestServer::start().await;
    let (_, key) = s.org("acme", "organisation", None).await;
    assert_eq!(upgrade_status(&s.base, "").await, 401);
    assert_eq!(upgrade_status(&s.base, "?ticket=ft_made_up").await, 401);
    let t = ticket(&s.base, &key).await;
    assert_eq!(upgrade_status(&s.base, &format!("?ticket={t}")).await, 101);
    assert_eq!(
        upgrade_status(&s.base, &format!("?ticket={t}")).await,
        401,
        "single use"
    );
    let (status, body) = s.call("GET", "/v1/feed?ticket=nope", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(s.call("POST", "/v1/feed/tickets", None, None).await.0, 401);
    let expiring = TestServer::start_with(|c| c.feed.ticket_ttl_s = 0).await;
    let (_, key) = expiring.org("acme", "organisation", None).await;
    let t = ticket(&expiring.base, &key).await;
    assert_eq!(
        upgrade_status(&expiring.base, &format!("?ticket={t}")).await,
        401,
        "expired"
    );
}

#[actix_web::test]
async fn one_key_holds_at_most_its_share_of_sessions_and_tickets() {
    let s = TestServer::start_with(|c| c.feed.max_sessions_per_key = 3).await;
    let (_, key) = s.org("acme", "organisation", None).await;
    let (_, other) = s.org("globex", "organisation", None).await;
    // Held open to the end.
    let _open = [
        FeedClient::connect(&s.base, &key).await,
        FeedClient::connect(&s.base, &key).await,
    ];
    let (status, unused) = try_ticket(&s.base, &key).await;
    assert_eq!(status, 201, "a third: {unused}");
    let (status, refused) = try_ticket(&s.base, &key).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"]["code"], "too_many_feed_sessions");
    assert_eq!(
        try_ticket(&s.base, &other).await.0,
        201,
        "another key is not limited by it"
    );
    // The unused ticket still opens a session, which keeps its place.
    let url = format!(
        "{}/v1/feed?ticket={}",
        s.base.replace("http://", "ws://"),
        unused["ticket"].as_str().unwrap()
    );
    let (_, third) = awc::Client::default()
        .ws(url)
        .connect()
        .await
        .expect("upgrade");
    assert_eq!(
        try_ticket(&s.base, &key).await.0,
        429,
        "three sessions open"
    );
    // A closed session gives its place back once the server sees it close.
    drop(third);
    crate::support::eventually(
        "a place to come free",
        Duration::from_secs(10),
        async || (try_ticket(&s.base, &key).await.0 == 201).then_some(()),
    )
    .await;
}

#[actix_web::test]
async fn an_expired_ticket_gives_its_place_back() {
    let s = TestServer::start_with(|c| {
        c.feed.max_sessions_per_key = 1;
        c.feed.ticket_ttl_s = 0;
    })
    .await;
    let (_, key) = s.org("acme", "organisation", None).await;
    for round in 0..3 {
        assert_eq!(try_ticket(&s.base, &key).await.0, 201, "round {round}");
    }
}

#[actix_web::test]
async fn bad_client_messages_close_only_that_session() {
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let mut healthy = FeedClient::connect(&s.base, &key).await;

    let mut c = FeedClient::connect(&s.base, &key).await;
    c.send_text("not json".into()).await;
    assert!(c.closed_with().await.contains("subscribe"));

    let mut c = FeedClient::connect(&s.base, &key).await;
    c.framed
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert!(c.closed_with().await.contains("binary"));

    let mut c = FeedClient::connect(&s.base, &key).await;
    c.send_text(format!(
        "{{\"type\":\"subscribe\",\"events\":[\"{}\"]}}",
        "x".repeat(100_000)
    ))
    .await;
    assert!(c.closed_with().await.contains("too big"));

    let mut c = FeedClient::connect(&s.base, &key).await;
    c.send_text(json!({"type": "launch", "missiles": true}).to_string())
        .await;
    assert!(!c.closed_with().await.is_empty());

    s.ingest(&key, &desktop_event(APP, &org)).await;
    assert_eq!(
        healthy.events(1).await[0]["event"],
        APP,
        "other sessions are unaffected"
    );
    crate::support::eventually(
        "closed sessions to unregister",
        Duration::from_secs(10),
        async || (s.app_broadcaster_stats().await.sessions == 1).then_some(()),
    )
    .await;
}

/// A frame announced as huge is refused at its header. The WebSocket
/// decoder would otherwise hold everything sent until the frame was
/// complete, so one client could fill the server's memory.
#[actix_web::test]
async fn a_frame_announced_too_large_is_refused_before_its_payload_arrives() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start().await;
    let (_, key) = s.org("acme", "organisation", None).await;
    let mut c = FeedClient::connect(&s.base, &key).await;
    // A masked text frame of 1 GiB, of which only its first MiB is sent.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let io = c.framed.io_mut();
    io.write_all(&header).await.unwrap();
    for _ in 0..16 {
        // The server may already have closed: that is the point.
        if io.write_all(&[b'x'; 64 * 1024]).await.is_err() {
            break;
        }
    }
    let _ = io.flush().await;
    assert!(c.closed_with().await.contains("too big"));
    let (status, _) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_large_screenshot_reaches_sessions_but_not_the_snapshot() {
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let mut c = FeedClient::connect(&s.base, &key).await;
    let mut shot = desktop_event(SHOT, &org);
    shot["data"][0]["screenshot"] = json!({"imageBuffer": "A".repeat(3 * 1024 * 1024)});
    s.ingest(&key, &shot).await;
    let e = c.events(1).await.remove(0);
    assert_eq!(e["payload"], shot, "the whole payload is sent live");
    let later = FeedClient::connect(&s.base, &key).await;
    assert_eq!(later.hello["recent"][0]["event"], SHOT);
    assert!(
        later.hello["recent"][0]["payload"].is_null(),
        "but not kept for hello"
    );
}
