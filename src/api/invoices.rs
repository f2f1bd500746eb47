//! `/v1/invoices`: retrieve and list invoices, pay one now, or void it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::Auth;
use super::{idempotency, json_response, list_body, read_body, wrap, Query, LIST_PARAMS};
use crate::db;
use crate::domain::ids::{CustomerId, InvoiceId, SubscriptionId};
use crate::domain::subscription::InvoiceStatus;
use crate::error::ApiError;
use crate::flows::subscriptions;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/invoices").route(web::get().to(list)).default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/invoices/{id}")
            .route(web::get().to(retrieve))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/invoices/{id}/pay")
            .route(web::post().to(pay))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/invoices/{id}/void")
            .route(web::post().to(void))
            .default_service(web::to(super::method_not_allowed)),
    );
}

fn parse_id(raw: &str) -> Result<InvoiceId, ApiError> {
    InvoiceId::parse(raw).ok_or_else(|| ApiError::not_found("invoice", raw))
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let mut conn = state.db.conn().await?;
    let invoice = db::subscriptions::get_invoice(&mut conn, &auth.owner, &id, &state.settings.public_url)
        .await?
        .ok_or_else(|| ApiError::not_found("invoice", &path))?;
    Ok(json_response(StatusCode::OK, &wrap("invoice", &invoice)))
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &[&LIST_PARAMS[..], &["customer", "subscription", "status"]].concat())?;
    let cursor = query.cursor(InvoiceId::PREFIX)?;
    let customer = query
        .get("customer")
        .map(|c| {
            CustomerId::parse(c)
                .map(|c| c.to_string())
                .ok_or_else(|| ApiError::invalid("customer", "customer must be a customer id (fcus_...)"))
        })
        .transpose()?;
    let subscription = query
        .get("subscription")
        .map(|s| {
            SubscriptionId::parse(s)
                .map(|s| s.to_string())
                .ok_or_else(|| ApiError::invalid("subscription", "subscription must be a subscription id (fsub_...)"))
        })
        .transpose()?;
    let status =
        query.get("status").map(|s| InvoiceStatus::parse(s, "status").map(|s| s.as_str().to_string())).transpose()?;
    let filter = db::subscriptions::InvoiceFilter { customer, subscription, status };
    let mut conn = state.db.conn().await?;
    let page =
        db::subscriptions::list_invoices(&mut conn, &auth.owner, &filter, &cursor, &state.settings.public_url).await?;
    Ok(json_response(StatusCode::OK, &list_body("invoices", &page)))
}

/// The action endpoints take no body (an empty JSON object, however spaced, is accepted).
fn no_body(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(fields)) if fields.is_empty() => Ok(()),
        Ok(serde_json::Value::Object(fields)) => {
            let field = fields.keys().next().cloned().unwrap_or_default();
            Err(ApiError::invalid(field.clone(), format!("unknown field `{field}`: this endpoint takes no parameters")))
        }
        _ => Err(ApiError::bad_request("body_unexpected", "this endpoint takes no body (or an empty JSON object)")),
    }
}

async fn pay(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        no_body(&body)?;
        let id = parse_id(&path)?;
        let invoice = subscriptions::pay_invoice(&state, &auth.owner, &id).await?;
        Ok((StatusCode::OK, wrap("invoice", &invoice)))
    })
    .await
}

async fn void(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        no_body(&body)?;
        let id = parse_id(&path)?;
        let invoice = subscriptions::void_invoice(&state, &auth.owner, &id).await?;
        Ok((StatusCode::OK, wrap("invoice", &invoice)))
    })
    .await
}
