//! Cards typed into the processor's own fields in the browser (Stripe Elements): we start a setup
//! for the session, the browser confirms it with the processor, and whichever door hears of it
//! first (the page, the reconciler, a processor webhook) charges the saved card, once.

use std::time::Duration;

use crate::db::{self, payments::attempt_status};
use crate::domain::checkout_session::{self as cs};
use crate::domain::customer::Contact;
use crate::domain::ids::{CheckoutSessionId, PaymentAttemptId};
use crate::domain::Mode;
use crate::gateway::{BrowserCards, CardEntry, ChargeOutcome, SetupResult};
use crate::state::AppState;

use super::checkout::{self as checkout_flow, PayResult};
use super::FlowError;

/// What the browser needs to confirm the card with the processor.
#[derive(Debug)]
pub enum SetupStart {
    Ready {
        attempt: PaymentAttemptId,
        client_secret: String,
    },
    /// The session takes no payment now (paid, expired, locked).
    Settled(PayResult),
}

fn browser_cards(state: &AppState, mode: Mode) -> Result<&dyn BrowserCards, FlowError> {
    match super::gateway(state, mode)?.card_entry() {
        CardEntry::Browser(cards) => Ok(cards),
        CardEntry::OwnForm(_) => Err(FlowError::Unprocessable {
            code: "card_entry",
            message: "this checkout takes cards on its own form".into(),
        }),
    }
}

/// Starts saving a card for a session: an attempt row first, then the processor's customer and
/// setup. Nothing is charged and the session is not held until the card is confirmed.
pub async fn start(state: &AppState, id: &CheckoutSessionId, contact: Contact) -> Result<SetupStart, FlowError> {
    let now = state.clock.now();
    let owned = {
        let mut conn = state.db.conn().await?;
        db::checkout_sessions::get_any(&mut conn, id)
            .await?
            .ok_or_else(|| FlowError::NotFound { resource: "checkout session", id: id.to_string() })?
    };
    if let Some(done) = checkout_flow::settled(&owned.session, now) {
        return Ok(SetupStart::Settled(done));
    }
    let gateway = super::gateway(state, owned.owner.mode)?;
    let cards = browser_cards(state, owned.owner.mode)?;
    // A challenge the customer walked away from gives way to this new card.
    checkout_flow::abandon_pending_action(state, id).await?;

    let attempt = PaymentAttemptId::generate();
    let existing_customer = {
        let mut tx = state.db.begin().await?;
        // One processor customer per payer: the merchant's named customer's, or this session's.
        let known = match &owned.session.customer {
            Some(c) => db::payments::customer_gateway_customer(&mut tx, c, gateway.name()).await?,
            None => None,
        };
        let existing = match known {
            Some(c) => Some(c),
            None => db::payments::session_gateway_customer(&mut tx, id, gateway.name()).await?,
        };
        let contact_json = serde_json::to_string(&contact).map_err(|e| FlowError::Internal(e.into()))?;
        db::payments::insert_attempt(
            &mut tx,
            db::payments::NewAttempt {
                id: &attempt,
                owner: &owned.owner,
                session: id,
                amount: owned.session.amount_total,
                currency: owned.session.currency,
                contact: &contact_json,
                card: None,
                gateway: gateway.name(),
                gateway_ref: None,
                gateway_customer: existing.as_deref(),
                status: attempt_status::SETUP,
            },
            now,
        )
        .await?;
        tx.commit().await?;
        existing
    };

    let started = match cards.start_setup(attempt.as_str(), &contact.email, existing_customer.as_deref()).await {
        Ok(started) => started,
        Err(e) => {
            let mut conn = state.db.conn().await?;
            db::payments::finish_attempt(
                &mut conn,
                &attempt,
                &[attempt_status::SETUP],
                attempt_status::FAILED,
                None,
                Some("the processor did not answer when the card setup was started"),
                now,
            )
            .await?;
            return Err(e.into());
        }
    };
    crate::crash_points::reached("after_setup_started");
    let mut conn = state.db.conn().await?;
    db::payments::set_attempt_setup(&mut conn, &attempt, &started.setup_ref, &started.gateway_customer, now).await?;
    Ok(SetupStart::Ready { attempt, client_secret: started.client_secret })
}

/// Who is finishing a setup: the page waits for nothing, the background doors may find the
/// customer still busy with their bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// The browser came back after confirming: a setup still unconfirmed will not be confirmed.
    Page,
    /// A processor webhook or the reconciler: an unconfirmed setup may still be confirmed.
    Background { give_up: bool },
}

/// The browser (or a background door) says the setup of `attempt` is done: read the result from the
/// processor and, if the card was saved, charge it for the session.
pub async fn finish(
    state: &AppState,
    session: &CheckoutSessionId,
    attempt: &PaymentAttemptId,
) -> Result<PayResult, FlowError> {
    let state2 = state.clone();
    let (session, attempt) = (session.clone(), attempt.clone());
    // Its own task: a browser that goes away mid-charge cannot leave it half done.
    match tokio::spawn(async move { finish_inner(&state2, Some(&session), &attempt, Door::Page).await }).await {
        Ok(result) => result,
        Err(e) => Err(FlowError::Internal(anyhow::anyhow!("setup task failed: {e}"))),
    }
}

