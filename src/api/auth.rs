//! `Authorization: Bearer <secret key>`: which merchant and mode a request acts for.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};
use subtle::ConstantTimeEq;

use crate::db;
use crate::domain::ids::{ApiKeyId, MerchantId};
use crate::domain::{Mode, Owner};
use crate::error::ApiError;
use crate::flows::keys;
use crate::state::AppState;

#[derive(Clone, Debug)]
pub struct Auth {
    pub owner: Owner,
    pub key_id: ApiKeyId,
}

impl Auth {
    pub fn mode(&self) -> Mode {
        self.owner.mode
    }
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Auth, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let header = req.headers().get(actix_web::http::header::AUTHORIZATION).map(|h| h.to_str().map(str::to_string));
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            let secret = match header {
                None => {
                    return Err(ApiError::unauthenticated(
                        "No API key provided. Send it as `Authorization: Bearer fsk_test_...`.",
                    ))
                }
                Some(Err(_)) => {
                    return Err(ApiError::unauthenticated("The Authorization header is not readable text."))
                }
                Some(Ok(value)) => match value.split_once(' ') {
                    Some((scheme, secret)) if scheme.eq_ignore_ascii_case("bearer") => secret.trim().to_string(),
                    _ => {
                        return Err(ApiError::unauthenticated(
                            "Use `Authorization: Bearer <secret key>` to authenticate.",
                        ))
                    }
                },
            };
            let Some(claimed_mode) = keys::mode_of_secret(&secret) else {
                return Err(ApiError::unauthenticated("Invalid API key: keys start with fsk_test_ or fsk_."));
            };
            let hash = keys::hash_secret(&secret);
            let mut conn = state.db.conn().await?;
            let key = db::api_keys::find_active_by_hash(&mut conn, &hash)
                .await?
                .filter(|k| bool::from(k.secret_hash.as_bytes().ct_eq(hash.as_bytes())))
                .ok_or_else(|| ApiError::unauthenticated("Invalid API key, or the key was revoked."))?;
            let mode = Mode::from_flag(key.livemode);
            if mode != claimed_mode {
                return Err(ApiError::unauthenticated("Invalid API key."));
            }
            if mode == Mode::Live && state.gateways.for_mode(Mode::Live).is_none() {
                return Err(ApiError::unauthenticated(
                    "Live API keys work only when the server has a live Stripe key: set STRIPE_SECRET_KEY=sk_live_... \
                     and STRIPE_PUBLISHABLE_KEY=pk_live_.... Use a test key (fsk_test_...) until then.",
                ));
            }
            Ok(Auth {
                owner: Owner { merchant_id: MerchantId::from_trusted(key.merchant_id), mode },
                key_id: ApiKeyId::from_trusted(key.id),
            })
        })
    }
}
