//! A merchant's billing settings (per mode): what becomes of a subscription whose invoice is still
//! unpaid after the last automatic attempt.

use serde::Serialize;

use super::timestamp::Timestamp;
use super::{wire_enum, FieldError};

pub const AFTER_FINAL_FAILURE_PARAM: &str = "billing_settings.after_final_failure";

wire_enum!(
    /// The subscription's status after dunning's last failed attempt. `CANCELED` ends it
    /// (`customer.subscription.deleted`). `UNPAID` keeps it: periods keep being invoiced, but
    /// nothing is charged automatically until the customer pays its latest invoice, which makes it
    /// `ACTIVE` again.
    AfterFinalFailure {
        Canceled => "CANCELED",
        Unpaid => "UNPAID",
    }
);

#[derive(Clone, Debug, Serialize)]
pub struct BillingSettings {
    pub after_final_failure: AfterFinalFailure,
    pub test_mode: bool,
    /// `None` while the merchant has never changed them (the defaults).
    pub updated_at: Option<Timestamp>,
}

impl BillingSettings {
    pub fn defaults(test_mode: bool) -> BillingSettings {
        BillingSettings { after_final_failure: AfterFinalFailure::Canceled, test_mode, updated_at: None }
    }
}

pub fn after_final_failure(raw: &str) -> Result<AfterFinalFailure, FieldError> {
    AfterFinalFailure::parse(raw, AFTER_FINAL_FAILURE_PARAM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_spellings_parse_and_others_name_the_field_and_the_choices() {
        assert_eq!(after_final_failure("UNPAID").unwrap(), AfterFinalFailure::Unpaid);
        assert_eq!(after_final_failure("CANCELED").unwrap(), AfterFinalFailure::Canceled);
        let e = after_final_failure("unpaid").unwrap_err();
        assert_eq!(e.param, AFTER_FINAL_FAILURE_PARAM);
        assert!(e.message.contains("`CANCELED`, `UNPAID`"), "{}", e.message);
    }
}
