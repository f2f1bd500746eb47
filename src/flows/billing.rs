//! The billing engine: subscriptions' due work (renewals, trial ends, reminders, expiries, end
//! dates) and invoice collection (charges, dunning), found in the database and done exactly once.
//!
//! Every subscription carries `next_action_at`, the earliest moment the engine must look at it
//! again, and every open invoice to be charged carries `next_payment_attempt`. A pass (the worker
//! on the system clock, or a test clock's advance) reads what is due, works out each change in
//! memory, and writes it only if the row still has the version it read (a conditional update), so
//! two instances never both renew a period. Charges happen after the change commits: the invoice
//! is first marked `charging` with a lease, the gateway is asked with the idempotency key
//! `{invoice}-a{attempt}`, and the answer is applied under the same kind of condition. A crash
//! between the two leaves the lease to expire; the retry asks under the same key and gets the
//! first answer, so one attempt never charges twice.

use serde_json::Value;

use crate::db::subscriptions::InvoiceVersion;
use crate::db::{self, Conn};
use crate::domain::billing_period::{Period, PeriodKind};
use crate::domain::billing_settings::AfterFinalFailure;
use crate::domain::ids::{InvoiceId, PaymentIntentId, PaymentMethodId, SubscriptionId, TestClockId};
use crate::domain::invoicing::{self, INCOMPLETE_SECONDS, MAX_ATTEMPTS, REMINDER_SECONDS};
use crate::domain::payment::{DeclineCode, PaymentError, PaymentIntent, PaymentIntentStatus};
use crate::domain::subscription::{
    BillingCadence, BillingReason, CollectionMethod, CollectionState, Invoice, InvoiceStatus, Subscription,
    SubscriptionStatus,
};
use crate::domain::subscription_request::{InvoiceBilling, PaymentBehavior};
use crate::domain::timestamp::Timestamp;
use crate::domain::Owner;
use crate::flows::{events, FlowError};
use crate::gateway::{ChargeLookup, ChargeOutcome, ChargeRequest};
use crate::state::AppState;

/// Subscriptions or invoices taken per pass of the worker.
pub const BATCH: i64 = 500;
/// Gateway calls in flight at once in a pass.
const PARALLEL_CHARGES: usize = 32;
/// A guard against a runaway loop on a test clock (a year of daily renewals is ~1,100 steps).
const MAX_CLOCK_STEPS: usize = 200_000;

// -------------------------------------------------------------------------------------------------
// Clocks
// -------------------------------------------------------------------------------------------------

/// Now, on the clock a subscription or customer lives on.
pub async fn now_on(state: &AppState, conn: &mut Conn, clock: Option<&TestClockId>) -> Result<Timestamp, sqlx::Error> {
    match clock {
        None => Ok(state.clock.now()),
        Some(c) => Ok(db::test_clocks::frozen_time(conn, c).await?.unwrap_or_else(|| state.clock.now())),
    }
}

// -------------------------------------------------------------------------------------------------
// Effects of a step, written only when the step wins its conditional update
// -------------------------------------------------------------------------------------------------

