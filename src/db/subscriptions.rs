//! Subscriptions with their items, and invoices with their lines, their collection state and
//! their numbers.

use super::{Arg, Conn, Cursor, Page, Sql};
use crate::domain::billing_period::PeriodUnit;
use crate::domain::ids::{
    CustomerId, InvoiceId, MerchantId, PaymentIntentId, PaymentMethodId, PriceId, SubscriptionId, TestClockId,
};
use crate::domain::metadata::Metadata;
use crate::domain::money::Currency;
use crate::domain::subscription::{
    BillingCadence, BillingCycle, BillingReason, CollectionMethod, CollectionState, Commitment, EngineState, Invoice,
    InvoiceLine, InvoiceStatus, ItemKind, LineKind, PhaseOverride, Subscription, SubscriptionItem, SubscriptionPhase,
    SubscriptionStatus,
};
use crate::domain::subscription_request::{
    CommitmentDuration, Decimal, InvoiceBilling, PaymentBehavior, PaymentTerms, ProrationBehavior,
};
use crate::domain::timestamp::Timestamp;
use crate::domain::{Mode, Owner};

fn opt_micros(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::micros)
}

fn phases_json(phases: &[SubscriptionPhase]) -> Option<String> {
    if phases.is_empty() {
        return None;
    }
    let v: Vec<serde_json::Value> = phases
        .iter()
        .map(|p| {
            serde_json::json!({
                "start": p.start_date.micros(),
                "end": p.end_date.map(Timestamp::micros),
                "overrides": p.override_line_items.iter().map(|o| serde_json::json!({
                    "price_id": o.price_id,
                    "quantity": o.quantity,
                    "unit_amount": o.unit_amount,
                    "amount": o.amount.map(|a| a.to_string()),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Some(serde_json::Value::Array(v).to_string())
}

fn phases_from(raw: Option<&str>) -> Vec<SubscriptionPhase> {
    let Some(v) = raw.and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok()) else {
        return Vec::new();
    };
    let int = |v: &serde_json::Value| v.as_i64();
    v.as_array()
        .map(|phases| {
            phases
                .iter()
                .filter_map(|p| {
                    Some(SubscriptionPhase {
                        start_date: Timestamp::from_micros(int(p.get("start")?)?),
                        end_date: p.get("end").and_then(int).map(Timestamp::from_micros),
                        override_line_items: p
                            .get("overrides")?
                            .as_array()?
                            .iter()
                            .filter_map(|o| {
                                Some(PhaseOverride {
                                    price_id: PriceId::from_trusted(o.get("price_id")?.as_str()?.to_string()),
                                    quantity: o.get("quantity").and_then(int),
                                    unit_amount: o.get("unit_amount").and_then(int),
                                    amount: o.get("amount").and_then(|a| a.as_str()).and_then(Decimal::parse),
                                })
                            })
                            .collect(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn insert(
    conn: &mut Conn,
    owner: &Owner,
    s: &Subscription,
    checkout_session: Option<&str>,
) -> Result<(), sqlx::Error> {
    let c = s.commitment.as_ref();
    sqlx::query(
        "INSERT INTO subscriptions (id, merchant_id, livemode, customer_id, plan_id, status, currency,
            billing_cadence, billing_period, billing_period_count, billing_cycle, billing_anchor,
            customer_timezone, start_date, end_date, current_period_start, current_period_end,
            trial_start, trial_end, cancel_at, canceled_at, cancel_at_period_end, collection_method,
            default_payment_method, latest_invoice, checkout_session_id, lookup_key, metadata,
            created_at, updated_at, payment_behavior, proration_behavior, commitment_amount,
            commitment_duration, overage_factor, enable_true_up, parent_subscription_id, invoice_billing,
            payment_terms, phases, test_clock, cycle_invoiced, upcoming_sent_for, trial_will_end_sent,
            next_action_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
            $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38,
            $39, $40, $41, $42, $43, $44, $45, $46)",
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
    .bind(s.payment_behavior.as_str())
    .bind(s.proration_behavior.as_str())
    .bind(c.map(|c| c.commitment_amount.to_string()))
    .bind(c.and_then(|c| c.commitment_duration).map(|d| d.as_str()))
    .bind(c.map(|c| c.overage_factor.to_string()))
    .bind(i64::from(c.is_some_and(|c| c.enable_true_up)))
    .bind(s.parent_subscription_id.as_ref().map(|p| p.as_str()))
    .bind(s.invoice_billing.as_str())
    .bind(s.payment_terms.map(|t| t.as_str()))
    .bind(phases_json(&s.phases))
    .bind(s.test_clock.as_ref().map(|c| c.as_str()))
    .bind(i64::from(s.engine.cycle_invoiced))
    .bind(opt_micros(s.engine.upcoming_sent_for))
    .bind(i64::from(s.engine.trial_will_end_sent))
    .bind(opt_micros(s.engine.next_action_at))
    .bind(s.engine.version)
    .execute(&mut *conn)
    .await?;
    insert_items(conn, s).await
}

async fn insert_items(conn: &mut Conn, s: &Subscription) -> Result<(), sqlx::Error> {
    for (position, item) in s.items.iter().enumerate() {
        sqlx::query(
            "INSERT INTO subscription_items (id, subscription_id, position, price_id, quantity, unit_amount,
                description, kind)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(format!("{}_{position}_{}", s.id, s.engine.version))
        .bind(s.id.as_str())
        .bind(position as i64)
        .bind(item.price_id.as_str())
        .bind(item.quantity)
        .bind(item.unit_amount)
        .bind(&item.description)
        .bind(item.kind.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Replaces the items (a plan change).
pub async fn replace_items(conn: &mut Conn, s: &Subscription) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM subscription_items WHERE subscription_id = $1")
        .bind(s.id.as_str())
        .execute(&mut *conn)
        .await?;
    insert_items(conn, s).await
}

/// Writes every mutable field of `s` if nobody changed it since it was read at `s.engine.version`;
/// returns whether it did (and then `s.engine.version` is the new version).
pub async fn save(conn: &mut Conn, s: &mut Subscription) -> Result<bool, sqlx::Error> {
    Ok(save_many(conn, &mut [s]).await?[0])
}

/// Whether each id is the first of its value in the list.
fn first_of_each<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<bool> {
    let mut seen = std::collections::HashSet::new();
    ids.map(|id| seen.insert(id)).collect()
}

/// The columns [`save`] writes.
const SAVED_COLUMNS: [&str; 22] = [
    "status",
    "plan_id",
    "end_date",
    "current_period_start",
    "current_period_end",
    "trial_start",
    "trial_end",
    "cancel_at",
    "canceled_at",
    "cancel_at_period_end",
    "default_payment_method",
    "latest_invoice",
    "lookup_key",
    "metadata",
    "updated_at",
    "cycle_invoiced",
    "upcoming_sent_for",
    "trial_will_end_sent",
    "next_action_at",
    "billing_anchor",
    "proration_behavior",
    "start_date",
];

/// [`save`] for many subscriptions in one statement (distinct ids): whether each was written.
pub async fn save_many(conn: &mut Conn, subs: &mut [&mut Subscription]) -> Result<Vec<bool>, sqlx::Error> {
    if subs.is_empty() {
        return Ok(Vec::new());
    }
    // A second write of one subscription in a batch is a stale one: it loses, as it would after the first.
    let first = first_of_each(subs.iter().map(|s| s.id.as_str()));
    let rows: Vec<Vec<Arg>> = subs
        .iter()
        .zip(&first)
        .filter(|(_, first)| **first)
        .map(|(s, _)| {
            vec![
                Arg::text(s.id.as_str()),
                Arg::Int(s.engine.version),
                Arg::text(s.subscription_status.as_str()),
                Arg::text(&s.plan_id),
                Arg::OptInt(opt_micros(s.end_date)),
                Arg::Int(s.current_period_start.micros()),
                Arg::Int(s.current_period_end.micros()),
                Arg::OptInt(opt_micros(s.trial_start)),
                Arg::OptInt(opt_micros(s.trial_end)),
                Arg::OptInt(opt_micros(s.cancel_at)),
                Arg::OptInt(opt_micros(s.canceled_at)),
                Arg::Int(i64::from(s.cancel_at_period_end)),
                Arg::opt_text(s.default_payment_method.as_ref().map(|p| p.as_str())),
                Arg::opt_text(s.latest_invoice.as_ref().map(|p| p.as_str())),
                Arg::opt_text(s.lookup_key.as_deref()),
                Arg::OptText(s.metadata.as_ref().map(Metadata::to_json)),
                Arg::Int(s.updated_at.micros()),
                Arg::Int(i64::from(s.engine.cycle_invoiced)),
                Arg::OptInt(opt_micros(s.engine.upcoming_sent_for)),
                Arg::Int(i64::from(s.engine.trial_will_end_sent)),
                Arg::OptInt(opt_micros(s.engine.next_action_at)),
                Arg::Int(s.billing_anchor.micros()),
                Arg::text(s.proration_behavior.as_str()),
                Arg::Int(s.start_date.micros()),
            ]
        })
        .collect();
    let changed: std::collections::HashSet<String> =
        super::update_rows(conn, "subscriptions", "id", &["version"], &SAVED_COLUMNS, "version = version + 1", rows)
            .await?
            .into_iter()
            .collect();
    Ok(subs
        .iter_mut()
        .zip(first)
        .map(|(s, first)| {
            let done = first && changed.contains(s.id.as_str());
            if done {
                s.engine.version += 1;
            }
            done
        })
        .collect())
}

#[derive(Clone, Debug, serde::Deserialize)]
struct SubscriptionRow {
    id: String,
    merchant_id: String,
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
    payment_behavior: String,
    proration_behavior: String,
    commitment_amount: Option<String>,
    commitment_duration: Option<String>,
    overage_factor: Option<String>,
    enable_true_up: i64,
    parent_subscription_id: Option<String>,
    invoice_billing: String,
    payment_terms: Option<String>,
    phases: Option<String>,
    test_clock: Option<String>,
    cycle_invoiced: i64,
    upcoming_sent_for: Option<i64>,
    trial_will_end_sent: i64,
    next_action_at: Option<i64>,
    version: i64,
    items: Vec<ItemRow>,
}

const SUB_COLUMNS: &str = "id, merchant_id, livemode, customer_id, plan_id, status, currency, billing_cadence,
    billing_period, billing_period_count, billing_cycle, billing_anchor, customer_timezone, start_date, end_date,
    current_period_start, current_period_end, trial_start, trial_end, cancel_at, canceled_at,
    cancel_at_period_end, collection_method, default_payment_method, latest_invoice, lookup_key, metadata,
    created_at, updated_at, payment_behavior, proration_behavior, commitment_amount, commitment_duration,
    overage_factor, enable_true_up, parent_subscription_id, invoice_billing, payment_terms, phases, test_clock,
    cycle_invoiced, upcoming_sent_for, trial_will_end_sent, next_action_at, version";

const ITEM_COLUMNS: [&str; 5] = ["price_id", "quantity", "unit_amount", "description", "kind"];

#[derive(Clone, Debug, serde::Deserialize)]
struct ItemRow {
    price_id: String,
    quantity: i64,
    unit_amount: i64,
    description: String,
    kind: String,
}

impl SubscriptionRow {
    fn owner(&self) -> Owner {
        Owner { merchant_id: MerchantId::from_trusted(self.merchant_id.clone()), mode: Mode::from_flag(self.livemode) }
    }

    fn into_subscription(self) -> Subscription {
        let ts = Timestamp::from_micros;
        let r = self;
        let commitment = r.commitment_amount.as_deref().and_then(Decimal::parse).map(|amount| Commitment {
            commitment_amount: amount,
            commitment_duration: r.commitment_duration.as_deref().and_then(CommitmentDuration::from_wire),
            overage_factor: r.overage_factor.as_deref().and_then(Decimal::parse).unwrap_or(Decimal::ONE),
            enable_true_up: r.enable_true_up != 0,
        });
        Subscription {
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
            payment_behavior: PaymentBehavior::from_wire(&r.payment_behavior).unwrap_or(PaymentBehavior::DefaultActive),
            proration_behavior: ProrationBehavior::from_wire(&r.proration_behavior)
                .unwrap_or(ProrationBehavior::CreateProrations),
            commitment,
            parent_subscription_id: r.parent_subscription_id.map(SubscriptionId::from_trusted),
            invoice_billing: InvoiceBilling::from_wire(&r.invoice_billing).unwrap_or(InvoiceBilling::InvoiceToSelf),
            payment_terms: r.payment_terms.as_deref().and_then(PaymentTerms::from_wire),
            phases: phases_from(r.phases.as_deref()),
            test_clock: r.test_clock.map(TestClockId::from_trusted),
            items: r
                .items
                .into_iter()
                .map(|i| SubscriptionItem {
                    price_id: PriceId::from_trusted(i.price_id),
                    quantity: i.quantity,
                    unit_amount: i.unit_amount,
                    description: i.description,
                    kind: ItemKind::from_wire(&i.kind).unwrap_or(ItemKind::Plan),
                })
                .collect(),
            metadata: Metadata::from_stored(r.metadata.as_deref()),
            test_mode: Mode::from_flag(r.livemode).is_test(),
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
            engine: EngineState {
                cycle_invoiced: r.cycle_invoiced != 0,
                upcoming_sent_for: r.upcoming_sent_for.map(ts),
                trial_will_end_sent: r.trial_will_end_sent != 0,
                next_action_at: r.next_action_at.map(ts),
                version: r.version,
            },
        }
    }
}

/// Each subscription with its items as one JSON object, over a FROM named `subscriptions`.
fn subscription_object(conn: &Conn) -> String {
    let items = super::json_array_of(
        conn,
        &super::json_object(conn, &ITEM_COLUMNS, &[]),
        "subscription_items",
        "subscription_items.subscription_id = subscriptions.id",
        "position",
    );
    let columns: Vec<&str> = SUB_COLUMNS.split(',').map(str::trim).collect();
    super::json_object(conn, &columns, &[("items", &items)])
}

/// `SELECT <each subscription, as one JSON object> FROM subscriptions`, for `conn`.
fn select_subscriptions(conn: &Conn) -> String {
    format!("SELECT {} FROM subscriptions", super::json_text(conn, &subscription_object(conn)))
}

/// `SELECT <all the subscriptions as one JSON array, in order>`, to which the caller adds a FROM
/// named `subscriptions`: for reads of many (see [`super::JsonRows`]).
fn select_subscription_array(conn: &Conn, order: Option<&str>) -> String {
    super::select_json_rows(conn, &subscription_object(conn), order)
}

async fn fetch_subscriptions(conn: &mut Conn, sql: &Sql) -> Result<Vec<SubscriptionRow>, sqlx::Error> {
    let rows = sql.query_as::<super::JsonRow<SubscriptionRow>>().fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

async fn fetch_subscription_array(conn: &mut Conn, sql: &Sql) -> Result<Vec<(Owner, Subscription)>, sqlx::Error> {
    let super::JsonRows(rows) = sql.query_as::<super::JsonRows<SubscriptionRow>>().fetch_one(&mut *conn).await?;
    Ok(with_owners(rows))
}

fn with_owners(rows: Vec<SubscriptionRow>) -> Vec<(Owner, Subscription)> {
    rows.into_iter().map(|r| (r.owner(), r.into_subscription())).collect()
}

pub async fn get(conn: &mut Conn, owner: &Owner, id: &SubscriptionId) -> Result<Option<Subscription>, sqlx::Error> {
    let mut sql = Sql::for_conn(conn, &select_subscriptions(conn));
    sql.push(" WHERE id = ").bind(Arg::Text(id.to_string()));
    sql.push(" AND merchant_id = ").bind(Arg::Text(owner.merchant_id.to_string()));
    sql.push(" AND livemode = ").bind(Arg::Int(owner.mode.as_flag()));
    Ok(fetch_subscriptions(conn, &sql).await?.pop().map(SubscriptionRow::into_subscription))
}

/// A subscription by id alone, with its owner: for the engine.
pub async fn get_any(conn: &mut Conn, id: &SubscriptionId) -> Result<Option<(Owner, Subscription)>, sqlx::Error> {
    let mut sql = Sql::for_conn(conn, &select_subscriptions(conn));
    sql.push(" WHERE id = ").bind(Arg::Text(id.to_string()));
    Ok(with_owners(fetch_subscriptions(conn, &sql).await?).pop())
}

/// Subscriptions by id alone, with their owners (those that exist, in no set order).
pub async fn get_many_any(conn: &mut Conn, ids: &[&SubscriptionId]) -> Result<Vec<(Owner, Subscription)>, sqlx::Error> {
    let head = format!("{} FROM subscriptions WHERE id IN ", select_subscription_array(conn, None));
    Ok(with_owners(super::select_json_in(conn, &head, ids.iter().map(|id| id.as_str())).await?))
}

/// The stored version of each subscription of `ids` that exists: a cheap way to tell whether a
/// copy in memory is still what is stored.
pub async fn versions(
    conn: &mut Conn,
    ids: &[&SubscriptionId],
) -> Result<std::collections::HashMap<SubscriptionId, i64>, sqlx::Error> {
    #[derive(serde::Deserialize)]
    struct Version {
        id: String,
        version: i64,
    }
    let object = super::json_object(conn, &["id", "version"], &[]);
    let head = format!("{} FROM subscriptions WHERE id IN ", super::select_json_rows(conn, &object, None));
    let rows = super::select_json_in::<Version>(conn, &head, ids.iter().map(|id| id.as_str())).await?;
    Ok(rows.into_iter().map(|v| (SubscriptionId::from_trusted(v.id), v.version)).collect())
}

/// Subscriptions on the system clock with work due at or before `now`, earliest first.
pub async fn due(conn: &mut Conn, now: Timestamp, limit: i64) -> Result<Vec<(Owner, Subscription)>, sqlx::Error> {
    let mut sql = Sql::for_conn(conn, &select_subscription_array(conn, Some("next_action_at")));
    sql.push(" FROM (SELECT * FROM subscriptions WHERE test_clock IS NULL AND next_action_at <= ");
    sql.bind(Arg::Int(now.micros()));
    sql.push(" ORDER BY next_action_at LIMIT ").bind(Arg::Int(limit)).push(") AS subscriptions");
    fetch_subscription_array(conn, &sql).await
}

/// The earliest due time on test clock `clock` at or before `to`, over subscriptions and invoices.
pub async fn next_due_on_clock(
    conn: &mut Conn,
    clock: &TestClockId,
    to: Timestamp,
) -> Result<Option<Timestamp>, sqlx::Error> {
    let sub = sqlx::query_scalar::<_, Option<i64>>(
        "SELECT MIN(next_action_at) FROM subscriptions WHERE test_clock = $1 AND next_action_at <= $2",
    )
    .bind(clock.as_str())
    .bind(to.micros())
    .fetch_one(&mut *conn)
    .await?;
    // An open invoice is due by its next attempt or by its collection deadline, whichever first.
    let (attempt, deadline) = sqlx::query_as::<_, (Option<i64>, Option<i64>)>(
        "SELECT MIN(next_payment_attempt), MIN(collection_deadline) FROM invoices
         WHERE test_clock = $1 AND status = 'open'",
    )
    .bind(clock.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let invoice = [attempt, deadline].into_iter().flatten().filter(|t| *t <= to.micros()).min();
    Ok([sub, invoice].into_iter().flatten().min().map(Timestamp::from_micros))
}

/// Subscriptions on test clock `clock` due exactly at or before `at`.
pub async fn due_on_clock(
    conn: &mut Conn,
    clock: &TestClockId,
    at: Timestamp,
) -> Result<Vec<(Owner, Subscription)>, sqlx::Error> {
    let mut sql = Sql::for_conn(conn, &select_subscription_array(conn, Some("next_action_at, id")));
    sql.push(" FROM subscriptions WHERE test_clock = ").bind(Arg::Text(clock.to_string()));
    sql.push(" AND next_action_at <= ").bind(Arg::Int(at.micros()));
    fetch_subscription_array(conn, &sql).await
}

pub async fn lookup_key_taken(conn: &mut Conn, owner: &Owner, key: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM subscriptions WHERE merchant_id = $1 AND livemode = $2 AND lookup_key = $3",
    )
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(key)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

#[derive(Debug, Default)]
pub struct SubscriptionFilter {
    pub customer_id: Option<String>,
    pub status: Option<String>,
    pub plan_id: Option<String>,
    pub lookup_key: Option<String>,
}

pub async fn list(
    conn: &mut Conn,
    owner: &Owner,
    filter: &SubscriptionFilter,
    cursor: &Cursor,
) -> Result<Page<Subscription>, sqlx::Error> {
    let mut sql = Sql::for_conn(conn, &select_subscriptions(conn));
    sql.push(" WHERE merchant_id = ");
    sql.bind(Arg::Text(owner.merchant_id.to_string())).push(" AND livemode = ").bind(Arg::Int(owner.mode.as_flag()));
    if let Some(c) = &filter.customer_id {
        sql.push(" AND customer_id = ").bind(Arg::Text(c.clone()));
    }
    if let Some(s) = &filter.status {
        sql.push(" AND status = ").bind(Arg::Text(s.clone()));
    }
    if let Some(p) = &filter.plan_id {
        sql.push(" AND plan_id = ").bind(Arg::Text(p.clone()));
    }
    if let Some(k) = &filter.lookup_key {
        sql.push(" AND lookup_key = ").bind(Arg::Text(k.clone()));
    }
    cursor.finish(&mut sql, "id");
    let page = cursor.page(fetch_subscriptions(conn, &sql).await?);
    Ok(Page {
        items: page.items.into_iter().map(SubscriptionRow::into_subscription).collect(),
        has_more: page.has_more,
    })
}

// -------------------------------------------------------------------------------------------------
// Invoices
// -------------------------------------------------------------------------------------------------

/// The next invoice number for a merchant and mode: `FLEX-000001` and up, without gaps. The
/// counter row is locked until the caller's transaction ends, so numbers follow commit order.
pub async fn next_invoice_number(conn: &mut Conn, owner: &Owner) -> Result<String, sqlx::Error> {
    Ok(next_invoice_numbers(conn, owner, 1).await?.remove(0))
}

/// The next `count` invoice numbers of a merchant and mode, in order, taken with one statement.
pub async fn next_invoice_numbers(conn: &mut Conn, owner: &Owner, count: usize) -> Result<Vec<String>, sqlx::Error> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let k = count as i64;
    let last = sqlx::query_scalar::<_, i64>(
        "INSERT INTO invoice_counters (merchant_id, livemode, last_number) VALUES ($1, $2, $3)
         ON CONFLICT (merchant_id, livemode) DO UPDATE SET last_number = invoice_counters.last_number + $3
         RETURNING last_number",
    )
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(k)
    .fetch_one(&mut *conn)
    .await?;
    Ok((last - k + 1..=last).map(|n| format!("FLEX-{n:06}")).collect())
}

pub async fn insert_invoice(conn: &mut Conn, owner: &Owner, i: &Invoice) -> Result<(), sqlx::Error> {
    insert_invoices(conn, &[(owner, i)]).await
}

const INVOICE_INSERT_COLUMNS: [&str; 28] = [
    "id",
    "merchant_id",
    "livemode",
    "number",
    "customer_id",
    "subscription_id",
    "status",
    "amount_due",
    "amount_paid",
    "amount_remaining",
    "currency",
    "period_start",
    "period_end",
    "due_date",
    "attempt_count",
    "next_payment_attempt",
    "payment_intent_id",
    "billing_reason",
    "created_at",
    "updated_at",
    "collection_method",
    "charging",
    "first_failed_at",
    "last_decline_code",
    "payment_method_id",
    "test_clock",
    "paid_at",
    "collection_deadline",
];

const LINE_INSERT_COLUMNS: [&str; 11] = [
    "id",
    "invoice_id",
    "position",
    "description",
    "price_id",
    "quantity",
    "amount",
    "period_start",
    "period_end",
    "proration",
    "kind",
];

/// Writes new invoices with their lines: one statement per table (per chunk of rows).
pub async fn insert_invoices(conn: &mut Conn, invoices: &[(&Owner, &Invoice)]) -> Result<(), sqlx::Error> {
    if invoices.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<Arg>> = invoices
        .iter()
        .map(|(owner, i)| {
            vec![
                Arg::text(i.invoice_id.as_str()),
                Arg::text(owner.merchant_id.as_str()),
                Arg::Int(owner.mode.as_flag()),
                Arg::text(&i.number),
                Arg::text(i.customer.as_str()),
                Arg::opt_text(i.subscription.as_ref().map(|s| s.as_str())),
                Arg::text(i.status.as_str()),
                Arg::Int(i.amount_due),
                Arg::Int(i.amount_paid),
                Arg::Int(i.amount_remaining),
                Arg::text(i.currency.code()),
                Arg::Int(i.period_start.micros()),
                Arg::Int(i.period_end.micros()),
                Arg::OptInt(opt_micros(i.due_date)),
                Arg::Int(i.attempt_count),
                Arg::OptInt(opt_micros(i.next_payment_attempt)),
                Arg::opt_text(i.payment_intent.as_ref().map(|p| p.as_str())),
                Arg::text(i.billing_reason.as_str()),
                Arg::Int(i.created_at.micros()),
                Arg::Int(i.created_at.micros()),
                Arg::text(i.collection_method.as_str()),
                Arg::Int(i64::from(i.collection.charging)),
                Arg::OptInt(opt_micros(i.collection.first_failed_at)),
                Arg::opt_text(i.last_decline_code.as_deref()),
                Arg::opt_text(i.payment_method.as_ref().map(|p| p.as_str())),
                Arg::opt_text(i.collection.test_clock.as_ref().map(|c| c.as_str())),
                Arg::OptInt(opt_micros(i.paid_at)),
                Arg::OptInt(opt_micros(i.collection.deadline)),
            ]
        })
        .collect();
    super::insert_rows(conn, "invoices", &INVOICE_INSERT_COLUMNS, rows, "").await?;
    let lines: Vec<Vec<Arg>> = invoices
        .iter()
        .flat_map(|(_, i)| {
            i.lines.iter().enumerate().map(move |(position, line)| {
                vec![
                    Arg::Text(format!("{}_{position}", i.invoice_id)),
                    Arg::text(i.invoice_id.as_str()),
                    Arg::Int(position as i64),
                    Arg::text(&line.description),
                    Arg::opt_text(line.price.as_ref().map(|p| p.as_str())),
                    Arg::Int(line.quantity),
                    Arg::Int(line.amount),
                    Arg::Int(line.period_start.micros()),
                    Arg::Int(line.period_end.micros()),
                    Arg::Int(i64::from(line.proration)),
                    Arg::text(line.kind.as_str()),
                ]
            })
        })
        .collect();
    super::insert_rows(conn, "invoice_lines", &LINE_INSERT_COLUMNS, lines, "").await
}

/// Writes an invoice's collection state if it still stands as `expected` (status, attempt count
/// and whether an attempt is in flight) describes; returns whether it did.
pub async fn save_invoice(conn: &mut Conn, i: &Invoice, expected: &InvoiceVersion) -> Result<bool, sqlx::Error> {
    Ok(save_invoices(conn, &[(i, expected)]).await?[0])
}

/// [`save_invoice`] for many invoices in one statement (distinct ids): whether each was written.
pub async fn save_invoices(
    conn: &mut Conn,
    invoices: &[(&Invoice, &InvoiceVersion)],
) -> Result<Vec<bool>, sqlx::Error> {
    if invoices.is_empty() {
        return Ok(Vec::new());
    }
    let first = first_of_each(invoices.iter().map(|(i, _)| i.invoice_id.as_str()));
    let rows: Vec<Vec<Arg>> = invoices
        .iter()
        .zip(&first)
        .filter(|(_, first)| **first)
        .map(|((i, expected), _)| {
            vec![
                Arg::text(i.invoice_id.as_str()),
                Arg::text(expected.status.as_str()),
                Arg::Int(expected.attempt_count),
                Arg::Int(i64::from(expected.charging)),
                Arg::text(i.status.as_str()),
                Arg::Int(i.amount_paid),
                Arg::Int(i.amount_remaining),
                Arg::Int(i.attempt_count),
                Arg::OptInt(opt_micros(i.next_payment_attempt)),
                Arg::opt_text(i.payment_intent.as_ref().map(|p| p.as_str())),
                Arg::Int(i64::from(i.collection.charging)),
                Arg::OptInt(opt_micros(i.collection.first_failed_at)),
                Arg::opt_text(i.last_decline_code.as_deref()),
                Arg::OptInt(opt_micros(i.paid_at)),
                Arg::opt_text(i.payment_method.as_ref().map(|p| p.as_str())),
                Arg::OptInt(opt_micros(i.due_date)),
                Arg::OptInt(opt_micros(i.collection.deadline)),
                Arg::Int(expected.now.micros()),
            ]
        })
        .collect();
    let changed: std::collections::HashSet<String> = super::update_rows(
        conn,
        "invoices",
        "id",
        &["status", "attempt_count", "charging"],
        &[
            "status",
            "amount_paid",
            "amount_remaining",
            "attempt_count",
            "next_payment_attempt",
            "payment_intent_id",
            "charging",
            "first_failed_at",
            "last_decline_code",
            "paid_at",
            "payment_method_id",
            "due_date",
            "collection_deadline",
            "updated_at",
        ],
        "",
        rows,
    )
    .await?
    .into_iter()
    .collect();
    Ok(invoices.iter().zip(first).map(|((i, _), first)| first && changed.contains(i.invoice_id.as_str())).collect())
}

/// How an invoice stood when it was read; [`save_invoice`] writes only over that.
#[derive(Clone, Debug)]
pub struct InvoiceVersion {
    pub status: InvoiceStatus,
    pub attempt_count: i64,
    pub charging: bool,
    pub now: Timestamp,
}

impl InvoiceVersion {
    pub fn of(i: &Invoice, now: Timestamp) -> InvoiceVersion {
        InvoiceVersion { status: i.status, attempt_count: i.attempt_count, charging: i.collection.charging, now }
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
struct InvoiceRow {
    id: String,
    merchant_id: String,
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
    collection_method: String,
    charging: i64,
    first_failed_at: Option<i64>,
    last_decline_code: Option<String>,
    payment_method_id: Option<String>,
    test_clock: Option<String>,
    paid_at: Option<i64>,
    collection_deadline: Option<i64>,
}

const INVOICE_COLUMNS: &str = "id, merchant_id, livemode, number, customer_id, subscription_id, status, amount_due,
    amount_paid, amount_remaining, currency, period_start, period_end, due_date, attempt_count,
    next_payment_attempt, payment_intent_id, billing_reason, created_at, collection_method, charging,
    first_failed_at, last_decline_code, payment_method_id, test_clock, paid_at, collection_deadline";

#[derive(Clone, Debug, sqlx::FromRow)]
struct LineRow {
    invoice_id: String,
    description: String,
    price_id: Option<String>,
    quantity: i64,
    amount: i64,
    period_start: i64,
    period_end: i64,
    proration: i64,
    kind: String,
}

impl InvoiceRow {
    fn owner(&self) -> Owner {
        Owner { merchant_id: MerchantId::from_trusted(self.merchant_id.clone()), mode: Mode::from_flag(self.livemode) }
    }

    fn into_invoice(self, lines: Vec<LineRow>, public_url: &str) -> Invoice {
        let ts = Timestamp::from_micros;
        let r = self;
        let status = InvoiceStatus::from_wire(&r.status).unwrap_or(InvoiceStatus::Open);
        Invoice {
            hosted_invoice_url: Some(format!("{}/pay/i/{}", public_url.trim_end_matches('/'), r.id)),
            invoice_id: InvoiceId::from_trusted(r.id),
            number: r.number,
            customer: CustomerId::from_trusted(r.customer_id),
            subscription: r.subscription_id.map(SubscriptionId::from_trusted),
            status,
            amount_due: r.amount_due,
            amount_paid: r.amount_paid,
            amount_remaining: r.amount_remaining,
            currency: Currency::parse(&r.currency).unwrap_or(Currency::USD),
            period_start: ts(r.period_start),
            period_end: ts(r.period_end),
            due_date: r.due_date.map(ts),
            attempt_count: r.attempt_count,
            next_payment_attempt: if r.charging != 0 { None } else { r.next_payment_attempt.map(ts) },
            lines: lines
                .into_iter()
                .map(|l| InvoiceLine {
                    kind: LineKind::from_wire(&l.kind).unwrap_or(LineKind::Item),
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
            collection_method: CollectionMethod::from_wire(&r.collection_method)
                .unwrap_or(CollectionMethod::ChargeAutomatically),
            payment_method: r.payment_method_id.map(PaymentMethodId::from_trusted),
            last_decline_code: r.last_decline_code,
            paid_at: r.paid_at.map(ts),
            created_at: ts(r.created_at),
            test_mode: Mode::from_flag(r.livemode).is_test(),
            collection: CollectionState {
                charging: r.charging != 0,
                first_failed_at: r.first_failed_at.map(ts),
                test_clock: r.test_clock.map(TestClockId::from_trusted),
                deadline: r.collection_deadline.map(ts),
            },
        }
    }
}

/// The lease of an attempt in flight, which [`InvoiceRow::into_invoice`] hides from the API.
pub async fn lease_of(conn: &mut Conn, id: &InvoiceId) -> Result<Option<Timestamp>, sqlx::Error> {
    let v = sqlx::query_scalar::<_, Option<i64>>("SELECT next_payment_attempt FROM invoices WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(v.flatten().map(Timestamp::from_micros))
}

async fn with_lines(
    conn: &mut Conn,
    rows: Vec<InvoiceRow>,
    public_url: &str,
) -> Result<Vec<(Owner, Invoice)>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::for_conn(
        conn,
        "SELECT invoice_id, description, price_id, quantity, amount, period_start, period_end, proration, kind
         FROM invoice_lines WHERE invoice_id IN (",
    );
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(Arg::Text(r.id.clone()));
    }
    sql.push(") ORDER BY invoice_id, position");
    let mut lines: std::collections::HashMap<String, Vec<LineRow>> = std::collections::HashMap::new();
    for line in sql.query_as::<LineRow>().fetch_all(&mut *conn).await? {
        lines.entry(line.invoice_id.clone()).or_default().push(line);
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let mine = lines.remove(&r.id).unwrap_or_default();
            (r.owner(), r.into_invoice(mine, public_url))
        })
        .collect())
}

pub async fn get_invoice(
    conn: &mut Conn,
    owner: &Owner,
    id: &InvoiceId,
    public_url: &str,
) -> Result<Option<Invoice>, sqlx::Error> {
    let row = sqlx::query_as::<_, InvoiceRow>(&format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices WHERE id = $1 AND merchant_id = $2 AND livemode = $3"
    ))
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(with_lines(conn, row.into_iter().collect(), public_url).await?.pop().map(|(_, i)| i))
}

/// An invoice by id alone, with its owner: for the engine and the hosted invoice page.
pub async fn get_invoice_any(
    conn: &mut Conn,
    id: &InvoiceId,
    public_url: &str,
) -> Result<Option<(Owner, Invoice)>, sqlx::Error> {
    let row = sqlx::query_as::<_, InvoiceRow>(&format!("SELECT {INVOICE_COLUMNS} FROM invoices WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(with_lines(conn, row.into_iter().collect(), public_url).await?.pop())
}

/// Invoices by id alone, with their owners (those that exist, in no set order).
pub async fn get_invoices_any(
    conn: &mut Conn,
    ids: &[&InvoiceId],
    public_url: &str,
) -> Result<Vec<(Owner, Invoice)>, sqlx::Error> {
    let mut out = Vec::new();
    for chunk in ids.chunks(super::MAX_IN_LIST) {
        let mut sql = Sql::for_conn(conn, &format!("SELECT {INVOICE_COLUMNS} FROM invoices WHERE id IN "));
        sql.in_list(chunk.iter().map(|id| id.as_str()));
        let rows = sql.query_as::<InvoiceRow>().fetch_all(&mut *conn).await?;
        out.extend(with_lines(conn, rows, public_url).await?);
    }
    Ok(out)
}

/// What a charge needs of an invoice: the amount, the currency and the card.
#[derive(Clone, Debug)]
pub struct ChargeFacts {
    pub amount_due: i64,
    pub currency: Currency,
    pub payment_method: Option<PaymentMethodId>,
}

impl ChargeFacts {
    pub fn of(invoice: &Invoice) -> ChargeFacts {
        ChargeFacts {
            amount_due: invoice.amount_due,
            currency: invoice.currency,
            payment_method: invoice.payment_method.clone(),
        }
    }
}

/// [`ChargeFacts`] of invoices by id (those that exist), in one read.
pub async fn charge_facts(
    conn: &mut Conn,
    ids: &[&InvoiceId],
) -> Result<std::collections::HashMap<InvoiceId, ChargeFacts>, sqlx::Error> {
    let head = "SELECT id, amount_due, currency, payment_method_id FROM invoices WHERE id IN ";
    let rows =
        super::select_in::<(String, i64, String, Option<String>)>(conn, head, ids.iter().map(|id| id.as_str())).await?;
    Ok(rows
        .into_iter()
        .map(|(id, amount_due, currency, pm)| {
            let facts = ChargeFacts {
                amount_due,
                currency: Currency::parse(&currency).unwrap_or(Currency::USD),
                payment_method: pm.map(PaymentMethodId::from_trusted),
            };
            (InvoiceId::from_trusted(id), facts)
        })
        .collect())
}

/// Which of an open invoice's due times a query looks at.
#[derive(Clone, Copy)]
enum DueBy {
    /// `next_payment_attempt`: the next attempt, or the lease of one in flight.
    Attempt,
    /// `collection_deadline`: overdue, or dunning's last day after a hard decline.
    Deadline,
}

impl DueBy {
    fn column(self) -> &'static str {
        match self {
            DueBy::Attempt => "next_payment_attempt",
            DueBy::Deadline => "collection_deadline",
        }
    }
}

/// Open invoices due by `by` at or before `at`: on the system clock (at most `limit`, oldest first),
/// or all of those on test clock `clock`.
async fn open_invoices_due(
    conn: &mut Conn,
    by: DueBy,
    clock: Option<&TestClockId>,
    at: Timestamp,
    limit: i64,
    public_url: &str,
) -> Result<Vec<(Owner, Invoice)>, sqlx::Error> {
    let column = by.column();
    let rows = match clock {
        None => {
            sqlx::query_as::<_, InvoiceRow>(&format!(
                "SELECT {INVOICE_COLUMNS} FROM invoices WHERE test_clock IS NULL AND {column} <= $1
                    AND status = 'open' ORDER BY {column} LIMIT $2"
            ))
            .bind(at.micros())
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?
        }
        Some(clock) => {
            sqlx::query_as::<_, InvoiceRow>(&format!(
                "SELECT {INVOICE_COLUMNS} FROM invoices WHERE test_clock = $1 AND {column} <= $2
                    AND status = 'open' ORDER BY {column}, id"
            ))
            .bind(clock.as_str())
            .bind(at.micros())
            .fetch_all(&mut *conn)
            .await?
        }
    };
    with_lines(conn, rows, public_url).await
}

/// Open invoices on the system clock whose next attempt (or expired lease) is due.
pub async fn due_invoices(
    conn: &mut Conn,
    now: Timestamp,
    limit: i64,
    public_url: &str,
) -> Result<Vec<(Owner, Invoice)>, sqlx::Error> {
    open_invoices_due(conn, DueBy::Attempt, None, now, limit, public_url).await
}

pub async fn due_invoices_on_clock(
    conn: &mut Conn,
    clock: &TestClockId,
    at: Timestamp,
    public_url: &str,
) -> Result<Vec<(Owner, Invoice)>, sqlx::Error> {
    open_invoices_due(conn, DueBy::Attempt, Some(clock), at, 0, public_url).await
}

/// Open invoices on the system clock whose collection deadline has come (see
/// `CollectionState::deadline`).
pub async fn past_deadline(
    conn: &mut Conn,
    now: Timestamp,
    limit: i64,
    public_url: &str,
) -> Result<Vec<(Owner, Invoice)>, sqlx::Error> {
    open_invoices_due(conn, DueBy::Deadline, None, now, limit, public_url).await
}

pub async fn past_deadline_on_clock(
    conn: &mut Conn,
    clock: &TestClockId,
    at: Timestamp,
    public_url: &str,
) -> Result<Vec<(Owner, Invoice)>, sqlx::Error> {
    open_invoices_due(conn, DueBy::Deadline, Some(clock), at, 0, public_url).await
}

#[derive(Debug, Default)]
pub struct InvoiceFilter {
    pub customer: Option<String>,
    pub subscription: Option<String>,
    pub status: Option<String>,
}

pub async fn list_invoices(
    conn: &mut Conn,
    owner: &Owner,
    filter: &InvoiceFilter,
    cursor: &Cursor,
    public_url: &str,
) -> Result<Page<Invoice>, sqlx::Error> {
    let mut sql = Sql::new(&format!("SELECT {INVOICE_COLUMNS} FROM invoices WHERE merchant_id = "));
    sql.bind(Arg::Text(owner.merchant_id.to_string())).push(" AND livemode = ").bind(Arg::Int(owner.mode.as_flag()));
    if let Some(c) = &filter.customer {
        sql.push(" AND customer_id = ").bind(Arg::Text(c.clone()));
    }
    if let Some(s) = &filter.subscription {
        sql.push(" AND subscription_id = ").bind(Arg::Text(s.clone()));
    }
    if let Some(s) = &filter.status {
        sql.push(" AND status = ").bind(Arg::Text(s.clone()));
    }
    cursor.finish(&mut sql, "id");
    let rows = sql.query_as::<InvoiceRow>().fetch_all(&mut *conn).await?;
    let page = cursor.page(rows);
    let items = with_lines(conn, page.items, public_url).await?.into_iter().map(|(_, i)| i).collect();
    Ok(Page { items, has_more: page.has_more })
}

/// What a subscription's invoices billed for prices (not commitment lines) in periods starting in
/// `[from, to)`, leaving out void invoices: the spend a commitment window counts.
pub async fn billed_in_window(
    conn: &mut Conn,
    subscription: &SubscriptionId,
    from: Timestamp,
    to: Timestamp,
) -> Result<i64, sqlx::Error> {
    let v = sqlx::query_scalar::<_, Option<i64>>(
        "SELECT CAST(SUM(l.amount) AS BIGINT) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
         WHERE i.subscription_id = $1 AND i.status <> 'void' AND l.kind = 'item'
            AND l.period_start >= $2 AND l.period_start < $3 AND l.period_end > l.period_start",
    )
    .bind(subscription.as_str())
    .bind(from.micros())
    .bind(to.micros())
    .fetch_one(conn)
    .await?;
    Ok(v.unwrap_or(0))
}

/// The open invoices of a subscription (to void when it ends early).
pub async fn open_invoices_of(conn: &mut Conn, subscription: &SubscriptionId) -> Result<Vec<InvoiceId>, sqlx::Error> {
    let ids = sqlx::query_scalar::<_, String>(
        "SELECT id FROM invoices WHERE subscription_id = $1 AND status IN ('open', 'draft') ORDER BY id",
    )
    .bind(subscription.as_str())
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().map(InvoiceId::from_trusted).collect())
}
