//! Payment attempts, payment intents, saved payment methods and LMN consultations.

use super::{Arg, Conn, Cursor, Page, Sql};
use crate::domain::ids::{
    CheckoutSessionId, ConsultationId, CustomerId, InvoiceId, PaymentAttemptId, PaymentIntentId, PaymentMethodId,
};
use crate::domain::money::Currency;
use crate::domain::payment::{CardDetails, PaymentError, PaymentIntent, PaymentIntentStatus, PaymentMethod};
use crate::domain::timestamp::Timestamp;
use crate::domain::{Mode, Owner};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub id: String,
    pub merchant_id: String,
    pub livemode: i64,
    pub session_id: Option<String>,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    pub contact: String,
    pub card_brand: Option<String>,
    pub card_last4: Option<String>,
    pub card_exp_month: Option<i64>,
    pub card_exp_year: Option<i64>,
    pub card_funding: Option<String>,
    pub gateway: String,
    pub gateway_ref: Option<String>,
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub gateway_customer: Option<String>,
    pub setup_ref: Option<String>,
    pub charge_ref: Option<String>,
}

/// Where an attempt stands. `setup`: the browser is confirming a card with the gateway (no charge
/// yet, the session not held); `pending`: a charge is being asked for; then one of the others.
pub mod attempt_status {
    pub const SETUP: &str = "setup";
    pub const PENDING: &str = "pending";
    pub const REQUIRES_ACTION: &str = "requires_action";
    pub const SUCCEEDED: &str = "succeeded";
    pub const DECLINED: &str = "declined";
    pub const FAILED: &str = "failed";
    /// Given up without a decline: a setup never confirmed, or one another attempt overtook.
    pub const ABANDONED: &str = "abandoned";
}

pub struct NewAttempt<'a> {
    pub id: &'a PaymentAttemptId,
    pub owner: &'a Owner,
    pub session: &'a CheckoutSessionId,
    pub amount: i64,
    pub currency: Currency,
    pub contact: &'a str,
    pub card: Option<&'a CardDetails>,
    pub gateway: &'a str,
    pub gateway_ref: Option<&'a str>,
    pub gateway_customer: Option<&'a str>,
    /// `pending` when the card is in hand, `setup` when the browser still has to confirm it.
    pub status: &'a str,
}

pub async fn insert_attempt(conn: &mut Conn, a: NewAttempt<'_>, now: Timestamp) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_attempts (id, merchant_id, livemode, session_id, status, amount, currency,
            contact, card_brand, card_last4, card_exp_month, card_exp_year, card_funding, gateway,
            gateway_ref, created_at, updated_at, gateway_customer)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17)",
    )
    .bind(a.id.as_str())
    .bind(a.owner.merchant_id.as_str())
    .bind(a.owner.mode.as_flag())
    .bind(a.session.as_str())
    .bind(a.status)
    .bind(a.amount)
    .bind(a.currency.code())
    .bind(a.contact)
    .bind(a.card.map(|c| c.brand.as_str()))
    .bind(a.card.map(|c| c.last4.as_str()))
    .bind(a.card.map(|c| i64::from(c.exp_month)))
    .bind(a.card.map(|c| i64::from(c.exp_year)))
    .bind(a.card.map(|c| c.funding.as_str()))
    .bind(a.gateway)
    .bind(a.gateway_ref)
    .bind(now.micros())
    .bind(a.gateway_customer)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the setup the gateway started for a `setup` attempt.