enum Pending {
    Subscription { event_type: &'static str, object: Value, at: Timestamp },
    Invoice { event_type: &'static str, index: usize, at: Timestamp },
    Preview { object: Value, at: Timestamp },
}

#[derive(Default)]
struct Effects {
    invoices: Vec<Invoice>,
    voided: Vec<InvoiceId>,
    events: Vec<Pending>,
}

impl Effects {
    fn subscription_event(&mut self, event_type: &'static str, sub: &Subscription, at: Timestamp) {
        let object = serde_json::to_value(sub).unwrap_or(Value::Null);
        self.events.push(Pending::Subscription { event_type, object, at });
    }

    /// Adds a new invoice with its creation events (and, when nothing is owed, its payment's).
    fn invoice(&mut self, invoice: Invoice, at: Timestamp) {
        let index = self.invoices.len();
        let paid = invoice.status == InvoiceStatus::Paid;
        self.invoices.push(invoice);
        self.events.push(Pending::Invoice { event_type: "invoice.created", index, at });
        self.events.push(Pending::Invoice { event_type: "invoice.finalized", index, at });
        if paid {
            self.events.push(Pending::Invoice { event_type: "invoice.paid", index, at });
            self.events.push(Pending::Invoice { event_type: "invoice.payment_succeeded", index, at });
        }
    }
}

/// A charge to make once the change that asked for it has committed.
#[derive(Clone, Debug)]
pub struct ChargeJob {
    pub owner: Owner,
    pub invoice: InvoiceId,
    pub attempt: i64,
    /// The attempt was asked before and its answer never recorded (its lease ran out): look for
    /// the charge at the gateway before asking again, since not every processor keeps idempotency
    /// keys forever (Stripe forgets them after 24 hours, localstripe ignores them).
    pub resumed: bool,
}

/// Writes `sub` (conditionally) and then its effects. Returns the charges to make, or `None` when
/// another writer changed the subscription first (nothing is written then).
async fn commit_step(
    state: &AppState,
    conn: &mut Conn,
    owner: &Owner,
    sub: &mut Subscription,
    mut effects: Effects,
) -> Result<Option<Vec<ChargeJob>>, FlowError> {
    if !db::subscriptions::save(conn, sub).await? {
        return Ok(None);
    }
    let mut charges = Vec::new();
    for invoice in effects.invoices.iter_mut() {
        invoice.number = db::subscriptions::next_invoice_number(conn, owner).await?;
        db::subscriptions::insert_invoice(conn, owner, invoice).await?;
        if invoice.collection.charging {
            charges.push(ChargeJob {
                owner: owner.clone(),
                invoice: invoice.invoice_id.clone(),
                attempt: invoice.attempt_count,
                resumed: false,
            });
        }
    }
    for id in &effects.voided {
        void(state, conn, owner, id, sub.updated_at).await?;
    }
    emit_all(conn, owner, &effects).await?;
    Ok(Some(charges))
}

async fn emit_all(conn: &mut Conn, owner: &Owner, effects: &Effects) -> Result<(), FlowError> {
    for e in &effects.events {
        match e {
            Pending::Subscription { event_type, object, at } => {
                let id = object.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
                events::emit(conn, owner, event_type, "subscription", &id, object, *at).await?;
            }
            Pending::Invoice { event_type, index, at } => {
                let invoice = &effects.invoices[*index];
                events::emit(conn, owner, event_type, "invoice", invoice.invoice_id.as_str(), invoice, *at).await?;
            }
            Pending::Preview { object, at } => {
                let id = object.get("subscription").and_then(Value::as_str).unwrap_or_default().to_string();
                events::emit(conn, owner, "invoice.upcoming", "invoice", &id, object, *at).await?;
            }
        }
    }
    Ok(())
}

// -------------------------------------------------------------------------------------------------
// Building invoices
// -------------------------------------------------------------------------------------------------

/// Who pays a subscription's invoices and with which card: its own customer, or the parent's
/// under `INVOICE_TO_PARENT`.
async fn payer(
    conn: &mut Conn,
    sub: &Subscription,
) -> Result<(crate::domain::ids::CustomerId, Option<PaymentMethodId>), FlowError> {
    if sub.invoice_billing == InvoiceBilling::InvoiceToParent {
        if let Some(parent_id) = &sub.parent_subscription_id {
            if let Some((_, parent)) = db::subscriptions::get_any(conn, parent_id).await? {
                return Ok((parent.customer_id, parent.default_payment_method));
            }
        }
    }
    Ok((sub.customer_id.clone(), sub.default_payment_method.clone()))
}

struct InvoiceFor<'a> {
    period: Period,
    reason: BillingReason,
    at: Timestamp,
    /// Invoices made earlier in the same step (not yet in the database), for commitment windows.
    earlier: &'a [Invoice],
    /// Whether to charge it now (`false` for a preview).
    charge: bool,
    /// Whether it bills the period's recurring items (not the first invoice of an in-arrears
    /// subscription, which holds only one-time items).
    recurring: bool,
}

async fn build_invoice(
    state: &AppState,
    conn: &mut Conn,
    sub: &Subscription,
    f: InvoiceFor<'_>,
) -> Result<Invoice, FlowError> {
    let mut lines = if f.recurring { invoicing::period_lines(sub, &f.period) } else { Vec::new() };
    if f.reason == BillingReason::SubscriptionCreate {
        lines.extend(invoicing::one_time_lines(sub, f.at));
    }
    if let (Some(c), true) = (&sub.commitment, f.recurring && f.period.kind != PeriodKind::Trial) {
        if let Some((from, to)) = invoicing::commitment_window(sub, c, &f.period) {
            let in_window = |l: &crate::domain::subscription::InvoiceLine| {
                l.kind == crate::domain::subscription::LineKind::Item
                    && l.period_start >= from
                    && l.period_start < to
                    && l.period_end > l.period_start
            };
            let before = db::subscriptions::billed_in_window(conn, &sub.id, from, to).await?
                + f.earlier.iter().flat_map(|i| i.lines.iter()).filter(|l| in_window(l)).map(|l| l.amount).sum::<i64>();
            let this: i64 = lines.iter().filter(|l| in_window(l)).map(|l| l.amount).sum();
            let last = Timestamp::from_datetime(f.period.end) >= to;
            let period = (Timestamp::from_datetime(f.period.start), Timestamp::from_datetime(f.period.end));
            lines.extend(invoicing::commitment_lines(c, sub.currency, before, this, last, period));
        }
    }
    let amount_due = invoicing::total(&lines).max(0);
    let (customer, payment_method) = payer(conn, sub).await?;
    let zone = crate::domain::billing_period::Zone::named(&sub.customer_timezone)
        .unwrap_or_else(crate::domain::billing_period::Zone::utc);
    let automatic = sub.collection_method == CollectionMethod::ChargeAutomatically;
    // An `UNPAID` subscription's invoices wait for the customer (hosted page, `/pay`).
    let charging = automatic && amount_due > 0 && f.charge && sub.subscription_status != SubscriptionStatus::Unpaid;
    let due_date = (!automatic && amount_due > 0).then(|| invoicing::due_date(&zone, f.at, sub.payment_terms));
    let id = InvoiceId::generate();
    Ok(Invoice {
        hosted_invoice_url: Some(hosted_url(state, &id)),
        invoice_id: id,
        number: String::new(),
        customer,
        subscription: Some(sub.id.clone()),
        status: if amount_due == 0 { InvoiceStatus::Paid } else { InvoiceStatus::Open },
        amount_due,
        amount_paid: 0,
        amount_remaining: amount_due,
        currency: sub.currency,
        period_start: Timestamp::from_datetime(f.period.start),
        period_end: Timestamp::from_datetime(f.period.end),
        due_date,
        attempt_count: i64::from(charging),
        next_payment_attempt: charging.then(|| f.at.plus_seconds(state.settings.payment_stale_seconds)),
        lines,
        payment_intent: None,
        billing_reason: f.reason,
        collection_method: sub.collection_method,
        payment_method,
        last_decline_code: None,
        paid_at: (amount_due == 0).then_some(f.at),
        created_at: f.at,
        test_mode: sub.test_mode,
        collection: CollectionState {
            charging,
            first_failed_at: None,
            test_clock: sub.test_clock.clone(),
            // A preview is never written, so its deadline never comes.
            deadline: due_date,
        },
    })
}

/// An invoice outside the cycle (a mid-period change) for `sub`, with `lines` over `[at, period
/// end)`: charged like any other when something is owed. Not yet written; see [`add_invoice`].
pub async fn update_invoice(
    state: &AppState,
    conn: &mut Conn,
    sub: &Subscription,
    lines: Vec<crate::domain::subscription::InvoiceLine>,
    at: Timestamp,
) -> Result<Invoice, FlowError> {
    let amount_due = invoicing::total(&lines).max(0);
    let (customer, payment_method) = payer(conn, sub).await?;
    let automatic = sub.collection_method == CollectionMethod::ChargeAutomatically;
    let charging = automatic && amount_due > 0 && sub.subscription_status != SubscriptionStatus::Unpaid;
    let zone = crate::domain::billing_period::Zone::named(&sub.customer_timezone)
        .unwrap_or_else(crate::domain::billing_period::Zone::utc);
    let id = InvoiceId::generate();
    let due_date = (!automatic && amount_due > 0).then(|| invoicing::due_date(&zone, at, sub.payment_terms));
    Ok(Invoice {
        hosted_invoice_url: Some(hosted_url(state, &id)),
        invoice_id: id,
        number: String::new(),
        customer,
        subscription: Some(sub.id.clone()),
        status: if amount_due == 0 { InvoiceStatus::Paid } else { InvoiceStatus::Open },
        amount_due,
        amount_paid: 0,
        amount_remaining: amount_due,
        currency: sub.currency,
        period_start: at,
        period_end: sub.current_period_end,
        due_date,
        attempt_count: i64::from(charging),
        next_payment_attempt: charging.then(|| at.plus_seconds(state.settings.payment_stale_seconds)),
        lines,
        payment_intent: None,
        billing_reason: BillingReason::SubscriptionUpdate,
        collection_method: sub.collection_method,
        payment_method,
        last_decline_code: None,
        paid_at: (amount_due == 0).then_some(at),
        created_at: at,
        test_mode: sub.test_mode,
        collection: CollectionState {
            charging,
            first_failed_at: None,
            test_clock: sub.test_clock.clone(),
            deadline: due_date,
        },
    })
}

/// Numbers and writes an invoice made by [`update_invoice`] with its events; the charge to make,
/// if any.
pub async fn add_invoice(
    conn: &mut Conn,
    owner: &Owner,
    invoice: Invoice,
    at: Timestamp,
) -> Result<Option<ChargeJob>, FlowError> {
    let mut effects = Effects::default();
    effects.invoice(invoice, at);
    for invoice in effects.invoices.iter_mut() {
        invoice.number = db::subscriptions::next_invoice_number(conn, owner).await?;
        db::subscriptions::insert_invoice(conn, owner, invoice).await?;
    }
    emit_all(conn, owner, &effects).await?;
    let invoice = &effects.invoices[0];
    Ok(invoice.collection.charging.then(|| ChargeJob {
        owner: owner.clone(),
        invoice: invoice.invoice_id.clone(),
        attempt: invoice.attempt_count,
        resumed: false,
    }))
}

pub fn hosted_url(state: &AppState, id: &InvoiceId) -> String {
    format!("{}/pay/i/{id}", state.settings.public_url.trim_end_matches('/'))
}

// -------------------------------------------------------------------------------------------------
// The subscription's due work
// -------------------------------------------------------------------------------------------------

/// When the engine must next look at `sub`: its in-advance invoice, its period end, its reminders,
/// or its incomplete expiry. `None` for subscriptions it no longer bills.
pub fn next_action(sub: &Subscription) -> Option<Timestamp> {
    let mut times = Vec::new();
    match sub.subscription_status {
        SubscriptionStatus::Incomplete => times.push(sub.created_at.plus_seconds(INCOMPLETE_SECONDS)),
        _ if sub.renews() => {
            if !sub.engine.cycle_invoiced {
                times.push(sub.current_period_start);
            }
            times.push(sub.current_period_end);
            if let Some(t) = trial_will_end_at(sub) {
                times.push(t);
            }
            if let Some(t) = upcoming_at(sub) {
                times.push(t);
            }
        }
        _ => {}
    }
    times.into_iter().min()
}

fn trial_will_end_at(sub: &Subscription) -> Option<Timestamp> {
    let end = sub.trial_end?;
    let at = end.plus_seconds(-REMINDER_SECONDS);
    (sub.subscription_status == SubscriptionStatus::Trialing
        && !sub.engine.trial_will_end_sent
        && at > sub.created_at
        && end > sub.current_period_start)
        .then_some(at)
}

fn upcoming_at(sub: &Subscription) -> Option<Timestamp> {
    let at = sub.current_period_end.plus_seconds(-REMINDER_SECONDS);
    let has_next = !sub.cancel_at_period_end
        && sub.end_date.is_none_or(|e| e > sub.current_period_end)
        && sub.cancel_at.is_none_or(|e| e > sub.current_period_end);
    (has_next && sub.engine.upcoming_sent_for != Some(sub.current_period_end) && at > sub.current_period_start)
        .then_some(at)
}

fn period_of(sub: &Subscription) -> Option<Period> {
    let schedule = invoicing::schedule(sub)?;
    schedule.period_containing(sub.current_period_start.to_datetime())
}

fn set_status(sub: &mut Subscription, effects: &mut Effects, status: SubscriptionStatus, at: Timestamp) {
    if sub.subscription_status == status {
        return;
    }
    sub.subscription_status = status;
    sub.updated_at = at;
    if status == SubscriptionStatus::Canceled || status == SubscriptionStatus::IncompleteExpired {
        sub.canceled_at.get_or_insert(at);
        sub.engine.next_action_at = None;
        effects.subscription_event("customer.subscription.updated", sub, at);
        if status == SubscriptionStatus::Canceled {
            effects.subscription_event("customer.subscription.deleted", sub, at);
        }
    } else {
        effects.subscription_event("customer.subscription.updated", sub, at);
    }
}

/// Does everything due on `sub` at or before `at`, in order, and writes it. Returns the charges to
/// make, or `None` when another writer got there first.
pub async fn step(
    state: &AppState,
    conn: &mut Conn,
    owner: &Owner,
    mut sub: Subscription,
    at: Timestamp,
) -> Result<Option<Vec<ChargeJob>>, FlowError> {
    let mut effects = Effects::default();
    plan_step(state, conn, &mut sub, at, &mut effects).await?;
    lease_from(state, &mut effects, at);
    sub.engine.next_action_at = next_action(&sub);
    commit_step(state, conn, owner, &mut sub, effects).await
}

/// The invoices a step charges hold their lease from the step's time, not from their own date: a
/// period that began before this pass (a backlog, a restart) is invoiced with its date but charged
/// now, and a lease that had already run out would let another instance claim the attempt while it
/// is at the gateway.
fn lease_from(state: &AppState, effects: &mut Effects, at: Timestamp) {
    for invoice in effects.invoices.iter_mut().filter(|i| i.collection.charging) {
        invoice.next_payment_attempt = Some(at.plus_seconds(state.settings.payment_stale_seconds));
    }
}

/// The first step of a subscription just written in the same transaction (its first invoice).
/// With `hold_events` the invoices' events wait for the first charge to decide whether the
/// subscription exists at all (`ERROR_IF_INCOMPLETE`); `settle` sends them.
pub async fn first_step(
    state: &AppState,
    conn: &mut Conn,
    owner: &Owner,
    mut sub: Subscription,
    at: Timestamp,
    hold_events: bool,
) -> Result<Vec<ChargeJob>, FlowError> {
    let mut effects = Effects::default();
    plan_step(state, conn, &mut sub, at, &mut effects).await?;
    lease_from(state, &mut effects, at);
    sub.engine.next_action_at = next_action(&sub);
    if hold_events {
        effects.events.retain(|e| !matches!(e, Pending::Invoice { .. }));
    }
    commit_step(state, conn, owner, &mut sub, effects)
        .await?
        .ok_or_else(|| FlowError::Internal(anyhow::anyhow!("a new subscription changed in its own transaction")))
}

/// The current period's in-advance invoice, once, when its start has come: the first invoice of
/// a subscription (a zero one for a trial; only the one-time items when billed in arrears), then
/// one per period billed in advance.
async fn cycle_invoice(
    state: &AppState,
    conn: &mut Conn,
    sub: &mut Subscription,
    at: Timestamp,
    effects: &mut Effects,
) -> Result<(), FlowError> {
    if sub.engine.cycle_invoiced || sub.current_period_start > at {
        return Ok(());
    }
    let t = sub.current_period_start.max(sub.created_at);
    let period = period_of(sub);
    sub.engine.cycle_invoiced = true;
    let first = sub.latest_invoice.is_none() && effects.invoices.is_empty();
    let in_advance = sub.billing_cadence == BillingCadence::InAdvance;
    let wanted = |p: &Period| (p.kind != PeriodKind::Trial && in_advance) || first;
    let Some(period) = period.filter(wanted) else { return Ok(()) };
    let reason = if first { BillingReason::SubscriptionCreate } else { BillingReason::SubscriptionCycle };
    let earlier = effects.invoices.clone();
    let invoice = build_invoice(
        state,
        conn,
        sub,
        InvoiceFor {
            period,
            reason,
            at: t,
            earlier: &earlier,
            // `DEFAULT_INCOMPLETE`: the customer pays the first invoice (hosted page, /pay).
            charge: !(first && sub.payment_behavior == PaymentBehavior::DefaultIncomplete),
            recurring: in_advance,
        },
    )
    .await?;
    sub.latest_invoice = Some(invoice.invoice_id.clone());
    sub.updated_at = t;
    effects.invoice(invoice, t);
    Ok(())
}

async fn plan_step(
    state: &AppState,
    conn: &mut Conn,
    sub: &mut Subscription,
    at: Timestamp,
    effects: &mut Effects,
) -> Result<(), FlowError> {
    if sub.subscription_status == SubscriptionStatus::Incomplete {
        let expires = sub.created_at.plus_seconds(INCOMPLETE_SECONDS);
        if at >= expires {
            for id in db::subscriptions::open_invoices_of(conn, &sub.id).await? {
                effects.voided.push(id);
            }
            set_status(sub, effects, SubscriptionStatus::IncompleteExpired, expires);
            return Ok(());
        }
        // Nothing renews until the first invoice is paid; that invoice is made at the start.
        return cycle_invoice(state, conn, sub, at, effects).await;
    }
    let Some(schedule) = invoicing::schedule(sub) else {
        tracing::error!(subscription = %sub.id, "stored terms the period arithmetic refuses; not billed");
        sub.engine.next_action_at = None;
        return Ok(());
    };
    for _ in 0..100_000 {
        if !sub.renews() {
            return Ok(());
        }
        // The reminders first: they fall before the period end they announce.
        if let Some(t) = trial_will_end_at(sub).filter(|t| *t <= at) {
            sub.engine.trial_will_end_sent = true;
            effects.subscription_event("customer.subscription.trial_will_end", sub, t);
        }
        if let Some(t) = upcoming_at(sub).filter(|t| *t <= at) {
            sub.engine.upcoming_sent_for = Some(sub.current_period_end);
            if let Some(next) = schedule.period_containing(sub.current_period_end.to_datetime()) {
                let earlier = effects.invoices.clone();
                let preview = build_invoice(
                    state,
                    conn,
                    sub,
                    InvoiceFor {
                        period: next,
                        reason: BillingReason::SubscriptionCycle,
                        at: t,
                        earlier: &earlier,
                        charge: false,
                        recurring: true,
                    },
                )
                .await?;
                let mut object = serde_json::to_value(&preview).unwrap_or(Value::Null);
                if let Some(o) = object.as_object_mut() {
                    // An upcoming invoice is a preview: it has no id, number or page yet.
                    o.insert("invoice_id".into(), Value::Null);
                    o.insert("number".into(), Value::Null);
                    o.insert("hosted_invoice_url".into(), Value::Null);
                    o.insert("status".into(), Value::String("draft".into()));
                }
                effects.events.push(Pending::Preview { object, at: t });
            }
        }
        // The current period's in-advance invoice (the first one too, for a start in the future).
        cycle_invoice(state, conn, sub, at, effects).await?;
        if sub.current_period_end > at {
            return Ok(());
        }
        // The period ended.
        let t = sub.current_period_end;
        if sub.billing_cadence == BillingCadence::InArrears {
            if let Some(period) = period_of(sub).filter(|p| p.kind != PeriodKind::Trial) {
                let first = sub.latest_invoice.is_none() && effects.invoices.is_empty();
                let reason = if first { BillingReason::SubscriptionCreate } else { BillingReason::SubscriptionCycle };
                let earlier = effects.invoices.clone();
                let invoice = build_invoice(
                    state,
                    conn,
                    sub,
                    InvoiceFor { period, reason, at: t, earlier: &earlier, charge: true, recurring: true },
                )
                .await?;
                sub.latest_invoice = Some(invoice.invoice_id.clone());
                effects.invoice(invoice, t);
            }
        }
        let next = (!sub.cancel_at_period_end).then(|| schedule.period_containing(t.to_datetime())).flatten();
        let Some(next) = next else {
            sub.canceled_at = Some(t);
            set_status(sub, effects, SubscriptionStatus::Canceled, t);
            return Ok(());
        };
        sub.current_period_start = Timestamp::from_datetime(next.start);
        sub.current_period_end = Timestamp::from_datetime(next.end);
        sub.engine.cycle_invoiced = sub.billing_cadence == BillingCadence::InArrears;
        sub.updated_at = t;
        if sub.subscription_status == SubscriptionStatus::Trialing && next.kind != PeriodKind::Trial {
            set_status(sub, effects, SubscriptionStatus::Active, t);
        }
    }
    Ok(())
}

// -------------------------------------------------------------------------------------------------
// Collection
// -------------------------------------------------------------------------------------------------

/// What came back from the gateway for one attempt.
#[derive(Clone, Debug)]
pub enum AttemptResult {
    Paid {
        gateway: String,
        gateway_ref: String,
    },
    Declined {
        code: DeclineCode,
    },
    /// No card to charge: the customer has to pay on the hosted invoice page.
    NoCard,
}

/// Asks the gateway for attempt `job.attempt` of an invoice. `None`: no answer (the lease runs
/// out and the same attempt is asked again under the same key).
pub async fn charge(state: &AppState, job: &ChargeJob) -> Option<AttemptResult> {
    let result = async {
        let mut conn = state.db.conn().await?;
        let Some((_, invoice)) =
            db::subscriptions::get_invoice_any(&mut conn, &job.invoice, &state.settings.public_url).await?
        else {
            return Ok(None);
        };
        let Some(pm) = &invoice.payment_method else { return Ok(Some(AttemptResult::NoCard)) };
        let Some((gateway_name, card)) = db::payments::saved_card(&mut conn, pm).await? else {
            return Ok(Some(AttemptResult::NoCard));
        };
        drop(conn);
        let gateway = crate::flows::gateway(state, job.owner.mode)?;
        if gateway.name() != gateway_name {
            // A card saved by another processor (the sandbox before Stripe was configured) cannot
            // be charged here.
            return Ok(Some(AttemptResult::NoCard));
        }
        let key = format!("{}-a{}", job.invoice, job.attempt);
        let found = if job.resumed {
            let lookup = ChargeLookup {
                idempotency_key: &key,
                gateway_customer: card.gateway_customer.as_deref(),
                charge_ref: None,
            };
            gateway.lookup(lookup).await?
        } else {
            None
        };
        let outcome = match found {
            Some(outcome) => outcome,
            None => {
                gateway
                    .charge(ChargeRequest {
                        idempotency_key: &key,
                        card: &card,
                        amount: invoice.amount_due,
                        currency: invoice.currency,
                        off_session: true,
                        manual_capture: false,
                    })
                    .await?
            }
        };
        crate::crash_points::reached("after_invoice_charge");
        Ok::<_, FlowError>(Some(match outcome {
            ChargeOutcome::Succeeded { gateway_ref } => AttemptResult::Paid { gateway: gateway_name, gateway_ref },
            ChargeOutcome::Declined { code } => AttemptResult::Declined { code },
            // Off-session charges cannot show a challenge; a gateway asking for one is a decline.
            ChargeOutcome::RequiresAction { .. } => {
                AttemptResult::Declined { code: DeclineCode::AuthenticationRequired }
            }
        }))
    }
    .await;
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(invoice = %job.invoice, error = ?e, "invoice charge without an answer; retried after its lease");
            None
        }
    }
}

