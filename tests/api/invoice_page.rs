//! The hosted invoice page (`/pay/i/{id}`) through its plain form posts: what it shows for each
//! invoice status, paying a `SEND_INVOICE` invoice with a card typed on it (which the customer's
//! renewals then use), declines, 3-D Secure, double submits, and the page's guarantees.

use serde_json::{json, Value};

use crate::billing::{advance, clock, customer_on, invoices_of, monthly_price, save_card, subscription};
use crate::common::{spawn_app, spawn_app_on, spawn_app_with, spawn_app_with_live_stripe, TestApp};
use crate::pay::{csrf, post_form, Posted};

/// A customer with a monthly `SEND_INVOICE` subscription (30 days to pay); returns the customer,
/// the subscription and its first invoice, which is open.
async fn open_invoice(app: &TestApp) -> (String, String, Value) {
    open_invoice_as(app, &app.test_key.clone()).await
}

async fn open_invoice_as(app: &TestApp, key: &str) -> (String, String, Value) {
    let c = app
        .post_as(
            key,
            "/v1/customers",
            json!({"customer": {"email": "ana@example.com", "first_name": "Ana", "last_name": "Silva"}}),
        )
        .await;
    assert_eq!(c.status, 200, "{}", c.text);
    let customer = c.body["customer"]["customer_id"].as_str().unwrap().to_string();
    let p = app.post_as(key, "/v1/products", json!({"product": {"name": "Gym membership"}})).await;
    assert_eq!(p.status, 200, "{}", p.text);
    let product = p.body["product"]["product_id"].as_str().unwrap();
    let pr = app
        .post_as(
            key,
            "/v1/prices",
            json!({"price": {"product": product, "unit_amount": 4999, "recurring": {"interval": "monthly"}}}),
        )
        .await;
    assert_eq!(pr.status, 200, "{}", pr.text);
    let price = pr.body["price"]["price_id"].as_str().unwrap();
    let s = app
        .post_as(
            key,
            "/v1/subscriptions",
            json!({"customer_id": customer, "plan_id": price, "collection_method": "SEND_INVOICE",
                "payment_terms": "30_NET"}),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.text);
    let sub = s.body["id"].as_str().unwrap().to_string();
    let r = app.get_as(key, &format!("/v1/invoices?subscription={sub}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let invoice = r.body["invoices"][0].clone();
    assert_eq!(invoice["status"], "open", "{invoice}");
    (customer, sub, invoice)
}

pub(crate) fn page_path(invoice: &Value) -> String {
    let url = invoice["hosted_invoice_url"].as_str().unwrap();
    let path = url.split_once("/pay/i/").map(|(_, id)| format!("/pay/i/{id}")).unwrap();
    assert_eq!(path, format!("/pay/i/{}", invoice["invoice_id"].as_str().unwrap()));
    path
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    html: String,
}

async fn get_page(app: &TestApp, path: &str) -> Page {
    let r = app.client.get(format!("{}{path}", app.address)).send().await.unwrap();
    Page { status: r.status().as_u16(), headers: r.headers().clone(), html: r.text().await.unwrap() }
}

pub(crate) async fn pay_invoice(app: &TestApp, path: &str, card: &str) -> Posted {
    let token = csrf(&get_page(app, path).await.html);
    post_form(
        app,
        path,
        &[
            ("csrf", token.as_str()),
            ("card_number", card),
            ("card_expiry", "12 / 34"),
            ("card_cvc", "123"),
            ("card_postal_code", "94103"),
        ],
    )
    .await
}

async fn invoice_now(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/v1/invoices/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["invoice"].clone()
}

async fn events_of(app: &TestApp, event_type: &str) -> usize {
    let r = app.get(&format!("/v1/events?event_type={event_type}&limit=100")).await;
    r.body["events"].as_array().unwrap().len()
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn an_open_invoice_shows_its_summary_and_a_labelled_card_form_with_the_page_headers() {
    let app = spawn_app().await;
    let (_, _, invoice) = open_invoice(&app).await;
    let page = get_page(&app, &page_path(&invoice)).await;
    assert_eq!(page.status, 200, "{}", page.html);
    let html = &page.html;
    assert!(html.contains(&format!("Invoice {}", invoice["number"].as_str().unwrap())), "{html}");
    assert!(html.contains("Acme Fitness"));
    assert!(html.contains("$49.99"));
    assert!(html.contains("Pay $49.99"));
    assert!(html.contains("Gym membership"));
    assert!(html.contains(">Open<"));
    assert!(html.contains("Due "), "a SEND_INVOICE invoice shows its due date");
    assert!(html.contains("Ana Silva · ana@example.com"));
    for (id, token) in [
        ("card_number", "cc-number"),
        ("card_expiry", "cc-exp"),
        ("card_cvc", "cc-csc"),
        ("card_postal_code", "postal-code"),
    ] {
        assert!(html.contains(&format!("<label for=\"{id}\"")), "{id} has a label");
        assert!(html.contains(&format!("id=\"{id}\" name=\"{id}\" type=\"text\" autocomplete=\"{token}\"")), "{id}");
    }
    assert_eq!(csrf(html).len(), 64);
    let csp = header(&page.headers, "content-security-policy");
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'") && !csp.contains("unsafe-inline")
    );
    assert_eq!(header(&page.headers, "cache-control"), "no-store");
    assert_eq!(header(&page.headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page.headers, "referrer-policy"), "same-origin");
    assert!(header(&page.headers, "content-type").starts_with("text/html"));
}

#[tokio::test]
async fn paying_with_4242_marks_the_invoice_paid_once_and_saves_the_card_for_renewals() {
    let app = spawn_app().await;
    let (customer, sub, invoice) = open_invoice(&app).await;
    let id = invoice["invoice_id"].as_str().unwrap();
    let path = page_path(&invoice);

    let r = pay_invoice(&app, &path, "4242 4242 4242 4242").await;
    assert_eq!(r.status, 303, "{}", r.html);
    assert_eq!(r.location.as_deref(), Some(path.as_str()));

    let paid = invoice_now(&app, id).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["amount_paid"], 4999);
    assert_eq!(paid["amount_remaining"], 0);
    assert_eq!(paid["attempt_count"], 1);
    assert_eq!(events_of(&app, "invoice.paid").await, 1);
    assert_eq!(events_of(&app, "invoice.payment_succeeded").await, 1);
    assert_eq!(app.count("sandbox_charges").await, 1);

    let pi = app.get(&format!("/v1/payment_intents/{}", paid["payment_intent"].as_str().unwrap())).await;
    assert_eq!(pi.body["payment_intent"]["status"], "succeeded", "{}", pi.text);
    assert_eq!(pi.body["payment_intent"]["amount_received"], 4999);

    let methods = app.get(&format!("/v1/customers/{customer}/payment_methods")).await;
    let methods = methods.body["payment_methods"].as_array().unwrap().clone();
    assert_eq!(methods.len(), 1, "{methods:?}");
    assert_eq!(methods[0]["card"]["last4"], "4242");
    assert_eq!(methods[0]["off_session"], true);
    assert_eq!(paid["payment_method"], methods[0]["payment_method_id"]);
    let s = subscription(&app, &sub).await;
    assert_eq!(s["default_payment_method"], methods[0]["payment_method_id"], "{s}");
    assert_eq!(s["subscription_status"], "ACTIVE");
    // The new card is reported to the merchant.
    let updated = app.get("/v1/events?event_type=customer.subscription.updated").await;
    let updated = updated.body["events"].as_array().unwrap().clone();
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert_eq!(updated[0]["object"]["subscription"]["default_payment_method"], methods[0]["payment_method_id"]);

    // The page is now the receipt; posting again charges nothing.
    let receipt = get_page(&app, &path).await;
    assert_eq!(receipt.status, 200);
    assert!(receipt.html.contains(">Paid<"), "{}", receipt.html);
    assert!(receipt.html.contains("Visa ending in 4242"));
    assert!(!receipt.html.contains("card_number"));
    assert_eq!(header(&receipt.headers, "cache-control"), "no-store");
    let again = post_form(&app, &path, &[("csrf", csrf(&get_page(&app, &path).await.html).as_str())]).await;
    assert_eq!(again.status, 303);
    assert_eq!(app.count("sandbox_charges").await, 1);
}

#[tokio::test]
async fn a_declined_card_shows_the_reason_and_the_invoice_stays_open_for_another_card() {
    let app = spawn_app().await;
    let (customer, sub, invoice) = open_invoice(&app).await;
    let id = invoice["invoice_id"].as_str().unwrap();
    let path = page_path(&invoice);

    let r = pay_invoice(&app, &path, "4000000000009995").await;
    assert_eq!(r.status, 402, "{}", r.html);
    assert!(r.html.contains("Your card has insufficient funds."), "{}", r.html);
    assert_eq!(csrf(&r.html).len(), 64, "the form stays usable");
    let open = invoice_now(&app, id).await;
    assert_eq!(open["status"], "open");
    assert_eq!(open["attempt_count"], 1);
    assert_eq!(open["last_decline_code"], "insufficient_funds");
    assert_eq!(events_of(&app, "invoice.payment_failed").await, 1);
    assert!(subscription(&app, &sub).await["default_payment_method"].is_null(), "a declined card is not the default");

    let r = pay_invoice(&app, &path, "5555555555554444").await;
    assert_eq!(r.status, 303, "{}", r.html);
    let paid = invoice_now(&app, id).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["attempt_count"], 2);
    let s = subscription(&app, &sub).await;
    let methods = app.get(&format!("/v1/customers/{customer}/payment_methods")).await.body["payment_methods"].clone();
    let mastercard = methods.as_array().unwrap().iter().find(|m| m["card"]["last4"] == "4444").unwrap();
    assert_eq!(s["default_payment_method"], mastercard["payment_method_id"]);
    assert_eq!(s["subscription_status"], "ACTIVE");
}

