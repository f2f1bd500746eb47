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

use std::collections::{HashMap, HashSet};

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

/// A step worked out in memory, written only if its subscription still stands as it was read.
struct Planned {
    owner: Owner,
    sub: Subscription,
    effects: Effects,
}

/// Invoices a step wrote to be charged, and their subscriptions, as the step wrote them: settling
/// the charges starts from these instead of reading them back (see [`settle_carried`]).
#[derive(Default)]
pub struct Carried {
    invoices: HashMap<InvoiceId, (Owner, Invoice)>,
    subs: HashMap<SubscriptionId, Subscription>,
}

/// What [`step_many`] did: how many subscriptions it stepped, the charges to make, and what the
/// step wrote of them.
pub struct Stepped {
    pub count: usize,
    pub jobs: Vec<ChargeJob>,
    pub carried: Carried,
}

/// Writes the planned steps (distinct subscriptions) whose subscription nobody changed since it
/// was read, all with one conditional statement, then the winners' invoices, numbered in the
/// steps' order with one counter statement per merchant, and their events. Returns, per step, the
/// charges to make, or `None` when another writer changed the subscription first (nothing of that
/// step is written then); and the written invoices to charge with their subscriptions.
async fn commit_steps(
    state: &AppState,
    conn: &mut Conn,
    mut planned: Vec<Planned>,
) -> Result<(Vec<Option<Vec<ChargeJob>>>, Carried), FlowError> {
    let won = {
        let mut subs: Vec<&mut Subscription> = planned.iter_mut().map(|p| &mut p.sub).collect();
        db::subscriptions::save_many(conn, &mut subs).await?
    };
    // Numbers per merchant and mode, counters taken in one order (two instances never wait on
    // each other's counters crosswise).
    let mut wanted: std::collections::BTreeMap<(String, i64), (Owner, usize)> = std::collections::BTreeMap::new();
    for p in planned.iter().zip(&won).filter(|(_, won)| **won).map(|(p, _)| p) {
        if !p.effects.invoices.is_empty() {
            let key = (p.owner.merchant_id.to_string(), p.owner.mode.as_flag());
            wanted.entry(key).or_insert_with(|| (p.owner.clone(), 0)).1 += p.effects.invoices.len();
        }
    }
    let mut numbers = HashMap::new();
    for (owner, count) in wanted.into_values() {
        let taken = db::subscriptions::next_invoice_numbers(conn, &owner, count).await?;
        numbers.insert(owner, taken.into_iter());
    }
    for p in planned.iter_mut().zip(&won).filter(|(_, won)| **won).map(|(p, _)| p) {
        let mut mine = numbers.get_mut(&p.owner);
        for invoice in p.effects.invoices.iter_mut() {
            invoice.number = mine.as_mut().and_then(|n| n.next()).unwrap_or_default();
        }
    }
    let rows: Vec<(&Owner, &Invoice)> = planned
        .iter()
        .zip(&won)
        .filter(|(_, won)| **won)
        .flat_map(|(p, _)| p.effects.invoices.iter().map(move |i| (&p.owner, i)))
        .collect();
    db::subscriptions::insert_invoices(conn, &rows).await?;
    let mut buffer = events::EventBuffer::default();
    for p in planned.iter().zip(&won).filter(|(_, won)| **won).map(|(p, _)| p) {
        for id in &p.effects.voided {
            void_into(state, conn, &p.owner, id, p.sub.updated_at, &mut buffer).await?;
        }
        push_effects(&mut buffer, &p.owner, &p.effects);
    }
    buffer.flush(conn).await?;
    // Each winner's invoices to charge become its charges, and go on with its subscription as written.
    let mut out = Vec::with_capacity(planned.len());
    let mut carried = Carried::default();
    for (p, won) in planned.into_iter().zip(won) {
        if !won {
            out.push(None);
            continue;
        }
        let mut charges = Vec::new();
        for invoice in p.effects.invoices.into_iter().filter(|i| i.collection.charging) {
            charges.push(ChargeJob {
                owner: p.owner.clone(),
                invoice: invoice.invoice_id.clone(),
                attempt: invoice.attempt_count,
                resumed: false,
            });
            carried.invoices.insert(invoice.invoice_id.clone(), (p.owner.clone(), invoice));
        }
        if !charges.is_empty() {
            carried.subs.insert(p.sub.id.clone(), p.sub);
        }
        out.push(Some(charges));
    }
    Ok((out, carried))
}

