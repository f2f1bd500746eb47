//! Payments: decline reasons in plain words, payment intents and saved payment methods as the API
//! shows them.

use serde::Serialize;

use super::ids::{CheckoutSessionId, CustomerId, InvoiceId, PaymentIntentId, PaymentMethodId};
use super::money::Currency;
use super::timestamp::Timestamp;
use super::wire_enum;

wire_enum!(DeclineCode {
    GenericDecline => "generic_decline",
    InsufficientFunds => "insufficient_funds",
    LostCard => "lost_card",
    ExpiredCard => "expired_card",
    IncorrectCvc => "incorrect_cvc",
    AuthenticationRequired => "authentication_required",
});

impl DeclineCode {
    /// What the customer reads, in plain words.
    pub fn customer_message(self) -> &'static str {
        match self {
            DeclineCode::GenericDecline => "Your card was declined.",
            DeclineCode::InsufficientFunds => "Your card has insufficient funds.",
            DeclineCode::LostCard => "Your card was declined.",
            DeclineCode::ExpiredCard => "Your card has expired.",
            DeclineCode::IncorrectCvc => "Your card's security code is incorrect.",
            DeclineCode::AuthenticationRequired => {
                "We couldn't verify this payment with your bank. Please try again or use another card."
            }
        }
    }

    /// The Stripe-style error code that goes with the decline code.
    pub fn error_code(self) -> &'static str {
        match self {
            DeclineCode::ExpiredCard => "expired_card",
            DeclineCode::IncorrectCvc => "incorrect_cvc",
            DeclineCode::AuthenticationRequired => "authentication_required",
            _ => "card_declined",
        }
    }

    /// Declines no automatic retry can fix.
    pub fn is_hard(self) -> bool {
        matches!(self, DeclineCode::AuthenticationRequired | DeclineCode::ExpiredCard | DeclineCode::LostCard)
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PaymentError {
    #[serde(rename = "type")]
    pub error_type: String,
    pub code: String,
    pub decline_code: Option<String>,
    pub message: String,
}

impl PaymentError {
    pub fn from_decline(code: DeclineCode) -> PaymentError {
        PaymentError {
            error_type: "card_error".into(),
            code: code.error_code().into(),
            decline_code: Some(code.as_str().into()),
            message: code.customer_message().into(),
        }
    }
}

wire_enum!(PaymentIntentStatus {
    RequiresPaymentMethod => "requires_payment_method",
    RequiresAction => "requires_action",
    Processing => "processing",
    RequiresCapture => "requires_capture",
    Succeeded => "succeeded",
    Canceled => "canceled",
});

#[derive(Clone, Debug, Serialize)]
pub struct PaymentIntent {
    pub payment_intent_id: PaymentIntentId,
    pub amount: i64,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub currency: Currency,
    pub status: PaymentIntentStatus,
    pub capture_method: String,
    pub customer: Option<CustomerId>,
    pub invoice: Option<InvoiceId>,
    pub checkout_session: Option<CheckoutSessionId>,
    pub payment_method: Option<PaymentMethodId>,
    pub last_payment_error: Option<PaymentError>,
    pub created_at: Timestamp,
    pub test_mode: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct CardDetails {
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: i32,
    pub funding: String,
    pub country: Option<String>,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, Default)]
pub struct BillingDetails {
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub postal_code: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PaymentMethod {
    pub payment_method_id: PaymentMethodId,
    pub customer: CustomerId,
    pub card: CardDetails,
    pub billing_details: BillingDetails,
    pub off_session: bool,
    pub created_at: Timestamp,
    pub test_mode: bool,
}
