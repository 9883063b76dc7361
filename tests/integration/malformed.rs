//! Malformed requests get the JSON error shape and the right status, and
//! change nothing.

use serde_json::{json, Value};

use crate::support::{TestServer, ADMIN_KEY};

/// method, path, content type, body, expected status, expected code.
type Case<'a> = (&'a str, String, Option<&'a str>, Vec<u8>, u16, &'a str);

fn assert_error_shape(body: &Value, code: &str) {
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[actix_web::test]
async fn malformed_bodies_are_refused_and_change_nothing() {
    let s = TestServer::start().await;
    let (_, key) = s.org("acme", "organisation", None).await;
    let hook = s.webhook(&key, "http://127.0.0.1:1/", json!(["*"])).await;
    let id = hook["id"].as_str().unwrap();
    let (_, before) = s.call("GET", "/v1/webhooks", Some(&key), None).await;
    let json_ct = Some("application/json");
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/webhooks".into(),
            json_ct,
            b"{not json".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            json_ct,
            b"".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            json_ct,
            br#"{"name": "cut \ud83d", "url": "http://127.0.0.1/", "events": ["*"]}"#.to_vec(),
            422,
            "unrepresentable_string",
        ),
        (
            // A simulation's edited payload is any JSON, so it may nest.
            "POST",
            format!("/v1/webhooks/{id}/simulations"),
            json_ct,
            format!(
                r#"{{"event": "desktop.app_tracking.captured", "payload": {}1{}}}"#,
                "[".repeat(130),
                "]".repeat(130)
            )
            .into_bytes(),
            422,
            "nesting_too_deep",
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            json_ct,
            b"[]".to_vec(),
            400,
            "invalid_body",
        ),
        (
            // serde would read an array as the fields in order: a rename.
            "PATCH",
            format!("/v1/webhooks/{id}"),
            json_ct,
            br#"["renamed by position"]"#.to_vec(),
            400,
            "invalid_body",
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            json_ct,
            br#"{"name": 5, "url": "http://127.0.0.1/", "events": ["*"]}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            json_ct,
            br#"{"url": "http://127.0.0.1/", "events": ["*"]}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            json_ct,
            br#"{"name": "n", "url": "http://127.0.0.1/", "events": ["*"], "colour": "red"}"#
                .to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            json_ct,
            br#"{"name": "n", "url": "http://127.0.0.1/", "events": "*"}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            Some("text/plain"),
            br#"{"name": "n", "url": "http://127.0.0.1/", "events": ["*"]}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            None,
            br#"{"name": "n", "url": "http://127.0.0.1/", "events": ["*"]}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/webhooks".into(),
            json_ct,
            vec![b' '; 10 * 1024 * 1024],
            413,
            "payload_too_large",
        ),
        (
            "PATCH",
            format!("/v1/webhooks/{id}"),
            json_ct,
            br#"{"active": "yes"}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "PATCH",
            format!("/v1/webhooks/{id}"),
            json_ct,
            br#"{"secret": "mine"}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "PATCH",
            format!("/v1/webhooks/{id}"),
            json_ct,
            br#"{"status": "disabled"}"#.to_vec(),
            400,
            "validation_failed",
        ),
        (
            "PATCH",
            format!("/v1/webhooks/{id}"),
            json_ct,
            b"\xff\xfe".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/organisations".into(),
            json_ct,
            br#"{"name": "x", "kind": "emperor"}"#.to_vec(),
            400,
            "invalid_field",
        ),
        (
            "PUT",
            "/v1/webhooks".into(),
            json_ct,
            b"{}".to_vec(),
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            "/v1/nothing-here".into(),
            None,
            vec![],
            404,
            "not_found",
        ),
        (
            "GET",
            "/v1/webhooks/not-a-uuid".into(),
            None,
            vec![],
            404,
            "webhook_not_found",
        ),
        (
            "GET",
            format!("/v1/webhooks/{id}/deliveries?limit=abc"),
            None,
            vec![],
            400,
            "invalid_query",
        ),
        (
            "GET",
            format!("/v1/webhooks/{id}/deliveries?limit=0"),
            None,
            vec![],
            400,
            "validation_failed",
        ),
    ];
    for (method, path, ct, body, status, code) in cases {
        let (got, resp) = s.raw(method, &path, Some(&key), ct, Some(body)).await;
        assert_eq!(got, status, "{method} {path}: {resp}");
        assert_error_shape(&resp, code);
    }
    let (_, after) = s.call("GET", "/v1/webhooks", Some(&key), None).await;
    assert_eq!(before, after, "nothing changed");
    let (status, body) = s
        .call("POST", "/v1/webhooks", Some(&key), Some(json!({"url": 1})))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("url"))
    );
    // A missing field is named too, though serde reports it at its parent.
    let (status, body) = s
        .call(
            "POST",
            "/v1/organisations",
            Some(ADMIN_KEY),
            Some(json!({"name": "n"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("kind")),
        "{body}"
    );
}
