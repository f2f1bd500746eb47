//! Checkout sessions: create, pay, complete (exactly once), expire. Every payment outcome, from
//! whichever door it comes (the page, the 3-D Secure page, the reconciler), goes through
//! `apply_payment_outcome`.

use std::time::Duration;

use crate::db::{self, checkout_sessions::Completion, payments::attempt_status, Conn};
use crate::domain::billing_period::{PeriodUnit, Schedule, ScheduleSpec, Zone};
use crate::domain::card::CardInput;
use crate::domain::checkout_session::{
    self as cs, CaptureMethod, CheckoutSession, Defaults, LineItem, SessionMode, SessionStatus, SubscriptionData,
    TotalDetails,
};
use crate::domain::customer::{Contact, Customer};
use crate::domain::ids::{
    CheckoutSessionId, ConsultationId, CustomerId, InvoiceId, LineItemId, PaymentAttemptId, PaymentIntentId,
    PaymentMethodId, PriceId, ProductId, SubscriptionId, TestClockId,
};
use crate::domain::metadata::Metadata;
use crate::domain::money::Currency;
use crate::domain::payment::{BillingDetails, PaymentIntent, PaymentIntentStatus, PaymentMethod};
use crate::domain::price::{Interval, Price, PriceType, Recurring};
use crate::domain::product::{Eligibility, Product, VisitType};
use crate::domain::subscription::{
    BillingCadence, BillingCycle, BillingReason, CollectionMethod, CollectionState, EngineState, Invoice, InvoiceLine,
    InvoiceStatus, ItemKind, LineKind, Subscription, SubscriptionItem, SubscriptionStatus,
};
use crate::domain::subscription_request::{InvoiceBilling, PaymentBehavior, ProrationBehavior};
use crate::domain::timestamp::Timestamp;
use crate::domain::{FieldError, Owner};
use crate::gateway::{
    CardEntry, ChallengeAnswer, ChargeLookup, ChargeOutcome, ChargeRequest, GatewayError, PendingCharge,
};
use crate::state::AppState;

use super::{events, FlowError};

/// A payment holding a session for longer than this (by default; PAYMENT_STALE_SECONDS) is presumed
/// dead (its process crashed); the reconciler settles it and a new payment may start.
pub const STALE_PAYMENT_SECONDS: i64 = 120;
/// A 3-D Secure challenge left unanswered this long is canceled.
pub const CHALLENGE_TIMEOUT_SECONDS: i64 = 15 * 60;

// ---------------------------------------------------------------------------------------------
// Create

/// A product for an inline `price_data` line: an existing one, or one made for this session.
#[derive(Clone, Debug)]
pub enum ProductRef {
    Existing(ProductId),
    New { name: String, description: Option<String>, eligibility: Eligibility, visit_type: Option<VisitType> },
}

#[derive(Clone, Debug)]
pub enum NewLineItem {
    Price {
        price: PriceId,
        quantity: i64,
    },
    Inline {
        product: ProductRef,
        unit_amount: i64,
        currency: Currency,
        recurring: Option<(Interval, u32)>,
        quantity: i64,
    },
}

/// A session request whose fields are each well-formed; what needs the database (prices exist, are
/// active, agree with the mode and with each other) is checked by `create`.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub mode: SessionMode,
    pub line_items: Vec<NewLineItem>,
    pub success_url: String,
    pub cancel_url: String,
    pub customer: Option<CustomerId>,
    pub customer_email: Option<String>,
    pub defaults: Defaults,
    pub client_reference_id: Option<String>,
    pub metadata: Option<Metadata>,
    pub expires_at: Option<Timestamp>,
    pub allow_promotion_codes: bool,
    pub shipping_address_collection: bool,
    pub capture_method: CaptureMethod,
    pub setup_future_use: Option<String>,
    pub subscription_data: Option<SubscriptionData>,
    pub currency: Option<Currency>,
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> FlowError {
    FlowError::Invalid(FieldError::new(param, message))
}

/// Resolves one line to its price and product, making inline ones.
async fn resolve_line(
    conn: &mut Conn,
    owner: &Owner,
    item: &NewLineItem,
    param: &str,
    now: Timestamp,
    created: &mut Vec<(Option<Product>, Price)>,
) -> Result<(Price, Product, i64), FlowError> {
    match item {
        NewLineItem::Price { price, quantity } => {
            let price = db::prices::get(conn, owner, price)
                .await?
                .ok_or_else(|| invalid(format!("{param}.price"), format!("No such price: '{price}'")))?;
            if !price.active {
                return Err(FlowError::Unprocessable {
                    code: "price_inactive",
                    message: format!("{param}.price: the price {} is archived (active: false)", price.price_id),
                });
            }
            let product = db::products::get(conn, owner, &price.product)
                .await?
                .ok_or_else(|| FlowError::Internal(anyhow::anyhow!("price without product")))?;
            if !product.active {
                return Err(FlowError::Unprocessable {
                    code: "product_inactive",
                    message: format!("{param}.price: the product {} is archived (active: false)", product.product_id),
                });
            }
            Ok((price, product, *quantity))
        }
        NewLineItem::Inline { product, unit_amount, currency, recurring, quantity } => {
            let (product, new_product) = match product {
                ProductRef::Existing(id) => {
                    let p = db::products::get(conn, owner, id).await?.ok_or_else(|| {
                        invalid(format!("{param}.price_data.product"), format!("No such product: '{id}'"))
                    })?;
                    if !p.active {
                        return Err(FlowError::Unprocessable {
                            code: "product_inactive",
                            message: format!("{param}.price_data.product: the product {id} is archived"),
                        });
                    }
                    (p, false)
                }
                ProductRef::New { name, description, eligibility, visit_type } => (
                    Product {
                        product_id: ProductId::generate(),
                        name: name.clone(),
                        description: description.clone(),
                        created_at: now,
                        visit_type: *visit_type,
                        active: true,
                        upc_code: None,
                        gtin: None,
                        hsa_fsa_eligibility: *eligibility,
                        url: None,
                        metadata: None,
                        test_mode: owner.mode.is_test(),
                        updated_at: now,
                    },
                    true,
                ),
            };
            let recurring = recurring.map(|(interval, interval_count)| Recurring {
                interval,
                interval_count,
                trial_period_days: None,
            });
            // Inline prices belong to this session only: archived from birth so nobody reuses them.
            let price = Price {
                price_id: PriceId::generate(),
                description: None,
                unit_amount: *unit_amount,
                price: *unit_amount,
                currency: *currency,
                price_type: if recurring.is_some() { PriceType::Recurring } else { PriceType::OneTime },
                recurring,
                active: false,
                product: product.product_id.clone(),
                created_at: now,
                metadata: None,
                test_mode: owner.mode.is_test(),
                hsa_fsa_eligibility: product.hsa_fsa_eligibility,
            };
            created.push((new_product.then(|| product.clone()), price.clone()));
            Ok((price, product, *quantity))
        }
    }
}

