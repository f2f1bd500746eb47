//! Webhook endpoints and re-sending events: each change commits with what it implies for the
//! delivery queue (a disabled or deleted endpoint's pending deliveries are canceled in the same
//! transaction, so the worker never sends to an endpoint the merchant has just turned off).

use crate::db::webhook_endpoints::{self, Changes, EndpointRow, NewEndpoint, Secret};
use crate::db::{self, Db};
use crate::domain::ids::{EventId, WebhookEndpointId};
use crate::domain::metadata::Metadata;
use crate::domain::timestamp::Timestamp;
use crate::domain::webhook::{self, WebhookEndpoint, WebhookStatus};
use crate::domain::webhook_signature;
use crate::domain::{FieldError, Owner};

use super::FlowError;

/// Why deliveries were canceled, as the deliveries log shows it.
pub const DISABLED_BY_MERCHANT: &str = "disabled through the API";
const CANCELED_DISABLED: &str = "endpoint disabled";
const CANCELED_DELETED: &str = "endpoint deleted";

fn not_found(id: &WebhookEndpointId) -> FlowError {
    FlowError::NotFound { resource: "webhook endpoint", id: id.to_string() }
}

pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub metadata: Option<Metadata>,
}

/// Creates an enabled endpoint with a new secret, answered once in full.
pub async fn create(db: &Db, owner: &Owner, new: NewWebhook, now: Timestamp) -> Result<WebhookEndpoint, FlowError> {
    let id = WebhookEndpointId::generate();
    let secret = webhook_signature::new_secret();
    let mut tx = db.begin().await?;
    if webhook_endpoints::count(&mut tx, owner).await? >= webhook::MAX_ENDPOINTS_PER_MODE {
        return Err(FlowError::Unprocessable {
            code: "webhook_limit_reached",
            message: format!(
                "an account can have at most {} webhook endpoints in each mode; delete one first",
                webhook::MAX_ENDPOINTS_PER_MODE
            ),
        });
    }
    webhook_endpoints::insert(
        &mut tx,
        owner,
        NewEndpoint {
            id: &id,
            url: &new.url,
            description: new.description.as_deref(),
            events: &new.events,
            secret: &secret,
            metadata: new.metadata.as_ref(),
        },
        now,
    )
    .await?;
    let row = webhook_endpoints::get(&mut tx, owner, &id).await?.ok_or_else(|| not_found(&id))?;
    tx.commit().await?;
    Ok(row.present(Secret::Reveal, now))
}

pub async fn update(
    db: &Db,
    owner: &Owner,
    id: &WebhookEndpointId,
    mut changes: Changes,
    now: Timestamp,
) -> Result<WebhookEndpoint, FlowError> {
    if let Some((WebhookStatus::Disabled, reason)) = &mut changes.status {
        *reason = Some(DISABLED_BY_MERCHANT.to_string());
    }
    let mut tx = db.begin().await?;
    if !changes.is_empty() && !webhook_endpoints::update(&mut tx, owner, id, &changes, now).await? {
        return Err(not_found(id));
    }
    if matches!(changes.status, Some((WebhookStatus::Disabled, _))) {
        db::webhook_deliveries::cancel_pending_of_endpoint(&mut tx, id.as_str(), CANCELED_DISABLED, now).await?;
    }
    let row = webhook_endpoints::get(&mut tx, owner, id).await?.ok_or_else(|| not_found(id))?;
    tx.commit().await?;
    Ok(row.present(Secret::Redact, now))
}

/// Deletes the endpoint and cancels what it still had queued; answers it as it was, `deleted`.
pub async fn delete(
    db: &Db,
    owner: &Owner,
    id: &WebhookEndpointId,
    now: Timestamp,
) -> Result<WebhookEndpoint, FlowError> {
    let mut tx = db.begin().await?;
    let row: EndpointRow = webhook_endpoints::get(&mut tx, owner, id).await?.ok_or_else(|| not_found(id))?;
    if !webhook_endpoints::mark_deleted(&mut tx, owner, id, now).await? {
        return Err(not_found(id));
    }
    db::webhook_deliveries::cancel_pending_of_endpoint(&mut tx, id.as_str(), CANCELED_DELETED, now).await?;
    tx.commit().await?;
    let mut endpoint = row.present(Secret::Redact, now);
    endpoint.deleted = true;
    Ok(endpoint)
}

/// A new signing secret, answered once in full; the replaced one keeps signing for 24 hours so the
/// merchant can deploy the new one without dropping a delivery. (A second rotation inside those 24
/// hours retires the oldest secret at once: only two are ever valid.)
pub async fn rotate_secret(
    db: &Db,
    owner: &Owner,
    id: &WebhookEndpointId,
    now: Timestamp,
) -> Result<WebhookEndpoint, FlowError> {
    let secret = webhook_signature::new_secret();
    let until = now.plus_seconds(webhook::PREVIOUS_SECRET_SECONDS);
    let mut tx = db.begin().await?;
    if !webhook_endpoints::rotate_secret(&mut tx, owner, id, &secret, until, now).await? {
        return Err(not_found(id));
    }
    let row = webhook_endpoints::get(&mut tx, owner, id).await?.ok_or_else(|| not_found(id))?;
    tx.commit().await?;
    Ok(row.present(Secret::Reveal, now))
}

/// The event and how many deliveries were queued for it.
pub struct Retried {
    pub payload: String,
    pub queued: usize,
}

pub const RETRY_WEBHOOK_PARAM: &str = "webhook_id";

/// Queues `event` again: to every enabled endpoint subscribed to its type, or to `endpoint` alone
/// (whatever it subscribes to: the merchant asked for it by name). The event, the endpoint and the
/// new deliveries are read and written in one transaction.
pub async fn retry_event(
    db: &Db,
    owner: &Owner,
    event: &EventId,
    endpoint: Option<&str>,
    now: Timestamp,
) -> Result<Retried, FlowError> {
    let no_such_endpoint =
        |raw: &str| FieldError::new(RETRY_WEBHOOK_PARAM, format!("No such webhook endpoint: '{raw}'"));
    let endpoint =
        endpoint.map(|raw| WebhookEndpointId::parse(raw).ok_or_else(|| no_such_endpoint(raw))).transpose()?;
    let mut tx = db.begin().await?;
    let row = db::events::get(&mut tx, owner, event)
        .await?
        .ok_or_else(|| FlowError::NotFound { resource: "event", id: event.to_string() })?;
    if let Some(e) = &endpoint {
        let found = webhook_endpoints::get(&mut tx, owner, e).await?.ok_or_else(|| no_such_endpoint(e.as_str()))?;
        if found.status != WebhookStatus::Enabled.as_str() {
            return Err(FlowError::Unprocessable {
                code: "webhook_endpoint_disabled",
                message: format!(
                    "webhook endpoint {e} is disabled; enable it first with POST /v1/webhooks/{e} \
                     {{\"webhook\": {{\"status\": \"enabled\"}}}}"
                ),
            });
        }
    }
    let queued =
        db::webhook_deliveries::enqueue_for_event(&mut tx, owner, event, &row.event_type, endpoint.as_ref(), now)
            .await?;
    tx.commit().await?;
    Ok(Retried { payload: row.payload, queued })
}
