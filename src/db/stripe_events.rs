//! Stripe events already applied, by Stripe's event id.

use super::Conn;
use crate::domain::timestamp::Timestamp;

pub async fn seen(conn: &mut Conn, id: &str) -> Result<bool, sqlx::Error> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events WHERE id = $1").bind(id).fetch_one(conn).await?;
    Ok(n > 0)
}

pub async fn record(
    conn: &mut Conn,
    id: &str,
    event_type: &str,
    object_id: &str,
    livemode: bool,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stripe_events (id, event_type, object_id, livemode, received_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(event_type)
    .bind(object_id)
    .bind(i64::from(livemode))
    .bind(now.micros())
    .execute(conn)
    .await?;
    Ok(())
}
