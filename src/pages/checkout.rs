//! `/pay/c/{id}`: the hosted checkout page, its form post, and the sandbox 3-D Secure page.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::{
    browser_script, csrf_ok, csrf_token, origin_ok, render_message, render_message_page, script_answer, script_reply,
};
use crate::domain::card::{Brand, CardInput};
use crate::domain::checkout_session::{self as cs, CheckoutSession, LineItem, SessionMode, SessionStatus};
use crate::domain::consultation::{self, Answers};
use crate::domain::customer::{Address, Contact};
use crate::domain::ids::{CheckoutSessionId, PaymentAttemptId};
use crate::domain::{text, FieldError};
use crate::error::PageError;
use crate::flows::card_setup::{self, SetupStart};
use crate::flows::checkout::{self as flow, PageData, PayResult, PaymentForm};
use crate::flows::FlowError;
use crate::gateway::{BrowserScript, CardEntry, ChallengeAnswer};
use crate::state::AppState;

pub const MAX_FORM_BYTES: usize = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/pay/c/{id}").route(web::get().to(show)).route(web::post().to(submit)))
        .service(web::resource("/pay/c/{id}/setup").route(web::post().to(start_setup)))
        .service(web::resource("/pay/c/{id}/confirm").route(web::post().to(confirm_setup)))
        .service(
            web::resource("/pay/c/{id}/authenticate/{attempt}")
                .route(web::get().to(show_challenge))
                .route(web::post().to(answer_challenge)),
        );
}

fn page_csp(state: &AppState, data: &PageData) -> String {
    super::content_security_policy(
        redirect_origin(&data.session.success_url).as_deref(),
        browser_script(state, data.owner.mode),
    )
}

/// The values typed into the form, kept to fill it again after an error or a decline (never the
/// card number or CVC).
#[derive(Clone, Debug, Default)]
struct Entered {
    email: String,
    first_name: String,
    last_name: String,
    phone: String,
    line1: String,
    line2: String,
    city: String,
    state: String,
    postal_code: String,
    country: String,
    lmn_goals: String,
    lmn_conditions: Vec<String>,
    lmn_attest: bool,
}

struct LineView {
    name: String,
    description: Option<String>,
    quantity: i64,
    unit_price: String,
    amount: String,
    cadence: Option<String>,
}

struct Condition {
    key: &'static str,
    label: &'static str,
    checked: bool,
}

struct LmnView {
    label: &'static str,
    goal_prompt: &'static str,
    conditions: Vec<Condition>,
}

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage {
    asset_version: &'static str,
    merchant_name: String,
    session_id: String,
    test_mode: bool,
    lines: Vec<LineView>,
    subtotal: String,
    total_today: String,
    then_text: Option<String>,
    pay_label: String,
    hsa_fsa_eligible: bool,
    lmn: Option<LmnView>,
    collect_shipping: bool,
    entered: Entered,
    errors: Vec<FieldError>,
    notice: Option<String>,
    csrf: String,
    cancel_url: String,
    pending_action: Option<String>,
    processor: Option<BrowserScript>,
}

impl CheckoutPage {
    fn error(&self, field: &str) -> Option<&str> {
        super::field_error(&self.errors, field)
    }

    fn invalid(&self, field: &str) -> &'static str {
        super::aria_invalid(&self.errors, field)
    }
}

fn cadence_words(session: &CheckoutSession, item: &LineItem) -> Option<String> {
    let r = item.recurring?;
    let amount = session.currency.format(item.amount_total);
    Some(if r.interval_count == 1 {
        format!("{amount} per {}", r.interval.words(1))
    } else {
        format!("{amount} every {}", r.interval.words(r.interval_count))
    })
}

