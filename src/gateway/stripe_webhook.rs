//! Inbound Stripe events: the `Stripe-Signature` check (every `v1` signature against every
//! configured secret, a five-minute window) and what an event means for us, read into small types
//! of our own (localstripe's objects do not fit the library's full typed events).
//!
//! The check is written out here rather than taken from async-stripe-webhook because that crate
//! verifies and parses in one step, into typed objects that localstripe's payloads do not fit, and
//! takes one secret where a rotation needs several.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::ChargeOutcome;

/// How far a signature's timestamp may be from our clock (Stripe's own default).
pub const TOLERANCE_SECONDS: i64 = 300;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp (t=) or no v1 signature")]
    Malformed,
    #[error("the Stripe-Signature timestamp is more than {TOLERANCE_SECONDS} seconds from now")]
    OutsideTolerance,
    #[error("no v1 signature matches any configured STRIPE_WEBHOOK_SECRET")]
    NoMatch,
}

/// Checks `header` (the `Stripe-Signature` value) for `body` at `now` (Unix seconds).
pub fn verify(header: Option<&str>, body: &[u8], secrets: &[String], now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", sig)) => {
                if let Ok(bytes) = hex::decode(sig) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    let t_value: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t_value).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::OutsideTolerance);
    }
    for secret in secrets {
        let expected = sign(secret, t, body);
        if signatures.iter().any(|s| bool::from(s.as_slice().ct_eq(&expected))) {
            return Ok(());
        }
    }
    Err(SignatureError::NoMatch)
}

/// HMAC-SHA256 of `{t}.{body}` under the secret's text, as Stripe signs.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    livemode: bool,
    data: EventData,
}

/// An event's own identity: Stripe's id (stable across redeliveries), type and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeader {
    pub id: String,
    pub event_type: String,
    /// The id of the object the event is about (`pi_...`, `seti_...`).
    pub object_id: String,
    pub livemode: bool,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: EventObject,
}

#[derive(Debug, Deserialize)]
struct EventObject {
    id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    metadata: Option<std::collections::HashMap<String, serde_json::Value>>,
    #[serde(default)]
    last_payment_error: Option<ErrorObject>,
}

#[derive(Debug, Deserialize)]
struct ErrorObject {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
}

/// What a Stripe event tells us.
#[derive(Debug, PartialEq, Eq)]
pub enum ProcessorUpdate {
    /// A charge made for one of our attempts has a new state.
    Charge { attempt: String, outcome: ChargeOutcome },
    /// A card setup started for one of our attempts moved on: read it from Stripe.
    Setup { attempt: String },
    /// Not about anything of ours, or a kind of event we do not act on.
    Ignored,
}

