//! `/pay/i/{id}`: the hosted invoice page (an invoice's summary and a card form to pay it, or its
//! receipt), its form post (sandbox) or card setup through the processor's script (Stripe), and its
//! 3-D Secure page. Same look and guarantees as the
//! checkout page: CSP, CSRF token and `Origin` check on every POST, no-store, per-address rate
//! limit on card posts, plain form posts that work without JavaScript.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::{
    browser_script, csrf_ok, csrf_token, origin_ok, render_message, render_message_page, script_answer, script_reply,
};
use crate::domain::card::{Brand, CardInput};
use crate::domain::ids::InvoiceId;
use crate::domain::subscription::InvoiceStatus;
use crate::domain::timestamp::Timestamp;
use crate::domain::FieldError;
use crate::error::PageError;
use crate::flows::invoice_payment::{self as flow, AttemptState, InvoicePage, InvoicePayResult};
use crate::flows::FlowError;
use crate::gateway::{BrowserScript, CardEntry, ChallengeAnswer};
use crate::state::AppState;

const MAX_FORM_BYTES: usize = 16 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/pay/i/{id}").route(web::get().to(show)).route(web::post().to(submit)))
        .service(web::resource("/pay/i/{id}/setup").route(web::post().to(start_setup)))
        .service(web::resource("/pay/i/{id}/confirm").route(web::post().to(confirm_setup)))
        .service(
            web::resource("/pay/i/{id}/authenticate/{attempt}")
                .route(web::get().to(show_challenge))
                .route(web::post().to(answer_challenge)),
        );
}

struct LineView {
    description: String,
    amount: String,
    /// "Mar 20 – Apr 20, 2024", empty for a line without a period.
    period: String,
    quantity: i64,
    proration: bool,
}

/// The invoice as both the payment page and the receipt show it (`invoice_summary.html`).
struct Summary {
    merchant_name: String,
    number: String,
    test_mode: bool,
    status_label: &'static str,
    status_class: &'static str,
    amount_label: &'static str,
    amount: String,
    /// "Due April 19, 2024", "Paid March 20, 2024".
    when: Option<String>,
    lines: Vec<LineView>,
    total: String,
    amount_paid: Option<String>,
    amount_remaining: String,
    billed_to: Option<String>,
    issued: String,
    period: Option<String>,
}

#[derive(Template)]
#[template(path = "invoice.html")]
struct PayPage {
    asset_version: &'static str,
    summary: Summary,
    invoice_id: String,
    pay_label: String,
    csrf: String,
    errors: Vec<FieldError>,
    notice: Option<String>,
    pending_action: Option<String>,
    /// Why no card can be taken here now; the form is not shown then.
    unavailable: Option<String>,
    /// With the processor's script: its card fields instead of ours (no card data reaches us).
    processor: Option<BrowserScript>,
}

impl PayPage {
    fn error(&self, field: &str) -> Option<&str> {
        super::field_error(&self.errors, field)
    }

    fn invalid(&self, field: &str) -> &'static str {
        super::aria_invalid(&self.errors, field)
    }
}

#[derive(Template)]
#[template(path = "invoice_paid.html")]
struct ReceiptPage {
    asset_version: &'static str,
    summary: Summary,
    card: Option<String>,
}

/// The sandbox's stand-in for the customer's bank, shared with the checkout page.
#[derive(Template)]
#[template(path = "authenticate.html")]
struct ChallengePage {
    asset_version: &'static str,
    merchant_name: String,
    amount: String,
    card: String,
    csrf: String,
    action: String,
    processor: Option<BrowserScript>,
    client_secret: String,
}

/// Dates on the customer's calendar (the subscription's zone), as a US-English reader writes them.
struct Dates(jiff::tz::TimeZone);

impl Dates {
    fn new(zone: &str) -> Dates {
        Dates(jiff::tz::TimeZone::get(zone).unwrap_or(jiff::tz::TimeZone::UTC))
    }

    fn local(&self, t: Timestamp) -> jiff::Zoned {
        jiff::Timestamp::from_microsecond(t.micros()).unwrap_or(jiff::Timestamp::UNIX_EPOCH).to_zoned(self.0.clone())
    }

    /// "April 19, 2024".
    fn long(&self, t: Timestamp) -> String {
        self.local(t).strftime("%B %-d, %Y").to_string()
    }

