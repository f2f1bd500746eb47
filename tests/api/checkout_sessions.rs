//! `/v1/checkout/sessions`.

use serde_json::json;

use crate::common::spawn_app;

#[tokio::test]
async fn the_seed_session_has_every_seed_field_and_value() {
    let app = spawn_app().await;
    let (_, price) = app.seed_product_and_price().await;
    let r = app
        .post(
            "/v1/checkout/sessions",
            json!({"checkout_session": {"line_items": [{"price": price,"quantity": 1}],"success_url": "","mode": "subscription","cancel_url": ""}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = &r.body["checkout_session"];
    let id = s["checkout_session_id"].as_str().unwrap();
    assert!(id.starts_with("fcs_") && id.len() == 30);
    let expected = json!({
        "allow_promotion_codes": false, "amount_total": 4999, "amount_subtotal": 4999, "cancel_url": "",
        "capture_method": "automatic", "customer": null, "customer_email": null,
        "defaults": {"email": null, "first_name": null, "last_name": null, "phone": null},
        "invoice": null, "hsa_fsa_eligible": true, "letter_of_medical_necessity_required": true,
        "metadata": null, "mode": "subscription", "multiple_subscriptions": false, "payment_intent_id": null,
        "setup_intent": null, "shipping_options": null, "shipping_address_collection": false,
        "shipping_details": null, "status": "open", "success_url": "", "subscription": null, "tax_rate": null,
        "total_details": {"amount_discount": 0, "amount_tax": null, "amount_shipping": null}, "visit_type": "gym",
    });
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&s[k], v, "field {k}");
    }
    assert_eq!(s["expires_at"].as_i64().unwrap(), s["created_at"].as_i64().unwrap() + 3600);
    assert_eq!(s["redirect_url"], format!("{}/pay/c/{id}", app.address));
    let seed_keys = [
        "allow_promotion_codes",
        "amount_total",
        "amount_subtotal",
        "cancel_url",
        "capture_method",
        "checkout_session_id",
        "created_at",
        "customer",
        "customer_email",
        "defaults",
        "expires_at",
        "invoice",
        "hsa_fsa_eligible",
        "letter_of_medical_necessity_required",
        "metadata",
        "mode",
        "multiple_subscriptions",
        "payment_intent_id",
        "redirect_url",
        "setup_intent",
        "shipping_options",
        "shipping_address_collection",
        "shipping_details",
        "status",
        "success_url",
        "subscription",
        "tax_rate",
        "test_mode",
        "total_details",
        "visit_type",
    ];
    let keys: Vec<&String> = s.as_object().unwrap().keys().collect();
    for (i, k) in seed_keys.iter().enumerate() {
        assert_eq!(keys[i], k, "the seed's fields come first, in the seed's order");
    }
    let got = app.get(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(got.body, r.body);
    let items = app.get(&format!("/v1/checkout/sessions/{id}/line_items")).await;
    assert_eq!(items.status, 200);
    assert_eq!(items.body["line_items"][0]["price"], price.as_str());
    assert_eq!(items.body["line_items"][0]["amount_total"], 4999);
}

#[tokio::test]
async fn inline_price_data_makes_a_one_off_line() {
    let app = spawn_app().await;
    let r = app
        .create_session(json!({"mode": "payment", "line_items": [
            {"price_data": {"product_data": {"name": "Massage", "hsa_fsa_eligibility": "auto_substantiation"},
                "unit_amount": 2500, "currency": "usd"}, "quantity": 2}
        ]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["checkout_session"]["amount_total"], 5000);
    assert_eq!(r.body["checkout_session"]["hsa_fsa_eligible"], true);
    assert_eq!(r.body["checkout_session"]["letter_of_medical_necessity_required"], false);
    let active = app.get("/v1/prices?active=true").await;
    assert_eq!(active.body["prices"].as_array().unwrap().len(), 0, "inline prices are not for reuse");
}

#[tokio::test]
async fn impossible_sessions_are_refused_and_leave_nothing_behind() {
    let app = spawn_app().await;
    let (_, monthly) = app.seed_product_and_price().await;
    let once = app.one_time_price("Mat", 1500).await;
    let p = app.post("/v1/products", json!({"product": {"name": "Euro"}})).await;
    let euro_product = p.body["product"]["product_id"].as_str().unwrap().to_string();
    let euro = app
        .post("/v1/prices", json!({"price": {"product": euro_product, "unit_amount": 100, "currency": "eur"}}))
        .await;
    let euro = euro.body["price"]["price_id"].as_str().unwrap().to_string();
    let yearly = app
        .post(
            "/v1/prices",
            json!({"price": {"product": euro_product, "unit_amount": 100, "recurring": {"interval": "yearly"}}}),
        )
        .await;
    let yearly = yearly.body["price"]["price_id"].as_str().unwrap().to_string();
    let before = app.snapshot().await;
    let li = |p: &str| json!([{"price": p, "quantity": 1}]);
    let cases = vec![
        (json!({"mode": "payment", "line_items": li(&monthly)}), 400, "checkout_session.line_items[0]"),
        (json!({"mode": "subscription", "line_items": li(&once)}), 400, "checkout_session.line_items"),
        (
            json!({"mode": "payment", "line_items": [{"price": once}, {"price": euro}]}),
            400,
            "checkout_session.line_items[1]",
        ),
        (
            json!({"mode": "subscription", "line_items": [{"price": monthly}, {"price": yearly}]}),
            400,
            "checkout_session.line_items[1]",
        ),
        (json!({"mode": "setup", "line_items": li(&once)}), 400, "checkout_session.line_items"),
        (json!({"mode": "payment"}), 400, "checkout_session.line_items"),
        (json!({"mode": "donation", "line_items": li(&once)}), 400, "checkout_session.mode"),
        (json!({"line_items": li(&once)}), 400, "checkout_session.mode"),
        (
            json!({"mode": "payment", "line_items": [{"price": once, "quantity": 0}]}),
            400,
            "checkout_session.line_items[0].quantity",
        ),
        (
            json!({"mode": "payment", "line_items": [{"price": once, "quantity": 1000}]}),
            400,
            "checkout_session.line_items[0].quantity",
        ),
        (json!({"mode": "payment", "line_items": [{"quantity": 1}]}), 400, "checkout_session.line_items[0].price"),
        (
            json!({"mode": "payment", "line_items": [{"price": "fprice_01HWDV9J9JWY5SDFJZNFXN5S6P"}]}),
            400,
            "checkout_session.line_items[0].price",
        ),
        (
            json!({"mode": "payment", "line_items": li(&once), "success_url": "http://shop.example/ok"}),
            400,
            "checkout_session.success_url",
        ),
        (
            json!({"mode": "payment", "line_items": li(&once), "cancel_url": "javascript:alert(1)"}),
            400,
            "checkout_session.cancel_url",
        ),
        (
            json!({"mode": "payment", "line_items": li(&once), "customer_email": "nope"}),
            400,
            "checkout_session.customer_email",
        ),
        (
            json!({"mode": "payment", "line_items": li(&once), "customer": "fcus_01HWDV9J9JWY5SDFJZNFXN5S6P"}),
            400,
            "checkout_session.customer",
        ),
        (json!({"mode": "payment", "line_items": li(&once), "expires_at": 1}), 400, "checkout_session.expires_at"),
        (
            json!({"mode": "payment", "line_items": li(&once), "capture_method": "later"}),
            400,
            "checkout_session.capture_method",
        ),
        (
            json!({"mode": "payment", "line_items": li(&once), "defaults": {"phone": "555"}}),
            400,
            "checkout_session.defaults.phone",
        ),
        (
            json!({"mode": "payment", "line_items": li(&once), "subscription_data": {"trial_period_days": 7}}),
            400,
            "checkout_session.subscription_data",
        ),
        (
            json!({"mode": "subscription", "line_items": li(&monthly), "subscription_data": {"trial_period_days": 7000}}),
            400,
            "checkout_session.subscription_data.trial_period_days",
        ),
        (json!({"mode": "payment", "line_items": li(&once), "tax_rate": 5}), 400, "checkout_session.tax_rate"),
        (json!({"mode": "payment", "line_items": li(&once), "metadata": "x"}), 400, "checkout_session.metadata"),
    ];
    for (fields, status, param) in cases {
        let r = app.create_session(fields.clone()).await;
        assert_eq!(r.status, status, "{fields} -> {}", r.text);
        assert_eq!(r.body["error"]["param"], param, "{fields} -> {}", r.text);
    }
    // An archived price: well-formed but impossible.
    app.post(&format!("/v1/prices/{once}"), json!({"price": {"active": false}})).await;
    let before_archived = app.snapshot().await;
    let r = app.create_session(json!({"mode": "payment", "line_items": li(&once)})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "price_inactive");
    assert_eq!(app.snapshot().await, before_archived);
    assert_eq!(
        before.iter().find(|(t, _)| t == "checkout_sessions"),
        before_archived.iter().find(|(t, _)| t == "checkout_sessions")
    );
}

#[tokio::test]
async fn expiring_a_session_by_request_and_by_time() {
    let app = spawn_app().await;
    let price = app.one_time_price("Class", 2000).await;
    let a = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}]})).await;
    let a_id = a.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let page = app.client.get(format!("{}/pay/c/{a_id}", app.address)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let expired = app.post(&format!("/v1/checkout/sessions/{a_id}/expire"), json!({})).await;
    assert_eq!(expired.status, 200, "{}", expired.text);
    assert_eq!(expired.body["checkout_session"]["status"], "expired");
    let again = app.post(&format!("/v1/checkout/sessions/{a_id}/expire"), json!({})).await;
    assert_eq!(again.status, 422);
    let page = app.client.get(format!("{}/pay/c/{a_id}", app.address)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 410, "expiring drops the page kept in memory");

    let b = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}]})).await;
    let b_id = b.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let page = app.client.get(format!("{}/pay/c/{b_id}", app.address)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    app.state.clock.advance_seconds(3601);
    let read = app.get(&format!("/v1/checkout/sessions/{b_id}")).await;
    assert_eq!(read.body["checkout_session"]["status"], "expired", "expired at once, before any sweeper");
    let open = app.get("/v1/checkout/sessions?status=open").await;
    assert_eq!(open.body["checkout_sessions"].as_array().unwrap().len(), 0);
    let listed = app.get("/v1/checkout/sessions?status=expired").await;
    assert_eq!(listed.body["checkout_sessions"].as_array().unwrap().len(), 2);
    let page = app.client.get(format!("{}/pay/c/{b_id}", app.address)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 410);

    assert_eq!(app.run_workers().await, 1, "the sweeper marks it and reports it once");
    assert_eq!(app.run_workers().await, 0);
    let events = app.get("/v1/events?event_type=checkout.session.expired").await;
    assert_eq!(events.body["events"].as_array().unwrap().len(), 2);
    assert_eq!(events.body["events"][0]["object"]["checkout_session"]["status"], "expired");
}

