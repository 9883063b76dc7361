//! Interop with the seed documents' own Node.js receivers: the seed 001
//! receiver (verifies JSON.stringify of the parsed body), the seed 002
//! form (raw body), seed 004's Trackelio check, and the official Standard
//! Webhooks library. Every event type and a corpus of awkward payloads must
//! verify at every one of them.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{eventually, log_of, TestServer};

/// The Node receivers, installed from the committed lock file on first use.
pub struct NodeReceivers {
    child: Child,
    pub base: String,
}

impl Drop for NodeReceivers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

impl NodeReceivers {
    pub fn start() -> NodeReceivers {
        let dir = interop_dir();
        crate::support::npm_ci(&dir, "express");
        let mut child = Command::new("node")
            .arg("receivers.mjs")
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("node is needed for the interop tests");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(port) = line.strip_prefix("listening ") {
                    let _ = tx.send(port.to_string());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("node receivers started");
        NodeReceivers {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn set_secrets(&self, secrets: Value) {
        let mut resp = awc::Client::default()
            .post(format!("{}/__env", self.base))
            .send_json(&secrets)
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.body().await);
    }
}

/// Raw JSON texts (so duplicate keys and odd number spellings survive).
fn awkward_payloads(org: &str) -> Vec<String> {
    let deep_open = "[{\"d\":".repeat(50);
    let deep_close = "}]".repeat(50);
    let values = [
        "[0.1, 0.2, 1.0, -0.0, 1.5e300, 2.2250738585072014e-308, 123.456e2, 1E21, 1e-7, 0.000001, 5e-324, 0.30000000000000004]".to_string(),
        "[1e2, 1E+2, 1e-2, 12e20, 9007199254740991, -9007199254740991, 100000000000000000000.0e0, 4.35, 1.7976931348623157e308]".to_string(),
        r#""héllo wörld — 日本語 😀 \u00e9 \ud83d\ude00 \u0301e""#.to_string(),
        r#""\u0000\u0001\u001f\b\f\n\r\t\u007f\u2028\u2029 \" \\ \/ </script>""#.to_string(),
        r#"{"b":1,"10":2,"2":3,"a":4,"01":5,"-1":6,"4294967295":7,"4294967294":8,"0":9,"1.5":10}"#.to_string(),
        r#"{"a":1,"b":2,"a":{"c":3,"c":[1,2]},"b":null}"#.to_string(),
        format!("{deep_open}0{deep_close}"),
        r#"{"":"","empty":{},"list":[],"t":true,"f":false,"n":null}"#.to_string(),
        r#"{"__proto__":{"polluted":1},"constructor":{"prototype":1}}"#.to_string(),
    ];
    values
        .iter()
        .map(|v| {
            format!(
                r#"{{"event":"desktop.app_tracking.captured","version":"v1","agent":"desktop-agent","timestamp":1716000000000,"data":[{{"organisation":{{"organisationId":"{org}"}},"team":{{"teamId":"t"}},"user":{{"userId":"u"}},"x":{v}}}]}}"#
            )
        })
        .collect()
}

fn event_of(name: &str, org: &str) -> Value {
    let item = json!({"organisation": {"organisationId": org}, "team": {"teamId": "t1"}, "user": {"userId": "u1"}, "n": 1.50});
    let data = if name == "desktop.activity_tracking.captured" || !name.starts_with("desktop") {
        item
    } else {
        json!([item])
    };
    json!({"event": name, "type": name, "version": "v1", "agent": "desktop-agent", "timestamp": 1716000000000u64, "data": data})
}

fn screenshot_of(org: &str, bytes: usize) -> Value {
    use base64::Engine;
    let raw: Vec<u8> = (0..bytes * 3 / 4).map(|i| (i * 31 % 251) as u8).collect();
    let mut e = event_of("desktop.screenshot_tracking.captured", org);
    e["data"][0]["screenshot"] = json!({
        "screenshotId": uuid::Uuid::new_v4().to_string(),
        "imageBuffer": base64::engine::general_purpose::STANDARD.encode(raw),
    });
    e
}

#[actix_web::test]
async fn seed_receivers_verify_every_delivery() {
    let node = NodeReceivers::start();
    let s = TestServer::start_with(|c| c.catalog.trackelio = true).await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let mut hooks = Vec::new();
    for (path, scheme, env) in [
        ("reseller", "trackpilots", "RESELLER_WEBHOOK_SECRET"),
        ("trackpilots", "trackpilots", "WEBHOOK_SECRET"),
        ("trackelio", "trackelio", "TRACKELIO_SECRET"),
        ("standard", "standard-webhooks", "STANDARD_SECRET"),
    ] {
        let url = format!("{}/webhooks/{path}", node.base);
        let (status, w) = s
            .call(
                "POST",
                "/v1/webhooks",
                Some(&key),
                Some(
                    json!({"name": path, "url": url, "events": ["*"], "signature_scheme": scheme}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{w}");
        hooks.push((path, env, w));
    }
    let secrets: serde_json::Map<String, Value> = hooks
        .iter()
        .map(|(_, env, w)| (env.to_string(), w["secret"].clone()))
        .collect();
    node.set_secrets(Value::Object(secrets)).await;

    // Every event type the shipped catalog has (both groups are on here).
    let mut bodies: Vec<Vec<u8>> = hookrelay::config::default_event_types()
        .iter()
        .map(|t| serde_json::to_vec(&event_of(&t.name, &org)).unwrap())
        .collect();
    assert_eq!(bodies.len(), 10);
    bodies.extend(awkward_payloads(&org).into_iter().map(String::into_bytes));
    bodies.push(serde_json::to_vec(&screenshot_of(&org, 5 * 1024 * 1024)).unwrap());
    for body in &bodies {
        let (status, resp) = s
            .raw(
                "POST",
                "/v1/events",
                Some(&key),
                Some("application/json"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            status,
            202,
            "{resp} for {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    for (path, _, w) in &hooks {
        let id = w["id"].as_str().unwrap();
        let log = eventually(
            &format!("{} attempts at {path}", bodies.len()),
            Duration::from_secs(60),
            async || {
                let log = log_of(&s, &key, id).await;
                (log.len() >= bodies.len()).then_some(log)
            },
        )
        .await;
        let refused: Vec<String> = log
            .iter()
            .filter(|e| e["outcome"] != "delivered")
            .map(|e| format!("{} {} {}", e["event"], e["status_code"], e["response_body"]))
            .collect();
        assert!(
            refused.is_empty(),
            "the {path} receiver refused: {refused:#?}"
        );
        assert_eq!(log.len(), bodies.len(), "{path}: one attempt each");
    }
}
