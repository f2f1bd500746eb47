//! Merchants' billing settings, one row per owner once changed (no row: the defaults).

use super::Conn;
use crate::domain::billing_settings::{AfterFinalFailure, BillingSettings};
use crate::domain::timestamp::Timestamp;
use crate::domain::Owner;

pub async fn get(conn: &mut Conn, owner: &Owner) -> Result<BillingSettings, sqlx::Error> {
    let row = sqlx::query_as::<_, (String, i64)>(
        "SELECT after_final_failure, updated_at FROM billing_settings WHERE merchant_id = $1 AND livemode = $2",
    )
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(conn)
    .await?;
    let test_mode = owner.mode.is_test();
    Ok(match row {
        None => BillingSettings::defaults(test_mode),
        Some((after, updated_at)) => BillingSettings {
            // Only this module writes the column, with `as_str`.
            after_final_failure: AfterFinalFailure::from_wire(&after).unwrap_or(AfterFinalFailure::Canceled),
            test_mode,
            updated_at: Some(Timestamp::from_micros(updated_at)),
        },
    })
}

pub async fn set_after_final_failure(
    conn: &mut Conn,
    owner: &Owner,
    after: AfterFinalFailure,
    at: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO billing_settings (merchant_id, livemode, after_final_failure, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (merchant_id, livemode)
         DO UPDATE SET after_final_failure = excluded.after_final_failure, updated_at = excluded.updated_at",
    )
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(after.as_str())
    .bind(at.micros())
    .execute(conn)
    .await?;
    Ok(())
}
