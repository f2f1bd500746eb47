//! Paying an invoice on its hosted page (`/pay/i/{id}`): the card the customer gives (typed into
//! our form with the sandbox, or confirmed with the processor's script in Stripe mode, where no card
//! data reaches us) is saved for them, and one attempt of the billing engine charges it with the
//! customer present.
//!
//! The page adds no collection logic of its own. It takes an attempt with `billing::claim` (the
//! same conditional update the engine uses, so a double submit or a renewal worker can never take
//! the same attempt), charges under the engine's key `{invoice}-a{attempt}`, and applies the answer
//! with `billing::settle`. What differs from the engine's off-session charge is only that the
//! customer is here: the charge is on-session, and a bank that wants a 3-D Secure challenge gets
//! one instead of a decline. While a challenge waits the attempt stays claimed; if the customer
//! walks away, the engine's lease runs out and its worker asks the gateway again under the same
//! key, which answers with the unfinished challenge, recorded as `authentication_required`.

use std::time::Duration;

use crate::db::{self, Conn};
use crate::domain::card::CardInput;
use crate::domain::customer::Customer;
use crate::domain::ids::{InvoiceId, PaymentMethodId, SubscriptionId};
use crate::domain::invoicing::MAX_ATTEMPTS;
use crate::domain::payment::{BillingDetails, CardDetails, DeclineCode, PaymentMethod};
use crate::domain::subscription::{Invoice, InvoiceStatus};
use crate::domain::timestamp::Timestamp;
use crate::domain::{FieldError, Owner};
use crate::flows::billing::{self, AttemptResult, ChargeJob};
use crate::flows::{events, FlowError};
use crate::gateway::{
    BrowserCards, CardEntry, ChallengeAnswer, ChargeLookup, ChargeOutcome, ChargeRequest, GatewayError, PaymentGateway,
    PendingCharge, SavedCard, SetupResult,
};
use crate::state::AppState;

/// Attempts after which the page takes no more cards for an invoice (card-testing defence): the
/// engine's own attempts plus as many declines as a checkout session allows.
pub const PAGE_ATTEMPT_LIMIT: i64 = MAX_ATTEMPTS + crate::domain::checkout_session::MAX_DECLINES;

/// Everything the invoice page shows.
#[derive(Clone, Debug)]
pub struct InvoicePage {
    pub owner: Owner,
    pub merchant_name: String,
    pub invoice: Invoice,
    pub customer: Option<Customer>,
    /// The IANA zone the invoice's periods were cut in, to show its dates as the customer's.
    pub zone: String,
    /// Now on the invoice's clock (a test clock's frozen time, or the system's).
    pub now: Timestamp,
    /// The card an invoice was paid with, for its receipt.
    pub paid_with: Option<CardDetails>,
    pub attempt: AttemptState,
}

/// Where the invoice's current attempt stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptState {
    None,
    /// The customer's bank waits for the challenge of this attempt, on the gateway's charge
    /// `charge_ref` (what its script needs to run the challenge).
    Challenge {
        attempt: i64,
        charge_ref: String,
    },
    /// At the gateway right now.
    Charging,
}

#[derive(Debug)]
pub enum InvoicePayResult {
    Paid,
    Declined {
        message: String,
    },
    /// Show the 3-D Secure challenge of this attempt.
    RequiresAction {
        attempt: i64,
    },
    /// Another request (a double click, a second tab) is paying this invoice right now.
    InProgress,
    /// The card itself cannot be used (not a test card in test mode, and so on).
    CardRejected(FieldError),
    /// Void or draft: nothing to pay.
    NotPayable,
    Locked,
}

/// The gateway's key for an attempt, the same the engine's off-session charges use.
fn attempt_key(invoice: &InvoiceId, attempt: i64) -> String {
    format!("{invoice}-a{attempt}")
}

