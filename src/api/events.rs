//! `/v1/events`: the outbox as merchants read it (delivery to webhooks comes with the webhook
//! worker).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::auth::Auth;
use super::{json_response, Query, LIST_PARAMS};
use crate::db::{self, events::EventRow};
use crate::domain::ids::EventId;
use crate::error::ApiError;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/events").route(web::get().to(list)).default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/events/{id}")
            .route(web::get().to(retrieve))
            .default_service(web::to(super::method_not_allowed)),
    );
}

fn payload(row: &EventRow) -> Value {
    serde_json::from_str(&row.payload).unwrap_or(Value::Null)
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &[&LIST_PARAMS[..], &["event_type", "object_id"]].concat())?;
    let cursor = query.cursor(EventId::PREFIX)?;
    let mut conn = state.db.conn().await?;
    let page =
        db::events::list(&mut conn, &auth.owner, query.get("event_type"), query.get("object_id"), &cursor).await?;
    let events: Vec<Value> = page.items.iter().map(payload).collect();
    Ok(json_response(StatusCode::OK, &json!({ "events": events, "has_more": page.has_more })))
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = EventId::parse(&path).ok_or_else(|| ApiError::not_found("event", &path))?;
    let mut conn = state.db.conn().await?;
    let row = db::events::get(&mut conn, &auth.owner, &id).await?.ok_or_else(|| ApiError::not_found("event", &path))?;
    Ok(json_response(StatusCode::OK, &json!({ "event": payload(&row) })))
}