/// Adds the events of `effects` to `buffer`, in order.
fn push_effects(buffer: &mut events::EventBuffer, owner: &Owner, effects: &Effects) {
    let mut pending = effects.events.iter().peekable();
    while let Some(e) = pending.next() {
        match e {
            Pending::Subscription { event_type, object, at } => {
                let id = object.get("id").and_then(Value::as_str).unwrap_or_default();
                buffer.push(owner, event_type, "subscription", id, object, *at);
            }
            Pending::Invoice { event_type, index, at } => {
                // An invoice's events of one moment (created, finalized, ...) share its payload.
                let mut types = vec![*event_type];
                let same =
                    |n: &&Pending| matches!(n, Pending::Invoice { index: i, at: t, .. } if i == index && t == at);
                while let Some(Pending::Invoice { event_type, .. }) = pending.next_if(same) {
                    types.push(event_type);
                }
                let invoice = &effects.invoices[*index];
                buffer.push_each(owner, &types, "invoice", invoice.invoice_id.as_str(), invoice, *at);
            }
            Pending::Preview { object, at } => {
                let id = object.get("subscription").and_then(Value::as_str).unwrap_or_default();
                buffer.push(owner, "invoice.upcoming", "invoice", id, object, *at);
            }
        }
    }
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
    let mut buffer = events::EventBuffer::default();
    push_effects(&mut buffer, owner, &effects);
    buffer.flush(conn).await?;
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
    sub: Subscription,
    at: Timestamp,
) -> Result<Option<Vec<ChargeJob>>, FlowError> {
    let planned = plan(state, conn, owner.clone(), sub, at).await?;
    Ok(commit_steps(state, conn, vec![planned]).await?.0.pop().flatten())
}

/// [`step`] for many subscriptions (distinct ids) at `at`: all worked out first, then written
/// together. Returns how many were stepped (the others changed under us) and their charges.
pub async fn step_many(
    state: &AppState,
    conn: &mut Conn,
    subs: Vec<(Owner, Subscription)>,
    at: Timestamp,
) -> Result<Stepped, FlowError> {
    let mut planned = Vec::with_capacity(subs.len());
    for (owner, sub) in subs {
        planned.push(plan(state, conn, owner, sub, at).await?);
    }
    let (out, carried) = commit_steps(state, conn, planned).await?;
    let mut stepped = Stepped { count: 0, jobs: Vec::new(), carried };
    for charges in out.into_iter().flatten() {
        stepped.count += 1;
        stepped.jobs.extend(charges);
    }
    Ok(stepped)
}

/// Works out everything due on `sub` at or before `at`, without writing it.
async fn plan(
    state: &AppState,
    conn: &mut Conn,
    owner: Owner,
    mut sub: Subscription,
    at: Timestamp,
) -> Result<Planned, FlowError> {
    let mut effects = Effects::default();
    plan_step(state, conn, &mut sub, at, &mut effects).await?;
    lease_from(state, &mut effects, at);
    sub.engine.next_action_at = next_action(&sub);
    Ok(Planned { owner, sub, effects })
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
    sub: Subscription,
    at: Timestamp,
    hold_events: bool,
) -> Result<Vec<ChargeJob>, FlowError> {
    let mut planned = plan(state, conn, owner.clone(), sub, at).await?;
    if hold_events {
        planned.effects.events.retain(|e| !matches!(e, Pending::Invoice { .. }));
    }
    commit_steps(state, conn, vec![planned])
        .await?
        .0
        .pop()
        .flatten()
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
    charge_many(state, std::slice::from_ref(job), &Carried::default()).await.pop().flatten()
}

/// [`charge`] for many jobs: their invoices and cards read together, then each gateway asked for
/// all of its charges at once ([`crate::gateway::PaymentGateway::charge_many`]). Answers in the
/// order of `jobs`. An invoice in `carried` is charged as its step wrote it (the amount, currency
/// and card of an invoice never change while an attempt is in flight).
pub async fn charge_many(state: &AppState, jobs: &[ChargeJob], carried: &Carried) -> Vec<Option<AttemptResult>> {
    answers_or_none(jobs, try_charge_many(state, None, jobs, carried).await)
}

