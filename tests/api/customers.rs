//! `/v1/customers`.

use serde_json::json;

use crate::common::spawn_app;

#[tokio::test]
async fn customers_round_trip_and_are_found_by_email_and_external_id() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/customers",
            json!({"customer": {"email": "ana@example.com", "first_name": "Ana", "last_name": "Silva",
                "phone": "+1 (415) 555-0123", "external_id": "user-42",
                "shipping": {"line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "us"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = &r.body["customer"];
    assert!(c["customer_id"].as_str().unwrap().starts_with("fcus_"));
    assert_eq!(c["phone"], "+14155550123");
    assert_eq!(c["shipping"]["country"], "US");
    assert_eq!(c["test_clock"], json!(null));
    let by_email = app.get("/v1/customers?email=ana@example.com").await;
    assert_eq!(by_email.body["customers"].as_array().unwrap().len(), 1);
    let by_ext = app.get("/v1/customers?external_id=user-42").await;
    assert_eq!(by_ext.body["customers"][0]["customer_id"], c["customer_id"]);
}

#[tokio::test]
async fn an_external_id_belongs_to_one_customer() {
    let app = spawn_app().await;
    let a = app.post("/v1/customers", json!({"customer": {"external_id": "dup"}})).await;
    assert_eq!(a.status, 200);
    let before = app.snapshot().await;
    let b = app.post("/v1/customers", json!({"customer": {"external_id": "dup"}})).await;
    assert_eq!(b.status, 409, "{}", b.text);
    assert_eq!(b.body["error"]["param"], "customer.external_id");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn bad_contact_details_name_their_field() {
    let app = spawn_app().await;
    for (body, param) in [
        (json!({"email": "not-an-email"}), "customer.email"),
        (json!({"phone": "12345"}), "customer.phone"),
        (json!({"shipping": {"country": "USA"}}), "customer.shipping.country"),
        (json!({"shipping": {"zip": "1"}}), "customer.shipping.zip"),
        (json!({"first_name": "x".repeat(101)}), "customer.first_name"),
    ] {
        let r = app.post("/v1/customers", json!({ "customer": body })).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.text);
    }
    assert_eq!(app.count("customers").await, 0);
}

#[tokio::test]
async fn updating_a_customer_keeps_what_is_not_sent() {
    let app = spawn_app().await;
    let r = app.post("/v1/customers", json!({"customer": {"email": "a@b.co", "first_name": "A"}})).await;
    let id = r.body["customer"]["customer_id"].as_str().unwrap().to_string();
    let u = app
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/customers/{id}"),
            Some(&app.test_key),
            Some(json!({"customer": {"last_name": "B", "first_name": null}}).to_string()),
            None,
        )
        .await;
    assert_eq!(u.status, 200, "{}", u.text);
    assert_eq!(u.body["customer"]["email"], "a@b.co");
    assert_eq!(u.body["customer"]["first_name"], json!(null));
    assert_eq!(u.body["customer"]["last_name"], "B");
    let pms = app.get(&format!("/v1/customers/{id}/payment_methods")).await;
    assert_eq!(pms.status, 200);
    assert_eq!(pms.body["payment_methods"], json!([]));
}
