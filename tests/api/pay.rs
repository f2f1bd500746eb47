//! Paying on the hosted page through its plain form posts (the no-JavaScript path), and what a
//! completed session leaves behind.

use serde_json::{json, Value};

use crate::common::{spawn_app, spawn_app_with, TestApp};

pub(crate) async fn page(app: &TestApp, id: &str) -> (u16, String) {
    let r = app.client.get(format!("{}/pay/c/{id}", app.address)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

pub(crate) fn csrf(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    // A page without a form (a receipt, a lock) has no token; the post then shows how the server
    // answers a form without one.
    match html.find(marker) {
        Some(i) => html[i + marker.len()..i + marker.len() + 64].to_string(),
        None => String::new(),
    }
}

pub(crate) struct Posted {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    pub(crate) html: String,
}

pub(crate) async fn post_form(app: &TestApp, path: &str, fields: &[(&str, &str)]) -> Posted {
    let r = app
        .client
        .post(format!("{}{path}", app.address))
        .header("Origin", &app.address)
        .form(fields)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_string());
    Posted { status, location, html: r.text().await.unwrap() }
}

pub(crate) fn lmn_answers() -> Vec<(&'static str, &'static str)> {
    vec![("lmn_goals", "Lower my blood pressure"), ("lmn_conditions", "hypertension"), ("lmn_attest", "yes")]
}

pub(crate) async fn pay(app: &TestApp, id: &str, card: &str, extra: &[(&str, &str)]) -> Posted {
    let (_, html) = page(app, id).await;
    let token = csrf(&html);
    let mut fields = vec![
        ("csrf", token.as_str()),
        ("email", "ana@example.com"),
        ("first_name", "Ana"),
        ("last_name", "Silva"),
        ("card_number", card),
        ("card_expiry", "12 / 34"),
        ("card_cvc", "123"),
        ("card_postal_code", "94103"),
    ];
    fields.extend_from_slice(extra);
    post_form(app, &format!("/pay/c/{id}"), &fields).await
}

async fn seed_session(app: &TestApp) -> String {
    let (_, price) = app.seed_product_and_price().await;
    let s = app.create_session(json!({"mode": "subscription", "line_items": [{"price": price, "quantity": 1}]})).await;
    assert_eq!(s.status, 200, "{}", s.text);
    s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string()
}

async fn session(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/checkout/sessions/{id}")).await.body["checkout_session"].clone()
}

#[tokio::test]
async fn paying_the_seed_session_with_4242_completes_everything_once() {
    let app = spawn_app().await;
    let id = seed_session(&app).await;
    let (status, html) = page(&app, &id).await;
    assert_eq!(status, 200);
    assert!(html.contains("$49.99"));
    assert!(html.contains("HSA/FSA eligible"));
    assert!(html.contains("health questionnaire"));
    assert!(html.contains("Then $49.99/month"));

    let r = pay(&app, &id, "4242 4242 4242 4242", &lmn_answers()).await;
    assert_eq!(r.status, 303, "{}", r.html);
    assert_eq!(r.location.as_deref(), Some(format!("http://localhost:9/success?session_id={id}").as_str()));

    let s = session(&app, &id).await;
    assert_eq!(s["status"], "complete");
    assert_eq!(s["payment_status"], "paid");
    assert_eq!(s["customer_email"], "ana@example.com");
    let pi = s["payment_intent_id"].as_str().unwrap();
    let sub = s["subscription"].as_str().unwrap();
    let inv = s["invoice"].as_str().unwrap();
    let cus = s["customer"].as_str().unwrap();
    assert!(pi.starts_with("fpi_") && sub.starts_with("fsub_") && inv.starts_with("fin_") && cus.starts_with("fcus_"));

    let pi = app.get(&format!("/v1/payment_intents/{pi}")).await.body["payment_intent"].clone();
    assert_eq!(pi["amount"], 4999);
    assert_eq!(pi["amount_received"], 4999);
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["invoice"], inv);

    let sub = app.get(&format!("/v1/subscriptions/{sub}")).await.body;
    assert_eq!(sub["subscription_status"], "ACTIVE");
    assert_eq!(sub["billing_period"], "MONTH");
    assert!(sub["plan_id"].as_str().unwrap().starts_with("fprice_"));
    let start = time::OffsetDateTime::parse(
        sub["current_period_start"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let end = time::OffsetDateTime::parse(
        sub["current_period_end"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expected_end = flex_checkout::domain::billing_period::boundary(
        start,
        flex_checkout::domain::billing_period::PeriodUnit::Month,
        1,
        1,
    )
    .unwrap();
    assert_eq!(end, expected_end, "one calendar month from the start");

    let inv = app.get(&format!("/v1/invoices/{inv}")).await.body["invoice"].clone();
    assert_eq!(inv["status"], "paid");
    assert_eq!(inv["amount_paid"], 4999);
    assert_eq!(inv["billing_reason"], "subscription_create");

    let pms = app.get(&format!("/v1/customers/{cus}/payment_methods")).await.body;
    assert_eq!(pms["payment_methods"][0]["card"]["last4"], "4242");
    assert_eq!(pms["payment_methods"][0]["card"]["brand"], "visa");
    assert!(!pms.to_string().contains("4242424242424242"));

    let consultations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM consultations WHERE status = 'approved'")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(consultations, 1);

    let events = app.get("/v1/events?limit=100").await.body["events"].clone();
    let types: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    for t in [
        "checkout.session.completed",
        "customer.created",
        "payment_intent.succeeded",
        "customer.subscription.created",
        "invoice.paid",
    ] {
        assert_eq!(types.iter().filter(|x| **x == t).count(), 1, "{t} in {types:?}");
    }
    let completed =
        events.as_array().unwrap().iter().find(|e| e["event_type"] == "checkout.session.completed").unwrap();
    assert_eq!(completed["object"]["checkout_session"]["status"], "complete");

    // Revisiting shows the receipt page; paying again changes nothing.
    let (status, html) = page(&app, &id).await;
    assert_eq!(status, 200);
    assert!(html.contains("Payment received"));
    let again = pay(&app, &id, "4242424242424242", &lmn_answers()).await;
    assert!(again.status == 200 || again.status == 303);
    assert_eq!(app.count("payment_intents").await, 1);
}

#[tokio::test]
async fn a_declined_card_shows_the_reason_and_keeps_the_session_open() {
    let app = spawn_app().await;
    let price = app.one_time_price("Class pack", 2500).await;
    let s = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}]})).await;
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let r = pay(&app, &id, "4000000000009995", &[]).await;
    assert_eq!(r.status, 402);
    assert!(r.html.contains("Your card has insufficient funds."));
    assert!(r.html.contains("value=\"ana@example.com\""), "typed details are kept");
    assert!(!r.html.contains("4000000000009995"), "the card number is not echoed back");
    assert_eq!(session(&app, &id).await["status"], "open");
    for (card, message) in [
        ("4000000000000002", "Your card was declined."),
        ("4000000000000069", "Your card has expired."),
        ("4000000000000127", "Your card's security code is incorrect."),
    ] {
        let r = pay(&app, &id, card, &[]).await;
        assert!(r.html.contains(&message.replace('\'', "&#39;")), "{card}: {message}");
    }
    let ok = pay(&app, &id, "4242424242424242", &[]).await;
    assert_eq!(ok.status, 303);
    let s = session(&app, &id).await;
    assert_eq!(s["status"], "complete");
    assert_eq!(s["subscription"], json!(null));
    assert_eq!(app.count("payment_methods").await, 0, "payment mode does not keep the card");
}

