//! The real binary as a child process: restart keeps everything (and drops
//! only what is queued for deleted webhooks), the generated admin key is
//! printed once and works across restarts; first attempts a crash
//! interrupted are queued again from their events' records.

use std::time::Duration;

use hookrelay::domain::delivery::{AttemptResult, LogEntry, Outcome, QueuedDelivery};
use hookrelay::storage::{Store, StoredEvent};
use serde_json::json;
use uuid::Uuid;

use crate::support::{ChildServer, ADMIN_KEY};

#[actix_web::test]
async fn restart_keeps_organisations_webhooks_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let admin_line = server
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("generated the admin API key"))
        .cloned()
        .expect("a generated admin key is printed on first start");
    let admin = admin_line.rsplit(' ').next().unwrap().to_string();
    let api = server.client();
    let (status, org) = api
        .call(
            "POST",
            "/v1/organisations",
            Some(&admin),
            Some(json!({"name": "acme", "kind": "organisation"})),
        )
        .await;
    assert_eq!(status, 201, "{org}");
    let key = org["api_key"].as_str().unwrap().to_string();
    let mut created = Vec::new();
    for i in 0..3 {
        let (status, w) = api
            .call("POST", "/v1/webhooks", Some(&key),
                Some(json!({"name": format!("hook {i}"), "url": "https://example.com/h", "events": ["*"]})))
            .await;
        assert_eq!(status, 201);
        created.push(w);
    }
    let (_, before) = api.call("GET", "/v1/webhooks", Some(&key), None).await;
    assert!(server.terminate().success(), "SIGTERM exits 0");

    let server = ChildServer::start(dir.path(), &[]);
    assert!(
        !server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("generated the admin API key")),
        "the admin key is generated only once"
    );
    let api = server.client();
    let (status, after) = api.call("GET", "/v1/webhooks", Some(&key), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        after, before,
        "every webhook survives the restart unchanged"
    );
    for w in &created {
        let (_, s) = api
            .call(
                "GET",
                &format!("/v1/webhooks/{}/secret", w["id"].as_str().unwrap()),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(s["secret"], w["secret"], "secrets unchanged");
    }
    let (status, _) = api
        .call("GET", "/v1/organisations", Some(&admin), None)
        .await;
    assert_eq!(status, 200, "the generated admin key still works");
}

const ENV: [(&str, &str); 1] = [("HOOKRELAY_AUTH__ADMIN_KEY", ADMIN_KEY)];

/// Has the real binary store an organisation with one inactive webhook
/// (so nothing queued for it is sent across restarts); its id.
async fn inactive_webhook(dir: &std::path::Path) -> Uuid {
    let server = ChildServer::start(dir, &ENV);
    let api = server.client();
    let (_, key) = api.org("acme").await;
    let (status, w) = api
        .call("POST", "/v1/webhooks", Some(&key),
            Some(json!({"name": "w", "url": "https://example.com/h", "events": ["*"], "active": false})))
        .await;
    assert_eq!(status, 201, "{w}");
    assert!(server.terminate().success());
    w["id"].as_str().unwrap().parse().unwrap()
}

fn queued(webhook_id: Uuid) -> QueuedDelivery {
    QueuedDelivery {
        id: Uuid::now_v7(),
        webhook_id,
        event_id: Uuid::now_v7(),
        event: "desktop.app_tracking.captured".into(),
        attempts: 0,
        next_attempt_at: 0,
        created_at: 0,
        only_in_event: false,
    }
}

#[actix_web::test]
async fn a_restart_drops_what_is_queued_for_deleted_webhooks_only() {
    let dir = tempfile::tempdir().unwrap();
    let kept = inactive_webhook(dir.path()).await;

    // What an ingest racing a delete leaves: a delivery queued for a
    // webhook that no longer exists, next to one for a live webhook.
    let deleted = Uuid::now_v7();
    {
        let store = Store::open(&dir.path().join("data")).unwrap();
        store.put_delivery(&queued(deleted)).unwrap();
        store.put_delivery(&queued(kept)).unwrap();
        store.flush_blocking().unwrap();
    }

    let server = ChildServer::start(dir.path(), &ENV);
    let api = server.client();
    crate::support::eventually(
        "the webhook actors to start",
        Duration::from_secs(30),
        async || {
            let (_, health) = api.call("GET", "/healthz", None, None).await;
            (health["webhook_actors"] == 1).then_some(())
        },
    )
    .await;
    assert!(server.terminate().success());
    let store = Store::open(&dir.path().join("data")).unwrap();
    assert!(
        store.queued_deliveries(deleted).unwrap().is_empty(),
        "the orphan is gone"
    );
    assert_eq!(
        store.queued_deliveries(kept).unwrap().len(),
        1,
        "the live webhook's delivery stays"
    );
}