pub async fn set_attempt_setup(
    conn: &mut Conn,
    id: &PaymentAttemptId,
    setup_ref: &str,
    gateway_customer: &str,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payment_attempts SET setup_ref = $1, gateway_customer = $2, updated_at = $3
         WHERE id = $4 AND status = 'setup'",
    )
    .bind(setup_ref)
    .bind(gateway_customer)
    .bind(now.micros())
    .bind(id.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves a `setup` attempt whose card is now saved to `pending`, before its charge. Only one door
/// (the page, the reconciler, a webhook) wins.
pub async fn begin_charge(
    conn: &mut Conn,
    id: &PaymentAttemptId,
    card: &CardDetails,
    gateway_ref: &str,
    gateway_customer: Option<&str>,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE payment_attempts SET status = 'pending', card_brand = $1, card_last4 = $2, card_exp_month = $3,
            card_exp_year = $4, card_funding = $5, gateway_ref = $6,
            gateway_customer = COALESCE($7, gateway_customer), updated_at = $8
         WHERE id = $9 AND status = 'setup'",
    )
    .bind(&card.brand)
    .bind(&card.last4)
    .bind(i64::from(card.exp_month))
    .bind(i64::from(card.exp_year))
    .bind(&card.funding)
    .bind(gateway_ref)
    .bind(gateway_customer)
    .bind(now.micros())
    .bind(id.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The gateway's reference for the charge of an attempt (to resolve a challenge or look it up).
pub async fn set_attempt_charge_ref(
    conn: &mut Conn,
    id: &PaymentAttemptId,
    charge_ref: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payment_attempts SET charge_ref = $1 WHERE id = $2")
        .bind(charge_ref)
        .bind(id.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Puts an attempt the reconciler cannot settle yet at the back of its queue.
pub async fn touch_attempt(conn: &mut Conn, id: &PaymentAttemptId, now: Timestamp) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payment_attempts SET updated_at = $1 WHERE id = $2")
        .bind(now.micros())
        .bind(id.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// The gateway customer an earlier attempt on this session made, so a retry reuses it.
pub async fn session_gateway_customer(
    conn: &mut Conn,
    session: &CheckoutSessionId,
    gateway: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT gateway_customer FROM payment_attempts
         WHERE session_id = $1 AND gateway = $2 AND gateway_customer IS NOT NULL
         ORDER BY id DESC LIMIT 1",
    )
    .bind(session.as_str())
    .bind(gateway)
    .fetch_optional(conn)
    .await
}

/// The gateway customer behind a customer's saved cards, if they have one at `gateway`.
pub async fn customer_gateway_customer(
    conn: &mut Conn,
    customer: &CustomerId,
    gateway: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT gateway_customer FROM payment_methods
         WHERE customer_id = $1 AND gateway = $2 AND gateway_customer IS NOT NULL
         ORDER BY id DESC LIMIT 1",
    )
    .bind(customer.as_str())
    .bind(gateway)
    .fetch_optional(conn)
    .await
}

/// Attempts the reconciler should look at: charges whose answer was never recorded, challenges,
/// and setups the browser may have confirmed without telling us.
pub async fn attempts_to_reconcile(
    conn: &mut Conn,
    stale_before: Timestamp,
    limit: i64,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as::<_, AttemptRow>(
        "SELECT * FROM payment_attempts
         WHERE status IN ('pending', 'requires_action', 'setup') AND updated_at < $1
         ORDER BY updated_at LIMIT $2",
    )
    .bind(stale_before.micros())
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn get_attempt(conn: &mut Conn, id: &PaymentAttemptId) -> Result<Option<AttemptRow>, sqlx::Error> {
    sqlx::query_as::<_, AttemptRow>("SELECT * FROM payment_attempts WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
}

/// Records an attempt's outcome, only if it is still in `from` (so an outcome is recorded once).
pub async fn finish_attempt(
    conn: &mut Conn,
    id: &PaymentAttemptId,
    from: &[&str],
    status: &str,
    decline_code: Option<&str>,
    failure_message: Option<&str>,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let allowed: Vec<String> = from.iter().map(|s| format!("'{s}'")).collect();
    let done = sqlx::query(&format!(
        "UPDATE payment_attempts SET status = $1, decline_code = $2, failure_message = $3, updated_at = $4
         WHERE id = $5 AND status IN ({})",
        allowed.join(", ")
    ))
    .bind(status)
    .bind(decline_code)
    .bind(failure_message)
    .bind(now.micros())
    .bind(id.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(Clone, Debug, sqlx::FromRow)]
struct PaymentMethodRow {
    id: String,
    livemode: i64,
    customer_id: String,
    #[sqlx(flatten)]
    card: StoredCard,
    billing_details: String,
    off_session: i64,
    created_at: i64,
}

/// The card columns of `payment_methods`, read as columns or as a JSON object of their own.
#[derive(Clone, Debug, sqlx::FromRow, serde::Deserialize)]
struct StoredCard {
    brand: String,
    last4: String,
    exp_month: i64,
    exp_year: i64,
    funding: String,
    country: Option<String>,
}

const STORED_CARD_COLUMNS: [&str; 6] = ["brand", "last4", "exp_month", "exp_year", "funding", "country"];

impl From<StoredCard> for CardDetails {
    /// Only validated cards are written, so the clamps only keep a hand-edited row from wrapping
    /// around in the casts.
    fn from(c: StoredCard) -> CardDetails {
        CardDetails {
            brand: c.brand,
            last4: c.last4,
            exp_month: c.exp_month.clamp(1, 12) as u32,
            exp_year: c.exp_year.clamp(0, 9999) as i32,
            funding: c.funding,
            country: c.country,
        }
    }
}

impl From<PaymentMethodRow> for PaymentMethod {
    fn from(r: PaymentMethodRow) -> PaymentMethod {
        PaymentMethod {
            payment_method_id: PaymentMethodId::from_trusted(r.id),
            customer: CustomerId::from_trusted(r.customer_id),
            card: r.card.into(),
            billing_details: serde_json::from_str(&r.billing_details).unwrap_or_default(),
            off_session: r.off_session != 0,
            created_at: Timestamp::from_micros(r.created_at),
            test_mode: Mode::from_flag(r.livemode).is_test(),
        }
    }
}

pub async fn insert_payment_method(
    conn: &mut Conn,
    owner: &Owner,
    pm: &PaymentMethod,
    gateway: &str,
    gateway_ref: &str,
    gateway_customer: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_methods (id, merchant_id, livemode, customer_id, brand, last4, exp_month,
            exp_year, funding, country, billing_details, off_session, gateway, gateway_ref, created_at,
            gateway_customer)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(pm.payment_method_id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(pm.customer.as_str())
    .bind(&pm.card.brand)
    .bind(&pm.card.last4)
    .bind(i64::from(pm.card.exp_month))
    .bind(i64::from(pm.card.exp_year))
    .bind(&pm.card.funding)
    .bind(pm.card.country.as_deref())
    .bind(serde_json::to_string(&pm.billing_details).unwrap_or_else(|_| "{}".into()))
    .bind(i64::from(pm.off_session))
    .bind(gateway)
    .bind(gateway_ref)
    .bind(pm.created_at.micros())
    .bind(gateway_customer)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn payment_methods_of(
    conn: &mut Conn,
    owner: &Owner,
    customer: &CustomerId,
) -> Result<Vec<PaymentMethod>, sqlx::Error> {
    let rows = sqlx::query_as::<_, PaymentMethodRow>(
        "SELECT id, livemode, customer_id, brand, last4, exp_month, exp_year, funding, country,
            billing_details, off_session, created_at
         FROM payment_methods WHERE customer_id = $1 AND merchant_id = $2 AND livemode = $3 ORDER BY id DESC",
    )
    .bind(customer.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(PaymentMethod::from).collect())
}

#[derive(Clone, Debug, sqlx::FromRow)]
struct PaymentIntentRow {
    id: String,
    livemode: i64,
    amount: i64,
    amount_received: i64,
    amount_refunded: i64,
    currency: String,
    status: String,
    capture_method: String,
    customer_id: Option<String>,
    invoice_id: Option<String>,
    checkout_session_id: Option<String>,
    payment_method_id: Option<String>,
    last_payment_error: Option<String>,
    created_at: i64,
}

impl From<PaymentIntentRow> for PaymentIntent {
    fn from(r: PaymentIntentRow) -> PaymentIntent {
        PaymentIntent {
            payment_intent_id: PaymentIntentId::from_trusted(r.id),
            amount: r.amount,
            amount_received: r.amount_received,
            amount_refunded: r.amount_refunded,
            currency: Currency::parse(&r.currency).unwrap_or(Currency::USD),
            status: PaymentIntentStatus::from_wire(&r.status).unwrap_or(PaymentIntentStatus::Processing),
            capture_method: r.capture_method,
            customer: r.customer_id.map(CustomerId::from_trusted),
            invoice: r.invoice_id.map(InvoiceId::from_trusted),
            checkout_session: r.checkout_session_id.map(CheckoutSessionId::from_trusted),
            payment_method: r.payment_method_id.map(PaymentMethodId::from_trusted),
            last_payment_error: r
                .last_payment_error
                .and_then(|e| serde_json::from_str::<serde_json::Value>(&e).ok())
                .and_then(|v| {
                    Some(PaymentError {
                        error_type: v.get("type")?.as_str()?.to_string(),
                        code: v.get("code")?.as_str()?.to_string(),
                        decline_code: v.get("decline_code").and_then(|d| d.as_str()).map(String::from),
                        message: v.get("message")?.as_str()?.to_string(),
                    })
                }),
            created_at: Timestamp::from_micros(r.created_at),
            test_mode: Mode::from_flag(r.livemode).is_test(),
        }
    }
}

pub struct NewPaymentIntent<'a> {
    pub intent: &'a PaymentIntent,
    pub attempt: Option<&'a PaymentAttemptId>,
    pub gateway: &'a str,
    pub gateway_ref: Option<&'a str>,
}

pub async fn insert_payment_intent(conn: &mut Conn, owner: &Owner, n: NewPaymentIntent<'_>) -> Result<(), sqlx::Error> {
    insert_payment_intents(conn, &[(owner, n)]).await
}

/// Writes new payment intents, one statement per chunk of rows.
pub async fn insert_payment_intents(
    conn: &mut Conn,
    intents: &[(&Owner, NewPaymentIntent<'_>)],
) -> Result<(), sqlx::Error> {
    let rows: Vec<Vec<Arg>> = intents
        .iter()
        .map(|(owner, n)| {
            let pi = n.intent;
            vec![
                Arg::text(pi.payment_intent_id.as_str()),
                Arg::text(owner.merchant_id.as_str()),
                Arg::Int(owner.mode.as_flag()),
                Arg::Int(pi.amount),
                Arg::Int(pi.amount_received),
                Arg::Int(pi.amount_refunded),
                Arg::text(pi.currency.code()),
                Arg::text(pi.status.as_str()),
                Arg::text(&pi.capture_method),
                Arg::opt_text(pi.customer.as_ref().map(|c| c.as_str())),
                Arg::opt_text(pi.invoice.as_ref().map(|c| c.as_str())),
                Arg::opt_text(pi.checkout_session.as_ref().map(|c| c.as_str())),
                Arg::opt_text(pi.payment_method.as_ref().map(|c| c.as_str())),
                Arg::opt_text(n.attempt.map(|a| a.as_str())),
                Arg::OptText(pi.last_payment_error.as_ref().and_then(|e| serde_json::to_string(e).ok())),
                Arg::text(n.gateway),
                Arg::opt_text(n.gateway_ref),
                Arg::Int(pi.created_at.micros()),
                Arg::Int(pi.created_at.micros()),
            ]
        })
        .collect();
    super::insert_rows(
        conn,
        "payment_intents",
        &[
            "id",
            "merchant_id",
            "livemode",
            "amount",
            "amount_received",
            "amount_refunded",
            "currency",
            "status",
            "capture_method",
            "customer_id",
            "invoice_id",
            "checkout_session_id",
            "payment_method_id",
            "attempt_id",
            "last_payment_error",
            "gateway",
            "gateway_ref",
            "created_at",
            "updated_at",
        ],
        rows,
        "",
    )
    .await
}

const PI_COLUMNS: &str = "id, livemode, amount, amount_received, amount_refunded, currency, status, \
    capture_method, customer_id, invoice_id, checkout_session_id, payment_method_id, last_payment_error, created_at";

pub async fn get_payment_intent(
    conn: &mut Conn,
    owner: &Owner,
    id: &PaymentIntentId,
) -> Result<Option<PaymentIntent>, sqlx::Error> {
    let row = sqlx::query_as::<_, PaymentIntentRow>(&format!(
        "SELECT {PI_COLUMNS} FROM payment_intents WHERE id = $1 AND merchant_id = $2 AND livemode = $3"
    ))
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(PaymentIntent::from))
}

/// Payment intents by id, with their owners (those that exist, in no set order).
pub async fn get_payment_intents_any(
    conn: &mut Conn,
    ids: &[&PaymentIntentId],
) -> Result<Vec<(Owner, PaymentIntent)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        merchant_id: String,
        #[sqlx(flatten)]
        pi: PaymentIntentRow,
    }
    let head = format!("SELECT merchant_id, {PI_COLUMNS} FROM payment_intents WHERE id IN ");
    let rows = super::select_in::<Row>(conn, &head, ids.iter().map(|id| id.as_str())).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let owner = Owner {
                merchant_id: crate::domain::ids::MerchantId::from_trusted(r.merchant_id),
                mode: Mode::from_flag(r.pi.livemode),
            };
            (owner, PaymentIntent::from(r.pi))
        })
        .collect())
}

pub async fn list_payment_intents(
    conn: &mut Conn,
    owner: &Owner,
    customer: Option<&CustomerId>,
    cursor: &Cursor,
) -> Result<Page<PaymentIntent>, sqlx::Error> {
    let mut sql = Sql::new(&format!("SELECT {PI_COLUMNS} FROM payment_intents WHERE merchant_id = "));
    sql.bind(Arg::Text(owner.merchant_id.to_string())).push(" AND livemode = ").bind(Arg::Int(owner.mode.as_flag()));
    if let Some(c) = customer {
        sql.push(" AND customer_id = ").bind(Arg::Text(c.to_string()));
    }
    cursor.finish(&mut sql, "id");
    let rows = sql.query_as::<PaymentIntentRow>().fetch_all(conn).await?;
    let page = cursor.page(rows);
    Ok(Page { items: page.items.into_iter().map(PaymentIntent::from).collect(), has_more: page.has_more })
}

pub struct NewConsultation<'a> {
    pub id: &'a ConsultationId,
    pub owner: &'a Owner,
    pub customer: &'a CustomerId,
    pub session: &'a CheckoutSessionId,
    pub visit_type: &'a str,
    pub answers: &'a str,
    pub status: &'a str,
}

pub async fn insert_consultation(conn: &mut Conn, c: NewConsultation<'_>, now: Timestamp) -> Result<(), sqlx::Error> {
    let decided = (c.status != "pending").then_some(now.micros());
    sqlx::query(
        "INSERT INTO consultations (id, merchant_id, livemode, customer_id, session_id, visit_type, answers,
            status, created_at, decided_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(c.id.as_str())
    .bind(c.owner.merchant_id.as_str())
    .bind(c.owner.mode.as_flag())
    .bind(c.customer.as_str())
    .bind(c.session.as_str())
    .bind(c.visit_type)
    .bind(c.answers)
    .bind(c.status)
    .bind(now.micros())
    .bind(decided)
    .execute(conn)
    .await?;
    Ok(())
}

/// The sandbox processor's memory of a charge made under an idempotency key.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SandboxCharge {
    pub idempotency_key: String,
    pub token: String,
    pub amount: i64,
    pub currency: String,
    pub outcome: String,
    pub decline_code: Option<String>,
}

/// Records a sandbox charge unless one exists under the key; returns the one that is stored.
pub async fn sandbox_charge(conn: &mut Conn, c: &SandboxCharge, now: Timestamp) -> Result<SandboxCharge, sqlx::Error> {
    sandbox_charges(conn, std::slice::from_ref(c), now).await?.pop().ok_or_else(|| sqlx::Error::RowNotFound)
}

/// [`sandbox_charge`] for many keys in one statement (plus one read for keys asked before): the
/// stored charge of each, in the order asked.
pub async fn sandbox_charges(
    conn: &mut Conn,
    charges: &[SandboxCharge],
    now: Timestamp,
) -> Result<Vec<SandboxCharge>, sqlx::Error> {
    // A new key (the usual case) is answered by the insert itself; a replayed one by the stored row.
    let mut fresh: Vec<&SandboxCharge> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in charges {
        if seen.insert(c.idempotency_key.as_str()) {
            fresh.push(c);
        }
    }
    let rows: Vec<Vec<Arg>> = fresh
        .iter()
        .map(|c| {
            vec![
                Arg::text(&c.idempotency_key),
                Arg::text(&c.token),
                Arg::Int(c.amount),
                Arg::text(&c.currency),
                Arg::text(&c.outcome),
                Arg::opt_text(c.decline_code.as_deref()),
                Arg::Int(now.micros()),
            ]
        })
        .collect();
    let written = super::insert_rows_counted(
        conn,
        "sandbox_charges",
        &["idempotency_key", "token", "amount", "currency", "outcome", "decline_code", "created_at"],
        rows,
        "ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .await?;
    let mut stored: std::collections::HashMap<String, SandboxCharge> = std::collections::HashMap::new();
    if written == fresh.len() as u64 {
        // Every key was new: what is stored is what was asked (no row needs to come back).
        stored.extend(fresh.iter().map(|c| (c.idempotency_key.clone(), (*c).clone())));
    } else {
        // Some were asked before: their first answers stand, read with the rest.
        let head = "SELECT idempotency_key, token, amount, currency, outcome, decline_code FROM sandbox_charges
                    WHERE idempotency_key IN ";
        let keys = fresh.iter().map(|c| c.idempotency_key.as_str());
        for c in super::select_in::<SandboxCharge>(conn, head, keys).await? {
            stored.insert(c.idempotency_key.clone(), c);
        }
    }
    charges.iter().map(|c| stored.get(&c.idempotency_key).cloned().ok_or(sqlx::Error::RowNotFound)).collect()
}

/// Changes a sandbox charge's outcome (a 3-D Secure challenge answered), only from `from`.
pub async fn update_sandbox_charge(
    conn: &mut Conn,
    key: &str,
    from: &str,
    outcome: &str,
    decline_code: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sandbox_charges SET outcome = $1, decline_code = $2 WHERE idempotency_key = $3 AND outcome = $4",
    )
    .bind(outcome)
    .bind(decline_code)
    .bind(key)
    .bind(from)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get_sandbox_charge(conn: &mut Conn, key: &str) -> Result<Option<SandboxCharge>, sqlx::Error> {
    sqlx::query_as::<_, SandboxCharge>(
        "SELECT idempotency_key, token, amount, currency, outcome, decline_code FROM sandbox_charges
         WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// What the sandbox's ledger says about a refund request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxRefund {
    /// Recorded now, or earlier under the same key (a replay gets the first answer).
    Recorded,
    /// More than what is left of the charge.
    ExceedsCharge { left: i64 },
}

/// Records a refund of `amount` against the charge `charge_key` unless one exists under `key`.
/// Call inside a transaction: the check of what is left and the insert must not interleave.
pub async fn sandbox_refund(
    conn: &mut Conn,
    key: &str,
    charge: &SandboxCharge,
    amount: i64,
    now: Timestamp,
) -> Result<SandboxRefund, sqlx::Error> {
    let existing: Option<i64> = sqlx::query_scalar("SELECT amount FROM sandbox_refunds WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    if existing.is_some() {
        return Ok(SandboxRefund::Recorded);
    }
    let refunded: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM sandbox_refunds WHERE charge_key = $1",
    )
    .bind(&charge.idempotency_key)
    .fetch_one(&mut *conn)
    .await?;
    let left = charge.amount - refunded;
    if amount > left {
        return Ok(SandboxRefund::ExceedsCharge { left });
    }
    sqlx::query(
        "INSERT INTO sandbox_refunds (idempotency_key, charge_key, amount, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(key)
    .bind(&charge.idempotency_key)
    .bind(amount)
    .bind(now.micros())
    .execute(conn)
    .await?;
    Ok(SandboxRefund::Recorded)
}

#[derive(Clone, Debug, serde::Deserialize)]
struct SavedCardRow {
    id: String,
    gateway: String,
    gateway_ref: String,
    gateway_customer: Option<String>,
    card: StoredCard,
}

/// A saved card as the gateway that saved it can charge it, with that gateway's name.
pub async fn saved_card(
    conn: &mut Conn,
    id: &PaymentMethodId,
) -> Result<Option<(String, crate::gateway::SavedCard)>, sqlx::Error> {
    Ok(saved_cards(conn, &[id]).await?.remove(id))
}

/// [`saved_card`] for many cards in one read: those that exist, by id.
pub async fn saved_cards(
    conn: &mut Conn,
    ids: &[&PaymentMethodId],
) -> Result<std::collections::HashMap<PaymentMethodId, (String, crate::gateway::SavedCard)>, sqlx::Error> {
    let card = super::json_object(conn, &STORED_CARD_COLUMNS, &[]);
    let object = super::json_object(conn, &["id", "gateway", "gateway_ref", "gateway_customer"], &[("card", &card)]);
    let head = format!("{} FROM payment_methods WHERE id IN ", super::select_json_rows(conn, &object, None));
    // Subscriptions of one customer share a card: each id is asked once.
    let mut ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = std::collections::HashMap::new();
    for r in super::select_json_in::<SavedCardRow>(conn, &head, ids).await? {
        out.insert(
            PaymentMethodId::from_trusted(r.id),
            (
                r.gateway,
                crate::gateway::SavedCard {
                    gateway_ref: r.gateway_ref,
                    gateway_customer: r.gateway_customer,
                    details: r.card.into(),
                },
            ),
        );
    }
    Ok(out)
}

/// The customer's newest card saved for charges without them present.
pub async fn default_card_of(
    conn: &mut Conn,
    owner: &Owner,
    customer: &CustomerId,
) -> Result<Option<PaymentMethodId>, sqlx::Error> {
    let id = sqlx::query_scalar::<_, String>(
        "SELECT id FROM payment_methods WHERE customer_id = $1 AND merchant_id = $2 AND livemode = $3
            AND off_session = 1 ORDER BY id DESC LIMIT 1",
    )
    .bind(customer.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(conn)
    .await?;
    Ok(id.map(PaymentMethodId::from_trusted))
}

/// Records the latest attempt on an invoice's payment intent.
pub async fn update_payment_intent(
    conn: &mut Conn,
    pi: &PaymentIntent,
    gateway_ref: Option<&str>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    update_payment_intents(conn, &[(pi, gateway_ref)], now).await
}

/// [`update_payment_intent`] for many (distinct) intents in one statement.
pub async fn update_payment_intents(
    conn: &mut Conn,
    intents: &[(&PaymentIntent, Option<&str>)],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    if intents.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<Arg>> = intents
        .iter()
        .map(|(pi, gateway_ref)| {
            vec![
                Arg::text(pi.payment_intent_id.as_str()),
                Arg::text(pi.status.as_str()),
                Arg::Int(pi.amount_received),
                Arg::OptText(pi.last_payment_error.as_ref().and_then(|e| serde_json::to_string(e).ok())),
                Arg::opt_text(*gateway_ref),
                Arg::opt_text(pi.payment_method.as_ref().map(|p| p.as_str())),
                Arg::Int(now.micros()),
            ]
        })
        .collect();
    super::update_rows(
        conn,
        "payment_intents",
        "id",
        &[],
        &[
            "status",
            "amount_received",
            "last_payment_error",
            "gateway_ref = COALESCE(?, gateway_ref)",
            "payment_method_id",
            "updated_at",
        ],
        "",
        rows,
    )
    .await?;
    Ok(())
}