#[tokio::test]
async fn a_replayed_idempotency_key_returns_the_first_answer_byte_for_byte() {
    let app = crate::common::spawn_app_with_live_stripe().await;
    let price = app.one_time_price("Class", 2000).await;
    let body = json!({"checkout_session": {"mode": "payment", "line_items": [{"price": price}],
        "success_url": "https://shop.example/ok", "cancel_url": "https://shop.example/no"}})
    .to_string();
    let send = |key: &'static str, body: String| {
        app.send(reqwest::Method::POST, "/v1/checkout/sessions", Some(&app.test_key), Some(body), Some(key))
    };
    let first = send("order-1", body.clone()).await;
    assert_eq!(first.status, 200);
    let second = send("order-1", body.clone()).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text, first.text);
    assert_eq!(second.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.count("checkout_sessions").await, 1);

    let other = send("order-1", body.replace("2000", "2001").replace("ok", "ok2")).await;
    assert_eq!(other.status, 409);
    assert_eq!(other.body["error"]["type"], "idempotency_error");

    let bad = app
        .send(
            reqwest::Method::POST,
            "/v1/checkout/sessions",
            Some(&app.test_key),
            Some(body.clone()),
            Some(&"k".repeat(256)),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"]["param"], "Idempotency-Key");

    // Errors are replayed too: the same bad request under a key answers the same.
    let broken = r#"{"checkout_session": {"mode": "nope"}}"#.to_string();
    let e1 = send("bad-1", broken.clone()).await;
    let e2 = send("bad-1", broken).await;
    assert_eq!(e1.status, 400);
    assert_eq!(e2.text, e1.text);

    // Keys are per merchant and mode: the live key may reuse the name.
    let live = app
        .send(
            reqwest::Method::POST,
            "/v1/products",
            Some(&app.live_key),
            Some(json!({"product": {"name": "L"}}).to_string()),
            Some("order-1"),
        )
        .await;
    assert_eq!(live.status, 200, "{}", live.text);
}

#[tokio::test]
async fn concurrent_requests_under_one_key_create_one_object() {
    let app = spawn_app().await;
    let body = json!({"product": {"name": "Once"}}).to_string();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let client = app.client.clone();
        let url = format!("{}/v1/products", app.address);
        let key = app.test_key.clone();
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", "same")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");
    assert!(statuses.contains(&200));
    assert_eq!(app.count("products").await, 1);
}