pub async fn create(state: &AppState, owner: &Owner, new: NewSession) -> Result<CheckoutSession, FlowError> {
    let now = state.clock.now();
    let expires_at = match new.expires_at {
        None => now.plus_seconds(cs::DEFAULT_LIFETIME_SECONDS),
        Some(t) => {
            let lifetime = t.unix_seconds() - now.unix_seconds();
            if !(cs::MIN_LIFETIME_SECONDS..=cs::MAX_LIFETIME_SECONDS).contains(&lifetime) {
                return Err(invalid(
                    "checkout_session.expires_at",
                    "expires_at must be between 30 minutes and 24 hours from now (Unix seconds)",
                ));
            }
            t
        }
    };
    // A mode without a gateway (live without a live Stripe key) cannot take payments.
    super::gateway(state, owner.mode)?;

    let mut tx = state.db.begin().await?;
    if let Some(customer) = &new.customer {
        if db::customers::get(&mut tx, owner, customer).await?.is_none() {
            return Err(invalid("checkout_session.customer", format!("No such customer: '{customer}'")));
        }
    }

    let mut created = Vec::new();
    let mut lines: Vec<(Price, Product, i64)> = Vec::new();
    for (i, item) in new.line_items.iter().enumerate() {
        let param = format!("checkout_session.line_items[{i}]");
        lines.push(resolve_line(&mut tx, owner, item, &param, now, &mut created).await?);
    }

    // The rules between lines: one currency, a mode that fits the prices, one cadence.
    let currency = match lines.first() {
        Some((p, _, _)) => p.currency,
        None => new.currency.unwrap_or(Currency::USD),
    };
    let mut cadence: Option<Recurring> = None;
    for (i, (price, _, _)) in lines.iter().enumerate() {
        let param = format!("checkout_session.line_items[{i}]");
        if price.currency != currency {
            return Err(invalid(
                param,
                format!(
                    "all line items must share one currency; this one is {} and the first is {currency}",
                    price.currency
                ),
            ));
        }
        match (new.mode, price.recurring) {
            (SessionMode::Payment, Some(_)) => {
                return Err(invalid(
                    param,
                    "mode `payment` accepts only one-time prices; use mode `subscription` for recurring prices",
                ))
            }
            (SessionMode::Subscription, Some(r)) => match cadence {
                Some(c) if !c.same_cadence(&r) => {
                    return Err(invalid(
                        param,
                        "all recurring line items must bill on the same interval and interval_count",
                    ))
                }
                Some(_) => {}
                None => cadence = Some(r),
            },
            _ => {}
        }
    }
    if new.mode == SessionMode::Subscription && cadence.is_none() {
        return Err(invalid("checkout_session.line_items", "mode `subscription` needs at least one recurring price"));
    }

    let items: Vec<LineItem> = lines
        .iter()
        .map(|(price, product, quantity)| LineItem {
            line_item_id: LineItemId::generate(),
            price: price.price_id.clone(),
            product: product.product_id.clone(),
            description: product.name.clone(),
            product_description: product.description.clone(),
            quantity: *quantity,
            unit_amount: price.unit_amount,
            currency: price.currency,
            amount_subtotal: price.unit_amount * quantity,
            amount_total: price.unit_amount * quantity,
            recurring: price.recurring,
        })
        .collect();
    let in_trial = new.mode == SessionMode::Subscription
        && (cs::trial_days(new.subscription_data.as_ref(), &items).is_some()
            || new.subscription_data.as_ref().and_then(|d| d.trial_end).is_some());
    let (amount_subtotal, amount_total) = cs::amounts(new.mode, &items, in_trial);

    let products: Vec<&Product> = lines.iter().map(|(_, p, _)| p).collect();
    let hsa_fsa_eligible = !products.is_empty() && products.iter().all(|p| p.hsa_fsa_eligibility.is_eligible());
    let lmn_product = products.iter().find(|p| p.hsa_fsa_eligibility == Eligibility::LetterOfMedicalNecessity);
    let visit_type = lmn_product.and_then(|p| p.visit_type).or_else(|| products.iter().find_map(|p| p.visit_type));

    let session = CheckoutSession {
        allow_promotion_codes: new.allow_promotion_codes,
        amount_total,
        amount_subtotal,
        cancel_url: new.cancel_url,
        capture_method: new.capture_method,
        checkout_session_id: CheckoutSessionId::generate(),
        created_at: now,
        customer: new.customer,
        customer_email: new.customer_email,
        defaults: new.defaults,
        expires_at,
        invoice: None,
        hsa_fsa_eligible,
        letter_of_medical_necessity_required: lmn_product.is_some(),
        metadata: new.metadata,
        mode: new.mode,
        multiple_subscriptions: false,
        payment_intent_id: None,
        redirect_url: String::new(),
        setup_intent: None,
        shipping_options: None,
        shipping_address_collection: new.shipping_address_collection,
        shipping_details: None,
        status: SessionStatus::Open,
        success_url: new.success_url,
        subscription: None,
        tax_rate: None,
        test_mode: owner.mode.is_test(),
        total_details: TotalDetails { amount_discount: 0, amount_tax: None, amount_shipping: None },
        visit_type,
        payment_status: cs::PaymentStatus::Unpaid,
        currency,
        client_reference_id: new.client_reference_id,
        completed_at: None,
        setup_future_use: new.setup_future_use,
        subscription_data: new.subscription_data,
        decline_count: 0,
    };

    for (product, price) in &created {
        if let Some(product) = product {
            db::products::insert(&mut tx, owner, product).await?;
        }
        db::prices::insert(&mut tx, owner, price).await?;
    }
    db::checkout_sessions::insert(&mut tx, owner, &session, &items).await?;
    tx.commit().await?;
    Ok(session.present(&state.settings.public_url, now))
}

