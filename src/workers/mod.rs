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
/// How long one round keeps taking billing passes while they come back full, so that a backlog
/// (every calendar subscription renewing at midnight on the 1st) is worked off at the engine's
/// pace instead of one batch per `TICK`, while the other workers still get their turn.
pub const BILLING_BUDGET: Duration = Duration::from_secs(4);

/// One pass of every worker (billing: passes while they come back full, see [`BILLING_BUDGET`]);
/// returns how many sessions, payments and refunds were settled. Tests call this directly instead
/// of waiting for the timer.
pub async fn run_once(state: &AppState) -> usize {
    round(state).await.0
}

/// One round of every worker: what was handled, and whether billing stopped at its budget with
/// work still due.
async fn round(state: &AppState) -> (usize, bool) {
    let mut handled = 0;
    match checkout::expire_due(state, 200).await {
        Ok(n) => handled += n,
        Err(e) => tracing::warn!(error = ?e, "session expiry pass failed"),
    }
    match checkout::reconcile_stale_attempts(state, 100).await {
        Ok(n) => handled += n,
        Err(e) => tracing::warn!(error = ?e, "payment reconciliation pass failed"),
    }
    let (billed, backlog) = bill(state).await;
    handled += billed;
    match refunds::retry_pending(state, 100).await {
        Ok(n) => handled += n,
        Err(e) => tracing::warn!(error = ?e, "pending refund pass failed"),
    }
    deliver_webhooks(state).await;
    clean_up(state).await;
    (handled, backlog)
}

/// Billing passes ([`billing::run_due_for`]) while each handles at least a batch (more is probably
/// due), for at most `BILLING_BUDGET`. Returns what they handled and whether the budget cut them
/// short. Another instance working the same rows makes a pass come back short, which ends the loop.
async fn bill(state: &AppState) -> (usize, bool) {
    let started = std::time::Instant::now();
    let mut handled = 0;
    loop {
        let left = BILLING_BUDGET.saturating_sub(started.elapsed());
        match billing::run_due_for(state, billing::BATCH, left).await {
            Ok((n, cut_short)) => {
                handled += n;
                if cut_short {
                    return (handled, true);
                }
                if n < billing::BATCH as usize {
                    return (handled, false);
                }
                if started.elapsed() >= BILLING_BUDGET {
                    return (handled, true);
                }
            }
            Err(e) => {
                tracing::warn!(error = ?e, "billing pass failed");
                return (handled, false);
            }
        }
    }
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
/// looked for every second (merchants wait for them), everything else every `TICK`, or after the
/// next webhook tick while billing has a backlog.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut last_full = None::<tokio::time::Instant>;
    loop {
        if last_full.is_none_or(|t| t.elapsed() >= TICK) {
            let (_, backlog) = round(&state).await;
            last_full = (!backlog).then(tokio::time::Instant::now);
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
