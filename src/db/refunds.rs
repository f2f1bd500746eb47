//! Refunds, and the part of a payment intent a refund reads and holds: what was received, what is
//! already refunded (or held for a refund still waiting on the processor), and the charge to refund.

use super::{Arg, Conn, Cursor, Page, Sql};
use crate::domain::ids::{MerchantId, PaymentIntentId, RefundId};
use crate::domain::metadata::Metadata;
use crate::domain::money::Currency;
use crate::domain::refund::{Refund, RefundReason, RefundStatus};
use crate::domain::timestamp::Timestamp;
use crate::domain::{Mode, Owner};

/// A payment intent as a refund sees it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Refundable {
    pub id: String,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub status: String,
    pub gateway: String,
    pub gateway_ref: Option<String>,
}

pub async fn refundable(
    conn: &mut Conn,
    owner: &Owner,
    id: &PaymentIntentId,
) -> Result<Option<Refundable>, sqlx::Error> {
    sqlx::query_as::<_, Refundable>(
        "SELECT id, amount_received, amount_refunded, currency, status, gateway, gateway_ref
         FROM payment_intents WHERE id = $1 AND merchant_id = $2 AND livemode = $3",
    )
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(conn)
    .await
}

/// Holds `amount` of a payment for a refund, only if that keeps the refunded total within what was
/// received. The check and the write are one statement, so concurrent refunds cannot both pass it.
pub async fn hold(conn: &mut Conn, id: &PaymentIntentId, amount: i64, now: Timestamp) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE payment_intents SET amount_refunded = amount_refunded + $1, updated_at = $2
         WHERE id = $3 AND amount_refunded + $1 <= amount_received",
    )
    .bind(amount)
    .bind(now.micros())
    .bind(id.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives back what `hold` took for a refund the processor refused.
pub async fn release(conn: &mut Conn, id: &PaymentIntentId, amount: i64, now: Timestamp) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE payment_intents SET amount_refunded = amount_refunded - $1, updated_at = $2
         WHERE id = $3 AND amount_refunded >= $1",
    )
    .bind(amount)
    .bind(now.micros())
    .bind(id.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(Clone, Debug, sqlx::FromRow)]
struct RefundRow {
    id: String,
    livemode: i64,
    payment_intent_id: String,
    amount: i64,
    currency: String,
    reason: Option<String>,
    status: String,
    metadata: Option<String>,
    failure_reason: Option<String>,
    created_at: i64,
}

impl From<RefundRow> for Refund {
    fn from(r: RefundRow) -> Refund {
        Refund {
            refund_id: RefundId::from_trusted(r.id),
            payment_intent: PaymentIntentId::from_trusted(r.payment_intent_id),
            amount: r.amount,
            currency: Currency::parse(&r.currency).unwrap_or(Currency::USD),
            reason: r.reason.as_deref().and_then(RefundReason::from_wire),
            status: RefundStatus::from_wire(&r.status).unwrap_or(RefundStatus::Pending),
            failure_reason: r.failure_reason,
            metadata: Metadata::from_stored(r.metadata.as_deref()),
            created_at: Timestamp::from_micros(r.created_at),
            test_mode: Mode::from_flag(r.livemode).is_test(),
        }
    }
}

const COLUMNS: &str =
    "id, livemode, payment_intent_id, amount, currency, reason, status, metadata, failure_reason, created_at";

pub async fn insert(conn: &mut Conn, owner: &Owner, refund: &Refund, gateway: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refunds (id, merchant_id, livemode, payment_intent_id, amount, currency, reason, status,
            metadata, failure_reason, gateway, gateway_ref, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12, $12)",
    )
    .bind(refund.refund_id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(refund.payment_intent.as_str())
    .bind(refund.amount)
    .bind(refund.currency.code())
    .bind(refund.reason.map(|r| r.as_str()))
    .bind(refund.status.as_str())
    .bind(refund.metadata.as_ref().map(Metadata::to_json))
    .bind(refund.failure_reason.as_deref())
    .bind(gateway)
    .bind(refund.created_at.micros())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, owner: &Owner, id: &RefundId) -> Result<Option<Refund>, sqlx::Error> {
    let row = sqlx::query_as::<_, RefundRow>(&format!(
        "SELECT {COLUMNS} FROM refunds WHERE id = $1 AND merchant_id = $2 AND livemode = $3"
    ))
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Refund::from))
}

