//! Subscriptions and invoices as the merchant API changes them: create (seed 002), update, cancel,
//! and pay or void an invoice. Billing itself (periods, invoices, collection) is `flows::billing`.

use crate::db::{self, Conn, Cursor};
use crate::domain::billing_period::{PeriodKind, PeriodUnit, Schedule, ScheduleError, ScheduleSpec, Zone};
use crate::domain::customer::Customer;
use crate::domain::ids::{CustomerId, InvoiceId, PaymentMethodId, PriceId, ProductId, SubscriptionId, TestClockId};
use crate::domain::invoicing;
use crate::domain::metadata::Metadata;
use crate::domain::money::Currency;
use crate::domain::payment::DeclineCode;
use crate::domain::price::{Price, PriceType};
use crate::domain::subscription::{
    CollectionMethod, Commitment, EngineState, Invoice, InvoiceStatus, ItemKind, PhaseOverride, Subscription,
    SubscriptionItem, SubscriptionPhase, SubscriptionStatus,
};
use crate::domain::subscription_request::{
    minor_units, CustomerRef, InitialStatus, InvoiceBilling, NewSubscription, OverrideLineItem, PaymentBehavior,
    ProrationBehavior,
};
use crate::domain::timestamp::Timestamp;
use crate::domain::{FieldError, Owner};
use crate::flows::billing::{self, AttemptResult, ChargeJob};
use crate::flows::{events, FlowError};
use crate::state::AppState;

/// Elapsed periods a backdated `start_date` may bill when the subscription is made.
pub const MAX_BACKDATED_PERIODS: usize = 100;

fn invalid(param: &str, message: impl Into<String>) -> FlowError {
    FlowError::Invalid(FieldError::new(param, message))
}

async fn customer_by_id(conn: &mut Conn, owner: &Owner, raw: &str) -> Result<Customer, FlowError> {
    let found = match CustomerId::parse(raw) {
        Some(id) => db::customers::get(conn, owner, &id).await?,
        None => None,
    };
    found.ok_or_else(|| invalid("customer_id", format!("No such customer: '{raw}' (in this mode)")))
}

async fn customer_by_external_id(conn: &mut Conn, owner: &Owner, external: &str) -> Result<Customer, FlowError> {
    let filter =
        db::customers::CustomerFilter { email: None, external_id: Some(external.to_string()), test_clock: None };
    let page = db::customers::list(conn, owner, &filter, &Cursor { limit: 1, ..Default::default() }).await?;
    page.items.into_iter().next().ok_or_else(|| {
        invalid("external_customer_id", format!("No customer has external_id '{external}' (in this mode)"))
    })
}

async fn find_customer(conn: &mut Conn, owner: &Owner, r: &CustomerRef) -> Result<Customer, FlowError> {
    match r {
        CustomerRef::Id(id) => customer_by_id(conn, owner, id).await,
        CustomerRef::External(e) => customer_by_external_id(conn, owner, e).await,
        CustomerRef::Both { id, external_id } => {
            let c = customer_by_id(conn, owner, id).await?;
            if c.external_id.as_deref() != Some(external_id.as_str()) {
                return Err(invalid(
                    "external_customer_id",
                    format!(
                        "external_customer_id '{external_id}' is not the external_id of customer {}",
                        c.customer_id
                    ),
                ));
            }
            Ok(c)
        }
    }
}

fn unit_of(price: &Price) -> Option<(PeriodUnit, u32)> {
    price.recurring.map(|r| (PeriodUnit::from_interval(r.interval), r.interval_count))
}

/// The plan's recurring price: the price named, or the one active recurring price of the product
/// named that matches the currency, period and count asked for.
async fn find_plan(conn: &mut Conn, owner: &Owner, req: &NewSubscription) -> Result<Price, FlowError> {
    let raw = req.plan_id.as_str();
    if let Some(id) = PriceId::parse(raw) {
        let price = db::prices::get(conn, owner, &id)
            .await?
            .ok_or_else(|| invalid("plan_id", format!("No such plan: '{raw}' (no price with that id in this mode)")))?;
        if price.recurring.is_none() {
            return Err(invalid("plan_id", format!("price {raw} is one-time; a plan must be a recurring price")));
        }
        if !price.active {
            return Err(FlowError::Unprocessable {
                code: "price_inactive",
                message: format!("price {raw} is archived; plans must use an active price"),
            });
        }
        return Ok(price);
    }
    let Some(product) = ProductId::parse(raw) else {
        return Err(invalid(
            "plan_id",
            format!("No such plan: '{raw}'; use a product (fprod_...) or recurring price (fprice_...) id"),
        ));
    };
    if db::products::get(conn, owner, &product).await?.is_none() {
        return Err(invalid("plan_id", format!("No such plan: '{raw}' (no product with that id in this mode)")));
    }
    let filter =
        db::prices::PriceFilter { product: Some(product), active: Some(true), price_type: Some(PriceType::Recurring) };
    let prices = db::prices::list(conn, owner, &filter, &Cursor { limit: 100, ..Default::default() }).await?.items;
    let matching: Vec<Price> = prices
        .into_iter()
        .filter(|p| req.currency.is_none_or(|c| c == p.currency))
        .filter(|p| {
            let (unit, count) = unit_of(p).unwrap_or((PeriodUnit::Month, 1));
            req.billing_period.is_none_or(|u| u == unit) && req.billing_period_count.is_none_or(|c| c == count)
        })
        .collect();
    match matching.len() {
        1 => Ok(matching.into_iter().next().expect("one")),
        0 => Err(FlowError::Unprocessable {
            code: "no_matching_price",
            message: format!(
                "product {raw} has no active recurring price matching currency {}, billing_period {} and billing_period_count {}",
                req.currency.map_or("(any)".into(), |c| c.code().to_string()),
                req.billing_period.map_or("(any)", |u| u.as_str()),
                req.billing_period_count.map_or("(any)".into(), |c| c.to_string()),
            ),
        }),
        n => Err(FlowError::Unprocessable {
            code: "ambiguous_plan",
            message: format!(
                "product {raw} has {n} active recurring prices matching; give currency, billing_period and billing_period_count, or a price id"
            ),
        }),
    }
}

