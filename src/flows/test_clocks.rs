//! Test clocks: creating one, deleting one, and advancing one, which runs everything on the clock
//! that came due (through the billing engine) before the clock shows its new time.

use crate::db::test_clocks;
use crate::db::Db;
use crate::domain::ids::TestClockId;
use crate::domain::test_clock::{self, TestClock, TestClockStatus};
use crate::domain::timestamp::Timestamp;
use crate::domain::Owner;
use crate::state::AppState;

use super::subscriptions::{self, CancelRefund};
use super::{billing, FlowError};

pub const FROZEN_TIME_PARAM: &str = "test_clock.frozen_time";

fn not_found(id: &TestClockId) -> FlowError {
    FlowError::NotFound { resource: "test clock", id: id.to_string() }
}

fn being_advanced(id: &TestClockId) -> FlowError {
    FlowError::Conflict {
        code: "test_clock_advancing",
        message: format!("test clock {id} is being advanced by another request; retrieve it and try again"),
        param: None,
    }
}

pub struct NewTestClock {
    pub name: Option<String>,
    pub frozen_time: Timestamp,
}

pub async fn create(db: &Db, owner: &Owner, new: NewTestClock, now: Timestamp) -> Result<TestClock, FlowError> {
    if owner.mode.is_live() {
        // Live objects never live on simulated time.
        return Err(FlowError::Unprocessable {
            code: "test_mode_only",
            message: "test clocks exist only in test mode".into(),
        });
    }
    let clock = TestClock {
        test_clock_id: TestClockId::generate(),
        name: new.name,
        frozen_time: new.frozen_time,
        status: TestClockStatus::Ready,
        created_at: now,
        test_mode: true,
        deleted: false,
        advancing_since: None,
    };
    let mut conn = db.conn().await?;
    test_clocks::insert(&mut conn, owner, &clock).await?;
    Ok(clock)
}

/// Moves the clock to `to`, running on the way everything on it that came due. The work runs on its
/// own task, so a client that goes away mid-advance cannot leave the clock stuck `advancing`; an
/// engine failure puts the clock back, `ready` at its old time (what was done stays done, and the
/// next advance carries on from there).
pub async fn advance(state: &AppState, owner: &Owner, id: &TestClockId, to: Timestamp) -> Result<TestClock, FlowError> {
    let clock = {
        let mut conn = state.db.conn().await?;
        test_clocks::get(&mut conn, owner, id).await?.ok_or_else(|| not_found(id))?
    };
    test_clock::advance_target(clock.frozen_time, to, FROZEN_TIME_PARAM)?;
    if clock.is_being_advanced(state.clock.now()) {
        return Err(being_advanced(id));
    }
    let (state2, owner2, id2) = (state.clone(), owner.clone(), id.clone());
    match tokio::spawn(async move { advance_inner(&state2, &owner2, &id2, clock.frozen_time, to).await }).await {
        Ok(result) => result,
        Err(e) => Err(FlowError::Internal(anyhow::anyhow!("test clock advance task failed: {e}"))),
    }
}

async fn advance_inner(
    state: &AppState,
    owner: &Owner,
    id: &TestClockId,
    from: Timestamp,
    to: Timestamp,
) -> Result<TestClock, FlowError> {
    {
        let mut conn = state.db.conn().await?;
        if !test_clocks::begin_advance(&mut conn, owner, id, from, state.clock.now()).await? {
            // Another request advanced it since we read it, or is advancing it now, or deleted it.
            return Err(match test_clocks::get(&mut conn, owner, id).await? {
                None => not_found(id),
                Some(_) => being_advanced(id),
            });
        }
    }
    // No connection is held while the engine runs: it takes its own, one transaction per item. A
    // panic in it is caught here, so the clock is never left `advancing` by one.
    let (state2, id2) = (state.clone(), id.clone());
    let ran = match tokio::spawn(async move { billing::run_clock(&state2, &id2, to).await }).await {
        Ok(result) => result,
        Err(e) => Err(FlowError::Internal(anyhow::anyhow!("billing engine task failed: {e}"))),
    };
    let mut conn = state.db.conn().await?;
    if let Err(e) = ran {
        if let Err(abort) = test_clocks::abort_advance(&mut conn, owner, id).await {
            tracing::error!(test_clock = %id, error = %abort, "could not put a failed test clock back to ready");
        }
        return Err(e);
    }
    test_clocks::finish_advance(&mut conn, owner, id, to).await?;
    test_clocks::get(&mut conn, owner, id).await?.ok_or_else(|| not_found(id))
}

/// Deletes the clock, whatever its status (the way out of a clock whose advance never finished), and
/// answers it as it was, `deleted`.
/// Deletes a clock and ends what lives on it, as if its time had stopped for good: its subscriptions
/// are canceled at the clock's time (open invoices voided, `customer.subscription.deleted`), so no
/// engine work is left on a clock that can no longer be advanced. Its customers stay.
pub async fn delete(state: &AppState, owner: &Owner, id: &TestClockId) -> Result<TestClock, FlowError> {
    let now = state.clock.now();
    let subscriptions = {
        let mut conn = state.db.conn().await?;
        // Even while an advance holds it (its server may have died): what the advance still does
        // to a canceled subscription is nothing.
        test_clocks::get(&mut conn, owner, id).await?.ok_or_else(|| not_found(id))?;
        test_clocks::subscriptions_not_ended(&mut conn, id).await?
    };
    for sub in subscriptions {
        match subscriptions::cancel(state, owner, &sub, false, CancelRefund::None).await {
            // Ended meanwhile (its own end date, another request).
            Ok(_) | Err(FlowError::Unprocessable { code: "subscription_ended", .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut tx = state.db.begin().await?;
    let mut clock = test_clocks::get(&mut tx, owner, id).await?.ok_or_else(|| not_found(id))?;
    if !test_clocks::delete(&mut tx, owner, id, now).await? {
        return Err(not_found(id));
    }
    tx.commit().await?;
    clock.deleted = true;
    Ok(clock)
}