    /// "Mar 20 – Apr 20, 2024", or across years "Dec 20, 2024 – Jan 20, 2025".
    fn period(&self, start: Timestamp, end: Timestamp) -> String {
        let (s, e) = (self.local(start), self.local(end));
        if s.year() == e.year() {
            format!("{} – {}", s.strftime("%b %-d"), e.strftime("%b %-d, %Y"))
        } else {
            format!("{} – {}", s.strftime("%b %-d, %Y"), e.strftime("%b %-d, %Y"))
        }
    }
}

fn summary(data: &InvoicePage) -> Summary {
    let i = &data.invoice;
    let dates = Dates::new(&data.zone);
    let fmt = |minor: i64| i.currency.format(minor);
    let overdue = i.due_date.is_some_and(|d| d <= data.now);
    let (status_label, status_class) = match i.status {
        InvoiceStatus::Paid => ("Paid", "paid"),
        InvoiceStatus::Void => ("Void", "void"),
        InvoiceStatus::Draft => ("Draft", "void"),
        InvoiceStatus::Uncollectible => ("Past due", "overdue"),
        InvoiceStatus::Open if overdue => ("Past due", "overdue"),
        InvoiceStatus::Open => ("Open", "open"),
    };
    let paid = i.status == InvoiceStatus::Paid;
    let when = if paid {
        i.paid_at.map(|t| format!("Paid {}", dates.long(t)))
    } else {
        i.due_date.map(|t| format!("{} {}", if overdue { "Was due" } else { "Due" }, dates.long(t)))
    };
    let lines = i
        .lines
        .iter()
        .map(|l| LineView {
            description: l.description.clone(),
            amount: fmt(l.amount),
            period: if l.period_end > l.period_start {
                dates.period(l.period_start, l.period_end)
            } else {
                String::new()
            },
            quantity: l.quantity,
            proration: l.proration,
        })
        .collect();
    let customer = data.customer.as_ref();
    let billed_to = customer.and_then(|c| match (c.full_name(), &c.email) {
        (Some(name), Some(email)) => Some(format!("{name} · {email}")),
        (Some(name), None) => Some(name),
        (None, email) => email.clone(),
    });
    Summary {
        merchant_name: if data.merchant_name.is_empty() { "Invoice".into() } else { data.merchant_name.clone() },
        number: i.number.clone(),
        test_mode: i.test_mode,
        status_label,
        status_class,
        amount_label: if paid { "Amount paid" } else { "Amount due" },
        amount: fmt(if paid { i.amount_paid } else { i.amount_remaining }),
        when,
        lines,
        total: fmt(i.amount_due),
        amount_paid: (i.amount_paid > 0).then(|| fmt(i.amount_paid)),
        amount_remaining: fmt(i.amount_remaining),
        billed_to,
        issued: dates.long(i.created_at),
        period: (i.period_end > i.period_start).then(|| dates.period(i.period_start, i.period_end)),
    }
}

/// Why this server cannot take a card for the invoice on this page, if it cannot.
fn unavailable(state: &AppState, data: &InvoicePage) -> Option<String> {
    let merchant = if data.merchant_name.is_empty() { "the merchant".to_string() } else { data.merchant_name.clone() };
    state.gateways.for_mode(data.owner.mode).is_none().then(|| {
        format!(
            "Online card payments are not available for this invoice right now. Please contact {merchant} to pay it."
        )
    })
}

fn build_page(state: &AppState, data: &InvoicePage, errors: Vec<FieldError>, notice: Option<String>) -> PayPage {
    let id = &data.invoice.invoice_id;
    PayPage {
        asset_version: super::asset_version(),
        summary: summary(data),
        invoice_id: id.to_string(),
        pay_label: format!("Pay {}", data.invoice.currency.format(data.invoice.amount_remaining)),
        csrf: csrf_token(&state.page_key, id.as_str()),
        errors,
        notice,
        pending_action: match data.attempt {
            AttemptState::Challenge { attempt, .. } => Some(format!("/pay/i/{id}/authenticate/{attempt}")),
            _ => None,
        },
        unavailable: unavailable(state, data),
        processor: browser_script(state, data.owner.mode).cloned(),
    }
}

fn render(page: &impl Template, status: StatusCode) -> Result<HttpResponse, PageError> {
    let html = page.render().map_err(PageError::internal)?;
    Ok(super::secure_html(status, html, None))
}

fn render_pay_page(page: PayPage, status: StatusCode) -> Result<HttpResponse, PageError> {
    let status = if page.unavailable.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { status };
    let html = page.render().map_err(PageError::internal)?;
    Ok(super::secure_html_with(status, html, super::content_security_policy(None, page.processor.as_ref())))
}

