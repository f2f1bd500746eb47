//! Use cases shared by the API, the pages and the workers. Each owns its transaction: everything a
//! use case changes, and the events that report it, commit together or not at all.

pub mod billing;
pub mod billing_settings;
pub mod card_setup;
pub mod catalog;
pub mod checkout;
pub mod events;
pub mod invoice_payment;
pub mod keys;
pub mod processor_events;
pub mod refunds;
pub mod subscriptions;
pub mod test_clocks;
pub mod webhook_delivery;
pub mod webhooks;

use crate::error::ApiError;

/// What a use case can refuse, independent of the door (API or page) it was called through.
#[derive(Debug)]
pub enum FlowError {
    /// Bad input, with the field it concerns.
    Invalid(crate::domain::FieldError),
    NotFound {
        resource: &'static str,
        id: String,
    },
    /// Well-formed but impossible in the current state.
    Unprocessable {
        code: &'static str,
        message: String,
    },
    Conflict {
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    /// The customer's card was declined (402 `card_error`).
    Declined(crate::domain::payment::DeclineCode),
    /// The payment processor did not answer; nothing was changed that a retry cannot finish.
    Unavailable(String),
    Internal(anyhow::Error),
}

/// The gateway that takes payments in `mode`.
pub fn gateway(
    state: &crate::state::AppState,
    mode: crate::domain::Mode,
) -> Result<&dyn crate::gateway::PaymentGateway, FlowError> {
    state.gateways.for_mode(mode).ok_or_else(|| FlowError::Unprocessable {
        code: "live_mode_unavailable",
        message: "live-mode payments need a live Stripe key; configure STRIPE_SECRET_KEY=sk_live_...".into(),
    })
}

impl From<crate::gateway::GatewayError> for FlowError {
    fn from(e: crate::gateway::GatewayError) -> FlowError {
        match e {
            crate::gateway::GatewayError::CardRejected { param, message } => {
                FlowError::Invalid(crate::domain::FieldError::new(param, message))
            }
            crate::gateway::GatewayError::Unavailable(why) => FlowError::Unavailable(why),
        }
    }
}

impl From<sqlx::Error> for FlowError {
    fn from(e: sqlx::Error) -> FlowError {
        FlowError::Internal(e.into())
    }
}

impl From<crate::domain::FieldError> for FlowError {
    fn from(e: crate::domain::FieldError) -> FlowError {
        FlowError::Invalid(e)
    }
}

impl From<FlowError> for ApiError {
    fn from(e: FlowError) -> ApiError {
        match e {
            FlowError::Invalid(f) => f.into(),
            FlowError::NotFound { resource, id } => ApiError::not_found(resource, &id),
            FlowError::Unprocessable { code, message } => ApiError::unprocessable(code, message),
            FlowError::Conflict { code, message, param } => {
                let e = ApiError::conflict(code, message);
                match param {
                    Some(p) => e.with_param(p),
                    None => e,
                }
            }
            FlowError::Declined(code) => ApiError::card_declined(code),
            FlowError::Unavailable(why) => {
                tracing::warn!(error = %why, "payment processor unavailable");
                ApiError::processor_unavailable()
            }
            FlowError::Internal(e) => ApiError::internal(e),
        }
    }
}
