//! Refunds of a payment intent, exactly once. One transaction holds the amount on the payment
//! (a conditional update, so refunds together never exceed what was received) and records the
//! refund as pending; then the processor is asked, with the refund id as its idempotency key; then
//! a second transaction records its answer with the event that reports it. A refund whose answer
//! never came stays pending, amount held, and the worker asks again under the same key.

use crate::db;
use crate::domain::ids::{PaymentIntentId, RefundId};
use crate::domain::metadata::Metadata;
use crate::domain::money::Currency;
use crate::domain::refund::{self, AmountRefusal, Refund, RefundReason, RefundStatus};
use crate::domain::{FieldError, Owner};
use crate::gateway::{GatewayError, PaymentGateway, RefundOutcome, RefundRequest};
use crate::state::AppState;

use super::{events, FlowError};

const PAYMENT_INTENT_PARAM: &str = "refund.payment_intent";
const AMOUNT_PARAM: &str = "refund.amount";

/// A refund without an answer is asked again once it has been left alone this long (longer than
/// any processor call takes, so the worker does not ask while the request is still asking).
pub const RETRY_AFTER_SECONDS: i64 = 60;

/// Stripe forgets an idempotency key after 24 hours; asking again after that could refund twice.
/// Older refunds without an answer stay pending, amount held, for a person to settle.
pub const RETRY_WINDOW_SECONDS: i64 = 23 * 3600;

/// A refund as the merchant asked for it, fields parsed but not yet checked against the payment.
#[derive(Clone, Debug)]
pub struct NewRefund {
    pub payment_intent: String,
    pub amount: Option<i64>,
    pub reason: Option<RefundReason>,
    pub metadata: Option<Metadata>,
}

/// What the processor needs to refund a held, recorded refund.
struct Ask<'a> {
    refund_id: &'a RefundId,
    payment_intent: &'a PaymentIntentId,
    amount: i64,
    currency: Currency,
    charge_ref: &'a str,
}

fn no_such_payment_intent(raw: &str) -> FlowError {
    FieldError::new(PAYMENT_INTENT_PARAM, format!("No such payment intent: '{raw}'")).into()
}

fn refused(refusal: AmountRefusal, currency: Currency) -> FlowError {
    match refusal {
        AmountRefusal::NothingLeft => FlowError::Unprocessable {
            code: "charge_already_refunded",
            message: "This payment intent has already been refunded in full.".into(),
        },
        AmountRefusal::MoreThanLeft { left } => FieldError::new(
            AMOUNT_PARAM,
            format!(
                "amount must be at most {left} ({}), what is left to refund of this payment intent",
                currency.format(left)
            ),
        )
        .into(),
    }
}