async fn description_of(conn: &mut Conn, owner: &Owner, price: &Price) -> Result<String, FlowError> {
    let product = db::products::get(conn, owner, &price.product).await?;
    Ok(match (product, &price.description) {
        (Some(p), _) => p.name,
        (None, Some(d)) => d.clone(),
        (None, None) => price.price_id.to_string(),
    })
}

fn apply_override(
    o: &OverrideLineItem,
    items: &mut [SubscriptionItem],
    currency: Currency,
    param: &str,
) -> Result<(), FlowError> {
    let item = items.iter_mut().find(|i| i.price_id == o.price_id).ok_or_else(|| {
        invalid(
            &format!("{param}.price_id"),
            format!("{} is not a price of this subscription's plan or items", o.price_id),
        )
    })?;
    if let Some(q) = o.quantity {
        item.quantity = q;
    }
    if let Some(a) = o.amount {
        item.unit_amount = minor_units(a, currency, &format!("{param}.amount"))?;
    }
    Ok(())
}

fn schedule_error(e: ScheduleError) -> FlowError {
    let param = match e {
        ScheduleError::ZeroCount => "billing_period_count",
        ScheduleError::TrialBeforeStart => "trial_end",
        ScheduleError::EndNotAfterStart => "end_date",
        ScheduleError::OutOfRange => "start_date",
    };
    invalid(param, e.to_string())
}

