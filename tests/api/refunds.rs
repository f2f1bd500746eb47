//! `POST /v1/refunds` and its reads: full and partial refunds, never more than what is left (also
//! under concurrency), bad input named by param with nothing written, tenancy, idempotency, events,
//! a processor that refuses or does not answer; and the same against Stripe (localstripe).

use serde_json::{json, Value};

use crate::common::stripe::{localstripe_get, pay_with_stripe, spawn_stripe_app};
use crate::common::{spawn_app, spawn_app_with_live_stripe, TestApp};

fn csrf(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let i = html.find(marker).unwrap_or_else(|| panic!("no CSRF token on the page: {html}"));
    html[i + marker.len()..i + marker.len() + 64].to_string()
}

/// Pays `session` on the hosted page's plain form with 4242... (the sandbox).
async fn pay_with_sandbox(app: &TestApp, session: &str) {
    let html = app.client.get(format!("{}/pay/c/{session}", app.address)).send().await.unwrap().text().await.unwrap();
    let token = csrf(&html);
    let r = app
        .client
        .post(format!("{}/pay/c/{session}", app.address))
        .header("Origin", &app.address)
        .form(&[
            ("csrf", token.as_str()),
            ("email", "ana@example.com"),
            ("first_name", "Ana"),
            ("last_name", "Silva"),
            ("card_number", "4242 4242 4242 4242"),
            ("card_expiry", "12 / 34"),
            ("card_cvc", "123"),
            ("card_postal_code", "94103"),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 303, "{}", r.text().await.unwrap());
}

async fn payment_session(app: &TestApp, amount: i64, extra: Value) -> String {
    let price = app.one_time_price("Class pack", amount).await;
    let mut fields = json!({"mode": "payment", "line_items": [{"price": price}]});
    for (k, v) in extra.as_object().unwrap() {
        fields[k] = v.clone();
    }
    let s = app.create_session(fields).await;
    assert_eq!(s.status, 200, "{}", s.text);
    s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string()
}

async fn payment_intent_of(app: &TestApp, session: &str) -> String {
    let s = app.get(&format!("/v1/checkout/sessions/{session}")).await;
    s.body["checkout_session"]["payment_intent_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no payment intent: {}", s.text))
        .to_string()
}

/// A payment intent of `amount` paid in the sandbox.
async fn paid(app: &TestApp, amount: i64) -> String {
    let session = payment_session(app, amount, json!({})).await;
    pay_with_sandbox(app, &session).await;
    payment_intent_of(app, &session).await
}

async fn refund(app: &TestApp, body: Value) -> crate::common::Response {
    app.post("/v1/refunds", json!({ "refund": body })).await
}

