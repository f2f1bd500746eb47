//! End-to-end tests of the hosted checkout and invoice pages in headless Chromium with the Stripe
//! gateway pointed at localstripe: the card goes into localstripe's fake Stripe.js card element (never into fields
//! of ours), its 3-D Secure dialog is answered by clicking, and what was charged is read back from
//! localstripe itself.
//!
//! Needs `WEBDRIVER_URL` and `LOCALSTRIPE_URL` (scripts/test.sh starts chromedriver and
//! localstripe); without either the tests are skipped, and with CI=true a missing one fails.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use browser::{click, fill, text, tick, value, wait_for, wait_for_url, Browser, MerchantSite, Options};
use common::stripe::{localstripe_url, payment_intents_of_session, spawn_stripe_app};
use common::TestApp;
use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

const GOOD: &str = "4242424242424242";
const INSUFFICIENT_FUNDS: &str = "4000000000009995";
/// Asks for 3-D Secure when the card is saved and again when it is charged.
const THREE_D_SECURE: &str = "4000002500003155";

/// The five plain inputs of localstripe's card element, each with what the customer types.
fn card_fields(number: &str) -> [(&'static str, &str); 5] {
    [
        ("number", number),
        ("exp_month", "12"),
        // localstripe puts "20" in front.
        ("exp_year", "34"),
        ("cvc", "123"),
        ("postal_code", "94110"),
    ]
}

/// A browser, or `None` when either chromedriver or localstripe is missing (outside CI).
async fn start_with(options: Options) -> Option<Browser> {
    localstripe_url()?;
    browser::start_with(options).await
}

async fn start() -> Option<Browser> {
    start_with(Options::default()).await
}

/// One checkout on a server paying through localstripe, with the merchant's site for the
/// success and cancel URLs.
struct Checkout {
    app: TestApp,
    site: MerchantSite,
    id: String,
    page: String,
}

impl Checkout {
    async fn app() -> TestApp {
        spawn_stripe_app().await.expect("LOCALSTRIPE_URL was checked before the browser started")
    }

    /// The seed's quickstart: an LMN gym product with a monthly $49.99 price, in a subscription.
    async fn seed() -> Checkout {
        let app = Checkout::app().await;
        let (_, price) = app.seed_product_and_price().await;
        Checkout::with(app, json!({"mode": "subscription", "line_items": [{"price": price, "quantity": 1}]})).await
    }

    /// A monthly subscription with a 14-day free trial (no questionnaire).
    async fn trial() -> Checkout {
        let app = Checkout::app().await;
        let p = app.post("/v1/products", json!({"product": {"name": "Coaching app"}})).await;
        assert_eq!(p.status, 200, "{}", p.text);
        let product = p.body["product"]["product_id"].as_str().unwrap().to_string();
        let pr = app
            .post(
                "/v1/prices",
                json!({"price": {"product": product, "unit_amount": 999,
                    "recurring": {"interval": "monthly", "trial_period_days": 14}}}),
            )
            .await;
        assert_eq!(pr.status, 200, "{}", pr.text);
        let price = pr.body["price"]["price_id"].as_str().unwrap().to_string();
        Checkout::with(app, json!({"mode": "subscription", "line_items": [{"price": price, "quantity": 1}]})).await
    }

    async fn with(app: TestApp, mut fields: Value) -> Checkout {
        let site = MerchantSite::start();
        fields["success_url"] = json!(site.url("/success?session_id={CHECKOUT_SESSION_ID}"));
        fields["cancel_url"] = json!(site.url("/cancel"));
        let r = app.create_session(fields).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let s = &r.body["checkout_session"];
        let id = s["checkout_session_id"].as_str().expect("session id").to_string();
        let page = s["redirect_url"].as_str().expect("redirect_url").to_string();
        assert_eq!(page, format!("{}/pay/c/{id}", app.address));
        Checkout { app, site, id, page }
    }

    fn success_url(&self) -> String {
        self.site.url(&format!("/success?session_id={}", self.id))
    }

    /// The session as the merchant API shows it.
    async fn session(&self) -> Value {
        let r = self.app.get(&format!("/v1/checkout/sessions/{}", self.id)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["checkout_session"].clone()
    }

    async fn status(&self) -> String {
        self.session().await["status"].as_str().unwrap_or_default().to_string()
    }

    /// localstripe's PaymentIntents for this session's attempts.
    async fn intents(&self) -> Vec<Value> {
        payment_intents_of_session(&self.app, &self.id).await
    }

    /// Exactly one PaymentIntent at localstripe for this session, succeeded, of `amount` cents.
    async fn assert_one_succeeded_intent(&self, amount: i64) {
        let intents = self.intents().await;
        let succeeded: Vec<&Value> = intents.iter().filter(|pi| pi["status"] == "succeeded").collect();
        assert_eq!(succeeded.len(), 1, "one succeeded PaymentIntent at localstripe: {intents:#?}");
        assert_eq!(succeeded[0]["amount"], amount, "{:#}", succeeded[0]);
        assert_eq!(succeeded[0]["currency"], "usd", "{:#}", succeeded[0]);
        // A declined or failed attempt may leave its own PaymentIntent, but never a second charge.
        let charged: Vec<&Value> =
            intents.iter().filter(|pi| matches!(pi["status"].as_str(), Some("succeeded" | "processing"))).collect();
        assert_eq!(charged.len(), 1, "nothing else charged: {intents:#?}");
    }
}

async fn open(c: &Client, url: &str) {
    c.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
}

async fn fill_contact(c: &Client) {
    fill(c, "email", "jane@example.com").await;
    fill(c, "first_name", "Jane").await;
    fill(c, "last_name", "Doe").await;
}

async fn fill_questionnaire(c: &Client) {
    fill(c, "lmn_goals", "Lower my blood pressure and lose some weight").await;
    tick(c, "input[name=lmn_conditions][value=hypertension]").await;
    tick(c, "input[name=lmn_attest]").await;
}

fn card_input(field: &str) -> String {
    format!("#card-element input[placeholder={field}]")
}

/// Types the card into localstripe's card element, field by field, as a customer would.
async fn fill_card(c: &Client, number: &str) {
    for (field, typed) in card_fields(number) {
        let input = wait_for(c, &card_input(field)).await;
        input.clear().await.unwrap_or_else(|e| panic!("clear the card's {field}: {e}"));
        input.send_keys(typed).await.unwrap_or_else(|e| panic!("type the card's {field}: {e}"));
    }
}

/// Everything the seed session asks for, with `card`, then Pay.
async fn fill_all_and_pay(c: &Client, card: &str) {
    fill_contact(c).await;
    fill_questionnaire(c).await;
    fill_card(c, card).await;
    click(c, "#pay-button").await;
}

/// Waits for the checkout page with localstripe's card element mounted in it.
async fn wait_for_card_element(c: &Client) {
    wait_for(c, &card_input("postal_code")).await;
}

/// Asserts the browser logged nothing that points at a fault of the page since the last check:
/// no uncaught script error, no `console.error`, no Content-Security-Policy violation. (Failed
/// requests are left out: a decline answers 402 on purpose.)
async fn assert_no_page_errors(c: &Client) {
    let errors = browser::console_errors(c).await;
    let faults: Vec<&String> = errors
        .iter()
        .filter(|e| {
            ["javascript:", "console-api:", "security:"].iter().any(|source| e.starts_with(source))
                || e.contains("Content Security Policy")
        })
        .collect();
    assert!(faults.is_empty(), "the page logged errors: {errors:#?}");
}

/// Which of localstripe's 3-D Secure buttons to press whenever its dialog shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Answer {
    Complete,
    Fail,
}

impl Answer {
    fn label(self) -> &'static str {
        match self {
            Answer::Complete => "Complete authentication",
            Answer::Fail => "Fail authentication",
        }
    }
}