/// Creates a subscription from a checked seed-002 request, bills its first period and, when
/// something is owed and the card is to be charged, charges it before answering.
pub async fn create(state: &AppState, owner: &Owner, req: NewSubscription) -> Result<Subscription, FlowError> {
    let mut conn = state.db.conn().await?;
    let customer = find_customer(&mut conn, owner, &req.customer).await?;
    let test_clock = customer.test_clock.as_deref().and_then(TestClockId::parse);
    let now = billing::now_on(state, &mut conn, test_clock.as_ref()).await?;
    let plan = find_plan(&mut conn, owner, &req).await?;
    if let Some(c) = req.currency {
        if c != plan.currency {
            return Err(invalid(
                "currency",
                format!("currency {} does not match the plan's price currency {}", c.code(), plan.currency.code()),
            ));
        }
    }
    let currency = plan.currency;
    let (price_unit, price_count) = unit_of(&plan).unwrap_or((PeriodUnit::Month, 1));
    let unit = req.billing_period.unwrap_or(price_unit);
    let count = req.billing_period_count.unwrap_or(price_count);

    let mut items = vec![SubscriptionItem {
        price_id: plan.price_id.clone(),
        quantity: 1,
        unit_amount: plan.unit_amount,
        description: description_of(&mut conn, owner, &plan).await?,
        kind: ItemKind::Plan,
    }];
    for (i, extra) in req.line_items.iter().enumerate() {
        let param = format!("line_items[{i}].price_id");
        let price = db::prices::get(&mut conn, owner, &extra.price_id)
            .await?
            .ok_or_else(|| invalid(&param, format!("No such price: '{}' (in this mode)", extra.price_id)))?;
        if !price.active {
            return Err(invalid(&param, format!("price {} is archived", price.price_id)));
        }
        if price.currency != currency {
            return Err(invalid(
                &param,
                format!("price {} is in {}, the plan in {}", price.price_id, price.currency.code(), currency.code()),
            ));
        }
        let description = match &extra.display_name {
            Some(n) => n.clone(),
            None => description_of(&mut conn, owner, &price).await?,
        };
        items.push(SubscriptionItem {
            price_id: price.price_id.clone(),
            quantity: extra.quantity,
            unit_amount: price.unit_amount,
            description,
            kind: if price.recurring.is_some() { ItemKind::Recurring } else { ItemKind::OneTime },
        });
    }
    for (i, o) in req.override_line_items.iter().enumerate() {
        apply_override(o, &mut items, currency, &format!("override_line_items[{i}]"))?;
    }
    let mut phases = Vec::new();
    for (p, phase) in req.phases.iter().enumerate() {
        let mut overrides = Vec::new();
        for (i, o) in phase.override_line_items.iter().enumerate() {
            let param = format!("phases[{p}].override_line_items[{i}]");
            if !items.iter().any(|it| it.price_id == o.price_id) {
                return Err(invalid(
                    &format!("{param}.price_id"),
                    format!("{} is not a price of this subscription's plan or items", o.price_id),
                ));
            }
            let unit_amount = o.amount.map(|a| minor_units(a, currency, &format!("{param}.amount"))).transpose()?;
            overrides.push(PhaseOverride {
                price_id: o.price_id.clone(),
                quantity: o.quantity,
                unit_amount,
                amount: o.amount,
            });
        }
        phases.push(SubscriptionPhase {
            start_date: phase.start_date,
            end_date: phase.end_date,
            override_line_items: overrides,
        });
    }
    let commitment = match &req.commitment {
        Some(c) => {
            minor_units(c.amount, currency, "commitment_amount")?;
            Some(Commitment {
                commitment_amount: c.amount,
                commitment_duration: c.duration,
                overage_factor: c.overage_factor,
                enable_true_up: c.enable_true_up,
            })
        }
        None => None,
    };

    let parent = match &req.parent_subscription_id {
        Some(raw) => {
            let found = match SubscriptionId::parse(raw) {
                Some(id) => db::subscriptions::get(&mut conn, owner, &id).await?,
                None => None,
            };
            Some(found.ok_or_else(|| {
                invalid("parent_subscription_id", format!("No such subscription: '{raw}' (in this mode)"))
            })?)
        }
        None => None,
    };
    if let Some(key) = &req.lookup_key {
        if db::subscriptions::lookup_key_taken(&mut conn, owner, key).await? {
            return Err(lookup_key_taken(key));
        }
    }

    let start = req.start_date.or(req.trial_start).unwrap_or(now);
    let zone = Zone::named(&req.customer_timezone).unwrap_or_else(Zone::utc);
    let trial_end = match req.trial_end {
        Some(t) => Some(t),
        None => plan
            .recurring
            .and_then(|r| r.trial_period_days)
            .filter(|d| *d > 0)
            .map(|d| invoicing::plus_local_days(&zone, start, d)),
    };
    let end = req.end_date;
    let schedule = Schedule::new(ScheduleSpec {
        start: start.to_datetime(),
        unit,
        count,
        cycle: req.billing_cycle,
        zone,
        trial_end: trial_end.map(Timestamp::to_datetime),
        end: end.map(Timestamp::to_datetime),
    })
    .map_err(schedule_error)?;
    let first =
        schedule.periods().next().ok_or_else(|| invalid("start_date", "dates are out of the supported range"))?;
    let in_trial = first.kind == PeriodKind::Trial;
    // A start in the past bills every elapsed period at once, in the request; a bound keeps that a
    // deliberate backdate rather than years of daily invoices.
    let elapsed = schedule
        .periods()
        .take_while(|p| Timestamp::from_datetime(p.start) <= now)
        .take(MAX_BACKDATED_PERIODS + 1)
        .count();
    if elapsed > MAX_BACKDATED_PERIODS {
        return Err(invalid(
            "start_date",
            format!("start_date is more than {MAX_BACKDATED_PERIODS} billing periods in the past; every elapsed period would be invoiced now. Use a later start_date"),
        ));
    }

    // Who pays, and with which card.
    let payer_customer = match (&parent, req.invoice_billing) {
        (Some(p), InvoiceBilling::InvoiceToParent) => p.customer_id.clone(),
        _ => customer.customer_id.clone(),
    };
    let card = db::payments::default_card_of(&mut conn, owner, &payer_customer).await?;
    let draft = req.status == InitialStatus::Draft;
    // Billed in arrears, the first invoice holds only the one-time items.
    let in_arrears = req.billing_cadence == crate::domain::subscription::BillingCadence::InArrears;
    let zero_first = in_trial
        || items
            .iter()
            .filter(|i| !in_arrears || i.kind == ItemKind::OneTime)
            .all(|i| i.unit_amount.saturating_mul(i.quantity) == 0);
    let needs_card = req.collection_method == CollectionMethod::ChargeAutomatically
        && !draft
        && !zero_first
        && req.payment_behavior != PaymentBehavior::DefaultIncomplete;
    if needs_card && card.is_none() {
        return Err(FlowError::Unprocessable {
            code: "payment_method_required",
            message: format!(
                "customer {payer_customer} has no saved card for charges without them present; save one through a checkout session (mode setup or subscription), or use collection_method SEND_INVOICE"
            ),
        });
    }
    drop(conn);

    let incomplete = !zero_first
        && !draft
        && (req.status == InitialStatus::Incomplete
            || matches!(
                req.payment_behavior,
                PaymentBehavior::DefaultIncomplete
                    | PaymentBehavior::AllowIncomplete
                    | PaymentBehavior::ErrorIfIncomplete
            ));
    let status = if draft {
        SubscriptionStatus::Draft
    } else if in_trial {
        SubscriptionStatus::Trialing
    } else if incomplete {
        SubscriptionStatus::Incomplete
    } else {
        SubscriptionStatus::Active
    };
    let mut sub = Subscription {
        id: SubscriptionId::generate(),
        customer_id: customer.customer_id.clone(),
        plan_id: req.plan_id.clone(),
        subscription_status: status,
        currency,
        billing_cadence: req.billing_cadence,
        billing_period: unit,
        billing_period_count: count,
        billing_cycle: req.billing_cycle,
        billing_anchor: Timestamp::from_datetime(schedule.anchor()),
        start_date: start,
        end_date: end,
        current_period_start: Timestamp::from_datetime(first.start),
        current_period_end: Timestamp::from_datetime(first.end),
        trial_start: trial_end.map(|_| req.trial_start.unwrap_or(start)),
        trial_end,
        cancel_at: None,
        canceled_at: None,
        cancel_at_period_end: false,
        collection_method: req.collection_method,
        customer_timezone: req.customer_timezone.clone(),
        default_payment_method: card,
        latest_invoice: None,
        lookup_key: req.lookup_key.clone(),
        payment_behavior: req.payment_behavior,
        proration_behavior: req.proration_behavior,
        commitment,
        parent_subscription_id: parent.as_ref().map(|p| p.id.clone()),
        invoice_billing: req.invoice_billing,
        payment_terms: req.payment_terms,
        phases,
        test_clock,
        items,
        metadata: req.metadata.clone(),
        test_mode: owner.mode.is_test(),
        created_at: now,
        updated_at: now,
        engine: EngineState::default(),
    };
    let charges = open(state, owner, &mut sub, now).await?;
    let results = collect_now(state, charges, now).await?;
    let mut conn = state.db.conn().await?;
    match db::subscriptions::get(&mut conn, owner, &sub.id).await? {
        Some(s) => Ok(s),
        // `ERROR_IF_INCOMPLETE` and the first charge was declined: nothing was kept.
        None => Err(FlowError::Declined(
            results
                .iter()
                .find_map(|r| match r {
                    AttemptResult::Declined { code } => Some(*code),
                    _ => None,
                })
                .unwrap_or(DeclineCode::GenericDecline),
        )),
    }
}

