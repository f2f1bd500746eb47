//! `Idempotency-Key` on every POST: the first response under a key is stored and replayed byte for
//! byte for 24 hours; the same key with another body is refused, and so is a key still running.

use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::auth::Auth;
use crate::db;
use crate::error::ApiError;
use crate::state::AppState;

pub const HEADER: &str = "Idempotency-Key";
pub const MAX_KEY_LEN: usize = 255;
pub const RETENTION_SECONDS: i64 = 24 * 3600;
/// A claim whose request never finished (its process died) stops blocking the key after this.
pub const ABANDONED_SECONDS: i64 = 60;

fn respond(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status).insert_header(("Cache-Control", "no-store")).content_type("application/json").body(body)
}

/// Runs `handler` at most once per idempotency key.
pub async fn run<F, Fut>(
    state: &AppState,
    auth: &Auth,
    req: &HttpRequest,
    body: &[u8],
    handler: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, Value), ApiError>>,
{
    let key = match req.headers().get(HEADER) {
        None => {
            let (status, value) = handler().await?;
            return Ok(respond(status, value.to_string()));
        }
        Some(raw) => raw
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
            .ok_or_else(|| {
                ApiError::invalid(HEADER, format!("{HEADER} must be 1 to {MAX_KEY_LEN} printable ASCII characters"))
            })?
            .to_string(),
    };
    let mut hasher = Sha256::new();
    hasher.update(req.method().as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(req.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    let request_hash = hex::encode(hasher.finalize());

    let now = state.clock.now();
    let existing = {
        let mut conn = state.db.conn().await?;
        let stale = db::idempotency::Stale {
            answered_before: now.plus_seconds(-RETENTION_SECONDS),
            unanswered_before: now.plus_seconds(-ABANDONED_SECONDS),
        };
        db::idempotency::claim(&mut conn, &auth.owner, &key, &request_hash, now, stale).await?
    };
    if let Some(record) = existing {
        if record.request_hash != request_hash {
            return Err(ApiError::idempotency(
                "idempotency_error",
                format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Use a new {HEADER} for a different request."),
            ));
        }
        return match (record.status_code, record.response_body) {
            (Some(status), Some(body)) => {
                let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
                let mut res = respond(status, body);
                res.headers_mut().insert(
                    actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
                    actix_web::http::header::HeaderValue::from_static("true"),
                );
                Ok(res)
            }
            _ => Err(ApiError::idempotency(
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still being processed. Retry after it finishes.",
            )),
        };
    }

    let result = handler().await;
    let mut conn = state.db.conn().await?;
    match result {
        Ok((status, value)) => {
            let body = value.to_string();
            db::idempotency::save_response(&mut conn, &auth.owner, &key, status.as_u16(), &body).await?;
            Ok(respond(status, body))
        }
        Err(e) if e.status.is_client_error() => {
            let body = e.body().to_string();
            db::idempotency::save_response(&mut conn, &auth.owner, &key, e.status.as_u16(), &body).await?;
            Err(e)
        }
        Err(e) => {
            db::idempotency::release(&mut conn, &auth.owner, &key).await?;
            Err(e)
        }
    }
}