#[tokio::test]
async fn five_declines_lock_the_session() {
    let app = spawn_app().await;
    let price = app.one_time_price("Class pack", 2500).await;
    let s = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}]})).await;
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    for _ in 0..4 {
        assert_eq!(pay(&app, &id, "4000000000000002", &[]).await.status, 402);
    }
    let fifth = pay(&app, &id, "4000000000000002", &[]).await;
    assert!(fifth.html.contains("Too many attempts"));
    let (status, html) = page(&app, &id).await;
    assert_eq!(status, 403, "a page seen before the lock is not served from memory after it");
    assert!(html.contains("Too many attempts"));
    let after = pay(&app, &id, "4242424242424242", &[]).await;
    assert_eq!(after.status, 403);
    assert!(after.html.contains("Too many attempts. Please contact the merchant."));
    assert_eq!(app.count("payment_intents").await, 0);
}

#[tokio::test]
async fn a_real_card_number_is_refused_in_test_mode() {
    let app = spawn_app().await;
    let price = app.one_time_price("Class pack", 2500).await;
    let s = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}]})).await;
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let r = pay(&app, &id, "4111111111111111", &[]).await;
    assert_eq!(r.status, 402);
    assert!(r.html.contains("Use a test card in test mode"));
    assert_eq!(app.count("payment_attempts").await, 0);
}

