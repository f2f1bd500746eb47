//! Merchant webhook endpoints (owner-scoped; a deleted one is kept, marked `deleted`, because its
//! deliveries and attempts still point at it) and the deliveries log read from their attempts.

use serde::Serialize;

use super::{Arg, Conn, Cursor, Page, Sql};
use crate::domain::ids::{EventId, WebhookAttemptId, WebhookDeliveryId, WebhookEndpointId};
use crate::domain::metadata::Metadata;
use crate::domain::timestamp::Timestamp;
use crate::domain::webhook::{redact_secret, WebhookEndpoint, WebhookStatus};
use crate::domain::{Mode, Owner};

/// The stored status of a deleted endpoint: never `enabled`, so the fan-out skips it, and hidden
/// from every read here.
pub const DELETED: &str = "deleted";

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: String,
    pub livemode: i64,
    pub url: String,
    pub description: Option<String>,
    pub events: String,
    pub status: String,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub failing_since: Option<i64>,
    pub metadata: Option<String>,
    pub created_at: i64,
}

/// Whether the secret appears in full (only in the answers that made it) or redacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secret {
    Reveal,
    Redact,
}

impl EndpointRow {
    pub fn present(&self, secret: Secret, now: Timestamp) -> WebhookEndpoint {
        WebhookEndpoint {
            webhook_id: WebhookEndpointId::from_trusted(self.id.clone()),
            url: self.url.clone(),
            events: serde_json::from_str(&self.events).unwrap_or_default(),
            description: self.description.clone(),
            status: WebhookStatus::from_wire(&self.status).unwrap_or(WebhookStatus::Disabled),
            disabled_reason: self.disabled_reason.clone(),
            signing_secret: match secret {
                Secret::Reveal => self.secret.clone(),
                Secret::Redact => redact_secret(&self.secret),
            },
            previous_secret_expires_at: self
                .previous_secret
                .as_ref()
                .and(self.previous_secret_expires_at)
                .map(Timestamp::from_micros)
                .filter(|t| *t > now),
            metadata: Metadata::from_stored(self.metadata.as_deref()),
            test_mode: Mode::from_flag(self.livemode).is_test(),
            created_at: Timestamp::from_micros(self.created_at),
            deleted: self.status == DELETED,
        }
    }
}

const COLUMNS: &str = "id, livemode, url, description, events, status, disabled_reason, secret, previous_secret,
    previous_secret_expires_at, failing_since, metadata, created_at";

pub struct NewEndpoint<'a> {
    pub id: &'a WebhookEndpointId,
    pub url: &'a str,
    pub description: Option<&'a str>,
    pub events: &'a [String],
    pub secret: &'a str,
    pub metadata: Option<&'a Metadata>,
}

pub async fn insert(conn: &mut Conn, owner: &Owner, e: NewEndpoint<'_>, now: Timestamp) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, merchant_id, livemode, url, description, events, status, disabled_reason,
            secret, previous_secret, previous_secret_expires_at, failing_since, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'enabled', NULL, $7, NULL, NULL, NULL, $8, $9, $9)",
    )
    .bind(e.id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(e.url)
    .bind(e.description)
    .bind(serde_json::to_string(e.events).unwrap_or_else(|_| "[]".into()))
    .bind(e.secret)
    .bind(e.metadata.map(Metadata::to_json))
    .bind(now.micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// Endpoints of `owner` that are not deleted (enabled or disabled).
pub async fn count(conn: &mut Conn, owner: &Owner) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM webhook_endpoints WHERE merchant_id = $1 AND livemode = $2 AND status <> 'deleted'",
    )
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_one(conn)
    .await
}

pub async fn get(conn: &mut Conn, owner: &Owner, id: &WebhookEndpointId) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as::<_, EndpointRow>(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints
         WHERE id = $1 AND merchant_id = $2 AND livemode = $3 AND status <> 'deleted'"
    ))
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(conn)
    .await
}