/// Reads an event body. `Err` only for a body that is not an event at all.
pub fn parse(body: &[u8]) -> Result<(EventHeader, ProcessorUpdate), String> {
    let event: Event = serde_json::from_slice(body).map_err(|e| format!("not a Stripe event: {e}"))?;
    let header = EventHeader {
        id: event.id,
        event_type: event.event_type.clone(),
        object_id: event.data.object.id.clone(),
        livemode: event.livemode,
    };
    let object = event.data.object;
    let ours =
        |key: &str| object.metadata.as_ref().and_then(|m| m.get(key)).and_then(|v| v.as_str()).map(str::to_string);
    let update = match event.event_type.as_str() {
        "payment_intent.succeeded"
        | "payment_intent.payment_failed"
        | "payment_intent.canceled"
        | "payment_intent.requires_action"
        | "payment_intent.amount_capturable_updated" => match (ours("flex_attempt"), object.status.as_deref()) {
            (Some(attempt), Some(status)) => {
                let (code, decline) = object
                    .last_payment_error
                    .as_ref()
                    .map(|e| (e.code.as_deref(), e.decline_code.as_deref()))
                    .unwrap_or((None, None));
                match super::stripe::outcome_for(&object.id, status, code, decline) {
                    Some(outcome) => ProcessorUpdate::Charge { attempt, outcome },
                    None => ProcessorUpdate::Ignored,
                }
            }
            _ => ProcessorUpdate::Ignored,
        },
        "setup_intent.succeeded"
        | "setup_intent.setup_failed"
        | "setup_intent.canceled"
        | "setup_intent.requires_action" => match ours("flex_reference") {
            Some(attempt) => ProcessorUpdate::Setup { attempt },
            None => ProcessorUpdate::Ignored,
        },
        _ => ProcessorUpdate::Ignored,
    };
    Ok((header, update))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::payment::DeclineCode;

    fn header(secret: &str, t: i64, body: &[u8]) -> String {
        format!("t={t},v1={}", hex::encode(sign(secret, &t.to_string(), body)))
    }

    #[test]
    fn any_v1_signature_under_any_secret_within_five_minutes_is_accepted() {
        let body = br#"{"id":"evt_1"}"#;
        let secrets = vec!["whsec_old".to_string(), "whsec_new".to_string()];
        let now = 1_800_000_000;
        assert_eq!(verify(Some(&header("whsec_new", now, body)), body, &secrets, now), Ok(()));
        assert_eq!(verify(Some(&header("whsec_old", now - 299, body)), body, &secrets, now), Ok(()));
        // Stripe sends one v1 per active secret of the endpoint during its own rotation.
        let two = format!(
            "t={now},v1={},v1={},v0=ignored",
            hex::encode(sign("whsec_other", &now.to_string(), body)),
            hex::encode(sign("whsec_new", &now.to_string(), body))
        );
        assert_eq!(verify(Some(&two), body, &secrets, now), Ok(()));
    }

    #[test]
    fn tampering_old_signatures_and_junk_are_refused() {
        let body = br#"{"id":"evt_1"}"#;
        let secrets = vec!["whsec_new".to_string()];
        let now = 1_800_000_000;
        let good = header("whsec_new", now, body);
        assert_eq!(verify(Some(&good), br#"{"id":"evt_2"}"#, &secrets, now), Err(SignatureError::NoMatch));
        assert_eq!(verify(Some(&header("whsec_x", now, body)), body, &secrets, now), Err(SignatureError::NoMatch));
        assert_eq!(
            verify(Some(&header("whsec_new", now - 301, body)), body, &secrets, now),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(verify(None, body, &secrets, now), Err(SignatureError::Missing));
        for junk in ["", "t=", "v1=abcd", "t=abc,v1=00", "t=1800000000", "t=1800000000,v1=zz"] {
            assert_eq!(verify(Some(junk), body, &secrets, now), Err(SignatureError::Malformed), "{junk}");
        }
    }

    #[test]
    fn events_about_our_attempts_become_updates() {
        let pi =
            br#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","status":"succeeded",
            "metadata":{"flex_attempt":"fpa_1"}}}}"#;
        assert_eq!(
            parse(pi).unwrap().1,
            ProcessorUpdate::Charge {
                attempt: "fpa_1".into(),
                outcome: ChargeOutcome::Succeeded { gateway_ref: "pi_1".into() }
            }
        );
        let failed = br#"{"id":"evt_1","type":"payment_intent.payment_failed","data":{"object":{"id":"pi_2",
            "status":"requires_payment_method","metadata":{"flex_attempt":"fpa_2"},
            "last_payment_error":{"code":"card_declined","decline_code":"insufficient_funds"}}}}"#;
        assert_eq!(
            parse(failed).unwrap().1,
            ProcessorUpdate::Charge {
                attempt: "fpa_2".into(),
                outcome: ChargeOutcome::Declined { code: DeclineCode::InsufficientFunds }
            }
        );
        let seti =
            br#"{"id":"evt_1","type":"setup_intent.succeeded","data":{"object":{"id":"seti_1","status":"succeeded",
            "metadata":{"flex_reference":"fpa_3"}}}}"#;
        assert_eq!(parse(seti).unwrap().1, ProcessorUpdate::Setup { attempt: "fpa_3".into() });
        let theirs =
            br#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_9","status":"succeeded"}}}"#;
        assert_eq!(parse(theirs).unwrap().1, ProcessorUpdate::Ignored);
        let other = br#"{"id":"evt_1","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
        assert_eq!(parse(other).unwrap().1, ProcessorUpdate::Ignored);
        assert!(parse(b"[]").is_err());
    }
}