async fn amount_refunded(app: &TestApp, pi: &str) -> i64 {
    let r = app.get(&format!("/v1/payment_intents/{pi}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["payment_intent"]["amount_refunded"].as_i64().unwrap()
}

/// What the sandbox processor's own ledger has refunded of the charge behind `pi`.
async fn sandbox_ledger(app: &TestApp, pi: &str) -> i64 {
    let charge: String = sqlx::query_scalar("SELECT gateway_ref FROM payment_intents WHERE id = $1")
        .bind(pi)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    let key = charge.strip_prefix("sbx_ch_").expect("a sandbox charge");
    sqlx::query_scalar("SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM sandbox_refunds WHERE charge_key = $1")
        .bind(key)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

/// Everything a refused refund must leave alone.
async fn everything(app: &TestApp, pi: &str) -> (Vec<(String, i64)>, i64, i64, i64) {
    (
        app.snapshot().await,
        app.count("refunds").await,
        app.count("sandbox_refunds").await,
        amount_refunded(app, pi).await,
    )
}

fn assert_invalid(r: &crate::common::Response, param: &str) {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["type"], "invalid_request_error", "{}", r.text);
    assert_eq!(r.body["error"]["param"], param, "{}", r.text);
}

fn events_of(events: &Value, event_type: &str) -> Vec<Value> {
    events["events"].as_array().unwrap().iter().filter(|e| e["event_type"] == event_type).cloned().collect()
}

#[tokio::test]
async fn a_full_refund_takes_back_everything_received() {
    let app = spawn_app().await;
    let pi = paid(&app, 4999).await;
    let r =
        refund(&app, json!({"payment_intent": pi, "reason": "requested_by_customer", "metadata": {"ticket": "T-1"}}))
            .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let re = &r.body["refund"];
    assert!(re["refund_id"].as_str().unwrap().starts_with("fre_"));
    assert_eq!(re["payment_intent"], pi);
    assert_eq!(re["amount"], 4999);
    assert_eq!(re["currency"], "usd");
    assert_eq!(re["reason"], "requested_by_customer");
    assert_eq!(re["status"], "succeeded");
    assert_eq!(re["failure_reason"], Value::Null);
    assert_eq!(re["metadata"], json!({"ticket": "T-1"}));
    assert_eq!(re["test_mode"], true);
    assert!(re["created_at"].as_str().unwrap().ends_with('Z'));

    let pi_now = app.get(&format!("/v1/payment_intents/{pi}")).await.body["payment_intent"].clone();
    assert_eq!(pi_now["amount_refunded"], 4999);
    assert_eq!(pi_now["amount_received"], 4999);
    assert_eq!(pi_now["status"], "succeeded");
    assert_eq!(sandbox_ledger(&app, &pi).await, 4999);

    let again = refund(&app, json!({"payment_intent": pi})).await;
    assert_eq!(again.status, 422, "{}", again.text);
    assert_eq!(again.body["error"]["code"], "charge_already_refunded");
    assert_eq!(app.count("refunds").await, 1);

    let events = app.get("/v1/events?event_type=refund.created").await.body;
    let created = events_of(&events, "refund.created");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["object"]["refund"], *re, "the event carries the refund as the API shows it");
}

#[tokio::test]
async fn partial_refunds_never_exceed_what_is_left() {
    let app = spawn_app().await;
    let pi = paid(&app, 4999).await;
    for amount in [1000, 2000] {
        let r = refund(&app, json!({"payment_intent": pi, "amount": amount})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["refund"]["amount"], amount);
        assert_eq!(r.body["refund"]["status"], "succeeded");
    }
    assert_eq!(amount_refunded(&app, &pi).await, 3000);

    let before = everything(&app, &pi).await;
    let over = refund(&app, json!({"payment_intent": pi, "amount": 2000})).await;
    assert_invalid(&over, "refund.amount");
    let message = over.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("1999") && message.contains("$19.99"), "says how much is left: {message}");
    assert_eq!(everything(&app, &pi).await, before, "nothing changed");

    // Without an amount, what is left.
    let rest = refund(&app, json!({"payment_intent": pi})).await;
    assert_eq!(rest.status, 200, "{}", rest.text);
    assert_eq!(rest.body["refund"]["amount"], 1999);
    assert_eq!(amount_refunded(&app, &pi).await, 4999);
    assert_eq!(sandbox_ledger(&app, &pi).await, 4999);
    let none_left = refund(&app, json!({"payment_intent": pi, "amount": 1})).await;
    assert_eq!(none_left.status, 422, "{}", none_left.text);
    assert_eq!(none_left.body["error"]["code"], "charge_already_refunded");
}

#[tokio::test]
async fn concurrent_refunds_never_add_up_to_more_than_was_received() {
    let app = spawn_app().await;
    let pi = paid(&app, 4999).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = app.client.clone();
        let url = format!("{}/v1/refunds", app.address);
        let key = app.test_key.clone();
        let body = json!({"refund": {"payment_intent": pi, "amount": 1000}}).to_string();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }));
    }
    let mut succeeded = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => {
                assert_eq!(body["refund"]["status"], "succeeded", "{body}");
                succeeded += 1;
            }
            400 => assert_eq!(body["error"]["param"], "refund.amount", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(succeeded, 4);
    assert_eq!(amount_refunded(&app, &pi).await, 4000);
    assert_eq!(sandbox_ledger(&app, &pi).await, 4000, "the processor's ledger agrees");
    assert_eq!(app.count("refunds").await, 4, "refused requests write no refund");
}

