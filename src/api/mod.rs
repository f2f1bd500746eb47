//! The merchant JSON API under `/v1`: authentication, request parsing into the error envelope,
//! idempotency, pagination, and one file per resource.

pub mod auth;
pub mod billing_settings;
pub mod checkout_sessions;
pub mod customers;
pub mod events;
pub mod idempotency;
pub mod invoices;
pub mod payment_intents;
pub mod prices;
pub mod products;
pub mod refunds;
pub mod stripe_webhook;
pub mod subscriptions;
pub mod test_clocks;
pub mod webhooks;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::db::Cursor;
use crate::error::ApiError;

/// Request bodies larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .configure(products::routes)
            .configure(prices::routes)
            .configure(customers::routes)
            .configure(checkout_sessions::routes)
            .configure(payment_intents::routes)
            .configure(refunds::routes)
            .configure(subscriptions::routes)
            .configure(invoices::routes)
            .configure(events::routes)
            .configure(webhooks::routes)
            .configure(test_clocks::routes)
            .configure(billing_settings::routes)
            .default_service(web::to(not_found)),
    )
    .configure(stripe_webhook::routes);
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::route_not_found(req.path()))
}

/// Answer for a known path with an unsupported method.
pub async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::method_not_allowed(req.method().as_str(), req.path()))
}

/// Reads the whole body, refusing more than `MAX_BODY_BYTES`.
pub async fn read_body(mut payload: web::Payload) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::bad_request("body_unreadable", "the request body could not be read"))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a body shaped `{"<envelope>": {...}}` into `T`, naming the offending field on error.
/// With `bare_allowed`, the object may also come unwrapped (subscriptions follow seed 002).
pub fn parse_body<T: DeserializeOwned>(body: &[u8], envelope: &str, bare_allowed: bool) -> Result<T, ApiError> {
    let example = format!("{{\"{envelope}\": {{...}}}}");
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request(
            "body_missing",
            format!("the request body must be a JSON object like {example}"),
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "json_invalid",
            format!(
                "the request body is not valid JSON (line {}, column {}): {}",
                e.line(),
                e.column(),
                json_reason(&e)
            ),
        )
    })?;
    let Value::Object(mut outer) = value else {
        return Err(ApiError::bad_request(
            "body_not_object",
            format!("the request body must be a JSON object like {example}"),
        ));
    };
    let inner = if outer.contains_key(envelope) {
        if let Some(extra) = outer.keys().find(|k| k.as_str() != envelope) {
            return Err(ApiError::invalid(
                extra.clone(),
                format!("unknown field `{extra}`: put every field inside `{envelope}`"),
            ));
        }
        outer.remove(envelope).unwrap_or(Value::Null)
    } else if bare_allowed {
        Value::Object(outer)
    } else {
        return Err(ApiError::invalid(
            envelope,
            format!("wrap the {} in an object like {example}", envelope.replace('_', " ")),
        ));
    };
    if !inner.is_object() {
        return Err(ApiError::invalid(envelope, format!("`{envelope}` must be a JSON object")));
    }
    let prefix = if bare_allowed { String::new() } else { envelope.to_string() };
    serde_path_to_error::deserialize::<_, T>(inner).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let mut param = if path == "." { prefix.clone() } else { join(&prefix, &path) };
        if let Some(field) = quoted_after(&message, "unknown field `") {
            // The path already ends at the unknown field.
            if !param.ends_with(&field) {
                param = join(&param, &field);
            }
            ApiError::invalid(
                param.clone(),
                format!("unknown field `{field}`; check the spelling (see the API reference)"),
            )
        } else if let Some(field) = quoted_after(&message, "missing field `") {
            param = join(&param, &field);
            ApiError::missing(&param)
        } else {
            ApiError::invalid(param.clone(), format!("{param}: {}", friendly_serde(&message)))
        }
    })
}

fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (_, true) => prefix.to_string(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

fn quoted_after(message: &str, marker: &str) -> Option<String> {
    let start = message.find(marker)? + marker.len();
    let end = message[start..].find('`')?;
    Some(message[start..start + end].to_string())
}

/// serde's own words, made plainer for a merchant reading an error.
fn friendly_serde(message: &str) -> String {
    let message = message.replace("expected i64", "expected an integer").replace("expected u32", "expected an integer");
    match message.split_once(" at line ") {
        Some((head, _)) => head.to_string(),
        None => message,
    }
}

fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.split_once(" at line ") {
        Some((head, _)) => head.to_string(),
        None => text,
    }
}

/// A 200 (or `status`) JSON answer.
pub fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .content_type("application/json")
        .body(body.to_string())
}

/// `{"<key>": object}`.
pub fn wrap<T: serde::Serialize>(key: &str, object: &T) -> Value {
    json!({ key: object })
}

/// Query parameters, with every name checked against what the endpoint accepts.
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(req: &HttpRequest, allowed: &[&str]) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (k, v) in &pairs {
            if v.chars().any(char::is_control) || v.len() > 500 {
                return Err(ApiError::invalid(
                    k.clone(),
                    format!("{k} must be at most 500 characters, none of them control characters"),
                ));
            }
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::invalid(
                    k.clone(),
                    format!("unknown query parameter `{k}`; this endpoint accepts {}", allowed.join(", ")),
                ));
            }
        }
        Ok(Query { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::invalid(name, format!("{name} must be `true` or `false`, not `{other}`"))),
        }
    }

    /// `limit`, `starting_after`, `ending_before`, each checked; cursor ids must carry `prefix`.
    pub fn cursor(&self, prefix: &str) -> Result<Cursor, ApiError> {
        let limit = match self.get("limit") {
            None => 10,
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=100).contains(l))
                .ok_or_else(|| ApiError::invalid("limit", "limit must be an integer from 1 to 100"))?,
        };
        let id = |name: &str| -> Result<Option<String>, ApiError> {
            match self.get(name) {
                None => Ok(None),
                Some(v) => match v.strip_prefix(prefix).filter(|rest| rest.len() == 26).map(ulid::Ulid::from_string) {
                    Some(Ok(ulid)) => Ok(Some(format!("{prefix}{ulid}"))),
                    _ => Err(ApiError::invalid(name, format!("{name} must be an object id starting with {prefix}"))),
                },
            }
        };
        let starting_after = id("starting_after")?;
        let ending_before = id("ending_before")?;
        if starting_after.is_some() && ending_before.is_some() {
            return Err(ApiError::invalid("ending_before", "use either starting_after or ending_before, not both"));
        }
        Ok(Cursor { limit, starting_after, ending_before })
    }
}

pub const LIST_PARAMS: [&str; 3] = ["limit", "starting_after", "ending_before"];

/// `{"<plural>": [...], "has_more": bool}`.
pub fn list_body<T: serde::Serialize>(plural: &str, page: &crate::db::Page<T>) -> Value {
    json!({ plural: page.items, "has_more": page.has_more })
}

/// Deserializes a field that may be absent (`None`), null (`Some(None)`) or a value.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Ok(Some(Option::<T>::deserialize(d)?))
}

use serde::Deserialize;