#[tokio::test]
async fn form_errors_are_tied_to_their_fields() {
    let app = spawn_app().await;
    let id = seed_session(&app).await;
    let (_, html) = page(&app, &id).await;
    let token = csrf(&html);
    let r = post_form(
        &app,
        &format!("/pay/c/{id}"),
        &[
            ("csrf", &token),
            ("email", "nope"),
            ("card_number", "4242424242424241"),
            ("card_expiry", "13/30"),
            ("card_cvc", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 422);
    for field in ["email", "card_number", "lmn_goals", "lmn_attest"] {
        assert!(r.html.contains(&format!("id=\"{field}-error\"")), "{field}");
        assert!(r.html.contains(&format!("aria-describedby=\"{field}-error\"")), "{field}");
    }
    assert!(r.html.contains("value=\"nope\""));
    assert_eq!(app.count("payment_attempts").await, 0);
}

#[tokio::test]
async fn posts_without_the_csrf_token_or_from_another_origin_are_refused() {
    let app = spawn_app().await;
    let id = seed_session(&app).await;
    let (_, html) = page(&app, &id).await;
    let no_token =
        post_form(&app, &format!("/pay/c/{id}"), &[("email", "a@b.co"), ("card_number", "4242424242424242")]).await;
    assert_eq!(no_token.status, 403);
    let forged = app
        .client
        .post(format!("{}/pay/c/{id}", app.address))
        .header("Origin", "https://evil.example")
        .form(&[("csrf", csrf(&html).as_str()), ("email", "a@b.co")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert_eq!(session(&app, &id).await["status"], "open");
}

#[tokio::test]
async fn the_page_sends_its_security_headers() {
    let app = spawn_app().await;
    let id = seed_session(&app).await;
    let r = app.client.get(format!("{}/pay/c/{id}", app.address)).send().await.unwrap();
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"));
    assert!(csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
}

#[tokio::test]
async fn three_d_secure_cards_pass_through_the_challenge_page() {
    let app = spawn_app().await;
    let id = seed_session(&app).await;
    let r = pay(&app, &id, "4000002500003155", &lmn_answers()).await;
    assert_eq!(r.status, 303);
    let challenge = r.location.unwrap();
    let (_, html) = page(&app, &id).await;
    assert!(html.contains("Continue to authentication"), "the page points to the waiting challenge");
    assert!(challenge.starts_with(&format!("/pay/c/{id}/authenticate/fpa_")));
    let page = app.client.get(format!("{}{challenge}", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Complete authentication") && page.contains("Fail authentication"));
    let token = csrf(&page);
    let failed = post_form(&app, &challenge, &[("csrf", &token), ("answer", "fail")]).await;
    assert_eq!(failed.status, 402);
    assert!(failed.html.contains("value=\"ana@example.com\""));
    assert_eq!(session(&app, &id).await["status"], "open");

    let r = pay(&app, &id, "4000002500003155", &lmn_answers()).await;
    let challenge = r.location.unwrap();
    let ok = post_form(&app, &challenge, &[("csrf", &token), ("answer", "approve")]).await;
    assert_eq!(ok.status, 303, "{}", ok.html);
    assert_eq!(ok.location.as_deref(), Some(format!("http://localhost:9/success?session_id={id}").as_str()));
    assert_eq!(session(&app, &id).await["status"], "complete");
    // A second answer to the same challenge changes nothing.
    let twice = post_form(&app, &challenge, &[("csrf", &token), ("answer", "approve")]).await;
    assert!(twice.status == 200 || twice.status == 303);
    assert_eq!(app.count("payment_intents").await, 1);
}

#[tokio::test]
async fn concurrent_submits_charge_exactly_once() {
    let app = spawn_app().await;
    let price = app.one_time_price("Class pack", 2500).await;
    let s = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}]})).await;
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let (_, html) = page(&app, &id).await;
    let token = csrf(&html);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = app.client.clone();
        let url = format!("{}/pay/c/{id}", app.address);
        let origin = app.address.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .header("Origin", origin)
                .form(&[
                    ("csrf", token.as_str()),
                    ("email", "ana@example.com"),
                    ("card_number", "4242424242424242"),
                    ("card_expiry", "12/34"),
                    ("card_cvc", "123"),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().get("location").map(|l| l.to_str().unwrap().to_string()))
        }));
    }
    for t in tasks {
        let (status, location) = t.await.unwrap();
        assert_eq!(status, 303, "every tab ends on the success page");
        assert_eq!(location.as_deref(), Some(format!("http://localhost:9/success?session_id={id}").as_str()));
    }
    assert_eq!(app.count("payment_intents").await, 1);
    let charged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sandbox_charges WHERE outcome = 'succeeded'")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(charged, 1);
}

