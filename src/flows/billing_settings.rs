//! Reading and changing a merchant's billing settings (per mode: test and live are set apart).

use crate::db::{self, Db};
use crate::domain::billing_settings::{AfterFinalFailure, BillingSettings};
use crate::domain::timestamp::Timestamp;
use crate::domain::Owner;

use super::FlowError;

pub async fn get(db: &Db, owner: &Owner) -> Result<BillingSettings, FlowError> {
    let mut conn = db.conn().await?;
    Ok(db::billing_settings::get(&mut conn, owner).await?)
}

/// Changes what happens after dunning's last failure. It applies to every later final failure;
/// subscriptions already canceled or unpaid stay as they are.
pub async fn update(
    db: &Db,
    owner: &Owner,
    after_final_failure: Option<AfterFinalFailure>,
    now: Timestamp,
) -> Result<BillingSettings, FlowError> {
    let mut tx = db.begin().await?;
    if let Some(after) = after_final_failure {
        db::billing_settings::set_after_final_failure(&mut tx, owner, after, now).await?;
    }
    let settings = db::billing_settings::get(&mut tx, owner).await?;
    tx.commit().await?;
    Ok(settings)
}
