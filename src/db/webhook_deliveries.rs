//! Webhook deliveries: the fan-out of each event to the merchant's endpoints (inside the event's
//! transaction), the lease a worker takes on a due delivery, and what each HTTP try recorded.

use super::{Arg, Conn};
use crate::domain::ids::{EventId, WebhookAttemptId, WebhookDeliveryId, WebhookEndpointId};
use crate::domain::timestamp::Timestamp;
use crate::domain::Owner;

pub mod delivery_status {
    pub const PENDING: &str = "pending";
    pub const SUCCEEDED: &str = "succeeded";
    /// Every try of the schedule failed.
    pub const FAILED: &str = "failed";
    /// The endpoint was deleted or disabled before the delivery was made.
    pub const CANCELED: &str = "canceled";
}

/// Whether an endpoint's `events` list (JSON array of types, `*` for all) takes `event_type`.
pub fn subscribed(events_json: &str, event_type: &str) -> bool {
    serde_json::from_str::<Vec<String>>(events_json)
        .map(|types| types.iter().any(|t| t == "*" || t == event_type))
        .unwrap_or(false)
}

type Endpoints = Vec<(String, String)>;

/// `owner`'s enabled endpoints (id, subscribed events), or only `endpoint`.
async fn read_endpoints(
    conn: &mut Conn,
    owner: &Owner,
    endpoint: Option<&WebhookEndpointId>,
) -> Result<Endpoints, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, events FROM webhook_endpoints
         WHERE merchant_id = $1 AND livemode = $2 AND status = 'enabled' AND ($3 = '' OR id = $3)",
    )
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(endpoint.map(|e| e.as_str()).unwrap_or(""))
    .fetch_all(&mut *conn)
    .await
}

/// Queues `event` for every enabled endpoint of `owner` subscribed to its type (or only for
/// `endpoint`, for a retry). Call in the transaction that writes the event. Returns how many.
pub async fn enqueue_for_event(
    conn: &mut Conn,
    owner: &Owner,
    event: &EventId,
    event_type: &str,
    endpoint: Option<&WebhookEndpointId>,
    now: Timestamp,
) -> Result<usize, sqlx::Error> {
    let endpoints = read_endpoints(conn, owner, endpoint).await?;
    // A retry to one endpoint goes there whatever it subscribes to now.
    let rows: Vec<Vec<Arg>> = endpoints
        .iter()
        .filter(|(_, events)| endpoint.is_some() || subscribed(events, event_type))
        .map(|(endpoint_id, _)| delivery_row(owner, event, endpoint_id, now))
        .collect();
    let queued = rows.len();
    insert_deliveries(conn, rows).await?;
    Ok(queued)
}

/// Queues each of many events (`owner`, id, type, time) for the enabled endpoints of its owner
/// subscribed to its type, reading each owner's endpoints once. Returns how many deliveries.
pub async fn enqueue_for_events(
    conn: &mut Conn,
    events: &[(&Owner, &EventId, &str, Timestamp)],
) -> Result<usize, sqlx::Error> {
    let mut by_owner: std::collections::HashMap<(String, i64), Endpoints> = std::collections::HashMap::new();
    let mut rows = Vec::new();
    for (owner, event, event_type, now) in events {
        let key = (owner.merchant_id.to_string(), owner.mode.as_flag());
        if !by_owner.contains_key(&key) {
            let list = read_endpoints(conn, owner, None).await?;
            by_owner.insert(key.clone(), list);
        }
        for (endpoint_id, types) in &by_owner[&key] {
            if subscribed(types, event_type) {
                rows.push(delivery_row(owner, event, endpoint_id, *now));
            }
        }
    }
    let queued = rows.len();
    insert_deliveries(conn, rows).await?;
    Ok(queued)
}

fn delivery_row(owner: &Owner, event: &EventId, endpoint_id: &str, now: Timestamp) -> Vec<Arg> {
    vec![
        Arg::Text(WebhookDeliveryId::generate().to_string()),
        Arg::text(owner.merchant_id.as_str()),
        Arg::Int(owner.mode.as_flag()),
        Arg::text(event.as_str()),
        Arg::text(endpoint_id),
        Arg::text(delivery_status::PENDING),
        Arg::Int(0),
        Arg::Int(now.micros()),
        Arg::Int(now.micros()),
        Arg::Int(now.micros()),
    ]
}

async fn insert_deliveries(conn: &mut Conn, rows: Vec<Vec<Arg>>) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    super::insert_rows(
        conn,
        "webhook_deliveries",
        &[
            "id",
            "merchant_id",
            "livemode",
            "event_id",
            "endpoint_id",
            "status",
            "attempt_count",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ],
        rows,
        "",
    )
    .await
}

/// A delivery a worker holds: where to send what, with which secrets.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: String,
    pub livemode: i64,
    pub event_id: String,
    pub endpoint_id: String,
    pub attempt_count: i64,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub payload: String,
}

