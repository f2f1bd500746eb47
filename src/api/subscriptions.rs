//! `/v1/subscriptions`: seed 002's create, and retrieve, list, update and cancel. Bodies and
//! answers are bare JSON as seed 002 shows them (a body wrapped in `{"subscription": ...}` is
//! accepted too).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Auth;
use super::{idempotency, json_response, nullable, parse_body, read_body, Query, LIST_PARAMS};
use crate::db;
use crate::domain::ids::{CustomerId, SubscriptionId};
use crate::domain::metadata::Metadata;
use crate::domain::subscription::SubscriptionStatus;
use crate::domain::subscription_request::{self, CreateSubscriptionRequest, ProrationBehavior, LOOKUP_KEY_MAX};
use crate::domain::{text, timestamp::Timestamp};
use crate::error::ApiError;
use crate::flows::subscriptions::{self, CancelRefund, SubscriptionPatch};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/subscriptions")
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/subscriptions/{id}")
            .route(web::get().to(retrieve))
            .route(web::patch().to(update))
            .route(web::post().to(update))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/subscriptions/{id}/cancel")
            .route(web::post().to(cancel))
            .default_service(web::to(super::method_not_allowed)),
    );
}

fn bare(sub: &crate::domain::subscription::Subscription) -> Result<Value, ApiError> {
    serde_json::to_value(sub).map_err(ApiError::internal)
}

async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let raw: CreateSubscriptionRequest = parse_body(&body, "subscription", true)?;
        let new = subscription_request::parse(raw)?;
        let sub = subscriptions::create(&state, &auth.owner, new).await?;
        Ok((StatusCode::OK, bare(&sub)?))
    })
    .await
}

fn parse_id(raw: &str) -> Result<SubscriptionId, ApiError> {
    SubscriptionId::parse(raw).ok_or_else(|| ApiError::not_found("subscription", raw))
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let mut conn = state.db.conn().await?;
    let sub = db::subscriptions::get(&mut conn, &auth.owner, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("subscription", &path))?;
    Ok(json_response(StatusCode::OK, &bare(&sub)?))
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let filters = ["customer_id", "external_customer_id", "subscription_status", "plan_id", "lookup_key"];
    let query = Query::parse(&req, &[&LIST_PARAMS[..], &filters[..]].concat())?;
    let cursor = query.cursor(SubscriptionId::PREFIX)?;
    let mut conn = state.db.conn().await?;
    let mut filter = db::subscriptions::SubscriptionFilter {
        customer_id: query.get("customer_id").map(str::to_string),
        status: query
            .get("subscription_status")
            .map(|s| SubscriptionStatus::parse(s, "subscription_status").map(|s| s.as_str().to_string()))
            .transpose()?,
        plan_id: query.get("plan_id").map(str::to_string),
        lookup_key: query.get("lookup_key").map(str::to_string),
    };
    if let Some(c) = &filter.customer_id {
        if CustomerId::parse(c).is_none() {
            return Err(ApiError::invalid("customer_id", "customer_id must be a customer id (fcus_...)"));
        }
    }
    if let Some(external) = query.get("external_customer_id") {
        let f =
            db::customers::CustomerFilter { email: None, external_id: Some(external.to_string()), test_clock: None };
        let page =
            db::customers::list(&mut conn, &auth.owner, &f, &db::Cursor { limit: 1, ..Default::default() }).await?;
        let Some(customer) = page.items.into_iter().next() else {
            return Ok(json_response(StatusCode::OK, &json!({ "subscriptions": [], "has_more": false })));
        };
        if filter.customer_id.as_ref().is_some_and(|c| c != customer.customer_id.as_str()) {
            return Ok(json_response(StatusCode::OK, &json!({ "subscriptions": [], "has_more": false })));
        }
        filter.customer_id = Some(customer.customer_id.to_string());
    }
    let page = db::subscriptions::list(&mut conn, &auth.owner, &filter, &cursor).await?;
    Ok(json_response(StatusCode::OK, &json!({ "subscriptions": page.items, "has_more": page.has_more })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default, deserialize_with = "nullable")]
    metadata: Option<Option<Value>>,
    #[serde(default, deserialize_with = "nullable")]
    lookup_key: Option<Option<String>>,
    trial_end: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    end_date: Option<Option<String>>,
    cancel_at_period_end: Option<bool>,
    status: Option<String>,
    /// The response's name for `status`, accepted too; not both (a serde alias would refuse both
    /// with a "duplicate field" naming no field).
    subscription_status: Option<String>,
    plan_id: Option<String>,
    proration_behavior: Option<String>,
}

fn date(raw: &str, param: &str) -> Result<Timestamp, ApiError> {
    Ok(subscription_request::instant(raw, param)?)
}

async fn update(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let id = parse_id(&path)?;
        let input: UpdateBody = parse_body(&body, "subscription", true)?;
        let (status, status_param) = match (input.status.as_deref(), input.subscription_status.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "subscription_status",
                    "status and subscription_status are the same field (subscription_status is its name in the response); give one",
                ))
            }
            (Some(s), None) => (Some(s), "status"),
            (None, s) => (s, "subscription_status"),
        };
        let activate = match status {
            None => false,
            Some("ACTIVE") => true,
            Some(other) => {
                return Err(ApiError::invalid(
                    status_param,
                    format!("`{other}` cannot be set; {status_param} can only be set to `ACTIVE` (to start a DRAFT subscription). Use /cancel to end one"),
                ))
            }
        };
        let patch = SubscriptionPatch {
            metadata: input.metadata.map(|m| Metadata::parse(&m.unwrap_or(Value::Null), "metadata")).transpose()?,
            lookup_key: input
                .lookup_key
                .map(|k| k.map(|k| text::optional_text(&k, "lookup_key", LOOKUP_KEY_MAX)).transpose().map(Option::flatten))
                .transpose()?,
            trial_end: input.trial_end.as_deref().map(|t| date(t, "trial_end")).transpose()?,
            end_date: input.end_date.map(|e| e.as_deref().map(|e| date(e, "end_date")).transpose()).transpose()?,
            cancel_at_period_end: input.cancel_at_period_end,
            activate,
            plan_id: input.plan_id,
            proration_behavior: input
                .proration_behavior
                .as_deref()
                .map(|p| ProrationBehavior::parse(p, "proration_behavior"))
                .transpose()?,
        };
        let sub = subscriptions::update(&state, &auth.owner, &id, patch).await?;
        Ok((StatusCode::OK, bare(&sub)?))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    cancel_at_period_end: Option<bool>,
    refund: Option<String>,
}

async fn cancel(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let id = parse_id(&path)?;
        let input: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
            CancelBody::default()
        } else {
            parse_body(&body, "subscription", true)?
        };
        let refund = match input.refund.as_deref() {
            None | Some("none") => CancelRefund::None,
            Some("prorated") => CancelRefund::Prorated,
            Some(other) => {
                return Err(ApiError::invalid(
                    "refund",
                    format!("`{other}` is not a valid refund; use one of `none`, `prorated`"),
                ))
            }
        };
        let sub = subscriptions::cancel(&state, &auth.owner, &id, input.cancel_at_period_end.unwrap_or(false), refund)
            .await?;
        Ok((StatusCode::OK, bare(&sub)?))
    })
    .await
}
