//! One contract for both payment gateways: every scenario runs once against the built-in sandbox and
//! once against Stripe (localstripe at `LOCALSTRIPE_URL`), through the same customer-visible verbs,
//! and asserts the same outcome, so the sandbox cannot drift from Stripe.
//!
//! The driver plays the customer. With the sandbox it posts our own card form and answers the
//! sandbox's approve/fail page; with Stripe it does what the page's script and localstripe's
//! Stripe.js do: start a setup on our server, confirm the card at localstripe, answer localstripe's
//! 3-D Secure dialog (for the setup or for the PaymentIntent, whichever asks), and hand back to our
//! server. Each scenario then checks our database and, where it matters, the gateway's own record
//! (the sandbox's ledger or localstripe's objects).
//!
//! Without `LOCALSTRIPE_URL` the Stripe half of each pair returns early with a notice; with
//! `CI=true` a missing localstripe fails instead.

#[path = "common/mod.rs"]
mod common;

use common::stripe::{self as ls, spawn_stripe_app};
use common::{spawn_app, TestApp};
use flex_checkout::domain::ids::PaymentAttemptId;
use flex_checkout::domain::money::Currency;
use flex_checkout::domain::payment::{CardDetails, DeclineCode};
use flex_checkout::domain::Mode;
use flex_checkout::gateway::{
    ChallengeAnswer, ChargeLookup, ChargeOutcome, ChargeRequest, PaymentGateway, PendingCharge, RefundOutcome,
    RefundRequest, SavedCard,
};
use serde_json::{json, Value};

const GOOD: &str = "4242424242424242";
const INSUFFICIENT_FUNDS: &str = "4000000000009995";
const GENERIC_DECLINE: &str = "4000000000000002";
const CHARGES_FAIL: &str = "4000000000000341";
const THREE_D_SECURE_ONCE: &str = "4000002500003155";
const THREE_D_SECURE_ALWAYS: &str = "4000002760003184";

const EMAIL: &str = "ana@example.com";

/// The plain-words messages of CHECKOUT.md ("Outcome"), and the one for a failed bank check.
const DECLINED: &str = "Your card was declined.";
const INSUFFICIENT: &str = "Your card has insufficient funds.";
const AUTHENTICATION: &str = "We couldn't verify this payment with your bank. Please try again or use another card.";
const DECLINE_MESSAGES: [&str; 5] =
    [DECLINED, INSUFFICIENT, "Your card has expired.", "Your card's security code is incorrect.", AUTHENTICATION];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gateway {
    Sandbox,
    Stripe,
}

/// What the customer sees after a step.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Sent to this address (the merchant's success URL).
    Completed { location: String },
    /// The form again (HTTP 402) with this message, and whether the typed email is still in it.
    Declined { message: String, email_kept: bool },
    /// The bank wants a check: our challenge page (sandbox, or a PaymentIntent at Stripe) or, at
    /// Stripe, Stripe.js's dialog for the setup.
    Challenge,
    /// Anything else: a bug in the flow, shown whole.
    Other { status: u16, detail: String },
}

/// Which check the bank asked for, as the customer met it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// Stripe.js's dialog while the card is saved (a SetupIntent needing action).
    Setup,
    /// The challenge of the payment itself, behind `/pay/c/{id}/authenticate/{attempt}`.
    Payment,
}

#[derive(Debug)]
enum Pending {
    Page { path: String },
    StripeSetup { session: String, attempt: String, client_secret: String },
}

/// One of our PaymentIntent rows.
#[derive(Debug)]
struct IntentRow {
    amount: i64,
    status: String,
    gateway: String,
    gateway_ref: String,
    attempt_id: String,
}

/// The customer, the merchant and the gateway's records, the same verbs for both gateways.
struct Driver {
    gateway: Gateway,
    app: TestApp,
    pending: Option<Pending>,
    asked: Vec<Asked>,
}

impl Driver {
    /// A server paying through `gateway`, or `None` for Stripe without localstripe.
    async fn spawn(gateway: Gateway) -> Option<Driver> {
        let app = match gateway {
            Gateway::Sandbox => spawn_app().await,
            Gateway::Stripe => spawn_stripe_app().await?,
        };
        Some(Driver { gateway, app, pending: None, asked: Vec::new() })
    }

