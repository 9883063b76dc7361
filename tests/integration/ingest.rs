//! Bad ingest inputs: each refused with its status, nothing stored, nothing
//! sent.

use serde_json::json;

use crate::support::{desktop_event, Receiver, TestServer, ADMIN_KEY};

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
        s.app_store.recent_events(10).unwrap().len(),
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
