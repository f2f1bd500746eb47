//! The billing engine's passes on the system clock: a settlement starts from what its step wrote,
//! and still sees what another writer changed in between.

use serde_json::{json, Value};

use flex_checkout::db;
use flex_checkout::domain::subscription::Subscription;
use flex_checkout::domain::timestamp::Timestamp;
use flex_checkout::domain::Owner;
use flex_checkout::flows::billing;

use crate::billing::{advance, clock, customer_on, invoices_of, monthly_price, save_card, subscription};
use crate::common::{spawn_app, TestApp};

/// A customer on the system clock with `card` saved, and a monthly subscription of 49.99.
async fn subscribed(app: &TestApp, card: &str) -> String {
    let c = app.post("/v1/customers", json!({"customer": {"email": "ana@example.com"}})).await;
    assert_eq!(c.status, 200, "{}", c.text);
    let customer = c.body["customer"]["customer_id"].as_str().unwrap().to_string();
    save_card(app, &customer, card).await;
    let (_, price) = monthly_price(app, 4999, None).await;
    let r = app.post("/v1/subscriptions", json!({"customer_id": customer, "plan_id": price})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["subscription_status"], "ACTIVE");
    r.body["id"].as_str().unwrap().to_string()
}

/// What the engine's pass on the system clock reads as due at `now`.
async fn due_at(app: &TestApp, now: Timestamp) -> Vec<(Owner, Subscription)> {
    let mut conn = app.state.db.conn().await.unwrap();
    db::subscriptions::due(&mut conn, now, billing::BATCH).await.unwrap()
}

/// A month later, the renewal step of the one subscription due, committed; its charge not yet made.
async fn renewal_stepped(app: &TestApp) -> (billing::Stepped, Timestamp) {
    app.state.clock.advance_seconds(32 * 24 * 3600);
    let now = app.state.clock.now();
    let due = due_at(app, now).await;
    assert_eq!(due.len(), 1);
    let mut tx = app.state.db.begin().await.unwrap();
    let stepped = billing::step_many(&app.state, &mut tx, due, now).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!((stepped.count, stepped.jobs.len()), (1, 1));
    (stepped, now)
}

#[tokio::test]
async fn a_subscription_changed_between_a_renewal_step_and_its_settlement_is_read_again() {
    let app = spawn_app().await;
    let sub_id = subscribed(&app, "4242424242424242").await;
    let (stepped, now) = renewal_stepped(&app).await;
    // Another writer, between the step and the answer: an earlier invoice's failure left the
    // subscription past due. The renewal's payment must bring it back, which only a fresh read
    // of the subscription (not the step's copy, still active) can tell.
    sqlx::query("UPDATE subscriptions SET status = 'PAST_DUE', version = version + 1 WHERE id = $1")
        .bind(&sub_id)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let answers = billing::charge_many(&app.state, &stepped.jobs, &stepped.carried).await;
    let answered: Vec<(&billing::ChargeJob, &billing::AttemptResult)> =
        stepped.jobs.iter().zip(&answers).map(|(j, a)| (j, a.as_ref().expect("the sandbox answers"))).collect();
    let mut tx = app.state.db.begin().await.unwrap();
    let applied = billing::settle_carried(&app.state, &mut tx, &answered, stepped.carried, now).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(applied, vec![true]);
    assert_eq!(subscription(&app, &sub_id).await["subscription_status"], "ACTIVE");
    let invoices = invoices_of(&app, &sub_id).await;
    assert_eq!(invoices.len(), 2);
    assert_eq!(invoices[1]["status"], "paid");
}

