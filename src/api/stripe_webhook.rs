//! `POST /stripe/webhook`: events Stripe pushes to us. Outside `/v1` and its API keys: a request
//! is trusted only if its `Stripe-Signature` verifies under a configured `STRIPE_WEBHOOK_SECRET`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::read_body;
use crate::error::ApiError;
use crate::flows::processor_events;
use crate::gateway::stripe_webhook;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/stripe/webhook")
            .route(web::post().to(receive))
            .default_service(web::to(super::method_not_allowed)),
    );
}

async fn receive(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let secrets = &state.settings.stripe_webhook_secrets;
    if secrets.is_empty() {
        return Err(ApiError::not_found_message(
            "Stripe webhooks are not enabled on this server: set STRIPE_WEBHOOK_SECRET to the endpoint's signing secret",
        ));
    }
    let body = read_body(payload).await?;
    let header = req.headers().get("stripe-signature").and_then(|h| h.to_str().ok());
    if let Err(e) = stripe_webhook::verify(header, &body, secrets, state.clock.now().unix_seconds()) {
        return Err(
            ApiError::bad_request("signature_verification_failed", e.to_string()).with_param("Stripe-Signature")
        );
    }
    let (event, update) = stripe_webhook::parse(&body).map_err(|e| ApiError::bad_request("invalid_event", e))?;
    // Stripe retries anything but a 2xx: an unknown outcome (our database or Stripe unreachable)
    // answers 5xx so the event comes again, and only an applied event is remembered.
    processor_events::receive(&state, &event, update).await?;
    Ok(HttpResponse::Ok().content_type("application/json").body(r#"{"received":true}"#))
}