/// [`charge_many`] reading on `conn`, a connection the caller holds.
pub async fn charge_many_on(
    state: &AppState,
    conn: &mut Conn,
    jobs: &[ChargeJob],
    carried: &Carried,
) -> Vec<Option<AttemptResult>> {
    answers_or_none(jobs, try_charge_many(state, Some(conn), jobs, carried).await)
}

fn answers_or_none(
    jobs: &[ChargeJob],
    answers: Result<Vec<Option<AttemptResult>>, FlowError>,
) -> Vec<Option<AttemptResult>> {
    match answers {
        Ok(answers) => answers,
        Err(e) => {
            for job in jobs {
                tracing::warn!(invoice = %job.invoice, error = ?e, "invoice charge without an answer; retried after its lease");
            }
            vec![None; jobs.len()]
        }
    }
}

/// The invoices' amounts and cards and the cards' gateway details for `jobs`.
async fn charge_reads(
    conn: &mut Conn,
    jobs: &[ChargeJob],
    carried: &Carried,
) -> Result<(HashMap<InvoiceId, db::subscriptions::ChargeFacts>, SavedCards), FlowError> {
    let ids: Vec<&InvoiceId> =
        jobs.iter().map(|j| &j.invoice).filter(|id| !carried.invoices.contains_key(*id)).collect();
    let mut invoices = db::subscriptions::charge_facts(conn, &ids).await?;
    for job in jobs {
        if let Some((_, invoice)) = carried.invoices.get(&job.invoice) {
            invoices.insert(job.invoice.clone(), db::subscriptions::ChargeFacts::of(invoice));
        }
    }
    let cards: Vec<&PaymentMethodId> = invoices.values().filter_map(|i| i.payment_method.as_ref()).collect();
    let cards = db::payments::saved_cards(conn, &cards).await?;
    Ok((invoices, cards))
}

type SavedCards = HashMap<PaymentMethodId, (String, crate::gateway::SavedCard)>;

/// Reads on `conn`, or on a pooled connection given back before the gateways are asked.
async fn try_charge_many(
    state: &AppState,
    conn: Option<&mut Conn>,
    jobs: &[ChargeJob],
    carried: &Carried,
) -> Result<Vec<Option<AttemptResult>>, FlowError> {
    use futures_util::StreamExt;
    let mut answers: Vec<Option<AttemptResult>> = vec![None; jobs.len()];
    let (invoices, cards) = match conn {
        Some(conn) => charge_reads(conn, jobs, carried).await?,
        None => charge_reads(&mut *state.db.conn().await?, jobs, carried).await?,
    };
    // What to ask for each job that has a card its gateway can charge.
    struct Ask<'a> {
        index: usize,
        job: &'a ChargeJob,
        gateway: &'a dyn crate::gateway::PaymentGateway,
        key: String,
        card: &'a crate::gateway::SavedCard,
        invoice: &'a db::subscriptions::ChargeFacts,
    }
    let mut asks = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        let Some(invoice) = invoices.get(&job.invoice) else { continue };
        let Some(pm) = &invoice.payment_method else {
            answers[index] = Some(AttemptResult::NoCard);
            continue;
        };
        let Some((gateway_name, card)) = cards.get(pm) else {
            answers[index] = Some(AttemptResult::NoCard);
            continue;
        };
        let gateway = match crate::flows::gateway(state, job.owner.mode) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(invoice = %job.invoice, error = ?e, "invoice charge without an answer; retried after its lease");
                continue;
            }
        };
        if gateway.name() != gateway_name {
            // A card saved by another processor (the sandbox before Stripe was configured) cannot
            // be charged here.
            answers[index] = Some(AttemptResult::NoCard);
            continue;
        }
        asks.push(Ask { index, job, gateway, key: format!("{}-a{}", job.invoice, job.attempt), card, invoice });
    }
    // An attempt asked before whose answer was never recorded is looked for first.
    let lookups: Vec<crate::gateway::BoxFuture<'_, Result<Option<ChargeOutcome>, crate::gateway::GatewayError>>> = asks
        .iter()
        .map(|a| {
            if !a.job.resumed {
                return Box::pin(std::future::ready(Ok(None))) as crate::gateway::BoxFuture<'_, _>;
            }
            a.gateway.lookup(ChargeLookup {
                idempotency_key: &a.key,
                gateway_customer: a.card.gateway_customer.as_deref(),
                charge_ref: None,
            })
        })
        .collect();
    let found: Vec<Result<Option<ChargeOutcome>, crate::gateway::GatewayError>> =
        futures_util::stream::iter(lookups).buffered(crate::gateway::PARALLEL_CHARGES).collect().await;
    let mut outcomes: Vec<Option<Result<ChargeOutcome, crate::gateway::GatewayError>>> =
        found.into_iter().map(|f| f.transpose()).collect();
    // The rest is asked of each gateway (one per mode) at once.
    for mode in [crate::domain::Mode::Test, crate::domain::Mode::Live] {
        let pending: Vec<usize> =
            (0..asks.len()).filter(|&i| outcomes[i].is_none() && asks[i].job.owner.mode == mode).collect();
        let Some(&first) = pending.first() else { continue };
        let requests = pending
            .iter()
            .map(|&i| ChargeRequest {
                idempotency_key: &asks[i].key,
                card: asks[i].card,
                amount: asks[i].invoice.amount_due,
                currency: asks[i].invoice.currency,
                off_session: true,
                manual_capture: false,
            })
            .collect();
        for (i, outcome) in pending.iter().zip(asks[first].gateway.charge_many(requests).await) {
            outcomes[*i] = Some(outcome);
        }
    }
    for (ask, outcome) in asks.iter().zip(outcomes) {
        let outcome = match outcome {
            Some(Ok(outcome)) => outcome,
            Some(Err(e)) => {
                tracing::warn!(invoice = %ask.job.invoice, error = ?e, "invoice charge without an answer; retried after its lease");
                continue;
            }
            None => continue,
        };
        crate::crash_points::reached("after_invoice_charge");
        answers[ask.index] = Some(match outcome {
            ChargeOutcome::Succeeded { gateway_ref } => {
                AttemptResult::Paid { gateway: ask.gateway.name().to_string(), gateway_ref }
            }
            ChargeOutcome::Declined { code } => AttemptResult::Declined { code },
            // Off-session charges cannot show a challenge; a gateway asking for one is a decline.
            ChargeOutcome::RequiresAction { .. } => {
                AttemptResult::Declined { code: DeclineCode::AuthenticationRequired }
            }
        });
    }
    Ok(answers)
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
    Ok(settle_many(state, conn, &[(job, result)], at).await?[0])
}

