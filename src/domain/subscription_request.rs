//! The create-subscription request of seed 002 (`POST /v1/subscriptions`): its raw JSON shape and
//! the checks that need nothing but the request itself. What needs the database (the plan, the
//! customer, the parent subscription, the price's currency) is left to the flow.
//!
//! Decimals arrive as strings (`"1000.00"`, `"1.5"`) and are kept exact as [`Decimal`]; money is
//! turned into integer minor units once the currency is known ([`minor_units`]). No floats.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::billing_period::PeriodUnit;
use super::ids::PriceId;
use super::metadata::Metadata;
use super::money::Currency;
use super::price::{MAX_INTERVAL_COUNT, MAX_UNIT_AMOUNT};
use super::subscription::{BillingCadence, BillingCycle, CollectionMethod, SubscriptionStatus};
use super::text;
use super::timestamp::Timestamp;
use super::{wire_enum, FieldError};

wire_enum!(
    /// How the first payment is handled (BILLING.md).
    PaymentBehavior {
        DefaultActive => "DEFAULT_ACTIVE",
        DefaultIncomplete => "DEFAULT_INCOMPLETE",
        AllowIncomplete => "ALLOW_INCOMPLETE",
        ErrorIfIncomplete => "ERROR_IF_INCOMPLETE",
    }
);

wire_enum!(
    /// The status a subscription may be created in; the others are reached by billing.
    InitialStatus {
        Active => "ACTIVE",
        Draft => "DRAFT",
        Incomplete => "INCOMPLETE",
    }
);

impl InitialStatus {
    pub fn status(self) -> SubscriptionStatus {
        match self {
            InitialStatus::Active => SubscriptionStatus::Active,
            InitialStatus::Draft => SubscriptionStatus::Draft,
            InitialStatus::Incomplete => SubscriptionStatus::Incomplete,
        }
    }
}

wire_enum!(
    /// The window a commitment is measured over.
    CommitmentDuration {
        Month => "MONTH",
        Quarter => "QUARTER",
        Year => "YEAR",
    }
);

impl CommitmentDuration {
    pub fn period_unit(self) -> PeriodUnit {
        match self {
            CommitmentDuration::Month => PeriodUnit::Month,
            CommitmentDuration::Quarter => PeriodUnit::Quarter,
            CommitmentDuration::Year => PeriodUnit::Year,
        }
    }
}

wire_enum!(ProrationBehavior {
    CreateProrations => "CREATE_PRORATIONS",
    None => "NONE",
});

wire_enum!(
    /// Days from invoice date to due date, in the customer's local calendar days.
    PaymentTerms {
        Net15 => "15_NET",
        Net30 => "30_NET",
        Net45 => "45_NET",
        Net60 => "60_NET",
        Net75 => "75_NET",
        Net90 => "90_NET",
    }
);

impl PaymentTerms {
    pub fn days(self) -> u32 {
        match self {
            PaymentTerms::Net15 => 15,
            PaymentTerms::Net30 => 30,
            PaymentTerms::Net45 => 45,
            PaymentTerms::Net60 => 60,
            PaymentTerms::Net75 => 75,
            PaymentTerms::Net90 => 90,
        }
    }
}

wire_enum!(InvoiceBilling {
    InvoiceToParent => "INVOICE_TO_PARENT",
    InvoiceToSelf => "INVOICE_TO_SELF",
});

pub const LOOKUP_KEY_MAX: usize = 255;
pub const DISPLAY_NAME_MAX: usize = 250;
pub const ID_MAX: usize = 255;
pub const MAX_LINE_ITEMS: usize = 100;
pub const MAX_PHASES: usize = 20;
pub const MAX_QUANTITY: i64 = 1_000_000;
pub const DEFAULT_TIMEZONE: &str = "UTC";

// ---------------------------------------------------------------------------------------------
// Raw shape
// ---------------------------------------------------------------------------------------------

