//! Customer-facing HTML: the hosted checkout and invoice pages, the sandbox 3-D Secure page, message
//! pages, and the embedded static files. Every response carries the security headers; every POST a
//! CSRF token.

pub mod checkout;
pub mod invoice;

use std::sync::OnceLock;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use hmac::{Hmac, Mac};
use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::Mode;
use crate::error::PageError;
use crate::gateway::{BrowserScript, CardEntry};
use crate::state::AppState;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/static/{file}").route(web::get().to(asset)))
        .configure(checkout::routes)
        .configure(invoice::routes);
}

/// A short hash of every static file, added to their URLs so browsers can cache them for good.
pub fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hasher = Sha256::new();
        let mut names: Vec<_> = Assets::iter().collect();
        names.sort();
        for name in names {
            if let Some(file) = Assets::get(&name) {
                hasher.update(name.as_bytes());
                hasher.update(&file.data);
            }
        }
        hex::encode(&hasher.finalize()[..6])
    })
}

async fn asset(path: web::Path<String>) -> HttpResponse {
    match Assets::get(&path) {
        Some(file) => {
            let mime = mime_guess::from_path(path.as_str()).first_or_octet_stream();
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, mime.as_ref()))
                .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
                .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .body(file.data.into_owned())
        }
        None => not_found_page(),
    }
}

/// The headers every page gets. `extra_form_origin` is where a form on this page may redirect to
/// (the merchant's success URL), which Chrome checks against `form-action`.
pub fn secure_html(status: StatusCode, html: String, extra_form_origin: Option<&str>) -> HttpResponse {
    secure_html_with(status, html, content_security_policy(extra_form_origin, None))
}

/// Our own origin only, plus, on pages where the processor's script collects the card, exactly the
/// origins that script needs.
pub fn content_security_policy(extra_form_origin: Option<&str>, processor: Option<&BrowserScript>) -> String {
    let form_action = match extra_form_origin {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_string(),
    };
    let (script, connect, frame) = match processor {
        Some(p) => (
            format!("'self' {}", p.script_origin),
            format!("'self' {}", p.connect_origins.join(" ")),
            format!("frame-src {}; ", p.frame_origins.join(" ")),
        ),
        None => ("'self'".to_string(), "'self'".to_string(), String::new()),
    };
    format!(
        "default-src 'none'; script-src {script}; style-src 'self'; img-src 'self' data:; connect-src {connect}; \
         {frame}font-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )
}

pub fn secure_html_with(
    status: StatusCode,
    html: impl actix_web::body::MessageBody + 'static,
    csp: String,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CONTENT_SECURITY_POLICY, csp))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    text: &'a str,
    link: Option<(&'a str, &'a str)>,
    asset_version: &'a str,
    refresh: Option<&'a str>,
}

/// A page with a heading, a sentence and maybe one link (as `(href, label)`).
pub fn render_message(status: StatusCode, title: &str, text: &str, link: Option<(&str, &str)>) -> HttpResponse {
    render_message_page(status, title, text, link, None)
}

pub fn render_message_page(
    status: StatusCode,
    title: &str,
    text: &str,
    link: Option<(&str, &str)>,
    refresh: Option<&str>,
) -> HttpResponse {
    let page = MessagePage { title, text, link, asset_version: asset_version(), refresh };
    match page.render() {
        Ok(html) => secure_html(status, html, None),
        Err(e) => {
            tracing::error!(error = %e, "message page failed to render");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("Something went wrong. Please try again.")
        }
    }
}

pub fn not_found_page() -> HttpResponse {
    actix_web::ResponseError::error_response(&PageError::NotFound)
}

/// Anything outside the API and the pages: a friendly 404 page.
pub async fn fallback(req: HttpRequest) -> HttpResponse {
    if req.path().starts_with("/v1") {
        return actix_web::ResponseError::error_response(&crate::error::ApiError::route_not_found(req.path()));
    }
    not_found_page()
}