/// [`settle`] for many answers: the invoices, subscriptions and payment intents read together,
/// each answer decided by [`decide`], and what was decided written together. Whether each answer
/// was applied, in order. Two answers for one invoice or one subscription are applied one after
/// the other (the second in a later round that reads what the first wrote), as one at a time would.
pub async fn settle_many(
    state: &AppState,
    conn: &mut Conn,
    answers: &[(&ChargeJob, &AttemptResult)],
    at: Timestamp,
) -> Result<Vec<bool>, FlowError> {
    settle_carried(state, conn, answers, Carried::default(), at).await
}

/// [`settle_many`] for the charges of a step that committed moments ago, starting from what it
/// wrote instead of reading it back. An invoice is taken as carried: every write to an invoice is
/// conditional on its status, attempt count and whether an attempt is in flight, and while the
/// attempt is in flight nothing else changes it but its lease; so the settlement's own
/// conditional write fails if the copy is stale, as it would after a read. A subscription is
/// taken as carried only if its stored version is still the carried one, since what the answer
/// does to it depends on its status; otherwise it is read.
pub async fn settle_carried(
    state: &AppState,
    conn: &mut Conn,
    answers: &[(&ChargeJob, &AttemptResult)],
    mut carried: Carried,
    at: Timestamp,
) -> Result<Vec<bool>, FlowError> {
    let public = &state.settings.public_url;
    let mut applied = vec![false; answers.len()];
    let mut pending: Vec<usize> = (0..answers.len()).collect();
    while !pending.is_empty() {
        let mut invoices: HashMap<InvoiceId, (Owner, Invoice)> = HashMap::new();
        let mut missing: Vec<&InvoiceId> = Vec::new();
        for &i in &pending {
            let id = &answers[i].0.invoice;
            match carried.invoices.remove(id) {
                Some(known) => {
                    invoices.insert(id.clone(), known);
                }
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            let read = db::subscriptions::get_invoices_any(conn, &missing, public).await?;
            invoices.extend(read.into_iter().map(|(o, i)| (i.invoice_id.clone(), (o, i))));
        }
        let mut round = Vec::new();
        let mut later = Vec::new();
        let mut taken_invoices = HashSet::new();
        let mut taken_subs = HashSet::new();
        for i in pending {
            let job = answers[i].0;
            let sub = invoices.get(&job.invoice).and_then(|(_, inv)| inv.subscription.clone());
            if taken_invoices.contains(&job.invoice) || sub.as_ref().is_some_and(|s| taken_subs.contains(s)) {
                later.push(i);
                continue;
            }
            taken_invoices.insert(job.invoice.clone());
            taken_subs.extend(sub);
            round.push(i);
        }
        let mut subs = current_subscriptions(conn, &taken_subs, &mut carried).await?;
        // A later round reads what this one writes.
        carried = Carried::default();
        let pi_ids: Vec<&PaymentIntentId> = round
            .iter()
            .filter_map(|&i| invoices.get(&answers[i].0.invoice))
            .filter_map(|(_, inv)| inv.payment_intent.as_ref())
            .collect();
        let mut intents: HashMap<PaymentIntentId, (Owner, PaymentIntent)> = if pi_ids.is_empty() {
            HashMap::new()
        } else {
            db::payments::get_payment_intents_any(conn, &pi_ids)
                .await?
                .into_iter()
                .map(|(o, pi)| (pi.payment_intent_id.clone(), (o, pi)))
                .collect()
        };
        let mut decided = Vec::new();
        for i in round {
            let (job, result) = answers[i];
            let Some((owner, invoice)) = invoices.remove(&job.invoice) else { continue };
            if !(invoice.collection.charging
                && invoice.attempt_count == job.attempt
                && invoice.status == InvoiceStatus::Open)
            {
                continue;
            }
            let sub = invoice.subscription.as_ref().and_then(|id| subs.remove(id));
            let pi = payment_intent_of(&owner, &invoice, &mut intents, at);
            match decide(conn, owner, invoice, sub, pi, result, at).await? {
                Decision::Unborn => applied[i] = true,
                Decision::Settle(s) => decided.push((i, *s)),
            }
        }
        let (indexes, mut settlements): (Vec<usize>, Vec<Settlement>) = decided.into_iter().unzip();
        let written = write_settlements(state, conn, &mut settlements, at).await?;
        for (i, w) in indexes.into_iter().zip(written) {
            applied[i] = w;
        }
        pending = later;
    }
    Ok(applied)
}

/// The subscriptions `ids` as stored: the carried copy of each whose version is unchanged, the
/// others read.
async fn current_subscriptions(
    conn: &mut Conn,
    ids: &HashSet<SubscriptionId>,
    carried: &mut Carried,
) -> Result<HashMap<SubscriptionId, Subscription>, FlowError> {
    let mut out = HashMap::with_capacity(ids.len());
    let known: Vec<&SubscriptionId> = ids.iter().filter(|id| carried.subs.contains_key(*id)).collect();
    if !known.is_empty() {
        let stored = db::subscriptions::versions(conn, &known).await?;
        for id in known {
            if let Some(sub) = carried.subs.remove(id).filter(|s| stored.get(id) == Some(&s.engine.version)) {
                out.insert(id.clone(), sub);
            }
        }
    }
    let missing: Vec<&SubscriptionId> = ids.iter().filter(|id| !out.contains_key(*id)).collect();
    if !missing.is_empty() {
        for (_, sub) in db::subscriptions::get_many_any(conn, &missing).await? {
            out.insert(sub.id.clone(), sub);
        }
    }
    Ok(out)
}

/// How one answered attempt settles, worked out before anything is written.
struct Settlement {
    owner: Owner,
    invoice: Invoice,
    /// How the invoice stood when read: it is written only over that.
    expected: InvoiceVersion,
    pi: PaymentIntent,
    /// Whether `pi` is the stored one the invoice names (otherwise its id is new).
    pi_stored: bool,
    /// The processor and its charge reference, for a payment.
    gateway_ref: Option<(String, String)>,
    /// The subscription as the answer leaves it, when it has to be written.
    sub_after: Option<Subscription>,
    /// An `ERROR_IF_INCOMPLETE` subscription's first charge succeeded: it exists now.
    all_or_nothing: bool,
    invoice_events: Vec<&'static str>,
    effects: Effects,
}

enum Decision {
    Settle(Box<Settlement>),
    /// An `ERROR_IF_INCOMPLETE` subscription's first charge was declined: it never existed, and
    /// it and its invoice are gone.
    Unborn,
}

/// What an answer to an open invoice's attempt in flight does: the invoice paid, or the failure
/// counted with the next retry (or the end of dunning); the subscription's status; the payment
/// intent; the events. The one place where this is decided, for every door an answer comes
/// through (the engine, the API, the hosted invoice page). Nothing is written here except what
/// ends a subscription that never existed; the caller writes the rest if the invoice still stands
/// as it was read.
async fn decide(
    conn: &mut Conn,
    owner: Owner,
    mut invoice: Invoice,
    sub: Option<Subscription>,
    mut pi: PaymentIntent,
    result: &AttemptResult,
    at: Timestamp,
) -> Result<Decision, FlowError> {
    let expected = InvoiceVersion::of(&invoice, at);
    // `ERROR_IF_INCOMPLETE`: the subscription exists only if its first charge succeeds.
    let all_or_nothing = sub.as_ref().is_some_and(|s| {
        s.payment_behavior == PaymentBehavior::ErrorIfIncomplete
            && s.subscription_status == SubscriptionStatus::Incomplete
            && invoice.billing_reason == BillingReason::SubscriptionCreate
    });
    invoice.collection.charging = false;
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
                return Ok(Decision::Unborn);
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
    let status_before = sub.as_ref().map(|o| o.subscription_status);
    let sub_after =
        sub_after.filter(|s| Some(s.subscription_status) != status_before || all_or_nothing).map(|mut s| {
            s.engine.next_action_at = next_action(&s);
            s
        });
    Ok(Decision::Settle(Box::new(Settlement {
        owner,
        invoice,
        expected,
        pi,
        pi_stored,
        gateway_ref,
        sub_after,
        all_or_nothing,
        invoice_events,
        effects,
    })))
}

/// Writes settlements of distinct invoices and subscriptions: the invoices in one conditional
/// statement, then, for those written, the payment intents, the subscriptions and the events.
/// Whether each was written (`false`: the attempt had been applied already).
async fn write_settlements(
    state: &AppState,
    conn: &mut Conn,
    settlements: &mut [Settlement],
    at: Timestamp,
) -> Result<Vec<bool>, FlowError> {
    if settlements.is_empty() {
        return Ok(Vec::new());
    }
    let pairs: Vec<(&Invoice, &InvoiceVersion)> = settlements.iter().map(|s| (&s.invoice, &s.expected)).collect();
    let won = db::subscriptions::save_invoices(conn, &pairs).await?;
    let mut new_intents = Vec::new();
    let mut updated_intents = Vec::new();
    for s in settlements.iter().zip(&won).filter(|(_, won)| **won).map(|(s, _)| s) {
        let charge_ref = s.gateway_ref.as_ref().map(|g| g.1.as_str());
        if s.invoice.attempt_count == 1 && !s.pi_stored {
            let gateway = s.gateway_ref.as_ref().map_or_else(|| gateway_for(state, &s.owner), |g| g.0.as_str());
            new_intents.push((
                &s.owner,
                db::payments::NewPaymentIntent { intent: &s.pi, attempt: None, gateway, gateway_ref: charge_ref },
            ));
        } else {
            updated_intents.push((&s.pi, charge_ref));
        }
    }
    db::payments::insert_payment_intents(conn, &new_intents).await?;
    db::payments::update_payment_intents(conn, &updated_intents, at).await?;
    let mut subs: Vec<&mut Subscription> =
        settlements.iter_mut().zip(&won).filter(|(_, won)| **won).filter_map(|(s, _)| s.sub_after.as_mut()).collect();
    let saved = db::subscriptions::save_many(conn, &mut subs).await?;
    for (s, saved) in subs.into_iter().zip(saved) {
        if !saved {
            save_subscription_retrying(conn, s).await?;
        }
    }
    let mut buffer = events::EventBuffer::default();
    for s in settlements.iter().zip(&won).filter(|(_, won)| **won).map(|(s, _)| s) {
        let (owner, invoice, pi) = (&s.owner, &s.invoice, &s.pi);
        if s.all_or_nothing {
            // The creation events were held back until the first charge decided the subscription exists.
            let types = ["invoice.created", "invoice.finalized"];
            buffer.push_each(owner, &types, "invoice", invoice.invoice_id.as_str(), invoice, at);
        }
        let pi_event = if pi.status == PaymentIntentStatus::Succeeded {
            "payment_intent.succeeded"
        } else {
            "payment_intent.payment_failed"
        };
        buffer.push(owner, pi_event, "payment_intent", pi.payment_intent_id.as_str(), pi, at);
        buffer.push_each(owner, &s.invoice_events, "invoice", invoice.invoice_id.as_str(), invoice, at);
        push_effects(&mut buffer, owner, &s.effects);
    }
    buffer.flush(conn).await?;
    Ok(won)
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
    let mut buffer = events::EventBuffer::default();
    buffer.push(owner, event, "invoice", invoice.invoice_id.as_str(), &invoice, deadline);
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
            push_effects(&mut buffer, owner, &effects);
        }
    }
    buffer.flush(conn).await?;
    Ok(true)
}

