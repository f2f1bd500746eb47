//! `/v1/subscriptions`: retrieve the subscriptions started by checkout. Creating them by API, lists,
//! updates and cancellation come with the billing engine.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::auth::Auth;
use super::json_response;
use crate::db;
use crate::domain::ids::SubscriptionId;
use crate::error::ApiError;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/subscriptions/{id}")
            .route(web::get().to(retrieve))
            .default_service(web::to(super::method_not_allowed)),
    );
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = SubscriptionId::parse(&path).ok_or_else(|| ApiError::not_found("subscription", &path))?;
    let mut conn = state.db.conn().await?;
    let sub = db::subscriptions::get(&mut conn, &auth.owner, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("subscription", &path))?;
    // Seed 002 answers with the bare object.
    Ok(json_response(StatusCode::OK, &serde_json::to_value(&sub).map_err(ApiError::internal)?))
}