#[tokio::test]
async fn bad_input_names_the_param_and_writes_nothing() {
    let app = spawn_app().await;
    let pi = paid(&app, 4999).await;
    let before = everything(&app, &pi).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"refund": {}}), "refund.payment_intent"),
        (json!({"refund": {"payment_intent": null}}), "refund.payment_intent"),
        (json!({"refund": {"payment_intent": 42}}), "refund.payment_intent"),
        (json!({"refund": {"payment_intent": pi.replace("fpi_", "fcus_")}}), "refund.payment_intent"),
        (json!({"refund": {"payment_intent": "fpi_nope"}}), "refund.payment_intent"),
        (json!({"refund": {"payment_intent": "fpi_01HWDVH2ZK3N4P5Q6R7S8T9V0W"}}), "refund.payment_intent"),
        (json!({"refund": {"payment_intent": pi, "amount": 0}}), "refund.amount"),
        (json!({"refund": {"payment_intent": pi, "amount": -1}}), "refund.amount"),
        (json!({"refund": {"payment_intent": pi, "amount": "12"}}), "refund.amount"),
        (json!({"refund": {"payment_intent": pi, "amount": 1.5}}), "refund.amount"),
        (json!({"refund": {"payment_intent": pi, "amount": 5000}}), "refund.amount"),
        (json!({"refund": {"payment_intent": pi, "reason": "changed_mind"}}), "refund.reason"),
        (json!({"refund": {"payment_intent": pi, "amout": 100}}), "refund.amout"),
        (json!({"refund": {"payment_intent": pi, "metadata": {"n": 1}}}), "refund.metadata.n"),
        (json!({"payment_intent": pi}), "refund"),
        (json!({"refund": {"payment_intent": pi}, "extra": 1}), "extra"),
    ];
    for (body, param) in cases {
        let r = app.post("/v1/refunds", body.clone()).await;
        assert_invalid(&r, param);
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty(), "{body}");
    }
    let no_such =
        app.post("/v1/refunds", json!({"refund": {"payment_intent": "fpi_01HWDVH2ZK3N4P5Q6R7S8T9V0W"}})).await;
    assert!(no_such.body["error"]["message"].as_str().unwrap().contains("No such payment intent"));
    let reason = app.post("/v1/refunds", json!({"refund": {"payment_intent": pi, "reason": "changed_mind"}})).await;
    assert!(reason.body["error"]["message"].as_str().unwrap().contains("requested_by_customer"));
    for raw in ["", "{", "[]", "{\"refund\": 1}"] {
        let r = app.post_raw("/v1/refunds", raw).await;
        assert_eq!(r.status, 400, "{raw}: {}", r.text);
    }
    assert_eq!(everything(&app, &pi).await, before, "no rows written");
}

#[tokio::test]
async fn only_a_succeeded_payment_intent_can_be_refunded() {
    let app = spawn_app().await;
    let session = payment_session(&app, 2500, json!({"capture_method": "manual"})).await;
    pay_with_sandbox(&app, &session).await;
    let pi = payment_intent_of(&app, &session).await;
    let before = everything(&app, &pi).await;
    let r = refund(&app, json!({"payment_intent": pi})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "payment_intent_unexpected_state");
    assert_eq!(everything(&app, &pi).await, before);
}