    /// The name stored beside attempts, payment methods and payment intents.
    fn name(&self) -> &'static str {
        match self.gateway {
            Gateway::Sandbox => "sandbox",
            Gateway::Stripe => "stripe",
        }
    }

    fn gateway(&self) -> &dyn PaymentGateway {
        self.app.state.gateways.for_mode(Mode::Test).expect("test mode always has a gateway")
    }

    fn success_url(session: &str) -> String {
        format!("http://localhost:9/success?session_id={session}")
    }

    // The merchant's side.

    async fn session(&self, fields: Value) -> String {
        let r = self.app.create_session(fields).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string()
    }

    /// A one-time payment of `amount`.
    async fn payment_session(&self, amount: i64) -> String {
        let price = self.app.one_time_price("Class pack", amount).await;
        self.session(json!({"mode": "payment", "line_items": [{"price": price}]})).await
    }

    /// A monthly subscription of `amount` with a 14-day trial: nothing is due today.
    async fn trial_session(&self, amount: i64) -> String {
        let p = self.app.post("/v1/products", json!({"product": {"name": "App"}})).await;
        assert_eq!(p.status, 200, "{}", p.text);
        let product = p.body["product"]["product_id"].as_str().unwrap();
        let pr = self
            .app
            .post(
                "/v1/prices",
                json!({"price": {"product": product, "unit_amount": amount,
                    "recurring": {"interval": "monthly", "trial_period_days": 14}}}),
            )
            .await;
        assert_eq!(pr.status, 200, "{}", pr.text);
        let price = pr.body["price"]["price_id"].as_str().unwrap();
        let r = self.app.create_session(json!({"mode": "subscription", "line_items": [{"price": price}]})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["checkout_session"]["amount_total"], 0, "nothing is due today");
        r.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string()
    }

    // The customer's side.

    /// Types the contact details and `card` and presses Pay.
    async fn pay(&mut self, session: &str, card: &str) -> Outcome {
        assert!(self.pending.is_none(), "a challenge is still waiting: {:?}", self.pending);
        match self.gateway {
            Gateway::Sandbox => {
                let csrf = ls::csrf_of(&self.app, session).await;
                let mut form = vec![("csrf", csrf.as_str())];
                form.extend(ls::contact_fields());
                form.extend([
                    ("card_number", card),
                    ("card_expiry", "12 / 34"),
                    ("card_cvc", "123"),
                    ("card_postal_code", "94110"),
                ]);
                let res = self.post_form(&format!("/pay/c/{session}"), &form).await;
                self.outcome_of(res).await
            }
            Gateway::Stripe => {
                let (status, setup) = ls::start_setup(&self.app, session, &ls::contact_fields()).await;
                let (Some(attempt), Some(secret)) = (setup["attempt"].as_str(), setup["client_secret"].as_str()) else {
                    return Outcome::Other { status, detail: setup.to_string() };
                };
                let confirmed = ls::confirm_card_setup(secret, card).await;
                if confirmed["status"] == "requires_action" {
                    self.pending = Some(Pending::StripeSetup {
                        session: session.to_string(),
                        attempt: attempt.to_string(),
                        client_secret: secret.to_string(),
                    });
                    self.asked.push(Asked::Setup);
                    return Outcome::Challenge;
                }
                // Declined or saved: the script hands back either way; our server asks Stripe.
                let res = ls::finish_setup(&self.app, session, attempt).await;
                self.outcome_of(res).await
            }
        }
    }

    /// Answers the check the bank is asking for: passes it (`complete`) or fails it.
    async fn answer_challenge(&mut self, complete: bool) -> Outcome {
        match self.pending.take().expect("no challenge is waiting") {
            Pending::StripeSetup { session, attempt, client_secret } => {
                ls::answer_setup_challenge(&client_secret, complete).await;
                let res = ls::finish_setup(&self.app, &session, &attempt).await;
                self.outcome_of(res).await
            }
            Pending::Page { path } => {
                let page = self.get_page(&path).await;
                let csrf = attribute(&page, "name=\"csrf\" value=\"").expect("a CSRF token on the challenge page");
                let answer = match self.gateway {
                    Gateway::Sandbox => {
                        if complete {
                            "approve"
                        } else {
                            "fail"
                        }
                    }
                    Gateway::Stripe => {
                        // Stripe.js runs the dialog with the PaymentIntent's secret, then the form
                        // posts and our server asks Stripe how it ended.
                        let secret = attribute(&page, "data-client-secret=\"")
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| panic!("no client secret on the challenge page: {page}"));
                        ls::answer_payment_challenge(&secret, complete).await;
                        "gateway"
                    }
                };
                let res = self.post_form(&path, &[("csrf", csrf.as_str()), ("answer", answer)]).await;
                self.outcome_of(res).await
            }
        }
    }

    /// Passes every check the bank asks for.
    async fn pass_challenges(&mut self, mut outcome: Outcome) -> Outcome {
        for _ in 0..4 {
            if outcome != Outcome::Challenge {
                return outcome;
            }
            outcome = self.answer_challenge(true).await;
        }
        panic!("the bank kept asking: {:?}", self.asked)
    }

    /// Whether the check waiting now is the payment's own (not a Stripe setup's).
    fn payment_challenge_waiting(&self) -> bool {
        matches!(self.pending, Some(Pending::Page { .. }))
    }

    async fn get_page(&self, path: &str) -> String {
        let res = self.app.client.get(format!("{}{path}", self.app.address)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "GET {path}");
        res.text().await.unwrap()
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.app
            .client
            .post(format!("{}{path}", self.app.address))
            .header("Origin", &self.app.address)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// What the browser shows for the server's answer to a form post.
    async fn outcome_of(&mut self, res: reqwest::Response) -> Outcome {
        let status = res.status().as_u16();
        let location = res.headers().get("location").map(|l| l.to_str().unwrap().to_string());
        let html = res.text().await.unwrap_or_default();
        match (status, location) {
            (303, Some(path)) if path.contains("/authenticate/") => {
                self.pending = Some(Pending::Page { path });
                self.asked.push(Asked::Payment);
                Outcome::Challenge
            }
            (303, Some(location)) => Outcome::Completed { location },
            (402, _) => Outcome::Declined {
                message: decline_notice(&html).unwrap_or_else(|| panic!("a 402 page without a message: {html}")),
                email_kept: html.contains(&format!("value=\"{EMAIL}\"")),
            },
            (status, location) => Outcome::Other { status, detail: format!("location {location:?}: {html}") },
        }
    }

    // Our database.

    /// The session's status and decline count.
    async fn session_row(&self, session: &str) -> (String, i64) {
        sqlx::query_as::<_, (String, i64)>("SELECT status, decline_count FROM checkout_sessions WHERE id = $1")
            .bind(session)
            .fetch_one(&self.app.state.db.pool)
            .await
            .unwrap()
    }

    async fn intents(&self, session: &str) -> Vec<IntentRow> {
        sqlx::query_as::<_, (i64, String, String, Option<String>, Option<String>)>(
            "SELECT amount, status, gateway, gateway_ref, attempt_id FROM payment_intents \
             WHERE checkout_session_id = $1",
        )
        .bind(session)
        .fetch_all(&self.app.state.db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(amount, status, gateway, gateway_ref, attempt_id)| IntentRow {
            amount,
            status,
            gateway,
            gateway_ref: gateway_ref.expect("a payment intent records its charge"),
            attempt_id: attempt_id.expect("a checkout payment intent records its attempt"),
        })
        .collect()
    }

    /// The statuses of the session's attempts, sorted.
    async fn attempt_statuses(&self, session: &str) -> Vec<String> {
        let mut out: Vec<String> = sqlx::query_scalar("SELECT status FROM payment_attempts WHERE session_id = $1")
            .bind(session)
            .fetch_all(&self.app.state.db.pool)
            .await
            .unwrap();
        out.sort();
        out
    }

    async fn gateway_customer_of(&self, attempt: &str) -> Option<String> {
        sqlx::query_scalar("SELECT gateway_customer FROM payment_attempts WHERE id = $1")
            .bind(attempt)
            .fetch_one(&self.app.state.db.pool)
            .await
            .unwrap()
    }

    /// The cards saved for the session's customer, as the billing engine would charge them.
    async fn saved_cards(&self, session: &str) -> Vec<SavedCard> {
        type Row = (String, String, Option<String>, String, String, i64, i64, String, Option<String>);
        let rows = sqlx::query_as::<_, Row>(
            "SELECT pm.gateway, pm.gateway_ref, pm.gateway_customer, pm.brand, pm.last4, pm.exp_month, \
             pm.exp_year, pm.funding, pm.country FROM payment_methods pm \
             JOIN checkout_sessions s ON s.customer_id = pm.customer_id WHERE s.id = $1",
        )
        .bind(session)
        .fetch_all(&self.app.state.db.pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(gateway, gateway_ref, gateway_customer, brand, last4, exp_month, exp_year, funding, country)| {
                assert_eq!(gateway, self.name(), "the card is saved at the gateway that took it");
                SavedCard {
                    gateway_ref,
                    gateway_customer,
                    details: CardDetails {
                        brand,
                        last4,
                        exp_month: exp_month as u32,
                        exp_year: exp_year as i32,
                        funding,
                        country,
                    },
                }
            })
            .collect()
    }

    async fn subscription_status(&self, session: &str) -> String {
        let s = self.app.get(&format!("/v1/checkout/sessions/{session}")).await.body;
        let sub = s["checkout_session"]["subscription"].as_str().expect("a subscription").to_string();
        let sub = self.app.get(&format!("/v1/subscriptions/{sub}")).await.body;
        sub["subscription_status"].as_str().unwrap().to_string()
    }

    // The gateway's own records.

    /// The amounts the gateway took for the session's attempts (zero-amount card checks left out).
    async fn charged_at_gateway(&self, session: &str) -> Vec<i64> {
        match self.gateway {
            Gateway::Sandbox => sqlx::query_scalar(
                "SELECT c.amount FROM sandbox_charges c JOIN payment_attempts a ON a.id = c.idempotency_key \
                 WHERE a.session_id = $1 AND c.outcome = 'succeeded' AND c.amount > 0",
            )
            .bind(session)
            .fetch_all(&self.app.state.db.pool)
            .await
            .unwrap(),
            Gateway::Stripe => ls::payment_intents_of_session(&self.app, session)
                .await
                .into_iter()
                .filter(|pi| pi["status"] == "succeeded")
                .map(|pi| pi["amount"].as_i64().unwrap())
                .collect(),
        }
    }

    /// How the gateway records one charge: its status and amount.
    async fn charge_at_gateway(&self, charge_ref: &str) -> (String, i64) {
        match self.gateway {
            Gateway::Sandbox => {
                let key = charge_ref.strip_prefix("sbx_ch_").expect("a sandbox charge reference");
                sqlx::query_as("SELECT outcome, amount FROM sandbox_charges WHERE idempotency_key = $1")
                    .bind(key)
                    .fetch_one(&self.app.state.db.pool)
                    .await
                    .unwrap()
            }
            Gateway::Stripe => {
                let pi = ls::localstripe_get(&format!("/v1/payment_intents/{charge_ref}")).await;
                (pi["status"].as_str().unwrap_or_default().to_string(), pi["amount"].as_i64().unwrap_or_default())
            }
        }
    }

    /// The amount of one refund as the gateway records it.
    async fn refund_at_gateway(&self, refund_ref: &str) -> i64 {
        match self.gateway {
            Gateway::Sandbox => {
                let key = refund_ref.strip_prefix("sbx_re_").expect("a sandbox refund reference");
                sqlx::query_scalar("SELECT amount FROM sandbox_refunds WHERE idempotency_key = $1")
                    .bind(key)
                    .fetch_one(&self.app.state.db.pool)
                    .await
                    .unwrap()
            }
            Gateway::Stripe => {
                ls::localstripe_get(&format!("/v1/refunds/{refund_ref}")).await["amount"].as_i64().unwrap_or_default()
            }
        }
    }

    /// A charge reference of the gateway's shape that it never issued.
    fn unknown_charge_ref(&self) -> String {
        match self.gateway {
            Gateway::Sandbox => format!("sbx_ch_fpa_{}", ulid::Ulid::new()),
            Gateway::Stripe => format!("pi_{}", ulid::Ulid::new()),
        }
    }

    // The billing engine's side: the gateway trait without a customer present.

    async fn renew(&self, card: &SavedCard, amount: i64) -> ChargeOutcome {
        let attempt = PaymentAttemptId::generate();
        self.gateway()
            .charge(ChargeRequest {
                idempotency_key: attempt.as_str(),
                card,
                amount,
                currency: Currency::USD,
                off_session: true,
                manual_capture: false,
            })
            .await
            .expect("the gateway answers")
    }

    async fn refund(&self, charge_ref: &str, amount: i64) -> RefundOutcome {
        let key = format!("fre_{}", ulid::Ulid::new());
        self.gateway()
            .refund(RefundRequest { idempotency_key: &key, charge_ref, amount, currency: Currency::USD })
            .await
            .expect("the gateway answers")
    }
}

