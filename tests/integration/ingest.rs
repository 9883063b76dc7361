//! Bad ingest inputs: each refused with its status, nothing stored, nothing
//! sent; and compressed ones, decoded.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{desktop_event, eventually, Receiver, TestServer, ADMIN_KEY};

#[actix_web::test]
async fn bad_events_are_refused_and_store_nothing() {
    let s = TestServer::start_with(|c| c.server.max_body_bytes = 8192).await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let (other, other_key) = s.org("other", "organisation", None).await;
    let rx = Receiver::start().await;
    s.webhook(&key, &rx.url, json!(["*"])).await;
    let app = "desktop.app_tracking.captured";
    let item = |o: &str| json!({"organisation": {"organisationId": o}});
    let mut big = desktop_event(app, &org);
    big["data"][0]["blob"] = json!("x".repeat(10_000));
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        ("unknown type", serde_json::to_vec(&desktop_event("desktop.unknown", &org)).unwrap(), "application/json", 422, "unknown_event_type"),
        ("no organisation", serde_json::to_vec(&json!({"event": app, "data": [{"user": {}}]})).unwrap(), "application/json", 400, "validation_failed"),
        ("mixed organisations", serde_json::to_vec(&json!({"event": app, "data": [item(&org), item(&other)]})).unwrap(), "application/json", 400, "validation_failed"),
        ("unknown organisation", serde_json::to_vec(&desktop_event(app, &uuid::Uuid::new_v4().to_string())).unwrap(), "application/json", 404, "organisation_not_found"),
        ("other tenant's organisation", serde_json::to_vec(&desktop_event(app, &other)).unwrap(), "application/json", 404, "organisation_not_found"),
        ("unsafe integer", format!(r#"{{"event":"{app}","n":9007199254740993,"data":[{{"organisation":{{"organisationId":"{org}"}}}}]}}"#).into_bytes(), "application/json", 422, "unrepresentable_number"),
        ("infinite number", format!(r#"{{"event":"{app}","n":1e999,"data":[{{"organisation":{{"organisationId":"{org}"}}}}]}}"#).into_bytes(), "application/json", 422, "unrepresentable_number"),
        ("unpaired surrogate", format!(r#"{{"event":"{app}","s":"cut \ud83d","data":[{{"organisation":{{"organisationId":"{org}"}}}}]}}"#).into_bytes(), "application/json", 422, "unrepresentable_string"),
        ("nested too deep", format!(r#"{{"event":"{app}","n":{}1{},"data":[{{"organisation":{{"organisationId":"{org}"}}}}]}}"#, "[".repeat(200), "]".repeat(200)).into_bytes(), "application/json", 422, "nesting_too_deep"),
        ("invalid JSON", b"{\"event\":".to_vec(), "application/json", 400, "invalid_json"),
        ("not an object", b"[1,2]".to_vec(), "application/json", 400, "validation_failed"),
        ("empty data", serde_json::to_vec(&json!({"event": app, "data": []})).unwrap(), "application/json", 400, "validation_failed"),
        ("wrong content type", serde_json::to_vec(&desktop_event(app, &org)).unwrap(), "text/plain", 415, "unsupported_media_type"),
        ("too large", serde_json::to_vec(&big).unwrap(), "application/json", 413, "payload_too_large"),
    ];
    for (what, body, ct, status, code) in cases {
        let (got, resp) = s
            .raw("POST", "/v1/events", Some(&key), Some(ct), Some(body))
            .await;
        assert_eq!(
            (got, resp["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {resp}"
        );
    }
    let (got, _) = s
        .raw(
            "POST",
            "/v1/events",
            Some(&other_key),
            Some("application/json"),
            Some(serde_json::to_vec(&desktop_event(app, &org)).unwrap()),
        )
        .await;
    assert_eq!(
        got, 404,
        "an organisation key publishes only its own events"
    );
    assert_eq!(
        s.app_store.recent_events(10, 0).unwrap().len(),
        0,
        "no event stored"
    );
    assert_eq!(s.app_store.queue_len(), 0, "no delivery queued");
    assert_eq!(rx.count(), 0);
    // The admin may publish for any organisation.
    let (got, _) = s
        .raw(
            "POST",
            "/v1/events",
            Some(ADMIN_KEY),
            Some("application/json"),
            Some(serde_json::to_vec(&desktop_event(app, &org)).unwrap()),
        )
        .await;
    assert_eq!(got, 202);
}

/// POSTs an event body with one extra header: (status, whether the answer
/// is marked replayed, answer).
async fn ingest_with(
    base: &str,
    key: &str,
    header: (&str, &str),
    body: Vec<u8>,
) -> (u16, bool, Value) {
    let mut resp = awc::Client::default()
        .post(format!("{base}/v1/events"))
        .insert_header(("authorization", format!("Bearer {key}")))
        .insert_header(("content-type", "application/json"))
        .insert_header(header)
        .send_body(body)
        .await
        .expect("request sent");
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    let answer = resp.json::<Value>().await.expect("a JSON answer");
    (resp.status().as_u16(), replayed, answer)
}

/// POSTs an event body sent with `Content-Encoding: encoding`.
async fn ingest_encoded(s: &TestServer, key: &str, encoding: &str, body: Vec<u8>) -> (u16, Value) {
    let (status, _, answer) = ingest_with(&s.base, key, ("content-encoding", encoding), body).await;
    (status, answer)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Producers may compress what they send (screenshots are mostly base64);
/// the limit holds for the decoded body, so a small body that inflates
/// hugely is refused like a large one.
#[actix_web::test]
async fn compressed_events_are_decoded_within_the_body_limit() {
    let s = TestServer::start_with(|c| c.server.max_body_bytes = 1024 * 1024).await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let rx = Receiver::start().await;
    s.webhook(&key, &rx.url, json!(["*"])).await;
    let app = "desktop.app_tracking.captured";
    let plain = serde_json::to_vec(&desktop_event(app, &org)).unwrap();
    // A screenshot-like event whose compressed form is too large to be
    // inflated on the HTTP worker (it goes to the blocking pool).
    let mut screenshot = desktop_event(app, &org);
    let noise: String = (0..6000)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    screenshot["data"][0]["image"] = json!(noise);
    let screenshot = serde_json::to_vec(&screenshot).unwrap();
    let sent = [
        ("gzip", gzip(&plain), &plain),
        ("deflate", deflate(&plain), &plain),
        ("gzip", gzip(&screenshot), &screenshot),
    ];
    assert!(sent[2].1.len() > 64 * 1024, "{} bytes", sent[2].1.len());
    for (encoding, body, _) in &sent {
        let (status, answer) = ingest_encoded(&s, &key, encoding, body.clone()).await;
        assert_eq!(status, 202, "{encoding}: {answer}");
    }
    eventually("all three delivered", Duration::from_secs(20), async || {
        (rx.count() == 3).then_some(())
    })
    .await;
    let mut delivered: Vec<Vec<u8>> = rx.all().into_iter().map(|r| r.body).collect();
    let mut expected: Vec<Vec<u8>> = sent.iter().map(|(_, _, p)| p.to_vec()).collect();
    delivered.sort();
    expected.sort();
    assert!(
        delivered == expected,
        "each sent decoded, as the producer wrote it"
    );

    let mut bomb = desktop_event(app, &org);
    bomb["data"][0]["blob"] = json!(" ".repeat(2 * 1024 * 1024));
    let bomb = gzip(&serde_json::to_vec(&bomb).unwrap());
    assert!(
        bomb.len() < 16 * 1024,
        "small as sent: {} bytes",
        bomb.len()
    );
    let cases = [
        ("gzip", bomb, 413, "payload_too_large"),
        ("gzip", b"not gzip at all".to_vec(), 400, "body_unreadable"),
        ("br", plain.clone(), 415, "unsupported_content_encoding"),
    ];
    for (encoding, body, status, code) in cases {
        let (got, answer) = ingest_encoded(&s, &key, encoding, body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }
    assert_eq!(
        s.app_store.recent_events(10, 0).unwrap().len(),
        3,
        "only the three good ones stored"
    );
}

/// POSTs an event with an `Idempotency-Key`: (status, replayed?, answer).
async fn ingest_once(
    base: &str,
    key: &str,
    idempotency: &str,
    event: &Value,
) -> (u16, bool, Value) {
    let body = serde_json::to_vec(event).unwrap();
    ingest_with(base, key, ("idempotency-key", idempotency), body).await
}

/// A producer that retries after a lost answer sends the same key: it gets
/// the first answer, and receivers get one delivery, not two with
/// different ids they could not tell apart.
#[actix_web::test]
async fn an_idempotency_key_stores_an_event_once() {
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let (other_org, other_key) = s.org("other", "organisation", None).await;
    let rx = Receiver::start().await;
    s.webhook(&key, &rx.url, json!(["*"])).await;
    let app = "desktop.app_tracking.captured";
    let event = desktop_event(app, &org);

    let (status, replayed, first) = ingest_once(&s.base, &key, "retry-1", &event).await;
    assert_eq!((status, replayed), (202, false), "{first}");
    let (status, replayed, again) = ingest_once(&s.base, &key, "retry-1", &event).await;
    assert_eq!((status, replayed), (202, true), "{again}");
    assert_eq!(again, first, "the first answer, same event id");

    // Concurrent retries of one key: one event, one answer.
    let racing = futures_util::future::join_all(
        (0..8).map(|_| ingest_once(&s.base, &key, "racing", &event)),
    )
    .await;
    let ids: std::collections::HashSet<String> = racing
        .iter()
        .map(|(status, _, answer)| {
            assert_eq!(*status, 202, "{answer}");
            answer["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{racing:?}");

    // Another event under a used key is refused; another organisation's
    // keys are its own.
    let mut changed = event.clone();
    changed["timestamp"] = json!(1);
    let (status, _, refused) = ingest_once(&s.base, &key, "retry-1", &changed).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let theirs = desktop_event(app, &other_org);
    let (status, replayed, _) = ingest_once(&s.base, &other_key, "retry-1", &theirs).await;
    assert_eq!((status, replayed), (202, false));

    for bad in ["", &"k".repeat(256), "has space", "naïve"] {
        let (status, _, answer) = ingest_once(&s.base, &key, bad, &event).await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some("Idempotency-Key")),
            "{bad:?}"
        );
    }
    assert_eq!(
        s.app_store.recent_events(10, 0).unwrap().len(),
        3,
        "retry-1 and racing for acme, retry-1 for the other"
    );
    eventually(
        "acme's two events delivered",
        Duration::from_secs(20),
        async || (rx.delivery_ids().len() == 2).then_some(()),
    )
    .await;
    assert_eq!(rx.count(), 2, "each once");
}

/// `event` with a filler field, so that its JSON is about `bytes` long.
fn padded(event: Value, bytes: usize) -> Vec<u8> {
    let mut event = event;
    event["data"][0]["filler"] = json!("x".repeat(bytes));
    serde_json::to_vec(&event).unwrap()
}

/// POST /v1/events with a chunked body (no Content-Length): the status,
/// `Retry-After` and the answer.
async fn ingest_chunked(s: &TestServer, key: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
    let chunk = futures_util::stream::once(async { Ok::<_, std::io::Error>(body.into()) });
    // Longer than a body's wait for room in the budget.
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut r = client
        .post(format!("{}/v1/events", s.base))
        .insert_header(("authorization", format!("Bearer {key}")))
        .insert_header(("content-type", "application/json"))
        .send_stream(chunk)
        .await
        .unwrap();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry_after, r.json().await.unwrap())
}

/// A raw connection that has sent `head` (an ingest declaring
/// `body.len()`) and the first `sent` bytes of `body`.
async fn upload_begun(
    s: &TestServer,
    key: &str,
    body: &[u8],
    sent: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..sent]).await.unwrap();
    conn
}

/// Sends the rest of `body` after `sent` bytes; the response as text.
async fn upload_finished(mut conn: tokio::net::TcpStream, body: &[u8], sent: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(&body[sent..]).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    answer
}

#[actix_web::test]
async fn large_bodies_share_the_in_flight_budget_and_management_does_not_wait() {
    let s = TestServer::start_with(|c| {
        c.server.max_body_bytes = 100 * 1024;
        c.server.max_body_bytes_in_flight = 100 * 1024;
    })
    .await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let app = "desktop.app_tracking.captured";
    let body = |kib: usize| padded(desktop_event(app, &org), kib * 1024);
    // Announced is not sent: a body holds room only for what has arrived.
    let slow_body = body(90);
    let announced = upload_begun(&s, &key, &slow_body, 0).await;
    let (status, answer) = s
        .raw(
            "POST",
            "/v1/events",
            Some(&key),
            Some("application/json"),
            Some(body(60)),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    drop(announced);
    // One that has sent 89 KiB holds them: a body with no room, once it
    // has waited for some, is refused with 503.
    let slow = upload_begun(&s, &key, &slow_body, 89 * 1024).await;
    let refused = eventually(
        "the slow upload to hold its room",
        Duration::from_secs(60),
        async || {
            let (status, retry_after, body) = ingest_chunked(&s, &key, body(20)).await;
            (status == 503).then_some((retry_after, body))
        },
    )
    .await;
    assert_eq!(refused.1["error"]["code"], "server_busy", "{}", refused.1);
    assert_eq!(refused.0.as_deref(), Some("1"), "Retry-After");
    // Management bodies do not count against it.
    let hook = json!({"name": "h", "url": "https://example.com/h", "events": ["*"]});
    let (status, _) = s.call("POST", "/v1/webhooks", Some(&key), Some(hook)).await;
    assert_eq!(status, 201);
    // A body waits for room, which the slow upload gives back once done.
    let waiting = s.raw(
        "POST",
        "/v1/events",
        Some(&key),
        Some("application/json"),
        Some(body(20)),
    );
    let finish = upload_finished(slow, &slow_body, 89 * 1024);
    let ((status, waited), answer) = futures_util::join!(waiting, finish);
    assert_eq!(status, 202, "{waited}");
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
}

#[actix_web::test]
async fn a_body_that_stops_arriving_is_given_up() {
    use tokio::io::AsyncReadExt;
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let body = padded(
        desktop_event("desktop.app_tracking.captured", &org),
        10 * 1024,
    );
    let mut stalled = upload_begun(&s, &key, &body, 1024).await;
    let mut answer = String::new();
    stalled.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
}