/// Presses `answer` in localstripe's 3-D Secure dialog each time it shows, until `done` holds;
/// returns how many dialogs were answered.
async fn answer_dialogs_until<F, Fut>(c: &Client, answer: Answer, what: &str, mut done: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let answered = AtomicUsize::new(0);
    let xpath = format!("//div/button[normalize-space(.)='{}']", answer.label());
    browser::poll(c, what, || {
        let (xpath, answered) = (&xpath, &answered);
        let finished = done();
        async move {
            if finished.await {
                return Ok(Some(()));
            }
            if let Ok(button) = c.find(Locator::XPath(xpath)).await {
                // The dialog goes away on a click; a page that moves on meanwhile is fine too.
                if button.click().await.is_ok() {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(None)
        }
    })
    .await;
    answered.load(Ordering::SeqCst)
}

/// Waits for localstripe's 3-D Secure dialog and presses `answer` once.
async fn answer_dialog(c: &Client, answer: Answer) {
    let xpath = format!("//div/button[normalize-space(.)='{}']", answer.label());
    let button = browser::poll(c, &format!("localstripe's {:?} button", answer.label()), || async {
        c.find(Locator::XPath(&xpath)).await.map(Some)
    })
    .await;
    button.click().await.unwrap_or_else(|e| panic!("click {:?}: {e}", answer.label()));
}

/// Whether the browser is at `url` now.
async fn at(c: &Client, url: &str) -> bool {
    c.current_url().await.is_ok_and(|u| u.as_str() == url)
}

/// Whether the checkout page shows a notice now (a decline, say).
async fn has_notice(c: &Client) -> bool {
    match c.find(Locator::Css("#form-notice")).await {
        Ok(el) => el.text().await.is_ok_and(|t| !t.trim().is_empty()),
        Err(_) => false,
    }
}

/// The parts of a Content-Security-Policy, by directive.
fn csp_directives(csp: &str) -> Vec<(String, Vec<String>)> {
    csp.split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace();
            let name = words.next()?.to_string();
            Some((name, words.map(String::from).collect()))
        })
        .collect()
}

