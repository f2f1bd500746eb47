//! End-to-end tests of the hosted checkout page in headless Chromium: what a customer types, what
//! the browser ends up showing, and what the merchant API says afterwards.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::{click, fill, text, tick, value, wait_for, wait_for_text, wait_for_url, MerchantSite, Options};
use common::{spawn_app, TestApp};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

const INSUFFICIENT_FUNDS: &str = "4000000000009995";
const THREE_D_SECURE: &str = "4000002500003155";
const GOOD: &str = "4242424242424242";

/// One checkout: the app, the merchant's site, and a session sending customers back to that site.
struct Checkout {
    app: TestApp,
    site: MerchantSite,
    id: String,
    page: String,
}

impl Checkout {
    /// The seed's journey: an LMN gym product with a monthly $49.99 price, in a subscription.
    async fn seed() -> Checkout {
        let app = spawn_app().await;
        let (_, price) = app.seed_product_and_price().await;
        Checkout::with(app, json!({"mode": "subscription", "line_items": [{"price": price, "quantity": 1}]})).await
    }

    /// A one-time payment of `amount` for a product called `name` (no questionnaire).
    async fn one_time(name: &str, amount: i64) -> Checkout {
        let app = spawn_app().await;
        let price = app.one_time_price(name, amount).await;
        Checkout::with(app, json!({"mode": "payment", "line_items": [{"price": price, "quantity": 1}]})).await
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

    fn cancel_url(&self) -> String {
        self.site.url("/cancel")
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

    /// The page's HTTP status, which WebDriver does not expose.
    async fn page_status(&self) -> u16 {
        reqwest::get(&self.page).await.expect("GET the checkout page").status().as_u16()
    }

    async fn succeeded_charges(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sandbox_charges WHERE outcome = 'succeeded'")
            .fetch_one(&self.app.state.db.pool)
            .await
            .unwrap()
    }
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

async fn fill_card(c: &Client, number: &str) {
    fill(c, "card_number", number).await;
    fill(c, "card_expiry", "12 / 34").await;
    fill(c, "card_cvc", "123").await;
    fill(c, "card_postal_code", "94107").await;
}

/// Everything the seed session asks for, with `card`, then Pay.
async fn fill_all_and_pay(c: &Client, card: &str) {
    fill_contact(c).await;
    fill_questionnaire(c).await;
    fill_card(c, card).await;
    click(c, "#pay-button").await;
}

async fn open(c: &Client, url: &str) {
    c.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
}

#[tokio::test]
async fn a_customer_subscribes_to_the_seed_product_and_lands_on_the_success_url() {
    let Some(browser) = browser::start().await else { return };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            assert!(text(&c, ".summary").await.contains("Test Product"));
            fill_contact(&c).await;
            fill_questionnaire(&c).await;
            fill_card(&c, GOOD).await;
            // The script groups the digits as they are typed.
            assert_eq!(value(&c, "card_number").await, "4242 4242 4242 4242");
            assert_eq!(value(&c, "card_expiry").await, "12 / 34");
            assert_eq!(text(&c, "#pay-button").await, "Subscribe");
            click(&c, "#pay-button").await;

            wait_for_url(&c, &co.success_url()).await;
            assert_eq!(text(&c, "#landed").await, format!("/success?session_id={}", co.id));

            let s = co.session().await;
            assert_eq!(s["status"], "complete", "{s}");
            assert_eq!(s["payment_status"], "paid", "{s}");
            for field in ["subscription", "invoice", "customer", "payment_intent_id"] {
                assert!(s[field].is_string(), "{field} should be set: {s}");
            }
            assert_eq!(co.app.count("payment_intents").await, 1);
            assert_eq!(co.succeeded_charges().await, 1);
        })
        .await;
}

#[tokio::test]
async fn insufficient_funds_shows_the_reason_keeps_the_details_and_another_card_then_succeeds() {
    let Some(browser) = browser::start().await else { return };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            fill_all_and_pay(&c, INSUFFICIENT_FUNDS).await;

            wait_for(&c, "#form-notice").await;
            assert_eq!(text(&c, "#form-notice").await, "Your card has insufficient funds.");
            assert_eq!(value(&c, "email").await, "jane@example.com");
            assert_eq!(value(&c, "first_name").await, "Jane");
            assert_eq!(value(&c, "last_name").await, "Doe");
            assert_eq!(value(&c, "lmn_goals").await, "Lower my blood pressure and lose some weight");
            let hypertension = wait_for(&c, "input[name=lmn_conditions][value=hypertension]").await;
            assert!(hypertension.is_selected().await.unwrap(), "the ticked condition stays ticked");
            // Card details are never sent back to the browser.
            assert_eq!(value(&c, "card_number").await, "");
            assert_eq!(co.status().await, "open");

            fill_card(&c, GOOD).await;
            tick(&c, "input[name=lmn_attest]").await;
            click(&c, "#pay-button").await;
            wait_for_url(&c, &co.success_url()).await;
            assert_eq!(co.status().await, "complete");
            assert_eq!(co.succeeded_charges().await, 1);
        })
        .await;
}