fn build_page(
    state: &AppState,
    data: &PageData,
    entered: Entered,
    errors: Vec<FieldError>,
    notice: Option<String>,
) -> CheckoutPage {
    let s = &data.session;
    let lines: Vec<LineView> = data
        .items
        .iter()
        .map(|i| LineView {
            name: i.description.clone(),
            description: i.product_description.clone(),
            quantity: i.quantity,
            unit_price: s.currency.format(i.unit_amount),
            amount: s.currency.format(i.amount_total),
            cadence: cadence_words(s, i),
        })
        .collect();
    let trial = cs::trial_days(s.subscription_data.as_ref(), &data.items);
    let recurring_total: i64 = data.items.iter().filter(|i| i.recurring.is_some()).map(|i| i.amount_total).sum();
    let recurring = data.items.iter().find_map(|i| i.recurring);
    let then_text = match (s.mode, recurring) {
        (SessionMode::Subscription, Some(r)) => {
            let amount = s.currency.format(recurring_total);
            let every = if r.interval_count == 1 {
                format!("{amount}/{}", r.interval.words(1))
            } else {
                format!("{amount} every {}", r.interval.words(r.interval_count))
            };
            Some(match trial {
                Some(days) => format!("Then {every} after a {days}-day free trial"),
                None => format!("Then {every}"),
            })
        }
        _ => None,
    };
    let pay_label = match s.mode {
        SessionMode::Payment => format!("Pay {}", s.currency.format(s.amount_total)),
        SessionMode::Subscription
            if trial.is_some() || s.subscription_data.as_ref().and_then(|d| d.trial_end).is_some() =>
        {
            "Start trial".to_string()
        }
        SessionMode::Subscription => "Subscribe".to_string(),
        SessionMode::Setup => "Save card".to_string(),
    };
    let lmn = match (s.letter_of_medical_necessity_required, s.visit_type) {
        (true, Some(v)) => {
            let q = consultation::questionnaire(v);
            Some(LmnView {
                label: v.label(),
                goal_prompt: q.goal_prompt,
                conditions: q
                    .conditions
                    .iter()
                    .map(|(key, label)| Condition {
                        key,
                        label,
                        checked: entered.lmn_conditions.iter().any(|c| c == key),
                    })
                    .collect(),
            })
        }
        _ => None,
    };
    CheckoutPage {
        asset_version: super::asset_version(),
        merchant_name: if data.merchant_name.is_empty() { "Checkout".into() } else { data.merchant_name.clone() },
        session_id: s.checkout_session_id.to_string(),
        test_mode: s.test_mode,
        lines,
        subtotal: s.currency.format(s.amount_subtotal),
        total_today: s.currency.format(s.amount_total),
        then_text,
        pay_label,
        hsa_fsa_eligible: s.hsa_fsa_eligible,
        lmn,
        collect_shipping: s.shipping_address_collection,
        entered,
        errors,
        notice,
        csrf: csrf_token(&state.page_key, s.checkout_session_id.as_str()),
        cancel_url: s.cancel_url.clone(),
        pending_action: data
            .pending_action
            .as_ref()
            .map(|a| format!("/pay/c/{}/authenticate/{a}", s.checkout_session_id)),
        processor: browser_script(state, data.owner.mode).cloned(),
    }
}

/// The details to pre-fill: what the merchant passed, or the named customer's.
fn prefill(data: &PageData) -> Entered {
    let s = &data.session;
    let c = data.customer.as_ref();
    let pick = |a: Option<&String>, b: Option<&String>| a.or(b).cloned().unwrap_or_default();
    Entered {
        email: pick(s.defaults.email.as_ref().or(s.customer_email.as_ref()), c.and_then(|c| c.email.as_ref())),
        first_name: pick(s.defaults.first_name.as_ref(), c.and_then(|c| c.first_name.as_ref())),
        last_name: pick(s.defaults.last_name.as_ref(), c.and_then(|c| c.last_name.as_ref())),
        phone: pick(s.defaults.phone.as_ref(), c.and_then(|c| c.phone.as_ref())),
        ..Entered::default()
    }
}

fn render(page: CheckoutPage, status: StatusCode, csp: String) -> Result<HttpResponse, PageError> {
    let html = page.render().map_err(PageError::internal)?;
    Ok(super::secure_html_with(status, html, csp))
}