#[tokio::test]
async fn the_quickstart_pays_with_4242_in_localstripes_card_element_and_lands_on_the_success_url() {
    let Some(browser) = start().await else { return };
    let co = Checkout::seed().await;
    let localstripe = localstripe_url().unwrap();

    // The page as the server sends it: no card fields of ours, and a policy that lets in
    // localstripe's script and nothing else from elsewhere.
    let res = reqwest::get(&co.page).await.expect("GET the checkout page");
    assert_eq!(res.status(), 200);
    let csp =
        res.headers().get("content-security-policy").expect("a Content-Security-Policy").to_str().unwrap().to_string();
    let html = res.text().await.unwrap();
    for ours in ["card_number", "card_expiry", "card_cvc", "cc-number", "cc-csc", "cc-exp"] {
        assert!(!html.contains(ours), "the page has a card field of ours ({ours}):\n{html}");
    }
    let directives = csp_directives(&csp);
    let script_src = directives.iter().find(|(n, _)| n == "script-src").map(|(_, v)| v.clone());
    assert_eq!(script_src, Some(vec!["'self'".to_string(), localstripe.clone()]), "{csp}");
    for (name, sources) in &directives {
        for source in sources {
            let allowed = source.starts_with('\'')
                || source == "data:"
                || *source == localstripe
                || (name == "form-action" && *source == co.site.base);
            assert!(allowed, "{name} lets in {source}: {csp}");
        }
    }

    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            wait_for_card_element(&c).await;
            assert!(text(&c, ".summary").await.contains("Test Product"));
            assert_eq!(text(&c, "#pay-button").await, "Subscribe");

            // Only localstripe's five inputs take the card, and none of them is sent with our form.
            let ours = c
                .find_all(Locator::Css(
                    "input[name=card_number], input[name=card_expiry], input[name=card_cvc], \
                     input[name=card_postal_code], [autocomplete^=cc-]",
                ))
                .await
                .unwrap();
            assert!(ours.is_empty(), "the page has card inputs of ours");
            let theirs = c.find_all(Locator::Css("#card-element input")).await.unwrap();
            let mut placeholders = Vec::new();
            for input in &theirs {
                placeholders.push(input.attr("placeholder").await.unwrap().unwrap_or_default());
                assert_eq!(input.attr("name").await.unwrap(), None, "a card input with a name is sent with the form");
            }
            assert_eq!(placeholders, ["number", "exp_month", "exp_year", "cvc", "postal_code"]);
            let named_in_card = c.find_all(Locator::Css("#card-element [name]")).await.unwrap();
            assert!(named_in_card.is_empty(), "nothing in the card element goes with our form");

            fill_contact(&c).await;
            fill_questionnaire(&c).await;
            fill_card(&c, GOOD).await;
            assert_no_page_errors(&c).await;
            click(&c, "#pay-button").await;

            wait_for_url(&c, &co.success_url()).await;
            assert_eq!(text(&c, "#landed").await, format!("/success?session_id={}", co.id));

            let s = co.session().await;
            assert_eq!(s["status"], "complete", "{s}");
            assert_eq!(s["payment_status"], "paid", "{s}");
            for field in ["subscription", "invoice", "customer", "payment_intent_id"] {
                assert!(s[field].is_string(), "{field} should be set: {s}");
            }
            co.assert_one_succeeded_intent(4999).await;
            assert_no_page_errors(&c).await;
        })
        .await;
}

