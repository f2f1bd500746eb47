//! Stripe, through async-stripe: customers, SetupIntents confirmed in the browser by Stripe.js,
//! PaymentIntents charged on the saved PaymentMethod, refunds; and `StripeGateway`, which puts
//! them behind `PaymentGateway`. Wire types stay in this file.
//! Responses are read into small structs of the fields we use (localstripe's PaymentIntent JSON
//! does not fit the library's full typed object; real Stripe's full object fits the small ones).
//! Every POST carries its own idempotency key, derived from our own ids.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use miniserde::Deserialize;
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_core::customer::CreateCustomer;
use stripe_core::payment_intent::{
    CancelPaymentIntent, CreatePaymentIntent, CreatePaymentIntentOffSession, ListPaymentIntent, RetrievePaymentIntent,
};
use stripe_core::refund::CreateRefund;
use stripe_core::setup_intent::{CreateSetupIntent, CreateSetupIntentUsage, RetrieveSetupIntent};
use stripe_payment::payment_method::RetrievePaymentMethod;
use stripe_shared::PaymentIntentCaptureMethod;

use super::{
    BoxFuture, BrowserCards, BrowserScript, CardEntry, ChallengeAnswer, ChargeLookup, ChargeOutcome, ChargeRequest,
    GatewayError, PaymentGateway, PendingCharge, RefundOutcome, RefundRequest, SavedCard, SetupResult, SetupStarted,
};
use crate::domain::payment::{CardDetails, DeclineCode};

/// Keys and endpoints, checked at start-up.
#[derive(Clone, Debug)]
pub struct StripeConfig {
    pub secret_key: String,
    pub publishable_key: String,
    /// Base of the API (`https://api.stripe.com` unless overridden, e.g. by localstripe).
    pub api_base: Option<String>,
    /// Where the page loads Stripe.js from.
    pub js_url: String,
}

impl StripeConfig {
    pub fn is_live(&self) -> bool {
        self.secret_key.starts_with("sk_live_")
    }

    /// The origin Stripe.js is served from, for the page's Content-Security-Policy.
    pub fn js_origin(&self) -> String {
        origin_of(&self.js_url)
    }

    /// The origin of the API that Stripe.js calls from the browser.
    pub fn api_origin(&self) -> String {
        origin_of(self.api_base.as_deref().unwrap_or(STRIPE_API))
    }
}

const STRIPE_API: &str = "https://api.stripe.com";
/// Stripe.js shows 3-D Secure challenges in frames from here.
const STRIPE_HOOKS: &str = "https://hooks.stripe.com";