fn lookup_key_taken(key: &str) -> FlowError {
    FlowError::Conflict {
        code: "lookup_key_taken",
        message: format!("lookup_key '{key}' is already used by another subscription"),
        param: Some("lookup_key".into()),
    }
}

/// Writes a new subscription with its trial invoice, and lets the engine bill whatever is due at
/// `now` (the first period's invoice) in the same transaction.
async fn open(
    state: &AppState,
    owner: &Owner,
    sub: &mut Subscription,
    now: Timestamp,
) -> Result<Vec<ChargeJob>, FlowError> {
    let mut tx = state.db.begin().await?;
    let all_or_nothing = sub.payment_behavior == PaymentBehavior::ErrorIfIncomplete
        && sub.subscription_status == SubscriptionStatus::Incomplete;
    sub.engine.next_action_at = billing::next_action(sub);
    if let Err(e) = db::subscriptions::insert(&mut tx, owner, sub, None).await {
        return Err(if db::is_unique_violation(&e) {
            lookup_key_taken(sub.lookup_key.as_deref().unwrap_or_default())
        } else {
            e.into()
        });
    }
    if !all_or_nothing {
        events::emit(&mut tx, owner, "customer.subscription.created", "subscription", sub.id.as_str(), &*sub, now)
            .await?;
    }
    let mut charges = Vec::new();
    if sub.subscription_status != SubscriptionStatus::Draft {
        let (_, fresh) = db::subscriptions::get_any(&mut tx, &sub.id)
            .await?
            .ok_or_else(|| FlowError::Internal(anyhow::anyhow!("subscription vanished in its own transaction")))?;
        charges = billing::first_step(state, &mut tx, owner, fresh, now, all_or_nothing).await?;
    }
    tx.commit().await?;
    Ok(charges)
}

/// Charges what a change billed, before the API answers. An attempt without an answer stays
/// leased on its invoice; the worker asks again under the same key.
async fn collect_now(
    state: &AppState,
    charges: Vec<ChargeJob>,
    at: Timestamp,
) -> Result<Vec<AttemptResult>, FlowError> {
    let mut results = Vec::new();
    for job in charges {
        if let Some(result) = billing::charge(state, &job).await {
            let mut tx = state.db.begin().await?;
            billing::settle(state, &mut tx, &job, &result, at).await?;
            tx.commit().await?;
            results.push(result);
        }
    }
    Ok(results)
}

// -------------------------------------------------------------------------------------------------
// Changes
// -------------------------------------------------------------------------------------------------

/// A checked `PATCH /v1/subscriptions/{id}`; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct SubscriptionPatch {
    pub metadata: Option<Option<Metadata>>,
    pub lookup_key: Option<Option<String>>,
    pub trial_end: Option<Timestamp>,
    pub end_date: Option<Option<Timestamp>>,
    pub cancel_at_period_end: Option<bool>,
    pub activate: bool,
    pub plan_id: Option<String>,
    pub proration_behavior: Option<ProrationBehavior>,
}

