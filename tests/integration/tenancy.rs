//! SPEC §1 scope: organisations see only their own webhooks; resellers see
//! their children; the admin sees everything; out of scope is 404.

use serde_json::{json, Value};

use crate::support::{all_pages, ids, TestServer, ADMIN_KEY};

#[actix_web::test]
async fn organisations_cannot_touch_each_others_webhooks() {
    let s = TestServer::start().await;
    let (_, a) = s.org("a", "organisation", None).await;
    let (_, b) = s.org("b", "organisation", None).await;
    let hook = s.webhook(&b, "http://127.0.0.1:1/", json!(["*"])).await;
    let id = hook["id"].as_str().unwrap();
    let attempts = [
        ("GET", format!("/v1/webhooks/{id}"), None),
        (
            "PATCH",
            format!("/v1/webhooks/{id}"),
            Some(json!({"name": "stolen"})),
        ),
        ("DELETE", format!("/v1/webhooks/{id}"), None),
        ("GET", format!("/v1/webhooks/{id}/secret"), None),
        ("POST", format!("/v1/webhooks/{id}/secret/rotate"), None),
        ("GET", format!("/v1/webhooks/{id}/deliveries"), None),
    ];
    // Out of scope reads exactly as unknown or malformed: nothing tells
    // that the webhook exists.
    let (_, unknown) = s
        .call(
            "GET",
            &format!("/v1/webhooks/{}", uuid::Uuid::now_v7()),
            Some(&a),
            None,
        )
        .await;
    let (_, malformed) = s
        .call("GET", "/v1/webhooks/not-an-id", Some(&a), None)
        .await;
    assert_eq!(unknown, malformed);
    for (method, path, body) in attempts {
        let (status, resp) = s.call(method, &path, Some(&a), body).await;
        assert_eq!(
            (status, resp["error"]["code"].as_str()),
            (404, Some("webhook_not_found")),
            "{method} {path}"
        );
        assert_eq!(resp, unknown, "{method} {path}");
    }
    let (_, list) = s.call("GET", "/v1/webhooks", Some(&a), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let (_, still) = s
        .call("GET", &format!("/v1/webhooks/{id}"), Some(&b), None)
        .await;
    assert_eq!(
        (still["name"].as_str(), &still["secret_masked"]),
        (Some("hook"), &hook["secret_masked"])
    );
    let (_, secret) = s
        .call("GET", &format!("/v1/webhooks/{id}/secret"), Some(&b), None)
        .await;
    assert_eq!(
        secret["secret"], hook["secret"],
        "the secret was not rotated by A"
    );
}

#[actix_web::test]
async fn resellers_see_their_children_and_admin_sees_all() {
    let s = TestServer::start().await;
    let (reseller, rkey) = s.org("reseller", "reseller", None).await;
    let (child, ckey) = s.org("child", "organisation", Some(&reseller)).await;
    let (other, okey) = s.org("other", "organisation", None).await;
    let (status, made) = s
        .call(
            "POST",
            "/v1/organisations",
            Some(&rkey),
            Some(json!({"name": "child2", "kind": "organisation"})),
        )
        .await;
    assert_eq!(
        (status, made["reseller_id"].as_str()),
        (201, Some(reseller.as_str())),
        "{made}"
    );

    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, seen) = s.call("GET", "/v1/organisations", Some(&rkey), None).await;
    let seen = ids(&seen);
    assert!(
        seen.contains(&child) && seen.contains(&reseller) && !seen.contains(&other),
        "{seen:?}"
    );
    assert_eq!(
        s.call(
            "GET",
            &format!("/v1/organisations/{child}"),
            Some(&rkey),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        s.call(
            "GET",
            &format!("/v1/organisations/{other}"),
            Some(&rkey),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        s.call(
            "GET",
            &format!("/v1/organisations/{reseller}"),
            Some(&ckey),
            None
        )
        .await
        .0,
        404
    );
    let (_, own) = s.call("GET", "/v1/organisations", Some(&okey), None).await;
    assert_eq!(ids(&own), vec![other.clone()]);
    let (_, all) = s
        .call("GET", "/v1/organisations", Some(ADMIN_KEY), None)
        .await;
    assert_eq!(ids(&all).len(), 4);

    let hook = s.webhook(&ckey, "http://127.0.0.1:1/", json!(["*"])).await;
    let (_, admin_view) = s
        .call(
            "GET",
            &format!("/v1/webhooks/{}", hook["id"].as_str().unwrap()),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(admin_view["id"], hook["id"]);
    // Only the admin creates organisations outside a reseller's own tree.
    let (status, _) = s
        .call(
            "POST",
            "/v1/organisations",
            Some(&okey),
            Some(json!({"name": "x", "kind": "organisation"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = s
        .call(
            "POST",
            "/v1/organisations",
            Some(&rkey),
            Some(json!({"name": "x", "kind": "reseller"})),
        )
        .await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn keys_are_required_and_checked() {
    let s = TestServer::start().await;
    for key in [None, Some("nope"), Some("")] {
        let (status, body) = s.call("GET", "/v1/webhooks", key, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{key:?}"
        );
    }
    let (status, body) = s.call("GET", "/healthz", None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = s.raw("HEAD", "/healthz", None, None, None).await;
    assert_eq!((status, body), (200, Value::Null), "HEAD: the status alone");
}

#[actix_web::test]
async fn the_organisation_list_pages_newest_first_within_scope() {
    let s = TestServer::start().await;
    let (reseller, rkey) = s.org("r", "reseller", None).await;
    let mut made = vec![reseller.clone()];
    for i in 0..5 {
        made.push(
            s.org(&format!("c{i}"), "organisation", Some(&reseller))
                .await
                .0,
        );
    }
    let (other, okey) = s.org("o", "organisation", None).await;
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    let everyone = [vec![other.clone()], newest_first.clone()].concat();
    for (key, expected) in [
        (rkey.as_str(), newest_first),
        (ADMIN_KEY, everyone),
        (okey.as_str(), vec![other.clone()]),
    ] {
        let (_, whole) = s.call("GET", "/v1/organisations", Some(key), None).await;
        assert_eq!(whole["next_before"], Value::Null, "no limit, no cursor");
        assert_eq!(ids(&whole), expected);
        let pages = all_pages(&s, "/v1/organisations", key, 2).await;
        assert!(pages.iter().all(|p| p.len() <= 2), "{pages:?}");
        assert_eq!(pages.concat(), expected, "pages follow the list's order");
    }
    let past_own = format!("/v1/organisations?limit=5&before={other}");
    let (_, empty) = s.call("GET", &past_own, Some(&okey), None).await;
    assert_eq!(
        (ids(&empty).len(), &empty["next_before"]),
        (0, &Value::Null)
    );
    for (query, code) in [
        ("limit=0", "validation_failed"),
        ("limit=1001", "validation_failed"),
        ("before=nope", "invalid_query"),
        ("colour=red", "invalid_query"),
    ] {
        let path = format!("/v1/organisations?{query}");
        let (status, body) = s.call("GET", &path, Some(&rkey), None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
}