/// Applies the answer to attempt `job.attempt`, once: the invoice paid, or the failure counted
/// with the next retry (or the end of dunning), the subscription's status, the payment intent and
/// the events. Returns `false` when the attempt had already been applied.
pub async fn settle(
    state: &AppState,
    conn: &mut Conn,
    job: &ChargeJob,
    result: &AttemptResult,
    at: Timestamp,
) -> Result<bool, FlowError> {
    let public = &state.settings.public_url;
    let Some((owner, mut invoice)) = db::subscriptions::get_invoice_any(conn, &job.invoice, public).await? else {
        return Ok(false);
    };
    if !(invoice.collection.charging && invoice.attempt_count == job.attempt && invoice.status == InvoiceStatus::Open) {
        return Ok(false);
    }
    let expected = InvoiceVersion::of(&invoice, at);
    let sub = match &invoice.subscription {
        Some(id) => db::subscriptions::get_any(conn, id).await?.map(|(_, s)| s),
        None => None,
    };
    // `ERROR_IF_INCOMPLETE`: the subscription exists only if its first charge succeeds.
    let all_or_nothing = sub.as_ref().is_some_and(|s| {
        s.payment_behavior == PaymentBehavior::ErrorIfIncomplete
            && s.subscription_status == SubscriptionStatus::Incomplete
            && invoice.billing_reason == BillingReason::SubscriptionCreate
    });
    invoice.collection.charging = false;
    let mut pi = payment_intent_of(conn, &owner, &invoice, at).await?;
    // Whether `pi` is the stored one the invoice names (otherwise its id is new).
    let pi_stored = invoice.payment_intent.as_ref() == Some(&pi.payment_intent_id);
    let mut effects = Effects::default();
    let mut invoice_events: Vec<&'static str> = Vec::new();
    let mut sub_after = sub.clone();
    let mut gateway_ref = None;
    match result {
        AttemptResult::Paid { gateway, gateway_ref: r } => {
            invoice.status = InvoiceStatus::Paid;
            invoice.amount_paid = invoice.amount_due;
            invoice.amount_remaining = 0;
            invoice.next_payment_attempt = None;
            invoice.paid_at = Some(at);
            invoice.last_decline_code = None;
            invoice.collection.deadline = None;
            pi.status = PaymentIntentStatus::Succeeded;
            pi.amount_received = invoice.amount_due;
            pi.last_payment_error = None;
            gateway_ref = Some((gateway.clone(), r.clone()));
            invoice_events.extend(["invoice.paid", "invoice.payment_succeeded"]);
            if let Some(s) = sub_after.as_mut() {
                if all_or_nothing {
                    effects.subscription_event("customer.subscription.created", s, at);
                }
                let is_latest = s.latest_invoice.as_ref() == Some(&invoice.invoice_id);
                if is_latest
                    && matches!(
                        s.subscription_status,
                        SubscriptionStatus::Incomplete | SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid
                    )
                {
                    let status = if s.trial_end.is_some_and(|t| at < t) {
                        SubscriptionStatus::Trialing
                    } else {
                        SubscriptionStatus::Active
                    };
                    set_status(s, &mut effects, status, at);
                }
            }
        }
        AttemptResult::Declined { .. } | AttemptResult::NoCard => {
            let (code, hard) = match result {
                AttemptResult::Declined { code } => (code.as_str().to_string(), code.is_hard()),
                _ => ("payment_method_missing".to_string(), true),
            };
            if all_or_nothing {
                delete_unborn(conn, sub.as_ref().map(|s| &s.id), &invoice.invoice_id).await?;
                return Ok(true);
            }
            let first_failed = *invoice.collection.first_failed_at.get_or_insert(at);
            invoice.last_decline_code = Some(code.clone());
            let incomplete = sub.as_ref().is_some_and(|s| s.subscription_status == SubscriptionStatus::Incomplete);
            let automatic = invoice.collection_method == CollectionMethod::ChargeAutomatically;
            invoice.next_payment_attempt = if hard || incomplete || !automatic {
                None
            } else {
                invoicing::next_retry(first_failed, invoice.attempt_count)
            };
            pi.status = PaymentIntentStatus::RequiresPaymentMethod;
            pi.last_payment_error = Some(match result {
                AttemptResult::Declined { code } => PaymentError::from_decline(*code),
                _ => PaymentError {
                    error_type: "invalid_request_error".into(),
                    code: "payment_method_missing".into(),
                    decline_code: None,
                    message: "The customer has no saved card to charge.".into(),
                },
            });
            invoice_events.push("invoice.payment_failed");
            if hard && automatic && !incomplete && invoice.collection.deadline.is_none() {
                // No retry can fix it: the customer has until dunning's last day to pay with
                // another card, then it ends as if the retries had failed.
                let ends = invoicing::dunning_ends(first_failed);
                invoice.collection.deadline = Some(ends);
                invoice.due_date = Some(ends);
            }
            let last = automatic && !hard && !incomplete && invoice.attempt_count >= MAX_ATTEMPTS;
            if last {
                invoice.status = InvoiceStatus::Uncollectible;
                invoice_events.push("invoice.marked_uncollectible");
            }
            if let Some(s) = sub_after.as_mut() {
                // A customer's failed try on the page at a SEND_INVOICE invoice is not dunning.
                if !incomplete && automatic && s.is_live() {
                    if last {
                        end_dunning(conn, &owner, s, &mut effects, at).await?;
                    } else {
                        set_status(s, &mut effects, SubscriptionStatus::PastDue, at);
                    }
                }
            }
        }
    }
    invoice.payment_intent = Some(pi.payment_intent_id.clone());
    if !db::subscriptions::save_invoice(conn, &invoice, &expected).await? {
        return Ok(false);
    }
    let gateway_name = gateway_ref.as_ref().map(|g| g.0.as_str());
    let charge_ref = gateway_ref.as_ref().map(|g| g.1.as_str());
    if invoice.attempt_count == 1 && !pi_stored {
        db::payments::insert_payment_intent(
            conn,
            &owner,
            db::payments::NewPaymentIntent {
                intent: &pi,
                attempt: None,
                gateway: gateway_name.unwrap_or_else(|| gateway_for(state, &owner)),
                gateway_ref: charge_ref,
            },
        )
        .await?;
    } else {
        db::payments::update_payment_intent(conn, &pi, charge_ref, at).await?;
    }
    if let Some(mut s) = sub_after {
        if s.subscription_status != sub.as_ref().map_or(s.subscription_status, |o| o.subscription_status)
            || all_or_nothing
        {
            s.engine.next_action_at = next_action(&s);
            save_subscription_retrying(conn, &mut s).await?;
        }
    }
    if all_or_nothing {
        // The creation events were held back until the first charge decided the subscription exists.
        events::emit(conn, &owner, "invoice.created", "invoice", invoice.invoice_id.as_str(), &invoice, at).await?;
        events::emit(conn, &owner, "invoice.finalized", "invoice", invoice.invoice_id.as_str(), &invoice, at).await?;
    }
    let pi_event = if pi.status == PaymentIntentStatus::Succeeded {
        "payment_intent.succeeded"
    } else {
        "payment_intent.payment_failed"
    };
    events::emit(conn, &owner, pi_event, "payment_intent", pi.payment_intent_id.as_str(), &pi, at).await?;
    for e in invoice_events {
        events::emit(conn, &owner, e, "invoice", invoice.invoice_id.as_str(), &invoice, at).await?;
    }
    emit_all(conn, &owner, &effects).await?;
    Ok(true)
}

