//! Prices: an amount in a currency, once or on a recurring interval, for one product.

use serde::Serialize;

use super::ids::{PriceId, ProductId};
use super::metadata::Metadata;
use super::money::Currency;
use super::product::Eligibility;
use super::timestamp::Timestamp;
use super::{wire_enum, FieldError};

wire_enum!(Interval {
    Daily => "daily",
    Weekly => "weekly",
    Monthly => "monthly",
    Quarterly => "quarterly",
    Yearly => "yearly",
});

impl Interval {
    /// "month", "3 months": the cadence in words for the checkout page.
    pub fn words(self, count: u32) -> String {
        let unit = match self {
            Interval::Daily => "day",
            Interval::Weekly => "week",
            Interval::Monthly => "month",
            Interval::Quarterly => "quarter",
            Interval::Yearly => "year",
        };
        if count == 1 {
            unit.to_string()
        } else {
            format!("{count} {unit}s")
        }
    }
}

wire_enum!(PriceType {
    OneTime => "one_time",
    Recurring => "recurring",
});

pub const MAX_INTERVAL_COUNT: u32 = 365;
pub const MAX_TRIAL_DAYS: u32 = 730;
/// The largest amount we accept: Stripe's own limit of eight digits in the major unit.
pub const MAX_UNIT_AMOUNT: i64 = 9_999_999_999;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Recurring {
    pub interval: Interval,
    pub interval_count: u32,
    pub trial_period_days: Option<u32>,
}

impl Recurring {
    /// The same billing cadence (interval and count), whatever the trial.
    pub fn same_cadence(&self, other: &Recurring) -> bool {
        self.interval == other.interval && self.interval_count == other.interval_count
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Price {
    pub price_id: PriceId,
    pub description: Option<String>,
    pub unit_amount: i64,
    /// The seed shows the amount twice, as `unit_amount` and `price`.
    pub price: i64,
    pub currency: Currency,
    pub recurring: Option<Recurring>,
    pub active: bool,
    pub product: ProductId,
    pub created_at: Timestamp,
    #[serde(rename = "type")]
    pub price_type: PriceType,
    pub metadata: Option<Metadata>,
    pub test_mode: bool,
    pub hsa_fsa_eligibility: Eligibility,
}

pub fn unit_amount(value: i64, param: &str) -> Result<i64, FieldError> {
    if !(0..=MAX_UNIT_AMOUNT).contains(&value) {
        return Err(FieldError::new(
            param,
            format!("unit_amount must be an integer number of minor units from 0 to {MAX_UNIT_AMOUNT}"),
        ));
    }
    Ok(value)
}

pub fn interval_count(value: i64, param: &str) -> Result<u32, FieldError> {
    u32::try_from(value).ok().filter(|v| (1..=MAX_INTERVAL_COUNT).contains(v)).ok_or_else(|| {
        FieldError::new(param, format!("interval_count must be an integer from 1 to {MAX_INTERVAL_COUNT}"))
    })
}

pub fn trial_period_days(value: i64, param: &str) -> Result<u32, FieldError> {
    u32::try_from(value).ok().filter(|v| *v <= MAX_TRIAL_DAYS).ok_or_else(|| {
        FieldError::new(param, format!("trial_period_days must be an integer from 0 to {MAX_TRIAL_DAYS}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadence_in_words() {
        assert_eq!(Interval::Monthly.words(1), "month");
        assert_eq!(Interval::Monthly.words(3), "3 months");
        assert_eq!(Interval::Yearly.words(1), "year");
    }

    #[test]
    fn amount_and_count_limits() {
        assert!(unit_amount(-1, "unit_amount").is_err());
        assert!(unit_amount(0, "unit_amount").is_ok());
        assert!(unit_amount(MAX_UNIT_AMOUNT + 1, "unit_amount").is_err());
        assert!(interval_count(0, "c").is_err());
        assert!(interval_count(366, "c").is_err());
        assert_eq!(interval_count(3, "c").unwrap(), 3);
        assert!(trial_period_days(731, "t").is_err());
        assert!(trial_period_days(-1, "t").is_err());
    }
}