/// The value of the first `marker"..."` attribute on a page.
fn attribute(html: &str, marker: &str) -> Option<String> {
    let start = html.find(marker)? + marker.len();
    let len = html[start..].find('"')?;
    Some(html[start..start + len].to_string())
}

/// The message of a declined form: the page's alert, unescaped.
fn decline_notice(html: &str) -> Option<String> {
    let marker = "id=\"form-notice\">";
    let start = html.find(marker)? + marker.len();
    let len = html[start..].find("</p>")?;
    Some(
        html[start..start + len]
            .replace("&#39;", "'")
            .replace("&#x27;", "'")
            .replace("&quot;", "\"")
            .replace("&#34;", "\"")
            .replace("&amp;", "&"),
    )
}

fn assert_decline(outcome: &Outcome, allowed: &[&str]) {
    let Outcome::Declined { message, email_kept } = outcome else { panic!("expected a decline, got {outcome:?}") };
    assert!(DECLINE_MESSAGES.contains(&message.as_str()), "not a plain-words decline message: {message:?}");
    assert!(allowed.contains(&message.as_str()), "{message:?} is not one of {allowed:?}");
    assert!(email_kept, "the typed email is kept in the form");
}

fn completed(session: &str) -> Outcome {
    Outcome::Completed { location: Driver::success_url(session) }
}