/// A setup the reconciler found unfinished. Returns whether it is settled now.
pub async fn reconcile_setup(state: &AppState, attempt: &PaymentAttemptId, give_up: bool) -> Result<bool, FlowError> {
    let result = finish_inner(state, None, attempt, Door::Background { give_up }).await?;
    Ok(!matches!(result, PayResult::InProgress))
}

/// A processor webhook reports a setup's new state.
pub async fn setup_updated(state: &AppState, attempt: &PaymentAttemptId) -> Result<(), FlowError> {
    finish_inner(state, None, attempt, Door::Background { give_up: false }).await.map(|_| ())
}

async fn finish_inner(
    state: &AppState,
    expected_session: Option<&CheckoutSessionId>,
    attempt: &PaymentAttemptId,
    door: Door,
) -> Result<PayResult, FlowError> {
    let now = state.clock.now();
    let not_found = || FlowError::NotFound { resource: "payment attempt", id: attempt.to_string() };
    let row = {
        let mut conn = state.db.conn().await?;
        db::payments::get_attempt(&mut conn, attempt).await?.ok_or_else(not_found)?
    };
    let session_id = CheckoutSessionId::from_trusted(row.session_id.clone().ok_or_else(not_found)?);
    if expected_session.is_some_and(|s| *s != session_id) {
        return Err(not_found());
    }
    if row.status != attempt_status::SETUP {
        return answered_already(state, &row).await;
    }
    let Some(setup_ref) = row.setup_ref.as_deref() else {
        // The processor was never reached (the process died right after writing the attempt).
        if door == Door::Page || matches!(door, Door::Background { give_up: true }) {
            abandon(state, attempt, "the card setup never reached the processor").await?;
            return Ok(not_confirmed());
        }
        return Ok(PayResult::InProgress);
    };
    let cards = browser_cards(state, Mode::from_flag(row.livemode))?;
    let card = match cards.finish_setup(setup_ref).await? {
        SetupResult::Saved(card) => card,
        SetupResult::Declined(code) => {
            return checkout_flow::apply_payment_outcome(state, attempt, ChargeOutcome::Declined { code }).await
        }
        SetupResult::Pending => {
            return match door {
                Door::Page | Door::Background { give_up: true } => {
                    abandon(state, attempt, "the card was not confirmed").await?;
                    Ok(not_confirmed())
                }
                Door::Background { give_up: false } => {
                    let mut conn = state.db.conn().await?;
                    db::payments::touch_attempt(&mut conn, attempt, now).await?;
                    Ok(PayResult::InProgress)
                }
            };
        }
    };

    // The card is saved: take the session for this attempt and charge it.
    let owned = {
        let mut tx = state.db.begin().await?;
        let owned = db::checkout_sessions::get_any(&mut tx, &session_id)
            .await?
            .ok_or_else(|| FlowError::NotFound { resource: "checkout session", id: session_id.to_string() })?;
        let stale = now.plus_seconds(-state.settings.payment_stale_seconds);
        if !db::checkout_sessions::claim_for_payment(&mut tx, &session_id, attempt, now, stale, cs::MAX_DECLINES)
            .await?
        {
            drop(tx);
            // Paid by another tab, expired, locked, or another payment is running: this card is
            // saved at the processor but not charged.
            abandon(state, attempt, "another payment for this session came first").await?;
            return checkout_flow::wait_for_other_payment(state, &session_id).await;
        }
        if !db::payments::begin_charge(
            &mut tx,
            attempt,
            &card.details,
            &card.gateway_ref,
            card.gateway_customer.as_deref(),
            now,
        )
        .await?
        {
            // Another door is charging this attempt right now.
            drop(tx);
            let row = {
                let mut conn = state.db.conn().await?;
                db::payments::get_attempt(&mut conn, attempt).await?.ok_or_else(not_found)?
            };
            return answered_already(state, &row).await;
        }
        tx.commit().await?;
        owned
    };
    checkout_flow::charge_claimed(state, &owned, attempt, &card).await
}

fn not_confirmed() -> PayResult {
    PayResult::Declined {
        message: "Your card was not confirmed, so nothing was charged. Please try again or use another card.".into(),
    }
}

async fn abandon(state: &AppState, attempt: &PaymentAttemptId, why: &str) -> Result<(), FlowError> {
    let mut conn = state.db.conn().await?;
    db::payments::finish_attempt(
        &mut conn,
        attempt,
        &[attempt_status::SETUP],
        attempt_status::ABANDONED,
        None,
        Some(why),
        state.clock.now(),
    )
    .await?;
    Ok(())
}

/// How an attempt that is past its setup stands, for a door that comes late (a reload, a second
/// request, a webhook after the page): if another door is charging it right now, after its answer.
async fn answered_already(state: &AppState, row: &db::payments::AttemptRow) -> Result<PayResult, FlowError> {
    let attempt = PaymentAttemptId::from_trusted(row.id.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut status = row.status.clone();
    while status == attempt_status::PENDING {
        if tokio::time::Instant::now() >= deadline {
            return Ok(PayResult::InProgress);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut conn = state.db.conn().await?;
        status = db::payments::get_attempt(&mut conn, &attempt).await?.map(|r| r.status).unwrap_or_default();
    }
    checkout_flow::answered_now(state, &attempt).await
}