/// Expires an open session at the merchant's request.
pub async fn expire(state: &AppState, owner: &Owner, id: &CheckoutSessionId) -> Result<CheckoutSession, FlowError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let session = db::checkout_sessions::get(&mut tx, owner, id)
        .await?
        .ok_or_else(|| FlowError::NotFound { resource: "checkout session", id: id.to_string() })?;
    match session.status {
        SessionStatus::Complete => {
            return Err(FlowError::Unprocessable {
                code: "session_complete",
                message: "this checkout session is complete and cannot be expired".into(),
            })
        }
        SessionStatus::Expired => {
            return Err(FlowError::Unprocessable {
                code: "session_expired",
                message: "this checkout session has already expired".into(),
            })
        }
        SessionStatus::Open => {}
    }
    let stale = now.plus_seconds(-state.settings.payment_stale_seconds);
    if !db::checkout_sessions::expire(&mut tx, id, now, stale).await? {
        return Err(FlowError::Conflict {
            code: "payment_in_progress",
            message: "a payment for this checkout session is in progress; try again in a moment".into(),
            param: None,
        });
    }
    let expired = emit_expired(&mut tx, state, owner, id, now).await?;
    tx.commit().await?;
    state.page_cache.invalidate(id.as_str());
    Ok(expired)
}

async fn emit_expired(
    conn: &mut Conn,
    state: &AppState,
    owner: &Owner,
    id: &CheckoutSessionId,
    now: Timestamp,
) -> Result<CheckoutSession, FlowError> {
    let session = db::checkout_sessions::get(conn, owner, id)
        .await?
        .ok_or_else(|| FlowError::Internal(anyhow::anyhow!("session vanished")))?
        .present(&state.settings.public_url, now);
    events::emit(conn, owner, "checkout.session.expired", "checkout_session", id.as_str(), &session, now).await?;
    Ok(session)
}

/// Marks sessions whose time has passed as expired and reports each once. Returns how many.
pub async fn expire_due(state: &AppState, limit: i64) -> Result<usize, FlowError> {
    let now = state.clock.now();
    let ids = {
        let mut conn = state.db.conn().await?;
        db::checkout_sessions::due_for_expiry(&mut conn, now, limit).await?
    };
    let mut done = 0;
    for id in ids {
        let mut tx = state.db.begin().await?;
        let Some(owned) = db::checkout_sessions::get_any(&mut tx, &id).await? else {
            continue;
        };
        if db::checkout_sessions::expire(&mut tx, &id, now, now.plus_seconds(-state.settings.payment_stale_seconds))
            .await?
        {
            emit_expired(&mut tx, state, &owned.owner, &id, now).await?;
            tx.commit().await?;
            state.page_cache.invalidate(id.as_str());
            done += 1;
        }
    }
    Ok(done)
}

// ---------------------------------------------------------------------------------------------
// Pay

/// Everything the hosted page shows.
#[derive(Clone, Debug)]
pub struct PageData {
    pub owner: Owner,
    pub merchant_name: String,
    pub session: CheckoutSession,
    pub items: Vec<LineItem>,
    pub customer: Option<Customer>,
    /// A payment waiting for the customer's 3-D Secure answer.
    pub pending_action: Option<PaymentAttemptId>,
}

pub async fn load_page(state: &AppState, id: &CheckoutSessionId) -> Result<Option<PageData>, FlowError> {
    let now = state.clock.now();
    let mut conn = state.db.conn().await?;
    let Some(row) = db::checkout_sessions::page_row(&mut conn, id).await? else {
        return Ok(None);
    };
    let owned = row.owned;
    // Only a session made for a named customer needs a second read, to pre-fill the form.
    let customer = match &owned.session.customer {
        Some(c) if owned.session.status == SessionStatus::Open => {
            db::customers::get(&mut conn, &owned.owner, c).await?
        }
        _ => None,
    };
    let pending_action = row.processing_attempt.filter(|(_, status)| status == "requires_action").map(|(a, _)| a);
    Ok(Some(PageData {
        session: owned.session.present(&state.settings.public_url, now),
        owner: owned.owner,
        merchant_name: row.merchant_name,
        items: owned.items,
        customer,
        pending_action,
    }))
}

/// What the customer submitted: contact details (and questionnaire answers) plus card fields.
#[derive(Clone, Debug)]
pub struct PaymentForm {
    pub contact: Contact,
    pub card: CardInput,
}

#[derive(Debug)]
pub enum PayResult {
    /// Paid (or the card saved): go to the merchant's success URL, or our own confirmation.
    Completed {
        redirect: Option<String>,
    },
    Declined {
        message: String,
    },
    /// Show the 3-D Secure challenge for this attempt.
    RequiresAction {
        attempt: PaymentAttemptId,
    },
    /// Another request (a double click, a second tab) is paying this session right now.
    InProgress,
    Expired,
    Locked,
    /// The card itself cannot be used (not a test card in test mode, and so on).
    CardRejected(FieldError),
}

/// Pays a session: claims it, records the attempt, asks the gateway, applies the outcome. Runs on
/// its own task so that a browser that goes away mid-payment cannot leave it half done.
pub async fn pay(state: &AppState, id: &CheckoutSessionId, form: PaymentForm) -> Result<PayResult, FlowError> {
    let state2 = state.clone();
    let id2 = id.clone();
    match tokio::spawn(async move { pay_inner(&state2, &id2, form).await }).await {
        Ok(result) => result,
        Err(e) => Err(FlowError::Internal(anyhow::anyhow!("payment task failed: {e}"))),
    }
}

