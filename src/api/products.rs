//! `/v1/products`: create, retrieve, list, update.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Auth;
use super::{idempotency, json_response, list_body, nullable, parse_body, read_body, wrap, Query, LIST_PARAMS};
use crate::db;
use crate::domain::ids::ProductId;
use crate::domain::metadata::Metadata;
use crate::domain::product::{self, Eligibility, Product, VisitType};
use crate::domain::text;
use crate::error::ApiError;
use crate::flows::catalog;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/products")
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/products/{id}")
            .route(web::get().to(retrieve))
            .route(web::patch().to(update))
            .route(web::post().to(update))
            .default_service(web::to(super::method_not_allowed)),
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProduct {
    name: String,
    description: Option<String>,
    visit_type: Option<String>,
    active: Option<bool>,
    upc_code: Option<String>,
    gtin: Option<String>,
    hsa_fsa_eligibility: Option<String>,
    url: Option<String>,
    #[serde(default)]
    metadata: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateProduct {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    visit_type: Option<Option<String>>,
    active: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    upc_code: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    gtin: Option<Option<String>>,
    hsa_fsa_eligibility: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    url: Option<Option<String>>,
    metadata: Option<Value>,
}

fn parse_id(raw: &str) -> Result<ProductId, ApiError> {
    ProductId::parse(raw).ok_or_else(|| ApiError::not_found("product", raw))
}

fn opt<T>(
    value: Option<&str>,
    f: impl Fn(&str) -> Result<T, crate::domain::FieldError>,
) -> Result<Option<T>, ApiError> {
    value.map(f).transpose().map_err(ApiError::from)
}

fn visit_type(raw: &str) -> Result<VisitType, crate::domain::FieldError> {
    VisitType::parse(raw, "product.visit_type")
}

fn eligibility(raw: &str) -> Result<Eligibility, crate::domain::FieldError> {
    Eligibility::parse(raw, "product.hsa_fsa_eligibility")
}

async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let input: CreateProduct = parse_body(&body, "product", false)?;
        let now = state.clock.now();
        let eligibility = opt(input.hsa_fsa_eligibility.as_deref(), eligibility)?.unwrap_or(Eligibility::NotEligible);
        let visit_type = opt(input.visit_type.as_deref(), visit_type)?;
        product::check_visit_type(eligibility, visit_type, "product.visit_type")?;
        let product = Product {
            product_id: ProductId::generate(),
            name: text::required_text(&input.name, "product.name", product::NAME_MAX)?,
            description: opt(input.description.as_deref(), |d| {
                text::optional_text(d, "product.description", product::DESCRIPTION_MAX)
            })?
            .flatten(),
            created_at: now,
            visit_type,
            active: input.active.unwrap_or(true),
            upc_code: opt(input.upc_code.as_deref(), |c| product::upc_code(c, "product.upc_code"))?,
            gtin: opt(input.gtin.as_deref(), |c| product::gtin(c, "product.gtin"))?,
            hsa_fsa_eligibility: eligibility,
            url: opt(input.url.as_deref(), |u| text::web_url(u, "product.url"))?.flatten(),
            metadata: Metadata::parse(&input.metadata, "product.metadata")?,
            test_mode: auth.mode().is_test(),
            updated_at: now,
        };
        catalog::create_product(&state.db, &auth.owner, &product, now).await?;
        Ok((StatusCode::OK, wrap("product", &product)))
    })
    .await
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let mut conn = state.db.conn().await?;
    let product =
        db::products::get(&mut conn, &auth.owner, &id).await?.ok_or_else(|| ApiError::not_found("product", &path))?;
    Ok(json_response(StatusCode::OK, &wrap("product", &product)))
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &[&LIST_PARAMS[..], &["active"]].concat())?;
    let cursor = query.cursor(ProductId::PREFIX)?;
    let mut conn = state.db.conn().await?;
    let page = db::products::list(&mut conn, &auth.owner, query.bool("active")?, &cursor).await?;
    Ok(json_response(StatusCode::OK, &list_body("products", &page)))
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
    let apply = || async {
        let input: UpdateProduct = parse_body(&body, "product", false)?;
        let now = state.clock.now();
        let mut conn = state.db.conn().await?;
        let mut p = db::products::get(&mut conn, &auth.owner, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("product", &path))?;
        drop(conn);
        if let Some(name) = &input.name {
            p.name = text::required_text(name, "product.name", product::NAME_MAX)?;
        }
        if let Some(d) = &input.description {
            p.description = match d {
                Some(d) => text::optional_text(d, "product.description", product::DESCRIPTION_MAX)?,
                None => None,
            };
        }
        if let Some(v) = &input.visit_type {
            p.visit_type = opt(v.as_deref(), visit_type)?;
        }
        if let Some(a) = input.active {
            p.active = a;
        }
        if let Some(c) = &input.upc_code {
            p.upc_code = opt(c.as_deref(), |c| product::upc_code(c, "product.upc_code"))?;
        }
        if let Some(c) = &input.gtin {
            p.gtin = opt(c.as_deref(), |c| product::gtin(c, "product.gtin"))?;
        }
        if let Some(e) = &input.hsa_fsa_eligibility {
            p.hsa_fsa_eligibility = eligibility(e)?;
        }
        if let Some(u) = &input.url {
            p.url = opt(u.as_deref(), |u| text::web_url(u, "product.url"))?.flatten();
        }
        if let Some(m) = &input.metadata {
            p.metadata = Metadata::parse(m, "product.metadata")?;
        }
        product::check_visit_type(p.hsa_fsa_eligibility, p.visit_type, "product.visit_type")?;
        p.updated_at = now;
        catalog::update_product(&state.db, &auth.owner, &p, now).await?;
        Ok((StatusCode::OK, wrap("product", &p)))
    };
    idempotency::run(&state, &auth, &req, &body, apply).await
}