/// Due deliveries (oldest first), without taking them.
pub async fn due(conn: &mut Conn, now: Timestamp, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM webhook_deliveries
         WHERE status = 'pending' AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1)
         ORDER BY next_attempt_at LIMIT $2",
    )
    .bind(now.micros())
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Takes a due delivery until `lease_until`; only one worker of any instance wins it. A worker that
/// dies holding it loses it when the lease runs out, and the delivery is tried again.
pub async fn claim(
    conn: &mut Conn,
    id: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Option<Claimed>, sqlx::Error> {
    let won = sqlx::query(
        "UPDATE webhook_deliveries SET lease_until = $1, attempt_count = attempt_count + 1, updated_at = $2
         WHERE id = $3 AND status = 'pending' AND next_attempt_at <= $2 AND (lease_until IS NULL OR lease_until < $2)",
    )
    .bind(lease_until.micros())
    .bind(now.micros())
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !won {
        return Ok(None);
    }
    sqlx::query_as::<_, Claimed>(
        "SELECT d.id, d.livemode, d.event_id, d.endpoint_id, d.attempt_count, w.url, w.secret, w.previous_secret,
                w.previous_secret_expires_at, e.payload
         FROM webhook_deliveries d
         JOIN webhook_endpoints w ON w.id = d.endpoint_id
         JOIN events e ON e.id = d.event_id
         WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// What one HTTP try of a delivery came to.
pub struct TryResult<'a> {
    pub delivery: &'a str,
    pub endpoint: &'a str,
    pub event: &'a str,
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub error: Option<&'a str>,
    pub succeeded: bool,
    /// When to try again; `None` after a success or the last try.
    pub next_attempt_at: Option<Timestamp>,
}

/// Records a try and moves the delivery on, if this worker still holds it (its lease may have run
/// out and another worker taken over: then the other one's answer counts). Returns whether recorded.
pub async fn record_try(conn: &mut Conn, t: TryResult<'_>, now: Timestamp) -> Result<bool, sqlx::Error> {
    let status = match (t.succeeded, t.next_attempt_at) {
        (true, _) => delivery_status::SUCCEEDED,
        (false, Some(_)) => delivery_status::PENDING,
        (false, None) => delivery_status::FAILED,
    };
    let moved = sqlx::query(
        "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, lease_until = NULL,
            last_status_code = $3, last_error = $4, updated_at = $5
         WHERE id = $6 AND status = 'pending'",
    )
    .bind(status)
    .bind(t.next_attempt_at.map(|n| n.micros()))
    .bind(t.status_code)
    .bind(t.error)
    .bind(now.micros())
    .bind(t.delivery)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !moved {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, event_id, attempted_at, status_code,
            duration_ms, error, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(WebhookAttemptId::generate().as_str())
    .bind(t.delivery)
    .bind(t.endpoint)
    .bind(t.event)
    .bind(now.micros())
    .bind(t.status_code)
    .bind(t.duration_ms)
    .bind(t.error)
    .bind(t.next_attempt_at.map(|n| n.micros()))
    .execute(&mut *conn)
    .await?;
    // Five days of nothing but failures disable an endpoint: remember when the failing began.
    if t.succeeded {
        sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1")
            .bind(t.endpoint)
            .execute(&mut *conn)
            .await?;
    } else {
        sqlx::query("UPDATE webhook_endpoints SET failing_since = $1 WHERE id = $2 AND failing_since IS NULL")
            .bind(now.micros())
            .bind(t.endpoint)
            .execute(&mut *conn)
            .await?;
    }
    Ok(true)
}

/// Disables an endpoint that has failed since `failing_before` and cancels what it still had queued.
/// Returns whether it was disabled now.
pub async fn disable_failing(
    conn: &mut Conn,
    endpoint: &str,
    failing_before: Timestamp,
    reason: &str,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let disabled = sqlx::query(
        "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $1, updated_at = $2
         WHERE id = $3 AND status = 'enabled' AND failing_since IS NOT NULL AND failing_since < $4",
    )
    .bind(reason)
    .bind(now.micros())
    .bind(endpoint)
    .bind(failing_before.micros())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if disabled {
        cancel_pending_of_endpoint(conn, endpoint, reason, now).await?;
    }
    Ok(disabled)
}

/// Cancels the queued deliveries of an endpoint (deleted or disabled).
pub async fn cancel_pending_of_endpoint(
    conn: &mut Conn,
    endpoint: &str,
    reason: &str,
    now: Timestamp,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE webhook_deliveries SET status = 'canceled', last_error = $1, lease_until = NULL, updated_at = $2
         WHERE endpoint_id = $3 AND status = 'pending'",
    )
    .bind(reason)
    .bind(now.micros())
    .bind(endpoint)
    .execute(conn)
    .await?
    .rows_affected())
}