pub async fn list(conn: &mut Conn, owner: &Owner, cursor: &Cursor) -> Result<Page<EndpointRow>, sqlx::Error> {
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE merchant_id = "));
    sql.bind(Arg::Text(owner.merchant_id.to_string()))
        .push(" AND livemode = ")
        .bind(Arg::Int(owner.mode.as_flag()))
        .push(" AND status <> 'deleted'");
    cursor.finish(&mut sql, "id");
    let rows = sql.query_as::<EndpointRow>().fetch_all(conn).await?;
    Ok(cursor.page(rows))
}

/// The fields an update sets; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct Changes {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<Option<String>>,
    pub metadata: Option<Option<Metadata>>,
    /// Enabling clears the disabled reason and the failure streak (a fresh five days); disabling
    /// records `disabled_reason` unless the endpoint was already disabled (keeping the first why).
    pub status: Option<(WebhookStatus, Option<String>)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.url.is_none()
            && self.events.is_none()
            && self.description.is_none()
            && self.metadata.is_none()
            && self.status.is_none()
    }
}

/// Sets only the given columns (so a concurrent change to another column, such as the worker
/// disabling a failing endpoint, is not overwritten with what this request read). Returns whether
/// the endpoint exists for `owner`.
pub async fn update(
    conn: &mut Conn,
    owner: &Owner,
    id: &WebhookEndpointId,
    changes: &Changes,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let mut sql = Sql::new("UPDATE webhook_endpoints SET updated_at = ");
    sql.bind(Arg::Int(now.micros()));
    if let Some(url) = &changes.url {
        sql.push(", url = ").bind(Arg::Text(url.clone()));
    }
    if let Some(events) = &changes.events {
        sql.push(", events = ").bind(Arg::Text(serde_json::to_string(events).unwrap_or_else(|_| "[]".into())));
    }
    if let Some(description) = &changes.description {
        match description {
            Some(d) => sql.push(", description = ").bind(Arg::Text(d.clone())),
            None => sql.push(", description = NULL"),
        };
    }
    if let Some(metadata) = &changes.metadata {
        match metadata {
            Some(m) => sql.push(", metadata = ").bind(Arg::Text(m.to_json())),
            None => sql.push(", metadata = NULL"),
        };
    }
    match &changes.status {
        Some((WebhookStatus::Enabled, _)) => {
            sql.push(", status = 'enabled', disabled_reason = NULL, failing_since = NULL");
        }
        Some((WebhookStatus::Disabled, reason)) => {
            sql.push(", disabled_reason = CASE WHEN status = 'disabled' THEN disabled_reason ELSE ");
            match reason {
                Some(r) => sql.bind(Arg::Text(r.clone())),
                None => sql.push("NULL"),
            };
            sql.push(" END, status = 'disabled'");
        }
        None => {}
    }
    sql.push(" WHERE id = ").bind(Arg::Text(id.to_string()));
    sql.push(" AND merchant_id = ").bind(Arg::Text(owner.merchant_id.to_string()));
    sql.push(" AND livemode = ").bind(Arg::Int(owner.mode.as_flag()));
    sql.push(" AND status <> 'deleted'");
    Ok(sql.query().execute(conn).await?.rows_affected() == 1)
}