async fn pay_inner(state: &AppState, id: &CheckoutSessionId, form: PaymentForm) -> Result<PayResult, FlowError> {
    let now = state.clock.now();
    let owned = {
        let mut conn = state.db.conn().await?;
        db::checkout_sessions::get_any(&mut conn, id)
            .await?
            .ok_or_else(|| FlowError::NotFound { resource: "checkout session", id: id.to_string() })?
    };
    if let Some(done) = settled(&owned.session, now) {
        return Ok(done);
    }

    // A challenge the customer walked away from gives way to this new try.
    abandon_pending_action(state, id).await?;

    let gateway = super::gateway(state, owned.owner.mode)?;
    let CardEntry::OwnForm(cards) = gateway.card_entry() else {
        return Err(FlowError::Unprocessable {
            code: "card_entry",
            message: "this checkout takes cards in the payment processor's own fields".into(),
        });
    };
    let saved = match cards.save_card(&form.card).await {
        Ok(saved) => saved,
        Err(GatewayError::CardRejected { param, message }) => {
            return Ok(PayResult::CardRejected(FieldError::new(param, message)))
        }
        Err(GatewayError::Unavailable(e)) => return Err(FlowError::Unavailable(e)),
    };

    let attempt = PaymentAttemptId::generate();
    {
        let mut tx = state.db.begin().await?;
        let stale = now.plus_seconds(-state.settings.payment_stale_seconds);
        if !db::checkout_sessions::claim_for_payment(&mut tx, id, &attempt, now, stale, cs::MAX_DECLINES).await? {
            drop(tx);
            return wait_for_other_payment(state, id).await;
        }
        let contact = serde_json::to_string(&form.contact).map_err(|e| FlowError::Internal(e.into()))?;
        db::payments::insert_attempt(
            &mut tx,
            db::payments::NewAttempt {
                id: &attempt,
                owner: &owned.owner,
                session: id,
                amount: owned.session.amount_total,
                currency: owned.session.currency,
                contact: &contact,
                card: Some(&saved.details),
                gateway: gateway.name(),
                gateway_ref: Some(&saved.gateway_ref),
                gateway_customer: saved.gateway_customer.as_deref(),
                status: db::payments::attempt_status::PENDING,
            },
            now,
        )
        .await?;
        tx.commit().await?;
    }
    charge_claimed(state, &owned, &attempt, &saved).await
}

/// Charges the saved card for the session `attempt` holds, then records the answer. Shared by the
/// own-form payment and the browser-confirmed setup.
pub(crate) async fn charge_claimed(
    state: &AppState,
    owned: &db::checkout_sessions::OwnedSession,
    attempt: &PaymentAttemptId,
    card: &crate::gateway::SavedCard,
) -> Result<PayResult, FlowError> {
    let (session, gateway) = (&owned.session, super::gateway(state, owned.owner.mode)?);
    crate::crash_points::reached("before_charge");
    let outcome = gateway
        .charge(ChargeRequest {
            idempotency_key: attempt.as_str(),
            card,
            amount: session.amount_total,
            currency: session.currency,
            off_session: false,
            manual_capture: session.capture_method == CaptureMethod::Manual,
        })
        .await;
    crate::crash_points::reached("after_charge");
    let outcome = match outcome {
        Ok(o) => o,
        // Unknown outcome: the attempt stays pending and the reconciler settles it from the
        // gateway's record; the customer is told to look again shortly.
        Err(e) => {
            tracing::warn!(attempt = %attempt, error = %e, "gateway outcome unknown");
            return Ok(PayResult::InProgress);
        }
    };
    apply_payment_outcome(state, attempt, outcome).await
}

/// The result for a session that can no longer take a payment, if it cannot.
pub(crate) fn settled(session: &CheckoutSession, now: Timestamp) -> Option<PayResult> {
    match session.status_at(now) {
        SessionStatus::Complete => Some(PayResult::Completed { redirect: session.success_redirect() }),
        SessionStatus::Expired => Some(PayResult::Expired),
        SessionStatus::Open if session.is_locked() => Some(PayResult::Locked),
        SessionStatus::Open => None,
    }
}

