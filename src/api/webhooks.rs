//! `/v1/webhooks`: create, list, retrieve, update, delete endpoints, rotate their signing secret,
//! and read the deliveries log (every HTTP try made to an endpoint).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Auth;
use super::{idempotency, json_response, nullable, parse_body, read_body, wrap, Query, LIST_PARAMS};
use crate::db;
use crate::db::webhook_endpoints::{Changes, Secret};
use crate::domain::ids::{EventId, WebhookAttemptId, WebhookEndpointId};
use crate::domain::metadata::Metadata;
use crate::domain::webhook::{self, WebhookStatus};
use crate::error::ApiError;
use crate::flows::webhooks::{self, NewWebhook};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhooks")
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/webhooks/{id}")
            .route(web::get().to(retrieve))
            .route(web::post().to(update))
            .route(web::delete().to(delete))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/webhooks/{id}/rotate_secret")
            .route(web::post().to(rotate_secret))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/webhooks/{id}/deliveries")
            .route(web::get().to(deliveries))
            .default_service(web::to(super::method_not_allowed)),
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    url: String,
    events: Vec<String>,
    description: Option<String>,
    #[serde(default)]
    metadata: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateWebhook {
    // Absent leaves a field alone; null is refused where a field cannot be empty (rather than
    // read as "leave alone", which would hide the mistake).
    #[serde(default, deserialize_with = "nullable")]
    url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    events: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    status: Option<Option<String>>,
    metadata: Option<Value>,
}

/// A field that may be left out but not set to null.
fn not_null<T>(value: Option<Option<T>>, param: &str) -> Result<Option<T>, ApiError> {
    match value {
        None => Ok(None),
        Some(None) => Err(ApiError::invalid(param, format!("{param} cannot be null; leave it out to keep it"))),
        Some(Some(v)) => Ok(Some(v)),
    }
}

const RESOURCE: &str = "webhook endpoint";

fn parse_id(raw: &str) -> Result<WebhookEndpointId, ApiError> {
    WebhookEndpointId::parse(raw).ok_or_else(|| ApiError::not_found(RESOURCE, raw))
}

async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let input: CreateWebhook = parse_body(&body, "webhook", false)?;
        let new = NewWebhook {
            url: webhook::url(&input.url, "webhook.url", auth.mode())?,
            events: webhook::events(&input.events, "webhook.events")?,
            description: input
                .description
                .as_deref()
                .map(|d| webhook::description(d, "webhook.description"))
                .transpose()?
                .flatten(),
            metadata: Metadata::parse(&input.metadata, "webhook.metadata")?,
        };
        let endpoint = webhooks::create(&state.db, &auth.owner, new, state.clock.now()).await?;
        Ok((StatusCode::OK, wrap("webhook", &endpoint)))
    })
    .await
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let mut conn = state.db.conn().await?;
    let row = db::webhook_endpoints::get(&mut conn, &auth.owner, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(RESOURCE, &path))?;
    Ok(json_response(StatusCode::OK, &wrap("webhook", &row.present(Secret::Redact, state.clock.now()))))
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &LIST_PARAMS)?;
    let cursor = query.cursor(WebhookEndpointId::PREFIX)?;
    let mut conn = state.db.conn().await?;
    let page = db::webhook_endpoints::list(&mut conn, &auth.owner, &cursor).await?;
    let now = state.clock.now();
    let webhooks: Vec<_> = page.items.iter().map(|r| r.present(Secret::Redact, now)).collect();
    Ok(json_response(StatusCode::OK, &json!({ "webhooks": webhooks, "has_more": page.has_more })))
}

async fn update(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    let id = parse_id(&path)?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let input: UpdateWebhook = parse_body(&body, "webhook", false)?;
        let url = not_null(input.url, "webhook.url")?;
        let events = not_null(input.events, "webhook.events")?;
        let status = not_null(input.status, "webhook.status")?;
        let changes = Changes {
            url: url.as_deref().map(|u| webhook::url(u, "webhook.url", auth.mode())).transpose()?,
            events: events.as_deref().map(|e| webhook::events(e, "webhook.events")).transpose()?,
            description: match &input.description {
                None => None,
                Some(None) => Some(None),
                Some(Some(d)) => Some(webhook::description(d, "webhook.description")?),
            },
            metadata: input.metadata.as_ref().map(|m| Metadata::parse(m, "webhook.metadata")).transpose()?,
            status: status
                .as_deref()
                .map(|s| WebhookStatus::parse(s, "webhook.status"))
                .transpose()?
                .map(|s| (s, None)),
        };
        let endpoint = webhooks::update(&state.db, &auth.owner, &id, changes, state.clock.now()).await?;
        Ok((StatusCode::OK, wrap("webhook", &endpoint)))
    })
    .await
}

async fn delete(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let endpoint = webhooks::delete(&state.db, &auth.owner, &id, state.clock.now()).await?;
    Ok(json_response(StatusCode::OK, &wrap("webhook", &endpoint)))
}

async fn rotate_secret(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    let id = parse_id(&path)?;
    idempotency::run(&state, &auth, &req, &body, || async {
        no_body_expected(&body)?;
        let endpoint = webhooks::rotate_secret(&state.db, &auth.owner, &id, state.clock.now()).await?;
        Ok((StatusCode::OK, wrap("webhook", &endpoint)))
    })
    .await
}

/// An action without parameters takes an empty body (or `{}`); anything else is a mistake to name.
fn no_body_expected(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => match map.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::invalid(k.clone(), format!("unknown field `{k}`: this call takes no body"))),
        },
        _ => Err(ApiError::bad_request("body_not_object", "send no body, or an empty JSON object {}")),
    }
}

async fn deliveries(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let query = Query::parse(&req, &[&LIST_PARAMS[..], &["event_id"]].concat())?;
    let cursor = query.cursor(WebhookAttemptId::PREFIX)?;
    let event = query
        .get("event_id")
        .map(|e| {
            EventId::parse(e).ok_or_else(|| ApiError::invalid("event_id", "event_id must be an event id (fevt_...)"))
        })
        .transpose()?;
    let mut conn = state.db.conn().await?;
    db::webhook_endpoints::get(&mut conn, &auth.owner, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(RESOURCE, &path))?;
    let page = db::webhook_endpoints::attempts(&mut conn, &auth.owner, &id, event.as_ref(), &cursor).await?;
    Ok(json_response(StatusCode::OK, &json!({ "deliveries": page.items, "has_more": page.has_more })))
}
