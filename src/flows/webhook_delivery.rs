//! Delivering events to merchant webhook endpoints: a worker takes due deliveries with a lease (so
//! several instances never send one try twice), POSTs the event signed the Standard Webhooks way,
//! records the try, and schedules the next one on the back-off of API.md. At least once; the
//! `webhook-id` is the event id on every try.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::db::{self, webhook_deliveries::Claimed};
use crate::domain::timestamp::Timestamp;
use crate::domain::webhook_signature;
use crate::state::AppState;

use super::FlowError;

/// Seconds to wait after the n-th failed try (n = 1..=7) before the next; after the 8th, give up.
pub const RETRY_SCHEDULE: [i64; 7] = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
/// A 2xx within this is a success; anything slower is a failed try.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than a try can take: a worker that dies holding a delivery loses it after this.
pub const LEASE_SECONDS: i64 = 60;
/// An endpoint with nothing but failures for this long is disabled.
pub const DISABLE_AFTER_SECONDS: i64 = 5 * 86_400;
/// Tries in flight at once in one instance.
const CONCURRENCY: usize = 8;

/// When to try again after `tries` failed tries, or `None` when the schedule is used up.
pub fn next_attempt_after(tries: i64, now: Timestamp) -> Option<Timestamp> {
    let index = usize::try_from(tries).ok()?.checked_sub(1)?;
    RETRY_SCHEDULE.get(index).map(|wait| now.plus_seconds(*wait))
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        // A redirect is an answer that is not a 2xx: a failed try, never followed.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("flex-checkout-webhooks/", env!("CARGO_PKG_VERSION")))
}

/// Test mode may deliver anywhere (a merchant's laptop on localhost); live mode only to public
/// addresses, so a merchant cannot make this server call into the network it runs in.
fn client(live: bool) -> &'static reqwest::Client {
    static TEST: OnceLock<reqwest::Client> = OnceLock::new();
    static LIVE: OnceLock<reqwest::Client> = OnceLock::new();
    if live {
        LIVE.get_or_init(|| {
            builder().dns_resolver(std::sync::Arc::new(PublicOnly)).build().expect("a reqwest client with rustls")
        })
    } else {
        TEST.get_or_init(|| builder().build().expect("a reqwest client with rustls"))
    }
}

/// Whether an address is on the public internet (not loopback, private, link-local, shared,
/// documentation, multicast or unspecified).
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves names to their public addresses only.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> = found.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{} has no public address", name.as_str()).into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A live URL whose host is an address literal must be public (names are checked when resolved).
fn refused_destination(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let ip: std::net::IpAddr = match parsed.host()? {
        url::Host::Ipv4(v4) => v4.into(),
        url::Host::Ipv6(v6) => v6.into(),
        url::Host::Domain(_) => return None,
    };
    (!is_public(ip)).then(|| format!("refused: {ip} is not a public address"))
}

