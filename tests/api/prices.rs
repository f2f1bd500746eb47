//! `/v1/prices`.

use serde_json::json;

use crate::common::spawn_app;

#[tokio::test]
async fn the_seed_price_comes_back_with_the_seed_fields() {
    let app = spawn_app().await;
    let (product, price) = app.seed_product_and_price().await;
    let r = app.get(&format!("/v1/prices/{price}")).await;
    assert_eq!(r.status, 200);
    let p = &r.body["price"];
    assert!(price.starts_with("fprice_"));
    assert_eq!(p["description"], "Our awesome new price");
    assert_eq!(p["unit_amount"], 4999);
    assert_eq!(p["price"], 4999);
    assert_eq!(p["recurring"]["interval"], "monthly");
    assert_eq!(p["recurring"]["trial_period_days"], json!(null));
    assert_eq!(p["active"], true);
    assert_eq!(p["product"], product.as_str());
    assert_eq!(p["type"], "recurring");
    assert_eq!(p["metadata"], json!(null));
    assert_eq!(p["currency"], "usd");
    assert_eq!(p["hsa_fsa_eligibility"], "letter_of_medical_necessity");
}

#[tokio::test]
async fn amounts_must_be_whole_minor_units_and_intervals_known() {
    let app = spawn_app().await;
    let (product, _) = app.seed_product_and_price().await;
    let before = app.snapshot().await;
    let cases = [
        (json!({"unit_amount": 49.99}), "price.unit_amount"),
        (json!({"unit_amount": -1}), "price.unit_amount"),
        (json!({"unit_amount": "4999"}), "price.unit_amount"),
        (json!({"unit_amount": 100, "currency": "USD"}), "price.currency"),
        (json!({"unit_amount": 100, "currency": "xyz"}), "price.currency"),
        (json!({"unit_amount": 100, "recurring": {"interval": "fortnightly"}}), "price.recurring.interval"),
        (
            json!({"unit_amount": 100, "recurring": {"interval": "monthly", "interval_count": 0}}),
            "price.recurring.interval_count",
        ),
        (
            json!({"unit_amount": 100, "recurring": {"interval": "monthly", "trial_period_days": 731}}),
            "price.recurring.trial_period_days",
        ),
        (json!({"unit_amount": 100, "recurring": {}}), "price.recurring.interval"),
        (json!({}), "price.unit_amount"),
    ];
    for (fields, param) in cases {
        let mut body = fields.clone();
        body["product"] = json!(product);
        let r = app.post("/v1/prices", json!({ "price": body })).await;
        assert_eq!(r.status, 400, "{fields} -> {}", r.text);
        assert_eq!(r.body["error"]["param"], param, "{fields} -> {}", r.text);
    }
    let r = app.post("/v1/prices", json!({"price": {"unit_amount": 100}})).await;
    assert_eq!(r.body["error"]["param"], "price.product");
    let r = app
        .post("/v1/prices", json!({"price": {"unit_amount": 100, "product": "fprod_01HW5MXAPBE79RHMMJJGB4ACAB"}}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "price.product");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn zero_decimal_currencies_are_accepted_as_whole_units() {
    let app = spawn_app().await;
    let p = app.post("/v1/products", json!({"product": {"name": "Ramen"}})).await;
    let product = p.body["product"]["product_id"].as_str().unwrap();
    let r =
        app.post("/v1/prices", json!({"price": {"product": product, "unit_amount": 5000, "currency": "jpy"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["price"]["currency"], "jpy");
    assert_eq!(r.body["price"]["type"], "one_time");
}

#[tokio::test]
async fn price_updates_change_only_description_active_and_metadata() {
    let app = spawn_app().await;
    let (_, price) = app.seed_product_and_price().await;
    let r = app
        .post(&format!("/v1/prices/{price}"), json!({"price": {"active": false, "metadata": {"tier": "gold"}}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["price"]["active"], false);
    assert_eq!(r.body["price"]["metadata"], json!({"tier": "gold"}));
    let r = app.post(&format!("/v1/prices/{price}"), json!({"price": {"unit_amount": 1}})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "price.unit_amount");
    let again = app.get(&format!("/v1/prices/{price}")).await;
    assert_eq!(again.body["price"]["unit_amount"], 4999);
}

#[tokio::test]
async fn prices_filter_by_product_type_and_active() {
    let app = spawn_app().await;
    let (product, _) = app.seed_product_and_price().await;
    app.post("/v1/prices", json!({"price": {"product": product, "unit_amount": 100}})).await;
    app.one_time_price("Other", 300).await;
    let r = app.get(&format!("/v1/prices?product={product}")).await;
    assert_eq!(r.body["prices"].as_array().unwrap().len(), 2);
    let r = app.get("/v1/prices?type=recurring").await;
    assert_eq!(r.body["prices"].as_array().unwrap().len(), 1);
    let r = app.get("/v1/prices?type=one_time&active=true").await;
    assert_eq!(r.body["prices"].as_array().unwrap().len(), 2);
    let r = app.get("/v1/prices?type=sometimes").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "type");
    let r = app.get("/v1/prices?colour=red").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "colour");
}