/// Creates a refund and asks the processor for it. A refusal by the processor is a 422
/// `refund_failed` (the refund is kept, `failed`, and `refund.failed` emitted); no answer leaves the
/// refund `pending`, which is returned as it is.
pub async fn create(state: &AppState, owner: &Owner, new: NewRefund) -> Result<Refund, FlowError> {
    let requested = refund::check_requested_amount(new.amount, AMOUNT_PARAM)?;
    let pi_id =
        PaymentIntentId::parse(&new.payment_intent).ok_or_else(|| no_such_payment_intent(&new.payment_intent))?;
    let now = state.clock.now();

    let mut tx = state.db.begin().await?;
    let payment = db::refunds::refundable(&mut tx, owner, &pi_id)
        .await?
        .ok_or_else(|| no_such_payment_intent(&new.payment_intent))?;
    if payment.status != "succeeded" {
        return Err(FlowError::Unprocessable {
            code: "payment_intent_unexpected_state",
            message: format!(
                "Only a succeeded payment intent can be refunded; {} is {}.",
                pi_id.as_str(),
                payment.status
            ),
        });
    }
    let gateway = super::gateway(state, owner.mode)?;
    let currency = Currency::parse(&payment.currency).unwrap_or(Currency::USD);
    let amount = refund::amount_to_refund(requested, payment.amount_received, payment.amount_refunded)
        .map_err(|r| refused(r, currency))?;
    // A payment taken by another processor than the one this mode uses now (the server was switched
    // from the sandbox to Stripe) cannot be refunded from here: refuse before holding anything.
    let charge_ref = match payment.gateway_ref.as_deref() {
        Some(c) if payment.gateway == gateway.name() => c.to_string(),
        _ => {
            return Err(FlowError::Unprocessable {
                code: "payment_intent_gateway_unavailable",
                message: format!(
                    "{pi_id} was paid through the {} gateway, which this mode no longer uses; refund it there.",
                    payment.gateway
                ),
            })
        }
    };
    if !db::refunds::hold(&mut tx, &pi_id, amount, now).await? {
        // Another refund took part of it after our read (PostgreSQL reads committed rows, so a
        // fresh read shows it): say how much is really left.
        let fresh = db::refunds::refundable(&mut tx, owner, &pi_id)
            .await?
            .ok_or_else(|| no_such_payment_intent(&new.payment_intent))?;
        let left = fresh.amount_received - fresh.amount_refunded;
        let refusal = refund::amount_to_refund(Some(amount), fresh.amount_received, fresh.amount_refunded)
            .err()
            .unwrap_or(AmountRefusal::MoreThanLeft { left });
        return Err(refused(refusal, currency));
    }
    let pending = Refund {
        refund_id: RefundId::generate(),
        payment_intent: pi_id.clone(),
        amount,
        currency,
        reason: new.reason,
        status: RefundStatus::Pending,
        failure_reason: None,
        metadata: new.metadata,
        created_at: now,
        test_mode: owner.mode.is_test(),
    };
    db::refunds::insert(&mut tx, owner, &pending, &payment.gateway).await?;
    tx.commit().await?;

    // From here on the refund exists and the worker can finish it, so no error may reach the
    // merchant as a 5xx: a retry of a 5xx under the same Idempotency-Key would make a second refund.
    let ask = Ask { refund_id: &pending.refund_id, payment_intent: &pi_id, amount, currency, charge_ref: &charge_ref };
    let refund = match ask_and_record(state, gateway, owner, &ask).await {
        Ok(Some(r)) => r,
        Ok(None) => pending,
        Err(e) => {
            let id = &pending.refund_id;
            tracing::error!(refund = %id, error = ?e, "recording a refund's answer failed; left to the worker");
            pending
        }
    };
    if refund.status == RefundStatus::Failed {
        return Err(FlowError::Unprocessable {
            code: "refund_failed",
            message: format!(
                "The payment processor refused refund {}: {}",
                refund.refund_id,
                refund.failure_reason.as_deref().unwrap_or("no reason given")
            ),
        });
    }
    Ok(refund)
}

/// Asks the processor for a held, pending refund and records the answer, once: a success commits
/// `succeeded` with `refund.created`; a refusal commits `failed`, gives the held amount back and
/// emits `refund.failed`; no answer changes nothing. Returns the refund as it then stands (`None`
/// only if it vanished). The request and the worker both come here.
async fn ask_and_record(
    state: &AppState,
    gateway: &dyn PaymentGateway,
    owner: &Owner,
    ask: &Ask<'_>,
) -> Result<Option<Refund>, FlowError> {
    let answer = gateway
        .refund(RefundRequest {
            idempotency_key: ask.refund_id.as_str(),
            charge_ref: ask.charge_ref,
            amount: ask.amount,
            currency: ask.currency,
        })
        .await;
    let now = state.clock.now();
    let (status, gateway_ref, failure_reason) = match answer {
        Ok(RefundOutcome::Succeeded { gateway_ref }) => (RefundStatus::Succeeded, Some(gateway_ref), None),
        Ok(RefundOutcome::Failed { reason }) => (RefundStatus::Failed, None, Some(reason)),
        Err(GatewayError::CardRejected { message, .. }) => (RefundStatus::Failed, None, Some(message)),
        Err(GatewayError::Unavailable(why)) => {
            tracing::warn!(refund = %ask.refund_id, error = %why, "refund outcome unknown; left pending");
            return current(state, owner, ask.refund_id).await;
        }
    };
    let mut tx = state.db.begin().await?;
    let Some(refund) =
        db::refunds::settle(&mut tx, ask.refund_id, status, gateway_ref.as_deref(), failure_reason.as_deref(), now)
            .await?
    else {
        // The other door recorded the answer first.
        drop(tx);
        return current(state, owner, ask.refund_id).await;
    };
    let event = if status == RefundStatus::Succeeded {
        "refund.created"
    } else {
        if !db::refunds::release(&mut tx, ask.payment_intent, ask.amount, now).await? {
            tracing::error!(refund = %ask.refund_id, "a failed refund's held amount was not on its payment intent");
        }
        "refund.failed"
    };
    events::emit(&mut tx, owner, event, "refund", refund.refund_id.as_str(), &refund, now).await?;
    tx.commit().await?;
    Ok(Some(refund))
}