// 1. A good card pays once.

async fn a_good_card_pays_once(gateway: Gateway) {
    let Some(mut d) = Driver::spawn(gateway).await else { return };
    let s = d.payment_session(4999).await;
    assert_eq!(d.pay(&s, GOOD).await, completed(&s));
    assert_eq!(d.session_row(&s).await, ("complete".to_string(), 0));
    assert_eq!(d.attempt_statuses(&s).await, ["succeeded"]);

    let intents = d.intents(&s).await;
    assert_eq!(intents.len(), 1, "{intents:?}");
    let pi = &intents[0];
    assert_eq!((pi.amount, pi.status.as_str(), pi.gateway.as_str()), (4999, "succeeded", d.name()));
    assert_eq!(d.charge_at_gateway(&pi.gateway_ref).await, ("succeeded".to_string(), 4999));
    // Stripe: exactly one succeeded PaymentIntent at localstripe for this session's attempts.
    assert_eq!(d.charged_at_gateway(&s).await, [4999]);
    assert!(d.saved_cards(&s).await.is_empty(), "a one-time payment does not keep the card");
}

#[tokio::test]
async fn a_good_card_pays_once_sandbox() {
    a_good_card_pays_once(Gateway::Sandbox).await
}

#[tokio::test]
async fn a_good_card_pays_once_stripe() {
    a_good_card_pays_once(Gateway::Stripe).await
}

