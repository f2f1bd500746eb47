//! Hostile and malformed requests: every one gets a 4xx in the error envelope and changes nothing.

use serde_json::json;

use crate::common::spawn_app;

#[tokio::test]
async fn malformed_bodies_never_cause_a_5xx_or_a_change() {
    let app = spawn_app().await;
    let (_, price) = app.seed_product_and_price().await;
    let s = app.create_session(json!({"mode": "subscription", "line_items": [{"price": price}]})).await;
    let session = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let c = app.post("/v1/customers", json!({"customer": {}})).await;
    let customer = c.body["customer"]["customer_id"].as_str().unwrap().to_string();
    let before = app.snapshot().await;

    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge = format!(r#"{{"product": {{"name": "{}"}}}}"#, "x".repeat(300_000));
    let bodies: Vec<String> = vec![
        String::new(),
        "   ".into(),
        "{".into(),
        "null".into(),
        "[]".into(),
        "42".into(),
        "\"text\"".into(),
        "{}".into(),
        r#"{"product": null}"#.into(),
        r#"{"product": []}"#.into(),
        r#"{"price": {"unit_amount": 1e400}}"#.into(),
        r#"{"price": {"unit_amount": 99999999999999999999999}}"#.into(),
        r#"{"checkout_session": {"line_items": "all"}}"#.into(),
        r#"{"checkout_session": {"line_items": [null]}}"#.into(),
        r#"{"customer": {"email": "\u0000@x.co"}}"#.into(),
        "\u{0}\u{1}\u{2}".into(),
        "{\"product\": {\"name\": \"\\ud800\"}}".into(),
        deep,
        huge,
    ];
    let paths = [
        "/v1/products".to_string(),
        "/v1/prices".to_string(),
        "/v1/customers".to_string(),
        "/v1/checkout/sessions".to_string(),
        format!("/v1/customers/{customer}"),
        format!("/v1/checkout/sessions/{session}/expire"),
    ];
    for path in &paths {
        for body in &bodies {
            // Expire takes no parameters: an empty body or {} is a valid request there.
            if path.ends_with("/expire") && matches!(body.trim(), "" | "{}") {
                continue;
            }
            let r = app.post_raw(path, body).await;
            assert!((400..500).contains(&r.status), "{path} with {:.60}: {} {}", body, r.status, r.text);
            assert!(r.body["error"]["type"].is_string(), "{path} with {:.60}: {}", body, r.text);
            assert!(r.body["error"]["message"].is_string());
        }
    }
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn hostile_query_strings_and_paths_are_4xx() {
    let app = spawn_app().await;
    for path in [
        "/v1/products?limit=0",
        "/v1/products?limit=101",
        "/v1/products?limit=-5",
        "/v1/products?limit=abc",
        "/v1/products?starting_after=fprice_01HWDV9J9JWY5SDFJZNFXN5S6P",
        "/v1/products?starting_after=fprod_x&ending_before=fprod_y",
        "/v1/products?active=maybe",
        "/v1/checkout/sessions?status=paid",
        "/v1/checkout/sessions?customer=bob",
        "/v1/products/%27%20OR%201=1--",
        "/v1/products/fprod_01HW5MXAPBE79RHMMJJGB4ACAB%00",
        "/v1/events/fevt_x",
    ] {
        let r = app.get(path).await;
        assert!((400..500).contains(&r.status), "{path}: {} {}", r.status, r.text);
        assert!(r.body["error"]["message"].is_string(), "{path}: {}", r.text);
    }
}

#[tokio::test]
async fn metadata_round_trips_exactly_with_unicode() {
    let app = spawn_app().await;
    let meta = json!({"emoji": "🏋️", "quote": "\"<b>&'", "empty": ""});
    let r = app.post("/v1/products", json!({"product": {"name": "Ünïcødé ✓", "metadata": meta}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.body["product"]["product_id"].as_str().unwrap();
    let got = app.get(&format!("/v1/products/{id}")).await;
    assert_eq!(got.body["product"]["metadata"], meta);
    assert_eq!(got.body["product"]["name"], "Ünïcødé ✓");
}

#[tokio::test]
async fn extreme_numbers_and_nul_bytes_are_refused_not_crashed_on() {
    let app = spawn_app().await;
    let (_, price) = app.seed_product_and_price().await;
    let before = app.snapshot().await;
    for sub in [json!({"trial_end": i64::MIN}), json!({"trial_end": i64::MAX}), json!({"trial_period_days": i64::MIN})]
    {
        let r = app
            .create_session(json!({"mode": "subscription", "line_items": [{"price": price}], "subscription_data": sub}))
            .await;
        assert_eq!(r.status, 400, "{sub}: {}", r.text);
    }
    let r = app
        .create_session(json!({"mode": "subscription", "line_items": [{"price": price}], "expires_at": i64::MIN}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    for field in ["success_url", "cancel_url"] {
        let r = app
            .create_session(
                json!({"mode": "subscription", "line_items": [{"price": price}], field: "https://shop.example/\u{0}"}),
            )
            .await;
        assert_eq!(r.status, 400, "{field}: {}", r.text);
        assert_eq!(r.body["error"]["param"], format!("checkout_session.{field}"));
    }
    let r = app.post("/v1/products", json!({"product": {"name": "x", "url": "https://a.example/\u{0}"}})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    for path in [
        "/v1/customers?email=%00",
        "/v1/customers?external_id=%00",
        "/v1/events?event_type=%00",
        "/v1/events?object_id=%00",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
    }
    assert_eq!(app.snapshot().await, before);
}