pub async fn list(
    conn: &mut Conn,
    owner: &Owner,
    payment_intent: Option<&PaymentIntentId>,
    cursor: &Cursor,
) -> Result<Page<Refund>, sqlx::Error> {
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM refunds WHERE merchant_id = "));
    sql.bind(Arg::Text(owner.merchant_id.to_string())).push(" AND livemode = ").bind(Arg::Int(owner.mode.as_flag()));
    if let Some(pi) = payment_intent {
        sql.push(" AND payment_intent_id = ").bind(Arg::Text(pi.to_string()));
    }
    cursor.finish(&mut sql, "id");
    let rows = sql.query_as::<RefundRow>().fetch_all(conn).await?;
    let page = cursor.page(rows);
    Ok(Page { items: page.items.into_iter().map(Refund::from).collect(), has_more: page.has_more })
}

/// A pending refund with what it takes to ask the processor again: whose it is, which gateway took
/// the payment, and that payment's charge reference.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PendingRefund {
    pub id: String,
    pub merchant_id: String,
    pub livemode: i64,
    pub payment_intent_id: String,
    pub amount: i64,
    pub currency: String,
    pub gateway: String,
    pub charge_ref: Option<String>,
    pub updated_at: i64,
}

impl PendingRefund {
    pub fn owner(&self) -> Owner {
        Owner { merchant_id: MerchantId::from_trusted(self.merchant_id.clone()), mode: Mode::from_flag(self.livemode) }
    }
}

/// Refunds still waiting on the processor, untouched since `stale_before` and made after
/// `created_after`, oldest first.
pub async fn pending(
    conn: &mut Conn,
    stale_before: Timestamp,
    created_after: Timestamp,
    limit: i64,
) -> Result<Vec<PendingRefund>, sqlx::Error> {
    sqlx::query_as::<_, PendingRefund>(
        "SELECT r.id, r.merchant_id, r.livemode, r.payment_intent_id, r.amount, r.currency, r.gateway,
            p.gateway_ref AS charge_ref, r.updated_at
         FROM refunds r JOIN payment_intents p ON p.id = r.payment_intent_id
         WHERE r.status = 'pending' AND r.updated_at < $1 AND r.created_at > $2
         ORDER BY r.updated_at LIMIT $3",
    )
    .bind(stale_before.micros())
    .bind(created_after.micros())
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Takes a pending refund for one retry: only the instance whose update still sees the
/// `updated_at` it read wins, and the new `updated_at` keeps the others off it for a while.
pub async fn claim(conn: &mut Conn, id: &str, seen_updated_at: i64, now: Timestamp) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE refunds SET updated_at = $1 WHERE id = $2 AND status = 'pending' AND updated_at = $3")
            .bind(now.micros())
            .bind(id)
            .bind(seen_updated_at)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the processor's answer, only if the refund is still pending (an answer is recorded once,
/// whichever door, the request or the worker, brought it). Returns the refund as it now stands.
pub async fn settle(
    conn: &mut Conn,
    id: &RefundId,
    status: RefundStatus,
    gateway_ref: Option<&str>,
    failure_reason: Option<&str>,
    now: Timestamp,
) -> Result<Option<Refund>, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE refunds SET status = $1, gateway_ref = $2, failure_reason = $3, updated_at = $4
         WHERE id = $5 AND status = 'pending'",
    )
    .bind(status.as_str())
    .bind(gateway_ref)
    .bind(failure_reason)
    .bind(now.micros())
    .bind(id.as_str())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    let row = sqlx::query_as::<_, RefundRow>(&format!("SELECT {COLUMNS} FROM refunds WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Refund::from))
}
