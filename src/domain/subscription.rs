//! Subscriptions as seed 002 shows them, whichever door they came through (checkout or API).

use serde::Serialize;

use super::billing_period::PeriodUnit;
use super::ids::{CustomerId, InvoiceId, PaymentMethodId, PriceId, SubscriptionId};
use super::metadata::Metadata;
use super::money::Currency;
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

#[derive(Clone, Debug, Serialize)]
pub struct SubscriptionItem {
    pub price_id: PriceId,
    pub quantity: i64,
    pub unit_amount: i64,
    pub description: String,
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
    pub items: Vec<SubscriptionItem>,
    pub metadata: Option<Metadata>,
    pub test_mode: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

wire_enum!(InvoiceStatus {
    Draft => "draft",
    Open => "open",
    Paid => "paid",
    Void => "void",
    Uncollectible => "uncollectible",
});

wire_enum!(BillingReason {
    SubscriptionCreate => "subscription_create",
    SubscriptionCycle => "subscription_cycle",
    SubscriptionUpdate => "subscription_update",
    Manual => "manual",
});

#[derive(Clone, Debug, Serialize)]
pub struct InvoiceLine {
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
    pub created_at: Timestamp,
    pub test_mode: bool,
}
