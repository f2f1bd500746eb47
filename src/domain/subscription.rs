//! Subscriptions as seed 002 shows them, whichever door they came through (checkout or API).

use serde::Serialize;

use super::billing_period::PeriodUnit;
use super::ids::{CustomerId, InvoiceId, PaymentMethodId, PriceId, SubscriptionId, TestClockId};
use super::metadata::Metadata;
use super::money::Currency;
use super::subscription_request::{
    CommitmentDuration, Decimal, InvoiceBilling, PaymentBehavior, PaymentTerms, ProrationBehavior,
};
use super::timestamp::Timestamp;
use super::wire_enum;

wire_enum!(SubscriptionStatus {
    Draft => "DRAFT",
    Incomplete => "INCOMPLETE",
    IncompleteExpired => "INCOMPLETE_EXPIRED",
    Trialing => "TRIALING",
    Active => "ACTIVE",
    PastDue => "PAST_DUE",
    Unpaid => "UNPAID",
    Canceled => "CANCELED",
});

wire_enum!(BillingCadence {
    InAdvance => "IN_ADVANCE",
    InArrears => "IN_ARREARS",
});

wire_enum!(BillingCycle {
    Anniversary => "ANNIVERSARY",
    Calendar => "CALENDAR",
});

wire_enum!(CollectionMethod {
    ChargeAutomatically => "CHARGE_AUTOMATICALLY",
    SendInvoice => "SEND_INVOICE",
});

wire_enum!(
    /// `plan`: the plan's price, billed every period; `recurring`: an extra recurring item, billed
    /// with it; `one_time`: an extra item billed once, on the first invoice.
    ItemKind {
        Plan => "plan",
        Recurring => "recurring",
        OneTime => "one_time",
    }
);

#[derive(Clone, Debug, Serialize)]
pub struct SubscriptionItem {
    pub price_id: PriceId,
    pub quantity: i64,
    pub unit_amount: i64,
    pub description: String,
    pub kind: ItemKind,
}

/// A price override of one phase: quantity and/or unit amount (minor units) for a price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PhaseOverride {
    pub price_id: PriceId,
    pub quantity: Option<i64>,
    #[serde(skip)]
    pub unit_amount: Option<i64>,
    /// As the merchant wrote it (major units), for the response.
    pub amount: Option<Decimal>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubscriptionPhase {
    pub start_date: Timestamp,
    pub end_date: Option<Timestamp>,
    pub override_line_items: Vec<PhaseOverride>,
}

impl SubscriptionPhase {
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start_date <= at && self.end_date.is_none_or(|e| at < e)
    }
}

/// A minimum spend per window; `amount` in major units as written, exact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Commitment {
    pub commitment_amount: Decimal,
    /// `None`: each billing period is its own window.
    pub commitment_duration: Option<CommitmentDuration>,
    pub overage_factor: Decimal,
    pub enable_true_up: bool,
}

/// Where the billing engine stands with a subscription; not part of the API object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineState {
    /// Whether the current period's in-advance invoice exists.
    pub cycle_invoiced: bool,
    /// The period end an `invoice.upcoming` went out for.
    pub upcoming_sent_for: Option<Timestamp>,
    pub trial_will_end_sent: bool,
    /// When the engine must look at the subscription again; `None`: never (ended, draft, ...).
    pub next_action_at: Option<Timestamp>,
    /// Bumped by every change the engine or the API makes; changes are conditional on it.
    pub version: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub customer_id: CustomerId,
    pub plan_id: String,
    pub subscription_status: SubscriptionStatus,
    pub currency: Currency,
    pub billing_cadence: BillingCadence,
    pub billing_period: PeriodUnit,
    pub billing_period_count: u32,
    pub billing_cycle: BillingCycle,
    pub billing_anchor: Timestamp,
    pub start_date: Timestamp,
    pub end_date: Option<Timestamp>,
    pub current_period_start: Timestamp,
    pub current_period_end: Timestamp,
    pub trial_start: Option<Timestamp>,
    pub trial_end: Option<Timestamp>,
    pub cancel_at: Option<Timestamp>,
    pub canceled_at: Option<Timestamp>,
    pub cancel_at_period_end: bool,
    pub collection_method: CollectionMethod,
    pub customer_timezone: String,
    pub default_payment_method: Option<PaymentMethodId>,
    pub latest_invoice: Option<InvoiceId>,
    pub lookup_key: Option<String>,
    pub payment_behavior: PaymentBehavior,
    pub proration_behavior: ProrationBehavior,
    #[serde(flatten)]
    pub commitment: Option<Commitment>,
    pub parent_subscription_id: Option<SubscriptionId>,
    pub invoice_billing: InvoiceBilling,
    pub payment_terms: Option<PaymentTerms>,
    pub phases: Vec<SubscriptionPhase>,
    pub test_clock: Option<TestClockId>,
    pub items: Vec<SubscriptionItem>,
    pub metadata: Option<Metadata>,
    pub test_mode: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(skip)]
    pub engine: EngineState,
}

