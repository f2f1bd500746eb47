//! The payment gateway boundary. The page and the flows talk to `PaymentGateway` only; which
//! processor answers (the built-in sandbox or Stripe) is decided once, at start-up. A decline is a
//! normal outcome; an `Err` means "we do not know what happened" and is retried or reconciled.
//!
//! The two gateways differ in one thing the page must know: where the card is typed. The sandbox
//! takes our own form's fields (`CardEntry::OwnForm`); Stripe takes its own Elements in the
//! browser, which confirm a setup with Stripe directly (`CardEntry::Browser`), so the card number
//! never reaches us.

pub mod sandbox;
pub mod stripe;
pub mod stripe_webhook;

use std::future::Future;
use std::pin::Pin;

use crate::domain::card::CardInput;
use crate::domain::money::Currency;
use crate::domain::payment::{CardDetails, DeclineCode};
use crate::domain::Mode;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Requests in flight at once to a gateway asked one charge at a time.
pub const PARALLEL_CHARGES: usize = 32;

/// A card the gateway can charge later: its reference at the gateway, the gateway's customer it
/// belongs to (Stripe), and what we may show of it.
#[derive(Clone, Debug)]
pub struct SavedCard {
    pub gateway_ref: String,
    pub gateway_customer: Option<String>,
    pub details: CardDetails,
}

#[derive(Clone, Debug)]
pub struct ChargeRequest<'a> {
    /// Our payment attempt id: the gateway derives its idempotency key from it and can find the
    /// charge again by it, so the same attempt never charges twice.
    pub idempotency_key: &'a str,
    pub card: &'a SavedCard,
    /// Zero means: the card is verified and saved, charge nothing.
    pub amount: i64,
    pub currency: Currency,
    /// A charge without the customer present (renewals): no challenge can be shown, so a bank that
    /// wants one declines with `authentication_required`.
    pub off_session: bool,
    /// Authorise now, capture later.
    pub manual_capture: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded {
        gateway_ref: String,
    },
    Declined {
        code: DeclineCode,
    },
    /// The customer's bank wants a challenge (3-D Secure) before it decides.
    RequiresAction {
        gateway_ref: String,
    },
}

/// A charge waiting on a challenge: our attempt id and the gateway's charge reference.
#[derive(Clone, Copy, Debug)]
pub struct PendingCharge<'a> {
    pub idempotency_key: &'a str,
    pub charge_ref: Option<&'a str>,
}

/// How a challenge ended, as far as we can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeAnswer {
    /// Answered on our own page (the sandbox's stand-in for a bank).
    Approved,
    Failed,
    /// Answered on the gateway's own dialog in the browser: ask the gateway what happened.
    AtGateway,
    /// Nobody answered in time: cancel the charge.
    Abandoned,
}

/// Where to find a charge made for an attempt whose answer we never recorded.
#[derive(Clone, Copy, Debug)]
pub struct ChargeLookup<'a> {
    pub idempotency_key: &'a str,
    pub gateway_customer: Option<&'a str>,
    pub charge_ref: Option<&'a str>,
}

#[derive(Clone, Debug)]
pub struct RefundRequest<'a> {
    /// Our refund id.
    pub idempotency_key: &'a str,
    /// The charge reference recorded on the payment intent.
    pub charge_ref: &'a str,
    pub amount: i64,
    pub currency: Currency,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundOutcome {
    Succeeded {
        gateway_ref: String,
    },
    /// The gateway refused (nothing left to refund there, a charge it does not know, ...).
    Failed {
        reason: String,
    },
}

/// A setup started for a card typed into the gateway's own fields in the browser.
#[derive(Clone, Debug)]
pub struct SetupStarted {
    pub gateway_customer: String,
    pub setup_ref: String,
    /// Handed to the gateway's script in the browser, which confirms the setup with it.
    pub client_secret: String,
}

#[derive(Clone, Debug)]
pub enum SetupResult {
    Saved(SavedCard),
    Declined(DeclineCode),
    /// Not confirmed yet, or waiting on the customer's bank.
    Pending,
}