pub async fn load_page(state: &AppState, id: &InvoiceId) -> Result<Option<InvoicePage>, FlowError> {
    let mut conn = state.db.conn().await?;
    let Some((owner, invoice)) = db::subscriptions::get_invoice_any(&mut conn, id, &state.settings.public_url).await?
    else {
        return Ok(None);
    };
    let merchant_name =
        db::merchants::get(&mut conn, owner.merchant_id.as_str()).await?.map(|m| m.name).unwrap_or_default();
    let customer = db::customers::get(&mut conn, &owner, &invoice.customer).await?;
    let zone = match &invoice.subscription {
        Some(s) => db::subscriptions::get_any(&mut conn, s).await?.map(|(_, s)| s.customer_timezone),
        None => None,
    }
    .unwrap_or_else(|| "UTC".into());
    let now = billing::now_on(state, &mut conn, invoice.collection.test_clock.as_ref()).await?;
    let paid_with = match (&invoice.status, &invoice.payment_method) {
        (InvoiceStatus::Paid, Some(pm)) => db::payments::saved_card(&mut conn, pm).await?.map(|(_, c)| c.details),
        _ => None,
    };
    drop(conn);
    let attempt = attempt_state(state, &owner, &invoice).await?;
    Ok(Some(InvoicePage { owner, merchant_name, invoice, customer, zone, now, paid_with, attempt }))
}

async fn attempt_state(state: &AppState, owner: &Owner, invoice: &Invoice) -> Result<AttemptState, FlowError> {
    if !(invoice.collection.charging && invoice.status == InvoiceStatus::Open) {
        return Ok(AttemptState::None);
    }
    let Some(gateway) = state.gateways.for_mode(owner.mode) else { return Ok(AttemptState::Charging) };
    Ok(match pending_challenge(state, gateway, invoice).await? {
        Some(charge_ref) => AttemptState::Challenge { attempt: invoice.attempt_count, charge_ref },
        None => AttemptState::Charging,
    })
}

/// The charge reference of the invoice's current attempt when it waits on a challenge.
async fn pending_challenge(
    state: &AppState,
    gateway: &dyn PaymentGateway,
    invoice: &Invoice,
) -> Result<Option<String>, FlowError> {
    Ok(match current_attempt(state, gateway, invoice).await? {
        Some(ChargeOutcome::RequiresAction { gateway_ref }) => Some(gateway_ref),
        _ => None,
    })
}

/// What the gateway recorded for the invoice's current attempt, if anything.
async fn current_attempt(
    state: &AppState,
    gateway: &dyn PaymentGateway,
    invoice: &Invoice,
) -> Result<Option<ChargeOutcome>, FlowError> {
    // Stripe finds a charge by its key among the paying customer's PaymentIntents.
    let gateway_customer = match &invoice.payment_method {
        Some(pm) => {
            let mut conn = state.db.conn().await?;
            db::payments::saved_card(&mut conn, pm).await?.and_then(|(_, card)| card.gateway_customer)
        }
        None => None,
    };
    let key = attempt_key(&invoice.invoice_id, invoice.attempt_count);
    let lookup =
        ChargeLookup { idempotency_key: &key, gateway_customer: gateway_customer.as_deref(), charge_ref: None };
    Ok(gateway.lookup(lookup).await?)
}

/// Why an invoice takes no card now, if it does not.
fn not_payable(invoice: &Invoice) -> Option<InvoicePayResult> {
    match invoice.status {
        InvoiceStatus::Paid => Some(InvoicePayResult::Paid),
        InvoiceStatus::Void | InvoiceStatus::Draft => Some(InvoicePayResult::NotPayable),
        InvoiceStatus::Open | InvoiceStatus::Uncollectible if invoice.attempt_count >= PAGE_ATTEMPT_LIMIT => {
            Some(InvoicePayResult::Locked)
        }
        InvoiceStatus::Open | InvoiceStatus::Uncollectible => None,
    }
}

/// Pays an open (or uncollectible) invoice with a card typed on its page. Runs on its own task so
/// that a browser that goes away mid-payment cannot leave it half done.
pub async fn pay(state: &AppState, id: &InvoiceId, card: CardInput) -> Result<InvoicePayResult, FlowError> {
    let (state2, id2) = (state.clone(), id.clone());
    match tokio::spawn(async move { pay_inner(&state2, &id2, card).await }).await {
        Ok(result) => result,
        Err(e) => Err(FlowError::Internal(anyhow::anyhow!("invoice payment task failed: {e}"))),
    }
}

async fn read(state: &AppState, conn: &mut Conn, id: &InvoiceId) -> Result<(Owner, Invoice), FlowError> {
    db::subscriptions::get_invoice_any(conn, id, &state.settings.public_url)
        .await?
        .ok_or_else(|| FlowError::NotFound { resource: "invoice", id: id.to_string() })
}

