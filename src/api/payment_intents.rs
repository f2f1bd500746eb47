//! `/v1/payment_intents`: retrieve and list the payments made through checkout and billing.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::Auth;
use super::{json_response, list_body, wrap, Query, LIST_PARAMS};
use crate::db;
use crate::domain::ids::{CustomerId, PaymentIntentId};
use crate::error::ApiError;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/payment_intents")
            .route(web::get().to(list))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/payment_intents/{id}")
            .route(web::get().to(retrieve))
            .default_service(web::to(super::method_not_allowed)),
    );
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = PaymentIntentId::parse(&path).ok_or_else(|| ApiError::not_found("payment intent", &path))?;
    let mut conn = state.db.conn().await?;
    let pi = db::payments::get_payment_intent(&mut conn, &auth.owner, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment intent", &path))?;
    Ok(json_response(StatusCode::OK, &wrap("payment_intent", &pi)))
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &[&LIST_PARAMS[..], &["customer"]].concat())?;
    let cursor = query.cursor(PaymentIntentId::PREFIX)?;
    let customer = query
        .get("customer")
        .map(|c| {
            CustomerId::parse(c)
                .ok_or_else(|| ApiError::invalid("customer", "customer must be a customer id (fcus_...)"))
        })
        .transpose()?;
    let mut conn = state.db.conn().await?;
    let page = db::payments::list_payment_intents(&mut conn, &auth.owner, customer.as_ref(), &cursor).await?;
    Ok(json_response(StatusCode::OK, &list_body("payment_intents", &page)))
}