#[tokio::test]
async fn another_merchants_or_modes_payment_intent_is_no_such_payment_intent() {
    // Live keys need a live Stripe key; test mode still pays in the sandbox.
    let app = spawn_app_with_live_stripe().await;
    let pi = paid(&app, 4999).await;
    let mine = refund(&app, json!({"payment_intent": pi, "amount": 100})).await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    let refund_id = mine.body["refund"]["refund_id"].as_str().unwrap().to_string();
    let before = everything(&app, &pi).await;

    let other = app.other_merchant_key().await;
    for key in [other.as_str(), app.live_key.as_str()] {
        let r = app.post_as(key, "/v1/refunds", json!({"refund": {"payment_intent": pi}})).await;
        assert_invalid(&r, "refund.payment_intent");
        assert_eq!(app.get_as(key, &format!("/v1/refunds/{refund_id}")).await.status, 404);
        let list = app.get_as(key, "/v1/refunds").await;
        assert_eq!(list.status, 200, "{}", list.text);
        assert_eq!(list.body["refunds"], json!([]));
    }
    assert_eq!(everything(&app, &pi).await, before, "no refund for anyone else");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_refund_and_refunds_once() {
    let app = spawn_app().await;
    let pi = paid(&app, 4999).await;
    let body = json!({"refund": {"payment_intent": pi, "amount": 1500}}).to_string();
    let send =
        || app.send(reqwest::Method::POST, "/v1/refunds", Some(&app.test_key), Some(body.clone()), Some("refund-once"));
    let first = send().await;
    assert_eq!(first.status, 200, "{}", first.text);
    let second = send().await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text, first.text, "replayed byte for byte");
    assert_eq!(second.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(app.count("refunds").await, 1);
    assert_eq!(amount_refunded(&app, &pi).await, 1500);
    assert_eq!(sandbox_ledger(&app, &pi).await, 1500);

    let other_body = json!({"refund": {"payment_intent": pi, "amount": 1}}).to_string();
    let clash = app
        .send(reqwest::Method::POST, "/v1/refunds", Some(&app.test_key), Some(other_body), Some("refund-once"))
        .await;
    assert_eq!(clash.status, 409, "{}", clash.text);
    assert_eq!(app.count("refunds").await, 1);
}

#[tokio::test]
async fn refunds_are_retrieved_and_listed_newest_first() {
    let app = spawn_app().await;
    let pi_a = paid(&app, 4999).await;
    let pi_b = paid(&app, 2500).await;
    let mut ids = Vec::new();
    for (pi, amount) in [(&pi_a, 100), (&pi_b, 200), (&pi_a, 300)] {
        let r = refund(&app, json!({"payment_intent": pi, "amount": amount})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        ids.push(r.body["refund"]["refund_id"].as_str().unwrap().to_string());
    }

    let one = app.get(&format!("/v1/refunds/{}", ids[1])).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.body["refund"]["amount"], 200);
    assert_eq!(one.body["refund"]["payment_intent"], pi_b);
    for bad in ["fre_nope", "fpi_01HWDVH2ZK3N4P5Q6R7S8T9V0W", "fre_01HWDVH2ZK3N4P5Q6R7S8T9V0W"] {
        let r = app.get(&format!("/v1/refunds/{bad}")).await;
        assert_eq!(r.status, 404, "{bad}: {}", r.text);
        assert_eq!(r.body["error"]["type"], "not_found");
    }

    let all = app.get("/v1/refunds").await;
    assert_eq!(all.status, 200, "{}", all.text);
    let listed: Vec<&str> =
        all.body["refunds"].as_array().unwrap().iter().map(|r| r["refund_id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    assert_eq!(all.body["has_more"], false);

    let of_a = app.get(&format!("/v1/refunds?payment_intent={pi_a}")).await;
    let listed: Vec<&str> =
        of_a.body["refunds"].as_array().unwrap().iter().map(|r| r["refund_id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[0].as_str()]);

    let page = app.get("/v1/refunds?limit=2").await;
    assert_eq!(page.body["refunds"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["has_more"], true);
    let next = app.get(&format!("/v1/refunds?limit=2&starting_after={}", ids[1])).await;
    assert_eq!(next.body["refunds"][0]["refund_id"], ids[0]);
    assert_eq!(next.body["has_more"], false);
    let newer = app.get(&format!("/v1/refunds?ending_before={}", ids[0])).await;
    assert_eq!(newer.body["refunds"].as_array().unwrap().len(), 2);

    for (query, param) in [
        ("payment_intent=fcus_x", "payment_intent"),
        ("limit=0", "limit"),
        ("starting_after=fpi_x", "starting_after"),
        ("status=failed", "status"),
    ] {
        let r = app.get(&format!("/v1/refunds?{query}")).await;
        assert_invalid(&r, param);
    }
    assert_eq!(app.send(reqwest::Method::DELETE, "/v1/refunds", Some(&app.test_key), None, None).await.status, 405);
}

#[tokio::test]
async fn a_refund_the_processor_refuses_is_failed_and_gives_the_amount_back() {
    let app = spawn_app().await;
    let pi = paid(&app, 4999).await;
    // The processor's ledger says more was refunded than we know of (a refund made outside).
    let charge: String = sqlx::query_scalar("SELECT gateway_ref FROM payment_intents WHERE id = $1")
        .bind(&pi)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO sandbox_refunds (idempotency_key, charge_key, amount, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind("refunded-elsewhere")
    .bind(charge.strip_prefix("sbx_ch_").unwrap())
    .bind(4000_i64)
    .bind(0_i64)
    .execute(&app.state.db.pool)
    .await
    .unwrap();

    let r = refund(&app, json!({"payment_intent": pi})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "refund_failed");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("only 999"), "the processor's reason: {message}");
    assert_eq!(amount_refunded(&app, &pi).await, 0, "the held amount is given back");

    let list = app.get(&format!("/v1/refunds?payment_intent={pi}")).await;
    let failed = &list.body["refunds"][0];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["amount"], 4999);
    assert!(failed["failure_reason"].as_str().unwrap().contains("only 999"));
    assert!(message.contains(failed["refund_id"].as_str().unwrap()), "the message names the refund");
    let events = app.get("/v1/events?event_type=refund.failed").await.body;
    assert_eq!(events_of(&events, "refund.failed").len(), 1);
    assert_eq!(events_of(&events, "refund.failed")[0]["object"]["refund"], *failed);

    let ok = refund(&app, json!({"payment_intent": pi, "amount": 999})).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(amount_refunded(&app, &pi).await, 999);
}

#[tokio::test]
async fn a_refund_without_an_answer_stays_pending_and_the_worker_finishes_it_once() {
    let app = spawn_app().await;
    let pi = paid(&app, 4999).await;
    let pool = &app.state.db.pool;
    // The sandbox processor cannot reach its ledger: it does not know what happened.
    sqlx::query("ALTER TABLE sandbox_refunds RENAME TO sandbox_refunds_away").execute(pool).await.unwrap();
    let r = refund(&app, json!({"payment_intent": pi, "amount": 1200})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["refund"]["status"], "pending");
    let id = r.body["refund"]["refund_id"].as_str().unwrap().to_string();
    assert_eq!(amount_refunded(&app, &pi).await, 1200, "held while pending");
    let over = refund(&app, json!({"payment_intent": pi, "amount": 3800})).await;
    assert_invalid(&over, "refund.amount");

    // Not retried before a minute has passed, nor while the processor still cannot answer.
    app.run_workers().await;
    app.state.clock.advance_seconds(61);
    app.run_workers().await;
    assert_eq!(app.get(&format!("/v1/refunds/{id}")).await.body["refund"]["status"], "pending");
    let events = app.get("/v1/events?event_type=refund.created").await.body;
    assert!(events_of(&events, "refund.created").is_empty());

    sqlx::query("ALTER TABLE sandbox_refunds_away RENAME TO sandbox_refunds").execute(pool).await.unwrap();
    app.run_workers().await;
    assert_eq!(app.get(&format!("/v1/refunds/{id}")).await.body["refund"]["status"], "pending", "claimed a moment ago");
    app.state.clock.advance_seconds(61);
    assert!(app.run_workers().await >= 1);
    let done = app.get(&format!("/v1/refunds/{id}")).await.body["refund"].clone();
    assert_eq!(done["status"], "succeeded");
    assert_eq!(amount_refunded(&app, &pi).await, 1200);
    assert_eq!(sandbox_ledger(&app, &pi).await, 1200);
    let events = app.get("/v1/events?event_type=refund.created").await.body;
    assert_eq!(events_of(&events, "refund.created").len(), 1);
    assert_eq!(events_of(&events, "refund.created")[0]["object"]["refund"], done);

    app.state.clock.advance_seconds(61);
    app.run_workers().await;
    assert_eq!(sandbox_ledger(&app, &pi).await, 1200, "asked once more at most, refunded once");
    assert_eq!(app.count("refunds").await, 1);
}

#[tokio::test]
async fn stripe_partial_then_full_refund_and_no_over_refund() {
    let Some(app) = spawn_stripe_app().await else { return };
    let session = payment_session(&app, 4999, json!({})).await;
    let paid = pay_with_stripe(&app, &session, "4242424242424242").await;
    let status = paid.status().as_u16();
    assert_eq!(status, 303, "{}", paid.text().await.unwrap());
    let pi = payment_intent_of(&app, &session).await;
    let stripe_pi: String = sqlx::query_scalar("SELECT gateway_ref FROM payment_intents WHERE id = $1")
        .bind(&pi)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert!(stripe_pi.starts_with("pi_"), "{stripe_pi}");
    // localstripe refunds whatever it is asked, so its list shows exactly what reached it.
    let at_stripe = || {
        let path = format!("/v1/refunds?payment_intent={stripe_pi}&limit=100");
        async move {
            let list = localstripe_get(&path).await;
            let mut amounts: Vec<(String, i64)> = list["data"]
                .as_array()
                .unwrap_or_else(|| panic!("{list}"))
                .iter()
                .map(|r| (r["id"].as_str().unwrap().to_string(), r["amount"].as_i64().unwrap()))
                .collect();
            amounts.sort();
            amounts
        }
    };

    let partial = refund(&app, json!({"payment_intent": pi, "amount": 1000})).await;
    assert_eq!(partial.status, 200, "{}", partial.text);
    assert_eq!(partial.body["refund"]["status"], "succeeded");
    assert_eq!(at_stripe().await.iter().map(|(_, a)| a).sum::<i64>(), 1000);

    let over = refund(&app, json!({"payment_intent": pi, "amount": 4000})).await;
    assert_invalid(&over, "refund.amount");
    assert_eq!(at_stripe().await.len(), 1, "refused before reaching Stripe");

    let full = refund(&app, json!({"payment_intent": pi})).await;
    assert_eq!(full.status, 200, "{}", full.text);
    assert_eq!(full.body["refund"]["amount"], 3999);
    assert_eq!(amount_refunded(&app, &pi).await, 4999);

    let stripe = at_stripe().await;
    let mut ours: Vec<(String, i64)> =
        sqlx::query_as::<_, (String, i64)>("SELECT gateway_ref, amount FROM refunds WHERE payment_intent_id = $1")
            .bind(&pi)
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap();
    ours.sort();
    assert_eq!(stripe, ours, "Stripe's refunds are ours, amount for amount");

    let none_left = refund(&app, json!({"payment_intent": pi, "amount": 1})).await;
    assert_eq!(none_left.status, 422, "{}", none_left.text);
    assert_eq!(none_left.body["error"]["code"], "charge_already_refunded");
    assert_eq!(at_stripe().await.len(), 2);
}