pub async fn update(
    state: &AppState,
    owner: &Owner,
    id: &SubscriptionId,
    patch: SubscriptionPatch,
) -> Result<Subscription, FlowError> {
    let mut charges = Vec::new();
    for _ in 0..5 {
        let mut tx = state.db.begin().await?;
        let mut sub = db::subscriptions::get(&mut tx, owner, id)
            .await?
            .ok_or_else(|| FlowError::NotFound { resource: "subscription", id: id.to_string() })?;
        let now = billing::now_on(state, &mut tx, sub.test_clock.as_ref()).await?;
        let ended =
            matches!(sub.subscription_status, SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired);
        if ended
            && (patch.trial_end.is_some()
                || patch.end_date.is_some()
                || patch.cancel_at_period_end.is_some()
                || patch.activate
                || patch.plan_id.is_some())
        {
            return Err(FlowError::Unprocessable {
                code: "subscription_ended",
                message: format!(
                    "subscription {id} has ended ({}); only metadata and lookup_key can change",
                    sub.subscription_status
                ),
            });
        }
        if let Some(m) = &patch.metadata {
            sub.metadata = m.clone();
        }
        if let Some(k) = &patch.lookup_key {
            if let Some(key) = k {
                if sub.lookup_key.as_deref() != Some(key)
                    && db::subscriptions::lookup_key_taken(&mut tx, owner, key).await?
                {
                    return Err(lookup_key_taken(key));
                }
            }
            sub.lookup_key = k.clone();
        }
        if let Some(b) = patch.proration_behavior {
            sub.proration_behavior = b;
        }
        if let Some(flag) = patch.cancel_at_period_end {
            sub.cancel_at_period_end = flag;
        }
        if let Some(end) = patch.end_date {
            if let Some(e) = end {
                if e <= now || e <= sub.start_date {
                    return Err(invalid("end_date", "end_date must be after start_date and in the future"));
                }
            }
            sub.end_date = end;
            // The current period is cut at the new end (or restored to its full length).
            if let Some(p) =
                invoicing::schedule(&sub).and_then(|s| s.period_containing(sub.current_period_start.to_datetime()))
            {
                sub.current_period_end = Timestamp::from_datetime(p.end);
            }
        }
        if let Some(trial_end) = patch.trial_end {
            if sub.subscription_status != SubscriptionStatus::Trialing
                && sub.subscription_status != SubscriptionStatus::Draft
            {
                return Err(invalid(
                    "trial_end",
                    "trial_end can only change while the subscription is trialing or a draft",
                ));
            }
            if trial_end <= now || trial_end <= sub.start_date {
                return Err(invalid("trial_end", "trial_end must be in the future and after start_date"));
            }
            sub.trial_end = Some(trial_end);
            sub.trial_start.get_or_insert(sub.start_date);
            let schedule = invoicing::schedule(&sub)
                .ok_or_else(|| invalid("trial_end", "dates are out of the supported range"))?;
            sub.billing_anchor = Timestamp::from_datetime(schedule.anchor());
            if let Some(p) = schedule.period_containing(now.to_datetime()).or_else(|| schedule.periods().next()) {
                sub.current_period_start = Timestamp::from_datetime(p.start);
                sub.current_period_end = Timestamp::from_datetime(p.end);
            }
            sub.engine.trial_will_end_sent = false;
        }
        let mut proration = None;
        let mut credit = None;
        if let Some(plan) = &patch.plan_id {
            let before = sub.clone();
            change_plan(&mut tx, owner, &mut sub, plan).await?;
            let lines = proration_lines(&before, &sub, now);
            // A downgrade: more unused time on the old plan than the rest of the period costs on
            // the new one. The customer has no balance to carry it, so it goes back to the card.
            credit = Some(-invoicing::total(&lines)).filter(|c| *c > 0);
            if !lines.is_empty() {
                let invoice = billing::update_invoice(state, &mut tx, &sub, lines, now).await?;
                sub.latest_invoice = Some(invoice.invoice_id.clone());
                proration = Some(invoice);
            }
        }
        let was_draft = sub.subscription_status == SubscriptionStatus::Draft;
        if patch.activate && was_draft {
            activate(&mut tx, owner, &mut sub, now).await?;
        } else if patch.activate && sub.subscription_status != SubscriptionStatus::Active {
            return Err(invalid(
                "status",
                format!("only a DRAFT subscription can be set to ACTIVE (this one is {})", sub.subscription_status),
            ));
        }
        sub.updated_at = now;
        sub.engine.next_action_at = billing::next_action(&sub);
        if !db::subscriptions::save(&mut tx, &mut sub).await? {
            continue;
        }
        if patch.plan_id.is_some() {
            db::subscriptions::replace_items(&mut tx, &sub).await?;
        }
        if let Some(invoice) = proration.take() {
            charges.extend(billing::add_invoice(&mut tx, owner, invoice, now).await?);
        }
        events::emit(&mut tx, owner, "customer.subscription.updated", "subscription", sub.id.as_str(), &sub, now)
            .await?;
        if was_draft && patch.activate {
            events::emit(&mut tx, owner, "customer.subscription.created", "subscription", sub.id.as_str(), &sub, now)
                .await?;
            let (_, fresh) = db::subscriptions::get_any(&mut tx, &sub.id)
                .await?
                .ok_or_else(|| FlowError::Internal(anyhow::anyhow!("subscription vanished in its own transaction")))?;
            charges = billing::first_step(state, &mut tx, owner, fresh, now, false).await?;
        }
        tx.commit().await?;
        collect_now(state, charges, now).await?;
        if let Some(credit) = credit {
            refund_credit(state, owner, &sub, credit, now).await?;
        }
        let mut conn = state.db.conn().await?;
        return db::subscriptions::get(&mut conn, owner, id)
            .await?
            .ok_or_else(|| FlowError::NotFound { resource: "subscription", id: id.to_string() });
    }
    Err(FlowError::Conflict {
        code: "subscription_busy",
        message: "the subscription kept changing while it was updated; retry".into(),
        param: None,
    })
}

/// A draft starts billing now: its first period runs from now (or from its start, if later).
async fn activate(conn: &mut Conn, owner: &Owner, sub: &mut Subscription, now: Timestamp) -> Result<(), FlowError> {
    if sub.start_date < now {
        sub.start_date = now;
    }
    if sub.trial_end.is_some_and(|t| t <= sub.start_date) {
        sub.trial_end = None;
        sub.trial_start = None;
    }
    let schedule = invoicing::schedule(sub).ok_or_else(|| invalid("status", "dates are out of the supported range"))?;
    let first =
        schedule.periods().next().ok_or_else(|| invalid("status", "the subscription has no period left to bill"))?;
    sub.billing_anchor = Timestamp::from_datetime(schedule.anchor());
    sub.current_period_start = Timestamp::from_datetime(first.start);
    sub.current_period_end = Timestamp::from_datetime(first.end);
    let in_trial = first.kind == PeriodKind::Trial;
    sub.engine.cycle_invoiced = false;
    if !in_trial
        && sub.collection_method == CollectionMethod::ChargeAutomatically
        && sub.default_payment_method.is_none()
    {
        sub.default_payment_method = db::payments::default_card_of(conn, owner, &sub.customer_id).await?;
        if sub.default_payment_method.is_none() {
            return Err(FlowError::Unprocessable {
                code: "payment_method_required",
                message: format!(
                    "customer {} has no saved card to charge; save one first or use SEND_INVOICE",
                    sub.customer_id
                ),
            });
        }
    }
    sub.subscription_status = if in_trial { SubscriptionStatus::Trialing } else { SubscriptionStatus::Active };
    Ok(())
}