#[tokio::test]
async fn a_card_the_form_cannot_take_is_refused_at_its_field_without_an_attempt() {
    let app = spawn_app().await;
    let (_, _, invoice) = open_invoice(&app).await;
    let path = page_path(&invoice);

    let r = pay_invoice(&app, &path, "4242 4242 4242 4241").await;
    assert_eq!(r.status, 422, "{}", r.html);
    assert!(r.html.contains("aria-describedby=\"card_number-error\""), "{}", r.html);
    // A real card in test mode: refused by the sandbox before any attempt.
    let r = pay_invoice(&app, &path, "4111111111111111").await;
    assert_eq!(r.status, 402, "{}", r.html);
    assert!(r.html.contains("Use a test card in test mode"), "{}", r.html);
    assert!(!r.html.contains("4111111111111111"), "the number is never echoed");
    let open = invoice_now(&app, invoice["invoice_id"].as_str().unwrap()).await;
    assert_eq!(open["attempt_count"], 0);
    assert_eq!(app.count("sandbox_charges").await, 0);
    assert_eq!(app.count("payment_methods").await, 0);
}

#[tokio::test]
async fn a_double_submit_charges_the_invoice_once() {
    let app = spawn_app().await;
    let (_, _, invoice) = open_invoice(&app).await;
    let id = invoice["invoice_id"].as_str().unwrap();
    let path = page_path(&invoice);
    let token = csrf(&get_page(&app, &path).await.html);
    let fields = [
        ("csrf", token.as_str()),
        ("card_number", "4242424242424242"),
        ("card_expiry", "12 / 34"),
        ("card_cvc", "123"),
        ("card_postal_code", "94103"),
    ];
    let posts = (0..4).map(|_| post_form(&app, &path, &fields));
    let answers = futures_util::future::join_all(posts).await;
    for a in &answers {
        // Paid (here or by the other request), or told a payment is already in progress.
        assert!(
            a.status == 303 || (a.status == 202 && a.html.contains("already in progress")),
            "{} {}",
            a.status,
            a.html
        );
    }
    assert!(answers.iter().any(|a| a.status == 303));
    let paid = invoice_now(&app, id).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["attempt_count"], 1);
    assert_eq!(app.count("sandbox_charges").await, 1);
    assert_eq!(app.count("payment_intents").await, 1);
    assert_eq!(events_of(&app, "invoice.paid").await, 1);
}

