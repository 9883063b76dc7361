//! Sample payloads for simulations (SPEC §7): the seed 000 structures for
//! the desktop events field for field, a realistic sample for every
//! Trackelio event, and a plain one for catalog entries added by config.
//! Every sample has fresh UUIDs, current times and `"simulation": true`.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::clock::iso;

pub const IMAGE_PLACEHOLDER: &str = "[simulation-placeholder: binary image buffer not included]";

fn id() -> String {
    Uuid::new_v4().to_string()
}

/// The payload a simulation of `event` sends for organisation `org`.
pub fn sample(event: &str, org: Uuid, now_ms: u64) -> Value {
    let data = match event {
        "desktop.app_tracking.captured" => json!([app_tracking(org, now_ms)]),
        "desktop.screenshot_tracking.captured" => json!([screenshot(org, now_ms)]),
        "desktop.activity_tracking.captured" => json!({
            "organisation": {"organisationId": org.to_string()},
            "team": {"teamId": id()},
            "user": {"userId": id()},
            "activity": {"workMode": true}
        }),
        other => trackelio(other, org, now_ms),
    };
    let mut payload = json!({
        "event": event,
        "version": "v1",
        "agent": "desktop-agent",
        "simulation": true,
        "timestamp": now_ms,
        "data": data,
    });
    if !event.starts_with("desktop.") {
        // Trackelio receivers read the event name from `type`.
        payload["type"] = json!(event);
        payload.as_object_mut().map(|o| o.shift_remove("agent"));
    }
    payload
}

fn people(org: Uuid) -> Value {
    json!({
        "organisation": {"organisationId": org.to_string()},
        "team": {"teamId": id()},
        "user": {"userId": id()},
    })
}

fn chrome(productivity: &str) -> Value {
    json!({
        "name": "Google Chrome",
        "type": "website",
        "category": "Unknown Category",
        "iconUrl": "https://www.google.com/favicon.ico",
        "domain": "google.com",
        "fullUrl": "https://www.google.com",
        "productivityStatus": productivity
    })
}

fn app_tracking(org: Uuid, now: u64) -> Value {
    let mut item = people(org);
    item["tracking"] = json!({
        "trackingId": id(),
        "app": chrome("neutral"),
        "time": {
            "startDate": iso(now.saturating_sub(20_000)),
            "endDate": iso(now),
            "durationInSeconds": 20
        },
        "trackingMode": "online",
        "operatingSystem": "macos"
    });
    item
}

fn screenshot(org: Uuid, now: u64) -> Value {
    let mut item = people(org);
    item["screenshot"] = json!({
        "screenshotId": id(),
        "imageBuffer": IMAGE_PLACEHOLDER,
        "app": chrome("productive"),
        "time": {"capturedAt": iso(now)},
        "operatingSystem": "macos",
        "workType": "remote",
        "isIdle": false
    });
    item
}

fn member(name: &str, email: &str) -> Value {
    json!({"userId": id(), "name": name, "email": email})
}

fn trackelio(event: &str, org: Uuid, now: u64) -> Value {
    let post = json!({
        "postId": id(),
        "title": "Dark mode for the dashboard",
        "content": "It would be great to have a dark theme for late-night work.",
        "status": "open",
        "source": "widget",
        "board": {"boardId": id(), "name": "Feature Requests"},
        "author": member("Jane Doe", "jane@example.com"),
        "createdAt": iso(now)
    });
    let detail = match event {
        "post.created" => json!({"post": post}),
        "post.status_changed" => json!({
            "post": post, "previousStatus": "open", "status": "in_progress",
            "changedBy": member("Sam Lee", "sam@example.com"), "changedAt": iso(now)
        }),
        "post.assigned" => json!({
            "post": post, "assignee": member("Sam Lee", "sam@example.com"),
            "assignedBy": member("Alex Kim", "alex@example.com"), "assignedAt": iso(now)
        }),
        "comment.created" => json!({"comment": {
            "commentId": id(), "postId": id(), "content": "+1, my eyes would thank you.",
            "author": member("Jane Doe", "jane@example.com"), "createdAt": iso(now)
        }}),
        "nps.submitted" => json!({"response": {
            "responseId": id(), "score": 9, "comment": "Does what it says.",
            "respondent": member("Jane Doe", "jane@example.com"), "submittedAt": iso(now)
        }}),
        "csat.submitted" => json!({"response": {
            "responseId": id(), "rating": 5, "scale": 5, "comment": "Quick and friendly.",
            "conversationId": id(), "respondent": member("Jane Doe", "jane@example.com"), "submittedAt": iso(now)
        }}),
        "conversation.completed" => json!({"conversation": {
            "conversationId": id(), "channel": "messenger", "status": "resolved",
            "assignee": member("Sam Lee", "sam@example.com"), "messageCount": 12,
            "startedAt": iso(now.saturating_sub(600_000)), "completedAt": iso(now), "durationInSeconds": 600
        }}),
        _ => json!({}),
    };
    let mut data = json!({"organisation": {"organisationId": org.to_string()}});
    if let (Some(d), Some(extra)) = (data.as_object_mut(), detail.as_object()) {
        d.extend(extra.clone());
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desktop_samples_follow_seed_000() {
        let org = Uuid::new_v4();
        let app = sample("desktop.app_tracking.captured", org, 1_716_000_000_000);
        assert_eq!(app["simulation"], true);
        assert_eq!(
            (app["version"].as_str(), app["agent"].as_str()),
            (Some("v1"), Some("desktop-agent"))
        );
        assert_eq!(
            app["data"][0]["organisation"]["organisationId"],
            org.to_string()
        );
        assert_eq!(
            app["data"][0]["tracking"]["time"]["startDate"],
            "2024-05-18T02:39:40.000Z"
        );
        assert_eq!(app["data"][0]["tracking"]["time"]["durationInSeconds"], 20);
        let shot = sample(
            "desktop.screenshot_tracking.captured",
            org,
            1_716_000_000_000,
        );
        assert_eq!(
            shot["data"][0]["screenshot"]["imageBuffer"],
            IMAGE_PLACEHOLDER
        );
        assert_eq!(shot["data"][0]["screenshot"]["isIdle"], false);
        let activity = sample("desktop.activity_tracking.captured", org, 0);
        assert!(activity["data"].is_object());
        assert_eq!(activity["data"]["activity"]["workMode"], true);
        let keys: Vec<&String> = app.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "event",
                "version",
                "agent",
                "simulation",
                "timestamp",
                "data"
            ]
        );
    }

    #[test]
    fn fresh_ids_each_time() {
        let org = Uuid::new_v4();
        let a = sample("desktop.app_tracking.captured", org, 0);
        let b = sample("desktop.app_tracking.captured", org, 0);
        assert_ne!(
            a["data"][0]["tracking"]["trackingId"],
            b["data"][0]["tracking"]["trackingId"]
        );
    }

    #[test]
    fn every_trackelio_event_has_its_own_detail() {
        for e in [
            "post.created",
            "post.status_changed",
            "post.assigned",
            "comment.created",
            "nps.submitted",
            "csat.submitted",
            "conversation.completed",
        ] {
            let s = sample(e, Uuid::new_v4(), 0);
            assert_eq!(
                (s["type"].as_str(), s["simulation"].as_bool()),
                (Some(e), Some(true))
            );
            assert!(
                s["data"].as_object().unwrap().len() >= 2,
                "{e} has a detail object"
            );
        }
    }
}