fn redirect_origin(url: &str) -> Option<String> {
    url::Url::parse(&url.replace("{CHECKOUT_SESSION_ID}", "x"))
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
}

fn parse_session_id(raw: &str) -> Result<CheckoutSessionId, PageError> {
    CheckoutSessionId::parse(raw).ok_or(PageError::NotFound)
}

fn flow_error(e: FlowError) -> PageError {
    match e {
        FlowError::NotFound { .. } => PageError::NotFound,
        FlowError::Invalid(f) => PageError::BadRequest(f.message),
        FlowError::Declined(code) => PageError::BadRequest(code.customer_message().into()),
        FlowError::Unprocessable { message, .. } | FlowError::Conflict { message, .. } => {
            PageError::BadRequest(message)
        }
        FlowError::Unavailable(why) => {
            tracing::warn!(error = %why, "payment processor unavailable");
            PageError::Unavailable
        }
        FlowError::Internal(e) => PageError::internal(e),
    }
}

/// Pages for a session that takes no payment now, or `None` when the form should be shown.
fn settled_page(session: &CheckoutSession) -> Option<HttpResponse> {
    match session.status {
        SessionStatus::Complete => Some(payment_received(session)),
        SessionStatus::Expired => Some(expired(session)),
        SessionStatus::Open if session.is_locked() => Some(locked()),
        SessionStatus::Open => None,
    }
}

fn payment_received(session: &CheckoutSession) -> HttpResponse {
    let text = match session.mode {
        SessionMode::Setup => "Your card has been saved. You can close this page or return to the store.",
        SessionMode::Subscription => "Thank you! Your subscription is active. A receipt is on its way to your email.",
        SessionMode::Payment => "Thank you! Your payment was received. A receipt is on its way to your email.",
    };
    let title = if session.mode == SessionMode::Setup { "Card saved" } else { "Payment received" };
    let back = session.success_redirect();
    render_message(StatusCode::OK, title, text, back.as_deref().map(|u| (u, "Return to the store")))
}

fn expired(session: &CheckoutSession) -> HttpResponse {
    let link = (!session.cancel_url.is_empty()).then_some((session.cancel_url.as_str(), "Return to the store"));
    render_message(
        StatusCode::GONE,
        "This checkout link has expired",
        "No payment was taken. Please return to the store to start again.",
        link,
    )
}

fn locked() -> HttpResponse {
    render_message(StatusCode::FORBIDDEN, "Too many attempts", "Too many attempts. Please contact the merchant.", None)
}

/// A form posted about a session: read within the size limit, sent from our own pages, about a
/// session that exists. Its CSRF token is checked apart (`require_csrf`): the payment form answers
/// a settled session before looking at it.
async fn posted(
    state: &AppState,
    req: &HttpRequest,
    raw_id: &str,
    payload: web::Payload,
) -> Result<(PageData, Form), PageError> {
    let body = super::read_form(payload, MAX_FORM_BYTES).await?;
    if !origin_ok(req, &state.settings.public_origin()) {
        return Err(PageError::Forbidden("This form was sent from another site."));
    }
    Ok((load(state, raw_id).await?, Form::parse(&body)))
}

fn require_csrf(state: &AppState, data: &PageData, form: &Form) -> Result<(), PageError> {
    if csrf_ok(&state.page_key, data.session.checkout_session_id.as_str(), form.get("csrf")) {
        Ok(())
    } else {
        Err(PageError::Forbidden("This form has expired. Please reload the page and try again."))
    }
}

async fn load(state: &AppState, raw_id: &str) -> Result<PageData, PageError> {
    let id = parse_session_id(raw_id)?;
    flow::load_page(state, &id).await.map_err(flow_error)?.ok_or(PageError::NotFound)
}

