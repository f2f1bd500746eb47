//! Checkout sessions. A session's line items are an immutable snapshot of its prices, stored as a
//! JSON document in the session's own row, so one read gives the whole session.

use super::{flag, Arg, Conn, Cursor, Page, Sql};
use crate::domain::checkout_session::{
    CaptureMethod, CheckoutSession, Defaults, LineItem, PaymentStatus, SessionMode, SessionStatus, SubscriptionData,
    TotalDetails,
};
use crate::domain::ids::{
    CheckoutSessionId, ConsultationId, CustomerId, InvoiceId, LineItemId, MerchantId, PaymentAttemptId,
    PaymentIntentId, PriceId, ProductId, SubscriptionId,
};
use crate::domain::metadata::Metadata;
use crate::domain::money::Currency;
use crate::domain::price::{Interval, Recurring};
use crate::domain::product::VisitType;
use crate::domain::timestamp::Timestamp;
use crate::domain::{Mode, Owner};

#[derive(Clone, Debug, sqlx::FromRow)]
struct SessionRow {
    id: String,
    merchant_id: String,
    livemode: i64,
    mode: String,
    status: String,
    currency: String,
    amount_subtotal: i64,
    amount_total: i64,
    success_url: String,
    cancel_url: String,
    customer_id: Option<String>,
    customer_email: Option<String>,
    defaults: String,
    client_reference_id: Option<String>,
    metadata: Option<String>,
    allow_promotion_codes: i64,
    shipping_address_collection: i64,
    capture_method: String,
    setup_future_use: Option<String>,
    subscription_data: Option<String>,
    hsa_fsa_eligible: i64,
    lmn_required: i64,
    visit_type: Option<String>,
    payment_intent_id: Option<String>,
    setup_intent: Option<String>,
    subscription_id: Option<String>,
    invoice_id: Option<String>,
    shipping_details: Option<String>,
    decline_count: i64,
    expires_at: i64,
    created_at: i64,
    completed_at: Option<i64>,
    line_items: String,
}

/// A stored session with who owns it (the page reads sessions without an API key).
#[derive(Clone, Debug)]
pub struct OwnedSession {
    pub owner: Owner,
    pub session: CheckoutSession,
    pub items: Vec<LineItem>,
}

/// How a line item is kept inside its session's row.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredLineItem {
    id: String,
    price: String,
    product: String,
    name: String,
    description: Option<String>,
    quantity: i64,
    unit_amount: i64,
    currency: String,
    amount_subtotal: i64,
    amount_total: i64,
    interval: Option<String>,
    interval_count: Option<u32>,
    trial_period_days: Option<u32>,
}

impl From<&LineItem> for StoredLineItem {
    fn from(i: &LineItem) -> StoredLineItem {
        StoredLineItem {
            id: i.line_item_id.to_string(),
            price: i.price.to_string(),
            product: i.product.to_string(),
            name: i.description.clone(),
            description: i.product_description.clone(),
            quantity: i.quantity,
            unit_amount: i.unit_amount,
            currency: i.currency.code(),
            amount_subtotal: i.amount_subtotal,
            amount_total: i.amount_total,
            interval: i.recurring.map(|r| r.interval.as_str().to_string()),
            interval_count: i.recurring.map(|r| r.interval_count),
            trial_period_days: i.recurring.and_then(|r| r.trial_period_days),
        }
    }
}

impl From<StoredLineItem> for LineItem {
    fn from(i: StoredLineItem) -> LineItem {
        LineItem {
            line_item_id: LineItemId::from_trusted(i.id),
            price: PriceId::from_trusted(i.price),
            product: ProductId::from_trusted(i.product),
            description: i.name,
            product_description: i.description,
            quantity: i.quantity,
            unit_amount: i.unit_amount,
            currency: Currency::parse(&i.currency).unwrap_or(Currency::USD),
            amount_subtotal: i.amount_subtotal,
            amount_total: i.amount_total,
            recurring: i.interval.as_deref().and_then(Interval::from_wire).map(|interval| Recurring {
                interval,
                interval_count: i.interval_count.unwrap_or(1).max(1),
                trial_period_days: i.trial_period_days,
            }),
        }
    }
}

fn items_json(items: &[LineItem]) -> String {
    let stored: Vec<StoredLineItem> = items.iter().map(StoredLineItem::from).collect();
    serde_json::to_string(&stored).unwrap_or_else(|_| "[]".into())
}

fn items_from(raw: &str) -> Vec<LineItem> {
    serde_json::from_str::<Vec<StoredLineItem>>(raw)
        .map(|items| items.into_iter().map(LineItem::from).collect())
        .unwrap_or_default()
}