/// Moves the plan item to another recurring price of the same currency, from the next period
/// (changes within a period are billed at the next renewal).
async fn change_plan(conn: &mut Conn, owner: &Owner, sub: &mut Subscription, raw: &str) -> Result<(), FlowError> {
    let price = match PriceId::parse(raw) {
        Some(id) => db::prices::get(conn, owner, &id).await?,
        None => None,
    }
    .ok_or_else(|| invalid("plan_id", format!("No such price: '{raw}'; a plan change takes a recurring price id")))?;
    if price.recurring.is_none() || !price.active {
        return Err(invalid("plan_id", format!("price {raw} must be an active recurring price")));
    }
    if price.currency != sub.currency {
        return Err(invalid(
            "plan_id",
            format!("price {raw} is in {}, the subscription in {}", price.currency.code(), sub.currency.code()),
        ));
    }
    let description = description_of(conn, owner, &price).await?;
    if let Some(item) = sub.items.iter_mut().find(|i| i.kind == ItemKind::Plan) {
        item.price_id = price.price_id.clone();
        item.unit_amount = price.unit_amount;
        item.description = description;
    }
    sub.plan_id = price.price_id.to_string();
    Ok(())
}

/// A plan change in the middle of a paid period, with `CREATE_PRORATIONS`: the unused time of the
/// old plan is credited and the rest of the period on the new plan charged, both prorated to the
/// second. Nothing during a trial, before the period's invoice, or with `NONE` (the new plan then
/// starts with the next period).
fn proration_lines(
    before: &Subscription,
    after: &Subscription,
    now: Timestamp,
) -> Vec<crate::domain::subscription::InvoiceLine> {
    use crate::domain::subscription::{InvoiceLine, LineKind};
    let live = matches!(after.subscription_status, SubscriptionStatus::Active | SubscriptionStatus::PastDue);
    if after.proration_behavior != ProrationBehavior::CreateProrations
        || !live
        || !after.engine.cycle_invoiced
        || after.billing_cadence != crate::domain::subscription::BillingCadence::InAdvance
        || !(after.current_period_start <= now && now < after.current_period_end)
    {
        return Vec::new();
    }
    let seconds = |a: Timestamp, b: Timestamp| (b.micros() - a.micros()) / Timestamp::MICROS_PER_SECOND;
    let length = seconds(after.current_period_start, after.current_period_end);
    let left = seconds(now, after.current_period_end);
    let plan = |s: &Subscription| s.items.iter().find(|i| i.kind == ItemKind::Plan).cloned();
    let (Some(old), Some(new)) = (plan(before), plan(after)) else { return Vec::new() };
    let prorate = |i: &SubscriptionItem| {
        crate::domain::billing_period::prorate(i.unit_amount.saturating_mul(i.quantity), left, length)
    };
    let line = |i: &SubscriptionItem, amount: i64, description: String| InvoiceLine {
        kind: LineKind::Item,
        description,
        price: Some(i.price_id.clone()),
        quantity: i.quantity,
        amount,
        period_start: now,
        period_end: after.current_period_end,
        proration: true,
    };
    vec![
        line(&old, -prorate(&old), format!("Unused time on {}", old.description)),
        line(&new, prorate(&new), format!("Remaining time on {}", new.description)),
    ]
}

/// `refund` of `POST /v1/subscriptions/{id}/cancel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelRefund {
    None,
    Prorated,
}