#[tokio::test]
async fn a_3d_secure_card_shows_the_challenge_and_pays_once_it_is_completed() {
    let app = spawn_app().await;
    let (_, _, invoice) = open_invoice(&app).await;
    let id = invoice["invoice_id"].as_str().unwrap();
    let path = page_path(&invoice);

    let r = pay_invoice(&app, &path, "4000002500003155").await;
    assert_eq!(r.status, 303, "{}", r.html);
    let challenge = format!("{path}/authenticate/1");
    assert_eq!(r.location.as_deref(), Some(challenge.as_str()));
    let page = get_page(&app, &challenge).await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("Complete authentication") && page.html.contains("$49.99"), "{}", page.html);
    assert!(page.html.contains("Visa ending in 3155"));
    // While the bank waits, the invoice page offers the way back to the challenge.
    let waiting = get_page(&app, &path).await;
    assert!(waiting.html.contains(&format!("href=\"{challenge}\"")), "{}", waiting.html);

    let token = csrf(&page.html);
    let done = post_form(&app, &challenge, &[("csrf", token.as_str()), ("answer", "approve")]).await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(done.location.as_deref(), Some(path.as_str()));
    let paid = invoice_now(&app, id).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["attempt_count"], 1);
    // A second answer (a double click) changes nothing.
    let again = post_form(&app, &challenge, &[("csrf", token.as_str()), ("answer", "fail")]).await;
    assert_eq!(again.status, 303);
    assert_eq!(invoice_now(&app, id).await["status"], "paid");
    assert_eq!(events_of(&app, "invoice.paid").await, 1);
}

