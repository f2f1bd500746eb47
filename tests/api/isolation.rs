//! Authentication, tenant isolation and test/live isolation.

use serde_json::json;

use crate::common::{spawn_app, spawn_app_with_live_stripe};

#[tokio::test]
async fn requests_without_a_valid_key_are_401() {
    let app = spawn_app().await;
    for key in [None, Some("fsk_test_wrong"), Some("sk_test_123"), Some("")] {
        let r = app.send(reqwest::Method::GET, "/v1/products", key, None, None).await;
        assert_eq!(r.status, 401, "{key:?}");
        assert_eq!(r.body["error"]["type"], "authentication_error");
    }
    let basic = app
        .client
        .get(format!("{}/v1/products", app.address))
        .header("Authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let app = spawn_app().await;
    assert_eq!(app.get("/v1/products").await.status, 200);
    let id: String =
        sqlx::query_scalar("SELECT id FROM api_keys WHERE livemode = 0").fetch_one(&app.state.db.pool).await.unwrap();
    let mut conn = app.state.db.conn().await.unwrap();
    assert!(flex_checkout::db::api_keys::revoke(&mut conn, &id, app.state.clock.now()).await.unwrap());
    assert_eq!(app.get("/v1/products").await.status, 401);
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT secret_hash || ' ' || redacted FROM api_keys")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    for row in stored {
        assert!(!row.contains(&app.test_key) && !row.contains(&app.live_key));
    }
}

#[tokio::test]
async fn another_merchant_sees_none_of_our_objects() {
    let app = spawn_app_with_live_stripe().await;
    let (product, price) = app.seed_product_and_price().await;
    let s = app.create_session(json!({"mode": "subscription", "line_items": [{"price": price}]})).await;
    let session = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let c = app.post("/v1/customers", json!({"customer": {"email": "x@y.co"}})).await;
    let customer = c.body["customer"]["customer_id"].as_str().unwrap().to_string();
    let other = app.other_merchant_key().await;
    for path in [
        format!("/v1/products/{product}"),
        format!("/v1/prices/{price}"),
        format!("/v1/checkout/sessions/{session}"),
        format!("/v1/checkout/sessions/{session}/line_items"),
        format!("/v1/customers/{customer}"),
        format!("/v1/customers/{customer}/payment_methods"),
    ] {
        let r = app.get_as(&other, &path).await;
        assert_eq!(r.status, 404, "{path}");
        let live = app.get_as(&app.live_key, &path).await;
        assert_eq!(live.status, 404, "live key: {path}");
    }
    for list in ["/v1/products", "/v1/prices", "/v1/checkout/sessions", "/v1/customers", "/v1/events"] {
        let r = app.get_as(&other, list).await;
        let (_, items) = r.body.as_object().unwrap().iter().find(|(k, _)| *k != "has_more").unwrap();
        assert_eq!(items.as_array().unwrap().len(), 0, "{list}");
    }
    // Writing through their objects fails the same way.
    let r = app.post_as(&other, &format!("/v1/products/{product}"), json!({"product": {"name": "Mine"}})).await;
    assert_eq!(r.status, 404);
    let r = app.post_as(&other, "/v1/prices", json!({"price": {"product": product, "unit_amount": 1}})).await;
    assert_eq!(r.status, 400);
    let r = app
        .post_as(
            &other,
            "/v1/checkout/sessions",
            json!({"checkout_session": {"mode": "subscription", "line_items": [{"price": price}],
                "success_url": "", "cancel_url": ""}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "checkout_session.line_items[0].price");
    let r = app.post_as(&other, &format!("/v1/checkout/sessions/{session}/expire"), json!({})).await;
    assert_eq!(r.status, 404);
    let still = app.get(&format!("/v1/checkout/sessions/{session}")).await;
    assert_eq!(still.body["checkout_session"]["status"], "open");
}

#[tokio::test]
async fn live_keys_work_only_with_a_live_stripe_key() {
    let app = spawn_app().await;
    let r = app.post_as(&app.live_key, "/v1/products", json!({"product": {"name": "Real"}})).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("STRIPE_SECRET_KEY"));
    assert_eq!(app.count("products").await, 0);
}

#[tokio::test]
async fn live_objects_carry_test_mode_false_and_live_checkout_loads_stripe() {
    let app = spawn_app_with_live_stripe().await;
    let p = app.post_as(&app.live_key, "/v1/products", json!({"product": {"name": "Real"}})).await;
    assert_eq!(p.status, 200);
    assert_eq!(p.body["product"]["test_mode"], false);
    let product = p.body["product"]["product_id"].as_str().unwrap();
    let pr = app.post_as(&app.live_key, "/v1/prices", json!({"price": {"product": product, "unit_amount": 100}})).await;
    let price = pr.body["price"]["price_id"].as_str().unwrap();
    let s = app
        .post_as(
            &app.live_key,
            "/v1/checkout/sessions",
            json!({"checkout_session": {"mode": "payment", "line_items": [{"price": price}],
                "success_url": "https://shop.example/ok", "cancel_url": "https://shop.example/no"}}),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.body["checkout_session"]["test_mode"], false);
    // The live page takes the card in Stripe's own fields: none of ours, and CSP allows Stripe.js.
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap();
    let page = app.client.get(format!("{}/pay/c/{id}", app.address)).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"src="https://js.stripe.com/v3/""#), "{html}");
    assert!(html.contains("pk_live_flexcheckouttests"));
    assert!(!html.contains("card_number") && !html.contains("cc-number"), "no card field of ours");
    assert!(csp.contains("script-src 'self' https://js.stripe.com;"), "{csp}");
    assert!(csp.contains("frame-src https://js.stripe.com https://hooks.stripe.com;"), "{csp}");
    // A live price cannot be used with a test key (test mode is the sandbox here).
    let t = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}]})).await;
    assert_eq!(t.status, 400);
}