impl From<SessionRow> for OwnedSession {
    fn from(r: SessionRow) -> OwnedSession {
        let mode = Mode::from_flag(r.livemode);
        let session = CheckoutSession {
            allow_promotion_codes: r.allow_promotion_codes != 0,
            amount_total: r.amount_total,
            amount_subtotal: r.amount_subtotal,
            cancel_url: r.cancel_url,
            capture_method: CaptureMethod::from_wire(&r.capture_method).unwrap_or(CaptureMethod::Automatic),
            checkout_session_id: CheckoutSessionId::from_trusted(r.id),
            created_at: Timestamp::from_micros(r.created_at),
            customer: r.customer_id.map(CustomerId::from_trusted),
            customer_email: r.customer_email,
            defaults: serde_json::from_str::<Defaults>(&r.defaults).unwrap_or_default(),
            expires_at: Timestamp::from_micros(r.expires_at),
            invoice: r.invoice_id.map(InvoiceId::from_trusted),
            hsa_fsa_eligible: r.hsa_fsa_eligible != 0,
            letter_of_medical_necessity_required: r.lmn_required != 0,
            metadata: Metadata::from_stored(r.metadata.as_deref()),
            mode: SessionMode::from_wire(&r.mode).unwrap_or(SessionMode::Payment),
            multiple_subscriptions: false,
            payment_intent_id: r.payment_intent_id.map(PaymentIntentId::from_trusted),
            redirect_url: String::new(),
            setup_intent: r.setup_intent,
            shipping_options: None,
            shipping_address_collection: r.shipping_address_collection != 0,
            shipping_details: r.shipping_details.and_then(|s| serde_json::from_str(&s).ok()),
            status: SessionStatus::from_wire(&r.status).unwrap_or(SessionStatus::Open),
            success_url: r.success_url,
            subscription: r.subscription_id.map(SubscriptionId::from_trusted),
            tax_rate: None,
            test_mode: mode.is_test(),
            total_details: TotalDetails { amount_discount: 0, amount_tax: None, amount_shipping: None },
            visit_type: r.visit_type.as_deref().and_then(VisitType::from_wire),
            payment_status: PaymentStatus::Unpaid,
            currency: Currency::parse(&r.currency).unwrap_or(Currency::USD),
            client_reference_id: r.client_reference_id,
            completed_at: r.completed_at.map(Timestamp::from_micros),
            setup_future_use: r.setup_future_use,
            subscription_data: r
                .subscription_data
                .as_deref()
                .and_then(|s| serde_json::from_str::<SubscriptionData>(s).ok()),
            decline_count: r.decline_count,
        };
        let mut session = session;
        session.payment_status = match (session.status, session.amount_total) {
            (SessionStatus::Complete, 0) => PaymentStatus::NoPaymentRequired,
            (SessionStatus::Complete, _) => PaymentStatus::Paid,
            _ => PaymentStatus::Unpaid,
        };
        OwnedSession {
            owner: Owner { merchant_id: MerchantId::from_trusted(r.merchant_id), mode },
            session,
            items: items_from(&r.line_items),
        }
    }
}

const COLUMNS: &str = "id, merchant_id, livemode, mode, status, currency, amount_subtotal, amount_total, \
    success_url, cancel_url, customer_id, customer_email, defaults, client_reference_id, metadata, \
    allow_promotion_codes, shipping_address_collection, capture_method, setup_future_use, \
    subscription_data, hsa_fsa_eligible, lmn_required, visit_type, payment_intent_id, setup_intent, \
    subscription_id, invoice_id, shipping_details, decline_count, expires_at, created_at, completed_at, line_items";