/// The invoice and its gateway when it takes a new card now; otherwise how it stands. A challenge
/// the customer walked away from gives way to the new card; a charge at the gateway right now is
/// waited for.
async fn ready_for_card<'s>(
    state: &'s AppState,
    id: &InvoiceId,
) -> Result<Result<&'s dyn PaymentGateway, InvoicePayResult>, FlowError> {
    let (owner, invoice) = read(state, &mut *state.db.conn().await?, id).await?;
    if let Some(done) = not_payable(&invoice) {
        return Ok(Err(done));
    }
    let gateway = super::gateway(state, owner.mode)?;
    if invoice.collection.charging && !abandon_challenge(state, gateway, &owner, &invoice).await? {
        return Ok(Err(wait_for_other_payment(state, id).await?));
    }
    Ok(Ok(gateway))
}

async fn pay_inner(state: &AppState, id: &InvoiceId, card: CardInput) -> Result<InvoicePayResult, FlowError> {
    let gateway = match ready_for_card(state, id).await? {
        Ok(gateway) => gateway,
        Err(done) => return Ok(done),
    };
    let CardEntry::OwnForm(cards) = gateway.card_entry() else {
        return Err(FlowError::Unprocessable {
            code: "card_entry",
            message: "invoices are paid on the page only with the sandbox's card form for now".into(),
        });
    };
    let saved = match cards.save_card(&card).await {
        Ok(saved) => saved,
        Err(GatewayError::CardRejected { param, message }) => {
            return Ok(InvoicePayResult::CardRejected(FieldError::new(param, message)))
        }
        Err(GatewayError::Unavailable(e)) => return Err(FlowError::Unavailable(e)),
    };
    let postal_code = card.postal_code.clone();
    drop(card);
    pay_with_saved(state, gateway, id, &saved, postal_code).await
}

/// What the browser needs to confirm a card with the processor's script for an invoice.
#[derive(Debug)]
pub enum SetupStart {
    Ready {
        setup_ref: String,
        client_secret: String,
    },
    /// The invoice takes no card now (paid, void, locked, another payment running).
    Settled(InvoicePayResult),
}

fn browser_cards(gateway: &dyn PaymentGateway) -> Result<&dyn BrowserCards, FlowError> {
    match gateway.card_entry() {
        CardEntry::Browser(cards) => Ok(cards),
        CardEntry::OwnForm(_) => Err(FlowError::Unprocessable {
            code: "card_entry",
            message: "this invoice takes cards on its own form".into(),
        }),
    }
}

/// Starts saving a card at the processor for paying invoice `id` (the processor's own card fields,
/// Stripe Elements): on the customer's processor customer when they have one. Nothing is charged
/// and the invoice is not held until the card is confirmed and [`finish_setup`] runs.
pub async fn start_setup(state: &AppState, id: &InvoiceId) -> Result<SetupStart, FlowError> {
    let gateway = match ready_for_card(state, id).await? {
        Ok(gateway) => gateway,
        Err(done) => return Ok(SetupStart::Settled(done)),
    };
    let cards = browser_cards(gateway)?;
    let (email, existing) = {
        let mut conn = state.db.conn().await?;
        let (owner, invoice) = read(state, &mut conn, id).await?;
        let email = db::customers::get(&mut conn, &owner, &invoice.customer).await?.and_then(|c| c.email);
        let existing = db::payments::customer_gateway_customer(&mut conn, &invoice.customer, gateway.name()).await?;
        (email.unwrap_or_default(), existing)
    };
    // Each start is its own setup at the processor (a retry after a decline needs a fresh one).
    let key = format!("{id}-setup-{}", ulid::Ulid::new());
    let started = cards.start_setup(&key, &email, existing.as_deref()).await?;
    Ok(SetupStart::Ready { setup_ref: started.setup_ref, client_secret: started.client_secret })
}

/// The browser is back from confirming the card of setup `setup_ref` (which the page vouched was
/// started for this invoice): what happened is read from the processor, and a saved card is
/// charged for the invoice with the customer present.
pub async fn finish_setup(state: &AppState, id: &InvoiceId, setup_ref: String) -> Result<InvoicePayResult, FlowError> {
    let (state2, id2) = (state.clone(), id.clone());
    // Its own task: a browser that goes away mid-charge cannot leave it half done.
    match tokio::spawn(async move { finish_setup_inner(&state2, &id2, &setup_ref).await }).await {
        Ok(result) => result,
        Err(e) => Err(FlowError::Internal(anyhow::anyhow!("invoice card setup task failed: {e}"))),
    }
}