// 1b. The reconciler's path: a charge is found again by its attempt alone.

async fn a_charge_is_found_again_by_its_attempt(gateway: Gateway) {
    let Some(mut d) = Driver::spawn(gateway).await else { return };
    let s = d.payment_session(4999).await;
    assert_eq!(d.pay(&s, GOOD).await, completed(&s));
    let pi = d.intents(&s).await.pop().expect("a payment intent");
    let customer = d.gateway_customer_of(&pi.attempt_id).await;
    let found = d
        .gateway()
        .lookup(ChargeLookup {
            idempotency_key: &pi.attempt_id,
            gateway_customer: customer.as_deref(),
            charge_ref: None,
        })
        .await
        .expect("the gateway answers");
    assert_eq!(found, Some(ChargeOutcome::Succeeded { gateway_ref: pi.gateway_ref.clone() }));
    let other = PaymentAttemptId::generate();
    let none = d
        .gateway()
        .lookup(ChargeLookup {
            idempotency_key: other.as_str(),
            gateway_customer: customer.as_deref(),
            charge_ref: None,
        })
        .await
        .expect("the gateway answers");
    assert_eq!(none, None, "nothing was charged for an attempt the gateway never saw");
}

#[tokio::test]
async fn a_charge_is_found_again_by_its_attempt_sandbox() {
    a_charge_is_found_again_by_its_attempt(Gateway::Sandbox).await
}

#[tokio::test]
async fn a_charge_is_found_again_by_its_attempt_stripe() {
    a_charge_is_found_again_by_its_attempt(Gateway::Stripe).await
}

// 2. Declines say why in plain words, keep the form, and leave the session open.

