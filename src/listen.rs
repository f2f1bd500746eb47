//! `flex-checkout listen`: prints a merchant's events as they happen and forwards each one, signed
//! like a webhook delivery, to a local URL, so a handler can be developed without a public
//! endpoint (what `stripe listen` does for Stripe).
//!
//! It reads events through the public API only (`GET /v1/events` with the merchant's key), so it
//! works against any server the key is valid for, local or remote, with no database access.
//! Forwarding is best effort, as with `stripe listen`: one attempt per event, no retries; the
//! server's own webhook deliveries are what carry the at-least-once promise.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;
use ulid::Ulid;

use crate::config::{http_url, ListenArgs};
use crate::domain::ids::EventId;
use crate::domain::webhook_signature;
use crate::flows::keys;

/// Event ids are ULIDs taken when a transaction writes its event, so a transaction that started
/// earlier but committed later (or ran on another instance whose clock is a little behind) makes an
/// event appear *behind* ones already seen. Each poll therefore re-reads this far behind the newest
/// event handled and skips the ones it already handled, instead of trusting "newer than the last id".
const LOOKBACK: Duration = Duration::from_secs(10);
/// The API's largest page.
const PAGE_LIMIT: usize = 100;
/// The same limit the server's webhook deliveries have.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough for a slow server, short enough that a hung one is noticed and retried.
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// The checked arguments.
#[derive(Debug)]
struct Options {
    events_url: url::Url,
    api_key: String,
    forward_to: Option<url::Url>,
    /// Empty: every type.
    event_types: Vec<String>,
    secret: String,
    poll_interval: Duration,
}

impl Options {
    fn from_args(args: ListenArgs) -> anyhow::Result<Options> {
        if keys::mode_of_secret(args.api_key.trim()).is_none() {
            anyhow::bail!("--api-key (FLEX_API_KEY) must be a secret API key: fsk_test_... or fsk_...");
        }
        let api_url = http_url("--api-url (FLEX_API_URL)", args.api_url.trim())?;
        let events_url = url::Url::parse(&format!("{}/v1/events", api_url.as_str().trim_end_matches('/')))?;
        let forward_to = args.forward_to.as_deref().map(|u| http_url("--forward-to", u.trim())).transpose()?;
        let mut event_types = Vec::new();
        for raw in &args.events {
            let t = raw.trim();
            if t == "*" {
                event_types.clear();
                break;
            }
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_')
            {
                anyhow::bail!("--events must be event types separated by commas (e.g. checkout.session.completed,invoice.paid), not `{raw}`");
            }
            event_types.push(t.to_string());
        }
        let secret = match args.secret {
            Some(s) if webhook_signature::key_of(s.trim()).is_some() => s.trim().to_string(),
            Some(_) => anyhow::bail!("--secret must be a signing secret: whsec_ followed by base64"),
            None => webhook_signature::new_secret(),
        };
        if args.poll_interval_ms == 0 {
            anyhow::bail!("--poll-interval-ms must be at least 1");
        }
        Ok(Options {
            events_url,
            api_key: args.api_key.trim().to_string(),
            forward_to,
            event_types,
            secret,
            poll_interval: Duration::from_millis(args.poll_interval_ms),
        })
    }