#[tokio::test]
async fn a_declined_card_shows_why_keeps_the_details_and_4242_then_completes() {
    let Some(browser) = start().await else { return };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            wait_for_card_element(&c).await;
            fill_all_and_pay(&c, INSUFFICIENT_FUNDS).await;

            browser::poll(&c, "a decline notice", || async { Ok(has_notice(&c).await.then_some(())) }).await;
            // localstripe declines this card when it is saved, as a plain `card_declined` (real Stripe
            // would name the reason).
            assert_eq!(text(&c, "#form-notice").await, "Your card was declined.");
            assert_eq!(value(&c, "email").await, "jane@example.com");
            assert_eq!(value(&c, "first_name").await, "Jane");
            assert_eq!(value(&c, "last_name").await, "Doe");
            assert_eq!(value(&c, "lmn_goals").await, "Lower my blood pressure and lose some weight");
            // The card element is a fresh one: nothing of the declined card is left in the page.
            wait_for_card_element(&c).await;
            assert_eq!(value_of(&c, &card_input("number")).await, "");
            assert_eq!(co.status().await, "open");
            assert!(co.intents().await.iter().all(|pi| pi["status"] != "succeeded"), "nothing charged yet");

            fill_card(&c, GOOD).await;
            tick(&c, "input[name=lmn_attest]").await;
            click(&c, "#pay-button").await;
            wait_for_url(&c, &co.success_url()).await;
            assert_eq!(co.status().await, "complete");
            co.assert_one_succeeded_intent(4999).await;
            assert_no_page_errors(&c).await;
        })
        .await;
}

async fn value_of(c: &Client, css: &str) -> String {
    wait_for(c, css).await.prop("value").await.unwrap_or_else(|e| panic!("read {css}: {e}")).unwrap_or_default()
}

#[tokio::test]
async fn a_3d_secure_card_pays_after_completing_localstripes_dialogs() {
    let Some(browser) = start().await else { return };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            wait_for_card_element(&c).await;
            fill_all_and_pay(&c, THREE_D_SECURE).await;

            let success = co.success_url();
            let answered = answer_dialogs_until(&c, Answer::Complete, "the success URL", || at(&c, &success)).await;
            // Once when the card is saved, once more when it is charged.
            assert_eq!(answered, 2, "3-D Secure dialogs answered");
            let s = co.session().await;
            assert_eq!(s["status"], "complete", "{s}");
            assert!(s["subscription"].is_string(), "{s}");
            co.assert_one_succeeded_intent(4999).await;
            assert_no_page_errors(&c).await;
        })
        .await;
}