/// Dunning gave up on the subscription's invoice: it is `CANCELED`, or `UNPAID` if the merchant's
/// billing settings say so.
async fn end_dunning(
    conn: &mut Conn,
    owner: &Owner,
    s: &mut Subscription,
    effects: &mut Effects,
    at: Timestamp,
) -> Result<(), FlowError> {
    match db::billing_settings::get(conn, owner).await?.after_final_failure {
        AfterFinalFailure::Unpaid => set_status(s, effects, SubscriptionStatus::Unpaid, at),
        AfterFinalFailure::Canceled => {
            s.canceled_at = Some(at);
            set_status(s, effects, SubscriptionStatus::Canceled, at);
        }
    }
    Ok(())
}

/// An open invoice's collection deadline has come: a `SEND_INVOICE` invoice is overdue
/// (`invoice.overdue`, its subscription `PAST_DUE`); a hard-declined one is given up on
/// (`uncollectible`, its subscription ended as after the last retry). Nothing is charged. Returns
/// whether it was done here (not by another writer first).
pub async fn pass_deadline(
    conn: &mut Conn,
    owner: &Owner,
    mut invoice: Invoice,
    at: Timestamp,
) -> Result<bool, FlowError> {
    let Some(deadline) = invoice.collection.deadline else { return Ok(false) };
    if invoice.status != InvoiceStatus::Open || invoice.collection.charging || deadline > at {
        return Ok(false);
    }
    let expected = InvoiceVersion::of(&invoice, at);
    invoice.collection.deadline = None;
    let overdue = invoice.collection_method == CollectionMethod::SendInvoice;
    let event = if overdue {
        "invoice.overdue"
    } else {
        invoice.status = InvoiceStatus::Uncollectible;
        invoice.next_payment_attempt = None;
        "invoice.marked_uncollectible"
    };
    if !db::subscriptions::save_invoice(conn, &invoice, &expected).await? {
        return Ok(false);
    }
    events::emit(conn, owner, event, "invoice", invoice.invoice_id.as_str(), &invoice, deadline).await?;
    let sub = match &invoice.subscription {
        Some(id) => db::subscriptions::get_any(conn, id).await?.map(|(_, s)| s),
        None => None,
    };
    if let Some(mut s) = sub.filter(Subscription::is_live) {
        let before = s.subscription_status;
        let mut effects = Effects::default();
        if overdue {
            set_status(&mut s, &mut effects, SubscriptionStatus::PastDue, deadline);
        } else {
            end_dunning(conn, owner, &mut s, &mut effects, deadline).await?;
        }
        if s.subscription_status != before {
            s.engine.next_action_at = next_action(&s);
            save_subscription_retrying(conn, &mut s).await?;
            emit_all(conn, owner, &effects).await?;
        }
    }
    Ok(true)
}