async fn show(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, PageError> {
    if let Some(hit) = state.page_cache.get(path.as_str()) {
        // Expiry is a matter of time, not of writes: checked on every hit.
        if state.clock.now() < hit.expires_at {
            return Ok(super::secure_html_with(StatusCode::OK, hit.html.clone(), hit.csp.clone()));
        }
        state.page_cache.invalidate(path.as_str());
    }
    let data = load(&state, &path).await?;
    if let Some(page) = settled_page(&data.session) {
        return Ok(page);
    }
    let entered = prefill(&data);
    let csp = page_csp(&state, &data);
    let html =
        web::Bytes::from(build_page(&state, &data, entered, Vec::new(), None).render().map_err(PageError::internal)?);
    // A form waiting on a 3-D Secure answer shows that; only the plain form is kept.
    if data.pending_action.is_none() {
        state.page_cache.insert(
            data.session.checkout_session_id.to_string(),
            std::sync::Arc::new(crate::state::CachedPage {
                html: html.clone(),
                csp: csp.clone(),
                expires_at: data.session.expires_at,
            }),
        );
    }
    Ok(super::secure_html_with(StatusCode::OK, html, csp))
}

/// Form fields, in the order the browser sent them (checkbox groups repeat a name).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }
}

fn entered_from(form: &Form) -> Entered {
    let keep = |name: &str, max: usize| form.get(name).chars().take(max).collect::<String>();
    Entered {
        email: keep("email", 254),
        first_name: keep("first_name", 100),
        last_name: keep("last_name", 100),
        phone: keep("phone", 30),
        line1: keep("address_line1", 200),
        line2: keep("address_line2", 200),
        city: keep("address_city", 100),
        state: keep("address_state", 100),
        postal_code: keep("address_postal_code", 20),
        country: keep("address_country", 2),
        lmn_goals: keep("lmn_goals", 1000),
        lmn_conditions: form.all("lmn_conditions").into_iter().take(20).collect(),
        lmn_attest: form.get("lmn_attest") == "yes",
    }
}

/// Checks everything typed; all problems at once, each tied to its field.
fn parse_payment(
    data: &PageData,
    form: &Form,
    entered: &Entered,
    today: (i32, u32),
) -> Result<PaymentForm, Vec<FieldError>> {
    let contact = parse_contact(data, entered);
    let card = CardInput::parse(
        form.get("card_number"),
        form.get("card_expiry"),
        form.get("card_cvc"),
        form.get("card_postal_code"),
        today,
    );
    match (contact, card) {
        (Ok(contact), Ok(card)) => Ok(PaymentForm { contact, card }),
        (contact, card) => {
            let mut errors = contact.err().unwrap_or_default();
            errors.extend(card.err());
            Err(errors)
        }
    }
}

/// Checks the contact details and questionnaire answers; all problems at once.
fn parse_contact(data: &PageData, entered: &Entered) -> Result<Contact, Vec<FieldError>> {
    let mut errors = Vec::new();
    let s = &data.session;
    let email = match text::email(&entered.email, "email") {
        Ok(e) => e,
        Err(_) if entered.email.trim().is_empty() => {
            errors.push(FieldError::new("email", "Enter your email address."));
            String::new()
        }
        Err(_) => {
            errors.push(FieldError::new("email", "Enter a valid email address, like name@example.com."));
            String::new()
        }
    };
    let mut name = |field: &str, value: &str| match text::optional_text(value, field, 100) {
        Ok(v) => v,
        Err(_) => {
            errors.push(FieldError::new(field, "Use at most 100 letters."));
            None
        }
    };
    let first_name = name("first_name", &entered.first_name);
    let last_name = name("last_name", &entered.last_name);
    let phone = if entered.phone.trim().is_empty() {
        None
    } else {
        match text::phone(&entered.phone, "phone") {
            Ok(p) => Some(p),
            Err(_) => {
                errors.push(FieldError::new(
                    "phone",
                    "Enter your phone number with its country code, like +1 415 555 0123.",
                ));
                None
            }
        }
    };
    let shipping = if s.shipping_address_collection {
        let mut required = |field: &str, value: &str, what: &str| {
            if value.trim().is_empty() {
                errors.push(FieldError::new(field, format!("Enter your {what}.")));
            }
        };
        required("address_line1", &entered.line1, "street address");
        required("address_city", &entered.city, "city");
        required("address_postal_code", &entered.postal_code, "postal code");
        required("address_country", &entered.country, "country");
        let address = Address {
            line1: Some(entered.line1.clone()),
            line2: Some(entered.line2.clone()),
            city: Some(entered.city.clone()),
            state: Some(entered.state.clone()),
            postal_code: Some(entered.postal_code.clone()),
            country: Some(entered.country.clone()),
        };
        match address.checked("address") {
            Ok(a) => Some(a),
            Err(e) => {
                let field = e.param.replace('.', "_");
                if !errors.iter().any(|x| x.param == field) {
                    errors.push(FieldError::new(field, "Check this part of your address."));
                }
                None
            }
        }
    } else {
        None
    };
    let lmn = match (s.letter_of_medical_necessity_required, s.visit_type) {
        (true, Some(v)) => match Answers::parse(v, &entered.lmn_goals, &entered.lmn_conditions, entered.lmn_attest) {
            Ok(a) => Some(a),
            Err(es) => {
                errors.extend(es);
                None
            }
        },
        _ => None,
    };
    if errors.is_empty() {
        Ok(Contact { email, first_name, last_name, phone, shipping, lmn })
    } else {
        Err(errors)
    }
}