#[tokio::test]
async fn a_failed_3d_secure_challenge_is_a_decline_in_plain_words() {
    let app = spawn_app().await;
    let (_, _, invoice) = open_invoice(&app).await;
    let id = invoice["invoice_id"].as_str().unwrap();
    let path = page_path(&invoice);
    let r = pay_invoice(&app, &path, "4000002760003184").await;
    assert_eq!(r.status, 303, "{}", r.html);
    let challenge = r.location.unwrap();
    let token = csrf(&get_page(&app, &challenge).await.html);
    let failed = post_form(&app, &challenge, &[("csrf", token.as_str()), ("answer", "fail")]).await;
    assert_eq!(failed.status, 402, "{}", failed.html);
    assert!(failed.html.contains("verify this payment with your bank"), "{}", failed.html);
    let open = invoice_now(&app, id).await;
    assert_eq!((open["status"].clone(), open["attempt_count"].clone()), (json!("open"), json!(1)));
    assert_eq!(open["last_decline_code"], "authentication_required");
}

#[tokio::test]
async fn a_new_card_replaces_a_challenge_left_unanswered() {
    let app = spawn_app().await;
    let (_, _, invoice) = open_invoice(&app).await;
    let id = invoice["invoice_id"].as_str().unwrap();
    let path = page_path(&invoice);
    let r = pay_invoice(&app, &path, "4000002500003155").await;
    assert_eq!(r.status, 303);
    let r = pay_invoice(&app, &path, "4242424242424242").await;
    assert_eq!(r.status, 303, "{}", r.html);
    assert_eq!(r.location.as_deref(), Some(path.as_str()));
    let paid = invoice_now(&app, id).await;
    assert_eq!((paid["status"].clone(), paid["attempt_count"].clone()), (json!("paid"), json!(2)));
}

