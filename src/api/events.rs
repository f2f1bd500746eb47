//! `/v1/events`: the outbox as merchants read it (filtered by type, object and creation time), and
//! `POST /v1/events/{id}/retry` to queue an event's delivery to their webhook endpoints again.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::auth::Auth;
use super::{idempotency, json_response, read_body, Query, LIST_PARAMS};
use crate::db::{self, events::EventRow};
use crate::domain::ids::EventId;
use crate::domain::timestamp::Timestamp;
use crate::error::ApiError;
use crate::flows::webhooks;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/events").route(web::get().to(list)).default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/events/{id}")
            .route(web::get().to(retrieve))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/events/{id}/retry")
            .route(web::post().to(retry))
            .default_service(web::to(super::method_not_allowed)),
    );
}

fn payload(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or(Value::Null)
}

fn row_payload(row: &EventRow) -> Value {
    payload(&row.payload)
}

/// `created[gte]` / `created[lte]`: RFC 3339, as events show their `created_at`, so a merchant can
/// pass one back unchanged. A `+` offset sent unencoded arrives as a space and is read as `+`.
fn created_bound(query: &Query, name: &str) -> Result<Option<Timestamp>, ApiError> {
    let Some(raw) = query.get(name) else { return Ok(None) };
    Timestamp::parse_rfc3339(raw.trim())
        .or_else(|| Timestamp::parse_rfc3339(&raw.trim().replace(' ', "+")))
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(
                name,
                format!("{name} must be an RFC 3339 timestamp like 2024-04-26T18:39:43Z (got `{raw}`)"),
            )
        })
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query =
        Query::parse(&req, &[&LIST_PARAMS[..], &["event_type", "object_id", "created[gte]", "created[lte]"]].concat())?;
    let cursor = query.cursor(EventId::PREFIX)?;
    let created_gte = created_bound(&query, "created[gte]")?;
    let created_lte = created_bound(&query, "created[lte]")?;
    if let (Some(gte), Some(lte)) = (created_gte, created_lte) {
        if gte > lte {
            return Err(ApiError::invalid("created[lte]", "created[lte] must not be earlier than created[gte]"));
        }
    }
    let filter = db::events::Filter {
        event_type: query.get("event_type"),
        object_id: query.get("object_id"),
        created_gte,
        created_lte,
    };
    let mut conn = state.db.conn().await?;
    let page = db::events::list(&mut conn, &auth.owner, &filter, &cursor).await?;
    let events: Vec<Value> = page.items.iter().map(row_payload).collect();
    Ok(json_response(StatusCode::OK, &json!({ "events": events, "has_more": page.has_more })))
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = EventId::parse(&path).ok_or_else(|| ApiError::not_found("event", &path))?;
    let mut conn = state.db.conn().await?;
    let row = db::events::get(&mut conn, &auth.owner, &id).await?.ok_or_else(|| ApiError::not_found("event", &path))?;
    Ok(json_response(StatusCode::OK, &json!({ "event": row_payload(&row) })))
}

/// The optional body of a retry: nothing, `{}`, or `{"webhook_id": "fwh_..."}` to send to that
/// endpoint only. An action, not a resource, so it is not wrapped in an envelope.
fn retry_target(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "json_invalid",
            format!("the request body is not valid JSON (line {}, column {})", e.line(), e.column()),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "body_not_object",
            "the request body must be empty or a JSON object like {\"webhook_id\": \"fwh_...\"}",
        ));
    };
    if let Some(k) = map.keys().find(|k| k.as_str() != webhooks::RETRY_WEBHOOK_PARAM) {
        return Err(ApiError::invalid(k.clone(), format!("unknown field `{k}`; this call takes only webhook_id")));
    }
    match map.get(webhooks::RETRY_WEBHOOK_PARAM) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => {
            Err(ApiError::invalid(webhooks::RETRY_WEBHOOK_PARAM, "webhook_id must be a webhook endpoint id (fwh_...)"))
        }
    }
}

async fn retry(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
    payload_bytes: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload_bytes).await?;
    let id = EventId::parse(&path).ok_or_else(|| ApiError::not_found("event", &path))?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let target = retry_target(&body)?;
        let retried = webhooks::retry_event(&state.db, &auth.owner, &id, target.as_deref(), state.clock.now()).await?;
        Ok((StatusCode::OK, json!({ "event": payload(&retried.payload), "queued": retried.queued })))
    })
    .await
}