async fn finish_setup_inner(state: &AppState, id: &InvoiceId, setup_ref: &str) -> Result<InvoicePayResult, FlowError> {
    let gateway = match ready_for_card(state, id).await? {
        Ok(gateway) => gateway,
        Err(done) => return Ok(done),
    };
    match browser_cards(gateway)?.finish_setup(setup_ref).await? {
        SetupResult::Saved(card) => pay_with_saved(state, gateway, id, &card, None).await,
        // The card was refused before any charge: the invoice's attempts are untouched.
        SetupResult::Declined(code) => Ok(InvoicePayResult::Declined { message: code.customer_message().into() }),
        SetupResult::Pending => Ok(InvoicePayResult::Declined { message: NOT_CONFIRMED.into() }),
    }
}

const NOT_CONFIRMED: &str = "Your card was not confirmed, and nothing was charged. Please try again.";

/// Records `saved` as the customer's card and pays the invoice with it: one claimed attempt,
/// charged on-session under the engine's key, settled by the engine.
async fn pay_with_saved(
    state: &AppState,
    gateway: &dyn PaymentGateway,
    id: &InvoiceId,
    saved: &SavedCard,
    postal_code: Option<String>,
) -> Result<InvoicePayResult, FlowError> {
    let (job, amount, currency) = {
        let mut tx = state.db.begin().await?;
        let (owner, mut invoice) = read(state, &mut tx, id).await?;
        if invoice.collection.charging || not_payable(&invoice).is_some() {
            drop(tx);
            return wait_for_other_payment(state, id).await;
        }
        let now = billing::now_on(state, &mut tx, invoice.collection.test_clock.as_ref()).await?;
        if !billing::reopen_for_payment(&mut tx, &mut invoice, now).await? {
            drop(tx);
            return wait_for_other_payment(state, id).await;
        }
        let customer = db::customers::get(&mut tx, &owner, &invoice.customer).await?;
        let pm = saved_payment_method(&owner, &invoice, customer.as_ref(), saved, postal_code, now);
        db::payments::insert_payment_method(
            &mut tx,
            &owner,
            &pm,
            gateway.name(),
            &saved.gateway_ref,
            saved.gateway_customer.as_deref(),
        )
        .await?;
        // The invoice's card is recorded before the charge: an attempt whose answer is lost is asked
        // again by the engine with this card, under the same key.
        invoice.payment_method = Some(pm.payment_method_id);
        let (amount, currency) = (invoice.amount_due, invoice.currency);
        let Some(job) = billing::claim(state, &mut tx, &owner, invoice, now).await? else {
            drop(tx);
            return wait_for_other_payment(state, id).await;
        };
        tx.commit().await?;
        (job, amount, currency)
    };

    let key = attempt_key(&job.invoice, job.attempt);
    let outcome = gateway
        .charge(ChargeRequest {
            idempotency_key: &key,
            card: saved,
            amount,
            currency,
            off_session: false,
            manual_capture: false,
        })
        .await;
    match outcome {
        Ok(outcome) => finish(state, gateway, &job, outcome).await,
        // Unknown outcome: the attempt stays claimed, and after its lease the engine asks the
        // gateway again under the same key.
        Err(e) => {
            tracing::warn!(invoice = %job.invoice, attempt = job.attempt, error = %e, "invoice charge outcome unknown");
            Ok(InvoicePayResult::InProgress)
        }
    }
}

fn saved_payment_method(
    owner: &Owner,
    invoice: &Invoice,
    customer: Option<&Customer>,
    saved: &SavedCard,
    postal_code: Option<String>,
    now: Timestamp,
) -> PaymentMethod {
    PaymentMethod {
        payment_method_id: PaymentMethodId::generate(),
        customer: invoice.customer.clone(),
        card: saved.details.clone(),
        billing_details: BillingDetails {
            email: customer.and_then(|c| c.email.clone()),
            name: customer.and_then(Customer::full_name),
            phone: customer.and_then(|c| c.phone.clone()),
            postal_code,
        },
        // Saved for the renewals to come, as a card given on the checkout page is.
        off_session: true,
        created_at: now,
        test_mode: owner.mode.is_test(),
    }
}

