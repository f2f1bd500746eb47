//! `/v1/prices`: create, retrieve, list, update (description, active, metadata only).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Auth;
use super::{idempotency, json_response, list_body, nullable, parse_body, read_body, wrap, Query, LIST_PARAMS};
use crate::db;
use crate::domain::ids::{PriceId, ProductId};
use crate::domain::metadata::Metadata;
use crate::domain::money::Currency;
use crate::domain::price::{self, Interval, Price, PriceType, Recurring};
use crate::domain::product::Eligibility;
use crate::domain::{text, FieldError};
use crate::error::ApiError;
use crate::flows::catalog;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/prices")
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/prices/{id}")
            .route(web::get().to(retrieve))
            .route(web::post().to(update))
            .route(web::patch().to(update))
            .default_service(web::to(super::method_not_allowed)),
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurringInput {
    pub interval: String,
    pub interval_count: Option<i64>,
    pub trial_period_days: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePrice {
    product: String,
    description: Option<String>,
    unit_amount: i64,
    currency: Option<String>,
    recurring: Option<RecurringInput>,
    active: Option<bool>,
    #[serde(default)]
    metadata: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdatePrice {
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    active: Option<bool>,
    metadata: Option<Value>,
}

pub fn currency(raw: &str, param: &str) -> Result<Currency, FieldError> {
    Currency::parse(raw).ok_or_else(|| {
        FieldError::new(
            param,
            format!("`{raw}` is not a supported currency; use a lower-case ISO 4217 code such as usd"),
        )
    })
}

pub fn recurring(input: &RecurringInput, param: &str) -> Result<Recurring, FieldError> {
    Ok(Recurring {
        interval: Interval::parse(&input.interval, &format!("{param}.interval"))?,
        interval_count: match input.interval_count {
            Some(c) => price::interval_count(c, &format!("{param}.interval_count"))?,
            None => 1,
        },
        trial_period_days: input
            .trial_period_days
            .map(|d| price::trial_period_days(d, &format!("{param}.trial_period_days")))
            .transpose()?,
    })
}

fn description(raw: &str) -> Result<Option<String>, FieldError> {
    text::optional_text(raw, "price.description", 500)
}

async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let input: CreatePrice = parse_body(&body, "price", false)?;
        let product = ProductId::parse(&input.product)
            .ok_or_else(|| ApiError::invalid("price.product", format!("No such product: '{}'", input.product)))?;
        let recurring = input.recurring.as_ref().map(|r| recurring(r, "price.recurring")).transpose()?;
        let now = state.clock.now();
        let mut price = Price {
            price_id: PriceId::generate(),
            description: input.description.as_deref().map(description).transpose()?.flatten(),
            unit_amount: price::unit_amount(input.unit_amount, "price.unit_amount")?,
            price: input.unit_amount,
            currency: match &input.currency {
                Some(c) => currency(c, "price.currency")?,
                None => Currency::USD,
            },
            price_type: if recurring.is_some() { PriceType::Recurring } else { PriceType::OneTime },
            recurring,
            active: input.active.unwrap_or(true),
            product,
            created_at: now,
            metadata: Metadata::parse(&input.metadata, "price.metadata")?,
            test_mode: auth.mode().is_test(),
            hsa_fsa_eligibility: Eligibility::NotEligible,
        };
        catalog::create_price(&state.db, &auth.owner, &mut price, now).await?;
        Ok((StatusCode::OK, wrap("price", &price)))
    })
    .await
}

fn parse_id(raw: &str) -> Result<PriceId, ApiError> {
    PriceId::parse(raw).ok_or_else(|| ApiError::not_found("price", raw))
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let mut conn = state.db.conn().await?;
    let price =
        db::prices::get(&mut conn, &auth.owner, &id).await?.ok_or_else(|| ApiError::not_found("price", &path))?;
    Ok(json_response(StatusCode::OK, &wrap("price", &price)))
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &[&LIST_PARAMS[..], &["product", "active", "type"]].concat())?;
    let cursor = query.cursor(PriceId::PREFIX)?;
    let filter = db::prices::PriceFilter {
        product: query
            .get("product")
            .map(|p| {
                ProductId::parse(p)
                    .ok_or_else(|| ApiError::invalid("product", "product must be a product id (fprod_...)"))
            })
            .transpose()?,
        active: query.bool("active")?,
        price_type: query.get("type").map(|t| PriceType::parse(t, "type")).transpose()?,
    };
    let mut conn = state.db.conn().await?;
    let page = db::prices::list(&mut conn, &auth.owner, &filter, &cursor).await?;
    Ok(json_response(StatusCode::OK, &list_body("prices", &page)))
}

async fn update(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    let id = parse_id(&path)?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let input: UpdatePrice = parse_body(&body, "price", false)?;
        let now = state.clock.now();
        let mut conn = state.db.conn().await?;
        let mut price =
            db::prices::get(&mut conn, &auth.owner, &id).await?.ok_or_else(|| ApiError::not_found("price", &path))?;
        drop(conn);
        if let Some(d) = &input.description {
            price.description = d.as_deref().map(description).transpose()?.flatten();
        }
        if let Some(a) = input.active {
            price.active = a;
        }
        if let Some(m) = &input.metadata {
            price.metadata = Metadata::parse(m, "price.metadata")?;
        }
        catalog::update_price(&state.db, &auth.owner, &price, now).await?;
        Ok((StatusCode::OK, wrap("price", &price)))
    })
    .await
}
