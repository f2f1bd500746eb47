//! The billing engine charging through Stripe (localstripe): a subscription bought on the hosted
//! page in Stripe mode renews on its customer's test clock with the card Stripe saved, and a card
//! whose charges fail goes into dunning. Skipped (with a notice) without `LOCALSTRIPE_URL`.

mod common;

use serde_json::{json, Value};

use common::stripe::{all_payment_intents, pay_with_stripe, spawn_stripe_app};
use common::TestApp;

async fn post_ok(app: &TestApp, path: &str, body: Value) -> Value {
    let r = app.post(path, body).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    r.body
}

/// A customer on a new clock and a subscription session for them at `amount` a month.
async fn session_on_clock(app: &TestApp, frozen: &str, amount: i64, trial_days: Option<u32>) -> (String, String) {
    let clock = post_ok(app, "/v1/test_helpers/test_clocks", json!({"test_clock": {"frozen_time": frozen}})).await
        ["test_clock"]["test_clock_id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer =
        post_ok(app, "/v1/customers", json!({"customer": {"email": "ana@example.com", "test_clock": clock}})).await
            ["customer"]["customer_id"]
            .as_str()
            .unwrap()
            .to_string();
    let product = post_ok(app, "/v1/products", json!({"product": {"name": "Coaching"}})).await["product"]["product_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut recurring = json!({"interval": "monthly"});
    if let Some(d) = trial_days {
        recurring["trial_period_days"] = json!(d);
    }
    let price = post_ok(
        app,
        "/v1/prices",
        json!({"price": {"product": product, "unit_amount": amount, "recurring": recurring}}),
    )
    .await["price"]["price_id"]
        .as_str()
        .unwrap()
        .to_string();
    let session = app
        .create_session(
            json!({"mode": "subscription", "customer": customer, "line_items": [{"price": price, "quantity": 1}]}),
        )
        .await;
    assert_eq!(session.status, 200, "{}", session.text);
    (clock, session.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string())
}

async fn advance(app: &TestApp, clock: &str, to: &str) {
    post_ok(app, &format!("/v1/test_helpers/test_clocks/{clock}/advance"), json!({"test_clock": {"frozen_time": to}}))
        .await;
}

async fn subscription_of(app: &TestApp, session: &str) -> String {
    app.get(&format!("/v1/checkout/sessions/{session}")).await.body["checkout_session"]["subscription"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn invoices(app: &TestApp, sub: &str) -> Vec<Value> {
    let mut v = app.get(&format!("/v1/invoices?subscription={sub}")).await.body["invoices"].as_array().unwrap().clone();
    v.reverse();
    v
}

#[tokio::test]
async fn a_stripe_subscription_renews_off_session_on_its_clock() {
    let Some(app) = spawn_stripe_app().await else { return };
    let amount = 4_871;
    let (clock, session) = session_on_clock(&app, "2024-01-15T09:30:00Z", amount, None).await;
    let r = pay_with_stripe(&app, &session, "4242424242424242").await;
    assert_eq!(r.status(), 303);
    let sub = subscription_of(&app, &session).await;
    advance(&app, &clock, "2024-03-15T09:30:00Z").await;
    let inv = invoices(&app, &sub).await;
    assert_eq!(inv.len(), 3, "{inv:?}");
    assert!(inv.iter().all(|i| i["status"] == "paid" && i["amount_paid"] == amount), "{inv:?}");
    assert_eq!(inv[2]["period_start"], "2024-03-15T09:30:00Z");
    let pm =
        app.get(&format!("/v1/subscriptions/{sub}")).await.body["default_payment_method"].as_str().unwrap().to_string();
    let stripe_customer: String = sqlx::query_scalar("SELECT gateway_customer FROM payment_methods WHERE id = $1")
        .bind(&pm)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let ours: Vec<Value> = all_payment_intents()
        .await
        .into_iter()
        .filter(|p| p["customer"] == stripe_customer.as_str() && p["status"] == "succeeded")
        .collect();
    assert_eq!(ours.len(), 3, "one PaymentIntent at Stripe per paid invoice");
    assert_eq!(app.get(&format!("/v1/subscriptions/{sub}")).await.body["subscription_status"], "ACTIVE");
}

#[tokio::test]
async fn a_stripe_card_whose_charges_fail_is_dunned_after_its_trial() {
    let Some(app) = spawn_stripe_app().await else { return };
    let (clock, session) = session_on_clock(&app, "2024-06-01T00:00:00Z", 2_999, Some(3)).await;
    let r = pay_with_stripe(&app, &session, "4000000000000341").await;
    assert_eq!(r.status(), 303);
    let sub = subscription_of(&app, &session).await;
    advance(&app, &clock, "2024-06-04T00:00:01Z").await;
    let s = app.get(&format!("/v1/subscriptions/{sub}")).await.body;
    assert_eq!(s["subscription_status"], "PAST_DUE", "{s}");
    let inv = invoices(&app, &sub).await;
    let last = inv.last().unwrap();
    assert_eq!((last["status"].as_str(), last["attempt_count"].as_i64()), (Some("open"), Some(1)), "{last}");
    assert_eq!(last["next_payment_attempt"], "2024-06-05T00:00:00Z");
    advance(&app, &clock, "2024-06-11T00:00:01Z").await;
    let s = app.get(&format!("/v1/subscriptions/{sub}")).await.body;
    assert_eq!(s["subscription_status"], "CANCELED", "{s}");
    assert_eq!(invoices(&app, &sub).await.last().unwrap()["status"], "uncollectible");
}
