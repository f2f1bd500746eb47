//! `/v1/refunds`: refund a payment intent in full or in part, retrieve and list refunds.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Auth;
use super::{idempotency, json_response, list_body, parse_body, read_body, wrap, Query, LIST_PARAMS};
use crate::db;
use crate::domain::ids::{PaymentIntentId, RefundId};
use crate::domain::metadata::Metadata;
use crate::domain::refund::RefundReason;
use crate::error::ApiError;
use crate::flows::refunds::{self, NewRefund};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/refunds")
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/refunds/{id}")
            .route(web::get().to(retrieve))
            .default_service(web::to(super::method_not_allowed)),
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRefund {
    payment_intent: String,
    amount: Option<i64>,
    reason: Option<String>,
    #[serde(default)]
    metadata: Value,
}

async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let input: CreateRefund = parse_body(&body, "refund", false)?;
        let new = NewRefund {
            payment_intent: input.payment_intent,
            amount: input.amount,
            reason: input.reason.as_deref().map(|r| RefundReason::parse(r, "refund.reason")).transpose()?,
            metadata: Metadata::parse(&input.metadata, "refund.metadata")?,
        };
        let refund = refunds::create(&state, &auth.owner, new).await?;
        Ok((StatusCode::OK, wrap("refund", &refund)))
    })
    .await
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = RefundId::parse(&path).ok_or_else(|| ApiError::not_found("refund", &path))?;
    let mut conn = state.db.conn().await?;
    let refund =
        db::refunds::get(&mut conn, &auth.owner, &id).await?.ok_or_else(|| ApiError::not_found("refund", &path))?;
    Ok(json_response(StatusCode::OK, &wrap("refund", &refund)))
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &[&LIST_PARAMS[..], &["payment_intent"]].concat())?;
    let cursor = query.cursor(RefundId::PREFIX)?;
    let payment_intent = query
        .get("payment_intent")
        .map(|p| {
            PaymentIntentId::parse(p).ok_or_else(|| {
                ApiError::invalid("payment_intent", "payment_intent must be a payment intent id (fpi_...)")
            })
        })
        .transpose()?;
    let mut conn = state.db.conn().await?;
    let page = db::refunds::list(&mut conn, &auth.owner, payment_intent.as_ref(), &cursor).await?;
    Ok(json_response(StatusCode::OK, &list_body("refunds", &page)))
}
