//! `/v1/test_helpers/test_clocks`: create, list, retrieve, advance and delete test clocks. Test
//! mode only: with a live key every route answers 404.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::Auth;
use super::{idempotency, json_response, list_body, parse_body, read_body, wrap, Query, LIST_PARAMS};
use crate::db;
use crate::domain::ids::TestClockId;
use crate::domain::test_clock;
use crate::error::ApiError;
use crate::flows::test_clocks::{self, NewTestClock, FROZEN_TIME_PARAM};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/test_helpers/test_clocks")
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/test_helpers/test_clocks/{id}")
            .route(web::get().to(retrieve))
            .route(web::delete().to(delete))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/test_helpers/test_clocks/{id}/advance")
            .route(web::post().to(advance))
            .default_service(web::to(super::method_not_allowed)),
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTestClock {
    frozen_time: String,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceTestClock {
    frozen_time: String,
}

const RESOURCE: &str = "test clock";

/// Checked before anything else, so a live key learns nothing from its body or the id it sent.
fn test_mode(auth: &Auth, req: &HttpRequest) -> Result<(), ApiError> {
    if auth.mode().is_live() {
        return Err(ApiError::test_mode_only(req.path()));
    }
    Ok(())
}

fn parse_id(raw: &str) -> Result<TestClockId, ApiError> {
    TestClockId::parse(raw).ok_or_else(|| ApiError::not_found(RESOURCE, raw))
}

async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    test_mode(&auth, &req)?;
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let input: CreateTestClock = parse_body(&body, "test_clock", false)?;
        let new = NewTestClock {
            frozen_time: test_clock::frozen_time(&input.frozen_time, FROZEN_TIME_PARAM)?,
            name: input.name.as_deref().map(|n| test_clock::name(n, "test_clock.name")).transpose()?.flatten(),
        };
        let clock = test_clocks::create(&state.db, &auth.owner, new, state.clock.now()).await?;
        Ok((StatusCode::OK, wrap("test_clock", &clock)))
    })
    .await
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    test_mode(&auth, &req)?;
    let query = Query::parse(&req, &LIST_PARAMS)?;
    let cursor = query.cursor(TestClockId::PREFIX)?;
    let mut conn = state.db.conn().await?;
    let page = db::test_clocks::list(&mut conn, &auth.owner, &cursor).await?;
    Ok(json_response(StatusCode::OK, &list_body("test_clocks", &page)))
}

async fn retrieve(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    test_mode(&auth, &req)?;
    let id = parse_id(&path)?;
    let mut conn = state.db.conn().await?;
    let clock =
        db::test_clocks::get(&mut conn, &auth.owner, &id).await?.ok_or_else(|| ApiError::not_found(RESOURCE, &path))?;
    Ok(json_response(StatusCode::OK, &wrap("test_clock", &clock)))
}

async fn advance(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    test_mode(&auth, &req)?;
    let body = read_body(payload).await?;
    let id = parse_id(&path)?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let input: AdvanceTestClock = parse_body(&body, "test_clock", false)?;
        let to = test_clock::frozen_time(&input.frozen_time, FROZEN_TIME_PARAM)?;
        let clock = test_clocks::advance(&state, &auth.owner, &id, to).await?;
        Ok((StatusCode::OK, wrap("test_clock", &clock)))
    })
    .await
}

async fn delete(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    test_mode(&auth, &req)?;
    let id = parse_id(&path)?;
    let clock = test_clocks::delete(&state, &auth.owner, &id).await?;
    Ok(json_response(StatusCode::OK, &wrap("test_clock", &clock)))
}