/// Cancels now (open invoices voided, `customer.subscription.deleted`; with a prorated refund,
/// the unused part of the current period's payment is refunded) or at the period end.
pub async fn cancel(
    state: &AppState,
    owner: &Owner,
    id: &SubscriptionId,
    at_period_end: bool,
    refund: CancelRefund,
) -> Result<Subscription, FlowError> {
    let mut refund_ask = None;
    for _ in 0..5 {
        let mut tx = state.db.begin().await?;
        let mut sub = db::subscriptions::get(&mut tx, owner, id)
            .await?
            .ok_or_else(|| FlowError::NotFound { resource: "subscription", id: id.to_string() })?;
        if matches!(sub.subscription_status, SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired) {
            return Err(FlowError::Unprocessable {
                code: "subscription_ended",
                message: format!("subscription {id} has already ended ({})", sub.subscription_status),
            });
        }
        let now = billing::now_on(state, &mut tx, sub.test_clock.as_ref()).await?;
        if at_period_end {
            if refund == CancelRefund::Prorated {
                return Err(invalid(
                    "refund",
                    "a cancellation at the period end uses the whole period; refund must be none",
                ));
            }
            sub.cancel_at_period_end = true;
            sub.updated_at = now;
            sub.engine.next_action_at = billing::next_action(&sub);
            if !db::subscriptions::save(&mut tx, &mut sub).await? {
                continue;
            }
            events::emit(&mut tx, owner, "customer.subscription.updated", "subscription", sub.id.as_str(), &sub, now)
                .await?;
        } else {
            if refund == CancelRefund::Prorated {
                refund_ask = prorated_refund(&mut tx, owner, &sub, now).await?;
            }
            sub.subscription_status = SubscriptionStatus::Canceled;
            sub.canceled_at = Some(now);
            sub.cancel_at = Some(now);
            sub.updated_at = now;
            sub.engine.next_action_at = None;
            if !db::subscriptions::save(&mut tx, &mut sub).await? {
                continue;
            }
            for invoice in db::subscriptions::open_invoices_of(&mut tx, &sub.id).await? {
                billing::void(state, &mut tx, owner, &invoice, now).await?;
            }
            let sid = sub.id.as_str();
            events::emit(&mut tx, owner, "customer.subscription.updated", "subscription", sid, &sub, now).await?;
            events::emit(&mut tx, owner, "customer.subscription.deleted", "subscription", sid, &sub, now).await?;
        }
        tx.commit().await?;
        if let Some((pi, amount)) = refund_ask.take() {
            let new = crate::flows::refunds::NewRefund {
                payment_intent: pi,
                amount: Some(amount),
                reason: Some(crate::domain::refund::RefundReason::RequestedByCustomer),
                metadata: None,
            };
            if let Err(e) = crate::flows::refunds::create(state, owner, new).await {
                tracing::warn!(subscription = %id, error = ?e, "prorated refund of a canceled subscription failed");
            }
        }
        let mut conn = state.db.conn().await?;
        return db::subscriptions::get(&mut conn, owner, id)
            .await?
            .ok_or_else(|| FlowError::NotFound { resource: "subscription", id: id.to_string() });
    }
    Err(FlowError::Conflict {
        code: "subscription_busy",
        message: "the subscription kept changing while it was canceled; retry".into(),
        param: None,
    })
}

/// The paid invoice (with a payment) that billed the period `now` falls in.
async fn period_invoice(
    conn: &mut Conn,
    owner: &Owner,
    sub: &Subscription,
    now: Timestamp,
) -> Result<Option<Invoice>, FlowError> {
    let filter = db::subscriptions::InvoiceFilter {
        subscription: Some(sub.id.to_string()),
        status: Some("paid".into()),
        ..Default::default()
    };
    let page =
        db::subscriptions::list_invoices(conn, owner, &filter, &Cursor { limit: 20, ..Default::default() }, "").await?;
    Ok(page
        .items
        .into_iter()
        .find(|i| i.period_start <= now && now < i.period_end && i.payment_intent.is_some() && i.amount_paid > 0))
}

/// Refunds a downgrade's credit to the payment of the period it was paid in (up to what that
/// payment took). A refund the processor refuses is logged: the plan change stands.
async fn refund_credit(
    state: &AppState,
    owner: &Owner,
    sub: &Subscription,
    credit: i64,
    now: Timestamp,
) -> Result<(), FlowError> {
    let invoice = {
        let mut conn = state.db.conn().await?;
        period_invoice(&mut conn, owner, sub, now).await?
    };
    let Some(invoice) = invoice else { return Ok(()) };
    let new = crate::flows::refunds::NewRefund {
        payment_intent: invoice.payment_intent.map(|p| p.to_string()).unwrap_or_default(),
        amount: Some(credit.min(invoice.amount_paid)),
        reason: None,
        metadata: crate::domain::metadata::Metadata::parse(
            &serde_json::json!({"subscription": sub.id.as_str(), "reason": "proration_credit"}),
            "metadata",
        )
        .ok()
        .flatten(),
    };
    if let Err(e) = crate::flows::refunds::create(state, owner, new).await {
        tracing::warn!(subscription = %sub.id, error = ?e, "refund of a downgrade's proration credit failed");
    }
    Ok(())
}

/// The payment intent and amount to refund for the unused part of the current period: what the
/// period's paid invoice charged for it, prorated to the second, half to even.
async fn prorated_refund(
    conn: &mut Conn,
    owner: &Owner,
    sub: &Subscription,
    now: Timestamp,
) -> Result<Option<(String, i64)>, FlowError> {
    let Some(invoice) = period_invoice(conn, owner, sub, now).await? else {
        return Ok(None);
    };
    let paid_for_period: i64 = invoice
        .lines
        .iter()
        .filter(|l| l.period_start == invoice.period_start && l.period_end == invoice.period_end)
        .map(|l| l.amount)
        .sum();
    let unused = (invoice.period_end.micros() - now.micros()) / Timestamp::MICROS_PER_SECOND;
    let length = (invoice.period_end.micros() - invoice.period_start.micros()) / Timestamp::MICROS_PER_SECOND;
    let amount = crate::domain::billing_period::prorate(paid_for_period.min(invoice.amount_paid), unused, length);
    Ok((amount > 0).then(|| (invoice.payment_intent.map(|p| p.to_string()).unwrap_or_default(), amount)))
}

// -------------------------------------------------------------------------------------------------
// Invoices
// -------------------------------------------------------------------------------------------------

