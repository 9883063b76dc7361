//! The OpenAPI document against the running server: every SPEC §4 route
//! is described, every described operation is really routed, and every
//! schema reference resolves.

use serde_json::Value;

use crate::support::{TestServer, ADMIN_KEY};

/// SPEC §4's table (plus this document itself).
const SPEC_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/organisations"),
    ("get", "/v1/organisations"),
    ("get", "/v1/organisations/{id}"),
    ("get", "/v1/event-types"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("get", "/v1/webhooks/{id}"),
    ("patch", "/v1/webhooks/{id}"),
    ("delete", "/v1/webhooks/{id}"),
    ("get", "/v1/webhooks/{id}/secret"),
    ("post", "/v1/webhooks/{id}/secret/rotate"),
    ("get", "/v1/webhooks/{id}/deliveries"),
    (
        "post",
        "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
    ),
    ("get", "/v1/webhooks/{id}/simulations/preview"),
    ("post", "/v1/webhooks/{id}/simulations"),
    ("post", "/v1/events"),
    ("post", "/v1/feed/tickets"),
    ("get", "/v1/feed"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
];

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[actix_web::test]
async fn the_document_matches_the_routes() {
    let s = TestServer::start().await;
    let (status, doc) = s.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in SPEC_ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is not documented"
        );
    }

    let mut documented = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            documented += 1;
            let concrete = path
                .replace("{id}", &uuid::Uuid::new_v4().to_string())
                .replace("{delivery_id}", &uuid::Uuid::new_v4().to_string());
            let body = matches!(method.as_str(), "post" | "patch").then(|| b"{}".to_vec());
            let (status, resp) = s
                .raw(
                    &method.to_uppercase(),
                    &concrete,
                    Some(ADMIN_KEY),
                    Some("application/json"),
                    body,
                )
                .await;
            let unrouted =
                status == 405 || (status == 404 && resp["error"]["message"] == "no such route");
            assert!(
                !unrouted,
                "{method} {path} is documented but not routed ({status} {resp})"
            );
        }
    }
    assert!(documented >= SPEC_ROUTES.len());

    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
}