/// Reads a form body, refusing more than `limit` bytes with a page (not a bare error).
pub async fn read_form(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, PageError> {
    use futures_util::StreamExt;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| PageError::BadRequest("the form could not be read".into()))?;
        if body.len() + chunk.len() > limit {
            return Err(PageError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

type HmacSha256 = Hmac<Sha256>;

/// The CSRF token for forms about `subject` (a session id): an HMAC under the server's page key.
/// The message of a form's error for `field`, for the templates' `aria-describedby` notes.
pub fn field_error<'a>(errors: &'a [crate::domain::FieldError], field: &str) -> Option<&'a str> {
    errors.iter().find(|e| e.param == field).map(|e| e.message.as_str())
}

/// `aria-invalid` for `field`: "true" when the form has an error for it.
pub fn aria_invalid(errors: &[crate::domain::FieldError], field: &str) -> &'static str {
    if field_error(errors, field).is_some() {
        "true"
    } else {
        "false"
    }
}

/// The processor's script that collects cards on our pages, when the mode's gateway has one.
pub fn browser_script(state: &AppState, mode: Mode) -> Option<&BrowserScript> {
    match state.gateways.for_mode(mode)?.card_entry() {
        CardEntry::Browser(cards) => Some(cards.script()),
        CardEntry::OwnForm(_) => None,
    }
}

/// A JSON answer to a page's own script (never shown as a page).
pub fn script_reply(status: StatusCode, body: serde_json::Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .json(body)
}

pub fn script_message(status: StatusCode, message: &str) -> HttpResponse {
    script_reply(status, serde_json::json!({ "message": message }))
}

/// Who reads an answer: the browser as a page, or the page's own script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Page,
    Script,
}

/// The answer to a card post over the per-address limit (card-testing defence), if it is over.
pub fn rate_limited(state: &AppState, req: &HttpRequest, answer: Answer) -> Option<HttpResponse> {
    let over = req.peer_addr().map(|a| a.ip()).is_some_and(|ip| state.pay_limiter.check_key(&ip).is_err());
    if !over {
        return None;
    }
    let why = "Too many payment attempts from your network. Please wait a minute and try again.";
    let mut res = match answer {
        Answer::Page => render_message(StatusCode::TOO_MANY_REQUESTS, "Too many payment attempts", why, None),
        Answer::Script => script_message(StatusCode::TOO_MANY_REQUESTS, why),
    };
    res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
    Some(res)
}

/// A script request's answer, its failures as messages the page can show (never a page of HTML).
pub fn script_answer(result: Result<HttpResponse, PageError>, not_found: &str) -> HttpResponse {
    match result {
        Ok(res) => res,
        Err(PageError::NotFound) => script_message(StatusCode::NOT_FOUND, not_found),
        Err(PageError::Forbidden(why)) => script_message(StatusCode::FORBIDDEN, why),
        Err(PageError::TooLarge) => {
            script_message(StatusCode::PAYLOAD_TOO_LARGE, "That was more than this form takes.")
        }
        Err(PageError::Unavailable) => script_message(
            StatusCode::SERVICE_UNAVAILABLE,
            "We could not reach the payment service, and nothing was charged. Please try again in a moment.",
        ),
        Err(PageError::BadRequest(_)) => {
            script_message(StatusCode::BAD_REQUEST, "Something in this request was not right. Please reload the page.")
        }
        Err(PageError::Internal(_)) => script_message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on our side, and nothing was charged. Please try again in a moment.",
        ),
    }
}

pub fn csrf_token(key: &[u8], subject: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"csrf:");
    mac.update(subject.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub fn csrf_ok(key: &[u8], subject: &str, token: &str) -> bool {
    let expected = csrf_token(key, subject);
    expected.len() == token.len() && bool::from(expected.as_bytes().ct_eq(token.as_bytes()))
}

/// A POST must come from our own pages: a present `Origin` must be ours.
pub fn origin_ok(req: &HttpRequest, public_origin: &str) -> bool {
    match req.headers().get(header::ORIGIN).map(|o| o.to_str()) {
        None => true,
        Some(Ok(origin)) => origin == public_origin,
        Some(Err(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_bound_to_their_subject_and_key() {
        let t = csrf_token(b"key", "fcs_1");
        assert!(csrf_ok(b"key", "fcs_1", &t));
        assert!(!csrf_ok(b"key", "fcs_2", &t));
        assert!(!csrf_ok(b"other", "fcs_1", &t));
        assert!(!csrf_ok(b"key", "fcs_1", ""));
    }
}
