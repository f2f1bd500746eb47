//! Background work found in the database: session expiry, payment reconciliation, renewals and
//! invoice collection, refunds left without an answer, and clean-up.
//! Each pass does a bounded batch; several instances may run them at once because every change is
//! a conditional update that only one of them wins.

use std::time::Duration;

use tokio::sync::watch;

use crate::api::idempotency::RETENTION_SECONDS;
use crate::db;
use crate::flows::{billing, checkout, refunds, webhook_delivery};
use crate::state::AppState;

/// How often the workers look for due work.
pub const TICK: Duration = Duration::from_secs(5);
/// How often due webhook deliveries are looked for.
pub const WEBHOOK_TICK: Duration = Duration::from_secs(1);

/// One pass of every worker; returns how many sessions, payments and refunds were settled. Tests
/// call this directly instead of waiting for the timer.
pub async fn run_once(state: &AppState) -> usize {
    let mut handled = 0;
    match checkout::expire_due(state, 200).await {
        Ok(n) => handled += n,
        Err(e) => tracing::warn!(error = ?e, "session expiry pass failed"),
    }
    match checkout::reconcile_stale_attempts(state, 100).await {
        Ok(n) => handled += n,
        Err(e) => tracing::warn!(error = ?e, "payment reconciliation pass failed"),
    }
    match billing::run_due(state, billing::BATCH).await {
        Ok(n) => handled += n,
        Err(e) => tracing::warn!(error = ?e, "billing pass failed"),
    }
    match refunds::retry_pending(state, 100).await {
        Ok(n) => handled += n,
        Err(e) => tracing::warn!(error = ?e, "pending refund pass failed"),
    }
    deliver_webhooks(state).await;
    clean_up(state).await;
    handled
}

/// One pass of webhook delivery; returns how many tries were made.
pub async fn deliver_webhooks(state: &AppState) -> usize {
    match webhook_delivery::deliver_due(state, 200).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = ?e, "webhook delivery pass failed");
            0
        }
    }
}

/// Forgets what is no longer needed: idempotency records past retention, and rate-limit state of
/// addresses that have fully recovered (so memory stays bounded).
async fn clean_up(state: &AppState) {
    state.pay_limiter.retain_recent();
    let before = state.clock.now().plus_seconds(-RETENTION_SECONDS);
    let result = match state.db.conn().await {
        Ok(mut conn) => db::idempotency::delete_older_than(&mut conn, before).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "idempotency clean-up failed");
    }
}

/// Runs the workers until `stop` turns true; stops between passes, never inside one. Webhooks are
/// looked for every second (merchants wait for them), everything else every `TICK`.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut last_full = None::<tokio::time::Instant>;
    loop {
        if last_full.is_none_or(|t| t.elapsed() >= TICK) {
            run_once(&state).await;
            last_full = Some(tokio::time::Instant::now());
        } else {
            deliver_webhooks(&state).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(WEBHOOK_TICK) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
}