fn not_found() -> HttpResponse {
    render_message(
        StatusCode::NOT_FOUND,
        "Invoice not found",
        "We couldn't find this invoice. Please check the link in your email, or contact the merchant who sent it.",
        None,
    )
}

fn see_other(to: String) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

fn in_progress(id: &InvoiceId) -> HttpResponse {
    render_message_page(
        StatusCode::ACCEPTED,
        "A payment is already in progress",
        "A payment for this invoice is being processed. This page will refresh in a few seconds; please don't pay again.",
        Some((&format!("/pay/i/{id}"), "Check the status now")),
        Some(&format!("3;url=/pay/i/{id}")),
    )
}

fn locked() -> HttpResponse {
    render_message(
        StatusCode::FORBIDDEN,
        "Too many attempts",
        "Too many payment attempts for this invoice. Please contact the merchant.",
        None,
    )
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

async fn load(state: &AppState, raw_id: &str) -> Result<Option<InvoicePage>, PageError> {
    let Some(id) = InvoiceId::parse(raw_id) else { return Ok(None) };
    flow::load_page(state, &id).await.map_err(flow_error)
}

/// The page for an invoice that takes no card now, or `None` when the form should be shown.
fn settled_page(state: &AppState, data: &InvoicePage) -> Result<Option<HttpResponse>, PageError> {
    let i = &data.invoice;
    Ok(Some(match i.status {
        InvoiceStatus::Paid => {
            let card = data.paid_with.as_ref().map(|c| format!("{} ending in {}", Brand::display(&c.brand), c.last4));
            return render(
                &ReceiptPage { asset_version: super::asset_version(), summary: summary(data), card },
                StatusCode::OK,
            )
            .map(Some);
        }
        InvoiceStatus::Void => {
            let merchant = if data.merchant_name.is_empty() { "the merchant" } else { data.merchant_name.as_str() };
            render_message(
                StatusCode::GONE,
                "This invoice was voided",
                &format!(
                    "Invoice {} was canceled by {merchant}, so nothing is owed on it and no payment can be made.",
                    i.number
                ),
                None,
            )
        }
        // Not finalized: not shown to customers.
        InvoiceStatus::Draft => not_found(),
        InvoiceStatus::Open | InvoiceStatus::Uncollectible => {
            if unavailable(state, data).is_some() {
                return Ok(None);
            }
            match data.attempt {
                AttemptState::Charging => in_progress(&i.invoice_id),
                _ if i.attempt_count >= flow::PAGE_ATTEMPT_LIMIT => locked(),
                _ => return Ok(None),
            }
        }
    }))
}

async fn show(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, PageError> {
    let Some(data) = load(&state, &path).await? else { return Ok(not_found()) };
    if let Some(page) = settled_page(&state, &data)? {
        return Ok(page);
    }
    render_pay_page(build_page(&state, &data, Vec::new(), None), StatusCode::OK)
}

/// A form posted about an invoice: read within the size limit, sent from our own pages, about an
/// invoice that exists, with the token of this invoice's page.
async fn posted(
    state: &AppState,
    req: &HttpRequest,
    raw_id: &str,
    payload: web::Payload,
) -> Result<Result<(InvoicePage, Vec<(String, String)>), HttpResponse>, PageError> {
    let body = super::read_form(payload, MAX_FORM_BYTES).await?;
    if !origin_ok(req, &state.settings.public_origin()) {
        return Err(PageError::Forbidden("This form was sent from another site."));
    }
    let Some(data) = load(state, raw_id).await? else { return Ok(Err(not_found())) };
    let form: Vec<(String, String)> =
        url::form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    Ok(Ok((data, form)))
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

fn require_csrf(state: &AppState, data: &InvoicePage, form: &[(String, String)]) -> Result<(), PageError> {
    if csrf_ok(&state.page_key, data.invoice.invoice_id.as_str(), field(form, "csrf")) {
        Ok(())
    } else {
        Err(PageError::Forbidden("This form has expired. Please reload the page and try again."))
    }
}

async fn submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (data, form) = match posted(&state, &req, &path, payload).await? {
        Ok(posted) => posted,
        Err(page) => return Ok(page),
    };
    let id = data.invoice.invoice_id.clone();
    // A second tab that pays an invoice already paid goes where the first one went.
    if data.invoice.status == InvoiceStatus::Paid {
        return Ok(see_other(format!("/pay/i/{id}")));
    }
    if let Some(page) = settled_page(&state, &data)? {
        return Ok(page);
    }
    require_csrf(&state, &data, &form)?;
    if unavailable(&state, &data).is_some() {
        return render_pay_page(build_page(&state, &data, Vec::new(), None), StatusCode::OK);
    }
    if browser_script(&state, data.owner.mode).is_some() {
        // The processor's card fields need the page's script; a post without it carries no card.
        let notice = "The card field needs JavaScript. Please enable JavaScript to pay.".to_string();
        return render_pay_page(build_page(&state, &data, Vec::new(), Some(notice)), StatusCode::BAD_REQUEST);
    }
    let now = state.clock.now().to_datetime();
    let today = (now.year(), u32::from(u8::from(now.month())));
    let card = match CardInput::parse(
        field(&form, "card_number"),
        field(&form, "card_expiry"),
        field(&form, "card_cvc"),
        field(&form, "card_postal_code"),
        today,
    ) {
        Ok(card) => card,
        Err(error) => {
            return render_pay_page(build_page(&state, &data, vec![error], None), StatusCode::UNPROCESSABLE_ENTITY)
        }
    };
    if let Some(res) = super::rate_limited(&state, &req, super::Answer::Page) {
        return Ok(res);
    }
    let result = flow::pay(&state, &id, card).await;
    outcome_response(&state, &id, result).await
}

async fn outcome_response(
    state: &AppState,
    id: &InvoiceId,
    result: Result<InvoicePayResult, FlowError>,
) -> Result<HttpResponse, PageError> {
    let (status, errors, notice) = match result {
        Ok(InvoicePayResult::Paid | InvoicePayResult::NotPayable) => return Ok(see_other(format!("/pay/i/{id}"))),
        Ok(InvoicePayResult::RequiresAction { attempt }) => {
            return Ok(see_other(format!("/pay/i/{id}/authenticate/{attempt}")))
        }
        Ok(InvoicePayResult::InProgress) => return Ok(in_progress(id)),
        Ok(InvoicePayResult::Locked) => return Ok(locked()),
        Ok(InvoicePayResult::Declined { message }) => (StatusCode::PAYMENT_REQUIRED, Vec::new(), Some(message)),
        Ok(InvoicePayResult::CardRejected(error)) => (StatusCode::PAYMENT_REQUIRED, vec![error], None),
        // The gateway went away between the page and the post (configuration changed): the
        // reloaded page says why.
        Err(FlowError::Unprocessable { code: "live_mode_unavailable" | "card_entry", .. }) => {
            (StatusCode::SERVICE_UNAVAILABLE, Vec::new(), None)
        }
        Err(e) => return Err(flow_error(e)),
    };
    // Reloaded, so the status, attempt count and any pending challenge are current.
    let Some(fresh) = flow::load_page(state, id).await.map_err(flow_error)? else { return Ok(not_found()) };
    if let Some(page) = settled_page(state, &fresh)? {
        return Ok(page);
    }
    render_pay_page(build_page(state, &fresh, errors, notice), status)
}

fn parse_attempt(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|n| *n > 0)
}

async fn show_challenge(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (raw_id, raw_attempt) = path.into_inner();
    let Some(data) = load(&state, &raw_id).await? else { return Ok(not_found()) };
    let Some(attempt) = parse_attempt(&raw_attempt) else { return Ok(not_found()) };
    let id = &data.invoice.invoice_id;
    let charge_ref = match &data.attempt {
        AttemptState::Challenge { attempt: waiting, charge_ref } if *waiting == attempt => charge_ref,
        _ => return Ok(see_other(format!("/pay/i/{id}"))),
    };
    let card = {
        let mut conn = state.db.conn().await?;
        match &data.invoice.payment_method {
            Some(pm) => crate::db::payments::saved_card(&mut conn, pm).await?.map(|(_, c)| c.details),
            None => None,
        }
    };
    let script = browser_script(&state, data.owner.mode);
    // The lookup that found the challenge gave its charge; the gateway is not asked again.
    let client_secret = match state.gateways.for_mode(data.owner.mode).map(|g| g.card_entry()) {
        Some(CardEntry::Browser(cards)) => cards.action_secret(charge_ref).await.map_err(|e| flow_error(e.into()))?,
        _ => String::new(),
    };
    let page = ChallengePage {
        asset_version: super::asset_version(),
        merchant_name: summary(&data).merchant_name,
        amount: data.invoice.currency.format(data.invoice.amount_remaining),
        card: card
            .map_or_else(|| "card".to_string(), |c| format!("{} ending in {}", Brand::display(&c.brand), c.last4)),
        csrf: csrf_token(&state.page_key, id.as_str()),
        action: format!("/pay/i/{id}/authenticate/{attempt}"),
        processor: script.cloned(),
        client_secret,
    };
    let html = page.render().map_err(PageError::internal)?;
    Ok(super::secure_html_with(StatusCode::OK, html, super::content_security_policy(None, script)))
}

async fn answer_challenge(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (raw_id, raw_attempt) = path.into_inner();
    let (data, form) = match posted(&state, &req, &raw_id, payload).await? {
        Ok(posted) => posted,
        Err(page) => return Ok(page),
    };
    let Some(attempt) = parse_attempt(&raw_attempt) else { return Ok(not_found()) };
    require_csrf(&state, &data, &form)?;
    let answer = match (field(&form, "answer"), browser_script(&state, data.owner.mode)) {
        // The processor's own dialog ran in the browser: the processor knows the answer.
        (_, Some(_)) => ChallengeAnswer::AtGateway,
        ("approve", None) => ChallengeAnswer::Approved,
        ("fail", None) => ChallengeAnswer::Failed,
        _ => return Err(PageError::BadRequest("answer must be approve or fail".into())),
    };
    let id = data.invoice.invoice_id.clone();
    let result = flow::authenticate(&state, &id, attempt, answer).await;
    outcome_response(&state, &id, result).await
}

/// Signs the setup started for an invoice, so that its confirmation can only name a setup this
/// server started for this invoice (not another payer's card).
fn setup_token(state: &AppState, id: &InvoiceId, setup_ref: &str) -> String {
    format!("{setup_ref}.{}", csrf_token(&state.page_key, &format!("invoice-setup:{id}:{setup_ref}")))
}

fn setup_of_token(state: &AppState, id: &InvoiceId, token: &str) -> Option<String> {
    let (setup_ref, mac) = token.rsplit_once('.')?;
    csrf_ok(&state.page_key, &format!("invoice-setup:{id}:{setup_ref}"), mac).then(|| setup_ref.to_string())
}

/// `POST /pay/i/{id}/setup` (from the page's script, processor card fields only): starts a card
/// setup; answers with what the processor's script needs.
async fn start_setup(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    script_answer(start_setup_inner(&state, &req, &path, payload).await, "This invoice does not exist.")
}

async fn start_setup_inner(
    state: &AppState,
    req: &HttpRequest,
    raw_id: &str,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (data, form) = match posted(state, req, raw_id, payload).await? {
        Ok(posted) => posted,
        Err(_) => return Err(PageError::NotFound),
    };
    require_csrf(state, &data, &form)?;
    let id = data.invoice.invoice_id.clone();
    let back = || Ok(script_reply(StatusCode::OK, serde_json::json!({ "redirect": format!("/pay/i/{id}") })));
    if settled_page(state, &data)?.is_some() {
        return back();
    }
    if browser_script(state, data.owner.mode).is_none() {
        return Err(PageError::BadRequest("this invoice takes cards on its own form".into()));
    }
    if let Some(res) = super::rate_limited(state, req, super::Answer::Script) {
        return Ok(res);
    }
    match flow::start_setup(state, &id).await.map_err(flow_error)? {
        flow::SetupStart::Ready { setup_ref, client_secret } => Ok(script_reply(
            StatusCode::OK,
            serde_json::json!({ "attempt": setup_token(state, &id, &setup_ref), "client_secret": client_secret }),
        )),
        flow::SetupStart::Settled(_) => back(),
    }
}

/// `POST /pay/i/{id}/confirm`: the browser is back from the processor's card confirmation. What
/// happened is read from the processor, never taken from the browser.
async fn confirm_setup(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PageError> {
    let (data, form) = match posted(&state, &req, &path, payload).await? {
        Ok(posted) => posted,
        Err(page) => return Ok(page),
    };
    require_csrf(&state, &data, &form)?;
    let id = data.invoice.invoice_id.clone();
    let Some(setup_ref) = setup_of_token(&state, &id, field(&form, "attempt")) else {
        return Err(PageError::BadRequest("this card confirmation does not belong to this invoice".into()));
    };
    let result = flow::finish_setup(&state, &id, setup_ref).await;
    outcome_response(&state, &id, result).await
}
