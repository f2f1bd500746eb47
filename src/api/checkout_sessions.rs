//! `/v1/checkout/sessions`: create, retrieve, list, line items, expire.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Auth;
use super::prices::{currency, recurring, RecurringInput};
use super::{idempotency, json_response, list_body, parse_body, read_body, wrap, Query, LIST_PARAMS};
use crate::db;
use crate::domain::checkout_session::{
    self as cs, CaptureMethod, Defaults, SessionMode, SessionStatus, SubscriptionData,
};
use crate::domain::ids::{CheckoutSessionId, CustomerId, PaymentIntentId, PriceId, ProductId};
use crate::domain::metadata::Metadata;
use crate::domain::price;
use crate::domain::product::{self, Eligibility, VisitType};
use crate::domain::subscription::BillingCycle;
use crate::domain::timestamp::Timestamp;
use crate::domain::{text, FieldError, Mode};
use crate::error::ApiError;
use crate::flows::checkout::{self, NewLineItem, NewSession, ProductRef};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/checkout/sessions")
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/checkout/sessions/{id}")
            .route(web::get().to(retrieve))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/checkout/sessions/{id}/line_items")
            .route(web::get().to(line_items))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/checkout/sessions/{id}/expire")
            .route(web::post().to(expire))
            .default_service(web::to(super::method_not_allowed)),
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductDataInput {
    name: String,
    description: Option<String>,
    hsa_fsa_eligibility: Option<String>,
    visit_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceDataInput {
    product: Option<String>,
    product_data: Option<ProductDataInput>,
    unit_amount: i64,
    currency: Option<String>,
    recurring: Option<RecurringInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineItemInput {
    price: Option<String>,
    price_data: Option<PriceDataInput>,
    quantity: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DefaultsInput {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionDataInput {
    trial_period_days: Option<i64>,
    trial_end: Option<i64>,
    #[serde(default)]
    metadata: Value,
    billing_cycle: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    mode: String,
    line_items: Option<Vec<LineItemInput>>,
    success_url: String,
    cancel_url: String,
    customer: Option<String>,
    customer_email: Option<String>,
    defaults: Option<DefaultsInput>,
    client_reference_id: Option<String>,
    #[serde(default)]
    metadata: Value,
    expires_at: Option<i64>,
    allow_promotion_codes: Option<bool>,
    shipping_address_collection: Option<bool>,
    capture_method: Option<String>,
    setup_future_use: Option<String>,
    subscription_data: Option<SubscriptionDataInput>,
    currency: Option<String>,
}

const P: &str = "checkout_session";

fn line_item(input: LineItemInput, i: usize, mode: SessionMode) -> Result<NewLineItem, FieldError> {
    let param = format!("{P}.line_items[{i}]");
    let quantity = match input.quantity {
        None => 1,
        Some(q) if (1..=cs::MAX_QUANTITY).contains(&q) => q,
        Some(_) => {
            return Err(FieldError::new(
                format!("{param}.quantity"),
                format!("quantity must be an integer from 1 to {}", cs::MAX_QUANTITY),
            ))
        }
    };
    match (input.price, input.price_data) {
        (Some(price), None) => {
            let price = PriceId::parse(&price)
                .ok_or_else(|| FieldError::new(format!("{param}.price"), format!("No such price: '{price}'")))?;
            Ok(NewLineItem::Price { price, quantity })
        }
        (None, Some(data)) => {
            let dp = format!("{param}.price_data");
            let product = match (data.product, data.product_data) {
                (Some(id), None) => ProductRef::Existing(
                    ProductId::parse(&id)
                        .ok_or_else(|| FieldError::new(format!("{dp}.product"), format!("No such product: '{id}'")))?,
                ),
                (None, Some(pd)) => {
                    let pp = format!("{dp}.product_data");
                    let eligibility = pd
                        .hsa_fsa_eligibility
                        .as_deref()
                        .map(|e| Eligibility::parse(e, &format!("{pp}.hsa_fsa_eligibility")))
                        .transpose()?
                        .unwrap_or(Eligibility::NotEligible);
                    let visit_type = pd
                        .visit_type
                        .as_deref()
                        .map(|v| VisitType::parse(v, &format!("{pp}.visit_type")))
                        .transpose()?;
                    product::check_visit_type(eligibility, visit_type, &format!("{pp}.visit_type"))?;
                    ProductRef::New {
                        name: text::required_text(&pd.name, &format!("{pp}.name"), product::NAME_MAX)?,
                        description: pd
                            .description
                            .as_deref()
                            .map(|d| text::optional_text(d, &format!("{pp}.description"), product::DESCRIPTION_MAX))
                            .transpose()?
                            .flatten(),
                        eligibility,
                        visit_type,
                    }
                }
                _ => {
                    return Err(FieldError::new(
                        dp,
                        "price_data needs exactly one of `product` (an id) or `product_data`",
                    ))
                }
            };
            let recurring = data.recurring.as_ref().map(|r| recurring(r, &format!("{dp}.recurring"))).transpose()?;
            if recurring.is_some() && mode == SessionMode::Payment {
                return Err(FieldError::new(
                    format!("{dp}.recurring"),
                    "mode `payment` accepts only one-time prices; use mode `subscription` for recurring prices",
                ));
            }
            Ok(NewLineItem::Inline {
                product,
                unit_amount: price::unit_amount(data.unit_amount, &format!("{dp}.unit_amount"))?,
                currency: match &data.currency {
                    Some(c) => currency(c, &format!("{dp}.currency"))?,
                    None => crate::domain::money::Currency::USD,
                },
                recurring: recurring.map(|r| (r.interval, r.interval_count)),
                quantity,
            })
        }
        (Some(_), Some(_)) => Err(FieldError::new(param, "give either `price` or `price_data`, not both")),
        (None, None) => {
            Err(FieldError::new(format!("{param}.price"), "each line item needs a `price` (or `price_data`)"))
        }
    }
}

fn parse_create(input: CreateSession, mode_of_key: Mode, now: Timestamp) -> Result<NewSession, FieldError> {
    let mode = SessionMode::parse(&input.mode, &format!("{P}.mode"))?;
    let items_in = input.line_items.unwrap_or_default();
    if mode == SessionMode::Setup && !items_in.is_empty() {
        return Err(FieldError::new(format!("{P}.line_items"), "mode `setup` takes no line items"));
    }
    if mode != SessionMode::Setup && items_in.is_empty() {
        return Err(FieldError::new(format!("{P}.line_items"), format!("mode `{mode}` needs at least one line item")));
    }
    if items_in.len() > cs::MAX_LINE_ITEMS {
        return Err(FieldError::new(format!("{P}.line_items"), format!("at most {} line items", cs::MAX_LINE_ITEMS)));
    }
    let line_items =
        items_in.into_iter().enumerate().map(|(i, item)| line_item(item, i, mode)).collect::<Result<Vec<_>, _>>()?;

    let customer = input
        .customer
        .as_deref()
        .map(|c| {
            CustomerId::parse(c)
                .ok_or_else(|| FieldError::new(format!("{P}.customer"), format!("No such customer: '{c}'")))
        })
        .transpose()?;
    let customer_email = input
        .customer_email
        .as_deref()
        .filter(|e| !e.trim().is_empty())
        .map(|e| text::email(e, &format!("{P}.customer_email")))
        .transpose()?;
    if customer.is_some() && customer_email.is_some() {
        return Err(FieldError::new(
            format!("{P}.customer_email"),
            "give either `customer` or `customer_email`, not both (the customer's email is used)",
        ));
    }
    let d = input.defaults.unwrap_or_default();
    let dp = format!("{P}.defaults");
    let nonempty = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let defaults = Defaults {
        email: nonempty(&d.email).map(|e| text::email(&e, &format!("{dp}.email"))).transpose()?,
        first_name: nonempty(&d.first_name)
            .map(|v| text::optional_text(&v, &format!("{dp}.first_name"), 100))
            .transpose()?
            .flatten(),
        last_name: nonempty(&d.last_name)
            .map(|v| text::optional_text(&v, &format!("{dp}.last_name"), 100))
            .transpose()?
            .flatten(),
        phone: nonempty(&d.phone).map(|p| text::phone(&p, &format!("{dp}.phone"))).transpose()?,
    };
    let capture_method = input
        .capture_method
        .as_deref()
        .map(|c| CaptureMethod::parse(c, &format!("{P}.capture_method")))
        .transpose()?
        .unwrap_or(CaptureMethod::Automatic);
    if capture_method == CaptureMethod::Manual && mode != SessionMode::Payment {
        return Err(FieldError::new(
            format!("{P}.capture_method"),
            "capture_method `manual` is only for mode `payment`",
        ));
    }
    let setup_future_use = match input.setup_future_use.as_deref() {
        None => None,
        Some("off_session") if mode == SessionMode::Payment => Some("off_session".to_string()),
        Some("off_session") => {
            return Err(FieldError::new(
                format!("{P}.setup_future_use"),
                "setup_future_use is only for mode `payment` (subscription and setup modes always save the card)",
            ))
        }
        Some(other) => {
            return Err(FieldError::new(
                format!("{P}.setup_future_use"),
                format!("`{other}` is not a valid setup_future_use; use `off_session`"),
            ))
        }
    };
    let subscription_data = match input.subscription_data {
        None => None,
        Some(_) if mode != SessionMode::Subscription => {
            return Err(FieldError::new(
                format!("{P}.subscription_data"),
                "subscription_data is only for mode `subscription`",
            ))
        }
        Some(sd) => {
            let sp = format!("{P}.subscription_data");
            let trial_period_days = sd
                .trial_period_days
                .map(|d| price::trial_period_days(d, &format!("{sp}.trial_period_days")))
                .transpose()?;
            if let Some(end) = sd.trial_end {
                let seconds = end.checked_sub(now.unix_seconds());
                if !seconds.is_some_and(|s| (3600..=730 * 86_400).contains(&s)) {
                    return Err(FieldError::new(
                        format!("{sp}.trial_end"),
                        "trial_end must be Unix seconds at least one hour and at most 730 days from now",
                    ));
                }
                if trial_period_days.is_some() {
                    return Err(FieldError::new(
                        format!("{sp}.trial_end"),
                        "give either trial_end or trial_period_days, not both",
                    ));
                }
            }
            Metadata::parse(&sd.metadata, &format!("{sp}.metadata"))?;
            if let Some(cycle) = sd.billing_cycle.as_deref() {
                if BillingCycle::parse(cycle, &format!("{sp}.billing_cycle"))? != BillingCycle::Anniversary {
                    return Err(FieldError::new(
                        format!("{sp}.billing_cycle"),
                        "checkout subscriptions bill on the ANNIVERSARY cycle; CALENDAR billing is not available for checkout yet",
                    ));
                }
            }
            Some(SubscriptionData {
                trial_period_days,
                trial_end: sd.trial_end,
                metadata: (!sd.metadata.is_null()).then_some(sd.metadata),
                billing_cycle: sd.billing_cycle,
            })
        }
    };
    let currency = input.currency.as_deref().map(|c| currency(c, &format!("{P}.currency"))).transpose()?;
    Ok(NewSession {
        mode,
        line_items,
        success_url: text::redirect_url(&input.success_url, &format!("{P}.success_url"), mode_of_key)?,
        cancel_url: text::redirect_url(&input.cancel_url, &format!("{P}.cancel_url"), mode_of_key)?,
        customer,
        customer_email,
        defaults,
        client_reference_id: input
            .client_reference_id
            .as_deref()
            .map(|c| text::optional_text(c, &format!("{P}.client_reference_id"), 200))
            .transpose()?
            .flatten(),
        metadata: Metadata::parse(&input.metadata, &format!("{P}.metadata"))?,
        expires_at: input.expires_at.map(Timestamp::from_unix_seconds),
        allow_promotion_codes: input.allow_promotion_codes.unwrap_or(false),
        shipping_address_collection: input.shipping_address_collection.unwrap_or(false),
        capture_method,
        setup_future_use,
        subscription_data,
        currency,
    })
}

async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    idempotency::run(&state, &auth, &req, &body, || async {
        let input: CreateSession = parse_body(&body, P, false)?;
        let new = parse_create(input, auth.mode(), state.clock.now())?;
        let session = checkout::create(&state, &auth.owner, new).await?;
        Ok((StatusCode::OK, wrap(P, &session)))
    })
    .await
}

fn parse_id(raw: &str) -> Result<CheckoutSessionId, ApiError> {
    CheckoutSessionId::parse(raw).ok_or_else(|| ApiError::not_found("checkout session", raw))
}

async fn retrieve(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let mut conn = state.db.conn().await?;
    let session = db::checkout_sessions::get(&mut conn, &auth.owner, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("checkout session", &path))?
        .present(&state.settings.public_url, state.clock.now());
    Ok(json_response(StatusCode::OK, &wrap(P, &session)))
}

async fn list(state: web::Data<AppState>, auth: Auth, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &[&LIST_PARAMS[..], &["status", "customer", "payment_intent"]].concat())?;
    let cursor = query.cursor(CheckoutSessionId::PREFIX)?;
    let filter = db::checkout_sessions::SessionFilter {
        status: query.get("status").map(|s| SessionStatus::parse(s, "status")).transpose()?,
        customer: query
            .get("customer")
            .map(|c| {
                CustomerId::parse(c)
                    .ok_or_else(|| ApiError::invalid("customer", "customer must be a customer id (fcus_...)"))
            })
            .transpose()?,
        payment_intent: query
            .get("payment_intent")
            .map(|p| {
                PaymentIntentId::parse(p).ok_or_else(|| {
                    ApiError::invalid("payment_intent", "payment_intent must be a payment intent id (fpi_...)")
                })
            })
            .transpose()?,
    };
    let now = state.clock.now();
    let mut conn = state.db.conn().await?;
    let mut page = db::checkout_sessions::list(&mut conn, &auth.owner, &filter, now, &cursor).await?;
    page.items = page.items.into_iter().map(|s| s.present(&state.settings.public_url, now)).collect();
    Ok(json_response(StatusCode::OK, &list_body("checkout_sessions", &page)))
}

async fn line_items(state: web::Data<AppState>, auth: Auth, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let mut conn = state.db.conn().await?;
    let owned = db::checkout_sessions::get_any(&mut conn, &id)
        .await?
        .filter(|o| o.owner == auth.owner)
        .ok_or_else(|| ApiError::not_found("checkout session", &path))?;
    Ok(json_response(StatusCode::OK, &json!({ "line_items": owned.items, "has_more": false })))
}

async fn expire(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    let id = parse_id(&path)?;
    idempotency::run(&state, &auth, &req, &body, || async {
        if !body.iter().all(|b| b.is_ascii_whitespace()) {
            let v: Value = serde_json::from_slice(&body)
                .map_err(|_| ApiError::bad_request("json_invalid", "the request body is not valid JSON"))?;
            if v.as_object().map(|o| !o.is_empty()).unwrap_or(true) {
                return Err(ApiError::bad_request(
                    "body_not_allowed",
                    "expire takes no parameters; send an empty body or {}",
                ));
            }
        }
        let session = checkout::expire(&state, &auth.owner, &id).await?;
        Ok((StatusCode::OK, wrap(P, &session)))
    })
    .await
}