/// Another request holds the session: wait (bounded) for it to finish and answer as it did.
pub(crate) async fn wait_for_other_payment(state: &AppState, id: &CheckoutSessionId) -> Result<PayResult, FlowError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = state.clock.now();
        let row = {
            let mut conn = state.db.conn().await?;
            db::checkout_sessions::page_row(&mut conn, id)
                .await?
                .ok_or_else(|| FlowError::NotFound { resource: "checkout session", id: id.to_string() })?
        };
        if let Some(done) = settled(&row.owned.session, now) {
            return Ok(done);
        }
        match row.processing_attempt {
            None => {
                return Ok(PayResult::Declined {
                    message: "Your other payment attempt for this order did not go through. Please try again.".into(),
                })
            }
            Some((attempt, status)) if status == "requires_action" => return Ok(PayResult::RequiresAction { attempt }),
            Some(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(PayResult::InProgress);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Cancels a 3-D Secure challenge left unanswered, so the session takes a new payment.
pub(crate) async fn abandon_pending_action(state: &AppState, id: &CheckoutSessionId) -> Result<(), FlowError> {
    let holder = {
        let mut conn = state.db.conn().await?;
        db::checkout_sessions::page_row(&mut conn, id).await?.and_then(|row| row.processing_attempt)
    };
    let Some((attempt, status)) = holder else { return Ok(()) };
    if status == "requires_action" {
        resolve_challenge(state, &attempt, ChallengeAnswer::Abandoned).await?;
    }
    Ok(())
}

/// Ends the challenge of `attempt` at its gateway and records what the gateway then says.
async fn resolve_challenge(
    state: &AppState,
    attempt: &PaymentAttemptId,
    answer: ChallengeAnswer,
) -> Result<PayResult, FlowError> {
    let row = {
        let mut conn = state.db.conn().await?;
        db::payments::get_attempt(&mut conn, attempt)
            .await?
            .ok_or_else(|| FlowError::NotFound { resource: "payment attempt", id: attempt.to_string() })?
    };
    let gateway = super::gateway(state, crate::domain::Mode::from_flag(row.livemode))?;
    let outcome = gateway
        .complete_action(PendingCharge { idempotency_key: &row.id, charge_ref: row.charge_ref.as_deref() }, answer)
        .await?;
    apply_payment_outcome(state, attempt, outcome).await
}

/// The customer answered the 3-D Secure challenge of `attempt`.
pub async fn authenticate(
    state: &AppState,
    id: &CheckoutSessionId,
    attempt: &PaymentAttemptId,
    answer: ChallengeAnswer,
) -> Result<PayResult, FlowError> {
    let state2 = state.clone();
    let id2 = id.clone();
    let attempt2 = attempt.clone();
    let task = tokio::spawn(async move {
        let row = {
            let mut conn = state2.db.conn().await?;
            db::payments::get_attempt(&mut conn, &attempt2).await?
        };
        let Some(row) = row.filter(|a| a.session_id.as_deref() == Some(id2.as_str())) else {
            return Err(FlowError::NotFound { resource: "payment attempt", id: attempt2.to_string() });
        };
        if row.status != attempt_status::REQUIRES_ACTION {
            // Answered already (a double click, a reload): report how the session stands.
            return answered(&state2, &row).await;
        }
        resolve_challenge(&state2, &attempt2, answer).await
    });
    match task.await {
        Ok(result) => result,
        Err(e) => Err(FlowError::Internal(anyhow::anyhow!("authentication task failed: {e}"))),
    }
}

/// Records what the gateway said about `attempt`, once. A success completes the session with all
/// its side effects (customer, saved card, payment intent, consultation, subscription, invoice,
/// events) in one transaction.
pub async fn apply_payment_outcome(
    state: &AppState,
    attempt_id: &PaymentAttemptId,
    outcome: ChargeOutcome,
) -> Result<PayResult, FlowError> {
    let (session, result) = record_outcome(state, attempt_id, outcome).await?;
    // Whatever was recorded (a decline towards the lock, a challenge, completion), the page shows it.
    state.page_cache.invalidate(session.as_str());
    Ok(result)
}

async fn record_outcome(
    state: &AppState,
    attempt_id: &PaymentAttemptId,
    outcome: ChargeOutcome,
) -> Result<(CheckoutSessionId, PayResult), FlowError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let attempt = db::payments::get_attempt(&mut tx, attempt_id)
        .await?
        .ok_or_else(|| FlowError::NotFound { resource: "payment attempt", id: attempt_id.to_string() })?;
    let session_id = CheckoutSessionId::from_trusted(attempt.session_id.clone().unwrap_or_default());
    let owned = db::checkout_sessions::get_any(&mut tx, &session_id)
        .await?
        .ok_or_else(|| FlowError::NotFound { resource: "checkout session", id: session_id.to_string() })?;
    let open_states = [attempt_status::PENDING, attempt_status::REQUIRES_ACTION, attempt_status::SETUP];

    match outcome {
        ChargeOutcome::Declined { code } => {
            if !db::payments::finish_attempt(
                &mut tx,
                attempt_id,
                &open_states,
                "declined",
                Some(code.as_str()),
                Some(code.customer_message()),
                now,
            )
            .await?
            {
                drop(tx);
                return Ok((session_id, answered_now(state, attempt_id).await?));
            }
            // A card refused at the setup step never held the session; the decline still counts.
            if !db::checkout_sessions::release(&mut tx, &session_id, attempt_id, true).await? {
                db::checkout_sessions::count_decline(&mut tx, &session_id).await?;
            }
            tx.commit().await?;
            if owned.session.decline_count + 1 >= cs::MAX_DECLINES {
                return Ok((session_id, PayResult::Locked));
            }
            Ok((session_id, PayResult::Declined { message: code.customer_message().to_string() }))
        }
        ChargeOutcome::RequiresAction { gateway_ref } => {
            if attempt.status == attempt_status::REQUIRES_ACTION {
                // Still waiting on the customer's bank (the dialog was closed unanswered).
                return Ok((session_id, PayResult::RequiresAction { attempt: attempt_id.clone() }));
            }
            if !db::payments::finish_attempt(&mut tx, attempt_id, &["pending"], "requires_action", None, None, now)
                .await?
            {
                drop(tx);
                return Ok((session_id, answered_now(state, attempt_id).await?));
            }
            db::payments::set_attempt_charge_ref(&mut tx, attempt_id, &gateway_ref).await?;
            tx.commit().await?;
            Ok((session_id, PayResult::RequiresAction { attempt: attempt_id.clone() }))
        }
        ChargeOutcome::Succeeded { gateway_ref } => {
            if !db::payments::finish_attempt(
                &mut tx,
                attempt_id,
                &[attempt_status::PENDING, attempt_status::REQUIRES_ACTION],
                attempt_status::SUCCEEDED,
                None,
                None,
                now,
            )
            .await?
            {
                drop(tx);
                return Ok((session_id, answered_now(state, attempt_id).await?));
            }
            db::payments::set_attempt_charge_ref(&mut tx, attempt_id, &gateway_ref).await?;
            let session = complete_session(&mut tx, state, &owned, &attempt, &gateway_ref, now).await?;
            tx.commit().await?;
            Ok((session_id, PayResult::Completed { redirect: session.success_redirect() }))
        }
    }
}

/// How a session stands for a door that comes after its attempt was answered through another one (a
/// double click, a reload, a late webhook, a second process).
pub(crate) async fn answered_now(state: &AppState, attempt: &PaymentAttemptId) -> Result<PayResult, FlowError> {
    let row = {
        let mut conn = state.db.conn().await?;
        db::payments::get_attempt(&mut conn, attempt)
            .await?
            .ok_or_else(|| FlowError::NotFound { resource: "payment attempt", id: attempt.to_string() })?
    };
    answered(state, &row).await
}

async fn answered(state: &AppState, row: &db::payments::AttemptRow) -> Result<PayResult, FlowError> {
    if row.status == attempt_status::REQUIRES_ACTION {
        return Ok(PayResult::RequiresAction { attempt: PaymentAttemptId::from_trusted(row.id.clone()) });
    }
    let session_id = CheckoutSessionId::from_trusted(row.session_id.clone().unwrap_or_default());
    let mut conn = state.db.conn().await?;
    let session = db::checkout_sessions::get_any(&mut conn, &session_id)
        .await?
        .ok_or_else(|| FlowError::NotFound { resource: "checkout session", id: session_id.to_string() })?
        .session;
    Ok(settled(&session, state.clock.now()).unwrap_or_else(|| PayResult::Declined {
        // A decline's message is written for the customer; other endings keep a reason for operators.
        message: match (row.status.as_str(), &row.failure_message) {
            (attempt_status::DECLINED, Some(message)) => message.clone(),
            _ => "This payment did not go through. Please try again.".into(),
        },
    }))
}

async fn complete_session(
    tx: &mut Conn,
    state: &AppState,
    owned: &db::checkout_sessions::OwnedSession,
    attempt: &db::payments::AttemptRow,
    charge_ref: &str,
    now: Timestamp,
) -> Result<CheckoutSession, FlowError> {
    let attempt_id = PaymentAttemptId::from_trusted(attempt.id.clone());
    let contact: Contact = serde_json::from_str(&attempt.contact).map_err(|e| FlowError::Internal(e.into()))?;
    let (owner, session, items) = (&owned.owner, &owned.session, &owned.items);

    // The customer: the one the merchant named, or a new one from the details typed.
    let customer = match &session.customer {
        Some(id) => db::customers::get(tx, owner, id)
            .await?
            .ok_or_else(|| FlowError::Internal(anyhow::anyhow!("session customer vanished")))?,
        None => {
            let customer = Customer {
                customer_id: CustomerId::generate(),
                external_id: None,
                email: Some(contact.email.clone()),
                first_name: contact.first_name.clone(),
                last_name: contact.last_name.clone(),
                phone: contact.phone.clone(),
                shipping: contact.shipping.clone(),
                metadata: None,
                created_at: now,
                test_mode: owner.mode.is_test(),
                test_clock: None,
            };
            db::customers::insert(tx, owner, &customer).await?;
            events::emit(tx, owner, "customer.created", "customer", customer.customer_id.as_str(), &customer, now)
                .await?;
            customer
        }
    };

    let payment_method = if session.saves_card() {
        let pm = PaymentMethod {
            payment_method_id: PaymentMethodId::generate(),
            customer: customer.customer_id.clone(),
            card: crate::domain::payment::CardDetails {
                brand: attempt.card_brand.clone().unwrap_or_default(),
                last4: attempt.card_last4.clone().unwrap_or_default(),
                exp_month: attempt.card_exp_month.unwrap_or(1).clamp(1, 12) as u32,
                exp_year: attempt.card_exp_year.unwrap_or(0).clamp(0, 9999) as i32,
                funding: attempt.card_funding.clone().unwrap_or_else(|| "unknown".into()),
                country: Some("US".into()),
            },
            billing_details: BillingDetails {
                email: Some(contact.email.clone()),
                name: crate::domain::customer::full_name(contact.first_name.as_deref(), contact.last_name.as_deref()),
                phone: contact.phone.clone(),
                postal_code: None,
            },
            off_session: true,
            created_at: now,
            test_mode: owner.mode.is_test(),
        };
        db::payments::insert_payment_method(
            tx,
            owner,
            &pm,
            &attempt.gateway,
            attempt.gateway_ref.as_deref().unwrap_or_default(),
            attempt.gateway_customer.as_deref(),
        )
        .await?;
        Some(pm)
    } else {
        None
    };

    let consultation = match (&contact.lmn, session.letter_of_medical_necessity_required) {
        (Some(answers), true) => {
            let id = ConsultationId::generate();
            let answers_json = serde_json::to_string(answers).map_err(|e| FlowError::Internal(e.into()))?;
            // Test mode approves at once; live consultations wait for a reviewer.
            let status = if owner.mode.is_test() { "approved" } else { "pending" };
            db::payments::insert_consultation(
                tx,
                db::payments::NewConsultation {
                    id: &id,
                    owner,
                    customer: &customer.customer_id,
                    session: &session.checkout_session_id,
                    visit_type: &answers.visit_type,
                    answers: &answers_json,
                    status,
                },
                now,
            )
            .await?;
            let consultation = serde_json::json!({
                "consultation_id": id, "customer": customer.customer_id, "status": status,
                "visit_type": answers.visit_type, "checkout_session": session.checkout_session_id,
            });
            events::emit(tx, owner, "customer.consultation.attached", "consultation", id.as_str(), &consultation, now)
                .await?;
            if status == "approved" {
                events::emit(tx, owner, "consultation.approved", "consultation", id.as_str(), &consultation, now)
                    .await?;
            }
            Some(id)
        }
        _ => None,
    };

    let invoice_id = (session.mode == SessionMode::Subscription).then(InvoiceId::generate);
    let payment_intent = if session.amount_total > 0 {
        let manual = session.capture_method == CaptureMethod::Manual;
        let pi = PaymentIntent {
            payment_intent_id: PaymentIntentId::generate(),
            amount: session.amount_total,
            amount_received: if manual { 0 } else { session.amount_total },
            amount_refunded: 0,
            currency: session.currency,
            status: if manual { PaymentIntentStatus::RequiresCapture } else { PaymentIntentStatus::Succeeded },
            capture_method: session.capture_method.as_str().to_string(),
            customer: Some(customer.customer_id.clone()),
            invoice: invoice_id.clone(),
            checkout_session: Some(session.checkout_session_id.clone()),
            payment_method: payment_method.as_ref().map(|p| p.payment_method_id.clone()),
            last_payment_error: None,
            created_at: now,
            test_mode: owner.mode.is_test(),
        };
        db::payments::insert_payment_intent(
            tx,
            owner,
            db::payments::NewPaymentIntent {
                intent: &pi,
                attempt: Some(&attempt_id),
                gateway: &attempt.gateway,
                gateway_ref: Some(charge_ref),
            },
        )
        .await?;
        let event = if manual { "payment_intent.amount_capturable_updated" } else { "payment_intent.succeeded" };
        events::emit(tx, owner, event, "payment_intent", pi.payment_intent_id.as_str(), &pi, now).await?;
        Some(pi)
    } else {
        None
    };

    let subscription = match (session.mode, invoice_id) {
        (SessionMode::Subscription, Some(invoice_id)) => Some(
            start_subscription(
                tx,
                owner,
                session,
                items,
                &customer,
                payment_method.as_ref(),
                payment_intent.as_ref(),
                invoice_id,
                now,
            )
            .await?,
        ),
        _ => None,
    };

    let completed = db::checkout_sessions::complete(
        tx,
        &session.checkout_session_id,
        &attempt_id,
        Completion {
            customer: &customer.customer_id,
            customer_email: Some(&contact.email),
            payment_intent: payment_intent.as_ref().map(|p| &p.payment_intent_id),
            subscription: subscription.as_ref().map(|s| &s.id),
            invoice: subscription.as_ref().and_then(|s| s.latest_invoice.as_ref()),
            consultation: consultation.as_ref(),
            shipping_details: contact.shipping.as_ref().and_then(|s| {
                serde_json::to_string(&serde_json::json!({
                    "name": crate::domain::customer::full_name(contact.first_name.as_deref(), contact.last_name.as_deref()),
                    "address": s,
                }))
                .ok()
            }),
        },
        now,
    )
    .await?;
    if !completed {
        return Err(FlowError::Internal(anyhow::anyhow!(
            "session {} was not held by attempt {attempt_id}",
            session.checkout_session_id
        )));
    }
    let session = db::checkout_sessions::get(tx, owner, &session.checkout_session_id)
        .await?
        .ok_or_else(|| FlowError::Internal(anyhow::anyhow!("session vanished")))?
        .present(&state.settings.public_url, now);
    events::emit(
        tx,
        owner,
        "checkout.session.completed",
        "checkout_session",
        session.checkout_session_id.as_str(),
        &session,
        now,
    )
    .await?;
    Ok(session)
}

#[allow(clippy::too_many_arguments)]
async fn start_subscription(
    tx: &mut Conn,
    owner: &Owner,
    session: &CheckoutSession,
    items: &[LineItem],
    customer: &Customer,
    payment_method: Option<&PaymentMethod>,
    payment_intent: Option<&PaymentIntent>,
    invoice_id: InvoiceId,
    paid_at: Timestamp,
) -> Result<Subscription, FlowError> {
    let recurring: Vec<&LineItem> = items.iter().filter(|i| i.recurring.is_some()).collect();
    let first = recurring
        .first()
        .and_then(|i| i.recurring.map(|r| (i, r)))
        .ok_or_else(|| FlowError::Internal(anyhow::anyhow!("subscription session without a recurring line")))?;
    let (plan_item, cadence) = first;
    let unit = PeriodUnit::from_interval(cadence.interval);
    let count = cadence.interval_count;
    // A customer on a test clock lives on the clock's time, so its renewals follow the clock.
    let test_clock = customer.test_clock.as_deref().and_then(TestClockId::parse);
    let now = match &test_clock {
        Some(c) => db::test_clocks::frozen_time(tx, c).await?.unwrap_or(paid_at),
        None => paid_at,
    };

    let data = session.subscription_data.as_ref();
    let trial_end = match data.and_then(|d| d.trial_end) {
        Some(end) => Some(Timestamp::from_unix_seconds(end)),
        None => cs::trial_days(data, items).map(|days| now.plus_seconds(i64::from(days) * 86_400)),
    }
    .filter(|end| *end > now);
    let schedule = Schedule::new(ScheduleSpec {
        start: now.to_datetime(),
        unit,
        count,
        cycle: BillingCycle::Anniversary,
        zone: Zone::utc(),
        trial_end: trial_end.map(Timestamp::to_datetime),
        end: None,
    })
    .map_err(|e| FlowError::Internal(anyhow::anyhow!("billing period of a paid session: {e}")))?;
    let period =
        schedule.periods().next().ok_or_else(|| FlowError::Internal(anyhow::anyhow!("billing period out of range")))?;
    let (period_start, period_end) = (Timestamp::from_datetime(period.start), Timestamp::from_datetime(period.end));

    let mut lines = Vec::new();
    for item in items {
        let recurring = item.recurring.is_some();
        lines.push(InvoiceLine {
            kind: LineKind::Item,
            description: if recurring && trial_end.is_some() {
                format!("Trial period for {}", item.description)
            } else {
                item.description.clone()
            },
            price: Some(item.price.clone()),
            quantity: item.quantity,
            amount: if recurring && trial_end.is_some() { 0 } else { item.amount_total },
            period_start: if recurring { period_start } else { now },
            period_end: if recurring { period_end } else { now },
            proration: false,
        });
    }
    let amount_due: i64 = lines.iter().map(|l| l.amount).sum();
    let subscription_id = SubscriptionId::generate();
    let invoice = Invoice {
        hosted_invoice_url: None,
        invoice_id: invoice_id.clone(),
        number: db::subscriptions::next_invoice_number(tx, owner).await?,
        customer: customer.customer_id.clone(),
        subscription: Some(subscription_id.clone()),
        status: InvoiceStatus::Paid,
        amount_due,
        amount_paid: amount_due,
        amount_remaining: 0,
        currency: session.currency,
        period_start,
        period_end,
        due_date: None,
        attempt_count: i64::from(amount_due > 0),
        next_payment_attempt: None,
        lines,
        payment_intent: payment_intent.map(|p| p.payment_intent_id.clone()),
        billing_reason: BillingReason::SubscriptionCreate,
        collection_method: CollectionMethod::ChargeAutomatically,
        payment_method: payment_method.map(|p| p.payment_method_id.clone()),
        last_decline_code: None,
        paid_at: Some(now),
        created_at: now,
        test_mode: owner.mode.is_test(),
        collection: CollectionState {
            charging: false,
            first_failed_at: None,
            test_clock: test_clock.clone(),
            deadline: None,
        },
    };
    let metadata = data
        .and_then(|d| d.metadata.as_ref())
        .and_then(|m| Metadata::parse(m, "subscription_data.metadata").ok().flatten());
    let mut subscription = Subscription {
        id: subscription_id,
        customer_id: customer.customer_id.clone(),
        plan_id: plan_item.price.to_string(),
        subscription_status: if trial_end.is_some() {
            SubscriptionStatus::Trialing
        } else {
            SubscriptionStatus::Active
        },
        currency: session.currency,
        billing_cadence: BillingCadence::InAdvance,
        billing_period: unit,
        billing_period_count: count,
        billing_cycle: BillingCycle::Anniversary,
        billing_anchor: Timestamp::from_datetime(schedule.anchor()),
        start_date: now,
        end_date: None,
        current_period_start: period_start,
        current_period_end: period_end,
        trial_start: trial_end.map(|_| now),
        trial_end,
        cancel_at: None,
        canceled_at: None,
        cancel_at_period_end: false,
        collection_method: CollectionMethod::ChargeAutomatically,
        customer_timezone: "UTC".into(),
        default_payment_method: payment_method.map(|p| p.payment_method_id.clone()),
        latest_invoice: Some(invoice_id),
        lookup_key: None,
        payment_behavior: PaymentBehavior::DefaultActive,
        proration_behavior: ProrationBehavior::CreateProrations,
        commitment: None,
        parent_subscription_id: None,
        invoice_billing: InvoiceBilling::InvoiceToSelf,
        payment_terms: None,
        phases: Vec::new(),
        test_clock,
        items: recurring
            .iter()
            .map(|i| SubscriptionItem {
                price_id: i.price.clone(),
                quantity: i.quantity,
                unit_amount: i.unit_amount,
                description: i.description.clone(),
                kind: ItemKind::Plan,
            })
            .collect(),
        metadata,
        test_mode: owner.mode.is_test(),
        created_at: now,
        updated_at: now,
        engine: EngineState { cycle_invoiced: true, ..EngineState::default() },
    };
    subscription.engine.next_action_at = super::billing::next_action(&subscription);
    db::subscriptions::insert(tx, owner, &subscription, Some(session.checkout_session_id.as_str())).await?;
    db::subscriptions::insert_invoice(tx, owner, &invoice).await?;
    let sid = subscription.id.as_str();
    events::emit(tx, owner, "customer.subscription.created", "subscription", sid, &subscription, now).await?;
    let iid = invoice.invoice_id.as_str();
    for event in ["invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded"] {
        events::emit(tx, owner, event, "invoice", iid, &invoice, now).await?;
    }
    Ok(subscription)
}

/// Settles attempts whose outcome was never recorded (the process died after asking the gateway,
/// or while waiting for it; the browser confirmed a card and went away), from the gateway's own
/// record. Returns how many were settled.
pub async fn reconcile_stale_attempts(state: &AppState, limit: i64) -> Result<usize, FlowError> {
    let now = state.clock.now();
    let rows = {
        let mut conn = state.db.conn().await?;
        db::payments::attempts_to_reconcile(&mut conn, now.plus_seconds(-state.settings.payment_stale_seconds), limit)
            .await?
    };
    let mut settled_count = 0;
    for row in rows {
        let attempt = PaymentAttemptId::from_trusted(row.id.clone());
        match reconcile_one(state, &attempt, &row, now).await {
            Ok(true) => settled_count += 1,
            Ok(false) => {}
            // One attempt the gateway cannot answer for now must not hold up the others.
            Err(FlowError::Unavailable(e)) => {
                tracing::warn!(attempt = %attempt, error = %e, "gateway unavailable while reconciling")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(settled_count)
}

async fn reconcile_one(
    state: &AppState,
    attempt: &PaymentAttemptId,
    row: &db::payments::AttemptRow,
    now: Timestamp,
) -> Result<bool, FlowError> {
    let gateway = super::gateway(state, crate::domain::Mode::from_flag(row.livemode))?;
    if gateway.name() != row.gateway {
        tracing::warn!(attempt = %attempt, gateway = %row.gateway, "attempt of a gateway this server no longer runs");
        return Ok(false);
    }
    // Attempts still waiting on the customer are touched each time they are looked at (so they are
    // asked about once per stale period, not on every pass): their age counts from their start.
    let waited_out = row.created_at < now.plus_seconds(-CHALLENGE_TIMEOUT_SECONDS).micros();
    if row.status == attempt_status::SETUP {
        return super::card_setup::reconcile_setup(state, attempt, waited_out).await;
    }
    let recorded = gateway
        .lookup(ChargeLookup {
            idempotency_key: &row.id,
            gateway_customer: row.gateway_customer.as_deref(),
            charge_ref: row.charge_ref.as_deref(),
        })
        .await?;
    match recorded {
        Some(ChargeOutcome::RequiresAction { .. }) if waited_out => {
            // Nobody answered the challenge in time: cancel it at the gateway.
            resolve_challenge(state, attempt, ChallengeAnswer::Abandoned).await?;
            Ok(true)
        }
        Some(ChargeOutcome::RequiresAction { .. }) => {
            // The customer may still answer.
            let mut conn = state.db.conn().await?;
            db::payments::touch_attempt(&mut conn, attempt, now).await?;
            Ok(false)
        }
        Some(outcome) => {
            apply_payment_outcome(state, attempt, outcome).await?;
            Ok(true)
        }
        None if row.status == attempt_status::PENDING => {
            // The gateway never saw it: nothing was charged; let the session go.
            let mut tx = state.db.begin().await?;
            if db::payments::finish_attempt(
                &mut tx,
                attempt,
                &["pending"],
                "failed",
                None,
                Some("the payment was interrupted before it reached the processor"),
                now,
            )
            .await?
            {
                if let Some(session) = &row.session_id {
                    db::checkout_sessions::release(
                        &mut tx,
                        &CheckoutSessionId::from_trusted(session.clone()),
                        attempt,
                        false,
                    )
                    .await?;
                }
            }
            tx.commit().await?;
            state.page_cache.invalidate(row.session_id.as_deref().unwrap_or_default());
            Ok(true)
        }
        None => Ok(false),
    }
}