#[tokio::test]
async fn a_challenge_left_unanswered_past_its_lease_is_finished_by_the_engine_as_a_decline() {
    // A lease of zero: the engine may take the attempt back at once.
    let app = spawn_app_with(|s| s.payment_stale_seconds = 0).await;
    let (_, _, invoice) = open_invoice(&app).await;
    let id = invoice["invoice_id"].as_str().unwrap();
    let path = page_path(&invoice);
    let r = pay_invoice(&app, &path, "4000002500003155").await;
    assert_eq!(r.status, 303, "{}", r.html);
    let challenge = r.location.unwrap();
    let token = csrf(&get_page(&app, &challenge).await.html);

    app.run_workers().await;
    let open = invoice_now(&app, id).await;
    assert_eq!((open["status"].clone(), open["attempt_count"].clone()), (json!("open"), json!(1)));
    assert_eq!(open["last_decline_code"], "authentication_required");
    // The late answer changes nothing and charges nothing; the page takes another card.
    let late = post_form(&app, &challenge, &[("csrf", token.as_str()), ("answer", "approve")]).await;
    assert_eq!(late.status, 402, "{}", late.html);
    assert!(late.html.contains("verify this payment with your bank"), "{}", late.html);
    assert_eq!(invoice_now(&app, id).await["status"], "open");
    let succeeded = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sandbox_charges WHERE outcome = 'succeeded'")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(succeeded, 0);
}

#[tokio::test]
async fn an_uncollectible_invoice_can_still_be_paid_on_its_page() {
    let app = spawn_app().await;
    let c = clock(&app, "2024-04-01T00:00:00Z").await;
    let customer = customer_on(&app, &c, "dunned").await;
    save_card(&app, &customer, "4000000000000341").await;
    let (_, price) = monthly_price(&app, 2500, None).await;
    let r = app.post("/v1/subscriptions", json!({"customer_id": customer, "plan_id": price})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sub = r.body["id"].as_str().unwrap().to_string();
    advance(&app, &c, "2024-04-09T00:00:00Z").await;
    let invoice = invoices_of(&app, &sub).await.remove(0);
    assert_eq!(invoice["status"], "uncollectible", "{invoice}");
    let id = invoice["invoice_id"].as_str().unwrap();
    let path = page_path(&invoice);

    let page = get_page(&app, &path).await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("Past due") && page.html.contains("Pay $25.00"), "{}", page.html);
    let r = pay_invoice(&app, &path, "4242424242424242").await;
    assert_eq!(r.status, 303, "{}", r.html);
    let paid = invoice_now(&app, id).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["amount_paid"], 2500);
    assert!(get_page(&app, &path).await.html.contains(">Paid<"));
}

#[tokio::test]
async fn a_void_invoice_says_so_and_takes_no_card() {
    let app = spawn_app().await;
    let (_, _, invoice) = open_invoice(&app).await;
    let id = invoice["invoice_id"].as_str().unwrap();
    let path = page_path(&invoice);
    let token = csrf(&get_page(&app, &path).await.html);
    let v = app.post(&format!("/v1/invoices/{id}/void"), json!({})).await;
    assert_eq!(v.status, 200, "{}", v.text);

    let page = get_page(&app, &path).await;
    assert_eq!(page.status, 410);
    assert!(page.html.contains("This invoice was voided"), "{}", page.html);
    assert!(!page.html.contains("card_number"));
    let r = post_form(
        &app,
        &path,
        &[("csrf", token.as_str()), ("card_number", "4242424242424242"), ("card_expiry", "12/34"), ("card_cvc", "1")],
    )
    .await;
    assert_eq!(r.status, 410);
    assert_eq!(app.count("sandbox_charges").await, 0);
}

#[tokio::test]
async fn unknown_invoices_get_a_friendly_html_404() {
    let app = spawn_app().await;
    for path in [
        "/pay/i/fin_01HW5MXAPBE79RHMMJJGB4ACAB",
        "/pay/i/nonsense",
        "/pay/i/fin_01HW5MXAPBE79RHMMJJGB4ACAB/authenticate/1",
    ] {
        let page = get_page(&app, path).await;
        assert_eq!(page.status, 404, "{path}");
        assert!(header(&page.headers, "content-type").starts_with("text/html"), "{path}");
        assert!(page.html.contains("Invoice not found"), "{path}: {}", page.html);
    }
    let r = post_form(&app, "/pay/i/fin_01HW5MXAPBE79RHMMJJGB4ACAB", &[("csrf", "x")]).await;
    assert_eq!(r.status, 404);
    assert!(r.html.contains("Invoice not found"));
}

