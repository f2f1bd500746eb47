//! `/v1/billing_settings`: the merchant's billing settings for the key's mode (what dunning does
//! after its last failed attempt).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::Auth;
use super::{idempotency, json_response, parse_body, read_body, wrap};
use crate::domain::billing_settings;
use crate::error::ApiError;
use crate::flows::billing_settings as flow;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/billing_settings")
            .route(web::get().to(retrieve))
            .route(web::post().to(update))
            .default_service(web::to(super::method_not_allowed)),
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBillingSettings {
    after_final_failure: Option<String>,
}

async fn retrieve(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    let settings = flow::get(&state.db, &auth.owner).await?;
    Ok(json_response(StatusCode::OK, &wrap("billing_settings", &settings)))
}

async fn update(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let input: UpdateBillingSettings = parse_body(&body, "billing_settings", false)?;
        let after = input.after_final_failure.as_deref().map(billing_settings::after_final_failure).transpose()?;
        let settings = flow::update(&state.db, &auth.owner, after, state.clock.now()).await?;
        Ok((StatusCode::OK, wrap("billing_settings", &settings)))
    })
    .await
}
