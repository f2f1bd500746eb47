//! Idempotency records: the first response to a POST under a key, replayed for 24 hours.

use super::Conn;
use crate::domain::timestamp::Timestamp;
use crate::domain::Owner;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Record {
    pub request_hash: String,
    pub status_code: Option<i64>,
    pub response_body: Option<String>,
    pub created_at: i64,
}

/// Claims `key` for a new request. Returns `None` when claimed, or the existing record.
/// When an earlier record stops binding its key: past retention, or a claim whose request never
/// answered (its process died) after a short while.
pub struct Stale {
    pub answered_before: Timestamp,
    pub unanswered_before: Timestamp,
}

pub async fn claim(
    conn: &mut Conn,
    owner: &Owner,
    key: &str,
    request_hash: &str,
    now: Timestamp,
    stale: Stale,
) -> Result<Option<Record>, sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND livemode = $2 AND idempotency_key = $3
            AND (created_at < $4 OR (status_code IS NULL AND created_at < $5))",
    )
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(key)
    .bind(stale.answered_before.micros())
    .bind(stale.unanswered_before.micros())
    .execute(&mut *conn)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (merchant_id, livemode, idempotency_key, request_hash, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (merchant_id, livemode, idempotency_key) DO NOTHING",
    )
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(key)
    .bind(request_hash)
    .bind(now.micros())
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(None);
    }
    sqlx::query_as::<_, Record>(
        "SELECT request_hash, status_code, response_body, created_at FROM idempotency_keys
         WHERE merchant_id = $1 AND livemode = $2 AND idempotency_key = $3",
    )
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(key)
    .fetch_optional(conn)
    .await
}

pub async fn save_response(
    conn: &mut Conn,
    owner: &Owner,
    key: &str,
    status: u16,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status_code = $1, response_body = $2
         WHERE merchant_id = $3 AND livemode = $4 AND idempotency_key = $5",
    )
    .bind(i64::from(status))
    .bind(body)
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets a claim whose request failed on our side, so the client can retry under the same key.
pub async fn release(conn: &mut Conn, owner: &Owner, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND livemode = $2 AND idempotency_key = $3
            AND status_code IS NULL",
    )
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Drops records past their retention; returns how many.
pub async fn delete_older_than(conn: &mut Conn, before: Timestamp) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1").bind(before.micros()).execute(conn).await?;
    Ok(done.rows_affected())
}