async fn declines_keep_the_session_open(gateway: Gateway) {
    let Some(mut d) = Driver::spawn(gateway).await else { return };
    let s = d.payment_session(4999).await;
    // Stripe says "insufficient funds" at the charge; localstripe refuses the card at the setup and
    // can only say the generic message there. Either is the truth in plain words.
    let first = d.pay(&s, INSUFFICIENT_FUNDS).await;
    assert_decline(&first, &[INSUFFICIENT, DECLINED]);
    let second = d.pay(&s, GENERIC_DECLINE).await;
    assert_decline(&second, &[DECLINED]);

    assert_eq!(d.session_row(&s).await, ("open".to_string(), 2));
    assert_eq!(d.attempt_statuses(&s).await, ["declined", "declined"]);
    assert!(d.intents(&s).await.is_empty());
    assert!(d.charged_at_gateway(&s).await.is_empty(), "nothing was charged");

    assert_eq!(d.pay(&s, GOOD).await, completed(&s));
    assert_eq!(d.session_row(&s).await, ("complete".to_string(), 2));
    assert_eq!(d.intents(&s).await.len(), 1);
    assert_eq!(d.charged_at_gateway(&s).await, [4999]);
}

#[tokio::test]
async fn declines_keep_the_session_open_sandbox() {
    declines_keep_the_session_open(Gateway::Sandbox).await
}

#[tokio::test]
async fn declines_keep_the_session_open_stripe() {
    declines_keep_the_session_open(Gateway::Stripe).await
}

// 3. The charges-fail card: declined when paying now, saved for a trial, then its renewals fail.

async fn a_card_whose_charges_fail(gateway: Gateway) {
    let Some(mut d) = Driver::spawn(gateway).await else { return };
    let s = d.payment_session(4999).await;
    assert_decline(&d.pay(&s, CHARGES_FAIL).await, &[DECLINED]);
    assert_eq!(d.session_row(&s).await, ("open".to_string(), 1));
    assert!(d.intents(&s).await.is_empty());
    assert!(d.charged_at_gateway(&s).await.is_empty());

    // A trial takes nothing today: the card is only saved.
    let trial = d.trial_session(999).await;
    assert_eq!(d.pay(&trial, CHARGES_FAIL).await, completed(&trial));
    assert_eq!(d.session_row(&trial).await, ("complete".to_string(), 0));
    assert_eq!(d.subscription_status(&trial).await, "TRIALING");
    assert!(d.intents(&trial).await.is_empty());
    assert!(d.charged_at_gateway(&trial).await.is_empty(), "nothing charged");
    let cards = d.saved_cards(&trial).await;
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].details.last4, "0341");

    // The billing engine's renewal, without the customer.
    assert_eq!(d.renew(&cards[0], 999).await, ChargeOutcome::Declined { code: DeclineCode::GenericDecline });

    let good = d.trial_session(999).await;
    assert_eq!(d.pay(&good, GOOD).await, completed(&good));
    let cards = d.saved_cards(&good).await;
    assert_eq!(cards.len(), 1);
    let ChargeOutcome::Succeeded { gateway_ref } = d.renew(&cards[0], 999).await else {
        panic!("a renewal on 4242 succeeds")
    };
    assert_eq!(d.charge_at_gateway(&gateway_ref).await, ("succeeded".to_string(), 999));
}

#[tokio::test]
async fn a_card_whose_charges_fail_sandbox() {
    a_card_whose_charges_fail(Gateway::Sandbox).await
}

#[tokio::test]
async fn a_card_whose_charges_fail_stripe() {
    a_card_whose_charges_fail(Gateway::Stripe).await
}

// 4. 3-D Secure on the first payment: passed, it pays; failed, it is a decline and the customer
// can pay with another card.

async fn three_d_secure_passed_pays(gateway: Gateway) {
    let Some(mut d) = Driver::spawn(gateway).await else { return };
    let s = d.payment_session(4999).await;
    let first = d.pay(&s, THREE_D_SECURE_ONCE).await;
    assert_eq!(first, Outcome::Challenge);
    assert_eq!(d.pass_challenges(first).await, completed(&s));
    // localstripe asks when the card is saved and again when the PaymentIntent is confirmed; the
    // sandbox (as Stripe for a payment) asks once, for the payment.
    match gateway {
        Gateway::Sandbox => assert_eq!(d.asked, [Asked::Payment]),
        Gateway::Stripe => assert_eq!(d.asked, [Asked::Setup, Asked::Payment]),
    }
    assert_eq!(d.session_row(&s).await, ("complete".to_string(), 0));
    let intents = d.intents(&s).await;
    assert_eq!(intents.len(), 1);
    assert_eq!((intents[0].amount, intents[0].status.as_str()), (4999, "succeeded"));
    assert_eq!(d.charged_at_gateway(&s).await, [4999]);
}

