//! What the end-to-end benchmarks share: hookrelay started in-process on
//! 127.0.0.1:0 over a temporary store, with one organisation.

use hookrelay::app::Application;
use hookrelay::config::Config;
use serde_json::{json, Value};

pub const ADMIN: &str = "bench-admin-key-0123456789";

pub struct Hookrelay {
    pub base: String,
    pub org: String,
    pub key: String,
    _dir: tempfile::TempDir,
}

/// Starts a server (with `allow_private_targets` so loopback receivers
/// can be reached) and creates one organisation.
pub async fn start_hookrelay() -> Hookrelay {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::default();
    c.server.bind = "127.0.0.1:0".into();
    c.storage.path = dir.path().join("data");
    c.auth.admin_key = Some(ADMIN.into());
    c.delivery.allow_private_targets = true;
    c.feed.max_sessions_per_key = 0; // the feed benchmark opens 1,000 with one key
    let app = Application::build(c).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    let (org, key) = organisation(&base).await;
    Hookrelay {
        base,
        org,
        key,
        _dir: dir,
    }
}

/// A new organisation's (id, API key) on the server at `base`.
pub async fn organisation(base: &str) -> (String, String) {
    let mut r = awc::Client::default()
        .post(format!("{base}/v1/organisations"))
        .insert_header(("authorization", format!("Bearer {ADMIN}")))
        .send_json(&json!({"name": "bench", "kind": "organisation"}))
        .await
        .unwrap();
    let org: Value = r.json().await.unwrap();
    (
        org["id"].as_str().unwrap().into(),
        org["api_key"].as_str().unwrap().into(),
    )
}
