//! API keys: only a SHA-256 of the secret is stored, with a redacted form to show in lists.

use super::Conn;
use crate::domain::ids::{ApiKeyId, MerchantId};
use crate::domain::timestamp::Timestamp;
use crate::domain::Mode;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    pub merchant_id: String,
    pub name: String,
    pub livemode: i64,
    pub secret_hash: String,
    pub redacted: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub struct NewApiKey<'a> {
    pub id: &'a ApiKeyId,
    pub merchant_id: &'a MerchantId,
    pub name: &'a str,
    pub mode: Mode,
    pub secret_hash: &'a str,
    pub redacted: &'a str,
}

const COLUMNS: &str = "id, merchant_id, name, livemode, secret_hash, redacted, created_at, last_used_at, revoked_at";

pub async fn insert(conn: &mut Conn, key: NewApiKey<'_>, now: Timestamp) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, merchant_id, name, livemode, secret_hash, redacted, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key.id.as_str())
    .bind(key.merchant_id.as_str())
    .bind(key.name)
    .bind(key.mode.as_flag())
    .bind(key.secret_hash)
    .bind(key.redacted)
    .bind(now.micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// The live (not revoked) key with this secret hash.
pub async fn find_active_by_hash(conn: &mut Conn, hash: &str) -> Result<Option<ApiKey>, sqlx::Error> {
    sqlx::query_as::<_, ApiKey>(&format!(
        "SELECT {COLUMNS} FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL"
    ))
    .bind(hash)
    .fetch_optional(conn)
    .await
}

pub async fn list(conn: &mut Conn, merchant_id: Option<&str>) -> Result<Vec<ApiKey>, sqlx::Error> {
    match merchant_id {
        Some(m) => {
            sqlx::query_as::<_, ApiKey>(&format!("SELECT {COLUMNS} FROM api_keys WHERE merchant_id = $1 ORDER BY id"))
                .bind(m)
                .fetch_all(conn)
                .await
        }
        None => {
            sqlx::query_as::<_, ApiKey>(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY id")).fetch_all(conn).await
        }
    }
}

/// Revokes a key; false when there is no such key or it was revoked already.
pub async fn revoke(conn: &mut Conn, id: &str, now: Timestamp) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now.micros())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
