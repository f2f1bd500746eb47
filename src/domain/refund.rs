//! Refunds of a payment intent: the refund as the API shows it, its reasons and states, and the rule
//! for how much a refund may take back.

use serde::Serialize;

use super::ids::{PaymentIntentId, RefundId};
use super::metadata::Metadata;
use super::money::Currency;
use super::timestamp::Timestamp;
use super::{wire_enum, FieldError};

wire_enum!(RefundReason {
    Duplicate => "duplicate",
    Fraudulent => "fraudulent",
    RequestedByCustomer => "requested_by_customer",
});

wire_enum!(
    /// `pending` until the processor answers: the amount is already held against the payment, so
    /// concurrent refunds can never add up to more than was received.
    RefundStatus {
        Pending => "pending",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

#[derive(Clone, Debug, Serialize)]
pub struct Refund {
    pub refund_id: RefundId,
    pub payment_intent: PaymentIntentId,
    pub amount: i64,
    pub currency: Currency,
    pub reason: Option<RefundReason>,
    pub status: RefundStatus,
    /// The processor's words when it refused.
    pub failure_reason: Option<String>,
    pub metadata: Option<Metadata>,
    pub created_at: Timestamp,
    pub test_mode: bool,
}

/// A requested amount on its own, before the payment is known: a refund takes at least one unit.
pub fn check_requested_amount(amount: Option<i64>, param: &str) -> Result<Option<i64>, FieldError> {
    match amount {
        Some(a) if a < 1 => Err(FieldError::new(
            param,
            format!("amount must be a positive integer in the currency's minor unit (got {a})"),
        )),
        other => Ok(other),
    }
}

/// Why a payment cannot give back the requested amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmountRefusal {
    NothingLeft,
    MoreThanLeft { left: i64 },
}

/// What a refund takes: the requested amount, or everything not yet refunded, never more than that.
pub fn amount_to_refund(requested: Option<i64>, received: i64, refunded: i64) -> Result<i64, AmountRefusal> {
    let left = received.saturating_sub(refunded);
    if left <= 0 {
        return Err(AmountRefusal::NothingLeft);
    }
    match requested {
        None => Ok(left),
        Some(a) if a > left => Err(AmountRefusal::MoreThanLeft { left }),
        Some(a) => Ok(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_what_is_left() {
        assert_eq!(amount_to_refund(None, 4999, 0), Ok(4999));
        assert_eq!(amount_to_refund(None, 4999, 1000), Ok(3999));
    }

    #[test]
    fn never_more_than_what_is_left() {
        assert_eq!(amount_to_refund(Some(3999), 4999, 1000), Ok(3999));
        assert_eq!(amount_to_refund(Some(4000), 4999, 1000), Err(AmountRefusal::MoreThanLeft { left: 3999 }));
        assert_eq!(amount_to_refund(Some(1), 4999, 4999), Err(AmountRefusal::NothingLeft));
        assert_eq!(amount_to_refund(None, 0, 0), Err(AmountRefusal::NothingLeft));
    }

    #[test]
    fn requested_amounts_must_be_positive() {
        assert!(check_requested_amount(Some(0), "refund.amount").is_err());
        assert_eq!(check_requested_amount(Some(-1), "refund.amount").unwrap_err().param, "refund.amount");
        assert_eq!(check_requested_amount(Some(1), "refund.amount"), Ok(Some(1)));
        assert_eq!(check_requested_amount(None, "refund.amount"), Ok(None));
    }

    #[test]
    fn reasons_parse_by_their_wire_names() {
        assert_eq!(RefundReason::parse("duplicate", "refund.reason"), Ok(RefundReason::Duplicate));
        let err = RefundReason::parse("changed_mind", "refund.reason").unwrap_err();
        assert_eq!(err.param, "refund.reason");
        assert!(err.message.contains("requested_by_customer"));
    }
}