#[tokio::test]
async fn three_d_secure_passed_pays_sandbox() {
    three_d_secure_passed_pays(Gateway::Sandbox).await
}

#[tokio::test]
async fn three_d_secure_passed_pays_stripe() {
    three_d_secure_passed_pays(Gateway::Stripe).await
}

async fn three_d_secure_failed_is_a_decline(gateway: Gateway) {
    let Some(mut d) = Driver::spawn(gateway).await else { return };
    let s = d.payment_session(4999).await;

    // The payment's own check fails (at Stripe, after the setup's check was passed).
    assert_eq!(d.pay(&s, THREE_D_SECURE_ONCE).await, Outcome::Challenge);
    while !d.payment_challenge_waiting() {
        assert_eq!(d.answer_challenge(true).await, Outcome::Challenge, "then the payment's own check");
    }
    let failed = d.answer_challenge(false).await;
    assert_decline(&failed, &[AUTHENTICATION]);
    assert_eq!(d.session_row(&s).await, ("open".to_string(), 1));
    assert!(d.intents(&s).await.is_empty());
    assert!(d.charged_at_gateway(&s).await.is_empty());

    // The first check shown fails. At Stripe that is the setup's: real Stripe then reports
    // `setup_intent_authentication_failure` (our authentication message), but localstripe cancels
    // the SetupIntent without any error, so only the generic decline can be said.
    assert_eq!(d.pay(&s, THREE_D_SECURE_ONCE).await, Outcome::Challenge);
    let failed_setup = !d.payment_challenge_waiting();
    let failed = d.answer_challenge(false).await;
    assert_decline(&failed, if failed_setup { &[AUTHENTICATION, DECLINED] } else { &[AUTHENTICATION] });
    assert_eq!(d.session_row(&s).await, ("open".to_string(), 2));

    assert_eq!(d.pay(&s, GOOD).await, completed(&s));
    assert_eq!(d.session_row(&s).await, ("complete".to_string(), 2));
    assert_eq!(d.intents(&s).await.len(), 1);
    assert_eq!(d.charged_at_gateway(&s).await, [4999]);
}

#[tokio::test]
async fn three_d_secure_failed_is_a_decline_sandbox() {
    three_d_secure_failed_is_a_decline(Gateway::Sandbox).await
}

#[tokio::test]
async fn three_d_secure_failed_is_a_decline_stripe() {
    three_d_secure_failed_is_a_decline(Gateway::Stripe).await
}

// 5. A card that wants 3-D Secure on every payment cannot be renewed without the customer.

async fn an_always_3ds_card_cannot_renew_off_session(gateway: Gateway) {
    let Some(mut d) = Driver::spawn(gateway).await else { return };
    let trial = d.trial_session(999).await;
    let first = d.pay(&trial, THREE_D_SECURE_ALWAYS).await;
    assert_eq!(first, Outcome::Challenge, "saving the card already asks the bank");
    assert_eq!(d.pass_challenges(first).await, completed(&trial));
    assert_eq!(d.subscription_status(&trial).await, "TRIALING");
    assert!(d.charged_at_gateway(&trial).await.is_empty());
    let cards = d.saved_cards(&trial).await;
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].details.last4, "3184");

    assert_eq!(d.renew(&cards[0], 999).await, ChargeOutcome::Declined { code: DeclineCode::AuthenticationRequired });

    // With the customer present it asks for the check instead; a check nobody answers is canceled.
    let attempt = PaymentAttemptId::generate();
    let on_session = d
        .gateway()
        .charge(ChargeRequest {
            idempotency_key: attempt.as_str(),
            card: &cards[0],
            amount: 999,
            currency: Currency::USD,
            off_session: false,
            manual_capture: false,
        })
        .await
        .expect("the gateway answers");
    let ChargeOutcome::RequiresAction { gateway_ref } = on_session else { panic!("{on_session:?}") };
    let abandoned = d
        .gateway()
        .complete_action(
            PendingCharge { idempotency_key: attempt.as_str(), charge_ref: Some(&gateway_ref) },
            ChallengeAnswer::Abandoned,
        )
        .await
        .expect("the gateway answers");
    assert_eq!(abandoned, ChargeOutcome::Declined { code: DeclineCode::AuthenticationRequired });
    let (status, _) = d.charge_at_gateway(&gateway_ref).await;
    assert_ne!(status, "succeeded");
    assert!(d.charged_at_gateway(&trial).await.is_empty());
}