fn gateway_for(state: &AppState, owner: &Owner) -> &'static str {
    state.gateways.for_mode(owner.mode).map_or("none", |g| g.name())
}

/// The invoice's payment intent (one per invoice, over all its attempts), or a new one.
async fn payment_intent_of(
    conn: &mut Conn,
    owner: &Owner,
    invoice: &Invoice,
    at: Timestamp,
) -> Result<PaymentIntent, FlowError> {
    if let Some(id) = &invoice.payment_intent {
        if let Some(pi) = db::payments::get_payment_intent(conn, owner, id).await? {
            let mut pi = pi;
            pi.payment_method = invoice.payment_method.clone();
            return Ok(pi);
        }
    }
    Ok(PaymentIntent {
        payment_intent_id: PaymentIntentId::generate(),
        amount: invoice.amount_due,
        amount_received: 0,
        amount_refunded: 0,
        currency: invoice.currency,
        status: PaymentIntentStatus::Processing,
        capture_method: "automatic".into(),
        customer: Some(invoice.customer.clone()),
        invoice: Some(invoice.invoice_id.clone()),
        checkout_session: None,
        payment_method: invoice.payment_method.clone(),
        last_payment_error: None,
        created_at: at,
        test_mode: owner.mode.is_test(),
    })
}

/// Saves a status change made by collection; a renewal step may have bumped the version since it
/// was read (on PostgreSQL), so the change is re-applied to a fresh read.
async fn save_subscription_retrying(conn: &mut Conn, s: &mut Subscription) -> Result<(), FlowError> {
    for _ in 0..5 {
        if db::subscriptions::save(conn, s).await? {
            return Ok(());
        }
        let Some((_, fresh)) = db::subscriptions::get_any(conn, &s.id).await? else { return Ok(()) };
        let mut fresh = fresh;
        fresh.subscription_status = s.subscription_status;
        fresh.canceled_at = s.canceled_at;
        fresh.updated_at = s.updated_at;
        fresh.engine.next_action_at = next_action(&fresh);
        *s = fresh;
    }
    Err(FlowError::Internal(anyhow::anyhow!("subscription {} kept changing under collection", s.id)))
}

