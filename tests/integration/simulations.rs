//! Simulations (SPEC §7) against real loopback receivers and the seed 001
//! Node.js receiver.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::interop::NodeReceivers;
use crate::support::{expected_signature, log_of, Receiver, TestServer, ADMIN_KEY};

const DESKTOP: [&str; 3] = [
    "desktop.app_tracking.captured",
    "desktop.screenshot_tracking.captured",
    "desktop.activity_tracking.captured",
];

async fn simulate(s: &TestServer, key: &str, hook: &str, body: Value) -> (u16, Value) {
    s.call(
        "POST",
        &format!("/v1/webhooks/{hook}/simulations"),
        Some(key),
        Some(body),
    )
    .await
}

/// Every path of keys in a JSON document, ignoring values.
fn shape(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| shape(v, &format!("{prefix}.{k}"), out)),
        Value::Array(items) => items
            .iter()
            .for_each(|v| shape(v, &format!("{prefix}[]"), out)),
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[actix_web::test]
async fn a_simulation_is_signed_sent_logged_and_matches_its_preview() {
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let rx = Receiver::start().await;
    let (status, hook) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&key),
            Some(json!({"name": "n", "url": rx.url, "events": ["*"], "active": false})),
        )
        .await;
    assert_eq!(status, 201);
    let id = hook["id"].as_str().unwrap();
    for (n, event) in DESKTOP.iter().enumerate() {
        let (status, preview) = s
            .call(
                "GET",
                &format!("/v1/webhooks/{id}/simulations/preview?event={event}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(status, 200, "{preview}");
        assert_eq!(
            (preview["simulation"].as_bool(), preview["event"].as_str()),
            (Some(true), Some(*event))
        );
        let org_path = if *event == DESKTOP[2] {
            "/data/organisation/organisationId"
        } else {
            "/data/0/organisation/organisationId"
        };
        assert_eq!(
            preview.pointer(org_path).and_then(Value::as_str),
            Some(org.as_str()),
            "the caller's organisation"
        );

        let (status, result) = simulate(&s, &key, id, json!({"event": event})).await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(
            (result["result"].as_str(), result["http_status"].as_u64()),
            (Some("delivered"), Some(200))
        );
        assert_eq!(result["response_body"], "receiver says hi");
        assert!(result["latency_ms"].is_u64());
        let got = rx.all().remove(n);
        let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
        shape(&preview, "", &mut a);
        shape(&serde_json::from_slice(&got.body).unwrap(), "", &mut b);
        assert_eq!(a, b, "preview and sent payload have the same structure");
        assert_eq!(
            serde_json::to_vec(&result["payload"]).unwrap(),
            got.body,
            "payload is the exact body sent"
        );
        for (name, value) in result["request_headers"].as_object().unwrap() {
            assert_eq!(
                got.header(name),
                value.as_str(),
                "the receiver saw {name} as reported"
            );
        }
        let ts = got.header("x-webhook-timestamp").unwrap();
        assert_eq!(
            got.header("x-webhook-signature").unwrap(),
            expected_signature(hook["secret"].as_str().unwrap(), ts, &got.body)
        );
    }
    let log = log_of(&s, &key, id).await;
    assert_eq!(log.len(), 3);
    assert!(log
        .iter()
        .all(|e| e["simulation"] == true && e["outcome"] == "delivered"));
    // Its body was never stored as an event, so it cannot go again.
    let again = format!(
        "/v1/webhooks/{id}/deliveries/{}/redeliver",
        log[0]["delivery_id"].as_str().unwrap()
    );
    let (status, refused) = s.call("POST", &again, Some(&key), None).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "simulation_not_redelivered");
}