#[tokio::test]
async fn posts_without_the_page_token_or_from_another_site_are_refused() {
    let app = spawn_app().await;
    let (_, _, invoice) = open_invoice(&app).await;
    let path = page_path(&invoice);
    let card = [("card_number", "4242424242424242"), ("card_expiry", "12 / 34"), ("card_cvc", "123")];
    let r = post_form(&app, &path, &card).await;
    assert_eq!(r.status, 403, "{}", r.html);
    let token = csrf(&get_page(&app, &path).await.html);
    let mut fields = card.to_vec();
    fields.push(("csrf", token.as_str()));
    let r = app
        .client
        .post(format!("{}{path}", app.address))
        .header("Origin", "https://evil.example")
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(app.count("sandbox_charges").await, 0);
    assert_eq!(invoice_now(&app, invoice["invoice_id"].as_str().unwrap()).await["status"], "open");
}

#[tokio::test]
async fn card_posts_are_rate_limited_per_address() {
    let app = spawn_app_with(|s| s.pay_attempts_per_ip_per_minute = 1).await;
    let (_, _, invoice) = open_invoice(&app).await;
    let path = page_path(&invoice);
    let r = pay_invoice(&app, &path, "4000000000009995").await;
    assert_eq!(r.status, 402, "{}", r.html);
    let r = pay_invoice(&app, &path, "4242424242424242").await;
    assert_eq!(r.status, 429, "{}", r.html);
    assert!(r.html.contains("Too many payment attempts"));
    assert_eq!(invoice_now(&app, invoice["invoice_id"].as_str().unwrap()).await["attempt_count"], 1);
}

#[tokio::test]
async fn a_live_invoice_takes_cards_only_in_stripes_fields_and_says_plainly_when_it_cannot() {
    // Live keys work only with a live Stripe key (this one's Stripe answers nothing): the page
    // shows Stripe's card fields, none of ours.
    let app = spawn_app_with_live_stripe().await;
    let key = app.live_key.clone();
    let (_, _, invoice) = open_invoice_as(&app, &key).await;
    let path = page_path(&invoice);
    let page = get_page(&app, &path).await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("$49.99"), "the summary is shown");
    assert!(page.html.contains(r#"data-stripe-key="pk_live_flexcheckouttests""#), "{}", page.html);
    assert!(page.html.contains(r#"<script src="https://js.stripe.com/v3/" defer>"#), "{}", page.html);
    assert!(!page.html.contains("card_number") && !page.html.contains("Test mode"));
    // A post without the page's script carries no card and is answered with why.
    let token = flex_checkout::pages::csrf_token(&app.state.page_key, invoice["invoice_id"].as_str().unwrap());
    let r = post_form(&app, &path, &[("csrf", token.as_str()), ("card_number", "4242424242424242")]).await;
    assert_eq!(r.status, 400, "{}", r.html);
    assert!(r.html.contains("needs JavaScript"), "{}", r.html);
    // A confirmation naming a setup this server did not start for this invoice is refused.
    let r = post_form(&app, &format!("{path}/confirm"), &[("csrf", token.as_str()), ("attempt", "seti_123.abc")]).await;
    assert_eq!(r.status, 400, "{}", r.html);
    assert_eq!(app.count("payment_methods").await, 0);

    // The same database served without a live key: no processor for live mode at all.
    let other = spawn_app_on(app.database_url.clone(), None, false).await;
    let page = get_page(&other, &path).await;
    assert_eq!(page.status, 503, "{}", page.html);
    assert!(page.html.contains("Online card payments are not available"), "{}", page.html);
    // A form sent before the configuration changed.
    let r = post_form(
        &other,
        &path,
        &[
            ("csrf", token.as_str()),
            ("card_number", "4242424242424242"),
            ("card_expiry", "12 / 34"),
            ("card_cvc", "123"),
        ],
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.html);
    assert_eq!(app.count("payment_methods").await, 0);
}