/// The request body exactly as seed 002 names its fields. Enum values, dates and decimals stay
/// strings here so that [`parse`] can say precisely what is wrong with them.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriptionRequest {
    pub customer_id: Option<String>,
    pub external_customer_id: Option<String>,
    pub plan_id: Option<String>,
    pub currency: Option<String>,
    pub billing_cadence: Option<String>,
    pub billing_period: Option<String>,
    pub billing_period_count: Option<i64>,
    pub billing_cycle: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub trial_start: Option<String>,
    pub trial_end: Option<String>,
    pub lookup_key: Option<String>,
    #[serde(default)]
    pub metadata: Value,
    pub collection_method: Option<String>,
    pub payment_behavior: Option<String>,
    /// The initial status.
    pub status: Option<String>,
    /// The response's name for `status`, accepted too (not both: see [`initial_status`]).
    pub subscription_status: Option<String>,
    /// Decimal string, major units: `"1000.00"`.
    #[serde(default)]
    pub commitment_amount: Value,
    pub commitment_duration: Option<String>,
    /// Decimal string >= 1: `"1.5"`.
    #[serde(default)]
    pub overage_factor: Value,
    pub enable_true_up: Option<bool>,
    pub proration_behavior: Option<String>,
    pub customer_timezone: Option<String>,
    pub parent_subscription_id: Option<String>,
    pub payment_terms: Option<String>,
    pub invoice_billing: Option<String>,
    pub override_line_items: Option<Vec<RawOverrideLineItem>>,
    pub line_items: Option<Vec<RawLineItem>>,
    pub phases: Option<Vec<RawPhase>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverrideLineItem {
    pub price_id: Option<String>,
    /// A whole number, as a decimal string (`"2"`) or a JSON integer.
    #[serde(default)]
    pub quantity: Value,
    /// Decimal string, major units.
    #[serde(default)]
    pub amount: Value,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLineItem {
    pub price_id: Option<String>,
    #[serde(default)]
    pub quantity: Value,
    pub display_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhase {
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub override_line_items: Option<Vec<RawOverrideLineItem>>,
}

// ---------------------------------------------------------------------------------------------
// Validated shape
// ---------------------------------------------------------------------------------------------

/// Who the subscription is for. `Both` must name the same customer (the flow checks that).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomerRef {
    /// Kept as given: an id with the wrong prefix is a 404 for the flow, not a 400.
    Id(String),
    External(String),
    Both {
        id: String,
        external_id: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commitment {
    /// Major units, exact; see [`minor_units`].
    pub amount: Decimal,
    /// `None`: the subscription's own billing period (the flow resolves it).
    pub duration: Option<CommitmentDuration>,
    /// >= 1; 1 when not given.
    pub overage_factor: Decimal,
    pub enable_true_up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverrideLineItem {
    pub price_id: PriceId,
    pub quantity: Option<i64>,
    /// Major units, exact; see [`minor_units`].
    pub amount: Option<Decimal>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraLineItem {
    pub price_id: PriceId,
    pub quantity: i64,
    pub display_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    pub start_date: Timestamp,
    /// `None` only for the last phase.
    pub end_date: Option<Timestamp>,
    pub override_line_items: Vec<OverrideLineItem>,
}

/// A create-subscription request that passed every check that needs no database. Documented
/// defaults are filled in; what defaults to the chosen price (`currency`, `billing_period`,
/// `billing_period_count`) or to the clock (`start_date`) stays `None` for the flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSubscription {
    pub customer: CustomerRef,
    /// A product id or a recurring price id, as given; the flow resolves it.
    pub plan_id: String,
    pub currency: Option<Currency>,
    pub billing_cadence: BillingCadence,
    pub billing_period: Option<PeriodUnit>,
    pub billing_period_count: Option<u32>,
    pub billing_cycle: BillingCycle,
    pub start_date: Option<Timestamp>,
    pub end_date: Option<Timestamp>,
    pub trial_start: Option<Timestamp>,
    pub trial_end: Option<Timestamp>,
    pub lookup_key: Option<String>,
    pub metadata: Option<Metadata>,
    pub collection_method: CollectionMethod,
    pub payment_behavior: PaymentBehavior,
    pub status: InitialStatus,
    pub commitment: Option<Commitment>,
    pub proration_behavior: ProrationBehavior,
    /// A canonical IANA name from the bundled tz database.
    pub customer_timezone: String,
    /// As given; the flow looks it up (wrong prefix: 404).
    pub parent_subscription_id: Option<String>,
    pub payment_terms: Option<PaymentTerms>,
    pub invoice_billing: InvoiceBilling,
    pub override_line_items: Vec<OverrideLineItem>,
    pub line_items: Vec<ExtraLineItem>,
    pub phases: Vec<Phase>,
}

// ---------------------------------------------------------------------------------------------
// Exact decimals
// ---------------------------------------------------------------------------------------------

/// An exact decimal number written as a string: `units / 10^scale`. `"1000.00"` is
/// `{units: 100000, scale: 2}`; trailing zeros are kept as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decimal {
    units: i128,
    scale: u32,
}

impl Decimal {
    pub const MAX_INTEGER_DIGITS: usize = 15;
    pub const MAX_FRACTION_DIGITS: usize = 12;
    pub const ONE: Decimal = Decimal { units: 1, scale: 0 };
    pub const ZERO: Decimal = Decimal { units: 0, scale: 0 };

    /// `-`? digits (`.` digits)?, nothing else: no `+`, exponent, spaces, separators or bare dots.
    pub fn parse(raw: &str) -> Option<Decimal> {
        let (negative, body) = match raw.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let (whole, fraction) = match body.split_once('.') {
            Some((w, f)) => (w, f),
            None => (body, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(fraction)
            || (body.contains('.') && fraction.is_empty())
            || whole.trim_start_matches('0').len() > Self::MAX_INTEGER_DIGITS
            || fraction.len() > Self::MAX_FRACTION_DIGITS
        {
            return None;
        }
        let magnitude: i128 = format!("{whole}{fraction}").parse().ok()?;
        let scale = u32::try_from(fraction.len()).ok()?;
        Some(Decimal { units: if negative { -magnitude } else { magnitude }, scale })
    }

    /// `minor` units of a currency with `exponent` decimal places: 4999 at 2 is `49.99`.
    pub fn from_minor(minor: i64, exponent: u32) -> Decimal {
        Decimal { units: i128::from(minor), scale: exponent }
    }

    pub fn units(self) -> i128 {
        self.units
    }

    pub fn scale(self) -> u32 {
        self.scale
    }

    pub fn is_negative(self) -> bool {
        self.units < 0
    }

    /// Compares with a whole number, exactly.
    pub fn cmp_whole(self, whole: i64) -> std::cmp::Ordering {
        self.units.cmp(&(i128::from(whole) * 10_i128.pow(self.scale)))
    }

    /// The value in units of `10^-exponent` (minor units for a currency of that exponent), only if
    /// that is exact: `"10.50"` is 1050 at exponent 2 and 10 is not possible at exponent 0.
    pub fn to_scaled(self, exponent: u32) -> Option<i64> {
        let value = if self.scale <= exponent {
            self.units.checked_mul(10_i128.checked_pow(exponent - self.scale)?)?
        } else {
            let divisor = 10_i128.checked_pow(self.scale - exponent)?;
            if self.units % divisor != 0 {
                return None;
            }
            self.units / divisor
        };
        i64::try_from(value).ok()
    }

    /// `amount x self`, rounded half to even to a whole number (of the same minor units).
    pub fn mul_round_half_even(self, amount: i64) -> Option<i64> {
        let product = i128::from(amount).checked_mul(self.units)?;
        let divisor = 10_i128.checked_pow(self.scale)?;
        let quotient = product.div_euclid(divisor);
        let remainder = product.rem_euclid(divisor);
        let twice = remainder * 2;
        let rounded = if twice > divisor || (twice == divisor && quotient % 2 != 0) { quotient + 1 } else { quotient };
        i64::try_from(rounded).ok()
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let magnitude = self.units.unsigned_abs();
        if self.scale == 0 {
            return write!(f, "{sign}{magnitude}");
        }
        let divisor = 10_u128.pow(self.scale);
        write!(f, "{sign}{}.{:0width$}", magnitude / divisor, magnitude % divisor, width = self.scale as usize)
    }
}

impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A decimal amount in major units as integer minor units of `currency`, exactly, within our
/// amount limit. For the flow too, when the currency only becomes known from the price.
pub fn minor_units(amount: Decimal, currency: Currency, param: &str) -> Result<i64, FieldError> {
    let exponent = currency.exponent();
    let minor = amount.to_scaled(exponent).ok_or_else(|| {
        FieldError::new(
            param,
            format!(
                "`{amount}` has more decimal places than {} allows ({exponent}); amounts are exact",
                currency.code()
            ),
        )
    })?;
    if !(0..=MAX_UNIT_AMOUNT).contains(&minor) {
        return Err(FieldError::new(
            param,
            format!("{} must be from 0 to {}", leaf(param), currency_amount(MAX_UNIT_AMOUNT, exponent)),
        ));
    }
    Ok(minor)
}

fn currency_amount(minor: i64, exponent: u32) -> Decimal {
    Decimal { units: i128::from(minor), scale: exponent }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Checks a request, field by field in the order seed 002 lists them, and stops at the first
/// problem (as the other request parsers do). Every error's `param` is the field's JSON path.
pub fn parse(raw: CreateSubscriptionRequest) -> Result<NewSubscription, FieldError> {
    let customer = customer(raw.customer_id.as_deref(), raw.external_customer_id.as_deref())?;
    let plan_id = match raw.plan_id.as_deref().map(str::trim) {
        None | Some("") => return Err(FieldError::new("plan_id", "plan_id is required (a product or price id)")),
        Some(p) => text::required_text(p, "plan_id", ID_MAX)?,
    };
    let currency = raw.currency.as_deref().map(|c| currency(c, "currency")).transpose()?;
    let billing_cadence = enum_or(raw.billing_cadence.as_deref(), "billing_cadence", BillingCadence::parse)?
        .unwrap_or(BillingCadence::InAdvance);
    let billing_period = enum_or(raw.billing_period.as_deref(), "billing_period", PeriodUnit::parse)?;
    let billing_period_count = raw.billing_period_count.map(period_count).transpose()?;
    let billing_cycle = enum_or(raw.billing_cycle.as_deref(), "billing_cycle", BillingCycle::parse)?
        .unwrap_or(BillingCycle::Anniversary);

    let start_date = date(raw.start_date.as_deref(), "start_date")?;
    let end_date = date(raw.end_date.as_deref(), "end_date")?;
    let trial_start = date(raw.trial_start.as_deref(), "trial_start")?;
    let trial_end = date(raw.trial_end.as_deref(), "trial_end")?;
    if let (Some(start), Some(end)) = (start_date, end_date) {
        if end <= start {
            return Err(FieldError::new("end_date", "end_date must be after start_date"));
        }
    }
    if trial_start.is_some() && trial_end.is_none() {
        return Err(FieldError::new("trial_end", "trial_end is required when trial_start is given"));
    }
    if let (Some(start), Some(end)) = (trial_start, trial_end) {
        if end <= start {
            return Err(FieldError::new("trial_end", "trial_end must be after trial_start"));
        }
    }
    if let (Some(start), Some(end)) = (trial_start.or(start_date), trial_end) {
        if end <= start {
            return Err(FieldError::new("trial_end", "trial_end must be after start_date"));
        }
    }

    let lookup_key =
        raw.lookup_key.as_deref().map(|k| text::optional_text(k, "lookup_key", LOOKUP_KEY_MAX)).transpose()?.flatten();
    let metadata = Metadata::parse(&raw.metadata, "metadata")?;
    let collection_method = enum_or(raw.collection_method.as_deref(), "collection_method", CollectionMethod::parse)?
        .unwrap_or(CollectionMethod::ChargeAutomatically);
    let payment_behavior = enum_or(raw.payment_behavior.as_deref(), "payment_behavior", PaymentBehavior::parse)?
        .unwrap_or(PaymentBehavior::DefaultActive);
    let status = initial_status(raw.status.as_deref(), raw.subscription_status.as_deref())?;

    let commitment = commitment(&raw, currency)?;
    let proration_behavior =
        enum_or(raw.proration_behavior.as_deref(), "proration_behavior", ProrationBehavior::parse)?
            .unwrap_or(ProrationBehavior::CreateProrations);
    let customer_timezone = match raw.customer_timezone.as_deref() {
        None => DEFAULT_TIMEZONE.to_string(),
        Some(name) => timezone(name, "customer_timezone")?,
    };
    let parent_subscription_id = raw
        .parent_subscription_id
        .as_deref()
        .map(|p| text::optional_text(p, "parent_subscription_id", ID_MAX))
        .transpose()?
        .flatten();
    let payment_terms = enum_or(raw.payment_terms.as_deref(), "payment_terms", PaymentTerms::parse)?;
    let invoice_billing = enum_or(raw.invoice_billing.as_deref(), "invoice_billing", InvoiceBilling::parse)?
        .unwrap_or(InvoiceBilling::InvoiceToSelf);
    if invoice_billing == InvoiceBilling::InvoiceToParent && parent_subscription_id.is_none() {
        return Err(FieldError::new("invoice_billing", "INVOICE_TO_PARENT needs a parent_subscription_id"));
    }

    let override_line_items =
        overrides(raw.override_line_items.as_deref().unwrap_or_default(), "override_line_items", currency)?;
    let line_items = extra_items(raw.line_items.as_deref().unwrap_or_default())?;
    let phases = phases(raw.phases.as_deref().unwrap_or_default(), start_date, end_date, currency)?;

    Ok(NewSubscription {
        customer,
        plan_id,
        currency,
        billing_cadence,
        billing_period,
        billing_period_count,
        billing_cycle,
        start_date,
        end_date,
        trial_start,
        trial_end,
        lookup_key,
        metadata,
        collection_method,
        payment_behavior,
        status,
        commitment,
        proration_behavior,
        customer_timezone,
        parent_subscription_id,
        payment_terms,
        invoice_billing,
        override_line_items,
        line_items,
        phases,
    })
}

/// The last segment of a JSON path, for messages: `quantity` of `line_items[0].quantity`.
fn leaf(param: &str) -> &str {
    param.rsplit('.').next().unwrap_or(param)
}

fn enum_or<T>(
    raw: Option<&str>,
    param: &str,
    parse: fn(&str, &str) -> Result<T, FieldError>,
) -> Result<Option<T>, FieldError> {
    raw.map(|r| parse(r, param)).transpose()
}

/// `status`, or `subscription_status` (the response's name for it); one of them, not both (a
/// serde alias would refuse both with a "duplicate field" naming no field).
fn initial_status(status: Option<&str>, subscription_status: Option<&str>) -> Result<InitialStatus, FieldError> {
    let (raw, param) = match (status, subscription_status) {
        (Some(_), Some(_)) => {
            return Err(FieldError::new(
                "subscription_status",
                "status and subscription_status are the same field (subscription_status is its name in the response); give one",
            ))
        }
        (Some(s), None) => (Some(s), "status"),
        (None, s) => (s, "subscription_status"),
    };
    Ok(enum_or(raw, param, InitialStatus::parse)?.unwrap_or(InitialStatus::Active))
}

fn customer(id: Option<&str>, external: Option<&str>) -> Result<CustomerRef, FieldError> {
    let id = id.map(|v| text::optional_text(v, "customer_id", ID_MAX)).transpose()?.flatten();
    let external = external
        .map(|v| text::optional_text(v, "external_customer_id", super::customer::EXTERNAL_ID_MAX))
        .transpose()?
        .flatten();
    match (id, external) {
        (Some(id), None) => Ok(CustomerRef::Id(id)),
        (None, Some(external)) => Ok(CustomerRef::External(external)),
        (Some(id), Some(external_id)) => Ok(CustomerRef::Both { id, external_id }),
        (None, None) => Err(FieldError::new(
            "customer_id",
            "customer_id or external_customer_id is required (the customer to subscribe)",
        )),
    }
}

fn currency(raw: &str, param: &str) -> Result<Currency, FieldError> {
    Currency::parse(raw).ok_or_else(|| {
        FieldError::new(
            param,
            format!("`{raw}` is not a supported currency; use a lower-case ISO 4217 code like `usd`"),
        )
    })
}

fn period_count(value: i64) -> Result<u32, FieldError> {
    u32::try_from(value).ok().filter(|v| (1..=MAX_INTERVAL_COUNT).contains(v)).ok_or_else(|| {
        FieldError::new(
            "billing_period_count",
            format!("billing_period_count must be an integer from 1 to {MAX_INTERVAL_COUNT} (got {value})"),
        )
    })
}

fn date(raw: Option<&str>, param: &str) -> Result<Option<Timestamp>, FieldError> {
    raw.map(|r| instant(r, param)).transpose()
}

/// 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z, in microseconds since the Unix epoch.
const FIRST_INSTANT_MICROS: i64 = -62_167_219_200 * Timestamp::MICROS_PER_SECOND;
const END_OF_INSTANTS_MICROS: i64 = 253_402_300_800 * Timestamp::MICROS_PER_SECOND;

/// An RFC 3339 timestamp (any offset) whose instant is one in UTC too, years 0000 to 9999: an
/// offset can move a date past either end (`9999-12-31T23:59:59-01:00` is in year 10000), and such
/// an instant can be neither shown nor billed as given.
pub fn instant(raw: &str, param: &str) -> Result<Timestamp, FieldError> {
    let t = Timestamp::parse_rfc3339(raw.trim()).ok_or_else(|| {
        FieldError::new(param, format!("`{raw}` is not an RFC 3339 timestamp; use a form like 2024-03-20T00:00:00Z"))
    })?;
    if !(FIRST_INSTANT_MICROS..END_OF_INSTANTS_MICROS).contains(&t.micros()) {
        return Err(FieldError::new(
            param,
            format!("`{raw}` is out of range: in UTC it must fall in the years 0000 to 9999"),
        ));
    }
    Ok(t)
}

/// An IANA zone name known to the bundled tz database, in its canonical spelling.
pub fn timezone(raw: &str, param: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    let unknown = || {
        FieldError::new(
            param,
            format!("`{raw}` is not a known IANA time zone; use a name like `America/New_York` or `UTC`"),
        )
    };
    if name.is_empty() || name.len() > 64 {
        return Err(unknown());
    }
    let zone = super::billing_period::Zone::named(name).ok_or_else(unknown)?;
    Ok(zone.name().to_string())
}

/// A decimal string; a JSON number is refused (it would be a float), as is anything not a string.
fn decimal(value: &Value, param: &str, example: &str) -> Result<Option<Decimal>, FieldError> {
    let raw = match value {
        Value::Null => return Ok(None),
        Value::String(s) => s,
        _ => {
            return Err(FieldError::new(
                param,
                format!("{} must be a decimal number written as a string, like \"{example}\"", leaf(param)),
            ))
        }
    };
    Decimal::parse(raw).map(Some).ok_or_else(|| {
        FieldError::new(
            param,
            format!("`{raw}` is not a decimal number; write it as digits with an optional point, like \"{example}\""),
        )
    })
}

/// A non-negative decimal amount; in minor units of `currency` too when that is known already.
fn amount(value: &Value, param: &str, currency: Option<Currency>) -> Result<Option<Decimal>, FieldError> {
    let Some(amount) = decimal(value, param, "1000.00")? else { return Ok(None) };
    if amount.is_negative() {
        return Err(FieldError::new(param, format!("{} must be at least 0 (got {amount})", leaf(param))));
    }
    if let Some(currency) = currency {
        minor_units(amount, currency, param)?;
    } else if amount.to_scaled(0).is_none() && amount.to_scaled(3).is_none() {
        // No currency has more than three decimal places.
        return Err(FieldError::new(param, format!("`{amount}` has more decimal places than any currency allows")));
    }
    Ok(Some(amount))
}

/// A whole quantity from 1: a decimal string (`"2"`, `"2.0"`) or a JSON integer.
fn quantity(value: &Value, param: &str) -> Result<Option<i64>, FieldError> {
    let bad = |shown: String| {
        FieldError::new(param, format!("quantity must be a whole number from 1 to {MAX_QUANTITY} (got {shown})"))
    };
    let whole = match value {
        Value::Null => return Ok(None),
        Value::String(s) => match Decimal::parse(s) {
            Some(d) => d.to_scaled(0).ok_or_else(|| bad(format!("\"{s}\"")))?,
            None => return Err(bad(format!("\"{s}\""))),
        },
        Value::Number(n) => n.as_i64().ok_or_else(|| bad(n.to_string()))?,
        other => return Err(bad(other.to_string())),
    };
    if !(1..=MAX_QUANTITY).contains(&whole) {
        return Err(bad(whole.to_string()));
    }
    Ok(Some(whole))
}

fn price_id(raw: Option<&str>, param: &str) -> Result<PriceId, FieldError> {
    let raw = raw.map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        return Err(FieldError::new(param, "price_id is required (an `fprice_` id)"));
    }
    PriceId::parse(raw).ok_or_else(|| {
        FieldError::new(
            param,
            format!("`{raw}` is not a price id; price ids look like `fprice_` followed by 26 characters"),
        )
    })
}

fn commitment(raw: &CreateSubscriptionRequest, currency: Option<Currency>) -> Result<Option<Commitment>, FieldError> {
    let amount = amount(&raw.commitment_amount, "commitment_amount", currency)?;
    let duration = enum_or(raw.commitment_duration.as_deref(), "commitment_duration", CommitmentDuration::parse)?;
    let overage_factor = decimal(&raw.overage_factor, "overage_factor", "1.5")?;
    if let Some(factor) = overage_factor {
        if factor.cmp_whole(1).is_lt() {
            return Err(FieldError::new("overage_factor", format!("overage_factor must be at least 1 (got {factor})")));
        }
    }
    let Some(amount) = amount else {
        let stray = if duration.is_some() {
            Some("commitment_duration")
        } else if overage_factor.is_some() {
            Some("overage_factor")
        } else if raw.enable_true_up == Some(true) {
            Some("enable_true_up")
        } else {
            None
        };
        return match stray {
            Some(param) => Err(FieldError::new(param, format!("{param} needs a commitment_amount"))),
            None => Ok(None),
        };
    };
    Ok(Some(Commitment {
        amount,
        duration,
        overage_factor: overage_factor.unwrap_or(Decimal::ONE),
        enable_true_up: raw.enable_true_up.unwrap_or(false),
    }))
}

fn overrides(
    items: &[RawOverrideLineItem],
    param: &str,
    currency: Option<Currency>,
) -> Result<Vec<OverrideLineItem>, FieldError> {
    if items.len() > MAX_LINE_ITEMS {
        return Err(FieldError::new(param, format!("at most {MAX_LINE_ITEMS} override line items")));
    }
    let mut out: Vec<OverrideLineItem> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = format!("{param}[{i}]");
        let price_id = price_id(item.price_id.as_deref(), &format!("{p}.price_id"))?;
        if out.iter().any(|o| o.price_id == price_id) {
            return Err(FieldError::new(format!("{p}.price_id"), format!("price {price_id} is overridden twice")));
        }
        let quantity = quantity(&item.quantity, &format!("{p}.quantity"))?;
        let amount = amount(&item.amount, &format!("{p}.amount"), currency)?;
        if quantity.is_none() && amount.is_none() {
            return Err(FieldError::new(p, "an override needs a quantity or an amount"));
        }
        out.push(OverrideLineItem { price_id, quantity, amount });
    }
    Ok(out)
}

fn extra_items(items: &[RawLineItem]) -> Result<Vec<ExtraLineItem>, FieldError> {
    if items.len() > MAX_LINE_ITEMS {
        return Err(FieldError::new("line_items", format!("at most {MAX_LINE_ITEMS} line items")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let p = format!("line_items[{i}]");
            Ok(ExtraLineItem {
                price_id: price_id(item.price_id.as_deref(), &format!("{p}.price_id"))?,
                quantity: quantity(&item.quantity, &format!("{p}.quantity"))?.unwrap_or(1),
                display_name: item
                    .display_name
                    .as_deref()
                    .map(|d| text::optional_text(d, &format!("{p}.display_name"), DISPLAY_NAME_MAX))
                    .transpose()?
                    .flatten(),
            })
        })
        .collect()
}

/// Phases run back to back: each ends where the next starts, only the last may be open-ended,
/// and none starts before the subscription or runs past its `end_date`.
fn phases(
    items: &[RawPhase],
    start_date: Option<Timestamp>,
    end_date: Option<Timestamp>,
    currency: Option<Currency>,
) -> Result<Vec<Phase>, FieldError> {
    if items.len() > MAX_PHASES {
        return Err(FieldError::new("phases", format!("at most {MAX_PHASES} phases")));
    }
    let mut out: Vec<Phase> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = format!("phases[{i}]");
        let last = i + 1 == items.len();
        let start = match date(item.start_date.as_deref(), &format!("{p}.start_date"))? {
            Some(s) => s,
            None => return Err(FieldError::new(format!("{p}.start_date"), "each phase needs a start_date")),
        };
        let end = date(item.end_date.as_deref(), &format!("{p}.end_date"))?;
        match end {
            None if !last => {
                return Err(FieldError::new(format!("{p}.end_date"), "every phase but the last needs an end_date"))
            }
            Some(e) if e <= start => {
                return Err(FieldError::new(format!("{p}.end_date"), "a phase's end_date must be after its start_date"))
            }
            Some(e) if end_date.is_some_and(|sub_end| e > sub_end) => {
                return Err(FieldError::new(
                    format!("{p}.end_date"),
                    "a phase cannot end after the subscription's end_date",
                ))
            }
            _ => {}
        }
        match out.last() {
            None => {
                if start_date.is_some_and(|s| start < s) {
                    return Err(FieldError::new(
                        format!("{p}.start_date"),
                        "the first phase cannot start before the subscription's start_date",
                    ));
                }
            }
            Some(prev) => {
                // Every earlier phase has an end (checked above).
                let prev_end = prev.end_date.unwrap_or(prev.start_date);
                if start != prev_end {
                    let how = if start < prev_end { "overlaps" } else { "leaves a gap after" };
                    return Err(FieldError::new(
                        format!("{p}.start_date"),
                        format!("phase {i} {how} phase {}: it must start at phase {}'s end_date", i - 1, i - 1),
                    ));
                }
            }
        }
        let override_line_items = overrides(
            item.override_line_items.as_deref().unwrap_or_default(),
            &format!("{p}.override_line_items"),
            currency,
        )?;
        out.push(Phase { start_date: start, end_date: end, override_line_items });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PRICE_A: &str = "fprice_01HW5MXAPBE79RHMMJJGB4ACAB";
    const PRICE_B: &str = "fprice_01HW5MXAPBE79RHMMJJGB4ACAC";

    fn request(body: Value) -> Result<CreateSubscriptionRequest, serde_json::Error> {
        serde_json::from_value(body)
    }

    /// The seed's example body with `extra` merged over it.
    fn with(extra: Value) -> Result<NewSubscription, FieldError> {
        let mut body = json!({
            "customer_id": "cust_a1b2c3d4e5f6g7h8i9j0",
            "plan_id": "plan_a1b2c3d4e5f6g7h8i9j0",
            "currency": "usd",
            "billing_cadence": "IN_ADVANCE",
            "billing_period": "MONTH",
            "billing_period_count": 1,
            "start_date": "2024-03-20T00:00:00Z",
            "metadata": {"source": "website"}
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        parse(request(body).expect("the raw shape accepts it"))
    }

    fn param_of(extra: Value) -> String {
        with(extra).expect_err("should be rejected").param
    }

    #[test]
    fn the_seed_example_body_parses_with_documented_defaults() {
        let sub = with(json!({})).unwrap();
        assert_eq!(sub.customer, CustomerRef::Id("cust_a1b2c3d4e5f6g7h8i9j0".into()));
        assert_eq!(sub.plan_id, "plan_a1b2c3d4e5f6g7h8i9j0");
        assert_eq!(sub.currency, Some(Currency::USD));
        assert_eq!(sub.billing_cadence, BillingCadence::InAdvance);
        assert_eq!(sub.billing_period, Some(PeriodUnit::Month));
        assert_eq!(sub.billing_period_count, Some(1));
        assert_eq!(sub.billing_cycle, BillingCycle::Anniversary);
        assert_eq!(sub.start_date.unwrap().rfc3339(), "2024-03-20T00:00:00Z");
        assert_eq!(sub.metadata.unwrap().get("source"), Some("website"));
        assert_eq!(sub.collection_method, CollectionMethod::ChargeAutomatically);
        assert_eq!(sub.payment_behavior, PaymentBehavior::DefaultActive);
        assert_eq!(sub.status.status(), SubscriptionStatus::Active);
        assert_eq!(sub.proration_behavior, ProrationBehavior::CreateProrations);
        assert_eq!(sub.customer_timezone, "UTC");
        assert_eq!(sub.invoice_billing, InvoiceBilling::InvoiceToSelf);
        assert_eq!(sub.commitment, None);
        assert!(sub.override_line_items.is_empty() && sub.line_items.is_empty() && sub.phases.is_empty());
    }

    #[test]
    fn every_field_of_the_seed_is_accepted() {
        let sub = with(json!({
            "external_customer_id": "customer-12345",
            "billing_cycle": "CALENDAR",
            "billing_cadence": "IN_ARREARS",
            "billing_period": "QUARTER",
            "end_date": "2025-03-20T00:00:00Z",
            "trial_start": "2024-03-20T00:00:00Z",
            "trial_end": "2024-04-20T00:00:00Z",
            "lookup_key": "customer-12345-pro-subscription",
            "collection_method": "SEND_INVOICE",
            "payment_behavior": "ERROR_IF_INCOMPLETE",
            "status": "DRAFT",
            "commitment_amount": "1000.00",
            "commitment_duration": "YEAR",
            "overage_factor": "1.5",
            "enable_true_up": true,
            "proration_behavior": "NONE",
            "customer_timezone": "America/New_York",
            "parent_subscription_id": "sub_parent123",
            "payment_terms": "30_NET",
            "invoice_billing": "INVOICE_TO_PARENT",
            "override_line_items": [{"price_id": PRICE_A, "quantity": "2", "amount": "49.99"}],
            "line_items": [{"price_id": PRICE_B, "quantity": "3", "display_name": "Seats"}],
            "phases": [
                {"start_date": "2024-03-20T00:00:00Z", "end_date": "2024-09-20T00:00:00Z",
                 "override_line_items": [{"price_id": PRICE_A, "amount": "10"}]},
                {"start_date": "2024-09-20T00:00:00Z"}
            ]
        }))
        .unwrap();
        assert!(matches!(sub.customer, CustomerRef::Both { .. }));
        assert_eq!(sub.payment_terms.map(PaymentTerms::days), Some(30));
        assert_eq!(sub.customer_timezone, "America/New_York");
        let c = sub.commitment.unwrap();
        assert_eq!(minor_units(c.amount, Currency::USD, "commitment_amount"), Ok(100_000));
        assert_eq!(c.duration, Some(CommitmentDuration::Year));
        assert_eq!(c.overage_factor.to_string(), "1.5");
        assert!(c.enable_true_up);
        assert_eq!(sub.override_line_items[0].quantity, Some(2));
        assert_eq!(sub.override_line_items[0].amount.unwrap().to_scaled(2), Some(4999));
        assert_eq!(sub.line_items[0].quantity, 3);
        assert_eq!(sub.line_items[0].display_name.as_deref(), Some("Seats"));
        assert_eq!(sub.phases.len(), 2);
        assert_eq!(sub.phases[1].end_date, None);
        assert_eq!(sub.status, InitialStatus::Draft);
    }

    #[test]
    fn the_response_name_subscription_status_is_accepted_for_status() {
        assert_eq!(with(json!({"subscription_status": "INCOMPLETE"})).unwrap().status, InitialStatus::Incomplete);
        assert_eq!(param_of(json!({"subscription_status": "TRIALING"})), "subscription_status");
        // One or the other; null is not given.
        let err = with(json!({"status": "DRAFT", "subscription_status": "DRAFT"})).unwrap_err();
        assert_eq!(err.param, "subscription_status");
        assert!(err.message.contains("give one"), "{}", err.message);
        assert_eq!(with(json!({"status": null, "subscription_status": "DRAFT"})).unwrap().status, InitialStatus::Draft);
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = request(json!({"plan_id": "p", "customer_id": "c", "billing_periods": "MONTH"})).unwrap_err();
        assert!(err.to_string().contains("unknown field `billing_periods`"), "{err}");
        let err = request(json!({"plan_id": "p", "line_items": [{"price": PRICE_A}]})).unwrap_err();
        assert!(err.to_string().contains("unknown field `price`"), "{err}");
        let err = request(json!({"plan_id": "p", "phases": [{"start": "x"}]})).unwrap_err();
        assert!(err.to_string().contains("unknown field `start`"), "{err}");
    }

    #[test]
    fn unknown_enum_values_name_the_field_and_list_the_spellings() {
        for (field, bad, allowed) in [
            ("billing_cadence", "ADVANCE", "`IN_ADVANCE`, `IN_ARREARS`"),
            ("billing_period", "MONTHLY", "`DAY`, `WEEK`, `MONTH`, `QUARTER`, `YEAR`"),
            ("billing_cycle", "anniversary", "`ANNIVERSARY`, `CALENDAR`"),
            ("collection_method", "charge_automatically", "`CHARGE_AUTOMATICALLY`, `SEND_INVOICE`"),
            ("payment_behavior", "DEFAULT", "`DEFAULT_ACTIVE`, `DEFAULT_INCOMPLETE`, `ALLOW_INCOMPLETE`"),
            ("status", "TRIALING", "`ACTIVE`, `DRAFT`, `INCOMPLETE`"),
            ("commitment_duration", "WEEK", "`MONTH`, `QUARTER`, `YEAR`"),
            ("proration_behavior", "ALWAYS", "`CREATE_PRORATIONS`, `NONE`"),
            ("payment_terms", "NET_30", "`15_NET`, `30_NET`, `45_NET`, `60_NET`, `75_NET`, `90_NET`"),
            ("invoice_billing", "PARENT", "`INVOICE_TO_PARENT`, `INVOICE_TO_SELF`"),
        ] {
            let mut extra = json!({ field: bad });
            if field == "commitment_duration" {
                extra["commitment_amount"] = json!("10");
            }
            let err = with(extra).unwrap_err();
            assert_eq!(err.param, field);
            assert!(err.message.contains(allowed), "{field}: {}", err.message);
            assert!(err.message.contains(bad), "{field}: {}", err.message);
        }
    }

    #[test]
    fn every_payment_terms_spelling_of_the_seed() {
        for (wire, days) in
            [("15_NET", 15), ("30_NET", 30), ("45_NET", 45), ("60_NET", 60), ("75_NET", 75), ("90_NET", 90)]
        {
            assert_eq!(with(json!({"payment_terms": wire})).unwrap().payment_terms.unwrap().days(), days);
        }
        assert_eq!(param_of(json!({"payment_terms": "20_NET"})), "payment_terms");
    }

    #[test]
    fn billing_period_count_is_at_least_one() {
        assert_eq!(param_of(json!({"billing_period_count": 0})), "billing_period_count");
        assert_eq!(param_of(json!({"billing_period_count": -3})), "billing_period_count");
        assert_eq!(with(json!({"billing_period_count": 3})).unwrap().billing_period_count, Some(3));
    }

    #[test]
    fn customer_timezone_must_be_a_known_iana_zone() {
        for bad in ["Mars/Olympus_Mons", "America/New York", "EST5EDT6", "", "+05:30"] {
            assert_eq!(param_of(json!({"customer_timezone": bad})), "customer_timezone", "{bad}");
        }
        assert_eq!(with(json!({"customer_timezone": "Asia/Kolkata"})).unwrap().customer_timezone, "Asia/Kolkata");
        // The tz database's own spelling is kept, whatever the case given.
        assert_eq!(
            with(json!({"customer_timezone": "america/new_york"})).unwrap().customer_timezone,
            "America/New_York"
        );
    }

    #[test]
    fn end_date_must_come_after_start_date() {
        assert_eq!(param_of(json!({"end_date": "2024-03-19T00:00:00Z"})), "end_date");
        assert_eq!(param_of(json!({"end_date": "2024-03-20T00:00:00Z"})), "end_date");
    }

    #[test]
    fn trial_end_must_come_after_trial_start() {
        let err =
            with(json!({"trial_start": "2024-04-20T00:00:00Z", "trial_end": "2024-04-01T00:00:00Z"})).unwrap_err();
        assert_eq!(err.param, "trial_end");
        assert!(err.message.contains("trial_start"));
        assert_eq!(param_of(json!({"trial_start": "2024-04-20T00:00:00Z"})), "trial_end");
        assert_eq!(param_of(json!({"trial_end": "2024-03-01T00:00:00Z"})), "trial_end");
    }

    #[test]
    fn dates_must_be_rfc3339() {
        for field in ["start_date", "end_date", "trial_start", "trial_end"] {
            assert_eq!(param_of(json!({ field: "2024-03-20" })), field);
        }
        assert_eq!(param_of(json!({"start_date": "yesterday"})), "start_date");
        let sub = with(json!({"start_date": "2024-03-20T05:30:00+05:30"})).unwrap();
        assert_eq!(sub.start_date.unwrap().rfc3339(), "2024-03-20T00:00:00Z");
    }

    #[test]
    fn instants_must_be_rfc3339_dates_in_utc_too() {
        // The offset moves these past year 9999 or before year 0000 in UTC.
        for (field, bad) in [
            ("start_date", "9999-12-31T23:59:59-23:59"),
            ("end_date", "9999-12-31T20:00:00-04:00"),
            ("trial_start", "0000-01-01T00:00:00+00:01"),
            ("trial_end", "9999-12-31T23:59:59.999999-00:01"),
        ] {
            let err = with(json!({ field: bad })).unwrap_err();
            assert_eq!(err.param, field, "{bad}");
            assert!(err.message.contains("years 0000 to 9999"), "{}", err.message);
        }
        let phases =
            json!({"phases": [{"start_date": "2030-01-01T00:00:00Z", "end_date": "9999-12-31T23:00:00-01:00"}]});
        assert_eq!(param_of(phases), "phases[0].end_date");
        // The ends themselves are fine for the parser (the flow says what it can bill).
        assert_eq!(instant("9999-12-31T23:59:59.999999Z", "x").unwrap().rfc3339(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(instant("0000-01-01T00:00:00Z", "x").unwrap().rfc3339(), "0000-01-01T00:00:00Z");
        assert_eq!(instant(" 2024-03-20T05:30:00+05:30 ", "x").unwrap().rfc3339(), "2024-03-20T00:00:00Z");
    }

    #[test]
    fn bad_decimal_strings_are_rejected() {
        for bad in ["abc", "1e3", "1,000.00", " 10", ".5", "5.", "+1", "", "1.2.3"] {
            assert_eq!(param_of(json!({"commitment_amount": bad})), "commitment_amount", "{bad}");
            assert_eq!(param_of(json!({"overage_factor": bad})), "overage_factor", "{bad}");
        }
        // A JSON number would be a float: refused.
        assert_eq!(param_of(json!({"commitment_amount": 1000.5})), "commitment_amount");
        assert_eq!(param_of(json!({"overage_factor": 1.5})), "overage_factor");
        // More decimal places than the currency has.
        assert_eq!(param_of(json!({"commitment_amount": "10.001"})), "commitment_amount");
        assert_eq!(param_of(json!({"currency": "jpy", "commitment_amount": "10.5"})), "commitment_amount");
        assert_eq!(param_of(json!({"commitment_amount": "-1"})), "commitment_amount");
        let sub = with(json!({"currency": "jpy", "commitment_amount": "5000.00"})).unwrap();
        assert_eq!(minor_units(sub.commitment.unwrap().amount, Currency::parse("jpy").unwrap(), "x"), Ok(5000));
    }

    #[test]
    fn overage_factor_is_at_least_one() {
        let err = with(json!({"commitment_amount": "100", "overage_factor": "0.99"})).unwrap_err();
        assert_eq!(err.param, "overage_factor");
        assert!(err.message.contains("at least 1"));
        let ok = with(json!({"commitment_amount": "100", "overage_factor": "1.0"})).unwrap();
        assert_eq!(ok.commitment.unwrap().overage_factor.cmp_whole(1), std::cmp::Ordering::Equal);
    }

    #[test]
    fn commitment_settings_need_a_commitment_amount() {
        assert_eq!(param_of(json!({"commitment_duration": "MONTH"})), "commitment_duration");
        assert_eq!(param_of(json!({"overage_factor": "1.5"})), "overage_factor");
        assert_eq!(param_of(json!({"enable_true_up": true})), "enable_true_up");
        assert!(with(json!({"enable_true_up": false})).unwrap().commitment.is_none());
    }

    #[test]
    fn a_customer_is_required_by_id_or_external_id() {
        assert_eq!(param_of(json!({"customer_id": null})), "customer_id");
        assert_eq!(param_of(json!({"customer_id": "  "})), "customer_id");
        let sub = with(json!({"customer_id": null, "external_customer_id": "customer-12345"})).unwrap();
        assert_eq!(sub.customer, CustomerRef::External("customer-12345".into()));
        let long = "x".repeat(256);
        assert_eq!(param_of(json!({"customer_id": null, "external_customer_id": long})), "external_customer_id");
    }

    #[test]
    fn plan_id_and_currency() {
        assert_eq!(param_of(json!({"plan_id": null})), "plan_id");
        assert_eq!(param_of(json!({"currency": "USD"})), "currency");
        assert_eq!(param_of(json!({"currency": "zzz"})), "currency");
        assert_eq!(with(json!({"currency": null})).unwrap().currency, None);
    }

    #[test]
    fn phases_are_ordered_contiguous_and_only_the_last_is_open() {
        let p = |s: &str, e: Option<&str>| match e {
            Some(e) => json!({"start_date": s, "end_date": e}),
            None => json!({"start_date": s}),
        };
        let (a, b, c, d) =
            ("2024-03-20T00:00:00Z", "2024-06-20T00:00:00Z", "2024-09-20T00:00:00Z", "2024-12-20T00:00:00Z");
        // start_date < end_date
        assert_eq!(param_of(json!({"phases": [p(b, Some(a))]})), "phases[0].end_date");
        // all but the last have an end_date
        assert_eq!(param_of(json!({"phases": [p(a, None), p(b, None)]})), "phases[0].end_date");
        // overlap and gap
        assert_eq!(param_of(json!({"phases": [p(a, Some(c)), p(b, None)]})), "phases[1].start_date");
        assert_eq!(param_of(json!({"phases": [p(a, Some(b)), p(c, Some(d))]})), "phases[1].start_date");
        // a later phase with its end before its start
        assert_eq!(param_of(json!({"phases": [p(a, Some(b)), p(b, Some(a))]})), "phases[1].end_date");
        // not before the subscription starts, not past its end
        assert_eq!(param_of(json!({"phases": [p("2024-01-01T00:00:00Z", None)]})), "phases[0].start_date");
        assert_eq!(param_of(json!({"end_date": c, "phases": [p(a, Some(d))]})), "phases[0].end_date");
        // dates and the phase's own overrides
        assert_eq!(param_of(json!({"phases": [p(a, Some("soon"))]})), "phases[0].end_date");
        assert_eq!(param_of(json!({"phases": [{"end_date": b}]})), "phases[0].start_date");
        let bad_override = json!({"phases": [p(a, Some(b)), {"start_date": b,
            "override_line_items": [{"price_id": PRICE_A, "quantity": "0"}]}]});
        assert_eq!(param_of(bad_override), "phases[1].override_line_items[0].quantity");
        let ok = with(json!({"phases": [p(a, Some(b)), p(b, Some(c)), p(c, None)]})).unwrap();
        assert_eq!(ok.phases.len(), 3);
    }

    #[test]
    fn line_items_need_price_ids_quantities_from_one_and_short_names() {
        assert_eq!(param_of(json!({"line_items": [{"price_id": "price_123"}]})), "line_items[0].price_id");
        assert_eq!(param_of(json!({"line_items": [{"quantity": "1"}]})), "line_items[0].price_id");
        let two = |q: Value| json!({"line_items": [{"price_id": PRICE_A}, {"price_id": PRICE_B, "quantity": q}]});
        assert_eq!(param_of(two(json!("0"))), "line_items[1].quantity");
        assert_eq!(param_of(two(json!(0))), "line_items[1].quantity");
        assert_eq!(param_of(two(json!("1.5"))), "line_items[1].quantity");
        assert_eq!(param_of(two(json!("many"))), "line_items[1].quantity");
        assert_eq!(with(two(json!(4))).unwrap().line_items[1].quantity, 4);
        assert_eq!(with(two(json!("4.00"))).unwrap().line_items[1].quantity, 4);
        assert_eq!(with(two(Value::Null)).unwrap().line_items[0].quantity, 1);
        let long = "n".repeat(DISPLAY_NAME_MAX + 1);
        assert_eq!(
            param_of(json!({"line_items": [{"price_id": PRICE_A, "display_name": long}]})),
            "line_items[0].display_name"
        );
    }

    #[test]
    fn override_line_items_need_price_ids_and_sane_quantities_and_amounts() {
        let one = |item: Value| json!({ "override_line_items": [item] });
        assert_eq!(
            param_of(one(json!({"price_id": "fprod_01HW5MXAPBE79RHMMJJGB4ACAB", "amount": "1"}))),
            "override_line_items[0].price_id"
        );
        assert_eq!(param_of(one(json!({"price_id": PRICE_A, "quantity": "-1"}))), "override_line_items[0].quantity");
        assert_eq!(param_of(one(json!({"price_id": PRICE_A, "amount": "-0.01"}))), "override_line_items[0].amount");
        assert_eq!(param_of(one(json!({"price_id": PRICE_A, "amount": "ten"}))), "override_line_items[0].amount");
        assert_eq!(param_of(one(json!({"price_id": PRICE_A}))), "override_line_items[0]");
        let twice = json!({"override_line_items": [{"price_id": PRICE_A, "amount": "1"}, {"price_id": PRICE_A, "amount": "2"}]});
        assert_eq!(param_of(twice), "override_line_items[1].price_id");
        let free = with(one(json!({"price_id": PRICE_A, "amount": "0"}))).unwrap();
        assert_eq!(free.override_line_items[0].amount, Some(Decimal::ZERO));
    }

    #[test]
    fn lookup_key_length() {
        let long = "k".repeat(LOOKUP_KEY_MAX + 1);
        assert_eq!(param_of(json!({ "lookup_key": long })), "lookup_key");
        assert_eq!(with(json!({"lookup_key": ""})).unwrap().lookup_key, None);
    }

    #[test]
    fn metadata_follows_the_common_rules() {
        assert_eq!(param_of(json!({"metadata": {"n": 1}})), "metadata.n");
        assert_eq!(param_of(json!({"metadata": "x"})), "metadata");
        assert_eq!(with(json!({"metadata": null})).unwrap().metadata, None);
    }

    #[test]
    fn invoice_to_parent_needs_a_parent() {
        assert_eq!(param_of(json!({"invoice_billing": "INVOICE_TO_PARENT"})), "invoice_billing");
    }

    #[test]
    fn decimals_are_exact() {
        let d = Decimal::parse("1000.00").unwrap();
        assert_eq!((d.units(), d.scale()), (100_000, 2));
        assert_eq!(d.to_string(), "1000.00");
        assert_eq!(d.to_scaled(2), Some(100_000));
        assert_eq!(d.to_scaled(0), Some(1000));
        assert_eq!(Decimal::parse("0.1").unwrap().to_scaled(0), None);
        assert_eq!(Decimal::parse("-0.5").unwrap().to_string(), "-0.5");
        assert!(Decimal::parse(&"9".repeat(16)).is_none());
        assert!(Decimal::parse("1.0000000000001").is_none());
        // 0.1 + 0.2 style traps do not exist: 1.5 x 3 = 4.5 -> 4 (half to even), x 5 = 7.5 -> 8.
        let f = Decimal::parse("1.5").unwrap();
        assert_eq!(f.mul_round_half_even(3), Some(4));
        assert_eq!(f.mul_round_half_even(5), Some(8));
        assert_eq!(f.mul_round_half_even(1000), Some(1500));
        assert_eq!(serde_json::to_value(f).unwrap(), json!("1.5"));
    }
}