    fn wanted(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// Runs until Ctrl-C or SIGTERM (then `Ok`), or until the API refuses the key or answers in a way
/// waiting will not fix (then the error).
pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let options = Options::from_args(args)?;
    tokio::select! {
        result = listen(options) => result,
        () = stop_signal() => Ok(()),
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn listen(options: Options) -> anyhow::Result<()> {
    let mut source = ApiSource {
        client: reqwest::Client::builder().timeout(API_TIMEOUT).build()?,
        url: options.events_url.clone(),
        key: options.api_key.clone(),
    };
    let forwarder = reqwest::Client::builder()
        .timeout(FORWARD_TIMEOUT)
        // A redirect is a failed delivery for the server's webhooks too; show it rather than follow it.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let retry_every = options.poll_interval.max(Duration::from_secs(1));
    let mut outage = Outage::default();

    // The newest events now are "before listen started": remembered, never replayed.
    let mut tracker = loop {
        match source.page(None).await {
            Ok(page) => {
                outage.over(&options.events_url);
                break Tracker::primed(&page_ids(&page)?, page.has_more, LOOKBACK);
            }
            Err(FetchError::Fatal(message)) => anyhow::bail!(message),
            Err(FetchError::Unavailable(message)) => {
                outage.notice(&message, retry_every);
                tokio::time::sleep(retry_every).await;
            }
        }
    };

    let mode = match keys::mode_of_secret(&options.api_key) {
        Some(crate::domain::Mode::Live) => "live",
        _ => "test",
    };
    let types = if options.event_types.is_empty() { "all events".to_string() } else { options.event_types.join(", ") };
    match &options.forward_to {
        Some(url) => println!("Forwarding {types} ({mode} mode) from {} to {url}", source.url),
        None => println!("Printing {types} ({mode} mode) from {} (no --forward-to: not forwarding)", source.url),
    }
    println!("Ready! Your webhook signing secret is {} (^C to quit)", options.secret);

    loop {
        match poll(&mut source, &mut tracker).await {
            Ok(events) => {
                outage.over(&options.events_url);
                for event in events {
                    handle(&options, &forwarder, &event).await;
                }
                tokio::time::sleep(options.poll_interval).await;
            }
            Err(FetchError::Fatal(message)) => anyhow::bail!(message),
            Err(FetchError::Unavailable(message)) => {
                outage.notice(&message, retry_every);
                tokio::time::sleep(retry_every).await;
            }
        }
    }
}

/// Says once that the server cannot be reached, and once that it can again, instead of a line per
/// failed poll.
#[derive(Default)]
struct Outage {
    down: bool,
}

impl Outage {
    fn notice(&mut self, message: &str, retry_every: Duration) {
        if !self.down {
            eprintln!("! {message}; retrying every {} s (^C to quit)", retry_every.as_secs());
            self.down = true;
        }
    }

    fn over(&mut self, url: &url::Url) {
        if self.down {
            eprintln!("! {url} answers again");
            self.down = false;
        }
    }
}

/// Prints one event and, when asked to, forwards it.
async fn handle(options: &Options, forwarder: &reqwest::Client, event: &Value) {
    let id = event["event_id"].as_str().unwrap_or_default();
    let event_type = event["event_type"].as_str().unwrap_or_default();
    if !options.wanted(event_type) {
        return;
    }
    let created = event["created_at"].as_str().map(display_time).unwrap_or_default();
    println!("{created}  --> {event_type} [{id}]");
    let Some(url) = &options.forward_to else { return };
    let outcome = forward(forwarder, url, &options.secret, id, event).await;
    let now = display_time(&OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default());
    match outcome {
        Ok(status) if status.is_redirection() => {
            println!("{now}  <-- [{}] POST {url} [{id}] (redirects are not followed)", status.as_u16())
        }
        Ok(status) => println!("{now}  <-- [{}] POST {url} [{id}]", status.as_u16()),
        Err(e) => println!("{now}  <-- [ERROR] POST {url} [{id}]: {e}"),
    }
}

/// One POST of the event, signed with the Standard Webhooks headers the server's deliveries carry.
async fn forward(
    client: &reqwest::Client,
    url: &url::Url,
    secret: &str,
    id: &str,
    event: &Value,
) -> Result<reqwest::StatusCode, String> {
    // The signature covers exactly these bytes, and these bytes are what is sent.
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let timestamp = i64::try_from(timestamp).unwrap_or(i64::MAX);
    let signature = webhook_signature::header(&[secret], id, timestamp, &body);
    let res = client
        .post(url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match res {
        Ok(res) => Ok(res.status()),
        Err(e) if e.is_timeout() => Err(format!("no answer within {} s", FORWARD_TIMEOUT.as_secs())),
        Err(e) => Err(describe(&e)),
    }
}

/// `2024-04-26 18:39:43` (UTC) from RFC 3339, or the text as given if it is not RFC 3339.
fn display_time(rfc3339: &str) -> String {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .and_then(|t| {
            t.to_offset(time::UtcOffset::UTC)
                .format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"))
                .ok()
        })
        .unwrap_or_else(|| rfc3339.to_string())
}

/// A request error in a line: the root cause ("Connection refused"), which reqwest's own message
/// ("error sending request for url ...") hides behind layers that repeat the URL.
fn describe(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(source) = root.source() {
        root = source;
    }
    root.to_string()
}

/// One page of `GET /v1/events`, as the API orders it: newest first.
#[derive(Debug, Clone)]
struct Page {
    events: Vec<Value>,
    has_more: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum FetchError {
    /// Not reachable, or failing for now (5xx, 429): wait and ask again.
    #[error("{0}")]
    Unavailable(String),
    /// Waiting will not help (the key is refused, the URL is not this API): stop with this message.
    #[error("{0}")]
    Fatal(String),
}

/// Where pages of events come from: the API, or a fake in the unit tests.
trait EventSource {
    /// `ending_before`: the events just after that id (at most a page of them, newest first, and
    /// `has_more` when there are later ones); `None`: the newest page.
    fn page(&mut self, ending_before: Option<&str>) -> impl Future<Output = Result<Page, FetchError>>;
}

struct ApiSource {
    client: reqwest::Client,
    url: url::Url,
    key: String,
}

impl EventSource for ApiSource {
    async fn page(&mut self, ending_before: Option<&str>) -> Result<Page, FetchError> {
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair("limit", &PAGE_LIMIT.to_string());
        if let Some(cursor) = ending_before {
            url.query_pairs_mut().append_pair("ending_before", cursor);
        }
        let res = self
            .client
            .get(url)
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| FetchError::Unavailable(format!("cannot reach {}: {}", self.url, describe(&e))))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| FetchError::Unavailable(format!("{} broke off its answer: {}", self.url, describe(&e))))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        let message = body
            .as_ref()
            .and_then(|b| b["error"]["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(200).collect());
        match status.as_u16() {
            200..=299 => {
                let page =
                    body.as_ref().and_then(|b| Some((b["events"].as_array()?.clone(), b["has_more"].as_bool()?)));
                match page {
                    Some((events, has_more)) => Ok(Page { events, has_more }),
                    None => Err(FetchError::Fatal(format!(
                        "{} did not answer with a list of events; is --api-url (FLEX_API_URL) a flex-checkout server?",
                        self.url
                    ))),
                }
            }
            401 | 403 => Err(FetchError::Fatal(format!(
                "the server refused the API key from --api-key (FLEX_API_KEY) with {status}: {message}"
            ))),
            408 | 429 | 500..=599 => Err(FetchError::Unavailable(format!("{} answered {status}: {message}", self.url))),
            _ => Err(FetchError::Fatal(format!(
                "{} answered {status}: {message} (is --api-url (FLEX_API_URL) right?)",
                self.url
            ))),
        }
    }
}

fn event_ulid(event: &Value) -> Option<Ulid> {
    let raw = event["event_id"].as_str()?.strip_prefix(EventId::PREFIX)?;
    Ulid::from_string(raw).ok()
}

fn page_ids(page: &Page) -> Result<Vec<Ulid>, FetchError> {
    page.events
        .iter()
        .map(|e| {
            event_ulid(e)
                .ok_or_else(|| FetchError::Fatal(format!("the API sent an event without a valid event_id: {e}")))
        })
        .collect()
}

/// Which events have been handled: every id above `floor` that is in `seen`. Ids at or below the
/// floor count as handled without being kept, so memory stays bounded by the lookback window.
#[derive(Debug)]
struct Tracker {
    floor: Ulid,
    seen: BTreeSet<Ulid>,
    lookback_ms: u64,
}

impl Tracker {
    /// From the newest page when listening starts (newest first): all of it counts as handled.
    fn primed(newest_first: &[Ulid], has_more: bool, lookback: Duration) -> Tracker {
        let lookback_ms = u64::try_from(lookback.as_millis()).unwrap_or(u64::MAX);
        let mut tracker = Tracker { floor: Ulid::nil(), seen: newest_first.iter().copied().collect(), lookback_ms };
        if has_more {
            // Older events exist that are not in `seen`: keep them below the floor, or the first poll
            // of a busy lookback window would replay them.
            tracker.floor = newest_first.last().copied().unwrap_or_default();
        }
        tracker.settle();
        tracker
    }

    /// True the first time a new event's id is offered.
    fn admit(&mut self, id: Ulid) -> bool {
        id > self.floor && self.seen.insert(id)
    }

    /// Raises the floor to the lookback edge behind the newest event handled and forgets ids below it.
    fn settle(&mut self) {
        if let Some(newest) = self.seen.last() {
            let edge = Ulid::from_parts(newest.timestamp_ms().saturating_sub(self.lookback_ms), 0);
            self.floor = self.floor.max(edge);
        }
        let floor = self.floor;
        self.seen.retain(|id| *id > floor);
    }
}

/// One round: every event above the floor not handled yet, oldest first. Nothing is marked handled
/// unless every page was read, so a failure half-way loses nothing: the next round reads it again.
async fn poll<S: EventSource>(source: &mut S, tracker: &mut Tracker) -> Result<Vec<Value>, FetchError> {
    let mut pages = Vec::new();
    let mut cursor = tracker.floor;
    loop {
        let page = source.page(Some(&format!("{}{cursor}", EventId::PREFIX))).await?;
        let ids = page_ids(&page)?;
        let has_more = page.has_more;
        pages.push((ids.clone(), page.events));
        // The page holds the events just after the cursor, newest first: the next page starts after
        // its newest. A server that would hand back the same cursor again ends the round instead.
        match ids.first() {
            Some(&newest) if has_more && newest > cursor => cursor = newest,
            _ => break,
        }
    }
    let mut fresh = Vec::new();
    for (ids, events) in pages {
        for (id, event) in ids.into_iter().zip(events).rev() {
            if tracker.admit(id) {
                fresh.push(event);
            }
        }
    }
    tracker.settle();
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The API's paging over a table of committed events, with a page size small enough to page.
    struct Fake {
        committed: Vec<Ulid>,
        limit: usize,
        fail_next: Vec<bool>,
        requests: usize,
    }

    impl Fake {
        fn new(limit: usize) -> Fake {
            Fake { committed: Vec::new(), limit, fail_next: Vec::new(), requests: 0 }
        }
    }

    impl EventSource for Fake {
        async fn page(&mut self, ending_before: Option<&str>) -> Result<Page, FetchError> {
            self.requests += 1;
            if self.fail_next.pop() == Some(true) {
                return Err(FetchError::Unavailable("down".into()));
            }
            let mut ids = self.committed.clone();
            ids.sort();
            let (chosen, has_more) = match ending_before {
                Some(c) => {
                    let c = Ulid::from_string(c.strip_prefix(EventId::PREFIX).unwrap()).unwrap();
                    let after: Vec<Ulid> = ids.into_iter().filter(|id| *id > c).collect();
                    let has_more = after.len() > self.limit;
                    (after.into_iter().take(self.limit).rev().collect::<Vec<_>>(), has_more)
                }
                None => {
                    let has_more = ids.len() > self.limit;
                    (ids.into_iter().rev().take(self.limit).collect(), has_more)
                }
            };
            let events = chosen.iter().map(|id| json!({"event_id": format!("fevt_{id}")})).collect();
            Ok(Page { events, has_more })
        }
    }

    fn id(ms: u64, n: u128) -> Ulid {
        Ulid::from_parts(1_700_000_000_000 + ms, n)
    }

    fn ids(events: &[Value]) -> Vec<Ulid> {
        events.iter().map(|e| event_ulid(e).unwrap()).collect()
    }

    async fn start(fake: &mut Fake) -> Tracker {
        let page = fake.page(None).await.unwrap();
        Tracker::primed(&page_ids(&page).unwrap(), page.has_more, LOOKBACK)
    }

    #[tokio::test]
    async fn only_events_after_the_start_come_out_oldest_first_across_pages() {
        let mut fake = Fake::new(2);
        fake.committed = vec![id(0, 1), id(1, 1), id(2, 1)];
        let mut tracker = start(&mut fake).await;
        assert!(poll(&mut fake, &mut tracker).await.unwrap().is_empty());
        let new: Vec<Ulid> = (10..15).map(|ms| id(ms, 1)).collect();
        fake.committed.extend(new.iter().rev());
        assert_eq!(ids(&poll(&mut fake, &mut tracker).await.unwrap()), new);
        assert!(poll(&mut fake, &mut tracker).await.unwrap().is_empty(), "nothing twice");
    }

    #[tokio::test]
    async fn an_event_that_commits_behind_one_already_handled_still_comes_out_once() {
        let mut fake = Fake::new(2);
        let mut tracker = start(&mut fake).await;
        fake.committed.push(id(500, 1));
        assert_eq!(ids(&poll(&mut fake, &mut tracker).await.unwrap()), vec![id(500, 1)]);
        // A transaction that took its id earlier commits now.
        fake.committed.push(id(300, 1));
        assert_eq!(ids(&poll(&mut fake, &mut tracker).await.unwrap()), vec![id(300, 1)]);
        assert!(poll(&mut fake, &mut tracker).await.unwrap().is_empty());
        // Far enough past, the window moves on and old ids are forgotten, not re-read.
        fake.committed.push(id(60_000, 1));
        assert_eq!(ids(&poll(&mut fake, &mut tracker).await.unwrap()), vec![id(60_000, 1)]);
        assert_eq!(tracker.seen.len(), 1);
        assert!(tracker.floor > id(500, 1));
    }

    #[tokio::test]
    async fn a_busy_window_before_the_start_is_not_replayed() {
        let mut fake = Fake::new(2);
        fake.committed = (0..7).map(|n| id(n, 1)).collect();
        let mut tracker = start(&mut fake).await;
        assert!(poll(&mut fake, &mut tracker).await.unwrap().is_empty());
        fake.committed.push(id(20, 1));
        assert_eq!(ids(&poll(&mut fake, &mut tracker).await.unwrap()), vec![id(20, 1)]);
    }

    #[tokio::test]
    async fn a_failure_half_way_through_the_pages_loses_nothing() {
        let mut fake = Fake::new(2);
        let mut tracker = start(&mut fake).await;
        let new: Vec<Ulid> = (1..6).map(|ms| id(ms, 1)).collect();
        fake.committed.extend(&new);
        fake.fail_next = vec![true, false];
        assert_eq!(poll(&mut fake, &mut tracker).await, Err(FetchError::Unavailable("down".into())));
        assert_eq!(ids(&poll(&mut fake, &mut tracker).await.unwrap()), new);
    }

    #[test]
    fn no_events_yet_means_everything_is_new() {
        let mut tracker = Tracker::primed(&[], false, LOOKBACK);
        assert_eq!(format!("fevt_{}", tracker.floor), "fevt_00000000000000000000000000");
        assert!(tracker.admit(id(0, 1)) && !tracker.admit(id(0, 1)));
    }

    fn args(extra: &[&str]) -> ListenArgs {
        use clap::Parser;
        let mut argv = vec!["flex-checkout", "listen", "--api-key", "fsk_test_abc"];
        argv.extend(extra);
        match crate::config::Cli::try_parse_from(argv).unwrap().command {
            Some(crate::config::Command::Listen(a)) => a,
            other => panic!("not listen: {other:?}"),
        }
    }

    #[test]
    fn arguments_are_checked_with_messages_naming_the_flag() {
        let err = |a: ListenArgs| Options::from_args(a).unwrap_err().to_string();
        let mut bad_key = args(&[]);
        bad_key.api_key = "sk_test_123".into();
        assert!(err(bad_key).starts_with("--api-key"));
        assert!(err(args(&["--forward-to", "localhost:4242"])).starts_with("--forward-to"));
        assert!(err(args(&["--secret", "abc"])).starts_with("--secret"));
        assert!(err(args(&["--events", "invoice.paid,Invoice Paid"])).starts_with("--events"));
        let o = Options::from_args(args(&["--events", "invoice.paid, product.created"])).unwrap();
        assert!(o.wanted("product.created") && !o.wanted("price.created"));
        assert!(o.secret.starts_with("whsec_") && o.forward_to.is_none());
        assert_eq!(o.events_url.as_str(), "http://localhost:3000/v1/events");
        assert!(Options::from_args(args(&["--events", "*"])).unwrap().wanted("anything"));
    }

    #[test]
    fn times_show_to_the_second_in_utc() {
        assert_eq!(display_time("2024-04-26T18:39:43.93664Z"), "2024-04-26 18:39:43");
        assert_eq!(display_time("2024-04-26T20:39:43+02:00"), "2024-04-26 18:39:43");
        assert_eq!(display_time("yesterday"), "yesterday");
    }
}