async fn submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (data, form) = posted(&state, &req, &path, payload).await?;
    // A session that takes no payment answers the same to anyone; nothing changes. A second tab
    // that pays a session already paid goes where the first one went.
    if data.session.status == SessionStatus::Complete {
        if let Some(to) = data.session.success_redirect() {
            return Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, to))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish());
        }
    }
    if let Some(page) = settled_page(&data.session) {
        return Ok(page);
    }
    require_csrf(&state, &data, &form)?;
    let entered = entered_from(&form);
    let now = state.clock.now().to_datetime();
    let today = (now.year(), u32::from(u8::from(now.month())));
    let csp = page_csp(&state, &data);
    if browser_script(&state, data.owner.mode).is_some() {
        // The processor's card field works through its script; without it no card can be taken.
        let notice = "The card field needs JavaScript: your card details go straight to our payment processor. \
                      Please enable JavaScript and try again."
            .to_string();
        let page = build_page(&state, &data, entered, Vec::new(), Some(notice));
        return render(page, StatusCode::UNPROCESSABLE_ENTITY, csp);
    }
    let payment = match parse_payment(&data, &form, &entered, today) {
        Ok(p) => p,
        Err(errors) => {
            let page = build_page(&state, &data, entered, errors, None);
            return render(page, StatusCode::UNPROCESSABLE_ENTITY, csp);
        }
    };
    if let Some(res) = super::rate_limited(&state, &req, super::Answer::Page) {
        return Ok(res);
    }
    let result = flow::pay(&state, &data.session.checkout_session_id, payment).await.map_err(flow_error)?;
    outcome_response(&state, &data, entered, result).await
}

async fn outcome_response(
    state: &AppState,
    data: &PageData,
    entered: Entered,
    result: PayResult,
) -> Result<HttpResponse, PageError> {
    let id = &data.session.checkout_session_id;
    let csp = page_csp(state, data);
    match result {
        PayResult::Completed { redirect } => {
            let to = redirect.unwrap_or_else(|| format!("/pay/c/{id}"));
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, to))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish())
        }
        PayResult::RequiresAction { attempt } => Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("/pay/c/{id}/authenticate/{attempt}")))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish()),
        PayResult::Declined { message } => {
            // Reload so the decline count and any pending challenge are current.
            let fresh = flow::load_page(state, id).await.map_err(flow_error)?.ok_or(PageError::NotFound)?;
            let page = build_page(state, &fresh, entered, Vec::new(), Some(message));
            render(page, StatusCode::PAYMENT_REQUIRED, csp)
        }
        PayResult::CardRejected(error) => {
            let page = build_page(state, data, entered, vec![error], None);
            render(page, StatusCode::PAYMENT_REQUIRED, csp)
        }
        PayResult::InProgress => Ok(render_message_page(
            StatusCode::ACCEPTED,
            "Your payment is being processed",
            "This page will refresh in a few seconds. Please don't pay again.",
            Some((&format!("/pay/c/{id}"), "Check the status now")),
            Some(&format!("3;url=/pay/c/{id}")),
        )),
        PayResult::Expired => Ok(expired(&data.session)),
        PayResult::Locked => Ok(locked()),
    }
}