/// Marks the endpoint deleted (its deliveries and attempts keep pointing at it). Returns whether
/// it existed for `owner`.
pub async fn mark_deleted(
    conn: &mut Conn,
    owner: &Owner,
    id: &WebhookEndpointId,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET status = 'deleted', updated_at = $1
         WHERE id = $2 AND merchant_id = $3 AND livemode = $4 AND status <> 'deleted'",
    )
    .bind(now.micros())
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Makes `secret` the signing secret; the one it replaces keeps signing until `previous_until`.
/// Returns whether the endpoint exists for `owner`.
pub async fn rotate_secret(
    conn: &mut Conn,
    owner: &Owner,
    id: &WebhookEndpointId,
    secret: &str,
    previous_until: Timestamp,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = $1, secret = $2,
            updated_at = $3
         WHERE id = $4 AND merchant_id = $5 AND livemode = $6 AND status <> 'deleted'",
    )
    .bind(previous_until.micros())
    .bind(secret)
    .bind(now.micros())
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One HTTP try of a delivery, as the deliveries log shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub attempt_id: WebhookAttemptId,
    pub delivery_id: WebhookDeliveryId,
    pub event_id: EventId,
    pub event_type: String,
    pub attempted_at: Timestamp,
    /// The receiver's HTTP status; null when no answer came (timeout, refused connection).
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub succeeded: bool,
    pub error: Option<String>,
    /// When the next try of this delivery is due; null after a success or the last try.
    pub next_attempt_at: Option<Timestamp>,
    /// Where the delivery stands now: `pending`, `succeeded`, `failed` or `canceled`.
    pub delivery_status: String,
}

#[derive(Clone, Debug, sqlx::FromRow)]
struct AttemptRow {
    id: String,
    delivery_id: String,
    event_id: String,
    event_type: Option<String>,
    attempted_at: i64,
    status_code: Option<i64>,
    duration_ms: i64,
    error: Option<String>,
    next_attempt_at: Option<i64>,
    delivery_status: Option<String>,
}

impl From<AttemptRow> for Attempt {
    fn from(r: AttemptRow) -> Attempt {
        Attempt {
            attempt_id: WebhookAttemptId::from_trusted(r.id),
            delivery_id: WebhookDeliveryId::from_trusted(r.delivery_id),
            event_id: EventId::from_trusted(r.event_id),
            event_type: r.event_type.unwrap_or_default(),
            attempted_at: Timestamp::from_micros(r.attempted_at),
            succeeded: r.status_code.is_some_and(|c| (200..300).contains(&c)) && r.error.is_none(),
            status_code: r.status_code,
            duration_ms: r.duration_ms,
            error: r.error,
            next_attempt_at: r.next_attempt_at.map(Timestamp::from_micros),
            delivery_status: r.delivery_status.unwrap_or_default(),
        }
    }
}

/// The attempts made to an endpoint of `owner` (which the caller has found), newest first,
/// optionally only those of one event.
pub async fn attempts(
    conn: &mut Conn,
    owner: &Owner,
    endpoint: &WebhookEndpointId,
    event: Option<&EventId>,
    cursor: &Cursor,
) -> Result<Page<Attempt>, sqlx::Error> {
    // The owner is checked again through the endpoint: attempts carry no owner of their own.
    let mut sql = Sql::new(
        "SELECT a.id, a.delivery_id, a.event_id, e.event_type, a.attempted_at, a.status_code, a.duration_ms,
            a.error, a.next_attempt_at, d.status AS delivery_status
         FROM webhook_attempts a
         JOIN webhook_endpoints w ON w.id = a.endpoint_id
         LEFT JOIN webhook_deliveries d ON d.id = a.delivery_id
         LEFT JOIN events e ON e.id = a.event_id
         WHERE a.endpoint_id = ",
    );
    sql.bind(Arg::Text(endpoint.to_string()))
        .push(" AND w.merchant_id = ")
        .bind(Arg::Text(owner.merchant_id.to_string()))
        .push(" AND w.livemode = ")
        .bind(Arg::Int(owner.mode.as_flag()));
    if let Some(e) = event {
        sql.push(" AND a.event_id = ").bind(Arg::Text(e.to_string()));
    }
    cursor.finish(&mut sql, "a.id");
    let rows = sql.query_as::<AttemptRow>().fetch_all(conn).await?;
    let page = cursor.page(rows);
    Ok(Page { items: page.items.into_iter().map(Attempt::from).collect(), has_more: page.has_more })
}