#[tokio::test]
async fn failing_3d_secure_shows_a_message_and_4242_then_completes() {
    let Some(browser) = start().await else { return };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            wait_for_card_element(&c).await;
            fill_all_and_pay(&c, THREE_D_SECURE).await;

            let answered =
                answer_dialogs_until(&c, Answer::Fail, "a notice on the checkout page", || has_notice(&c)).await;
            assert_eq!(answered, 1, "3-D Secure dialogs answered");
            // localstripe cancels the card's setup and records no reason, so all we can tell is no.
            assert_eq!(text(&c, "#form-notice").await, "Your card was declined.");
            assert_eq!(value(&c, "email").await, "jane@example.com");
            assert_eq!(value(&c, "first_name").await, "Jane");
            let s = co.session().await;
            assert_eq!(s["status"], "open", "{s}");
            assert_eq!(s["payment_status"], "unpaid", "{s}");
            assert!(co.intents().await.iter().all(|pi| pi["status"] != "succeeded"), "nothing charged");

            wait_for_card_element(&c).await;
            fill_card(&c, GOOD).await;
            tick(&c, "input[name=lmn_attest]").await;
            click(&c, "#pay-button").await;
            wait_for_url(&c, &co.success_url()).await;
            assert_eq!(co.status().await, "complete");
            co.assert_one_succeeded_intent(4999).await;
            assert_no_page_errors(&c).await;
        })
        .await;
}

#[tokio::test]
async fn failing_3d_secure_for_the_charge_shows_a_message_and_4242_then_completes() {
    let Some(browser) = start().await else { return };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            wait_for_card_element(&c).await;
            fill_all_and_pay(&c, THREE_D_SECURE).await;

            // The card is saved after the first dialog; the charge asks again on our authentication page.
            answer_dialog(&c, Answer::Complete).await;
            browser::poll(&c, "the authentication page", || async {
                Ok(c.current_url().await?.path().starts_with(&format!("/pay/c/{}/authenticate/", co.id)).then_some(()))
            })
            .await;
            assert!(text(&c, "main").await.contains("Visa ending in 3155"));
            assert_no_page_errors(&c).await;
            answer_dialog(&c, Answer::Fail).await;

            browser::poll(&c, "a notice on the checkout page", || async { Ok(has_notice(&c).await.then_some(())) })
                .await;
            assert_eq!(
                text(&c, "#form-notice").await,
                "We couldn't verify this payment with your bank. Please try again or use another card."
            );
            assert_eq!(value(&c, "email").await, "jane@example.com");
            assert_eq!(value(&c, "first_name").await, "Jane");
            assert_eq!(value(&c, "lmn_goals").await, "Lower my blood pressure and lose some weight");
            let s = co.session().await;
            assert_eq!(s["status"], "open", "{s}");
            assert_eq!(s["payment_status"], "unpaid", "{s}");
            assert!(co.intents().await.iter().all(|pi| pi["status"] != "succeeded"), "nothing charged");

            wait_for_card_element(&c).await;
            fill_card(&c, GOOD).await;
            tick(&c, "input[name=lmn_attest]").await;
            click(&c, "#pay-button").await;
            wait_for_url(&c, &co.success_url()).await;
            assert_eq!(co.status().await, "complete");
            co.assert_one_succeeded_intent(4999).await;
            assert_no_page_errors(&c).await;
        })
        .await;
}

#[tokio::test]
async fn a_trial_subscription_saves_the_card_and_charges_nothing_at_localstripe() {
    let Some(browser) = start().await else { return };
    let co = Checkout::trial().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            wait_for_card_element(&c).await;
            assert_eq!(text(&c, "#pay-button").await, "Start trial");
            fill_contact(&c).await;
            fill_card(&c, GOOD).await;
            click(&c, "#pay-button").await;
            wait_for_url(&c, &co.success_url()).await;

            let s = co.session().await;
            assert_eq!(s["status"], "complete", "{s}");
            assert_eq!(s["amount_total"], 0, "{s}");
            let intents = co.intents().await;
            assert!(intents.is_empty(), "nothing charged at localstripe: {intents:#?}");
            let sub = co.app.get(&format!("/v1/subscriptions/{}", s["subscription"].as_str().unwrap())).await;
            assert_eq!(sub.status, 200, "{}", sub.text);
            assert_eq!(sub.body["subscription_status"], "TRIALING", "{}", sub.text);
            // The card is saved for the first charge after the trial.
            let customer = s["customer"].as_str().expect("customer");
            let pms = co.app.get(&format!("/v1/customers/{customer}/payment_methods")).await;
            assert_eq!(pms.body["payment_methods"][0]["card"]["last4"], "4242", "{}", pms.text);
            assert_no_page_errors(&c).await;
        })
        .await;
}