#[tokio::test]
async fn a_3d_secure_card_pays_after_the_customer_completes_authentication() {
    let Some(browser) = browser::start().await else { return };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            fill_all_and_pay(&c, THREE_D_SECURE).await;

            wait_for_text(&c, "Authenticate your payment").await;
            assert!(text(&c, "main").await.contains("Visa ending in 3155"));
            assert_eq!(co.status().await, "open");
            click(&c, "button[value=approve]").await;

            wait_for_url(&c, &co.success_url()).await;
            let s = co.session().await;
            assert_eq!(s["status"], "complete", "{s}");
            assert!(s["subscription"].is_string(), "{s}");
            assert_eq!(co.succeeded_charges().await, 1);
        })
        .await;
}

#[tokio::test]
async fn failing_3d_secure_brings_back_the_form_with_a_decline_and_the_session_stays_open_for_another_card() {
    let Some(browser) = browser::start().await else { return };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            fill_all_and_pay(&c, THREE_D_SECURE).await;
            wait_for_text(&c, "Authenticate your payment").await;
            click(&c, "button[value=fail]").await;

            wait_for(&c, "#form-notice").await;
            assert_eq!(
                text(&c, "#form-notice").await,
                "We couldn't verify this payment with your bank. Please try again or use another card."
            );
            assert_eq!(value(&c, "email").await, "jane@example.com");
            assert_eq!(value(&c, "first_name").await, "Jane");
            let s = co.session().await;
            assert_eq!(s["status"], "open", "{s}");
            assert_eq!(s["payment_status"], "unpaid", "{s}");
            assert_eq!(co.succeeded_charges().await, 0);

            // Open means usable: another card goes through.
            fill_card(&c, GOOD).await;
            tick(&c, "input[name=lmn_attest]").await;
            click(&c, "#pay-button").await;
            wait_for_url(&c, &co.success_url()).await;
            assert_eq!(co.status().await, "complete");
            assert_eq!(co.succeeded_charges().await, 1);
        })
        .await;
}

#[tokio::test]
async fn the_back_link_returns_to_the_cancel_url_without_the_session_id() {
    let Some(browser) = browser::start().await else { return };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            assert_eq!(text(&c, "a.back").await, "← Back to Acme Fitness");
            click(&c, "a.back").await;
            wait_for_url(&c, &co.cancel_url()).await;
            assert_eq!(co.site.hits(), vec!["/cancel".to_string()]);
            assert_eq!(co.status().await, "open");
        })
        .await;
}

#[tokio::test]
async fn a_completed_session_shows_payment_received_when_visited_again() {
    let Some(browser) = browser::start().await else { return };
    let co = Checkout::one_time("Day pass", 1500).await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            assert_eq!(text(&c, "#pay-button").await, "Pay $15.00");
            fill_contact(&c).await;
            fill_card(&c, GOOD).await;
            click(&c, "#pay-button").await;
            wait_for_url(&c, &co.success_url()).await;

            open(&c, &co.page).await;
            wait_for_text(&c, "Payment received").await;
            assert!(c.find(Locator::Css("#checkout-form")).await.is_err(), "no form on a paid session");
            let back = wait_for(&c, "a.button").await;
            assert_eq!(back.attr("href").await.unwrap().as_deref(), Some(co.success_url().as_str()));
            assert_eq!(co.page_status().await, 200);
            assert_eq!(co.succeeded_charges().await, 1);
        })
        .await;
}

async fn assert_expired_page(c: &Client, co: &Checkout) {
    open(c, &co.page).await;
    wait_for_text(c, "This checkout link has expired").await;
    assert!(c.find(Locator::Css("#checkout-form")).await.is_err(), "no form on an expired session");
    let back = wait_for(c, "a.button").await;
    assert_eq!(back.attr("href").await.unwrap().as_deref(), Some(co.cancel_url().as_str()));
    assert_eq!(co.page_status().await, 410);
}