#[tokio::test]
async fn setup_mode_saves_a_card_and_charges_nothing() {
    let app = spawn_app().await;
    let c = app.post("/v1/customers", json!({"customer": {"email": "old@example.com", "first_name": "Old"}})).await;
    let customer = c.body["customer"]["customer_id"].as_str().unwrap().to_string();
    let s = app.create_session(json!({"mode": "setup", "customer": customer})).await;
    assert_eq!(s.status, 200, "{}", s.text);
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let (_, html) = page(&app, &id).await;
    assert!(html.contains("value=\"old@example.com\""), "pre-filled from the customer");
    assert!(html.contains("Save card"));
    let r = pay(&app, &id, "4000000000000341", &[]).await;
    assert_eq!(r.status, 303);
    let s = session(&app, &id).await;
    assert_eq!(s["status"], "complete");
    assert_eq!(s["payment_status"], "no_payment_required");
    assert_eq!(s["customer"], customer.as_str());
    assert_eq!(app.count("payment_intents").await, 0);
    assert_eq!(app.count("customers").await, 1, "the named customer is reused");
    let pms = app.get(&format!("/v1/customers/{customer}/payment_methods")).await.body;
    assert_eq!(pms["payment_methods"][0]["card"]["last4"], "0341");
    assert_eq!(pms["payment_methods"][0]["off_session"], true);
}

#[tokio::test]
async fn a_trial_subscription_charges_nothing_today() {
    let app = spawn_app().await;
    let p = app.post("/v1/products", json!({"product": {"name": "App"}})).await;
    let product = p.body["product"]["product_id"].as_str().unwrap();
    let pr = app
        .post("/v1/prices", json!({"price": {"product": product, "unit_amount": 999, "recurring": {"interval": "monthly", "trial_period_days": 14}}}))
        .await;
    let price = pr.body["price"]["price_id"].as_str().unwrap();
    let s = app.create_session(json!({"mode": "subscription", "line_items": [{"price": price}]})).await;
    assert_eq!(s.body["checkout_session"]["amount_total"], 0);
    assert_eq!(s.body["checkout_session"]["amount_subtotal"], 999);
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let (_, html) = page(&app, &id).await;
    assert!(html.contains("Start trial"));
    assert!(html.contains("after a 14-day free trial"));
    let r = pay(&app, &id, "4242424242424242", &[]).await;
    assert_eq!(r.status, 303);
    let s = session(&app, &id).await;
    let sub = app.get(&format!("/v1/subscriptions/{}", s["subscription"].as_str().unwrap())).await.body;
    assert_eq!(sub["subscription_status"], "TRIALING");
    assert_eq!(sub["trial_end"], sub["current_period_end"]);
    assert_eq!(sub["billing_anchor"], sub["trial_end"]);
    let inv = app.get(&format!("/v1/invoices/{}", s["invoice"].as_str().unwrap())).await.body;
    assert_eq!(inv["invoice"]["amount_due"], 0);
    assert_eq!(app.count("payment_intents").await, 0);
}

#[tokio::test]
async fn a_session_expired_while_the_page_was_open_refuses_payment() {
    let app = spawn_app().await;
    let id = seed_session(&app).await;
    let (_, html) = page(&app, &id).await;
    app.state.clock.advance_seconds(3600);
    let token = csrf(&html);
    let r = post_form(&app, &format!("/pay/c/{id}"), &[("csrf", &token), ("email", "a@b.co")]).await;
    assert_eq!(r.status, 410);
    assert!(r.html.contains("This checkout link has expired"));
}

