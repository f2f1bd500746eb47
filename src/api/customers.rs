//! `/v1/customers`: create, retrieve, list, update, and the saved cards of a customer.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Auth;
use super::{idempotency, json_response, list_body, nullable, parse_body, read_body, wrap, Query, LIST_PARAMS};
use crate::db;
use crate::domain::customer::{self, Address, Customer};
use crate::domain::ids::{CustomerId, TestClockId};
use crate::domain::metadata::Metadata;
use crate::domain::{text, FieldError, Mode};
use crate::error::ApiError;
use crate::flows::catalog;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/customers")
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/customers/{id}")
            .route(web::get().to(retrieve))
            .route(web::patch().to(update))
            .route(web::post().to(update))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/customers/{id}/payment_methods")
            .route(web::get().to(payment_methods))
            .default_service(web::to(super::method_not_allowed)),
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressInput {
    line1: Option<String>,
    line2: Option<String>,
    city: Option<String>,
    state: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
}

impl AddressInput {
    fn parse(self, param: &str) -> Result<Address, FieldError> {
        Address {
            line1: self.line1,
            line2: self.line2,
            city: self.city,
            state: self.state,
            postal_code: self.postal_code,
            country: self.country,
        }
        .checked(param)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerInput {
    #[serde(default, deserialize_with = "nullable")]
    external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    last_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    shipping: Option<Option<AddressInput>>,
    metadata: Option<Value>,
    /// Set once, at creation; `apply` leaves it to the caller.
    #[serde(default, deserialize_with = "nullable")]
    test_clock: Option<Option<String>>,
}

impl CustomerInput {
    /// Applies the given fields to `c`; absent fields are left alone, null clears.
    fn apply(self, c: &mut Customer) -> Result<(), FieldError> {
        fn set<T>(
            slot: &mut Option<T>,
            value: Option<Option<String>>,
            f: impl Fn(&str) -> Result<Option<T>, FieldError>,
        ) -> Result<(), FieldError> {
            if let Some(v) = value {
                *slot = match v {
                    Some(v) => f(&v)?,
                    None => None,
                };
            }
            Ok(())
        }
        set(&mut c.external_id, self.external_id, |v| {
            text::optional_text(v, "customer.external_id", customer::EXTERNAL_ID_MAX)
        })?;
        set(&mut c.email, self.email, |v| {
            if v.trim().is_empty() {
                Ok(None)
            } else {
                text::email(v, "customer.email").map(Some)
            }
        })?;
        set(&mut c.first_name, self.first_name, |v| text::optional_text(v, "customer.first_name", customer::NAME_MAX))?;
        set(&mut c.last_name, self.last_name, |v| text::optional_text(v, "customer.last_name", customer::NAME_MAX))?;
        set(&mut c.phone, self.phone, |v| {
            if v.trim().is_empty() {
                Ok(None)
            } else {
                text::phone(v, "customer.phone").map(Some)
            }
        })?;
        if let Some(s) = self.shipping {
            c.shipping = s.map(|a| a.parse("customer.shipping")).transpose()?;
        }
        if let Some(m) = self.metadata {
            c.metadata = Metadata::parse(&m, "customer.metadata")?;
        }
        Ok(())
    }
}

const TEST_CLOCK_PARAM: &str = "customer.test_clock";

/// The clock a new customer lives on: an id in test mode (whether it exists is checked with the
/// write), nothing in live mode.
fn test_clock(raw: &str, mode: Mode) -> Result<TestClockId, FieldError> {
    if mode.is_live() {
        return Err(FieldError::new(
            TEST_CLOCK_PARAM,
            "test clocks exist only in test mode: leave customer.test_clock out with a live key",
        ));
    }
    TestClockId::parse(raw.trim())
        .ok_or_else(|| FieldError::new(TEST_CLOCK_PARAM, format!("No such test clock: '{raw}'")))
}

fn parse_id(raw: &str) -> Result<CustomerId, ApiError> {
    CustomerId::parse(raw).ok_or_else(|| ApiError::not_found("customer", raw))
}

async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let mut input: CustomerInput = parse_body(&body, "customer", false)?;
        let clock = input.test_clock.take().flatten().map(|raw| test_clock(&raw, auth.mode())).transpose()?;
        let now = state.clock.now();
        let mut customer = Customer {
            customer_id: CustomerId::generate(),
            external_id: None,
            email: None,
            first_name: None,
            last_name: None,
            phone: None,
            shipping: None,
            metadata: None,
            created_at: now,
            test_mode: auth.mode().is_test(),
            test_clock: clock.map(TestClockId::into_string),
        };
        input.apply(&mut customer)?;
        catalog::create_customer(&state.db, &auth.owner, &customer, now).await?;
        Ok((StatusCode::OK, wrap("customer", &customer)))
    })
    .await
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let mut conn = state.db.conn().await?;
    let customer =
        db::customers::get(&mut conn, &auth.owner, &id).await?.ok_or_else(|| ApiError::not_found("customer", &path))?;
    Ok(json_response(StatusCode::OK, &wrap("customer", &customer)))
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &[&LIST_PARAMS[..], &["email", "external_id", "test_clock"]].concat())?;
    let cursor = query.cursor(CustomerId::PREFIX)?;
    let filter = db::customers::CustomerFilter {
        email: query.get("email").map(str::to_string),
        external_id: query.get("external_id").map(str::to_string),
        test_clock: query
            .get("test_clock")
            .map(|c| {
                TestClockId::parse(c)
                    .ok_or_else(|| ApiError::invalid("test_clock", "test_clock must be a test clock id (fclock_...)"))
            })
            .transpose()?,
    };
    let mut conn = state.db.conn().await?;
    let page = db::customers::list(&mut conn, &auth.owner, &filter, &cursor).await?;
    Ok(json_response(StatusCode::OK, &list_body("customers", &page)))
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
        let mut input: CustomerInput = parse_body(&body, "customer", false)?;
        let clock = input.test_clock.take();
        let now = state.clock.now();
        let mut conn = state.db.conn().await?;
        let mut customer = db::customers::get(&mut conn, &auth.owner, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("customer", &path))?;
        drop(conn);
        // Sending the clock it already has is harmless (a client echoing the object back).
        if let Some(given) = clock {
            let given = given.map(|g| TestClockId::parse(g.trim()).map_or(g, TestClockId::into_string));
            if given != customer.test_clock {
                return Err(ApiError::invalid(
                    TEST_CLOCK_PARAM,
                    "a customer stays on the test clock it was created on: customer.test_clock cannot be changed",
                ));
            }
        }
        input.apply(&mut customer)?;
        catalog::update_customer(&state.db, &auth.owner, &customer, now).await?;
        Ok((StatusCode::OK, wrap("customer", &customer)))
    })
    .await
}

async fn payment_methods(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let mut conn = state.db.conn().await?;
    if db::customers::get(&mut conn, &auth.owner, &id).await?.is_none() {
        return Err(ApiError::not_found("customer", &path));
    }
    let methods = db::payments::payment_methods_of(&mut conn, &auth.owner, &id).await?;
    Ok(json_response(StatusCode::OK, &json!({ "payment_methods": methods, "has_more": false })))
}
