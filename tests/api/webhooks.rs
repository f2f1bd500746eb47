//! `/v1/webhooks` and the event endpoints that feed them: the signing secret shown once, reads,
//! updates, deletion, isolation, bad input named by param with nothing written, secret rotation,
//! the deliveries log, and `/v1/events` filters and retry.

use serde_json::{json, Value};

use crate::common::{spawn_app, spawn_app_with_live_stripe, Response, TestApp};

async fn create(app: &TestApp, body: Value) -> Response {
    app.post("/v1/webhooks", json!({ "webhook": body })).await
}

/// An endpoint on a loopback receiver (allowed over http in test mode); returns (id, full secret).
async fn endpoint(app: &TestApp, events: Value) -> (String, String) {
    let r = create(app, json!({"url": "http://127.0.0.1:9/hooks", "events": events})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let w = &r.body["webhook"];
    (w["webhook_id"].as_str().unwrap().to_string(), w["signing_secret"].as_str().unwrap().to_string())
}

async fn delete(app: &TestApp, key: &str, path: &str) -> Response {
    app.send(reqwest::Method::DELETE, path, Some(key), None, None).await
}

/// (status, event_id) of each delivery queued for `endpoint`.
async fn deliveries_of(app: &TestApp, endpoint: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT status, event_id FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY id")
        .bind(endpoint)
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap()
}

/// Creates a product (which emits `product.created`) and returns that event's id.
async fn product_event(app: &TestApp, name: &str) -> String {
    let p = app.post("/v1/products", json!({"product": {"name": name}})).await;
    assert_eq!(p.status, 200, "{}", p.text);
    let id = p.body["product"]["product_id"].as_str().unwrap();
    let e = app.get(&format!("/v1/events?object_id={id}")).await;
    e.body["events"][0]["event_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_signing_secret_is_shown_in_full_only_when_created() {
    let app = spawn_app().await;
    let r = create(
        &app,
        json!({"url": "https://shop.example/hooks", "events": ["checkout.session.completed", "invoice.paid"],
               "description": "Provisioning", "metadata": {"team": "billing"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let w = &r.body["webhook"];
    let id = w["webhook_id"].as_str().unwrap();
    assert!(id.starts_with("fwh_") && id.len() == 4 + 26, "{id}");
    assert_eq!(w["url"], "https://shop.example/hooks");
    assert_eq!(w["events"], json!(["checkout.session.completed", "invoice.paid"]));
    assert_eq!(w["description"], "Provisioning");
    assert_eq!(w["status"], "enabled");
    assert_eq!(w["disabled_reason"], Value::Null);
    assert_eq!(w["metadata"], json!({"team": "billing"}));
    assert_eq!(w["test_mode"], true);
    assert_eq!(w["previous_secret_expires_at"], Value::Null);
    assert!(w.get("deleted").is_none());
    assert!(w["created_at"].as_str().unwrap().ends_with('Z'));
    let secret = w["signing_secret"].as_str().unwrap().to_string();
    assert!(flex_checkout::domain::webhook_signature::key_of(&secret).is_some_and(|k| k.len() >= 24), "{secret}");

    let stored: String = sqlx::query_scalar("SELECT secret FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, secret, "the worker signs with what the merchant was shown");

    let tail: String =
        secret.trim_end_matches('=').chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    let redacted = format!("whsec_...{tail}");
    let got = app.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["webhook"]["signing_secret"], redacted.as_str());
    assert!(!got.text.contains(&secret));
    let list = app.get("/v1/webhooks").await;
    assert_eq!(list.body["webhooks"][0]["signing_secret"], redacted.as_str());
    assert!(!list.text.contains(&secret));
    let updated = app.post(&format!("/v1/webhooks/{id}"), json!({"webhook": {"description": "x"}})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert!(!updated.text.contains(&secret));
}

#[tokio::test]
async fn an_idempotent_create_replays_the_same_endpoint() {
    let app = spawn_app().await;
    let body = json!({"webhook": {"url": "https://shop.example/hooks", "events": ["*"]}}).to_string();
    let a = app.send(reqwest::Method::POST, "/v1/webhooks", Some(&app.test_key), Some(body.clone()), Some("k1")).await;
    let b = app.send(reqwest::Method::POST, "/v1/webhooks", Some(&app.test_key), Some(body), Some("k1")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.text, b.text);
    assert_eq!(app.count("webhook_endpoints").await, 1);
}

#[tokio::test]
async fn list_retrieve_update_and_delete() {
    let app = spawn_app().await;
    let (first, _) = endpoint(&app, json!(["*"])).await;
    let (second, _) = endpoint(&app, json!(["product.created"])).await;

    let list = app.get("/v1/webhooks").await;
    assert_eq!(list.status, 200, "{}", list.text);
    let ids: Vec<&str> =
        list.body["webhooks"].as_array().unwrap().iter().map(|w| w["webhook_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    assert_eq!(list.body["has_more"], false);
    let page = app.get("/v1/webhooks?limit=1").await;
    assert_eq!(page.body["webhooks"].as_array().unwrap().len(), 1);
    assert_eq!(page.body["has_more"], true);
    let next = app.get(&format!("/v1/webhooks?limit=1&starting_after={second}")).await;
    assert_eq!(next.body["webhooks"][0]["webhook_id"], first.as_str());
    assert_eq!(next.body["has_more"], false);

    // Every field changes; a null description clears it.
    let path = format!("/v1/webhooks/{first}");
    let r = app
        .post(
            &path,
            json!({"webhook": {"url": "https://shop.example/v2/hooks", "events": ["invoice.paid", "invoice.payment_failed"],
                   "description": "v2", "metadata": {"k": "v"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let w = &r.body["webhook"];
    assert_eq!(w["url"], "https://shop.example/v2/hooks");
    assert_eq!(w["events"], json!(["invoice.paid", "invoice.payment_failed"]));
    assert_eq!(w["description"], "v2");
    assert_eq!(w["metadata"], json!({"k": "v"}));
    let r = app.post(&path, json!({"webhook": {"description": null}})).await;
    assert_eq!(r.body["webhook"]["description"], Value::Null);
    assert_eq!(r.body["webhook"]["url"], "https://shop.example/v2/hooks", "untouched fields stay");
    assert_eq!(app.get(&path).await.body["webhook"]["events"], json!(["invoice.paid", "invoice.payment_failed"]));

    // Disabling cancels what was queued and says why; nothing is queued while disabled.
    let (third, _) = endpoint(&app, json!(["*"])).await;
    product_event(&app, "Queued before disabling").await;
    assert_eq!(deliveries_of(&app, &third).await.len(), 1);
    let r = app.post(&format!("/v1/webhooks/{third}"), json!({"webhook": {"status": "disabled"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["webhook"]["status"], "disabled");
    assert!(r.body["webhook"]["disabled_reason"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(deliveries_of(&app, &third).await.iter().all(|(s, _)| s == "canceled"));
    product_event(&app, "Made while disabled").await;
    assert_eq!(deliveries_of(&app, &third).await.len(), 1);

    // Re-enabling clears the reason and the failure streak (a fresh five days).
    sqlx::query("UPDATE webhook_endpoints SET failing_since = 1 WHERE id = $1")
        .bind(&third)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let r = app.post(&format!("/v1/webhooks/{third}"), json!({"webhook": {"status": "enabled"}})).await;
    assert_eq!(r.body["webhook"]["status"], "enabled");
    assert_eq!(r.body["webhook"]["disabled_reason"], Value::Null);
    let (reason, failing): (Option<String>, Option<i64>) =
        sqlx::query_as("SELECT disabled_reason, failing_since FROM webhook_endpoints WHERE id = $1")
            .bind(&third)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!((reason, failing), (None, None));

    // Delete: answered once with `deleted`, gone afterwards, its queue canceled.
    product_event(&app, "Queued before deleting").await;
    assert!(deliveries_of(&app, &second).await.iter().any(|(s, _)| s == "pending"));
    let d = delete(&app, &app.test_key, &format!("/v1/webhooks/{second}")).await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["webhook"]["webhook_id"], second.as_str());
    assert_eq!(d.body["webhook"]["deleted"], true);
    assert!(d.body["webhook"]["signing_secret"].as_str().unwrap().starts_with("whsec_..."));
    assert!(deliveries_of(&app, &second).await.iter().all(|(s, _)| s == "canceled"));
    assert_eq!(app.get(&format!("/v1/webhooks/{second}")).await.status, 404);
    assert_eq!(delete(&app, &app.test_key, &format!("/v1/webhooks/{second}")).await.status, 404);
    let r = app.post(&format!("/v1/webhooks/{second}"), json!({"webhook": {"status": "enabled"}})).await;
    assert_eq!(r.status, 404);
    assert_eq!(app.post(&format!("/v1/webhooks/{second}/rotate_secret"), json!({})).await.status, 404);
    assert_eq!(app.get(&format!("/v1/webhooks/{second}/deliveries")).await.status, 404);
    let list = app.get("/v1/webhooks").await;
    assert!(!list.text.contains(&second));
    product_event(&app, "Made after deleting").await;
    assert!(deliveries_of(&app, &second).await.iter().all(|(s, _)| s == "canceled"));
}

#[tokio::test]
async fn other_merchants_and_the_other_mode_get_404() {
    let app = spawn_app_with_live_stripe().await;
    let (id, _) = endpoint(&app, json!(["*"])).await;
    let event = product_event(&app, "Ours").await;
    let other = app.other_merchant_key().await;
    for key in [other.as_str(), app.live_key.as_str()] {
        for path in [format!("/v1/webhooks/{id}"), format!("/v1/webhooks/{id}/deliveries")] {
            let r = app.get_as(key, &path).await;
            assert_eq!(r.status, 404, "{path}: {}", r.text);
            assert_eq!(r.body["error"]["type"], "not_found");
        }
        let r = app.post_as(key, &format!("/v1/webhooks/{id}"), json!({"webhook": {"status": "disabled"}})).await;
        assert_eq!(r.status, 404, "{}", r.text);
        let r = app.post_as(key, &format!("/v1/webhooks/{id}/rotate_secret"), json!({})).await;
        assert_eq!(r.status, 404, "{}", r.text);
        assert_eq!(delete(&app, key, &format!("/v1/webhooks/{id}")).await.status, 404);
        let list = app.get_as(key, "/v1/webhooks").await;
        assert_eq!(list.status, 200, "{}", list.text);
        assert_eq!(list.body["webhooks"], json!([]));
        // Their retry of our event is a 404; of their own event to our endpoint, a 400 on webhook_id.
        let r = app.post_as(key, &format!("/v1/events/{event}/retry"), json!({})).await;
        assert_eq!(r.status, 404, "{}", r.text);
    }
    let theirs = app.post_as(&other, "/v1/products", json!({"product": {"name": "Theirs"}})).await;
    let their_product = theirs.body["product"]["product_id"].as_str().unwrap();
    let their_event = app.get_as(&other, &format!("/v1/events?object_id={their_product}")).await.body["events"][0]
        ["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app.post_as(&other, &format!("/v1/events/{their_event}/retry"), json!({"webhook_id": id})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["param"], "webhook_id");
    // Still ours, untouched; a live endpoint is a live one.
    let w = app.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(w.body["webhook"]["status"], "enabled");
    let live = app
        .post_as(
            &app.live_key,
            "/v1/webhooks",
            json!({"webhook": {"url": "https://shop.example/live", "events": ["*"]}}),
        )
        .await;
    assert_eq!(live.status, 200, "{}", live.text);
    assert_eq!(live.body["webhook"]["test_mode"], false);
    let live_id = live.body["webhook"]["webhook_id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/v1/webhooks/{live_id}")).await.status, 404);
    // Ids of another kind, or no id at all, are 404s too.
    for path in ["/v1/webhooks/fprod_01HW5MXAPBE79RHMMJJGB4ACAB", "/v1/webhooks/nope", "/v1/webhooks/fwh_"] {
        assert_eq!(app.get(path).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn bad_input_names_the_param_and_writes_nothing() {
    let app = spawn_app_with_live_stripe().await;
    let ok = || json!({"url": "https://shop.example/hooks", "events": ["invoice.paid"]});
    let with = |field: &str, value: Value| {
        let mut b = ok();
        b[field] = value;
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (with("url", json!("not a url")), "webhook.url"),
        (with("url", json!("ftp://shop.example/hooks")), "webhook.url"),
        (with("url", json!("http://shop.example/hooks")), "webhook.url"),
        (with("url", json!("/hooks")), "webhook.url"),
        (with("url", json!("")), "webhook.url"),
        (with("url", json!(format!("https://shop.example/{}", "a".repeat(2100)))), "webhook.url"),
        (with("url", json!(7)), "webhook.url"),
        (with("events", json!(["invoice.paid", "invoice.pad"])), "webhook.events[1]"),
        (with("events", json!([])), "webhook.events"),
        (with("events", json!(["invoice.paid", "invoice.paid"])), "webhook.events[1]"),
        (with("events", json!(["*", "invoice.paid"])), "webhook.events[0]"),
        (with("events", json!("*")), "webhook.events"),
        (with("events", json!(["invoice.paid", 3])), "webhook.events[1]"),
        (with("description", json!("x".repeat(501))), "webhook.description"),
        (with("metadata", json!({"k": 1})), "webhook.metadata.k"),
        (with("secret", json!("whsec_mine")), "webhook.secret"),
        (with("status", json!("disabled")), "webhook.status"),
        (json!({"events": ["*"]}), "webhook.url"),
        (json!({"url": "https://shop.example/hooks"}), "webhook.events"),
    ];
    for (body, param) in cases {
        let r = create(&app, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.text);
    }
    let unknown = create(&app, with("events", json!(["invoice.pad"]))).await;
    assert!(
        unknown.body["error"]["message"].as_str().unwrap().contains("checkout.session.completed"),
        "lists the allowed types"
    );
    let r = app.post("/v1/webhooks", json!({"url": "https://shop.example/hooks", "events": ["*"]})).await;
    assert_eq!((r.status, r.body["error"]["param"].as_str()), (400, Some("webhook")));
    // http is for loopback receivers in test mode only.
    let live = app
        .post_as(
            &app.live_key,
            "/v1/webhooks",
            json!({"webhook": {"url": "http://127.0.0.1:9/hooks", "events": ["*"]}}),
        )
        .await;
    assert_eq!((live.status, live.body["error"]["param"].as_str()), (400, Some("webhook.url")));
    assert_eq!(app.count("webhook_endpoints").await, 0);

    // Updates: the same rules, and the stored endpoint stays as it was.
    let (id, _) = endpoint(&app, json!(["invoice.paid"])).await;
    let before = app.get(&format!("/v1/webhooks/{id}")).await.text;
    for (body, param) in [
        (json!({"status": "paused"}), "webhook.status"),
        (json!({"url": "ftp://x.example/"}), "webhook.url"),
        (json!({"events": []}), "webhook.events"),
        (json!({"events": ["product.created", "nope.nope"]}), "webhook.events[1]"),
        (json!({"signing_secret": "whsec_x"}), "webhook.signing_secret"),
        (json!({"url": null}), "webhook.url"),
    ] {
        let r = app.post(&format!("/v1/webhooks/{id}"), json!({ "webhook": body })).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.text);
    }
    assert_eq!(app.get(&format!("/v1/webhooks/{id}")).await.text, before);
    let r = app.post(&format!("/v1/webhooks/{id}/rotate_secret"), json!({"expires_in": 5})).await;
    assert_eq!((r.status, r.body["error"]["param"].as_str()), (400, Some("expires_in")));
    assert_eq!(app.get(&format!("/v1/webhooks/{id}")).await.text, before);
}

#[tokio::test]
async fn an_account_has_at_most_sixteen_endpoints_per_mode() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(endpoint(&app, json!(["*"])).await.0);
    }
    let r = create(&app, json!({"url": "https://shop.example/hooks", "events": ["*"]})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "webhook_limit_reached");
    assert_eq!(delete(&app, &app.test_key, &format!("/v1/webhooks/{}", ids[0])).await.status, 200);
    endpoint(&app, json!(["*"])).await;
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_for_a_day() {
    let app = spawn_app().await;
    let (id, old) = endpoint(&app, json!(["*"])).await;
    let r = app
        .send(reqwest::Method::POST, &format!("/v1/webhooks/{id}/rotate_secret"), Some(&app.test_key), None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new = r.body["webhook"]["signing_secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && !new.contains("...") && new != old, "{new}");
    let (secret, previous, expires, updated): (String, Option<String>, Option<i64>, i64) = sqlx::query_as(
        "SELECT secret, previous_secret, previous_secret_expires_at, updated_at FROM webhook_endpoints WHERE id = $1",
    )
    .bind(&id)
    .fetch_one(&app.state.db.pool)
    .await
    .unwrap();
    assert_eq!(secret, new);
    assert_eq!(previous.as_deref(), Some(old.as_str()));
    assert_eq!(expires, Some(updated + 24 * 3600 * 1_000_000), "24 hours after the rotation");
    let shown = r.body["webhook"]["previous_secret_expires_at"].as_str().unwrap();
    assert_eq!(flex_checkout::domain::timestamp::Timestamp::parse_rfc3339(shown).unwrap().micros(), expires.unwrap());
    let got = app.get(&format!("/v1/webhooks/{id}")).await;
    assert!(!got.text.contains(&new) && !got.text.contains(&old));
    assert!(got.body["webhook"]["signing_secret"].as_str().unwrap().starts_with("whsec_..."));
    // `{}` is an empty body too.
    let again = app.post(&format!("/v1/webhooks/{id}/rotate_secret"), json!({})).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_ne!(again.body["webhook"]["signing_secret"], new.as_str());
}

fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[tokio::test]
async fn events_filter_by_type_and_creation_time() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for name in ["One", "Two", "Three"] {
        let event = product_event(&app, name).await;
        let e = app.get(&format!("/v1/events/{event}")).await;
        created.push((event, e.body["event"]["created_at"].as_str().unwrap().to_string()));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let ids = |r: &Response| -> Vec<String> {
        r.body["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_string()).collect()
    };
    let r = app.get(&format!("/v1/events?event_type=product.created&created%5Bgte%5D={}", enc(&created[1].1))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r), [created[2].0.clone(), created[1].0.clone()]);
    let r = app.get(&format!("/v1/events?created[lte]={}", enc(&created[1].1))).await;
    assert_eq!(ids(&r), [created[1].0.clone(), created[0].0.clone()]);
    let r =
        app.get(&format!("/v1/events?created[gte]={}&created[lte]={}", enc(&created[1].1), enc(&created[1].1))).await;
    assert_eq!(ids(&r), [created[1].0.clone()]);
    let r = app.get("/v1/events?event_type=invoice.paid").await;
    assert_eq!(ids(&r), Vec::<String>::new());
    // An offset written with an unencoded `+` (read as a space) still means what it says.
    let r = app.get("/v1/events?created[gte]=2000-01-01T01:00:00+01:00").await;
    assert_eq!(ids(&r).len(), 3, "{}", r.text);
    let r = app.get("/v1/events?created[lte]=2000-01-01T00:00:00Z").await;
    assert_eq!(ids(&r).len(), 0);

    for (query, param) in [
        ("created[gte]=yesterday", "created[gte]"),
        ("created[lte]=1714156783", "created[lte]"),
        ("created[gte]=2024-13-01T00:00:00Z", "created[gte]"),
        ("created[gte]=2024-02-01T00:00:00Z&created[lte]=2024-01-01T00:00:00Z", "created[lte]"),
        ("created[gt]=2024-01-01T00:00:00Z", "created[gt]"),
    ] {
        let r = app.get(&format!("/v1/events?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        assert_eq!(r.body["error"]["param"], param, "{query}");
    }
}

#[tokio::test]
async fn retry_queues_the_event_again() {
    let app = spawn_app().await;
    let (products, _) = endpoint(&app, json!(["product.created"])).await;
    let (all, _) = endpoint(&app, json!(["*"])).await;
    let (invoices, _) = endpoint(&app, json!(["invoice.paid"])).await;
    let (disabled, _) = endpoint(&app, json!(["*"])).await;
    let r = app.post(&format!("/v1/webhooks/{disabled}"), json!({"webhook": {"status": "disabled"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);

    let event = product_event(&app, "Retried").await;
    let count = |id: &str| {
        let id = id.to_string();
        let app = &app;
        let event = event.clone();
        async move { deliveries_of(app, &id).await.iter().filter(|(_, e)| *e == event).count() }
    };
    assert_eq!((count(&products).await, count(&all).await, count(&invoices).await), (1, 1, 0));

    // To every enabled endpoint subscribed to the type; no body at all is the same as `{}`.
    let r =
        app.send(reqwest::Method::POST, &format!("/v1/events/{event}/retry"), Some(&app.test_key), None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["queued"], 2);
    assert_eq!(r.body["event"]["event_id"], event.as_str());
    assert_eq!(r.body["event"]["event_type"], "product.created");
    let r = app.post(&format!("/v1/events/{event}/retry"), json!({})).await;
    assert_eq!(r.body["queued"], 2);
    assert_eq!((count(&products).await, count(&all).await, count(&invoices).await), (3, 3, 0));
    assert_eq!(count(&disabled).await, 0);
    assert!(deliveries_of(&app, &all).await.iter().all(|(s, _)| s == "pending"));

    // To one endpoint, whatever it subscribes to.
    let r = app.post(&format!("/v1/events/{event}/retry"), json!({"webhook_id": invoices})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["queued"], 1);
    assert_eq!((count(&products).await, count(&all).await, count(&invoices).await), (3, 3, 1));

    // A disabled endpoint gets nothing, and is told why.
    let r = app.post(&format!("/v1/events/{event}/retry"), json!({"webhook_id": disabled})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "webhook_endpoint_disabled");
    assert_eq!(count(&disabled).await, 0);

    let before = app.count("webhook_deliveries").await;
    for (body, param) in [
        (json!({"webhook_id": "fwh_01HW5MXAPBE79RHMMJJGB4ACAB"}), "webhook_id"),
        (json!({"webhook_id": "fprod_01HW5MXAPBE79RHMMJJGB4ACAB"}), "webhook_id"),
        (json!({"webhook_id": 5}), "webhook_id"),
        (json!({"endpoint": invoices}), "endpoint"),
        (json!({"retry": {"webhook_id": invoices}}), "retry"),
    ] {
        let r = app.post(&format!("/v1/events/{event}/retry"), body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["param"], param, "{body}");
    }
    let r = app.post_raw(&format!("/v1/events/{event}/retry"), "[1]").await;
    assert_eq!(r.status, 400, "{}", r.text);
    for missing in ["fevt_01HW5MXAPBE79RHMMJJGB4ACAB", "fwh_01HW5MXAPBE79RHMMJJGB4ACAB", "x"] {
        let r = app.post(&format!("/v1/events/{missing}/retry"), json!({})).await;
        assert_eq!(r.status, 404, "{missing}: {}", r.text);
    }
    assert_eq!(app.count("webhook_deliveries").await, before);
}

/// A row of `webhook_attempts` as the delivery worker would write it.
struct Tried {
    id: String,
    delivery: String,
    event: String,
    at: i64,
    status_code: Option<i64>,
    duration_ms: i64,
    error: Option<&'static str>,
    next: Option<i64>,
}

#[tokio::test]
async fn the_deliveries_log_lists_every_attempt_newest_first() {
    let app = spawn_app().await;
    let (id, _) = endpoint(&app, json!(["*"])).await;
    let (quiet, _) = endpoint(&app, json!(["invoice.paid"])).await;
    let first = product_event(&app, "First").await;
    let second = product_event(&app, "Second").await;
    let delivery = |event: String| {
        let app = &app;
        let id = id.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT id FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2",
            )
            .bind(id)
            .bind(event)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap()
        }
    };
    let (d1, d2) = (delivery(first.clone()).await, delivery(second.clone()).await);
    let t0 = 1_714_156_783_000_000_i64;
    let at = |delivery: &str, event: &str, offset: i64| Tried {
        id: flex_checkout::domain::ids::WebhookAttemptId::generate().into_string(),
        delivery: delivery.to_string(),
        event: event.to_string(),
        at: t0 + offset,
        status_code: None,
        duration_ms: 0,
        error: None,
        next: None,
    };
    let rows = [
        Tried {
            status_code: Some(500),
            duration_ms: 120,
            error: Some("HTTP 500"),
            next: Some(t0 + 5_000_000),
            ..at(&d1, &first, 0)
        },
        Tried {
            duration_ms: 10_000,
            error: Some("timed out after 10 s"),
            next: Some(t0 + 305_000_000),
            ..at(&d1, &first, 5_000_000)
        },
        Tried { status_code: Some(204), duration_ms: 35, ..at(&d2, &second, 6_000_000) },
    ];
    for t in &rows {
        sqlx::query(
            "INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, event_id, attempted_at, status_code, duration_ms,
                error, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&t.id)
        .bind(&t.delivery)
        .bind(&id)
        .bind(&t.event)
        .bind(t.at)
        .bind(t.status_code)
        .bind(t.duration_ms)
        .bind(t.error)
        .bind(t.next)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    }
    let r = app.get(&format!("/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let log = r.body["deliveries"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(r.body["has_more"], false);
    let newest = &log[0];
    assert_eq!(newest["attempt_id"], rows[2].id.as_str());
    assert_eq!(newest["delivery_id"], d2.as_str());
    assert_eq!(newest["event_id"], second.as_str());
    assert_eq!(newest["event_type"], "product.created");
    assert_eq!(newest["status_code"], 204);
    assert_eq!(newest["duration_ms"], 35);
    assert_eq!(newest["succeeded"], true);
    assert_eq!(newest["error"], Value::Null);
    assert_eq!(newest["next_attempt_at"], Value::Null);
    assert_eq!(newest["delivery_status"], "pending");
    let ts = |t: i64| flex_checkout::domain::timestamp::Timestamp::from_micros(t).rfc3339();
    assert_eq!(newest["attempted_at"], ts(t0 + 6_000_000).as_str());
    let timeout = &log[1];
    assert_eq!(timeout["status_code"], Value::Null);
    assert_eq!(timeout["succeeded"], false);
    assert_eq!(timeout["error"], "timed out after 10 s");
    assert_eq!(timeout["next_attempt_at"], ts(t0 + 305_000_000).as_str());
    assert_eq!(log[2]["status_code"], 500);
    assert_eq!(log[2]["event_id"], first.as_str());

    let page = app.get(&format!("/v1/webhooks/{id}/deliveries?limit=2")).await;
    assert_eq!(page.body["deliveries"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["has_more"], true);
    let rest = app.get(&format!("/v1/webhooks/{id}/deliveries?starting_after={}", rows[1].id)).await;
    assert_eq!(rest.body["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["deliveries"][0]["attempt_id"], rows[0].id.as_str());
    let one = app.get(&format!("/v1/webhooks/{id}/deliveries?event_id={first}")).await;
    assert_eq!(one.body["deliveries"].as_array().unwrap().len(), 2);

    assert_eq!(app.get(&format!("/v1/webhooks/{quiet}/deliveries")).await.body["deliveries"], json!([]));
    for (query, param) in [
        ("event_id=fprod_01HW5MXAPBE79RHMMJJGB4ACAB", "event_id"),
        ("starting_after=fevt_01HW5MXAPBE79RHMMJJGB4ACAB", "starting_after"),
        ("limit=0", "limit"),
        ("status=failed", "status"),
    ] {
        let r = app.get(&format!("/v1/webhooks/{id}/deliveries?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        assert_eq!(r.body["error"]["param"], param);
    }
    let other = app.other_merchant_key().await;
    assert_eq!(app.get_as(&other, &format!("/v1/webhooks/{id}/deliveries")).await.status, 404);
}