#[derive(Template)]
#[template(path = "authenticate.html")]
struct ChallengePage {
    asset_version: &'static str,
    merchant_name: String,
    amount: String,
    card: String,
    csrf: String,
    action: String,
    /// With the processor's script: its own challenge, run with this charge's secret.
    processor: Option<BrowserScript>,
    client_secret: String,
}

fn parse_attempt(raw: &str) -> Result<PaymentAttemptId, PageError> {
    PaymentAttemptId::parse(raw).ok_or(PageError::NotFound)
}

async fn show_challenge(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (raw_id, raw_attempt) = path.into_inner();
    let data = load(&state, &raw_id).await?;
    let attempt = parse_attempt(&raw_attempt)?;
    if let Some(page) = settled_page(&data.session) {
        return Ok(page);
    }
    if data.pending_action.as_ref() != Some(&attempt) {
        return Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("/pay/c/{}", data.session.checkout_session_id)))
            .finish());
    }
    let row = {
        let mut conn = state.db.conn().await?;
        crate::db::payments::get_attempt(&mut conn, &attempt).await?.ok_or(PageError::NotFound)?
    };
    let script = browser_script(&state, data.owner.mode);
    let client_secret = match (state.gateways.for_mode(data.owner.mode).map(|g| g.card_entry()), &row.charge_ref) {
        (Some(CardEntry::Browser(cards)), Some(charge)) => {
            cards.action_secret(charge).await.map_err(|e| flow_error(e.into()))?
        }
        _ => String::new(),
    };
    let page = ChallengePage {
        processor: script.cloned(),
        client_secret,
        asset_version: super::asset_version(),
        merchant_name: data.merchant_name.clone(),
        amount: data.session.currency.format(row.amount),
        card: format!(
            "{} ending in {}",
            Brand::display(row.card_brand.as_deref().unwrap_or("")),
            row.card_last4.as_deref().unwrap_or("????")
        ),
        csrf: csrf_token(&state.page_key, data.session.checkout_session_id.as_str()),
        action: format!("/pay/c/{}/authenticate/{attempt}", data.session.checkout_session_id),
    };
    let html = page.render().map_err(PageError::internal)?;
    Ok(super::secure_html_with(StatusCode::OK, html, page_csp(&state, &data)))
}

async fn answer_challenge(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (raw_id, raw_attempt) = path.into_inner();
    let (data, form) = posted(&state, &req, &raw_id, payload).await?;
    let attempt = parse_attempt(&raw_attempt)?;
    require_csrf(&state, &data, &form)?;
    let answer = match (form.get("answer"), browser_script(&state, data.owner.mode)) {
        // The processor's own dialog ran in the browser: the processor knows the answer.
        (_, Some(_)) => ChallengeAnswer::AtGateway,
        ("approve", None) => ChallengeAnswer::Approved,
        ("fail", None) => ChallengeAnswer::Failed,
        _ => return Err(PageError::BadRequest("answer must be approve or fail".into())),
    };
    let result =
        flow::authenticate(&state, &data.session.checkout_session_id, &attempt, answer).await.map_err(flow_error)?;
    let entered = entered_of_attempt(&state, &attempt, &data).await?;
    outcome_response(&state, &data, entered, result).await
}

