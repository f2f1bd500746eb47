//! End-to-end tests of the hosted invoice page in headless Chromium: a customer opens the link of
//! an open `SEND_INVOICE` invoice, types a card and ends on its receipt; with and without
//! JavaScript.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::{click, console_errors, fill, text, value, wait_for, wait_for_text, wait_for_url, Options};
use common::{spawn_app, TestApp};
use serde_json::{json, Value};

/// An app with a customer on a monthly `SEND_INVOICE` subscription; returns it with the first
/// invoice's id and page.
async fn open_invoice() -> (TestApp, String, String) {
    let app = spawn_app().await;
    let p = app.post("/v1/products", json!({"product": {"name": "Gym membership"}})).await;
    let product = p.body["product"]["product_id"].as_str().unwrap().to_string();
    let pr = app
        .post(
            "/v1/prices",
            json!({"price": {"product": product, "unit_amount": 4999, "recurring": {"interval": "monthly"}}}),
        )
        .await;
    let price = pr.body["price"]["price_id"].as_str().unwrap().to_string();
    let (id, page) = app.open_send_invoice(&price).await;
    assert_eq!(page, format!("{}/pay/i/{id}", app.address));
    (app, id, page)
}

async fn invoice(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/invoices/{id}")).await.body["invoice"].clone()
}

async fn fill_card(c: &fantoccini::Client, number: &str) {
    fill(c, "card_number", number).await;
    fill(c, "card_expiry", "12 / 34").await;
    fill(c, "card_cvc", "123").await;
    fill(c, "card_postal_code", "94107").await;
}

#[tokio::test]
async fn a_customer_pays_an_invoice_after_a_decline_and_sees_the_receipt() {
    let Some(browser) = browser::start().await else { return };
    let (app, id, page) = open_invoice().await;
    browser
        .run(|c| async move {
            c.goto(&page).await.unwrap();
            assert!(text(&c, ".summary").await.contains("Gym membership"));
            assert_eq!(text(&c, "#pay-button").await, "Pay $49.99");
            fill_card(&c, "4000000000009995").await;
            // The page's script groups the digits as they are typed.
            assert_eq!(value(&c, "card_number").await, "4000 0000 0000 9995");
            let errors = console_errors(&c).await;
            assert!(errors.is_empty(), "the page logs no errors (CSP violations included): {errors:?}");
            click(&c, "#pay-button").await;

            wait_for(&c, "#form-notice").await;
            assert_eq!(text(&c, "#form-notice").await, "Your card has insufficient funds.");
            assert_eq!(value(&c, "card_number").await, "", "card details are never sent back");
            assert_eq!(invoice(&app, &id).await["status"], "open");
            // A decline is answered with 402, which Chromium logs as a failed load; nothing else.
            let errors: Vec<_> =
                console_errors(&c).await.into_iter().filter(|e| !e.contains("status of 402")).collect();
            assert!(errors.is_empty(), "{errors:?}");

            fill_card(&c, "4242424242424242").await;
            click(&c, "#pay-button").await;
            wait_for_url(&c, &page).await;
            wait_for_text(&c, "Paid with Visa ending in 4242").await;
            assert_eq!(text(&c, "#receipt-heading").await, "Paid");
            assert_eq!(invoice(&app, &id).await["status"], "paid");
            let errors = console_errors(&c).await;
            assert!(errors.is_empty(), "the page logs no errors (CSP violations included): {errors:?}");
        })
        .await;
}

#[tokio::test]
async fn without_javascript_a_3d_secure_card_pays_after_the_challenge() {
    let Some(browser) = browser::start_with(Options { javascript: false, ..Options::default() }).await else {
        return;
    };
    let (app, id, page) = open_invoice().await;
    browser
        .run(|c| async move {
            c.goto(&page).await.unwrap();
            fill_card(&c, "4000002500003155").await;
            click(&c, "#pay-button").await;

            wait_for_text(&c, "Authenticate your payment").await;
            assert!(text(&c, "main").await.contains("Visa ending in 3155"));
            assert_eq!(invoice(&app, &id).await["status"], "open");
            click(&c, "button[value=approve]").await;

            wait_for_url(&c, &page).await;
            wait_for_text(&c, "Paid with Visa ending in 3155").await;
            let paid = invoice(&app, &id).await;
            assert_eq!((paid["status"].clone(), paid["attempt_count"].clone()), (json!("paid"), json!(1)));
        })
        .await;
}