#[tokio::test]
async fn a_session_expired_by_the_merchant_shows_the_expired_page_with_status_410() {
    let Some(browser) = browser::start().await else { return };
    let co = Checkout::seed().await;
    let r = co.app.post(&format!("/v1/checkout/sessions/{}/expire", co.id), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    browser
        .run(|c| async move {
            assert_expired_page(&c, &co).await;
            assert_eq!(co.status().await, "expired");
        })
        .await;
}

#[tokio::test]
async fn a_session_past_its_expiry_time_shows_the_expired_page_with_status_410() {
    let Some(browser) = browser::start().await else { return };
    let co = Checkout::seed().await;
    let expires_at = co.session().await["expires_at"].as_i64().expect("expires_at");
    let now = co.app.state.clock.now().to_datetime().unix_timestamp();
    co.app.state.clock.advance_seconds(expires_at - now + 1);
    browser
        .run(|c| async move {
            assert_expired_page(&c, &co).await;
            assert_eq!(co.status().await, "expired");
        })
        .await;
}

#[tokio::test]
async fn a_product_named_like_a_script_tag_renders_as_text() {
    let Some(browser) = browser::start().await else { return };
    let name = "<script>alert(1)</script>";
    let co = Checkout::one_time(name, 1000).await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            wait_for(&c, "#checkout-form").await;
            assert!(!browser::dialog_open(&c).await, "a dialog opened");
            assert_eq!(text(&c, ".line-name").await, name);
            let scripts = c.find_all(Locator::Css("script")).await.unwrap();
            assert_eq!(scripts.len(), 1, "only our own script is on the page");
            assert!(c.source().await.unwrap().contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        })
        .await;
}

#[tokio::test]
async fn the_page_takes_a_payment_with_javascript_disabled() {
    let Some(browser) = browser::start_with(Options { javascript: false, ..Options::default() }).await else {
        return;
    };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            open(&c, &co.page).await;
            fill_contact(&c).await;
            fill_questionnaire(&c).await;
            fill_card(&c, GOOD).await;
            // Without the script nothing regroups the digits: proof that JavaScript is off.
            assert_eq!(value(&c, "card_number").await, GOOD);
            click(&c, "#pay-button").await;
            wait_for_url(&c, &co.success_url()).await;
            assert_eq!(co.status().await, "complete");
            assert_eq!(co.succeeded_charges().await, 1);
        })
        .await;
}

/// The hidden CSRF token of the checkout form in `html`.
fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field") + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn simultaneous_form_posts_for_one_session_charge_the_card_once() {
    let co = Checkout::seed().await;
    let html = reqwest::get(&co.page).await.unwrap().text().await.unwrap();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &csrf_of(&html))
        .append_pair("email", "jane@example.com")
        .append_pair("first_name", "Jane")
        .append_pair("last_name", "Doe")
        .append_pair("lmn_goals", "Lower my blood pressure")
        .append_pair("lmn_conditions", "hypertension")
        .append_pair("lmn_attest", "yes")
        .append_pair("card_number", "4242 4242 4242 4242")
        .append_pair("card_expiry", "12 / 34")
        .append_pair("card_cvc", "123")
        .append_pair("card_postal_code", "94107")
        .finish();
    let posts: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(
                co.app
                    .client
                    .post(&co.page)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("origin", &co.app.address)
                    .body(body.clone())
                    .send(),
            )
        })
        .collect();
    let mut redirected = 0;
    for post in posts {
        let r = post.await.unwrap().expect("form post");
        let status = r.status().as_u16();
        let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_string());
        let text = r.text().await.unwrap_or_default();
        match status {
            303 => {
                assert_eq!(location.as_deref(), Some(co.success_url().as_str()));
                redirected += 1;
            }
            // "Your payment is being processed": a fair answer for the one that waited.
            202 => assert!(text.contains("Please don't pay again"), "{text}"),
            _ => panic!("unexpected answer {status} to a concurrent post: {text}"),
        }
    }
    assert!(redirected >= 1, "at least one post reports the payment");
    assert_eq!(co.status().await, "complete");
    assert_eq!(co.app.count("payment_intents").await, 1);
    assert_eq!(co.app.count("subscriptions").await, 1);
    assert_eq!(co.app.count("invoices").await, 1);
    assert_eq!(co.succeeded_charges().await, 1);
}