#[tokio::test]
async fn an_answer_settled_twice_from_the_steps_copy_is_applied_once() {
    let app = spawn_app().await;
    let sub_id = subscribed(&app, "4242424242424242").await;
    let (stepped, now) = renewal_stepped(&app).await;
    let answers = billing::charge_many(&app.state, &stepped.jobs, &stepped.carried).await;
    let answered: Vec<(&billing::ChargeJob, &billing::AttemptResult)> =
        stepped.jobs.iter().zip(&answers).map(|(j, a)| (j, a.as_ref().expect("the sandbox answers"))).collect();
    // The same answer arrives by another door first (the lease ran out, another instance asked).
    let mut tx = app.state.db.begin().await.unwrap();
    assert_eq!(billing::settle_many(&app.state, &mut tx, &answered, now).await.unwrap(), vec![true]);
    tx.commit().await.unwrap();
    // The step's copy still says the attempt is in flight; its write must lose.
    let mut tx = app.state.db.begin().await.unwrap();
    assert_eq!(
        billing::settle_carried(&app.state, &mut tx, &answered, stepped.carried, now).await.unwrap(),
        vec![false]
    );
    tx.commit().await.unwrap();
    let renewal = stepped.jobs[0].invoice.to_string();
    let paid = app.get(&format!("/v1/events?event_type=invoice.paid&object_id={renewal}")).await;
    assert_eq!(paid.body["events"].as_array().unwrap().len(), 1, "{}", paid.text);
    let intents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_intents WHERE invoice_id IS NOT NULL")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(intents, 2, "the first invoice's and the renewal's");
    assert_eq!(invoices_of(&app, &sub_id).await[1]["attempt_count"], 1);
}

#[tokio::test]
async fn a_renewals_events_carry_the_invoice_as_it_is_stored() {
    let app = spawn_app().await;
    let c = clock(&app, "2024-01-31T09:00:00Z").await;
    let customer = customer_on(&app, &c, "c-engine").await;
    save_card(&app, &customer, "4242424242424242").await;
    let (_, price) = monthly_price(&app, 4999, None).await;
    let r = app.post("/v1/subscriptions", json!({"customer_id": customer, "plan_id": price})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sub_id = r.body["id"].as_str().unwrap().to_string();
    advance(&app, &c, "2024-03-01T00:00:00Z").await;
    let renewal = invoices_of(&app, &sub_id).await.pop().unwrap();
    assert_eq!(renewal["billing_reason"], "subscription_cycle");
    let id = renewal["invoice_id"].as_str().unwrap();
    let events = app.get(&format!("/v1/events?object_id={id}&limit=100")).await;
    assert_eq!(events.status, 200, "{}", events.text);
    let by_type = |t: &str| -> Value {
        events.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_type"] == t)
            .unwrap_or_else(|| panic!("no {t} in {}", events.text))["object"]["invoice"]
            .clone()
    };
    // Settled from the step's copy, not a read: the payload must still be the stored invoice.
    assert_eq!(by_type("invoice.paid"), renewal);
    assert_eq!(by_type("invoice.payment_succeeded"), renewal);
    let created = by_type("invoice.created");
    assert_eq!(created["number"], renewal["number"]);
    assert_eq!(created["lines"], renewal["lines"]);
    assert_eq!(created["status"], "open");
}

#[tokio::test]
async fn subscriptions_read_as_json_come_back_exactly_as_written_and_in_due_order() {
    let app = spawn_app().await;
    let first = subscribed(&app, "4242424242424242").await;
    // Text that JSON must escape, and text it must not mangle.
    let tricky = "quote \" backslash \\ tab \t newline \n unicode é 中文 🙂 and a lone {\"}";
    let body = json!({"metadata": {"note": tricky, "empty": ""}, "lookup_key": "it's \"gold\""});
    let path = format!("/v1/subscriptions/{first}");
    let r = app.send(reqwest::Method::PATCH, &path, Some(&app.test_key), Some(body.to_string()), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.state.clock.advance_seconds(3600);
    let second = subscribed(&app, "4242424242424242").await;
    let s = subscription(&app, &first).await;
    assert_eq!(s["metadata"], json!({"note": tricky, "empty": ""}));
    assert_eq!(s["lookup_key"], "it's \"gold\"");
    // The engine's read of due work: both, earliest due first, with what the API shows.
    app.state.clock.advance_seconds(40 * 24 * 3600);
    let now = app.state.clock.now();
    let due = due_at(&app, now).await;
    let ids: Vec<&str> = due.iter().map(|(_, s)| s.id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    let read = &due[0].1;
    assert_eq!(read.metadata.as_ref().and_then(|m| m.get("note")), Some(tricky));
    assert_eq!(read.lookup_key.as_deref(), Some("it's \"gold\""));
    assert_eq!(read.items.len(), 1);
    assert_eq!(read.items[0].unit_amount, 4999);
}
