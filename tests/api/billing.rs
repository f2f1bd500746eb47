//! The billing engine through the public API: seed 002's create, renewals on test clocks,
//! dunning, trials, calendar billing, commitments, SEND_INVOICE, pay/void, cancel.

use serde_json::{json, Value};

use crate::common::{spawn_app, TestApp};
use crate::pay::pay;

pub(crate) async fn clock(app: &TestApp, frozen: &str) -> String {
    let r = app.post("/v1/test_helpers/test_clocks", json!({"test_clock": {"frozen_time": frozen, "name": "t"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["test_clock"]["test_clock_id"].as_str().unwrap().to_string()
}

pub(crate) async fn advance(app: &TestApp, clock: &str, to: &str) {
    let r = app
        .post(&format!("/v1/test_helpers/test_clocks/{clock}/advance"), json!({"test_clock": {"frozen_time": to}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["test_clock"]["status"], "ready");
}

pub(crate) async fn customer_on(app: &TestApp, clock: &str, external_id: &str) -> String {
    let r = app
        .post(
            "/v1/customers",
            json!({"customer": {"email": "ana@example.com", "external_id": external_id, "test_clock": clock}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["customer"]["customer_id"].as_str().unwrap().to_string()
}

/// Saves `card` for `customer` through a setup-mode checkout paid on the hosted form.
pub(crate) async fn save_card(app: &TestApp, customer: &str, card: &str) {
    let s = app.create_session(json!({"mode": "setup", "customer": customer})).await;
    assert_eq!(s.status, 200, "{}", s.text);
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let posted = pay(app, &id, card, &[]).await;
    assert_eq!(posted.status, 303, "{}", posted.html);
}

pub(crate) async fn monthly_price(app: &TestApp, amount: i64, trial_days: Option<u32>) -> (String, String) {
    let p = app.post("/v1/products", json!({"product": {"name": "Gym membership"}})).await;
    let product = p.body["product"]["product_id"].as_str().unwrap().to_string();
    let mut recurring = json!({"interval": "monthly"});
    if let Some(d) = trial_days {
        recurring["trial_period_days"] = json!(d);
    }
    let pr = app
        .post("/v1/prices", json!({"price": {"product": product, "unit_amount": amount, "recurring": recurring}}))
        .await;
    assert_eq!(pr.status, 200, "{}", pr.text);
    (product, pr.body["price"]["price_id"].as_str().unwrap().to_string())
}

pub(crate) async fn invoices_of(app: &TestApp, sub: &str) -> Vec<Value> {
    let r = app.get(&format!("/v1/invoices?subscription={sub}&limit=100")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut v = r.body["invoices"].as_array().unwrap().clone();
    v.reverse();
    v
}

pub(crate) async fn subscription(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

pub(crate) async fn event_types(app: &TestApp) -> Vec<String> {
    let r = app.get("/v1/events?limit=100").await;
    let mut types: Vec<String> =
        r.body["events"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap().to_string()).collect();
    types.reverse();
    types
}

#[tokio::test]
async fn the_seed_002_example_creates_an_active_monthly_subscription_and_charges_it() {
    let app = spawn_app().await;
    let c = clock(&app, "2024-03-20T15:04:05Z").await;
    let customer = customer_on(&app, &c, "customer-12345").await;
    save_card(&app, &customer, "4242424242424242").await;
    let (_, price) = monthly_price(&app, 4999, None).await;
    let r = app
        .post(
            "/v1/subscriptions",
            json!({
                "customer_id": customer,
                "plan_id": price,
                "currency": "usd",
                "billing_cadence": "IN_ADVANCE",
                "billing_period": "MONTH",
                "billing_period_count": 1,
                "start_date": "2024-03-20T00:00:00Z",
                "metadata": {"source": "website"}
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = &r.body;
    assert!(s["id"].as_str().unwrap().starts_with("fsub_"));
    assert_eq!(s["customer_id"], customer.as_str());
    assert_eq!(s["plan_id"], price.as_str());
    assert_eq!(s["subscription_status"], "ACTIVE");
    assert_eq!(s["currency"], "usd");
    assert_eq!(s["billing_cadence"], "IN_ADVANCE");
    assert_eq!(s["billing_period"], "MONTH");
    assert_eq!(s["billing_period_count"], 1);
    assert_eq!(s["billing_anchor"], "2024-03-20T00:00:00Z");
    assert_eq!(s["start_date"], "2024-03-20T00:00:00Z");
    assert_eq!(s["current_period_start"], "2024-03-20T00:00:00Z");
    assert_eq!(s["current_period_end"], "2024-04-20T00:00:00Z");
    assert_eq!(s["metadata"], json!({"source": "website"}));
    assert_eq!(s["created_at"], "2024-03-20T15:04:05Z");
    for field in
        ["end_date", "trial_start", "trial_end", "updated_at", "latest_invoice", "default_payment_method", "items"]
    {
        assert!(s.get(field).is_some(), "{field} missing from {s}");
    }
    let invoices = invoices_of(&app, s["id"].as_str().unwrap()).await;
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0]["status"], "paid");
    assert_eq!(invoices[0]["amount_paid"], 4999);
    assert_eq!(invoices[0]["billing_reason"], "subscription_create");
    assert_eq!(invoices[0]["number"], "FLEX-000001");
    // Wrapped body is accepted too; external id finds the same customer.
    let r = app
        .post(
            "/v1/subscriptions",
            json!({"subscription": {"external_customer_id": "customer-12345", "plan_id": price, "lookup_key": "pro"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["customer_id"], customer.as_str());
    let found = app.get("/v1/subscriptions?lookup_key=pro").await;
    assert_eq!(found.body["subscriptions"].as_array().unwrap().len(), 1);
    let again =
        app.post("/v1/subscriptions", json!({"customer_id": customer, "plan_id": price, "lookup_key": "pro"})).await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.body["error"]["param"], "lookup_key");
}

#[tokio::test]
async fn a_year_of_renewals_on_a_test_clock_keeps_the_month_end_anchor() {
    let app = spawn_app().await;
    let c = clock(&app, "2024-01-31T10:00:00Z").await;
    let customer = customer_on(&app, &c, "c-1").await;
    save_card(&app, &customer, "4242424242424242").await;
    let (_, price) = monthly_price(&app, 1000, None).await;
    let r = app.post("/v1/subscriptions", json!({"customer_id": customer, "plan_id": price})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    advance(&app, &c, "2025-01-31T10:00:00Z").await;
    let invoices = invoices_of(&app, &id).await;
    let starts: Vec<&str> = invoices.iter().map(|i| i["period_start"].as_str().unwrap()).collect();
    assert_eq!(
        starts,
        [
            "2024-01-31T10:00:00Z",
            "2024-02-29T10:00:00Z",
            "2024-03-31T10:00:00Z",
            "2024-04-30T10:00:00Z",
            "2024-05-31T10:00:00Z",
            "2024-06-30T10:00:00Z",
            "2024-07-31T10:00:00Z",
            "2024-08-31T10:00:00Z",
            "2024-09-30T10:00:00Z",
            "2024-10-31T10:00:00Z",
            "2024-11-30T10:00:00Z",
            "2024-12-31T10:00:00Z",
            "2025-01-31T10:00:00Z",
        ]
    );
    assert!(invoices.iter().all(|i| i["status"] == "paid" && i["amount_paid"] == 1000), "{invoices:?}");
    let numbers: Vec<&str> = invoices.iter().map(|i| i["number"].as_str().unwrap()).collect();
    assert_eq!(numbers.first(), Some(&"FLEX-000001"));
    assert_eq!(numbers.last(), Some(&"FLEX-000013"));
    let s = subscription(&app, &id).await;
    assert_eq!(s["current_period_start"], "2025-01-31T10:00:00Z");
    assert_eq!(s["current_period_end"], "2025-02-28T10:00:00Z");
    let types = event_types(&app).await;
    assert_eq!(types.iter().filter(|t| *t == "invoice.paid").count(), 13);
    assert_eq!(types.iter().filter(|t| *t == "invoice.upcoming").count(), 12);
    // Advancing again to the same point does nothing more.
    let r = app
        .post(
            &format!("/v1/test_helpers/test_clocks/{c}/advance"),
            json!({"test_clock": {"frozen_time": "2025-01-31T10:00:01Z"}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(invoices_of(&app, &id).await.len(), 13);
}

#[tokio::test]
async fn a_checkout_subscription_renews_on_its_customers_clock() {
    let app = spawn_app().await;
    let c = clock(&app, "2024-03-10T12:00:00Z").await;
    let customer = customer_on(&app, &c, "c-2").await;
    let (_, price) = monthly_price(&app, 4999, None).await;
    let s = app
        .create_session(
            json!({"mode": "subscription", "customer": customer, "line_items": [{"price": price, "quantity": 1}]}),
        )
        .await;
    let session = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let posted = pay(&app, &session, "4242424242424242", &[]).await;
    assert_eq!(posted.status, 303, "{}", posted.html);
    let sub_id = app.get(&format!("/v1/checkout/sessions/{session}")).await.body["checkout_session"]["subscription"]
        .as_str()
        .unwrap()
        .to_string();
    let s = subscription(&app, &sub_id).await;
    assert_eq!(s["current_period_start"], "2024-03-10T12:00:00Z");
    advance(&app, &c, "2024-04-10T12:00:00Z").await;
    let invoices = invoices_of(&app, &sub_id).await;
    assert_eq!(invoices.len(), 2);
    assert_eq!(invoices[1]["billing_reason"], "subscription_cycle");
    assert_eq!(invoices[1]["status"], "paid");
    assert_eq!(invoices[1]["amount_paid"], 4999);
    assert!(event_types(&app).await.contains(&"invoice.paid".to_string()));
}

#[tokio::test]
async fn a_card_that_declines_renewals_goes_past_due_retries_and_is_canceled_after_the_fifth_attempt() {
    let app = spawn_app().await;
    let c = clock(&app, "2024-05-01T00:00:00Z").await;
    let customer = customer_on(&app, &c, "c-3").await;
    let (_, price) = monthly_price(&app, 4999, Some(7)).await;
    let s = app
        .create_session(
            json!({"mode": "subscription", "customer": customer, "line_items": [{"price": price, "quantity": 1}]}),
        )
        .await;
    let session = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let posted = pay(&app, &session, "4000000000000341", &[]).await;
    assert_eq!(posted.status, 303, "{}", posted.html);
    let sub_id = app.get(&format!("/v1/checkout/sessions/{session}")).await.body["checkout_session"]["subscription"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(subscription(&app, &sub_id).await["subscription_status"], "TRIALING");
    // Trial ends on 8 May: the first charge fails.
    advance(&app, &c, "2024-05-08T00:00:01Z").await;
    let s = subscription(&app, &sub_id).await;
    assert_eq!(s["subscription_status"], "PAST_DUE");
    let invoice = invoices_of(&app, &sub_id).await.pop().unwrap();
    assert_eq!(invoice["status"], "open");
    assert_eq!(invoice["attempt_count"], 1);
    assert_eq!(invoice["next_payment_attempt"], "2024-05-09T00:00:00Z");
    let failed = app.get("/v1/events?event_type=invoice.payment_failed").await;
    assert_eq!(failed.body["events"].as_array().unwrap().len(), 1);
    // Retries at +1, +3, +5, +7 days.
    for (to, attempts, next) in [
        ("2024-05-09T00:00:01Z", 2, json!("2024-05-11T00:00:00Z")),
        ("2024-05-11T00:00:01Z", 3, json!("2024-05-13T00:00:00Z")),
        ("2024-05-13T00:00:01Z", 4, json!("2024-05-15T00:00:00Z")),
    ] {
        advance(&app, &c, to).await;
        let invoice = invoices_of(&app, &sub_id).await.pop().unwrap();
        assert_eq!(
            (invoice["attempt_count"].clone(), invoice["next_payment_attempt"].clone()),
            (json!(attempts), next)
        );
        assert_eq!(subscription(&app, &sub_id).await["subscription_status"], "PAST_DUE");
    }
    advance(&app, &c, "2024-05-15T00:00:01Z").await;
    let invoice = invoices_of(&app, &sub_id).await.pop().unwrap();
    assert_eq!(invoice["attempt_count"], 5);
    assert_eq!(invoice["status"], "uncollectible");
    assert_eq!(invoice["next_payment_attempt"], Value::Null);
    let s = subscription(&app, &sub_id).await;
    assert_eq!(s["subscription_status"], "CANCELED");
    let failed = app.get("/v1/events?event_type=invoice.payment_failed").await;
    assert_eq!(failed.body["events"].as_array().unwrap().len(), 5);
    let deleted = app.get("/v1/events?event_type=customer.subscription.deleted").await;
    assert_eq!(deleted.body["events"].as_array().unwrap().len(), 1);
    // Nothing more happens afterwards.
    advance(&app, &c, "2024-08-01T00:00:00Z").await;
    assert_eq!(invoices_of(&app, &sub_id).await.len(), 2);
}

#[tokio::test]
async fn malformed_subscription_requests_name_the_field_and_write_nothing() {
    let app = spawn_app().await;
    let customer = app.post("/v1/customers", json!({"customer": {"email": "a@example.com"}})).await.body["customer"]
        ["customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, price) = monthly_price(&app, 1000, None).await;
    let before = app.snapshot().await;
    let cases = [
        (json!({"customer_id": customer, "plan_id": price, "billing_cadence": "WEEKLY"}), "billing_cadence"),
        (json!({"customer_id": customer, "plan_id": price, "billing_period_count": 0}), "billing_period_count"),
        (json!({"customer_id": customer, "plan_id": price, "customer_timezone": "Mars/Olympus"}), "customer_timezone"),
        (
            json!({"customer_id": customer, "plan_id": price, "start_date": "2024-03-20T00:00:00Z", "end_date": "2024-03-01T00:00:00Z"}),
            "end_date",
        ),
        (json!({"customer_id": customer, "plan_id": price, "commitment_amount": 10.5}), "commitment_amount"),
        (
            json!({"customer_id": customer, "plan_id": price, "commitment_amount": "10", "overage_factor": "0.5"}),
            "overage_factor",
        ),
        (json!({"customer_id": customer, "plan_id": "fprice_01HW5MXAPBE79RHMMJJGB4ACAB"}), "plan_id"),
        (json!({"customer_id": customer, "plan_id": price, "currency": "eur"}), "currency"),
        (json!({"plan_id": price}), "customer_id"),
        (json!({"customer_id": "fcus_01HW5MXAPBE79RHMMJJGB4ACAB", "plan_id": price}), "customer_id"),
        (json!({"external_customer_id": "nobody", "plan_id": price}), "external_customer_id"),
        (json!({"customer_id": customer, "plan_id": price, "billing_cycle": "MONTHLY"}), "billing_cycle"),
        (json!({"customer_id": customer, "plan_id": price, "payment_terms": "10_NET"}), "payment_terms"),
        (json!({"customer_id": customer, "plan_id": price, "plan": "x"}), "plan"),
        // Backdated by more than 100 periods: refused rather than billing 9,000 days at once.
        (
            json!({"customer_id": customer, "plan_id": price, "billing_period": "DAY", "start_date": "2000-01-01T00:00:00Z"}),
            "start_date",
        ),
    ];
    for (body, param) in cases {
        let r = app.post("/v1/subscriptions", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.text);
    }
    // No saved card: 422 payment_method_required.
    let r = app.post("/v1/subscriptions", json!({"customer_id": customer, "plan_id": price})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "payment_method_required");
    assert_eq!(app.snapshot().await, before);
}