#[actix_web::test]
async fn unreachable_and_failing_endpoints_are_failed_results() {
    let s = TestServer::start_with(|c| c.delivery.timeout_ms = 300).await;
    let (_, key) = s.org("acme", "organisation", None).await;
    let (failing, hanging) = (Receiver::start().await, Receiver::start().await);
    failing.answer(500);
    hanging.delay(5_000);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}/hook", l.local_addr().unwrap().port())
    };
    let cases = [
        (failing.url.clone(), Some(500), "http"),
        (hanging.url.clone(), None, "timeout"),
        (closed, None, "connect"),
        ("http://no-such-host.invalid/hook".to_string(), None, "dns"),
    ];
    for (url, status, kind) in cases {
        let hook = s.webhook(&key, &url, json!(["*"])).await;
        let id = hook["id"].as_str().unwrap();
        let (code, result) = simulate(&s, &key, id, json!({"event": DESKTOP[0]})).await;
        assert_eq!(code, 200, "{url}: {result}");
        assert_eq!(result["result"], "failed", "{url}");
        assert_eq!(
            result["http_status"].as_u64().map(|s| s as u16),
            status,
            "{url}"
        );
        assert_eq!(result["error"]["kind"], kind, "{url}: {result}");
        assert!(result["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        let (_, w) = s
            .call("GET", &format!("/v1/webhooks/{id}"), Some(&key), None)
            .await;
        assert_eq!(
            w["failure_count"], 0,
            "simulations do not count as failures"
        );
        let log = log_of(&s, &key, id).await;
        assert_eq!(
            (
                log.len(),
                log[0]["outcome"].as_str(),
                log[0]["simulation"].as_bool()
            ),
            (1, Some("failed"), Some(true))
        );
    }
    assert_eq!(failing.count(), 1, "never retried");
    hanging.handle.stop(false).await;
}

#[actix_web::test]
async fn errors_follow_the_seed_reference() {
    let s = TestServer::start_with(|c| c.delivery.max_in_flight = 1).await;
    let (_, key) = s.org("acme", "organisation", None).await;
    let (_, other_key) = s.org("other", "organisation", None).await;
    let rx = Receiver::start().await;
    let hook = s.webhook(&key, &rx.url, json!([DESKTOP[0]])).await;
    let id = hook["id"].as_str().unwrap();

    let (status, body) = simulate(&s, &key, id, json!({"event": DESKTOP[1]})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("event_not_registered"))
    );
    let (status, body) = s
        .call(
            "GET",
            &format!("/v1/webhooks/{id}/simulations/preview?event={}", DESKTOP[2]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("event_not_registered"))
    );
    let (status, body) = simulate(&s, &other_key, id, json!({"event": DESKTOP[0]})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("webhook_not_found")),
        "out of scope"
    );
    let (status, body) = simulate(
        &s,
        &key,
        id,
        json!({"event": DESKTOP[0], "payload": {"event": DESKTOP[0]}}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("payload")),
        "simulation: true is required"
    );
    let big = json!({"event": DESKTOP[0], "payload": {"event": DESKTOP[0], "simulation": true, "n": 9007199254740993u64}});
    assert_eq!(simulate(&s, &key, id, big).await.0, 422);

    // The one slot is busy with a hanging request: the next gets 503.
    rx.delay(1_500);
    let busy = simulate(&s, &key, id, json!({"event": DESKTOP[0]}));
    let second = async {
        crate::support::eventually(
            "the first simulation to arrive",
            Duration::from_secs(10),
            async || (rx.count() == 1).then_some(()),
        )
        .await;
        simulate(&s, &key, id, json!({"event": DESKTOP[0]})).await
    };
    let ((first_status, _), (status, body)) = futures_util::join!(busy, second);
    assert_eq!(first_status, 200);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("service_unavailable"))
    );
    rx.delay(0);

    assert_eq!(
        s.call("DELETE", &format!("/v1/webhooks/{id}"), Some(&key), None)
            .await
            .0,
        204
    );
    let (status, body) = simulate(&s, &key, id, json!({"event": DESKTOP[0]})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("webhook_not_found")),
        "deleted after selection"
    );
}

#[actix_web::test]
async fn an_edited_payload_is_normalised_and_sent() {
    let s = TestServer::start().await;
    let (_, key) = s.org("acme", "organisation", None).await;
    let rx = Receiver::start().await;
    let hook = s.webhook(&key, &rx.url, json!(["*"])).await;
    let id = hook["id"].as_str().unwrap();
    let raw = format!(
        r#"{{"event":"{}","payload":{{"simulation":true,"b":1.0,"2":"x","event":"{}","a":1e21}}}}"#,
        DESKTOP[2], DESKTOP[2]
    );
    let (status, result) = s
        .raw(
            "POST",
            &format!("/v1/webhooks/{id}/simulations"),
            Some(&key),
            Some("application/json"),
            Some(raw.into_bytes()),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    let sent = String::from_utf8(rx.all().remove(0).body).unwrap();
    assert_eq!(
        sent,
        format!(
            r#"{{"2":"x","simulation":true,"b":1,"event":"{}","a":1e+21}}"#,
            DESKTOP[2]
        )
    );
}

#[actix_web::test]
async fn the_seed_001_receiver_verifies_simulations() {
    let node = NodeReceivers::start();
    let s = TestServer::start().await;
    let (reseller, rkey) = s.org("reseller", "reseller", None).await;
    let url = format!("{}/webhooks/reseller", node.base);
    let hook = s.webhook(&rkey, &url, json!(["*"])).await;
    node.set_secrets(json!({"RESELLER_WEBHOOK_SECRET": hook["secret"]}))
        .await;
    for event in DESKTOP {
        let (status, result) = simulate(
            &s,
            &rkey,
            hook["id"].as_str().unwrap(),
            json!({"event": event}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            (result["result"].as_str(), result["http_status"].as_u64()),
            (Some("delivered"), Some(200)),
            "{event}: {result}"
        );
        assert_eq!(result["response_body"], r#"{"received":true}"#);
        assert!(result["payload"].to_string().contains(&reseller));
    }
    let (status, _) = s.call("GET", "/v1/webhooks", Some(ADMIN_KEY), None).await;
    assert_eq!(status, 200);
}