pub async fn insert(
    conn: &mut Conn,
    owner: &Owner,
    s: &CheckoutSession,
    items: &[LineItem],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO checkout_sessions (id, merchant_id, livemode, mode, status, currency, amount_subtotal,
            amount_total, success_url, cancel_url, customer_id, customer_email, defaults,
            client_reference_id, metadata, allow_promotion_codes, shipping_address_collection,
            capture_method, setup_future_use, subscription_data, hsa_fsa_eligible, lmn_required,
            visit_type, expires_at, created_at, line_items)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
            $20, $21, $22, $23, $24, $25, $26)",
    )
    .bind(s.checkout_session_id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(s.mode.as_str())
    .bind(s.status.as_str())
    .bind(s.currency.code())
    .bind(s.amount_subtotal)
    .bind(s.amount_total)
    .bind(&s.success_url)
    .bind(&s.cancel_url)
    .bind(s.customer.as_ref().map(|c| c.as_str()))
    .bind(s.customer_email.as_deref())
    .bind(serde_json::to_string(&s.defaults).unwrap_or_else(|_| "{}".into()))
    .bind(s.client_reference_id.as_deref())
    .bind(s.metadata.as_ref().map(Metadata::to_json))
    .bind(flag(s.allow_promotion_codes))
    .bind(flag(s.shipping_address_collection))
    .bind(s.capture_method.as_str())
    .bind(s.setup_future_use.as_deref())
    .bind(s.subscription_data.as_ref().and_then(|d| serde_json::to_string(d).ok()))
    .bind(flag(s.hsa_fsa_eligible))
    .bind(flag(s.letter_of_medical_necessity_required))
    .bind(s.visit_type.map(|v| v.as_str()))
    .bind(s.expires_at.micros())
    .bind(s.created_at.micros())
    .bind(items_json(items))
    .execute(conn)
    .await?;
    Ok(())
}