/// Waits until this tab shows the payment went through: the merchant's success URL or, for a tab
/// that asked after the other had already paid, our own "Payment received" page.
async fn wait_for_paid(c: &Client, co: &Checkout) {
    let success = co.success_url();
    browser::poll(c, "the success URL or the payment received page", || async {
        if at(c, &success).await {
            return Ok(Some(()));
        }
        let on_page = c.current_url().await?.path() == format!("/pay/c/{}", co.id);
        Ok((on_page && browser::page_text(c).await.contains("Payment received")).then_some(()))
    })
    .await
}

#[tokio::test]
async fn double_clicking_pay_charges_once() {
    let Some(browser) = start().await else { return };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            wait_for_card_element(&c).await;
            fill_contact(&c).await;
            fill_questionnaire(&c).await;
            fill_card(&c, GOOD).await;
            let pay = wait_for(&c, "#pay-button").await;
            let clicks = MouseActions::new("mouse".into())
                .then(PointerAction::MoveToElement { element: pay, duration: None, x: 0.0, y: 0.0 })
                .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
                .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT })
                .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
                .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
            c.perform_actions(clicks).await.expect("double click on Pay");

            wait_for_url(&c, &co.success_url()).await;
            assert_eq!(co.status().await, "complete");
            co.assert_one_succeeded_intent(4999).await;
            let setups = co.app.count("payment_attempts").await;
            assert_eq!(setups, 1, "one card setup for one double click");
            assert_no_page_errors(&c).await;
        })
        .await;
}

#[tokio::test]
async fn paying_in_two_tabs_at_once_charges_once() {
    let Some(browser) = start_with(Options { eager_commands: true, ..Options::default() }).await else {
        return;
    };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            let first = c.window().await.unwrap();
            open(&c, &co.page).await;
            wait_for_card_element(&c).await;
            fill_contact(&c).await;
            fill_questionnaire(&c).await;
            fill_card(&c, GOOD).await;

            let second = c.new_window(true).await.unwrap().handle;
            c.switch_to_window(second.clone()).await.unwrap();
            open(&c, &co.page).await;
            wait_for_card_element(&c).await;
            fill_contact(&c).await;
            fill_questionnaire(&c).await;
            fill_card(&c, GOOD).await;

            // The script's requests run on their own, so both tabs are paying together.
            click(&c, "#pay-button").await;
            c.switch_to_window(first.clone()).await.unwrap();
            click(&c, "#pay-button").await;

            wait_for_paid(&c, &co).await;
            c.switch_to_window(second).await.unwrap();
            wait_for_paid(&c, &co).await;

            assert_eq!(co.status().await, "complete");
            co.assert_one_succeeded_intent(4999).await;
            assert_eq!(co.app.count("subscriptions").await, 1);
            // Every PaymentIntent at localstripe for this session is the one that succeeded.
            assert_eq!(co.intents().await.len(), 1);
            assert_no_page_errors(&c).await;
        })
        .await;
}

/// An open `SEND_INVOICE` invoice of $49.99 on a server paying through localstripe: (app, invoice
/// id, its hosted page).
async fn open_invoice() -> (TestApp, String, String) {
    let app = Checkout::app().await;
    let (_, price) = app.seed_product_and_price().await;
    let (id, page) = app.open_send_invoice(&price).await;
    (app, id, page)
}

async fn invoice(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/v1/invoices/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["invoice"].clone()
}

/// localstripe's PaymentIntents for the attempts of one invoice (`{invoice}-a{n}` in metadata).
async fn intents_of_invoice(id: &str) -> Vec<Value> {
    let prefix = format!("{id}-a");
    common::stripe::all_payment_intents()
        .await
        .into_iter()
        .filter(|pi| pi["metadata"]["flex_attempt"].as_str().is_some_and(|a| a.starts_with(&prefix)))
        .collect()
}