#[tokio::test]
async fn an_always_3ds_card_cannot_renew_off_session_sandbox() {
    an_always_3ds_card_cannot_renew_off_session(Gateway::Sandbox).await
}

#[tokio::test]
async fn an_always_3ds_card_cannot_renew_off_session_stripe() {
    an_always_3ds_card_cannot_renew_off_session(Gateway::Stripe).await
}

// 6. Refunds of a completed payment's charge.

async fn refunds_up_to_the_charge(gateway: Gateway) {
    let Some(mut d) = Driver::spawn(gateway).await else { return };
    let s = d.payment_session(4999).await;
    assert_eq!(d.pay(&s, GOOD).await, completed(&s));
    let charge = d.intents(&s).await.pop().expect("a payment intent").gateway_ref;

    let RefundOutcome::Succeeded { gateway_ref } = d.refund(&charge, 1000).await else {
        panic!("a partial refund succeeds")
    };
    assert_eq!(d.refund_at_gateway(&gateway_ref).await, 1000);

    // More than the 3,999 left. The sandbox refuses, as Stripe does; localstripe 1.15.10 does not
    // check what is left and accepts any amount, so for Stripe only "it answered" is asserted.
    let over = d.refund(&charge, 4000).await;
    match gateway {
        Gateway::Sandbox => assert!(matches!(over, RefundOutcome::Failed { .. }), "{over:?}"),
        Gateway::Stripe => eprintln!("localstripe's answer to an over-refund: {over:?}"),
    }

    let RefundOutcome::Succeeded { gateway_ref } = d.refund(&charge, 3999).await else {
        panic!("refunding the rest succeeds")
    };
    assert_eq!(d.refund_at_gateway(&gateway_ref).await, 3999);

    // A charge the gateway never made cannot be refunded.
    let unknown = d.refund(&d.unknown_charge_ref(), 1000).await;
    assert!(matches!(unknown, RefundOutcome::Failed { .. }), "{unknown:?}");
}

#[tokio::test]
async fn refunds_up_to_the_charge_sandbox() {
    refunds_up_to_the_charge(Gateway::Sandbox).await
}

#[tokio::test]
async fn refunds_up_to_the_charge_stripe() {
    refunds_up_to_the_charge(Gateway::Stripe).await
}

// 7. Setup mode saves the card and charges nothing; the card is good for later charges.

async fn setup_mode_saves_a_card(gateway: Gateway) {
    let Some(mut d) = Driver::spawn(gateway).await else { return };
    let s = d.session(json!({"mode": "setup"})).await;
    assert_eq!(d.pay(&s, GOOD).await, completed(&s));
    assert_eq!(d.session_row(&s).await, ("complete".to_string(), 0));
    assert!(d.intents(&s).await.is_empty(), "no payment intent");
    assert!(d.charged_at_gateway(&s).await.is_empty(), "nothing charged");
    let cards = d.saved_cards(&s).await;
    assert_eq!(cards.len(), 1);
    let card = &cards[0];
    assert_eq!((card.details.brand.as_str(), card.details.last4.as_str()), ("visa", "4242"));
    assert_eq!((card.details.exp_month, card.details.exp_year), (12, 2034));
    match gateway {
        Gateway::Sandbox => assert!(card.gateway_ref.starts_with("sbx_card_") && card.gateway_customer.is_none()),
        Gateway::Stripe => {
            assert!(card.gateway_ref.starts_with("pm_"), "{card:?}");
            assert!(card.gateway_customer.as_deref().is_some_and(|c| c.starts_with("cus_")), "{card:?}");
        }
    }
    assert!(!card.gateway_ref.contains(GOOD), "the number is never kept");
    let ChargeOutcome::Succeeded { gateway_ref } = d.renew(card, 2500).await else {
        panic!("the saved card can be charged later")
    };
    assert_eq!(d.charge_at_gateway(&gateway_ref).await, ("succeeded".to_string(), 2500));
}

#[tokio::test]
async fn setup_mode_saves_a_card_sandbox() {
    setup_mode_saves_a_card(Gateway::Sandbox).await
}

#[tokio::test]
async fn setup_mode_saves_a_card_stripe() {
    setup_mode_saves_a_card(Gateway::Stripe).await
}