#[tokio::test]
async fn merchant_text_is_escaped_on_the_page() {
    let app = spawn_app().await;
    let p = app
        .post(
            "/v1/products",
            json!({"product": {"name": "<script>alert(1)</script>", "description": "<img src=x onerror=alert(2)>"}}),
        )
        .await;
    let product = p.body["product"]["product_id"].as_str().unwrap();
    let pr = app.post("/v1/prices", json!({"price": {"product": product, "unit_amount": 100}})).await;
    let price = pr.body["price"]["price_id"].as_str().unwrap();
    let s = app
        .create_session(json!({"mode": "payment", "line_items": [{"price": price}], "cancel_url": "http://localhost:9/\"><script>x</script>"}))
        .await;
    assert_eq!(s.status, 200, "{}", s.text);
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap();
    let (_, html) = page(&app, id).await;
    assert!(!html.contains("<script>alert(1)</script>"));
    assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    assert!(!html.contains("<img src=x"));
    assert!(!html.contains("\"><script>x"));
}

#[tokio::test]
async fn one_address_cannot_try_cards_without_limit_across_sessions() {
    let app = spawn_app_with(|s| s.pay_attempts_per_ip_per_minute = 3).await;
    let price = app.one_time_price("Class pack", 2500).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let s = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}]})).await;
        let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
        statuses.push(pay(&app, &id, "4000000000000002", &[]).await.status);
    }
    assert_eq!(statuses, vec![402, 402, 402, 429]);
    assert_eq!(app.count("payment_attempts").await, 3);
}

#[tokio::test]
async fn an_oversized_form_gets_a_page_not_an_error_dump() {
    let app = spawn_app().await;
    let id = seed_session(&app).await;
    let big = "x".repeat(100_000);
    let r = post_form(&app, &format!("/pay/c/{id}"), &[("email", big.as_str())]).await;
    assert_eq!(r.status, 413);
    assert!(r.html.contains("<h1>"), "{}", &r.html[..r.html.len().min(200)]);
}

/// Starts a payment the way the page does, up to the gateway's answer, and stops there as if the
/// process had died before recording it. Returns the attempt id.
async fn pay_and_die(app: &TestApp, id: &str, card: &str, reach_gateway: bool) -> String {
    use flex_checkout::domain::card::CardInput;
    use flex_checkout::domain::ids::{CheckoutSessionId, PaymentAttemptId};
    use flex_checkout::domain::Mode;
    use flex_checkout::gateway::{CardEntry, ChargeRequest};
    let state = &app.state;
    let gateway = state.gateways.for_mode(Mode::Test).unwrap();
    let CardEntry::OwnForm(cards) = gateway.card_entry() else { panic!("the sandbox takes cards on our form") };
    let session_id = CheckoutSessionId::parse(id).unwrap();
    let card = CardInput::parse(card, "12/34", "123", "", (2026, 1)).unwrap();
    let saved = cards.save_card(&card).await.unwrap();
    let attempt = PaymentAttemptId::generate();
    let now = state.clock.now();
    let mut tx = state.db.begin().await.unwrap();
    let owned = flex_checkout::db::checkout_sessions::get_any(&mut tx, &session_id).await.unwrap().unwrap();
    assert!(flex_checkout::db::checkout_sessions::claim_for_payment(&mut tx, &session_id, &attempt, now, now, 5)
        .await
        .unwrap());
    flex_checkout::db::payments::insert_attempt(
        &mut tx,
        flex_checkout::db::payments::NewAttempt {
            id: &attempt,
            owner: &owned.owner,
            session: &session_id,
            amount: owned.session.amount_total,
            currency: owned.session.currency,
            contact: r#"{"email":"crash@example.com","first_name":null,"last_name":null,"phone":null,"shipping":null,"lmn":null}"#,
            card: Some(&saved.details),
            gateway: gateway.name(),
            gateway_ref: Some(&saved.gateway_ref),
            gateway_customer: None,
            status: "pending",
        },
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    if reach_gateway {
        gateway
            .charge(ChargeRequest {
                idempotency_key: attempt.as_str(),
                card: &saved,
                amount: owned.session.amount_total,
                currency: owned.session.currency,
                off_session: false,
                manual_capture: false,
            })
            .await
            .unwrap();
    }
    attempt.to_string()
}

#[tokio::test]
async fn a_payment_whose_process_died_after_the_charge_is_completed_by_the_reconciler() {
    let app = spawn_app().await;
    let price = app.one_time_price("Class pack", 2500).await;
    let s = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}]})).await;
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    pay_and_die(&app, &id, "4242424242424242", true).await;
    assert_eq!(session(&app, &id).await["status"], "open");
    assert_eq!(app.run_workers().await, 0, "too fresh to be presumed dead");
    app.state.clock.advance_seconds(121);
    assert_eq!(app.run_workers().await, 1);
    let s = session(&app, &id).await;
    assert_eq!(s["status"], "complete");
    assert_eq!(s["customer_email"], "crash@example.com");
    assert_eq!(app.count("payment_intents").await, 1);
    assert_eq!(app.run_workers().await, 0, "settled once");
}

