//! Merchant accounts.

use super::Conn;
use crate::domain::ids::MerchantId;
use crate::domain::timestamp::Timestamp;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

pub async fn insert(conn: &mut Conn, id: &MerchantId, name: &str, now: Timestamp) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO merchants (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id.as_str())
        .bind(name)
        .bind(now.micros())
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, id: &str) -> Result<Option<Merchant>, sqlx::Error> {
    sqlx::query_as::<_, Merchant>("SELECT id, name, created_at FROM merchants WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn first(conn: &mut Conn) -> Result<Option<Merchant>, sqlx::Error> {
    sqlx::query_as::<_, Merchant>("SELECT id, name, created_at FROM merchants ORDER BY id LIMIT 1")
        .fetch_optional(conn)
        .await
}

pub async fn count(conn: &mut Conn) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM merchants").fetch_one(conn).await
}
