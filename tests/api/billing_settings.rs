//! The merchant's billing settings, and what `UNPAID` does to dunning's end: the subscription is
//! kept and invoiced, nothing is charged automatically, and paying its latest invoice revives it.

use serde_json::{json, Value};

use crate::billing::{advance, clock, customer_on, event_types, invoices_of, monthly_price, save_card, subscription};
use crate::common::{spawn_app, spawn_app_with_live_stripe, TestApp};
use crate::pay::pay;

const PATH: &str = "/v1/billing_settings";

async fn set_unpaid(app: &TestApp) {
    let r = app.post(PATH, json!({"billing_settings": {"after_final_failure": "UNPAID"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["billing_settings"]["after_final_failure"], "UNPAID");
}

fn count(types: &[String], t: &str) -> usize {
    types.iter().filter(|x| *x == t).count()
}

#[tokio::test]
async fn settings_default_to_canceled_and_are_kept_per_merchant_and_mode() {
    let app = spawn_app_with_live_stripe().await;
    let r = app.get(PATH).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"billing_settings": {"after_final_failure": "CANCELED", "test_mode": true, "updated_at": null}})
    );
    set_unpaid(&app).await;
    let r = app.get(PATH).await;
    assert_eq!(r.body["billing_settings"]["after_final_failure"], "UNPAID");
    assert!(r.body["billing_settings"]["updated_at"].is_string(), "{}", r.text);
    // Live mode and another merchant keep their own (the defaults).
    let live = app.get_as(&app.live_key, PATH).await;
    assert_eq!(live.status, 200, "{}", live.text);
    assert_eq!(live.body["billing_settings"]["after_final_failure"], "CANCELED");
    assert_eq!(live.body["billing_settings"]["test_mode"], false);
    let other = app.other_merchant_key().await;
    assert_eq!(app.get_as(&other, PATH).await.body["billing_settings"]["after_final_failure"], "CANCELED");
    // An empty change changes nothing.
    let r = app.post(PATH, json!({"billing_settings": {}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["billing_settings"]["after_final_failure"], "UNPAID");
}

#[tokio::test]
async fn bad_settings_name_the_field_and_change_nothing() {
    let app = spawn_app().await;
    for (body, param, words) in [
        (
            json!({"billing_settings": {"after_final_failure": "unpaid"}}),
            "billing_settings.after_final_failure",
            "`CANCELED`, `UNPAID`",
        ),
        (
            json!({"billing_settings": {"after_final_failure": "PAST_DUE"}}),
            "billing_settings.after_final_failure",
            "not a valid",
        ),
        (json!({"billing_settings": {"after_final_failure": 3}}), "billing_settings.after_final_failure", ""),
        (json!({"billing_settings": {"retry_days": [1]}}), "billing_settings.retry_days", ""),
    ] {
        let r = app.post(PATH, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains(words), "{}", r.text);
    }
    assert_eq!(app.count("billing_settings").await, 0);
    assert_eq!(app.get(PATH).await.body["billing_settings"]["after_final_failure"], "CANCELED");
    let r = app.send(reqwest::Method::DELETE, PATH, Some(&app.test_key.clone()), None, None).await;
    assert_eq!(r.status, 405, "{}", r.text);
}

/// A trialing checkout subscription whose card (0341) declines every charge, on a clock at
/// 2024-05-01; its trial ends on 8 May. Returns (clock, customer, subscription).
async fn declining_subscription(app: &TestApp) -> (String, String, String) {
    let c = clock(app, "2024-05-01T00:00:00Z").await;
    let customer = customer_on(app, &c, "c-unpaid").await;
    let (_, price) = monthly_price(app, 4999, Some(7)).await;
    let s = app
        .create_session(
            json!({"mode": "subscription", "customer": customer, "line_items": [{"price": price, "quantity": 1}]}),
        )
        .await;
    let session = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let posted = pay(app, &session, "4000000000000341", &[]).await;
    assert_eq!(posted.status, 303, "{}", posted.html);
    let sub = app.get(&format!("/v1/checkout/sessions/{session}")).await.body["checkout_session"]["subscription"]
        .as_str()
        .unwrap()
        .to_string();
    (c, customer, sub)
}

async fn pay_invoice(app: &TestApp, invoice: &Value) -> Value {
    let id = invoice["invoice_id"].as_str().unwrap();
    let r = app.post(&format!("/v1/invoices/{id}/pay"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["invoice"].clone()
}

#[tokio::test]
async fn with_unpaid_the_last_failure_keeps_the_subscription_invoiced_but_uncharged_until_the_customer_pays() {
    let app = spawn_app().await;
    set_unpaid(&app).await;
    let (c, customer, sub) = declining_subscription(&app).await;
    // Trial end (8 May) and the retries at +1, +3, +5, +7 days all fail.
    for to in ["2024-05-08T00:00:01Z", "2024-05-09T00:00:01Z", "2024-05-11T00:00:01Z", "2024-05-13T00:00:01Z"] {
        advance(&app, &c, to).await;
        assert_eq!(subscription(&app, &sub).await["subscription_status"], "PAST_DUE", "at {to}");
    }
    advance(&app, &c, "2024-05-15T00:00:01Z").await;
    let s = subscription(&app, &sub).await;
    assert_eq!(s["subscription_status"], "UNPAID");
    assert_eq!(s["canceled_at"], Value::Null);
    let may = invoices_of(&app, &sub).await.pop().unwrap();
    assert_eq!((may["status"].clone(), may["attempt_count"].clone()), (json!("uncollectible"), json!(5)));
    let types = event_types(&app).await;
    assert_eq!(count(&types, "invoice.payment_failed"), 5);
    assert_eq!(count(&types, "invoice.marked_uncollectible"), 1);
    assert_eq!(count(&types, "customer.subscription.deleted"), 0);
    assert_eq!(types.last().map(String::as_str), Some("customer.subscription.updated"));

    // The June period is invoiced on 8 June but not charged: no attempt, no retry planned.
    advance(&app, &c, "2024-06-20T00:00:00Z").await;
    let invoices = invoices_of(&app, &sub).await;
    assert_eq!(invoices.len(), 3, "{invoices:?}");
    let june = invoices[2].clone();
    assert_eq!(june["billing_reason"], "subscription_cycle");
    assert_eq!(june["period_start"], "2024-06-08T00:00:00Z");
    assert_eq!((june["status"].clone(), june["attempt_count"].clone()), (json!("open"), json!(0)));
    assert_eq!(june["next_payment_attempt"], Value::Null);
    assert_eq!(subscription(&app, &sub).await["subscription_status"], "UNPAID");
    assert_eq!(count(&event_types(&app).await, "invoice.payment_failed"), 5);

    // The customer saves a good card. Paying the old May invoice does not revive the
    // subscription (it is not the latest); paying June's does.
    save_card(&app, &customer, "4242424242424242").await;
    let paid = pay_invoice(&app, &may).await;
    assert_eq!((paid["status"].clone(), paid["attempt_count"].clone()), (json!("paid"), json!(6)));
    assert_eq!(subscription(&app, &sub).await["subscription_status"], "UNPAID");
    let paid = pay_invoice(&app, &june).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(subscription(&app, &sub).await["subscription_status"], "ACTIVE");

    // Automatic charges are back, on the new card.
    advance(&app, &c, "2024-07-08T00:00:01Z").await;
    let july = invoices_of(&app, &sub).await.pop().unwrap();
    assert_eq!(july["period_start"], "2024-07-08T00:00:00Z");
    assert_eq!((july["status"].clone(), july["attempt_count"].clone()), (json!("paid"), json!(1)));
    assert_eq!(subscription(&app, &sub).await["subscription_status"], "ACTIVE");
}

#[tokio::test]
async fn the_default_still_cancels_and_an_uncollectible_invoice_of_a_canceled_subscription_can_be_paid() {
    let app = spawn_app().await;
    let (c, customer, sub) = declining_subscription(&app).await;
    advance(&app, &c, "2024-05-15T00:00:01Z").await;
    assert_eq!(subscription(&app, &sub).await["subscription_status"], "CANCELED");
    let may = invoices_of(&app, &sub).await.pop().unwrap();
    assert_eq!(may["status"], "uncollectible");
    save_card(&app, &customer, "4242424242424242").await;
    let paid = pay_invoice(&app, &may).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["amount_paid"], 4999);
    // A canceled subscription stays canceled.
    assert_eq!(subscription(&app, &sub).await["subscription_status"], "CANCELED");
    advance(&app, &c, "2024-07-01T00:00:00Z").await;
    assert_eq!(invoices_of(&app, &sub).await.len(), 2);
}