impl Subscription {
    /// Whether the engine still bills it.
    pub fn is_live(&self) -> bool {
        matches!(
            self.subscription_status,
            SubscriptionStatus::Trialing | SubscriptionStatus::Active | SubscriptionStatus::PastDue
        )
    }

    /// Whether its periods still roll over and get invoiced: live, or `UNPAID` (invoiced, but
    /// nothing is charged automatically until the customer pays).
    pub fn renews(&self) -> bool {
        self.is_live() || self.subscription_status == SubscriptionStatus::Unpaid
    }
}

wire_enum!(InvoiceStatus {
    Draft => "draft",
    Open => "open",
    Paid => "paid",
    Void => "void",
    Uncollectible => "uncollectible",
});

wire_enum!(
    /// `item`: a price billed; `true_up`/`overage`: a commitment's shortfall or surcharge.
    LineKind {
        Item => "item",
        TrueUp => "true_up",
        Overage => "overage",
    }
);

wire_enum!(BillingReason {
    SubscriptionCreate => "subscription_create",
    SubscriptionCycle => "subscription_cycle",
    SubscriptionUpdate => "subscription_update",
    Manual => "manual",
});

#[derive(Clone, Debug, Serialize)]
pub struct InvoiceLine {
    pub kind: LineKind,
    pub description: String,
    pub price: Option<PriceId>,
    pub quantity: i64,
    pub amount: i64,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    pub proration: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Invoice {
    pub invoice_id: InvoiceId,
    pub number: String,
    pub customer: CustomerId,
    pub subscription: Option<SubscriptionId>,
    pub status: InvoiceStatus,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub currency: Currency,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    pub due_date: Option<Timestamp>,
    pub attempt_count: i64,
    pub next_payment_attempt: Option<Timestamp>,
    pub lines: Vec<InvoiceLine>,
    pub payment_intent: Option<super::ids::PaymentIntentId>,
    pub billing_reason: BillingReason,
    pub collection_method: CollectionMethod,
    pub payment_method: Option<PaymentMethodId>,
    /// The code of the last failed attempt (`insufficient_funds`, `authentication_required`, ...).
    pub last_decline_code: Option<String>,
    /// Where the customer can pay it with a card: `<public URL>/pay/i/<invoice_id>`.
    pub hosted_invoice_url: Option<String>,
    pub paid_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub test_mode: bool,
    #[serde(skip)]
    pub collection: CollectionState,
}

/// An invoice's collection state that the API does not show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectionState {
    /// An attempt (number `attempt_count`) is at the gateway; `next_payment_attempt` is its lease.
    pub charging: bool,
    pub first_failed_at: Option<Timestamp>,
    pub test_clock: Option<TestClockId>,
    /// When the engine must look at the open invoice for something other than an attempt: a
    /// `SEND_INVOICE` invoice's due date (overdue: the subscription is `PAST_DUE`), or, after a
    /// hard decline, dunning's last day (uncollectible). `None` once that has happened.
    pub deadline: Option<Timestamp>,
}