/// A session by id alone, for the hosted page (the id is the capability).
pub async fn get_any(conn: &mut Conn, id: &CheckoutSessionId) -> Result<Option<OwnedSession>, sqlx::Error> {
    let row = sqlx::query_as::<_, SessionRow>(&format!("SELECT {COLUMNS} FROM checkout_sessions WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(OwnedSession::from))
}

pub async fn get(
    conn: &mut Conn,
    owner: &Owner,
    id: &CheckoutSessionId,
) -> Result<Option<CheckoutSession>, sqlx::Error> {
    Ok(get_any(conn, id).await?.filter(|o| &o.owner == owner).map(|o| o.session))
}

pub struct SessionFilter {
    pub status: Option<SessionStatus>,
    pub customer: Option<CustomerId>,
    pub payment_intent: Option<PaymentIntentId>,
}

pub async fn list(
    conn: &mut Conn,
    owner: &Owner,
    filter: &SessionFilter,
    now: Timestamp,
    cursor: &Cursor,
) -> Result<Page<CheckoutSession>, sqlx::Error> {
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM checkout_sessions WHERE merchant_id = "));
    sql.bind(Arg::Text(owner.merchant_id.to_string())).push(" AND livemode = ").bind(Arg::Int(owner.mode.as_flag()));
    // Open sessions past their expiry are expired, whether or not the sweeper has marked them.
    match filter.status {
        Some(SessionStatus::Open) => {
            sql.push(" AND status = 'open' AND expires_at > ").bind(Arg::Int(now.micros()));
        }
        Some(SessionStatus::Expired) => {
            sql.push(" AND (status = 'expired' OR (status = 'open' AND expires_at <= ")
                .bind(Arg::Int(now.micros()))
                .push("))");
        }
        Some(SessionStatus::Complete) => {
            sql.push(" AND status = 'complete'");
        }
        None => {}
    }
    if let Some(c) = &filter.customer {
        sql.push(" AND customer_id = ").bind(Arg::Text(c.to_string()));
    }
    if let Some(pi) = &filter.payment_intent {
        sql.push(" AND payment_intent_id = ").bind(Arg::Text(pi.to_string()));
    }
    cursor.finish(&mut sql, "id");
    let rows = sql.query_as::<SessionRow>().fetch_all(conn).await?;
    let page = cursor.page(rows);
    Ok(Page { items: page.items.into_iter().map(|r| OwnedSession::from(r).session).collect(), has_more: page.has_more })
}

/// The hosted page's view of a session: the session, its merchant's name, and the status of the
/// payment attempt holding it, if any — in one read.
pub struct PageRow {
    pub owned: OwnedSession,
    pub merchant_name: String,
    pub processing_attempt: Option<(PaymentAttemptId, String)>,
}

#[derive(sqlx::FromRow)]
struct PageExtras {
    merchant_name: String,
    processing_attempt_id: Option<String>,
    attempt_status: Option<String>,
}

pub async fn page_row(conn: &mut Conn, id: &CheckoutSessionId) -> Result<Option<PageRow>, sqlx::Error> {
    let columns: Vec<String> = COLUMNS.split(", ").map(|c| format!("s.{}", c.trim())).collect();
    let row = sqlx::query(&format!(
        "SELECT {}, m.name AS merchant_name, s.processing_attempt_id, a.status AS attempt_status
         FROM checkout_sessions s
         JOIN merchants m ON m.id = s.merchant_id
         LEFT JOIN payment_attempts a ON a.id = s.processing_attempt_id
         WHERE s.id = $1",
        columns.join(", ")
    ))
    .bind(id.as_str())
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    use sqlx::FromRow;
    let session = SessionRow::from_row(&row)?;
    let extras = PageExtras::from_row(&row)?;
    Ok(Some(PageRow {
        owned: OwnedSession::from(session),
        merchant_name: extras.merchant_name,
        processing_attempt: extras
            .processing_attempt_id
            .map(|a| (PaymentAttemptId::from_trusted(a), extras.attempt_status.unwrap_or_default())),
    }))
}

/// Takes the right to charge an open, unexpired, unlocked session for `attempt`. Only one attempt
/// can hold it at a time; one older than `stale_before` is presumed dead and may be taken over.
pub async fn claim_for_payment(
    conn: &mut Conn,
    id: &CheckoutSessionId,
    attempt: &PaymentAttemptId,
    now: Timestamp,
    stale_before: Timestamp,
    max_declines: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE checkout_sessions SET processing_attempt_id = $1, processing_since = $2
         WHERE id = $3 AND status = 'open' AND expires_at > $2 AND decline_count < $4
           AND (processing_attempt_id IS NULL OR processing_since < $5)",
    )
    .bind(attempt.as_str())
    .bind(now.micros())
    .bind(id.as_str())
    .bind(max_declines)
    .bind(stale_before.micros())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Lets go of the session after a decline or an abandoned challenge; counts a decline if `declined`.
pub async fn release(
    conn: &mut Conn,
    id: &CheckoutSessionId,
    attempt: &PaymentAttemptId,
    declined: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE checkout_sessions SET processing_attempt_id = NULL, processing_since = NULL,
            decline_count = decline_count + $1
         WHERE id = $2 AND processing_attempt_id = $3",
    )
    .bind(flag(declined))
    .bind(id.as_str())
    .bind(attempt.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Counts a decline that came while the session was not held (a card refused at the setup step).
pub async fn count_decline(conn: &mut Conn, id: &CheckoutSessionId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE checkout_sessions SET decline_count = decline_count + 1 WHERE id = $1")
        .bind(id.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

pub struct Completion<'a> {
    pub customer: &'a CustomerId,
    pub customer_email: Option<&'a str>,
    pub payment_intent: Option<&'a PaymentIntentId>,
    pub subscription: Option<&'a SubscriptionId>,
    pub invoice: Option<&'a InvoiceId>,
    pub consultation: Option<&'a ConsultationId>,
    pub shipping_details: Option<String>,
}

/// Moves the session held by `attempt` to complete. False if the attempt no longer holds it.
pub async fn complete(
    conn: &mut Conn,
    id: &CheckoutSessionId,
    attempt: &PaymentAttemptId,
    c: Completion<'_>,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE checkout_sessions SET status = 'complete', completed_at = $1, customer_id = $2,
            customer_email = COALESCE(customer_email, $3), payment_intent_id = $4, subscription_id = $5,
            invoice_id = $6, consultation_id = $7, shipping_details = $8,
            processing_attempt_id = NULL, processing_since = NULL
         WHERE id = $9 AND status = 'open' AND processing_attempt_id = $10",
    )
    .bind(now.micros())
    .bind(c.customer.as_str())
    .bind(c.customer_email)
    .bind(c.payment_intent.map(|p| p.as_str()))
    .bind(c.subscription.map(|s| s.as_str()))
    .bind(c.invoice.map(|i| i.as_str()))
    .bind(c.consultation.map(|i| i.as_str()))
    .bind(c.shipping_details)
    .bind(id.as_str())
    .bind(attempt.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks an open session expired (by request or because its time passed). False if it was not open
/// or a payment for it is running (one that started before `stale_before` is presumed dead).
pub async fn expire(
    conn: &mut Conn,
    id: &CheckoutSessionId,
    now: Timestamp,
    stale_before: Timestamp,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE checkout_sessions SET status = 'expired', expired_at = $1, processing_attempt_id = NULL,
            processing_since = NULL
         WHERE id = $2 AND status = 'open'
           AND (processing_attempt_id IS NULL OR processing_since < $3)",
    )
    .bind(now.micros())
    .bind(id.as_str())
    .bind(stale_before.micros())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Open sessions whose time has passed and no payment is running for, oldest first.
pub async fn due_for_expiry(
    conn: &mut Conn,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<CheckoutSessionId>, sqlx::Error> {
    let ids = sqlx::query_scalar::<_, String>(
        "SELECT id FROM checkout_sessions WHERE status = 'open' AND expires_at <= $1
            AND processing_attempt_id IS NULL ORDER BY expires_at LIMIT $2",
    )
    .bind(now.micros())
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().map(CheckoutSessionId::from_trusted).collect())
}