/// The contact details an attempt was made with, so the customer need not type them again.
async fn entered_of_attempt(
    state: &AppState,
    attempt: &PaymentAttemptId,
    data: &PageData,
) -> Result<Entered, PageError> {
    let entered = {
        let mut conn = state.db.conn().await?;
        crate::db::payments::get_attempt(&mut conn, attempt)
            .await?
            .and_then(|a| serde_json::from_str::<Contact>(&a.contact).ok())
            .map(|c| Entered {
                email: c.email,
                first_name: c.first_name.unwrap_or_default(),
                last_name: c.last_name.unwrap_or_default(),
                phone: c.phone.unwrap_or_default(),
                line1: c.shipping.as_ref().and_then(|s| s.line1.clone()).unwrap_or_default(),
                line2: c.shipping.as_ref().and_then(|s| s.line2.clone()).unwrap_or_default(),
                city: c.shipping.as_ref().and_then(|s| s.city.clone()).unwrap_or_default(),
                state: c.shipping.as_ref().and_then(|s| s.state.clone()).unwrap_or_default(),
                postal_code: c.shipping.as_ref().and_then(|s| s.postal_code.clone()).unwrap_or_default(),
                country: c.shipping.as_ref().and_then(|s| s.country.clone()).unwrap_or_default(),
                lmn_goals: c.lmn.as_ref().map(|l| l.goals.clone()).unwrap_or_default(),
                lmn_conditions: c.lmn.as_ref().map(|l| l.conditions.clone()).unwrap_or_default(),
                lmn_attest: c.lmn.as_ref().map(|l| l.attested).unwrap_or(false),
            })
            .unwrap_or_else(|| prefill(data))
    };
    Ok(entered)
}

/// `POST /pay/c/{id}/setup` (from the page's script, processor card fields only): checks the
/// contact details and starts a card setup; answers with what the processor's script needs.
async fn start_setup(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    script_answer(start_setup_inner(&state, &req, &path, payload).await, "This checkout page does not exist.")
}

async fn start_setup_inner(
    state: &AppState,
    req: &HttpRequest,
    raw_id: &str,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (data, form) = posted(state, req, raw_id, payload).await?;
    require_csrf(state, &data, &form)?;
    let id = data.session.checkout_session_id.clone();
    if data.session.status != SessionStatus::Open || data.session.is_locked() {
        return Ok(script_reply(StatusCode::OK, serde_json::json!({ "redirect": format!("/pay/c/{id}") })));
    }
    if browser_script(state, data.owner.mode).is_none() {
        return Err(PageError::BadRequest("this checkout takes cards on its own form".into()));
    }
    let contact = match parse_contact(&data, &entered_from(&form)) {
        Ok(c) => c,
        Err(errors) => {
            let errors: Vec<_> =
                errors.iter().map(|e| serde_json::json!({ "param": e.param, "message": e.message })).collect();
            return Ok(script_reply(StatusCode::UNPROCESSABLE_ENTITY, serde_json::json!({ "errors": errors })));
        }
    };
    if let Some(res) = super::rate_limited(state, req, super::Answer::Script) {
        return Ok(res);
    }
    match card_setup::start(state, &id, contact).await.map_err(flow_error)? {
        SetupStart::Ready { attempt, client_secret } => {
            Ok(script_reply(StatusCode::OK, serde_json::json!({ "attempt": attempt, "client_secret": client_secret })))
        }
        SetupStart::Settled(_) => {
            Ok(script_reply(StatusCode::OK, serde_json::json!({ "redirect": format!("/pay/c/{id}") })))
        }
    }
}

/// `POST /pay/c/{id}/confirm`: the browser is back from the processor's card confirmation. What
/// happened is read from the processor, never taken from the browser.
async fn confirm_setup(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (data, form) = posted(&state, &req, &path, payload).await?;
    require_csrf(&state, &data, &form)?;
    let attempt = parse_attempt(form.get("attempt"))?;
    let result = card_setup::finish(&state, &data.session.checkout_session_id, &attempt).await.map_err(flow_error)?;
    let entered = entered_of_attempt(&state, &attempt, &data).await?;
    outcome_response(&state, &data, entered, result).await
}
