//! The webhooks API: validation of every §3 rule, CRUD, secrets.

use serde_json::{json, Value};

use crate::support::{all_pages, ids, TestServer, ADMIN_KEY};

/// (url, accepted?) with private targets NOT allowed.
const URLS: &[(&str, bool)] = &[
    ("https://example.com/hook", true),
    ("https://api.example.com:8443/v1/events?x=1", true),
    ("https://8.8.8.8/hook", true),
    ("https://[2606:4700::1111]/hook", true),
    ("https://xn--bcher-kva.example/", true),
    ("https://localhost.example.com/", true),
    ("https://172.32.0.1/", true),
    ("http://example.com/hook", false),
    ("ftp://example.com/hook", false),
    ("example.com/hook", false),
    ("/relative/path", false),
    ("", false),
    ("https://", false),
    ("https://localhost/hook", false),
    ("https://LOCALHOST./hook", false),
    ("https://api.localhost/hook", false),
    ("https://127.0.0.1/hook", false),
    ("https://127.1/hook", false),
    ("https://2130706433/hook", false),
    ("https://0x7f000001/hook", false),
    ("https://0177.0.0.1/hook", false),
    ("https://0x7f.0.0.1/hook", false),
    ("https://10.0.0.5/hook", false),
    ("https://172.16.0.1/hook", false),
    ("https://172.31.255.255/hook", false),
    ("https://192.168.1.10/hook", false),
    ("https://169.254.169.254/latest/meta-data", false),
    ("https://100.64.0.1/hook", false),
    ("https://0.0.0.0/hook", false),
    ("https://224.0.0.1/hook", false),
    ("https://192.0.2.1/hook", false),
    ("https://198.51.100.1/hook", false),
    ("https://203.0.113.1/hook", false),
    ("https://[::1]/hook", false),
    ("https://[::]/hook", false),
    ("https://[fe80::1]/hook", false),
    ("https://[fc00::1]/hook", false),
    ("https://[fd00::1]/hook", false),
    ("https://[ff02::1]/hook", false),
    ("https://[2001:db8::1]/hook", false),
    ("https://[::ffff:127.0.0.1]/hook", false),
    ("https://[::ffff:7f00:1]/hook", false),
    ("https://[::ffff:192.168.0.1]/hook", false),
    ("https://user:pass@example.com/hook", false),
    ("https://user@example.com/hook", false),
];

#[actix_web::test]
async fn url_validation_table() {
    let s = TestServer::start_with(|c| c.delivery.allow_private_targets = false).await;
    let (_, key) = s.org("acme", "organisation", None).await;
    for (url, accepted) in URLS {
        let (status, body) = s
            .call(
                "POST",
                "/v1/webhooks",
                Some(&key),
                Some(json!({"name": "n", "url": url, "events": ["*"]})),
            )
            .await;
        if *accepted {
            assert_eq!(status, 201, "{url} should be accepted: {body}");
        } else {
            assert_eq!(status, 400, "{url} should be refused: {body}");
            assert_eq!(body["error"]["field"], "url", "{url}: {body}");
            assert_eq!(body["error"]["code"], "validation_failed");
        }
    }
    let (_, list) = s.call("GET", "/v1/webhooks", Some(&key), None).await;
    let accepted = URLS.iter().filter(|(_, a)| *a).count();
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        accepted,
        "refused URLs stored nothing"
    );
}

#[actix_web::test]
async fn allow_private_targets_lifts_only_https_and_address_rules() {
    let s = TestServer::start().await; // allow_private_targets = true
    let (_, key) = s.org("acme", "organisation", None).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:3000/x",
        "https://[::1]/",
    ] {
        let (status, body) = s
            .call(
                "POST",
                "/v1/webhooks",
                Some(&key),
                Some(json!({"name": "n", "url": url, "events": ["*"]})),
            )
            .await;
        assert_eq!(status, 201, "{url}: {body}");
    }
    for url in ["http://user:pw@127.0.0.1/", "ftp://127.0.0.1/", "not a url"] {
        let (status, _) = s
            .call(
                "POST",
                "/v1/webhooks",
                Some(&key),
                Some(json!({"name": "n", "url": url, "events": ["*"]})),
            )
            .await;
        assert_eq!(status, 400, "{url}");
    }
}

