//! The payment gateway boundary. The page and the flows talk to `PaymentGateway` only; which
//! processor answers (the built-in sandbox, later Stripe) is decided once, at start-up. A decline
//! is a normal outcome; an `Err` means "we do not know what happened" and is retried or reconciled.

pub mod sandbox;
pub mod stripe;

use std::future::Future;
use std::pin::Pin;

use crate::domain::card::CardInput;
use crate::domain::money::Currency;
use crate::domain::payment::{CardDetails, DeclineCode};
use crate::domain::Mode;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A card the gateway can charge later: its reference at the gateway and what we may show of it.
#[derive(Clone, Debug)]
pub struct SavedCard {
    pub gateway_ref: String,
    pub details: CardDetails,
}

#[derive(Clone, Debug)]
pub struct ChargeRequest<'a> {
    /// Derived from our payment attempt id: the same attempt never charges twice.
    pub idempotency_key: &'a str,
    pub card_ref: &'a str,
    /// Zero means: verify and save the card, charge nothing.
    pub amount: i64,
    pub currency: Currency,
    /// A charge without the customer present (renewals): no challenge can be shown.
    pub off_session: bool,
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

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The card cannot be used here at all (a real card in the sandbox, say); say so to the customer.
    #[error("{message}")]
    CardRejected { param: &'static str, message: String },
    /// Unknown outcome: network, processor or database trouble.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
}

pub trait PaymentGateway: Send + Sync {
    /// `sandbox` or `stripe`, stored beside every attempt and payment method.
    fn name(&self) -> &'static str;

    /// Whether this gateway can take payments in `mode` (the sandbox takes test mode only).
    fn supports(&self, mode: Mode) -> bool;

    /// Checks card details typed on our own form and returns a reference to charge. The number and
    /// CVC are not kept.
    fn save_card<'a>(&'a self, card: &'a CardInput) -> BoxFuture<'a, Result<SavedCard, GatewayError>>;

    fn charge<'a>(&'a self, req: ChargeRequest<'a>) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>>;

    /// The customer answered the challenge of a charge that required action.
    fn complete_action<'a>(
        &'a self,
        idempotency_key: &'a str,
        approved: bool,
    ) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>>;

    /// What the gateway recorded for a charge made under `idempotency_key`, if anything; used to
    /// finish attempts whose outcome we never recorded.
    fn lookup<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, Result<Option<ChargeOutcome>, GatewayError>>;
}
