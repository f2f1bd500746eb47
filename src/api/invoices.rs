//! `/v1/invoices`: retrieve an invoice (lists, pay and void come with the billing engine).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::auth::Auth;
use super::{json_response, wrap};
use crate::db;
use crate::domain::ids::InvoiceId;
use crate::error::ApiError;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/invoices/{id}")
            .route(web::get().to(retrieve))
            .default_service(web::to(super::method_not_allowed)),
    );
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = InvoiceId::parse(&path).ok_or_else(|| ApiError::not_found("invoice", &path))?;
    let mut conn = state.db.conn().await?;
    let invoice = db::subscriptions::get_invoice(&mut conn, &auth.owner, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("invoice", &path))?;
    Ok(json_response(StatusCode::OK, &wrap("invoice", &invoice)))
}