#[tokio::test]
async fn an_invoice_is_paid_in_localstripes_card_element_after_a_decline() {
    let Some(browser) = start().await else { return };
    let (app, id, page) = open_invoice().await;
    let localstripe = localstripe_url().unwrap();

    let res = reqwest::get(&page).await.expect("GET the invoice page");
    assert_eq!(res.status(), 200);
    let csp = res.headers().get("content-security-policy").unwrap().to_str().unwrap().to_string();
    let html = res.text().await.unwrap();
    for ours in ["card_number", "card_expiry", "card_cvc", "cc-number", "cc-csc", "cc-exp"] {
        assert!(!html.contains(ours), "the page has a card field of ours ({ours}):\n{html}");
    }
    let script_src = csp_directives(&csp).into_iter().find(|(n, _)| n == "script-src").map(|(_, v)| v);
    assert_eq!(script_src, Some(vec!["'self'".to_string(), localstripe.clone()]), "{csp}");

    browser
        .run(|c| async move {
            open(&c, &page).await;
            wait_for_card_element(&c).await;
            assert_eq!(text(&c, "#pay-button").await, "Pay $49.99");
            let named_in_card = c.find_all(Locator::Css("#card-element [name]")).await.unwrap();
            assert!(named_in_card.is_empty(), "nothing in the card element goes with our form");

            fill_card(&c, INSUFFICIENT_FUNDS).await;
            click(&c, "#pay-button").await;
            browser::poll(&c, "the decline notice", || async { Ok(has_notice(&c).await.then_some(())) }).await;
            assert!(text(&c, "#form-notice").await.contains("declined"), "{}", text(&c, "#form-notice").await);
            assert_eq!(invoice(&app, &id).await["status"], "open");

            wait_for_card_element(&c).await;
            fill_card(&c, GOOD).await;
            click(&c, "#pay-button").await;
            browser::wait_for_text(&c, "Amount paid").await;
            assert!(text(&c, "body").await.contains("Visa ending in 4242"), "{}", text(&c, "body").await);

            let paid = invoice(&app, &id).await;
            assert_eq!(paid["status"], "paid", "{paid}");
            assert_eq!(paid["amount_paid"], 4999, "{paid}");
            let intents = intents_of_invoice(&id).await;
            let succeeded: Vec<&Value> = intents.iter().filter(|pi| pi["status"] == "succeeded").collect();
            assert_eq!(succeeded.len(), 1, "{intents:#?}");
            assert_eq!(succeeded[0]["amount"], 4999);
            assert_no_page_errors(&c).await;

            // The card is the customer's now: the next renewal can charge it off-session.
            let customer = paid["customer"].as_str().unwrap();
            let pms = app.get(&format!("/v1/customers/{customer}/payment_methods")).await;
            assert_eq!(pms.body["payment_methods"].as_array().map(Vec::len), Some(1), "{}", pms.text);
        })
        .await;
}

#[tokio::test]
async fn an_invoice_paid_with_a_3d_secure_card_completes_localstripes_dialogs() {
    let Some(browser) = start().await else { return };
    let (app, id, page) = open_invoice().await;
    browser
        .run(|c| async move {
            open(&c, &page).await;
            wait_for_card_element(&c).await;
            fill_card(&c, THREE_D_SECURE).await;
            click(&c, "#pay-button").await;
            let answered = answer_dialogs_until(&c, Answer::Complete, "the receipt", || async {
                invoice(&app, &id).await["status"] == "paid"
            })
            .await;
            // Once when the card is saved, once more when it is charged with the customer present.
            assert_eq!(answered, 2, "3-D Secure dialogs answered");
            browser::wait_for_text(&c, "Amount paid").await;
            let succeeded: Vec<Value> =
                intents_of_invoice(&id).await.into_iter().filter(|pi| pi["status"] == "succeeded").collect();
            assert_eq!(succeeded.len(), 1, "{succeeded:#?}");
            assert_no_page_errors(&c).await;
        })
        .await;
}