fn gateway_for(state: &AppState, owner: &Owner) -> &'static str {
    state.gateways.for_mode(owner.mode).map_or("none", |g| g.name())
}

/// The invoice's payment intent (one per invoice, over all its attempts) from those read for a
/// round, or a new one.
fn payment_intent_of(
    owner: &Owner,
    invoice: &Invoice,
    stored: &mut HashMap<PaymentIntentId, (Owner, PaymentIntent)>,
    at: Timestamp,
) -> PaymentIntent {
    if let Some(id) = &invoice.payment_intent {
        if let Some((_, mut pi)) = stored.remove(id).filter(|(o, _)| o == owner) {
            pi.payment_method = invoice.payment_method.clone();
            return pi;
        }
    }
    PaymentIntent {
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
    }
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
    let mut buffer = events::EventBuffer::default();
    let done = void_into(state, conn, owner, id, at, &mut buffer).await?;
    buffer.flush(conn).await?;
    Ok(done)
}

/// [`void`], with its event added to `buffer`.
async fn void_into(
    state: &AppState,
    conn: &mut Conn,
    owner: &Owner,
    id: &InvoiceId,
    at: Timestamp,
    buffer: &mut events::EventBuffer,
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
    buffer.push(owner, "invoice.voided", "invoice", id.as_str(), &invoice, at);
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
    invoice: Invoice,
    at: Timestamp,
) -> Result<Option<ChargeJob>, FlowError> {
    Ok(claim_many(state, conn, vec![(owner.clone(), invoice)], at).await?.pop().flatten())
}