fn origin_of(url: &str) -> String {
    url::Url::parse(url).map(|u| u.origin().ascii_serialization()).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
struct WireId {
    id: String,
}

#[derive(Debug, Deserialize)]
struct WireError {
    code: Option<String>,
    decline_code: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WireSetupIntent {
    pub id: String,
    pub status: String,
    pub client_secret: Option<String>,
    pub customer: Option<String>,
    pub payment_method: Option<String>,
    last_setup_error: Option<WireError>,
}

#[derive(Debug, Deserialize)]
pub struct WirePaymentIntent {
    pub id: String,
    pub status: String,
    pub amount: i64,
    pub client_secret: Option<String>,
    last_payment_error: Option<WireError>,
    metadata: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct WireList<T> {
    data: Vec<T>,
    has_more: bool,
}

/// How far `find_charge` pages (100 each) before it gives up.
const MAX_LIST_PAGES: usize = 200;

#[derive(Debug, Deserialize)]
struct WireCard {
    brand: Option<String>,
    last4: Option<String>,
    exp_month: Option<i64>,
    exp_year: Option<i64>,
    funding: Option<String>,
    country: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WirePaymentMethod {
    card: Option<WireCard>,
}

#[derive(Debug, Deserialize)]
pub struct WireRefund {
    pub id: String,
    pub status: Option<String>,
    pub amount: i64,
}

/// What a SetupIntent says after the browser confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupState {
    /// Saved: the Stripe customer and payment method to charge.
    Succeeded {
        customer: String,
        payment_method: String,
    },
    Declined(DeclineCode),
    RequiresAction,
    /// Not confirmed (yet).
    Incomplete,
}

pub struct StripeApi {
    client: Client,
    pub config: StripeConfig,
}

fn key(raw: &str) -> Result<RequestStrategy, GatewayError> {
    IdempotencyKey::new(raw)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| GatewayError::Unavailable(format!("bad idempotency key: {e}")))
}

/// A failure that says nothing about the card: retried or reconciled later.
fn unknown(e: StripeError) -> GatewayError {
    GatewayError::Unavailable(e.to_string())
}

/// The plain-words reason behind a Stripe decline.
pub fn decline_code(code: Option<&str>, decline: Option<&str>) -> DeclineCode {
    let pick = |s: &str| match s {
        "insufficient_funds" => Some(DeclineCode::InsufficientFunds),
        "lost_card" | "stolen_card" => Some(DeclineCode::LostCard),
        "expired_card" => Some(DeclineCode::ExpiredCard),
        "incorrect_cvc" | "invalid_cvc" => Some(DeclineCode::IncorrectCvc),
        "authentication_required" | "payment_intent_authentication_failure" | "setup_intent_authentication_failure" => {
            Some(DeclineCode::AuthenticationRequired)
        }
        _ => None,
    };
    decline.and_then(pick).or_else(|| code.and_then(pick)).unwrap_or(DeclineCode::GenericDecline)
}

/// Splits a failed call into "the card was declined" (a normal outcome) and "we do not know".
fn classify(e: StripeError) -> Result<DeclineCode, GatewayError> {
    match e {
        StripeError::Stripe(err, status) if status == 402 || err.decline_code.is_some() => {
            let code = err.code.as_ref().map(|c| c.as_str().to_string());
            Ok(decline_code(code.as_deref(), err.decline_code.as_deref()))
        }
        other => Err(unknown(other)),
    }
}

impl StripeApi {
    pub fn new(config: StripeConfig) -> Result<StripeApi, GatewayError> {
        let mut builder = ClientBuilder::new(config.secret_key.clone())
            .request_strategy(RequestStrategy::Once)
            .timeout(Duration::from_secs(20));
        if let Some(base) = &config.api_base {
            builder = builder.url(base.clone());
        }
        let client = builder.build().map_err(unknown)?;
        Ok(StripeApi { client, config })
    }

    pub async fn create_customer(&self, idempotency_key: &str, email: &str) -> Result<String, GatewayError> {
        let customer = CreateCustomer::new()
            .email(email)
            .build()
            .customize::<WireId>()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(unknown)?;
        Ok(customer.id)
    }

    /// A SetupIntent for saving a card for later off-session charges.
    pub async fn create_setup_intent(
        &self,
        idempotency_key: &str,
        customer: &str,
        reference: &str,
    ) -> Result<WireSetupIntent, GatewayError> {
        CreateSetupIntent::new()
            .customer(customer)
            .usage(CreateSetupIntentUsage::OffSession)
            .metadata(HashMap::from([("flex_reference".to_string(), reference.to_string())]))
            .build()
            .customize::<WireSetupIntent>()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(unknown)
    }

    pub async fn setup_state(&self, setup_intent: &str) -> Result<SetupState, GatewayError> {
        let si = RetrieveSetupIntent::new(setup_intent)
            .build()
            .customize::<WireSetupIntent>()
            .send(&self.client)
            .await
            .map_err(unknown)?;
        let state = match si.status.as_str() {
            "succeeded" => match (&si.customer, &si.payment_method) {
                (Some(c), Some(pm)) => SetupState::Succeeded { customer: c.clone(), payment_method: pm.clone() },
                _ => SetupState::Incomplete,
            },
            "requires_action" => SetupState::RequiresAction,
            status => match &si.last_setup_error {
                Some(err) => SetupState::Declined(decline_code(err.code.as_deref(), err.decline_code.as_deref())),
                // localstripe cancels a setup whose card it declines, and records no error.
                None if status == "canceled" => SetupState::Declined(DeclineCode::GenericDecline),
                None => SetupState::Incomplete,
            },
        };
        Ok(state)
    }

    /// Brand, last four and expiry of a saved card: all we keep of it.
    pub async fn card_details(&self, payment_method: &str) -> Result<CardDetails, GatewayError> {
        let pm = RetrievePaymentMethod::new(payment_method)
            .build()
            .customize::<WirePaymentMethod>()
            .send(&self.client)
            .await
            .map_err(unknown)?;
        let card = pm.card.ok_or_else(|| GatewayError::Unavailable("payment method has no card".into()))?;
        Ok(CardDetails {
            brand: card.brand.unwrap_or_else(|| "unknown".into()),
            last4: card.last4.unwrap_or_default(),
            exp_month: card.exp_month.unwrap_or(1).clamp(1, 12) as u32,
            exp_year: card.exp_year.unwrap_or(0).clamp(0, 9999) as i32,
            funding: card.funding.unwrap_or_else(|| "unknown".into()),
            country: card.country,
        })
    }

    /// Charges a saved card. The attempt id goes into the metadata so the charge can be found again
    /// if our process dies before recording the answer.
    pub async fn charge(&self, charge: &ChargeRequest<'_>) -> Result<ChargeOutcome, GatewayError> {
        let (attempt, amount, off_session) = (charge.idempotency_key, charge.amount, charge.off_session);
        let payment_method = charge.card.gateway_ref.as_str();
        let customer = charge
            .card
            .gateway_customer
            .as_deref()
            .ok_or_else(|| GatewayError::Unavailable("a Stripe card without its Stripe customer".into()))?;
        let currency = charge.currency;
        let currency = stripe_types::Currency::from_str(&currency.code())
            .map_err(|_| GatewayError::Unavailable(format!("Stripe does not take {currency}")))?;
        let mut req = CreatePaymentIntent::new(amount, currency)
            .customer(customer)
            .payment_method(payment_method)
            .confirm(true)
            .metadata(HashMap::from([("flex_attempt".to_string(), attempt.to_string())]));
        if off_session {
            req = req.off_session(CreatePaymentIntentOffSession::Bool(true));
        }
        if charge.manual_capture {
            req = req.capture_method(PaymentIntentCaptureMethod::Manual);
        }
        let sent = req
            .build()
            .customize::<WirePaymentIntent>()
            .request_strategy(key(&format!("{attempt}-charge"))?)
            .send(&self.client)
            .await;
        match sent {
            // Nobody is there to answer a challenge: for a renewal it is a decline.
            Ok(pi) if off_session && pi.status == "requires_action" => {
                Ok(ChargeOutcome::Declined { code: DeclineCode::AuthenticationRequired })
            }
            Ok(pi) => outcome_of(&pi),
            Err(e) => classify(e).map(|code| ChargeOutcome::Declined { code }),
        }
    }

    /// Cancels a PaymentIntent whose challenge nobody answered.
    pub async fn cancel_payment_intent(&self, attempt: &str, id: &str) -> Result<WirePaymentIntent, GatewayError> {
        CancelPaymentIntent::new(id)
            .build()
            .customize::<WirePaymentIntent>()
            .request_strategy(key(&format!("{attempt}-cancel"))?)
            .send(&self.client)
            .await
            .map_err(unknown)
    }

    pub async fn payment_intent(&self, id: &str) -> Result<WirePaymentIntent, GatewayError> {
        RetrievePaymentIntent::new(id)
            .build()
            .customize::<WirePaymentIntent>()
            .send(&self.client)
            .await
            .map_err(unknown)
    }

    /// The charge made for `attempt` on `customer`'s cards, if Stripe has one. Pages through the
    /// customer's PaymentIntents (localstripe cannot filter by customer: there, through all of them).
    pub async fn find_charge(&self, customer: &str, attempt: &str) -> Result<Option<WirePaymentIntent>, GatewayError> {
        let mut by_customer = true;
        let mut after: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut req = ListPaymentIntent::new().limit(100);
            if by_customer {
                req = req.customer(customer);
            }
            if let Some(a) = &after {
                req = req.starting_after(a.as_str());
            }
            let page = match req.build().customize::<WireList<WirePaymentIntent>>().send(&self.client).await {
                Ok(page) => page,
                Err(StripeError::Stripe(_, 400)) if by_customer => {
                    by_customer = false;
                    continue;
                }
                Err(e) => return Err(unknown(e)),
            };
            let last = page.data.last().map(|pi| pi.id.clone());
            if let Some(found) = page.data.into_iter().find(|pi| {
                pi.metadata.as_ref().and_then(|m| m.get("flex_attempt")).map(String::as_str) == Some(attempt)
            }) {
                return Ok(Some(found));
            }
            match (page.has_more, last) {
                (true, Some(last)) => after = Some(last),
                _ => return Ok(None),
            }
        }
        Err(GatewayError::Unavailable(format!("too many PaymentIntents to search for attempt {attempt}")))
    }

    /// Refunds `amount` of a PaymentIntent. A refusal (more than is left, say) is `Ok(Err(reason))`.
    pub async fn refund(
        &self,
        idempotency_key: &str,
        payment_intent: &str,
        amount: i64,
    ) -> Result<Result<WireRefund, String>, GatewayError> {
        let sent = CreateRefund::new()
            .payment_intent(payment_intent)
            .amount(amount)
            .build()
            .customize::<WireRefund>()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await;
        match sent {
            Ok(refund) => Ok(Ok(refund)),
            // 409: the same key is still being processed at Stripe, and 429: slow down; neither is a no.
            Err(StripeError::Stripe(err, status)) if (400..500).contains(&status) && status != 409 && status != 429 => {
                Ok(Err(err.message.clone().unwrap_or_else(|| format!("Stripe refused the refund ({status})"))))
            }
            Err(e) => Err(unknown(e)),
        }
    }
}

/// Stripe behind `PaymentGateway`: cards are typed into Stripe Elements and saved with a
/// SetupIntent that Stripe.js confirms; charges are PaymentIntents on the saved PaymentMethod.
pub struct StripeGateway {
    api: StripeApi,
    script: BrowserScript,
}

impl StripeGateway {
    pub fn new(config: StripeConfig) -> Result<StripeGateway, GatewayError> {
        let script_origin = config.js_origin();
        let mut connect_origins = vec![script_origin.clone(), config.api_origin()];
        connect_origins.dedup();
        let mut frame_origins = vec![script_origin.clone()];
        if script_origin == "https://js.stripe.com" {
            frame_origins.push(STRIPE_HOOKS.to_string());
        }
        let script = BrowserScript {
            script_url: config.js_url.clone(),
            publishable_key: config.publishable_key.clone(),
            script_origin,
            connect_origins,
            frame_origins,
        };
        Ok(StripeGateway { api: StripeApi::new(config)?, script })
    }
}

impl BrowserCards for StripeGateway {
    fn script(&self) -> &BrowserScript {
        &self.script
    }

    fn start_setup<'a>(
        &'a self,
        idempotency_key: &'a str,
        email: &'a str,
        existing_customer: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SetupStarted, GatewayError>> {
        Box::pin(async move {
            let customer = match existing_customer {
                Some(c) => c.to_string(),
                None => self.api.create_customer(&format!("{idempotency_key}-customer"), email).await?,
            };
            let si =
                self.api.create_setup_intent(&format!("{idempotency_key}-setup"), &customer, idempotency_key).await?;
            let client_secret = si
                .client_secret
                .ok_or_else(|| GatewayError::Unavailable("the SetupIntent came without a client secret".into()))?;
            Ok(SetupStarted { gateway_customer: customer, setup_ref: si.id, client_secret })
        })
    }

    fn finish_setup<'a>(&'a self, setup_ref: &'a str) -> BoxFuture<'a, Result<SetupResult, GatewayError>> {
        Box::pin(async move {
            Ok(match self.api.setup_state(setup_ref).await? {
                SetupState::Succeeded { customer, payment_method } => {
                    let details = self.api.card_details(&payment_method).await?;
                    SetupResult::Saved(SavedCard {
                        gateway_ref: payment_method,
                        gateway_customer: Some(customer),
                        details,
                    })
                }
                SetupState::Declined(code) => SetupResult::Declined(code),
                SetupState::RequiresAction | SetupState::Incomplete => SetupResult::Pending,
            })
        })
    }

    fn action_secret<'a>(&'a self, charge_ref: &'a str) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(async move {
            self.api
                .payment_intent(charge_ref)
                .await?
                .client_secret
                .ok_or_else(|| GatewayError::Unavailable("the PaymentIntent came without a client secret".into()))
        })
    }
}