async fn current(state: &AppState, owner: &Owner, id: &RefundId) -> Result<Option<Refund>, FlowError> {
    let mut conn = state.db.conn().await?;
    Ok(db::refunds::get(&mut conn, owner, id).await?)
}

/// The worker's pass: asks again for refunds left pending (their answer lost to a timeout or a
/// crash) under the same idempotency key. Returns how many got an answer.
pub async fn retry_pending(state: &AppState, limit: i64) -> Result<usize, FlowError> {
    let now = state.clock.now();
    let due = {
        let mut conn = state.db.conn().await?;
        db::refunds::pending(
            &mut conn,
            now.plus_seconds(-RETRY_AFTER_SECONDS),
            now.plus_seconds(-RETRY_WINDOW_SECONDS),
            limit,
        )
        .await?
    };
    let mut answered = 0;
    for row in due {
        let claimed = {
            let mut conn = state.db.conn().await?;
            db::refunds::claim(&mut conn, &row.id, row.updated_at, now).await?
        };
        if !claimed {
            continue;
        }
        let owner = row.owner();
        // The claim above already moved it to the back of the queue, so a refund that cannot be
        // asked here does not hold up the others.
        let gateway = match state.gateways.for_mode(owner.mode) {
            Some(g) if g.name() == row.gateway => g,
            _ => {
                tracing::warn!(refund = %row.id, gateway = %row.gateway, "pending refund's gateway is not configured");
                continue;
            }
        };
        let Some(charge_ref) = row.charge_ref.as_deref() else {
            tracing::error!(refund = %row.id, "pending refund's payment intent has no charge reference");
            continue;
        };
        let refund_id = RefundId::from_trusted(row.id.clone());
        let payment_intent = PaymentIntentId::from_trusted(row.payment_intent_id.clone());
        let ask = Ask {
            refund_id: &refund_id,
            payment_intent: &payment_intent,
            amount: row.amount,
            currency: Currency::parse(&row.currency).unwrap_or(Currency::USD),
            charge_ref,
        };
        match ask_and_record(state, gateway, &owner, &ask).await {
            Ok(Some(r)) if r.status != RefundStatus::Pending => answered += 1,
            Ok(_) => {}
            Err(e) => tracing::warn!(refund = %row.id, error = ?e, "retrying a pending refund failed"),
        }
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_amount_or_say_nothing_is_left() {
        match refused(AmountRefusal::MoreThanLeft { left: 2999 }, Currency::USD) {
            FlowError::Invalid(f) => {
                assert_eq!(f.param, AMOUNT_PARAM);
                assert!(f.message.contains("2999") && f.message.contains("$29.99"), "{}", f.message);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            refused(AmountRefusal::NothingLeft, Currency::USD),
            FlowError::Unprocessable { code: "charge_already_refunded", .. }
        ));
    }
}