#[actix_web::test]
async fn name_and_events_validation() {
    let s = TestServer::start().await;
    let (_, key) = s.org("acme", "organisation", None).await;
    let cases = [
        (
            json!({"name": "", "url": "http://127.0.0.1/", "events": ["*"]}),
            "name",
        ),
        (
            json!({"name": "   ", "url": "http://127.0.0.1/", "events": ["*"]}),
            "name",
        ),
        (
            json!({"name": "x".repeat(101), "url": "http://127.0.0.1/", "events": ["*"]}),
            "name",
        ),
        (
            json!({"name": "a\u{0}b", "url": "http://127.0.0.1/", "events": ["*"]}),
            "name",
        ),
        (
            json!({"name": "line\nbreak", "url": "http://127.0.0.1/", "events": ["*"]}),
            "name",
        ),
        (
            json!({"name": "\u{1b}[31mred", "url": "http://127.0.0.1/", "events": ["*"]}),
            "name",
        ),
        (
            json!({"name": "ok", "url": "http://127.0.0.1/", "events": []}),
            "events",
        ),
        (
            json!({"name": "ok", "url": "http://127.0.0.1/", "events": ["desktop.nope"]}),
            "events",
        ),
        (
            json!({"name": "ok", "url": "http://127.0.0.1/", "events": ["post.created"]}),
            "events",
        ),
    ];
    for (body, field) in cases {
        let (status, resp) = s
            .call("POST", "/v1/webhooks", Some(&key), Some(body.clone()))
            .await;
        assert_eq!(
            (status, resp["error"]["field"].as_str()),
            (400, Some(field)),
            "{body} -> {resp}"
        );
    }
    let ok = json!({"name": "😀".repeat(100), "url": "http://127.0.0.1/", "events": ["desktop.app_tracking.captured"]});
    assert_eq!(
        s.call("POST", "/v1/webhooks", Some(&key), Some(ok)).await.0,
        201
    );
}