/// What the page loads to show the gateway's own card fields.
#[derive(Clone, Debug)]
pub struct BrowserScript {
    pub script_url: String,
    pub publishable_key: String,
    /// Origins the page's Content-Security-Policy must allow, and nothing more: where the script
    /// comes from, what it talks to, and what it shows in frames.
    pub script_origin: String,
    pub connect_origins: Vec<String>,
    pub frame_origins: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The card cannot be used here at all (a real card in the sandbox, say); say so to the customer.
    #[error("{message}")]
    CardRejected { param: &'static str, message: String },
    /// Unknown outcome: network, processor or database trouble.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
}

/// Card fields on our own form: the number and CVC pass through our server once and are dropped.
pub trait FormCards: Send + Sync {
    fn save_card<'a>(&'a self, card: &'a CardInput) -> BoxFuture<'a, Result<SavedCard, GatewayError>>;
}

/// Card fields of the gateway's own script: we start a setup, the browser confirms it with the
/// gateway, and we read back what was saved.
pub trait BrowserCards: Send + Sync {
    fn script(&self) -> &BrowserScript;

    /// Starts saving a card for attempt `idempotency_key`, on `existing_customer` when the payer
    /// already has one at the gateway.
    fn start_setup<'a>(
        &'a self,
        idempotency_key: &'a str,
        email: &'a str,
        existing_customer: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SetupStarted, GatewayError>>;

    fn finish_setup<'a>(&'a self, setup_ref: &'a str) -> BoxFuture<'a, Result<SetupResult, GatewayError>>;

    /// The secret the browser's script needs to run the challenge of a charge.
    fn action_secret<'a>(&'a self, charge_ref: &'a str) -> BoxFuture<'a, Result<String, GatewayError>>;
}

pub enum CardEntry<'a> {
    OwnForm(&'a dyn FormCards),
    Browser(&'a dyn BrowserCards),
}

pub trait PaymentGateway: Send + Sync {
    /// `sandbox` or `stripe`, stored beside every attempt and payment method.
    fn name(&self) -> &'static str;

    /// Where the customer types the card.
    fn card_entry(&self) -> CardEntry<'_>;

    fn charge<'a>(&'a self, req: ChargeRequest<'a>) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>>;

    /// Many charges (distinct idempotency keys), answered in the order asked. Each answer means what
    /// [`PaymentGateway::charge`]'s does. By default each is asked on its own, a bounded number at
    /// once; a gateway that can record many at once (the sandbox's ledger) does so.
    fn charge_many<'a>(
        &'a self,
        reqs: Vec<ChargeRequest<'a>>,
    ) -> BoxFuture<'a, Vec<Result<ChargeOutcome, GatewayError>>> {
        Box::pin(async move {
            use futures_util::StreamExt;
            let asks: Vec<BoxFuture<'a, Result<ChargeOutcome, GatewayError>>> =
                reqs.into_iter().map(|req| self.charge(req)).collect();
            futures_util::stream::iter(asks).buffered(PARALLEL_CHARGES).collect().await
        })
    }

    /// The challenge of a charge that required action has ended.
    fn complete_action<'a>(
        &'a self,
        charge: PendingCharge<'a>,
        answer: ChallengeAnswer,
    ) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>>;

    /// What the gateway recorded for the charge of an attempt, if anything; used to finish attempts
    /// whose outcome we never recorded.
    fn lookup<'a>(&'a self, lookup: ChargeLookup<'a>) -> BoxFuture<'a, Result<Option<ChargeOutcome>, GatewayError>>;

    fn refund<'a>(&'a self, req: RefundRequest<'a>) -> BoxFuture<'a, Result<RefundOutcome, GatewayError>>;
}

/// The gateway for each mode. Test mode always has one (Stripe with a test key, else the sandbox);
/// live mode has one only with a live Stripe key.
#[derive(Clone)]
pub struct Gateways {
    test: std::sync::Arc<dyn PaymentGateway>,
    live: Option<std::sync::Arc<dyn PaymentGateway>>,
}

impl Gateways {
    pub fn new(test: std::sync::Arc<dyn PaymentGateway>, live: Option<std::sync::Arc<dyn PaymentGateway>>) -> Self {
        Gateways { test, live }
    }

    pub fn for_mode(&self, mode: Mode) -> Option<&dyn PaymentGateway> {
        match mode {
            Mode::Test => Some(self.test.as_ref()),
            Mode::Live => self.live.as_deref(),
        }
    }

    /// How each mode pays, for the start-up log.
    pub fn describe(&self) -> String {
        match &self.live {
            Some(live) => format!("test mode: {}, live mode: {}", self.test.name(), live.name()),
            None => format!("test mode: {}, live mode: off (needs a live STRIPE_SECRET_KEY)", self.test.name()),
        }
    }
}
