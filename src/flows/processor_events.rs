//! Updates the payment processor pushes to us (Stripe webhooks). Each goes through the same
//! function the page uses, so an outcome is recorded once whichever door brings it first.

use crate::db;
use crate::domain::ids::PaymentAttemptId;
use crate::domain::Mode;
use crate::gateway::stripe_webhook::{EventHeader, ProcessorUpdate};
use crate::state::AppState;

use super::{card_setup, checkout, FlowError};

/// Applies a Stripe event once: a redelivery of one already applied is answered at once.
pub async fn receive(state: &AppState, event: &EventHeader, update: ProcessorUpdate) -> Result<(), FlowError> {
    {
        let mut conn = state.db.conn().await?;
        if db::stripe_events::seen(&mut conn, &event.id).await? {
            return Ok(());
        }
    }
    apply(state, update).await?;
    let mut conn = state.db.conn().await?;
    db::stripe_events::record(
        &mut conn,
        &event.id,
        &event.event_type,
        &event.object_id,
        event.livemode,
        state.clock.now(),
    )
    .await?;
    Ok(())
}

/// Applies one update; anything not about one of our open checkout attempts is ignored.
pub async fn apply(state: &AppState, update: ProcessorUpdate) -> Result<(), FlowError> {
    // A charge outcome, or `None` for a setup that moved on.
    let (attempt_ref, charge) = match update {
        ProcessorUpdate::Charge { attempt, outcome } => (attempt, Some(outcome)),
        ProcessorUpdate::Setup { attempt } => (attempt, None),
        ProcessorUpdate::Ignored => return Ok(()),
    };
    let Some(attempt) = PaymentAttemptId::parse(&attempt_ref) else { return Ok(()) };
    let row = {
        let mut conn = state.db.conn().await?;
        db::payments::get_attempt(&mut conn, &attempt).await?
    };
    // Another server's attempt on the same Stripe account, or one no longer ours to settle.
    let Some(row) = row.filter(|r| r.session_id.is_some()) else {
        tracing::info!(attempt = %attempt, "Stripe event about an attempt this server does not know");
        return Ok(());
    };
    let gateway_now = state.gateways.for_mode(Mode::from_flag(row.livemode)).map(|g| g.name());
    if gateway_now != Some(row.gateway.as_str()) {
        return Ok(());
    }
    match charge {
        // A setup not yet turned into a charge cannot have a charge outcome of ours.
        Some(_) if row.status == db::payments::attempt_status::SETUP => Ok(()),
        Some(outcome) => checkout::apply_payment_outcome(state, &attempt, outcome).await.map(|_| ()),
        None => card_setup::setup_updated(state, &attempt).await,
    }
}