#[tokio::test]
async fn a_payment_that_never_reached_the_gateway_frees_the_session() {
    let app = spawn_app().await;
    let price = app.one_time_price("Class pack", 2500).await;
    let s = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}]})).await;
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    pay_and_die(&app, &id, "4242424242424242", false).await;
    app.state.clock.advance_seconds(121);
    assert_eq!(app.run_workers().await, 1);
    assert_eq!(session(&app, &id).await["status"], "open");
    assert_eq!(app.count("payment_intents").await, 0);
    let r = pay(&app, &id, "4242424242424242", &[]).await;
    assert_eq!(r.status, 303);
    assert_eq!(session(&app, &id).await["status"], "complete");
}

#[tokio::test]
async fn an_unanswered_challenge_is_canceled_after_its_timeout() {
    let app = spawn_app().await;
    let price = app.one_time_price("Class pack", 2500).await;
    let s = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}], "expires_at": app.state.clock.now().unix_seconds() + 7200})).await;
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let r = pay(&app, &id, "4000002760003184", &[]).await;
    assert!(r.location.unwrap().contains("/authenticate/"));
    app.state.clock.advance_seconds(14 * 60);
    assert_eq!(app.run_workers().await, 0);
    app.state.clock.advance_seconds(2 * 60);
    assert_eq!(app.run_workers().await, 1);
    let (status, html) = page(&app, &id).await;
    assert_eq!(status, 200);
    assert!(!html.contains("Continue to authentication"));
    assert_eq!(session(&app, &id).await["status"], "open");
}

/// Stripe mode: a card setup the browser never confirmed is kept while the customer may still be
/// busy with their bank, then given up, and never holds the session.
#[tokio::test]
async fn an_unconfirmed_stripe_card_setup_is_given_up_without_holding_the_session() {
    use crate::common::stripe::{contact_fields, pay_with_stripe, spawn_stripe_app, start_setup};
    let Some(app) = spawn_stripe_app().await else { return };
    let price = app.one_time_price("Class pack", 2500).await;
    let s = app.create_session(json!({"mode": "payment", "line_items": [{"price": price}]})).await;
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let (status, setup) = start_setup(&app, &id, &contact_fields()).await;
    assert_eq!(status, 200, "{setup}");
    let attempt = setup["attempt"].as_str().unwrap().to_string();
    let status_of = |a: String| {
        let pool = app.state.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM payment_attempts WHERE id = $1")
                .bind(a)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    app.state.clock.advance_seconds(121);
    app.run_workers().await;
    assert_eq!(status_of(attempt.clone()).await, "setup", "the customer may still be confirming");
    app.state.clock.advance_seconds(15 * 60);
    app.run_workers().await;
    assert_eq!(status_of(attempt.clone()).await, "abandoned");
    // Nothing held the session: another card pays it.
    let res = pay_with_stripe(&app, &id, "4242424242424242").await;
    assert_eq!(res.status(), 303);
    assert_eq!(session(&app, &id).await["status"], "complete");
}

/// Stripe mode posts without JavaScript cannot carry a card: the page says why, keeps what was typed.
#[tokio::test]
async fn a_stripe_mode_form_post_without_javascript_explains_itself() {
    use crate::common::stripe::spawn_stripe_app;
    let Some(app) = spawn_stripe_app().await else { return };
    let id = seed_session(&app).await;
    let (_, html) = page(&app, &id).await;
    let token = csrf(&html);
    let r = post_form(&app, &format!("/pay/c/{id}"), &[("csrf", token.as_str()), ("email", "ana@example.com")]).await;
    assert_eq!(r.status, 422, "{}", r.html);
    assert!(r.html.contains("needs JavaScript"), "{}", r.html);
    assert!(r.html.contains("ana@example.com"));
    assert_eq!(app.count("payment_attempts").await, 0);
}