impl PaymentGateway for StripeGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn card_entry(&self) -> CardEntry<'_> {
        CardEntry::Browser(self)
    }

    fn charge<'a>(&'a self, req: ChargeRequest<'a>) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async move {
            // The SetupIntent already verified the card; nothing is due today.
            if req.amount == 0 {
                return Ok(ChargeOutcome::Succeeded { gateway_ref: req.card.gateway_ref.clone() });
            }
            self.api.charge(&req).await
        })
    }

    fn complete_action<'a>(
        &'a self,
        charge: PendingCharge<'a>,
        answer: ChallengeAnswer,
    ) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async move {
            let id = charge
                .charge_ref
                .ok_or_else(|| GatewayError::Unavailable("no PaymentIntent recorded for this challenge".into()))?;
            // What the browser says happened is never taken on trust: Stripe's record decides.
            let pi = self.api.payment_intent(id).await?;
            if answer == ChallengeAnswer::Abandoned && pi.status == "requires_action" {
                self.api.cancel_payment_intent(charge.idempotency_key, id).await?;
                return Ok(ChargeOutcome::Declined { code: DeclineCode::AuthenticationRequired });
            }
            outcome_of(&pi)
        })
    }

    fn lookup<'a>(&'a self, lookup: ChargeLookup<'a>) -> BoxFuture<'a, Result<Option<ChargeOutcome>, GatewayError>> {
        Box::pin(async move {
            if let Some(id) = lookup.charge_ref {
                return outcome_of(&self.api.payment_intent(id).await?).map(Some);
            }
            // Charges are made on a Stripe customer: without one, nothing was charged.
            let Some(customer) = lookup.gateway_customer else { return Ok(None) };
            self.api.find_charge(customer, lookup.idempotency_key).await?.map(|pi| outcome_of(&pi)).transpose()
        })
    }

    fn refund<'a>(&'a self, req: RefundRequest<'a>) -> BoxFuture<'a, Result<RefundOutcome, GatewayError>> {
        Box::pin(async move {
            Ok(match self.api.refund(req.idempotency_key, req.charge_ref, req.amount).await? {
                Ok(refund) if refund.status.as_deref() == Some("failed") => {
                    RefundOutcome::Failed { reason: "Stripe could not refund this charge".into() }
                }
                Ok(refund) => RefundOutcome::Succeeded { gateway_ref: refund.id },
                Err(reason) => RefundOutcome::Failed { reason },
            })
        })
    }
}

