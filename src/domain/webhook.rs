//! Merchant webhook endpoints as the API shows them, the event types they may subscribe to, and the
//! rules for what a merchant may send: URL as for `success_url`, a closed list of event types (or
//! `*`), a signing secret that is shown in full only when it is made.

use serde::Serialize;

use super::ids::WebhookEndpointId;
use super::metadata::Metadata;
use super::timestamp::Timestamp;
use super::{text, wire_enum, FieldError, Mode};

/// Every event type we emit or have promised in API.md. An endpoint subscribing to a type outside
/// this list would silently never hear anything, so such a subscription is refused instead.
pub const EVENT_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.expired",
    "consultation.approved",
    "customer.consultation.attached",
    "customer.created",
    "customer.subscription.created",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "customer.subscription.updated",
    "customer.updated",
    "invoice.created",
    "invoice.finalized",
    "invoice.marked_uncollectible",
    "invoice.overdue",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "invoice.upcoming",
    "invoice.voided",
    "payment_intent.amount_capturable_updated",
    "payment_intent.payment_failed",
    "payment_intent.succeeded",
    "price.created",
    "price.updated",
    "product.created",
    "product.updated",
    "refund.created",
    "refund.failed",
];

/// Subscribes to every type, present and future.
pub const ALL_EVENTS: &str = "*";
pub const MAX_EVENTS: usize = 64;
pub const URL_MAX: usize = 2048;
pub const DESCRIPTION_MAX: usize = 500;
/// Every endpoint gets its own copy of every event: a cap keeps one merchant's fan-out bounded.
pub const MAX_ENDPOINTS_PER_MODE: i64 = 16;
/// How long the secret replaced by a rotation keeps signing beside the new one.
pub const PREVIOUS_SECRET_SECONDS: i64 = 24 * 3600;

wire_enum!(
    /// What a merchant can set. Deletion is not a status the API shows: a deleted endpoint is gone.
    WebhookStatus {
        Enabled => "enabled",
        Disabled => "disabled",
    }
);

#[derive(Clone, Debug, Serialize)]
pub struct WebhookEndpoint {
    pub webhook_id: WebhookEndpointId,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub status: WebhookStatus,
    /// Why the endpoint stopped receiving events (failing deliveries, or the merchant's own call).
    pub disabled_reason: Option<String>,
    /// In full only in the answers that create it (create, rotate); `whsec_...abcd` elsewhere.
    pub signing_secret: String,
    /// While a rotated-out secret still signs beside the new one.
    pub previous_secret_expires_at: Option<Timestamp>,
    pub metadata: Option<Metadata>,
    pub test_mode: bool,
    pub created_at: Timestamp,
    /// Only in the answer to a delete.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// Enough of a secret to tell which one is configured, not enough to sign with.
pub fn redact_secret(secret: &str) -> String {
    let body = secret.strip_prefix(super::webhook_signature::SECRET_PREFIX).unwrap_or(secret).trim_end_matches('=');
    let tail: String = body.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{}...{tail}", super::webhook_signature::SECRET_PREFIX)
}

/// An endpoint URL: the rules of `success_url` (absolute https; http only to a loopback host in
/// test mode), and required.
pub fn url(raw: &str, param: &str, mode: Mode) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(FieldError::new(
            param,
            format!("{param} must be an absolute https URL like https://example.com/hooks"),
        ));
    }
    if value.len() > URL_MAX {
        return Err(FieldError::new(param, format!("{param} must be at most {URL_MAX} characters")));
    }
    // `{CHECKOUT_SESSION_ID}` means something only in a redirect.
    if value.contains('{') || value.contains('}') {
        return Err(FieldError::new(param, format!("{param} must not contain `{{` or `}}`")));
    }
    text::redirect_url(value, param, mode)
}

/// The `events` list: 1 to 64 known types without repeats, or `["*"]` alone.
pub fn events(raw: &[String], param: &str) -> Result<Vec<String>, FieldError> {
    if raw.is_empty() {
        return Err(FieldError::new(
            param,
            format!("{param} must list at least one event type, or be [\"*\"] for all of them"),
        ));
    }
    if raw.len() > MAX_EVENTS {
        return Err(FieldError::new(param, format!("{param} can list at most {MAX_EVENTS} event types")));
    }
    for (i, t) in raw.iter().enumerate() {
        let item = format!("{param}[{i}]");
        if t == ALL_EVENTS {
            if raw.len() > 1 {
                return Err(FieldError::new(
                    item,
                    format!("`*` already means every event type: send {param} as [\"*\"] alone"),
                ));
            }
            continue;
        }
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(FieldError::new(
                item,
                format!("`{t}` is not an event type; use `*` or any of {}", EVENT_TYPES.join(", ")),
            ));
        }
        if raw[..i].contains(t) {
            return Err(FieldError::new(item, format!("`{t}` is listed twice in {param}")));
        }
    }
    Ok(raw.to_vec())
}

pub fn description(raw: &str, param: &str) -> Result<Option<String>, FieldError> {
    text::optional_text(raw, param, DESCRIPTION_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn event_lists() {
        assert_eq!(events(&strings(&["*"]), "webhook.events").unwrap(), vec!["*"]);
        assert!(events(&strings(&["invoice.paid", "checkout.session.completed"]), "webhook.events").is_ok());
        let err = events(&strings(&["invoice.paid", "invoice.pad"]), "webhook.events").unwrap_err();
        assert_eq!(err.param, "webhook.events[1]");
        assert!(err.message.contains("invoice.payment_failed"), "{}", err.message);
        assert_eq!(events(&[], "webhook.events").unwrap_err().param, "webhook.events");
        let err = events(&strings(&["invoice.paid", "invoice.paid"]), "webhook.events").unwrap_err();
        assert_eq!(err.param, "webhook.events[1]");
        assert_eq!(events(&strings(&["invoice.paid", "*"]), "webhook.events").unwrap_err().param, "webhook.events[1]");
        let many: Vec<String> = std::iter::repeat_n("*".to_string(), MAX_EVENTS + 1).collect();
        assert_eq!(events(&many, "webhook.events").unwrap_err().param, "webhook.events");
    }

    #[test]
    fn urls_follow_the_success_url_rules_and_are_required() {
        assert!(url("https://shop.example/hooks", "webhook.url", Mode::Live).is_ok());
        assert!(url("http://127.0.0.1:8080/hooks", "webhook.url", Mode::Test).is_ok());
        for bad in ["", "  ", "ftp://shop.example/x", "http://shop.example/hooks", "/hooks", "https://a/{x}"] {
            assert_eq!(url(bad, "webhook.url", Mode::Test).unwrap_err().param, "webhook.url", "{bad}");
        }
        assert!(url("http://localhost/hooks", "webhook.url", Mode::Live).is_err());
        let long = format!("https://shop.example/{}", "a".repeat(URL_MAX));
        assert!(url(&long, "webhook.url", Mode::Live).is_err());
    }

    #[test]
    fn redaction_keeps_only_the_last_four_characters() {
        assert_eq!(redact_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "whsec_...LaSw");
        let s = super::super::webhook_signature::new_secret();
        let r = redact_secret(&s);
        assert!(r.starts_with("whsec_...") && r.len() == "whsec_...".len() + 4, "{r}");
        assert!(!r.contains('='));
    }
}