/// [`claim`] for many invoices (distinct ids) with one conditional statement; the jobs, in order.
pub async fn claim_many(
    state: &AppState,
    conn: &mut Conn,
    invoices: Vec<(Owner, Invoice)>,
    at: Timestamp,
) -> Result<Vec<Option<ChargeJob>>, FlowError> {
    let mut taken = Vec::with_capacity(invoices.len());
    for (owner, mut invoice) in invoices {
        if invoice.status != InvoiceStatus::Open {
            taken.push(None);
            continue;
        }
        let expected = InvoiceVersion::of(&invoice, at);
        let resumed = invoice.collection.charging;
        if !resumed {
            invoice.attempt_count += 1;
            invoice.collection.charging = true;
        }
        invoice.next_payment_attempt = Some(at.plus_seconds(state.settings.payment_stale_seconds));
        taken.push(Some((owner, invoice, expected, resumed)));
    }
    let pairs: Vec<(&Invoice, &InvoiceVersion)> = taken.iter().flatten().map(|(_, i, e, _)| (i, e)).collect();
    let mut won = db::subscriptions::save_invoices(conn, &pairs).await?.into_iter();
    Ok(taken
        .into_iter()
        .map(|t| {
            let (owner, invoice, _, resumed) = t?;
            won.next().filter(|w| *w)?;
            Some(ChargeJob { owner, invoice: invoice.invoice_id, attempt: invoice.attempt_count, resumed })
        })
        .collect())
}