#[test]
fn bad_config_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .current_dir(dir.path())
        .env("HOOKRELAY_DELIVERY__MAX_IN_FLIGHT", "many")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HOOKRELAY_DELIVERY__MAX_IN_FLIGHT"), "{err}");
}

/// A first attempt of `event` for `webhook_id`, as ingest makes it.
fn first_attempt(webhook_id: Uuid, event: Uuid) -> QueuedDelivery {
    QueuedDelivery {
        event_id: event,
        only_in_event: true,
        ..queued(webhook_id)
    }
}

fn stored_event(id: Uuid) -> StoredEvent {
    StoredEvent {
        id,
        event: "desktop.app_tracking.captured".into(),
        organisation_id: Uuid::nil(),
        user_id: None,
        team_id: None,
        received_at: 0,
    }
}

fn delivered_entry(d: &QueuedDelivery) -> LogEntry {
    let result = AttemptResult {
        status_code: Some(200),
        ..Default::default()
    };
    LogEntry::of_attempt(
        (d.id, d.event_id, &d.event),
        1,
        Outcome::Delivered,
        result,
        None,
    )
}

#[actix_web::test]
async fn a_restart_queues_first_attempts_that_a_crash_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let hook = inactive_webhook(dir.path()).await;

    // What a process leaves when it dies: an old event whose delivery was
    // settled, and a newer one whose four deliveries are in every state.
    let (old, lost, logged, retrying, orphan);
    {
        let store = Store::open(&dir.path().join("data")).unwrap();
        let event = store.open_event(1);
        old = first_attempt(hook, event);
        store
            .insert_event(&stored_event(event), b"{}", std::slice::from_ref(&old))
            .unwrap();
        store.settle(event); // judged; its log entry is not needed here

        let event = store.open_event(4);
        (lost, logged, retrying) = (
            first_attempt(hook, event),
            first_attempt(hook, event),
            first_attempt(hook, event),
        );
        orphan = first_attempt(Uuid::now_v7(), event);
        let all = [
            lost.clone(),
            logged.clone(),
            retrying.clone(),
            orphan.clone(),
        ];
        store
            .insert_event(&stored_event(event), b"{}", &all)
            .unwrap();
        store
            .append_log(hook, &mut [delivered_entry(&logged)])
            .unwrap();
        let retry = QueuedDelivery {
            attempts: 1,
            next_attempt_at: 99,
            only_in_event: false,
            ..retrying.clone()
        };
        store.put_delivery(&retry).unwrap();
        store.flush_blocking().unwrap();
    }

    let store = Store::open(&dir.path().join("data")).unwrap();
    let mut queued: Vec<(Uuid, u32)> = store
        .queued_deliveries(hook)
        .unwrap()
        .iter()
        .map(|d| (d.id, d.attempts))
        .collect();
    queued.sort();
    let mut expected = vec![(lost.id, 0), (retrying.id, 1)];
    expected.sort();
    assert_eq!(
        queued, expected,
        "only the first attempt with no trace is queued again, next to the stored retry \
         (not the one below the watermark, the logged one, or the deleted webhook's)"
    );
    assert_eq!(store.queue_len(), 2);
}

#[actix_web::test]
async fn a_restart_queues_first_attempts_of_an_event_routed_to_hundreds_of_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let hook = inactive_webhook(dir.path()).await;

    // Past 128 routes a record keeps them apart from itself, 256 to a
    // chunk: one lost first attempt in the first chunk, one in the second,
    // among routes to webhooks since deleted.
    let (first, second);
    {
        let store = Store::open(&dir.path().join("data")).unwrap();
        let event = store.open_event(300);
        let mut all: Vec<QueuedDelivery> = (0..300)
            .map(|_| first_attempt(Uuid::now_v7(), event))
            .collect();
        (first, second) = (first_attempt(hook, event), first_attempt(hook, event));
        (all[3], all[290]) = (first.clone(), second.clone());
        store
            .insert_event(&stored_event(event), b"{}", &all)
            .unwrap();
        store.flush_blocking().unwrap();
    }

    let store = Store::open(&dir.path().join("data")).unwrap();
    let mut queued: Vec<Uuid> = store
        .queued_deliveries(hook)
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    queued.sort();
    let mut expected = vec![first.id, second.id];
    expected.sort();
    assert_eq!(queued, expected, "both, from either chunk of routes");
    assert_eq!(store.queue_len(), 2, "none for the deleted webhooks");
    let (_, body) = store.event(first.event_id).unwrap().unwrap();
    assert_eq!(body, b"{}");
}
