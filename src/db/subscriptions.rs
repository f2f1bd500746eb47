//! Subscriptions with their items, and invoices with their lines.

use super::Conn;
use crate::domain::billing_period::PeriodUnit;
use crate::domain::ids::{CustomerId, InvoiceId, PaymentIntentId, PaymentMethodId, PriceId, SubscriptionId};
use crate::domain::metadata::Metadata;
use crate::domain::money::Currency;
use crate::domain::subscription::{
    BillingCadence, BillingCycle, BillingReason, CollectionMethod, Invoice, InvoiceLine, InvoiceStatus, Subscription,
    SubscriptionItem, SubscriptionStatus,
};
use crate::domain::timestamp::Timestamp;
use crate::domain::{Mode, Owner};

fn opt_micros(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::micros)
}

pub async fn insert(
    conn: &mut Conn,
    owner: &Owner,
    s: &Subscription,
    checkout_session: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO subscriptions (id, merchant_id, livemode, customer_id, plan_id, status, currency,
            billing_cadence, billing_period, billing_period_count, billing_cycle, billing_anchor,
            customer_timezone, start_date, end_date, current_period_start, current_period_end,
            trial_start, trial_end, cancel_at, canceled_at, cancel_at_period_end, collection_method,
            default_payment_method, latest_invoice, checkout_session_id, lookup_key, metadata,
            created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
            $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)",
    )
    .bind(s.id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(s.customer_id.as_str())
    .bind(&s.plan_id)
    .bind(s.subscription_status.as_str())
    .bind(s.currency.code())
    .bind(s.billing_cadence.as_str())
    .bind(s.billing_period.as_str())
    .bind(i64::from(s.billing_period_count))
    .bind(s.billing_cycle.as_str())
    .bind(s.billing_anchor.micros())
    .bind(&s.customer_timezone)
    .bind(s.start_date.micros())
    .bind(opt_micros(s.end_date))
    .bind(s.current_period_start.micros())
    .bind(s.current_period_end.micros())
    .bind(opt_micros(s.trial_start))
    .bind(opt_micros(s.trial_end))
    .bind(opt_micros(s.cancel_at))
    .bind(opt_micros(s.canceled_at))
    .bind(i64::from(s.cancel_at_period_end))
    .bind(s.collection_method.as_str())
    .bind(s.default_payment_method.as_ref().map(|p| p.as_str()))
    .bind(s.latest_invoice.as_ref().map(|p| p.as_str()))
    .bind(checkout_session)
    .bind(s.lookup_key.as_deref())
    .bind(s.metadata.as_ref().map(Metadata::to_json))
    .bind(s.created_at.micros())
    .bind(s.updated_at.micros())
    .execute(&mut *conn)
    .await?;
    for (position, item) in s.items.iter().enumerate() {
        sqlx::query(
            "INSERT INTO subscription_items (id, subscription_id, position, price_id, quantity, unit_amount, description)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(format!("{}_{position}", s.id))
        .bind(s.id.as_str())
        .bind(position as i64)
        .bind(item.price_id.as_str())
        .bind(item.quantity)
        .bind(item.unit_amount)
        .bind(&item.description)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[derive(Clone, Debug, sqlx::FromRow)]
struct SubscriptionRow {
    id: String,
    livemode: i64,
    customer_id: String,
    plan_id: String,
    status: String,
    currency: String,
    billing_cadence: String,
    billing_period: String,
    billing_period_count: i64,
    billing_cycle: String,
    billing_anchor: i64,
    customer_timezone: String,
    start_date: i64,
    end_date: Option<i64>,
    current_period_start: i64,
    current_period_end: i64,
    trial_start: Option<i64>,
    trial_end: Option<i64>,
    cancel_at: Option<i64>,
    canceled_at: Option<i64>,
    cancel_at_period_end: i64,
    collection_method: String,
    default_payment_method: Option<String>,
    latest_invoice: Option<String>,
    lookup_key: Option<String>,
    metadata: Option<String>,
    created_at: i64,
    updated_at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
struct ItemRow {
    price_id: String,
    quantity: i64,
    unit_amount: i64,
    description: String,
}

pub async fn get(conn: &mut Conn, owner: &Owner, id: &SubscriptionId) -> Result<Option<Subscription>, sqlx::Error> {
    let Some(r) = sqlx::query_as::<_, SubscriptionRow>(
        "SELECT id, livemode, customer_id, plan_id, status, currency, billing_cadence, billing_period,
            billing_period_count, billing_cycle, billing_anchor, customer_timezone, start_date, end_date,
            current_period_start, current_period_end, trial_start, trial_end, cancel_at, canceled_at,
            cancel_at_period_end, collection_method, default_payment_method, latest_invoice, lookup_key,
            metadata, created_at, updated_at
         FROM subscriptions WHERE id = $1 AND merchant_id = $2 AND livemode = $3",
    )
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let items = sqlx::query_as::<_, ItemRow>(
        "SELECT price_id, quantity, unit_amount, description FROM subscription_items
         WHERE subscription_id = $1 ORDER BY position",
    )
    .bind(id.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let ts = Timestamp::from_micros;
    Ok(Some(Subscription {
        id: SubscriptionId::from_trusted(r.id),
        customer_id: CustomerId::from_trusted(r.customer_id),
        plan_id: r.plan_id,
        subscription_status: SubscriptionStatus::from_wire(&r.status).unwrap_or(SubscriptionStatus::Active),
        currency: Currency::parse(&r.currency).unwrap_or(Currency::USD),
        billing_cadence: BillingCadence::from_wire(&r.billing_cadence).unwrap_or(BillingCadence::InAdvance),
        billing_period: PeriodUnit::from_wire(&r.billing_period).unwrap_or(PeriodUnit::Month),
        billing_period_count: r.billing_period_count.clamp(1, i64::from(u32::MAX)) as u32,
        billing_cycle: BillingCycle::from_wire(&r.billing_cycle).unwrap_or(BillingCycle::Anniversary),
        billing_anchor: ts(r.billing_anchor),
        start_date: ts(r.start_date),
        end_date: r.end_date.map(ts),
        current_period_start: ts(r.current_period_start),
        current_period_end: ts(r.current_period_end),
        trial_start: r.trial_start.map(ts),
        trial_end: r.trial_end.map(ts),
        cancel_at: r.cancel_at.map(ts),
        canceled_at: r.canceled_at.map(ts),
        cancel_at_period_end: r.cancel_at_period_end != 0,
        collection_method: CollectionMethod::from_wire(&r.collection_method)
            .unwrap_or(CollectionMethod::ChargeAutomatically),
        customer_timezone: r.customer_timezone,
        default_payment_method: r.default_payment_method.map(PaymentMethodId::from_trusted),
        latest_invoice: r.latest_invoice.map(InvoiceId::from_trusted),
        lookup_key: r.lookup_key,
        items: items
            .into_iter()
            .map(|i| SubscriptionItem {
                price_id: PriceId::from_trusted(i.price_id),
                quantity: i.quantity,
                unit_amount: i.unit_amount,
                description: i.description,
            })
            .collect(),
        metadata: Metadata::from_stored(r.metadata.as_deref()),
        test_mode: Mode::from_flag(r.livemode).is_test(),
        created_at: ts(r.created_at),
        updated_at: ts(r.updated_at),
    }))
}

/// The next invoice number for a merchant and mode: `FLEX-000001` and up, without gaps.
pub async fn next_invoice_number(conn: &mut Conn, owner: &Owner) -> Result<String, sqlx::Error> {
    let count = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM invoices WHERE merchant_id = $1 AND livemode = $2")
        .bind(owner.merchant_id.as_str())
        .bind(owner.mode.as_flag())
        .fetch_one(conn)
        .await?;
    Ok(format!("FLEX-{:06}", count + 1))
}

pub async fn insert_invoice(conn: &mut Conn, owner: &Owner, i: &Invoice) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO invoices (id, merchant_id, livemode, number, customer_id, subscription_id, status,
            amount_due, amount_paid, amount_remaining, currency, period_start, period_end, due_date,
            attempt_count, next_payment_attempt, payment_intent_id, billing_reason, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $19)",
    )
    .bind(i.invoice_id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(&i.number)
    .bind(i.customer.as_str())
    .bind(i.subscription.as_ref().map(|s| s.as_str()))
    .bind(i.status.as_str())
    .bind(i.amount_due)
    .bind(i.amount_paid)
    .bind(i.amount_remaining)
    .bind(i.currency.code())
    .bind(i.period_start.micros())
    .bind(i.period_end.micros())
    .bind(opt_micros(i.due_date))
    .bind(i.attempt_count)
    .bind(opt_micros(i.next_payment_attempt))
    .bind(i.payment_intent.as_ref().map(|p| p.as_str()))
    .bind(i.billing_reason.as_str())
    .bind(i.created_at.micros())
    .execute(&mut *conn)
    .await?;
    for (position, line) in i.lines.iter().enumerate() {
        sqlx::query(
            "INSERT INTO invoice_lines (id, invoice_id, position, description, price_id, quantity, amount,
                period_start, period_end, proration)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(format!("{}_{position}", i.invoice_id))
        .bind(i.invoice_id.as_str())
        .bind(position as i64)
        .bind(&line.description)
        .bind(line.price.as_ref().map(|p| p.as_str()))
        .bind(line.quantity)
        .bind(line.amount)
        .bind(line.period_start.micros())
        .bind(line.period_end.micros())
        .bind(i64::from(line.proration))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[derive(Clone, Debug, sqlx::FromRow)]
struct InvoiceRow {
    id: String,
    livemode: i64,
    number: String,
    customer_id: String,
    subscription_id: Option<String>,
    status: String,
    amount_due: i64,
    amount_paid: i64,
    amount_remaining: i64,
    currency: String,
    period_start: i64,
    period_end: i64,
    due_date: Option<i64>,
    attempt_count: i64,
    next_payment_attempt: Option<i64>,
    payment_intent_id: Option<String>,
    billing_reason: String,
    created_at: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
struct LineRow {
    description: String,
    price_id: Option<String>,
    quantity: i64,
    amount: i64,
    period_start: i64,
    period_end: i64,
    proration: i64,
}

pub async fn get_invoice(conn: &mut Conn, owner: &Owner, id: &InvoiceId) -> Result<Option<Invoice>, sqlx::Error> {
    let Some(r) = sqlx::query_as::<_, InvoiceRow>(
        "SELECT id, livemode, number, customer_id, subscription_id, status, amount_due, amount_paid,
            amount_remaining, currency, period_start, period_end, due_date, attempt_count,
            next_payment_attempt, payment_intent_id, billing_reason, created_at
         FROM invoices WHERE id = $1 AND merchant_id = $2 AND livemode = $3",
    )
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let lines = sqlx::query_as::<_, LineRow>(
        "SELECT description, price_id, quantity, amount, period_start, period_end, proration
         FROM invoice_lines WHERE invoice_id = $1 ORDER BY position",
    )
    .bind(id.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let ts = Timestamp::from_micros;
    Ok(Some(Invoice {
        invoice_id: InvoiceId::from_trusted(r.id),
        number: r.number,
        customer: CustomerId::from_trusted(r.customer_id),
        subscription: r.subscription_id.map(SubscriptionId::from_trusted),
        status: InvoiceStatus::from_wire(&r.status).unwrap_or(InvoiceStatus::Open),
        amount_due: r.amount_due,
        amount_paid: r.amount_paid,
        amount_remaining: r.amount_remaining,
        currency: Currency::parse(&r.currency).unwrap_or(Currency::USD),
        period_start: ts(r.period_start),
        period_end: ts(r.period_end),
        due_date: r.due_date.map(ts),
        attempt_count: r.attempt_count,
        next_payment_attempt: r.next_payment_attempt.map(ts),
        lines: lines
            .into_iter()
            .map(|l| InvoiceLine {
                description: l.description,
                price: l.price_id.map(PriceId::from_trusted),
                quantity: l.quantity,
                amount: l.amount,
                period_start: ts(l.period_start),
                period_end: ts(l.period_end),
                proration: l.proration != 0,
            })
            .collect(),
        payment_intent: r.payment_intent_id.map(PaymentIntentId::from_trusted),
        billing_reason: BillingReason::from_wire(&r.billing_reason).unwrap_or(BillingReason::Manual),
        created_at: ts(r.created_at),
        test_mode: Mode::from_flag(r.livemode).is_test(),
    }))
}