/// `POST /v1/invoices/{id}/pay`: one more attempt now, with the invoice's card (or the customer's
/// newest saved card). A decline is a 402 with the code; the invoice shows the attempt.
pub async fn pay_invoice(state: &AppState, owner: &Owner, id: &InvoiceId) -> Result<Invoice, FlowError> {
    let job = {
        let mut tx = state.db.begin().await?;
        let mut invoice = db::subscriptions::get_invoice(&mut tx, owner, id, &state.settings.public_url)
            .await?
            .ok_or_else(|| FlowError::NotFound { resource: "invoice", id: id.to_string() })?;
        match invoice.status {
            // Uncollectible: dunning gave up, but the customer may still pay (an `UNPAID`
            // subscription becomes `ACTIVE` again when its latest invoice is paid).
            InvoiceStatus::Open | InvoiceStatus::Uncollectible => {}
            InvoiceStatus::Paid => {
                return Err(FlowError::Unprocessable {
                    code: "invoice_already_paid",
                    message: format!("invoice {id} is already paid"),
                })
            }
            other => {
                return Err(FlowError::Unprocessable {
                    code: "invoice_not_payable",
                    message: format!("invoice {id} is {other}; only open or uncollectible invoices can be paid"),
                })
            }
        }
        if invoice.collection.charging {
            return Err(FlowError::Conflict {
                code: "invoice_payment_in_progress",
                message: format!("an attempt to pay invoice {id} is in progress; retry in a moment"),
                param: None,
            });
        }
        let now = billing::now_on(state, &mut tx, invoice.collection.test_clock.as_ref()).await?;
        // The customer's newest saved card: after a decline, the one they saved since is the one
        // to try (the old one is still used when it is the only one).
        if let Some(newest) = db::payments::default_card_of(&mut tx, owner, &invoice.customer).await? {
            invoice.payment_method = Some(newest);
        }
        let card: Option<PaymentMethodId> = invoice.payment_method.clone();
        if card.is_none() {
            return Err(FlowError::Unprocessable {
                code: "payment_method_required",
                message: format!(
                    "customer {} has no saved card; the customer can pay on the hosted invoice page",
                    invoice.customer
                ),
            });
        }
        let job = if billing::reopen_for_payment(&mut tx, &mut invoice, now).await? {
            billing::claim(state, &mut tx, owner, invoice, now).await?
        } else {
            None
        };
        tx.commit().await?;
        (job, now)
    };
    let (job, now) = job;
    let Some(job) = job else {
        return Err(FlowError::Conflict {
            code: "invoice_payment_in_progress",
            message: format!("invoice {id} changed while it was being paid; retry"),
            param: None,
        });
    };
    let result = billing::charge(state, &job)
        .await
        .ok_or_else(|| FlowError::Unavailable("no answer from the payment processor".into()))?;
    let mut tx = state.db.begin().await?;
    billing::settle(state, &mut tx, &job, &result, now).await?;
    tx.commit().await?;
    if let AttemptResult::Declined { code } = result {
        return Err(FlowError::Declined(code));
    }
    if let AttemptResult::Paid { .. } = result {
        keep_card(state, owner, id).await?;
    }
    let mut conn = state.db.conn().await?;
    db::subscriptions::get_invoice(&mut conn, owner, id, &state.settings.public_url)
        .await?
        .ok_or_else(|| FlowError::NotFound { resource: "invoice", id: id.to_string() })
}

/// A card that just paid a subscription's invoice becomes the subscription's card, so the next
/// renewal does not go back to the card that was declined.
async fn keep_card(state: &AppState, owner: &Owner, id: &InvoiceId) -> Result<(), FlowError> {
    let mut tx = state.db.begin().await?;
    let Some(invoice) = db::subscriptions::get_invoice(&mut tx, owner, id, "").await? else { return Ok(()) };
    let (Some(sub_id), Some(card)) = (invoice.subscription, invoice.payment_method) else { return Ok(()) };
    for _ in 0..5 {
        let Some(mut sub) = db::subscriptions::get(&mut tx, owner, &sub_id).await? else { return Ok(()) };
        if sub.default_payment_method.as_ref() == Some(&card) || sub.invoice_billing == InvoiceBilling::InvoiceToParent
        {
            break;
        }
        sub.default_payment_method = Some(card.clone());
        if db::subscriptions::save(&mut tx, &mut sub).await? {
            break;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// `POST /v1/invoices/{id}/void`: an open invoice is given up (no more attempts).
pub async fn void_invoice(state: &AppState, owner: &Owner, id: &InvoiceId) -> Result<Invoice, FlowError> {
    let mut tx = state.db.begin().await?;
    let invoice = db::subscriptions::get_invoice(&mut tx, owner, id, &state.settings.public_url)
        .await?
        .ok_or_else(|| FlowError::NotFound { resource: "invoice", id: id.to_string() })?;
    if !matches!(invoice.status, InvoiceStatus::Open | InvoiceStatus::Draft) {
        return Err(FlowError::Unprocessable {
            code: "invoice_not_voidable",
            message: format!("invoice {id} is {}; only open invoices can be voided", invoice.status),
        });
    }
    if invoice.collection.charging {
        return Err(FlowError::Conflict {
            code: "invoice_payment_in_progress",
            message: format!("an attempt to pay invoice {id} is in progress; retry in a moment"),
            param: None,
        });
    }
    let now = billing::now_on(state, &mut tx, invoice.collection.test_clock.as_ref()).await?;
    if !billing::void(state, &mut tx, owner, id, now).await? {
        return Err(FlowError::Conflict {
            code: "invoice_changed",
            message: format!("invoice {id} changed while it was being voided; retry"),
            param: None,
        });
    }
    tx.commit().await?;
    let mut conn = state.db.conn().await?;
    db::subscriptions::get_invoice(&mut conn, owner, id, &state.settings.public_url)
        .await?
        .ok_or_else(|| FlowError::NotFound { resource: "invoice", id: id.to_string() })
}