/// Applies the gateway's answer to a claimed attempt: a challenge is shown; a payment or a decline
/// is settled by the engine, once.
async fn finish(
    state: &AppState,
    gateway: &dyn PaymentGateway,
    job: &ChargeJob,
    outcome: ChargeOutcome,
) -> Result<InvoicePayResult, FlowError> {
    let result = match outcome {
        ChargeOutcome::RequiresAction { .. } => return Ok(InvoicePayResult::RequiresAction { attempt: job.attempt }),
        ChargeOutcome::Succeeded { gateway_ref } => AttemptResult::Paid { gateway: gateway.name().into(), gateway_ref },
        ChargeOutcome::Declined { code } => AttemptResult::Declined { code },
    };
    let mut tx = state.db.begin().await?;
    let (_, invoice) = read(state, &mut tx, &job.invoice).await?;
    let now = billing::now_on(state, &mut tx, invoice.collection.test_clock.as_ref()).await?;
    let status_before = match (&result, &invoice.subscription) {
        // The customer just chose this card: the subscription's renewals use it from now on. Set
        // before `settle`, so the subscription it reports carries it.
        (AttemptResult::Paid { .. }, Some(sub))
            if invoice.collection.charging && invoice.attempt_count == job.attempt =>
        {
            match &invoice.payment_method {
                Some(pm) => make_default(&mut tx, sub, &invoice, pm, now).await?,
                None => None,
            }
        }
        _ => None,
    };
    if !billing::settle(state, &mut tx, job, &result, now).await? {
        // Settled through another door first (the engine after the lease, a second tab).
        drop(tx);
        return answered(state, &job.invoice).await;
    }
    if let Some((sub_id, status)) = status_before {
        // `settle` reports a subscription whose status it changed; a new card alone is reported here.
        if let Some((owner, sub)) = db::subscriptions::get_any(&mut tx, &sub_id).await? {
            if sub.subscription_status == status {
                events::emit(
                    &mut tx,
                    &owner,
                    "customer.subscription.updated",
                    "subscription",
                    sub_id.as_str(),
                    &sub,
                    now,
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(match result {
        AttemptResult::Paid { .. } => InvoicePayResult::Paid,
        AttemptResult::Declined { code } => InvoicePayResult::Declined { message: code.customer_message().into() },
        AttemptResult::NoCard => InvoicePayResult::Declined { message: GENERIC_FAILURE.into() },
    })
}

const GENERIC_FAILURE: &str = "This payment did not go through. Please try again or use another card.";

/// Makes `pm` the default card of the invoice's subscription when the subscription's own customer
/// pays it (not a parent paying for a child). Returns the subscription and its status before.
async fn make_default(
    conn: &mut Conn,
    sub_id: &SubscriptionId,
    invoice: &Invoice,
    pm: &PaymentMethodId,
    now: Timestamp,
) -> Result<Option<(SubscriptionId, crate::domain::subscription::SubscriptionStatus)>, FlowError> {
    // The engine may bump the subscription's version between our read and write (a renewal on
    // PostgreSQL); the change is re-applied to a fresh read.
    for _ in 0..5 {
        let Some((_, mut sub)) = db::subscriptions::get_any(conn, sub_id).await? else { return Ok(None) };
        if sub.customer_id != invoice.customer || sub.default_payment_method.as_ref() == Some(pm) {
            return Ok(None);
        }
        let status = sub.subscription_status;
        sub.default_payment_method = Some(pm.clone());
        sub.updated_at = now;
        if db::subscriptions::save(conn, &mut sub).await? {
            return Ok(Some((sub_id.clone(), status)));
        }
    }
    Err(FlowError::Internal(anyhow::anyhow!("subscription {sub_id} kept changing while its card was set")))
}

/// Ends an unanswered challenge of the invoice's current attempt (settling it as a decline).
/// Returns `false` when the attempt is not waiting on a challenge but at the gateway.
async fn abandon_challenge(
    state: &AppState,
    gateway: &dyn PaymentGateway,
    owner: &Owner,
    invoice: &Invoice,
) -> Result<bool, FlowError> {
    let Some(charge_ref) = pending_challenge(state, gateway, invoice).await? else { return Ok(false) };
    let job = ChargeJob {
        owner: owner.clone(),
        invoice: invoice.invoice_id.clone(),
        attempt: invoice.attempt_count,
        resumed: true,
    };
    let key = attempt_key(&job.invoice, job.attempt);
    let outcome = gateway
        .complete_action(
            PendingCharge { idempotency_key: &key, charge_ref: Some(&charge_ref) },
            ChallengeAnswer::Abandoned,
        )
        .await?;
    finish(state, gateway, &job, outcome).await?;
    Ok(true)
}

/// The customer answered the 3-D Secure challenge of `attempt`.
pub async fn authenticate(
    state: &AppState,
    id: &InvoiceId,
    attempt: i64,
    answer: ChallengeAnswer,
) -> Result<InvoicePayResult, FlowError> {
    let (state2, id2) = (state.clone(), id.clone());
    let task = tokio::spawn(async move { authenticate_inner(&state2, &id2, attempt, answer).await });
    match task.await {
        Ok(result) => result,
        Err(e) => Err(FlowError::Internal(anyhow::anyhow!("invoice authentication task failed: {e}"))),
    }
}

async fn authenticate_inner(
    state: &AppState,
    id: &InvoiceId,
    attempt: i64,
    answer: ChallengeAnswer,
) -> Result<InvoicePayResult, FlowError> {
    let (owner, invoice) = {
        let mut tx = state.db.begin().await?;
        let (owner, invoice) = read(state, &mut tx, id).await?;
        if !(invoice.collection.charging && invoice.attempt_count == attempt && invoice.status == InvoiceStatus::Open) {
            // Answered already (a double click, a reload, the engine after the lease).
            drop(tx);
            return answered(state, id).await;
        }
        // A fresh lease, so the engine does not ask about the attempt while the answer is applied.
        let now = billing::now_on(state, &mut tx, invoice.collection.test_clock.as_ref()).await?;
        if billing::claim(state, &mut tx, &owner, invoice.clone(), now).await?.is_none() {
            drop(tx);
            return answered(state, id).await;
        }
        tx.commit().await?;
        (owner, invoice)
    };
    let gateway = super::gateway(state, owner.mode)?;
    let key = attempt_key(id, attempt);
    let outcome = match current_attempt(state, gateway, &invoice).await? {
        Some(ChargeOutcome::RequiresAction { gateway_ref }) => {
            gateway
                .complete_action(PendingCharge { idempotency_key: &key, charge_ref: Some(&gateway_ref) }, answer)
                .await?
        }
        // Answered at the gateway already (the processor's own dialog ran in the browser).
        Some(answered) => answered,
        None => gateway.complete_action(PendingCharge { idempotency_key: &key, charge_ref: None }, answer).await?,
    };
    finish(state, gateway, &ChargeJob { owner, invoice: id.clone(), attempt, resumed: true }, outcome).await
}

/// How an invoice stands for a request that came after its attempt was answered elsewhere.
async fn answered(state: &AppState, id: &InvoiceId) -> Result<InvoicePayResult, FlowError> {
    let (owner, invoice) = read(state, &mut *state.db.conn().await?, id).await?;
    if let Some(done) = not_payable(&invoice) {
        return Ok(done);
    }
    if invoice.collection.charging {
        let gateway = super::gateway(state, owner.mode)?;
        return Ok(match pending_challenge(state, gateway, &invoice).await? {
            Some(_) => InvoicePayResult::RequiresAction { attempt: invoice.attempt_count },
            None => InvoicePayResult::InProgress,
        });
    }
    Ok(InvoicePayResult::Declined { message: decline_message(&invoice) })
}

/// What the last failed attempt tells the customer.
fn decline_message(invoice: &Invoice) -> String {
    invoice
        .last_decline_code
        .as_deref()
        .and_then(DeclineCode::from_wire)
        .map_or(GENERIC_FAILURE, DeclineCode::customer_message)
        .to_string()
}

/// Another request holds the invoice's attempt: wait (bounded) for its answer and answer as it did.
async fn wait_for_other_payment(state: &AppState, id: &InvoiceId) -> Result<InvoicePayResult, FlowError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (owner, invoice) = read(state, &mut *state.db.conn().await?, id).await?;
        if let Some(done) = not_payable(&invoice) {
            return Ok(done);
        }
        if !invoice.collection.charging {
            return Ok(InvoicePayResult::Declined {
                message: format!(
                    "Your other payment attempt for this invoice did not go through: {}",
                    decline_message(&invoice)
                ),
            });
        }
        let gateway = super::gateway(state, owner.mode)?;
        if pending_challenge(state, gateway, &invoice).await?.is_some() {
            return Ok(InvoicePayResult::RequiresAction { attempt: invoice.attempt_count });
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(InvoicePayResult::InProgress);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