/// One pass: takes up to `limit` due deliveries and tries each once. Returns how many were tried.
pub async fn deliver_due(state: &AppState, limit: i64) -> Result<usize, FlowError> {
    let now = state.clock.now();
    let ids = {
        let mut conn = state.db.conn().await?;
        db::webhook_deliveries::due(&mut conn, now, limit).await?
    };
    let tried = futures_util::stream::iter(ids)
        .map(|id| async move {
            match try_one(state, &id).await {
                Ok(tried) => tried,
                Err(e) => {
                    tracing::warn!(delivery = %id, error = ?e, "webhook delivery failed to run");
                    false
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|tried| std::future::ready(*tried))
        .count()
        .await;
    Ok(tried)
}

async fn try_one(state: &AppState, id: &str) -> Result<bool, FlowError> {
    let now = state.clock.now();
    let claimed = {
        let mut conn = state.db.conn().await?;
        db::webhook_deliveries::claim(&mut conn, id, now, now.plus_seconds(LEASE_SECONDS)).await?
    };
    let Some(delivery) = claimed else { return Ok(false) };
    let (status_code, error, duration_ms) = send(&delivery, now).await;
    let succeeded = status_code.is_some_and(|c| (200..300).contains(&c));
    let finished = state.clock.now();
    let next_attempt_at = if succeeded { None } else { next_attempt_after(delivery.attempt_count, finished) };
    let mut tx = state.db.begin().await?;
    let recorded = db::webhook_deliveries::record_try(
        &mut tx,
        db::webhook_deliveries::TryResult {
            delivery: &delivery.id,
            endpoint: &delivery.endpoint_id,
            event: &delivery.event_id,
            status_code,
            duration_ms,
            error: error.as_deref(),
            succeeded,
            next_attempt_at,
        },
        finished,
    )
    .await?;
    if recorded && !succeeded {
        let reason = format!(
            "disabled after {} days in which every delivery failed; last error: {}",
            DISABLE_AFTER_SECONDS / 86_400,
            error.as_deref().unwrap_or("no 2xx answer")
        );
        let failing_before = finished.plus_seconds(-DISABLE_AFTER_SECONDS);
        if db::webhook_deliveries::disable_failing(&mut tx, &delivery.endpoint_id, failing_before, &reason, finished)
            .await?
        {
            tracing::warn!(endpoint = %delivery.endpoint_id, "webhook endpoint disabled after 5 days of failures");
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// POSTs the event; returns the status code (if any answer came), an error text for anything but a
/// 2xx, and how long it took.
async fn send(delivery: &Claimed, now: Timestamp) -> (Option<i64>, Option<String>, i64) {
    let timestamp = now.unix_seconds();
    let mut secrets = vec![delivery.secret.as_str()];
    if let (Some(previous), Some(until)) = (&delivery.previous_secret, delivery.previous_secret_expires_at) {
        if until > now.micros() {
            secrets.push(previous.as_str());
        }
    }
    let live = delivery.livemode != 0;
    if live {
        if let Some(refusal) = refused_destination(&delivery.url) {
            return (None, Some(refusal), 0);
        }
    }
    let body = delivery.payload.clone();
    let signature = webhook_signature::header(&secrets, &delivery.event_id, timestamp, body.as_bytes());
    let started = Instant::now();
    let sent = client(live)
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let elapsed = |started: Instant| i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    match sent {
        Ok(res) => {
            let code = i64::from(res.status().as_u16());
            // Read (a little of) the answer so the connection is finished cleanly.
            let _ = tokio::time::timeout(Duration::from_secs(1), res.bytes()).await;
            let error = (!(200..300).contains(&code)).then(|| format!("HTTP {code}"));
            (Some(code), error, elapsed(started))
        }
        Err(e) if e.is_timeout() => {
            (None, Some(format!("no answer within {} seconds", TIMEOUT.as_secs())), elapsed(started))
        }
        Err(e) if e.is_connect() => {
            // The resolver's refusal sits at the bottom of the error chain.
            let mut why = String::new();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                why = c.to_string();
                cause = c.source();
            }
            let text = if why.contains("no public address") { why } else { "could not connect".into() };
            (None, Some(text), elapsed(started))
        }
        Err(e) => (None, Some(format!("request failed: {e}")), elapsed(started)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_five_seconds_then_minutes_then_hours_then_gives_up() {
        let now = Timestamp::from_unix_seconds(1_800_000_000);
        let waits: Vec<i64> =
            (1..=7).map(|n| next_attempt_after(n, now).unwrap().unix_seconds() - now.unix_seconds()).collect();
        assert_eq!(waits, vec![5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(waits.iter().sum::<i64>(), 99_305, "about 28 hours in all");
        assert!(next_attempt_after(8, now).is_none());
        assert!(next_attempt_after(0, now).is_none());
    }

    #[test]
    fn live_deliveries_go_to_public_addresses_only() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        assert!(refused_destination("https://169.254.169.254/latest/meta-data").is_some());
        assert!(refused_destination("https://[::1]:8443/hook").is_some());
        assert!(refused_destination("https://hooks.example.com/x").is_none(), "names are checked when resolved");
    }
}