#[actix_web::test]
async fn trackelio_catalog_is_switched_by_config() {
    let s = TestServer::start_with(|c| c.catalog.trackelio = true).await;
    let (_, key) = s.org("acme", "organisation", None).await;
    let (_, types) = s.call("GET", "/v1/event-types", Some(&key), None).await;
    let names: Vec<&str> = types["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 10);
    assert!(
        names.contains(&"post.created") && names.contains(&"desktop.activity_tracking.captured")
    );
    s.webhook(
        &key,
        "http://127.0.0.1:1/",
        json!(["post.created", "nps.submitted"]),
    )
    .await;
    let plain = TestServer::start().await;
    let (_, types) = plain
        .call("GET", "/v1/event-types", Some(ADMIN_KEY), None)
        .await;
    assert_eq!(types["data"].as_array().unwrap().len(), 3);
}

#[actix_web::test]
async fn crud_and_secrets() {
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let created = s.webhook(&key, "http://127.0.0.1:1/a", json!(["*"])).await;
    let id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 64);
    assert_eq!(
        created["secret_masked"],
        format!("{}{}", &secret[..8], "•".repeat(24))
    );
    assert_eq!(created["organisation_id"], org.as_str());
    assert_eq!(
        (created["active"].as_bool(), created["status"].as_str()),
        (Some(true), Some("enabled"))
    );
    assert_eq!(created["signature_scheme"], "trackpilots");

    let second = s
        .webhook(
            &key,
            "http://127.0.0.1:1/b",
            json!(["desktop.app_tracking.captured"]),
        )
        .await;
    let (_, list) = s.call("GET", "/v1/webhooks", Some(&key), None).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![second["id"].as_str().unwrap(), id],
        "newest first"
    );

    let (status, patched) = s
        .call("PATCH", &format!("/v1/webhooks/{id}"), Some(&key),
            Some(json!({"name": "renamed", "active": false, "ordered": true, "events": ["desktop.activity_tracking.captured"]})))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (
            patched["name"].as_str(),
            patched["active"].as_bool(),
            patched["ordered"].as_bool()
        ),
        (Some("renamed"), Some(false), Some(true))
    );
    assert!(patched.get("secret").is_none());
    let (status, bad) = s
        .call(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(&key),
            Some(json!({"url": "ftp://x"})),
        )
        .await;
    assert_eq!((status, bad["error"]["field"].as_str()), (400, Some("url")));
    // null is not "leave it": refused, naming the field, not a silent 200.
    for field in ["name", "url", "events", "active", "status"] {
        let mut body = json!({"name": "nulled"});
        body[field] = Value::Null;
        let (status, bad) = s
            .call(
                "PATCH",
                &format!("/v1/webhooks/{id}"),
                Some(&key),
                Some(body),
            )
            .await;
        assert_eq!(
            (status, bad["error"]["field"].as_str()),
            (400, Some(field)),
            "{bad}"
        );
    }
    let (_, got) = s
        .call("GET", &format!("/v1/webhooks/{id}"), Some(&key), None)
        .await;
    assert_eq!(got["name"], "renamed", "a refused PATCH changed nothing");

    let (_, revealed) = s
        .call(
            "GET",
            &format!("/v1/webhooks/{id}/secret"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(revealed["secret"], secret.as_str());
    let (_, rotated) = s
        .call(
            "POST",
            &format!("/v1/webhooks/{id}/secret/rotate"),
            Some(&key),
            None,
        )
        .await;
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    let (_, revealed) = s
        .call(
            "GET",
            &format!("/v1/webhooks/{id}/secret"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(revealed["secret"], new_secret);

    let (status, _) = s
        .call(
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(&key),
            Some(json!({"signature_scheme": "standard-webhooks"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, revealed) = s
        .call(
            "GET",
            &format!("/v1/webhooks/{id}/secret"),
            Some(&key),
            None,
        )
        .await;
    assert!(revealed["secret"].as_str().unwrap().starts_with("whsec_"));

    assert_eq!(
        s.call("DELETE", &format!("/v1/webhooks/{id}"), Some(&key), None)
            .await
            .0,
        204
    );
    assert_eq!(
        s.call("GET", &format!("/v1/webhooks/{id}"), Some(&key), None)
            .await
            .0,
        404
    );
    assert_eq!(
        s.call("DELETE", &format!("/v1/webhooks/{id}"), Some(&key), None)
            .await
            .0,
        404
    );
}

/// No list or get response ever carries a whole secret, nor any run of it
/// longer than the 8 characters of the mask.
#[actix_web::test]
async fn list_and_get_never_reveal_secrets() {
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let mut secrets = Vec::new();
    for scheme in [
        "trackpilots",
        "trackelio",
        "standard-webhooks",
        "trackpilots",
        "trackelio",
    ] {
        let (status, w) = s
            .call("POST", "/v1/webhooks", Some(&key),
                Some(json!({"name": "n", "url": "http://127.0.0.1:1/", "events": ["*"], "signature_scheme": scheme})))
            .await;
        assert_eq!(status, 201);
        secrets.push((
            w["id"].as_str().unwrap().to_string(),
            w["secret"].as_str().unwrap().to_string(),
        ));
    }
    let mut texts = vec![s
        .call("GET", "/v1/webhooks", Some(&key), None)
        .await
        .1
        .to_string()];
    texts.push(
        s.call("GET", "/v1/webhooks", Some(ADMIN_KEY), None)
            .await
            .1
            .to_string(),
    );
    for (id, _) in &secrets {
        texts.push(
            s.call("GET", &format!("/v1/webhooks/{id}"), Some(&key), None)
                .await
                .1
                .to_string(),
        );
        texts.push(
            s.call("GET", &format!("/v1/organisations/{org}"), Some(&key), None)
                .await
                .1
                .to_string(),
        );
    }
    for (_, secret) in &secrets {
        let chars: Vec<char> = secret.chars().collect();
        for window in chars.windows(9) {
            let run: String = window.iter().collect();
            for t in &texts {
                assert!(!t.contains(&run), "a response reveals {run:?} of a secret");
            }
        }
    }
}

#[actix_web::test]
async fn admin_creates_webhooks_for_a_named_organisation() {
    let s = TestServer::start().await;
    let (org, key) = s.org("acme", "organisation", None).await;
    let body = json!({"name": "n", "url": "http://127.0.0.1:1/", "events": ["*"]});
    let (status, resp) = s
        .call("POST", "/v1/webhooks", Some(ADMIN_KEY), Some(body.clone()))
        .await;
    assert_eq!(
        (status, resp["error"]["field"].as_str()),
        (400, Some("organisation_id"))
    );
    let mut named = body.clone();
    named["organisation_id"] = Value::from(org.clone());
    let (status, resp) = s
        .call("POST", "/v1/webhooks", Some(ADMIN_KEY), Some(named))
        .await;
    assert_eq!(status, 201, "{resp}");
    let (_, list) = s.call("GET", "/v1/webhooks", Some(&key), None).await;
    assert_eq!(list["data"][0]["id"], resp["id"]);
}

#[actix_web::test]
async fn the_list_pages_newest_first_within_scope() {
    let s = TestServer::start().await;
    let (_, a) = s.org("a", "organisation", None).await;
    let (_, b) = s.org("b", "organisation", None).await;
    for key in [&a, &b, &a, &a, &b, &a, &a] {
        s.webhook(key, "http://127.0.0.1:1/", json!(["*"])).await;
    }
    for (key, total) in [(a.as_str(), 5), (ADMIN_KEY, 7)] {
        let (_, whole) = s.call("GET", "/v1/webhooks", Some(key), None).await;
        assert_eq!(whole["next_before"], Value::Null);
        let whole = ids(&whole);
        assert_eq!(whole.len(), total);
        let pages = all_pages(&s, "/v1/webhooks", key, 2).await;
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), total, "{sizes:?}");
        assert!(sizes.iter().all(|&n| n == 2 || n == total % 2), "{sizes:?}");
        assert_eq!(pages.concat(), whole, "pages follow the list's order");
        let exact = all_pages(&s, "/v1/webhooks", key, total).await;
        assert_eq!(
            exact,
            vec![whole],
            "a page that ends the list has no cursor"
        );
    }
    for (query, code) in [
        ("limit=0", "validation_failed"),
        ("limit=1001", "validation_failed"),
        ("limit=abc", "invalid_query"),
        ("before=nope", "invalid_query"),
        ("colour=red", "invalid_query"),
    ] {
        let (status, body) = s
            .call("GET", &format!("/v1/webhooks?{query}"), Some(&a), None)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
}

#[actix_web::test]
async fn an_organisation_may_have_at_most_its_quota_of_webhooks() {
    let s = TestServer::start_with(|c| c.limits.webhooks_per_organisation = 5).await;
    let (_, key) = s.org("acme", "organisation", None).await;
    let (_, other) = s.org("globex", "organisation", None).await;
    let hook = json!({"name": "h", "url": "https://example.com/hook", "events": ["*"]});
    // Twenty at once: counted one at a time, so exactly five are stored.
    let answers = futures_util::future::join_all(
        (0..20).map(|_| s.call("POST", "/v1/webhooks", Some(&key), Some(hook.clone()))),
    )
    .await;
    let created: Vec<&Value> = answers
        .iter()
        .filter(|a| a.0 == 201)
        .map(|a| &a.1)
        .collect();
    assert_eq!(created.len(), 5, "{answers:?}");
    let refused = answers.iter().find(|a| a.0 != 201).unwrap();
    assert_eq!(refused.0, 422, "{refused:?}");
    assert_eq!(refused.1["error"]["code"], "webhook_limit_reached");
    let (_, list) = s.call("GET", "/v1/webhooks", Some(&key), None).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        5,
        "nothing refused was stored"
    );
    let (status, _) = s
        .call("POST", "/v1/webhooks", Some(&other), Some(hook.clone()))
        .await;
    assert_eq!(status, 201, "another organisation has its own quota");
    // A delete makes room again.
    let path = format!("/v1/webhooks/{}", created[0]["id"].as_str().unwrap());
    assert_eq!(s.call("DELETE", &path, Some(&key), None).await.0, 204);
    let (status, body) = s.call("POST", "/v1/webhooks", Some(&key), Some(hook)).await;
    assert_eq!(status, 201, "{body}");
}
