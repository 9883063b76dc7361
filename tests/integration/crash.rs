//! `kill -9` mid-stream: every acknowledged event reaches every subscribed
//! receiver at least once after a restart on the same directory. The
//! receiver is slow, so at the kill most first attempts exist only in the
//! actors' memory and their events' records: the restart must find them.
//! Every fourth event is a screenshot whose body is stored in chunks; each
//! must arrive whole.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::support::{eventually, tracked_event, ChildServer, Receiver, ADMIN_KEY};

const WEBHOOKS: usize = 4;
const EVENTS: usize = 3000;
const KILL_AFTER: usize = 1000;
const CONCURRENCY: usize = 16;

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HOOKRELAY_AUTH__ADMIN_KEY", ADMIN_KEY),
        ("HOOKRELAY_DELIVERY__ALLOW_PRIVATE_TARGETS", "true"),
        (
            "HOOKRELAY_DELIVERY__RETRY_SCHEDULE_MS",
            "100,200,400,800,1600",
        ),
        ("HOOKRELAY_SERVER__WORKERS", "2"),
    ]
}

/// How long the receiver takes to answer: with `max_in_flight` 8 the four
/// webhooks take at most 1,600 deliveries/s, far fewer than ingest's.
const RECEIVER_DELAY_MS: u64 = 20;

/// The image of the screenshot event `tracking`: about 40 KB, made from
/// its id, so a body put together from the wrong chunks shows.
fn image_of(tracking: &str) -> String {
    format!("{tracking};").repeat(40_000 / (tracking.len() + 1))
}

/// The event sent as `tracking`: every fourth one a screenshot.
fn event_for(org_id: &str, tracking: &str, i: usize) -> Value {
    if !i.is_multiple_of(4) {
        return tracked_event("desktop.app_tracking.captured", org_id, tracking);
    }
    let mut e = tracked_event("desktop.screenshot_tracking.captured", org_id, tracking);
    e["data"][0]["imageBuffer"] = json!(image_of(tracking));
    e
}

/// (receiver path, trackingId) for every request the receiver saw, and how
/// many of those carried a screenshot other than their event's.
fn receipts(rx: &Receiver) -> (Vec<(String, String)>, usize) {
    let mut damaged = 0;
    let seen = rx
        .all()
        .into_iter()
        .filter_map(|r| {
            let body: Value = serde_json::from_slice(&r.body).ok()?;
            let tracking = body["data"][0]["tracking"]["trackingId"].as_str()?;
            if let Some(image) = body["data"][0]["imageBuffer"].as_str() {
                damaged += usize::from(image != image_of(tracking));
            }
            Some((r.path, tracking.to_string()))
        })
        .collect();
    (seen, damaged)
}

#[actix_web::test]
async fn kill_9_loses_no_acknowledged_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    rx.delay(RECEIVER_DELAY_MS);
    let server = ChildServer::start(dir.path(), &env());
    let api = server.client();
    let (org_id, key) = api.org("acme").await;
    for n in 0..WEBHOOKS {
        let url = format!("{}/{n}", rx.url);
        let (status, _) = api
            .call(
                "POST",
                "/v1/webhooks",
                Some(&key),
                Some(json!({"name": "w", "url": url, "events": ["*"]})),
            )
            .await;
        assert_eq!(status, 201);
    }

    // The ingest loop signals once KILL_AFTER events are acknowledged, just
    // before sending its next batch, so the kill lands mid-stream.
    let (kill_now, kill_signal) = std::sync::mpsc::channel::<()>();
    let pid = server.pid();
    let killer = std::thread::spawn(move || {
        let _ = kill_signal.recv_timeout(Duration::from_secs(300));
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    });
    let mut acknowledged = HashSet::new();
    let mut refused = 0;
    for batch in 0..EVENTS / CONCURRENCY {
        if acknowledged.len() >= KILL_AFTER {
            let _ = kill_now.send(());
        }
        let sends = (0..CONCURRENCY).map(|i| {
            let tracking = format!("t-{batch}-{i}");
            let event = event_for(&org_id, &tracking, i);
            let (api, key) = (&api, &key);
            async move {
                (
                    tracking,
                    api.try_call("POST", "/v1/events", Some(key), Some(event))
                        .await,
                )
            }
        });
        for (tracking, result) in join_all(sends).await {
            match result {
                Some((202, _)) => {
                    acknowledged.insert(tracking);
                }
                _ => refused += 1,
            }
        }
        if refused > 0 {
            break; // the server is gone
        }
    }
    let _ = kill_now.send(()); // in case the loop ended first
    killer.join().unwrap();
    drop(server);
    assert!(
        acknowledged.len() >= KILL_AFTER,
        "{} acknowledged",
        acknowledged.len()
    );

    let before_restart = rx.count();
    assert!(
        before_restart < acknowledged.len() * WEBHOOKS,
        "a backlog was waiting at the kill ({before_restart} received)"
    );

    let _restarted = ChildServer::start(dir.path(), &env());
    let counts = eventually(
        "every acknowledged event at every receiver",
        Duration::from_secs(300),
        async || {
            let mut counts: HashMap<(String, String), usize> = HashMap::new();
            for r in receipts(&rx).0 {
                *counts.entry(r).or_default() += 1;
            }
            let complete = acknowledged.iter().all(|t| {
                (0..WEBHOOKS).all(|n| counts.contains_key(&(format!("/hook/{n}"), t.clone())))
            });
            complete.then_some(counts)
        },
    )
    .await;
    assert_eq!(receipts(&rx).1, 0, "screenshots that arrived damaged");
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "crash test: {} acknowledged × {WEBHOOKS} webhooks delivered ({before_restart} before the restart); {duplicates} duplicate deliveries; {refused} requests refused by the killed server",
        acknowledged.len()
    );
}