/// Waits until this tab shows the payment went through: on the merchant's success page, or (when
/// the other tab had already paid) on our own "Payment received" page.
/// Every tab that paid ends on the merchant's success URL, whichever request won.
async fn wait_for_paid(c: &Client, co: &Checkout) {
    let success = url::Url::parse(&co.success_url()).unwrap();
    browser::poll(c, "the success URL", || async { Ok((c.current_url().await? == success).then_some(())) }).await
}

#[tokio::test]
async fn paying_in_two_tabs_at_once_charges_the_card_once() {
    let Some(browser) = browser::start_with(Options { eager_commands: true, ..Options::default() }).await else {
        return;
    };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            let first = c.window().await.unwrap();
            open(&c, &co.page).await;
            wait_for(&c, "#pay-button").await;
            fill_contact(&c).await;
            fill_questionnaire(&c).await;
            fill_card(&c, GOOD).await;

            let second = c.new_window(true).await.unwrap().handle;
            c.switch_to_window(second.clone()).await.unwrap();
            open(&c, &co.page).await;
            wait_for(&c, "#pay-button").await;
            fill_contact(&c).await;
            fill_questionnaire(&c).await;
            fill_card(&c, GOOD).await;

            // Page loads are not awaited in this session, so both posts are in flight together.
            click(&c, "#pay-button").await;
            c.switch_to_window(first.clone()).await.unwrap();
            click(&c, "#pay-button").await;

            wait_for_paid(&c, &co).await;
            c.switch_to_window(second).await.unwrap();
            wait_for_paid(&c, &co).await;

            assert_eq!(co.status().await, "complete");
            assert_eq!(co.app.count("payment_intents").await, 1);
            assert_eq!(co.succeeded_charges().await, 1);
        })
        .await;
}

/// Where an element sits: (x, y, width, height).
async fn rect(c: &Client, css: &str) -> (f64, f64, f64, f64) {
    wait_for(c, css).await.rectangle().await.unwrap()
}

/// Resizes the window so the page's viewport is `width` × `height` CSS pixels.
async fn set_viewport(c: &Client, width: u32, height: u32) {
    c.set_window_size(width, height).await.unwrap();
    let inner = browser::eval(c, "return [window.innerWidth, window.innerHeight]").await;
    let (iw, ih) = (inner[0].as_u64().unwrap() as u32, inner[1].as_u64().unwrap() as u32);
    if (iw, ih) != (width, height) {
        // Window decorations differ between Chrome versions; grow by what is missing.
        c.set_window_size(width + (width - iw.min(width)), height + (height - ih.min(height))).await.unwrap();
    }
}

#[tokio::test]
async fn the_checkout_page_has_two_columns_on_a_desktop_and_one_on_a_phone() {
    let Some(browser) = browser::start().await else { return };
    let co = Checkout::seed().await;
    browser
        .run(|c| async move {
            set_viewport(&c, 1280, 900).await;
            open(&c, &co.page).await;
            wait_for(&c, "#pay-button").await;
            let shot = browser::screenshot(&c, "checkout-desktop").await;
            let summary = rect(&c, ".summary").await;
            let form = rect(&c, ".pay-form").await;
            assert!(form.0 >= summary.0 + summary.2 - 1.0, "form beside the summary: {summary:?} {form:?} ({shot:?})");

            set_viewport(&c, 390, 844).await;
            let width = browser::eval(&c, "return window.innerWidth").await;
            assert_eq!(width, json!(390), "the window reaches phone width");
            browser::screenshot(&c, "checkout-phone").await;
            let summary = rect(&c, ".summary").await;
            let form = rect(&c, ".pay-form").await;
            assert!(form.1 >= summary.1 + summary.3 - 1.0, "form below the summary: {summary:?} {form:?}");
            let overflow =
                browser::eval(&c, "var d = document.documentElement; return d.scrollWidth - d.clientWidth").await;
            assert_eq!(overflow, json!(0), "nothing sticks out sideways on a phone");

            // Whole-page views too, for a person to review below the fold.
            for (name, width) in [("checkout-phone-full", 390), ("checkout-desktop-full", 1280)] {
                set_viewport(&c, width, 844).await;
                let height = browser::eval(&c, "return document.documentElement.scrollHeight").await;
                set_viewport(&c, width, height.as_u64().unwrap().clamp(844, 4000) as u32).await;
                browser::screenshot(&c, name).await;
            }
        })
        .await;
}