/// Our outcome for a PaymentIntent in the state Stripe reports; `None` while Stripe has not
/// decided (`processing`), which callers treat as "ask again later".
pub fn outcome_for(id: &str, status: &str, code: Option<&str>, decline: Option<&str>) -> Option<ChargeOutcome> {
    match status {
        "succeeded" | "requires_capture" => Some(ChargeOutcome::Succeeded { gateway_ref: id.to_string() }),
        "requires_action" | "requires_confirmation" => {
            Some(ChargeOutcome::RequiresAction { gateway_ref: id.to_string() })
        }
        "processing" => None,
        _ => Some(ChargeOutcome::Declined { code: decline_code(code, decline) }),
    }
}

fn outcome_of(pi: &WirePaymentIntent) -> Result<ChargeOutcome, GatewayError> {
    let error = pi.last_payment_error.as_ref();
    outcome_for(
        &pi.id,
        &pi.status,
        error.and_then(|e| e.code.as_deref()),
        error.and_then(|e| e.decline_code.as_deref()),
    )
    .ok_or_else(|| GatewayError::Unavailable(format!("PaymentIntent {} is still processing", pi.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_reasons_map_to_plain_words() {
        assert_eq!(decline_code(Some("card_declined"), Some("insufficient_funds")), DeclineCode::InsufficientFunds);
        assert_eq!(decline_code(Some("expired_card"), None), DeclineCode::ExpiredCard);
        assert_eq!(decline_code(Some("incorrect_cvc"), None), DeclineCode::IncorrectCvc);
        assert_eq!(decline_code(Some("card_declined"), Some("generic_decline")), DeclineCode::GenericDecline);
        assert_eq!(decline_code(Some("authentication_required"), None), DeclineCode::AuthenticationRequired);
        assert_eq!(decline_code(None, None), DeclineCode::GenericDecline);
    }

    #[test]
    fn payment_intent_states_become_outcomes() {
        let pi = |status: &str| WirePaymentIntent {
            id: "pi_1".into(),
            status: status.into(),
            amount: 4999,
            client_secret: None,
            last_payment_error: None,
            metadata: None,
        };
        assert!(matches!(outcome_of(&pi("succeeded")), Ok(ChargeOutcome::Succeeded { .. })));
        assert!(matches!(outcome_of(&pi("requires_action")), Ok(ChargeOutcome::RequiresAction { .. })));
        assert!(matches!(outcome_of(&pi("requires_payment_method")), Ok(ChargeOutcome::Declined { .. })));
        assert!(matches!(outcome_of(&pi("processing")), Err(GatewayError::Unavailable(_))));
    }
}