/// Removes an `ERROR_IF_INCOMPLETE` subscription whose first charge was declined: it never existed.
async fn delete_unborn(conn: &mut Conn, sub: Option<&SubscriptionId>, invoice: &InvoiceId) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM invoice_lines WHERE invoice_id = $1").bind(invoice.as_str()).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM invoices WHERE id = $1").bind(invoice.as_str()).execute(&mut *conn).await?;
    if let Some(s) = sub {
        sqlx::query("DELETE FROM subscription_items WHERE subscription_id = $1")
            .bind(s.as_str())
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM subscriptions WHERE id = $1").bind(s.as_str()).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Marks an open or draft invoice void (no more attempts) with `invoice.voided`.
pub async fn void(
    state: &AppState,
    conn: &mut Conn,
    owner: &Owner,
    id: &InvoiceId,
    at: Timestamp,
) -> Result<bool, FlowError> {
    let Some((_, mut invoice)) = db::subscriptions::get_invoice_any(conn, id, &state.settings.public_url).await? else {
        return Ok(false);
    };
    if !matches!(invoice.status, InvoiceStatus::Open | InvoiceStatus::Draft) || invoice.collection.charging {
        return Ok(false);
    }
    let expected = InvoiceVersion::of(&invoice, at);
    invoice.status = InvoiceStatus::Void;
    invoice.next_payment_attempt = None;
    if !db::subscriptions::save_invoice(conn, &invoice, &expected).await? {
        return Ok(false);
    }
    events::emit(conn, owner, "invoice.voided", "invoice", id.as_str(), &invoice, at).await?;
    Ok(true)
}

/// Opens an `uncollectible` invoice again for a payment the customer makes: the engine gave up
/// collecting, the customer has not, and `settle` decides how it stands after the attempt. `false`
/// when another writer changed the invoice first.
pub async fn reopen_for_payment(conn: &mut Conn, invoice: &mut Invoice, at: Timestamp) -> Result<bool, FlowError> {
    if invoice.status != InvoiceStatus::Uncollectible {
        return Ok(true);
    }
    let expected = InvoiceVersion::of(invoice, at);
    invoice.status = InvoiceStatus::Open;
    Ok(db::subscriptions::save_invoice(conn, invoice, &expected).await?)
}

/// Takes the next attempt on a due invoice (or the attempt whose lease ran out, under its own
/// number again); `None` when another writer took it first.
pub async fn claim(
    state: &AppState,
    conn: &mut Conn,
    owner: &Owner,
    mut invoice: Invoice,
    at: Timestamp,
) -> Result<Option<ChargeJob>, FlowError> {
    if invoice.status != InvoiceStatus::Open {
        return Ok(None);
    }
    let expected = InvoiceVersion::of(&invoice, at);
    let resumed = invoice.collection.charging;
    if !resumed {
        invoice.attempt_count += 1;
        invoice.collection.charging = true;
    }
    invoice.next_payment_attempt = Some(at.plus_seconds(state.settings.payment_stale_seconds));
    if !db::subscriptions::save_invoice(conn, &invoice, &expected).await? {
        return Ok(None);
    }
    Ok(Some(ChargeJob { owner: owner.clone(), invoice: invoice.invoice_id, attempt: invoice.attempt_count, resumed }))
}

/// Charges every job (a bounded number at once) and applies the answers in one transaction.
async fn charge_and_settle(state: &AppState, jobs: Vec<ChargeJob>, at: Timestamp) -> Result<usize, FlowError> {
    use futures_util::StreamExt;
    if jobs.is_empty() {
        return Ok(0);
    }
    let results: Vec<(ChargeJob, Option<AttemptResult>)> = futures_util::stream::iter(jobs)
        .map(|job| async move {
            let r = charge(state, &job).await;
            (job, r)
        })
        .buffer_unordered(PARALLEL_CHARGES)
        .collect()
        .await;
    let mut tx = state.db.begin().await?;
    let mut n = 0;
    db::webhook_deliveries::with_endpoints_read_once(async {
        for (job, result) in &results {
            if let Some(result) = result {
                if settle(state, &mut tx, job, result, at).await? {
                    n += 1;
                }
            }
        }
        Ok::<_, FlowError>(())
    })
    .await?;
    tx.commit().await?;
    Ok(n)
}

// -------------------------------------------------------------------------------------------------
// Passes
// -------------------------------------------------------------------------------------------------

/// One pass on the system clock: due subscriptions stepped in one transaction, their charges
/// made, then due invoice attempts. Returns how many items were handled.
pub async fn run_due(state: &AppState, limit: i64) -> Result<usize, FlowError> {
    let now = state.clock.now();
    let mut handled = 0;
    let subs = {
        let mut conn = state.db.conn().await?;
        db::subscriptions::due(&mut conn, now, limit).await?
    };
    let mut jobs = Vec::new();
    if !subs.is_empty() {
        let mut tx = state.db.begin().await?;
        // Each merchant's webhook endpoints are read once for all of the transaction's events.
        db::webhook_deliveries::with_endpoints_read_once(async {
            for (owner, sub) in subs {
                if let Some(charges) = step(state, &mut tx, &owner, sub, now).await? {
                    handled += 1;
                    jobs.extend(charges);
                }
            }
            Ok::<_, FlowError>(())
        })
        .await?;
        tx.commit().await?;
    }
    handled += charge_and_settle(state, jobs, now).await?;
    let invoices = {
        let mut conn = state.db.conn().await?;
        db::subscriptions::due_invoices(&mut conn, now, limit, &state.settings.public_url).await?
    };
    let mut jobs = Vec::new();
    if !invoices.is_empty() {
        let mut tx = state.db.begin().await?;
        for (owner, invoice) in invoices {
            jobs.extend(claim(state, &mut tx, &owner, invoice, now).await?);
        }
        tx.commit().await?;
    }
    handled += charge_and_settle(state, jobs, now).await?;
    let late = {
        let mut conn = state.db.conn().await?;
        db::subscriptions::past_deadline(&mut conn, now, limit, &state.settings.public_url).await?
    };
    if !late.is_empty() {
        let mut tx = state.db.begin().await?;
        for (owner, invoice) in late {
            handled += usize::from(pass_deadline(&mut tx, &owner, invoice, now).await?);
        }
        tx.commit().await?;
    }
    Ok(handled)
}

/// Runs, in time order, everything on test clock `clock` that is due at or before `to`, each item at
/// its own due time. Returns how many items were done.
pub async fn run_clock(state: &AppState, clock: &TestClockId, to: Timestamp) -> Result<usize, FlowError> {
    let mut done = 0;
    for _ in 0..MAX_CLOCK_STEPS {
        let mut tx = state.db.begin().await?;
        let Some(at) = db::subscriptions::next_due_on_clock(&mut tx, clock, to).await? else {
            tx.commit().await?;
            return Ok(done);
        };
        let mut jobs = Vec::new();
        for (owner, sub) in db::subscriptions::due_on_clock(&mut tx, clock, at).await? {
            if let Some(charges) = step(state, &mut tx, &owner, sub, at).await? {
                jobs.extend(charges);
                done += 1;
            }
        }
        for (owner, invoice) in
            db::subscriptions::due_invoices_on_clock(&mut tx, clock, at, &state.settings.public_url).await?
        {
            jobs.extend(claim(state, &mut tx, &owner, invoice, at).await?);
        }
        for (owner, invoice) in
            db::subscriptions::past_deadline_on_clock(&mut tx, clock, at, &state.settings.public_url).await?
        {
            done += usize::from(pass_deadline(&mut tx, &owner, invoice, at).await?);
        }
        tx.commit().await?;
        done += charge_and_settle(state, jobs, at).await?;
    }
    Err(FlowError::Internal(anyhow::anyhow!("test clock {clock} did not settle after {MAX_CLOCK_STEPS} steps")))
}