/// Charges every job and applies the answers in one transaction, starting from `carried`, all on
/// `conn`.
async fn charge_and_settle(
    state: &AppState,
    conn: &mut Conn,
    jobs: Vec<ChargeJob>,
    carried: Carried,
    at: Timestamp,
) -> Result<usize, FlowError> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let results = charge_many_on(state, conn, &jobs, &carried).await;
    let answered: Vec<(&ChargeJob, &AttemptResult)> =
        jobs.iter().zip(&results).filter_map(|(job, r)| r.as_ref().map(|r| (job, r))).collect();
    if answered.is_empty() {
        return Ok(0);
    }
    let mut tx = state.db.begin_on(conn).await?;
    let applied = settle_carried(state, &mut tx, &answered, carried, at).await?;
    tx.commit().await?;
    Ok(applied.into_iter().filter(|a| *a).count())
}

// -------------------------------------------------------------------------------------------------
// Passes
// -------------------------------------------------------------------------------------------------

/// One pass on the system clock: due subscriptions stepped in one transaction, their charges
/// made, then due invoice attempts. Returns how many items were handled.
pub async fn run_due(state: &AppState, limit: i64) -> Result<usize, FlowError> {
    Ok(run_due_for(state, limit, std::time::Duration::ZERO).await?.0)
}

/// Passes on the system clock for about `budget`: batches of `limit` due subscriptions, each
/// stepped in one transaction and its charges made and settled, while they come back full; then
/// one batch of due invoice attempts and of passed deadlines. Returns how many items were handled,
/// and whether the budget ended it with subscriptions still due.
pub async fn run_due_for(
    state: &AppState,
    limit: i64,
    budget: std::time::Duration,
) -> Result<(usize, bool), FlowError> {
    let started = std::time::Instant::now();
    let mut handled = 0;
    let mut cut_short = false;
    // One connection for the whole pass: on SQLite its prepared statements and its page cache stay
    // warm from batch to batch, where the pool would hand out each of its connections in turn.
    let mut conn = state.db.conn().await?;
    loop {
        let now = state.clock.now();
        let subs = db::subscriptions::due(&mut conn, now, limit).await?;
        if subs.is_empty() {
            break;
        }
        let full = subs.len() as i64 >= limit;
        let mut tx = state.db.begin_on(&mut conn).await?;
        let stepped = step_many(state, &mut tx, subs, now).await?;
        tx.commit().await?;
        handled += stepped.count;
        handled += charge_and_settle(state, &mut conn, stepped.jobs, stepped.carried, now).await?;
        if !full {
            break;
        }
        if started.elapsed() >= budget {
            cut_short = true;
            break;
        }
    }
    let now = state.clock.now();
    let invoices = db::subscriptions::due_invoices(&mut conn, now, limit, &state.settings.public_url).await?;
    let mut jobs = Vec::new();
    if !invoices.is_empty() {
        let mut tx = state.db.begin_on(&mut conn).await?;
        jobs.extend(claim_many(state, &mut tx, invoices, now).await?.into_iter().flatten());
        tx.commit().await?;
    }
    handled += charge_and_settle(state, &mut conn, jobs, Carried::default(), now).await?;
    let late = db::subscriptions::past_deadline(&mut conn, now, limit, &state.settings.public_url).await?;
    if !late.is_empty() {
        let mut tx = state.db.begin_on(&mut conn).await?;
        for (owner, invoice) in late {
            handled += usize::from(pass_deadline(&mut tx, &owner, invoice, now).await?);
        }
        tx.commit().await?;
    }
    Ok((handled, cut_short))
}

/// Runs, in time order, everything on test clock `clock` that is due at or before `to`, each item at
/// its own due time. Returns how many items were done.
pub async fn run_clock(state: &AppState, clock: &TestClockId, to: Timestamp) -> Result<usize, FlowError> {
    let mut done = 0;
    let mut conn = state.db.conn().await?;
    for _ in 0..MAX_CLOCK_STEPS {
        let mut tx = state.db.begin_on(&mut conn).await?;
        let Some(at) = db::subscriptions::next_due_on_clock(&mut tx, clock, to).await? else {
            tx.commit().await?;
            return Ok(done);
        };
        let subs = db::subscriptions::due_on_clock(&mut tx, clock, at).await?;
        let Stepped { count, mut jobs, carried } = step_many(state, &mut tx, subs, at).await?;
        done += count;
        let invoices = db::subscriptions::due_invoices_on_clock(&mut tx, clock, at, &state.settings.public_url).await?;
        jobs.extend(claim_many(state, &mut tx, invoices, at).await?.into_iter().flatten());
        for (owner, invoice) in
            db::subscriptions::past_deadline_on_clock(&mut tx, clock, at, &state.settings.public_url).await?
        {
            done += usize::from(pass_deadline(&mut tx, &owner, invoice, at).await?);
        }
        tx.commit().await?;
        done += charge_and_settle(state, &mut conn, jobs, carried, at).await?;
    }
    Err(FlowError::Internal(anyhow::anyhow!("test clock {clock} did not settle after {MAX_CLOCK_STEPS} steps")))
}
