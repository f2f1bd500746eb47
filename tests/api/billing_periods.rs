//! Period boundaries, proration and the subscription lifecycle through the public API only, walked
//! forward on test clocks. The table cases follow BILLING.md "Period arithmetic" and the rules other
//! billing systems document (month ends clamp and come back, Feb 29, quarters, weeks, days, local
//! midnight across DST, calendar stubs prorated to the second half to even, trials, end dates).
//! Every expected instant is written out as the API prints it (RFC 3339 UTC, fractional seconds
//! only when non-zero); every prorated amount is worked out by hand in a comment.

use serde_json::{json, Value};

use crate::billing::{clock, customer_on, invoices_of, save_card, subscription};
use crate::common::{spawn_app, spawn_app_with_live_stripe, Response, TestApp};
use crate::pay::{csrf, pay, post_form};

const GOOD_CARD: &str = "4242424242424242";
/// Saves fine; every charge is declined (`generic_decline`).
const DECLINING_CARD: &str = "4000000000000341";
/// 3-D Secure on every payment: saved after a challenge, off-session charges fail with
/// `authentication_required` (a hard decline no retry can fix).
const THREE_DS_ALWAYS_CARD: &str = "4000002760003184";

// -------------------------------------------------------------------------------------------------
// Helpers
// -------------------------------------------------------------------------------------------------

/// A product with one price; `interval` `None` makes a one-time price. Returns the price id.
async fn make_price(
    app: &TestApp,
    amount: i64,
    interval: Option<&str>,
    count: u32,
    trial_days: Option<u32>,
    currency: &str,
) -> String {
    let p = app.post("/v1/products", json!({"product": {"name": "Gym membership"}})).await;
    assert_eq!(p.status, 200, "{}", p.text);
    let product = p.body["product"]["product_id"].as_str().unwrap().to_string();
    let mut price = json!({"product": product, "unit_amount": amount, "currency": currency});
    if let Some(interval) = interval {
        let mut recurring = json!({"interval": interval, "interval_count": count});
        if let Some(d) = trial_days {
            recurring["trial_period_days"] = json!(d);
        }
        price["recurring"] = recurring;
    }
    let r = app.post("/v1/prices", json!({ "price": price })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["price"]["price_id"].as_str().unwrap().to_string()
}

async fn monthly(app: &TestApp, amount: i64) -> String {
    make_price(app, amount, Some("monthly"), 1, None, "usd").await
}

/// Advances without panicking, so a table case can report it.
async fn try_advance(app: &TestApp, clock: &str, to: &str) -> Result<(), String> {
    let r = app
        .post(&format!("/v1/test_helpers/test_clocks/{clock}/advance"), json!({"test_clock": {"frozen_time": to}}))
        .await;
    if r.status != 200 || r.body["test_clock"]["status"] != "ready" {
        return Err(format!("advance to {to}: {} {}", r.status, r.text));
    }
    Ok(())
}

async fn advance(app: &TestApp, clock: &str, to: &str) {
    try_advance(app, clock, to).await.unwrap();
}

/// Events of one type, oldest first.
async fn events_of(app: &TestApp, event_type: &str) -> Vec<Value> {
    let r = app.get(&format!("/v1/events?event_type={event_type}&limit=100")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut v = r.body["events"].as_array().unwrap().clone();
    v.reverse();
    v
}

async fn create_sub(app: &TestApp, body: Value) -> Response {
    app.post("/v1/subscriptions", body).await
}

async fn create_ok(app: &TestApp, body: Value) -> Value {
    let r = create_sub(app, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

async fn invoice(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/v1/invoices/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["invoice"].clone()
}

/// A customer on a new clock at `at`, with `card` saved when given. Returns (clock, customer).
async fn customer_at(app: &TestApp, at: &str, external_id: &str, card: Option<&str>) -> (String, String) {
    let c = clock(app, at).await;
    let customer = customer_on(app, &c, external_id).await;
    if let Some(card) = card {
        save_card(app, &customer, card).await;
    }
    (c, customer)
}

/// Saves a card that asks for 3-D Secure on the hosted setup form, approving the challenge.
async fn save_card_through_challenge(app: &TestApp, customer: &str, card: &str) {
    let s = app.create_session(json!({"mode": "setup", "customer": customer})).await;
    assert_eq!(s.status, 200, "{}", s.text);
    let id = s.body["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string();
    let posted = pay(app, &id, card, &[]).await;
    assert_eq!(posted.status, 303, "{}", posted.html);
    let location = posted.location.unwrap();
    if location.contains("/authenticate/") {
        let page = app.client.get(format!("{}{location}", app.address)).send().await.unwrap().text().await.unwrap();
        let token = csrf(&page);
        let ok = post_form(app, &location, &[("csrf", &token), ("answer", "approve")]).await;
        assert_eq!(ok.status, 303, "{}", ok.html);
    }
    let r = app.get(&format!("/v1/customers/{customer}/payment_methods")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("3184"), "the 3-D Secure card was saved: {}", r.text);
}

fn param(r: &Response) -> &Value {
    &r.body["error"]["param"]
}

// -------------------------------------------------------------------------------------------------
// The table
// -------------------------------------------------------------------------------------------------

/// `fn(invoices oldest first, subscription)`: extra checks a case needs.
type Check = fn(&[Value], &Value) -> Result<(), String>;

/// One period-boundary case. The customer lives on a clock frozen at `clock` (the creation time,
/// so also the default `start_date`) and has a 4242 card saved unless `no_card`.
#[derive(Default)]
struct Case {
    name: &'static str,
    clock: &'static str,
    /// The plan price: amount, `recurring.interval`, `interval_count` (0 = 1), `trial_period_days`.
    amount: i64,
    interval: &'static str,
    interval_count: u32,
    trial_days: Option<u32>,
    /// Price currency ("" = usd).
    currency: &'static str,
    /// More prices, `$EXTRA0`, `$EXTRA1`... in `body`: amount and interval (`None` = one-time).
    extras: Vec<(i64, Option<&'static str>)>,
    /// Request fields besides `customer_id` and `plan_id`; `$PLAN` is the plan price id.
    body: Value,
    no_card: bool,
    /// Clock advances in order, each with the number of invoices expected afterwards (if given).
    steps: Vec<(&'static str, Option<usize>)>,
    /// (period_start, period_end, amount_due), oldest first; "*" leaves a period unchecked.
    invoices: Vec<(&'static str, &'static str, i64)>,
    status: Option<&'static str>,
    current: Option<(&'static str, &'static str)>,
    anchor: Option<&'static str>,
    /// Event types and how many of each.
    events: Vec<(&'static str, usize)>,
    check: Option<Check>,
}

fn substitute(v: &Value, plan: &str, extras: &[String]) -> Value {
    match v {
        Value::String(s) if s == "$PLAN" => json!(plan),
        Value::String(s) if s.starts_with("$EXTRA") => {
            let i: usize = s["$EXTRA".len()..].parse().unwrap();
            json!(extras[i])
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, plan, extras)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), substitute(x, plan, extras))).collect()),
        other => other.clone(),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn run_case(case: &Case) -> Result<(), String> {
    let app = spawn_app().await;
    let card = (!case.no_card).then_some(GOOD_CARD);
    let (c, customer) = customer_at(&app, case.clock, "cust-1", card).await;
    let currency = if case.currency.is_empty() { "usd" } else { case.currency };
    let count = case.interval_count.max(1);
    let plan = make_price(&app, case.amount, Some(case.interval), count, case.trial_days, currency).await;
    let mut extras = Vec::new();
    for (amount, interval) in &case.extras {
        extras.push(make_price(&app, *amount, *interval, 1, None, currency).await);
    }
    let mut body = json!({"customer_id": customer, "plan_id": plan});
    if let Value::Object(fields) = substitute(&case.body, &plan, &extras) {
        for (k, v) in fields {
            body[k] = v;
        }
    }
    let r = create_sub(&app, body.clone()).await;
    if r.status != 200 {
        return Err(format!("create {body}: {} {}", r.status, r.text));
    }
    let id = id_of(&r.body);
    for (to, n) in &case.steps {
        try_advance(&app, &c, to).await?;
        if let Some(n) = n {
            let got = invoices_of(&app, &id).await;
            if got.len() != *n {
                return Err(format!("after advancing to {to}: {} invoices, expected {n}: {}", got.len(), brief(&got)));
            }
        }
    }
    let invoices = invoices_of(&app, &id).await;
    let mut problems = Vec::new();
    let got: Vec<(String, String, i64)> = invoices
        .iter()
        .map(|i| (s(&i["period_start"]), s(&i["period_end"]), i["amount_due"].as_i64().unwrap_or(-1)))
        .collect();
    let matches = got.len() == case.invoices.len()
        && got
            .iter()
            .zip(&case.invoices)
            .all(|(g, e)| (e.0 == "*" || g.0 == e.0) && (e.1 == "*" || g.1 == e.1) && g.2 == e.2);
    if !matches {
        problems.push(format!("invoices\n      expected {:?}\n      got      {:?}", case.invoices, got));
    }
    let send_invoice = body["collection_method"] == "SEND_INVOICE";
    for i in &invoices {
        let sum: i64 = i["lines"].as_array().map_or(0, |l| l.iter().map(|l| l["amount"].as_i64().unwrap_or(0)).sum());
        if Some(sum) != i["amount_due"].as_i64() {
            problems.push(format!("invoice {} lines add up to {sum}, amount_due {}", i["invoice_id"], i["amount_due"]));
        }
        let due = i["amount_due"].as_i64().unwrap_or(0);
        let expected_status = if due > 0 && send_invoice { "open" } else { "paid" };
        if i["status"] != expected_status || (expected_status == "paid" && i["amount_paid"] != i["amount_due"]) {
            problems.push(format!(
                "invoice {} for {}..{} is {} (paid {}), expected {expected_status}",
                i["invoice_id"], i["period_start"], i["period_end"], i["status"], i["amount_paid"]
            ));
        }
    }
    let sub = subscription(&app, &id).await;
    if let Some(status) = case.status {
        if sub["subscription_status"] != status {
            problems.push(format!("status {} expected {status}", sub["subscription_status"]));
        }
    }
    if let Some((start, end)) = case.current {
        let got = (s(&sub["current_period_start"]), s(&sub["current_period_end"]));
        if got != (start.to_string(), end.to_string()) {
            problems.push(format!("current period {got:?} expected ({start}, {end})"));
        }
    }
    if let Some(anchor) = case.anchor {
        if sub["billing_anchor"] != anchor {
            problems.push(format!("billing_anchor {} expected {anchor}", sub["billing_anchor"]));
        }
    }
    for (event_type, n) in &case.events {
        let got = events_of(&app, event_type).await.len();
        if got != *n {
            problems.push(format!("{got} {event_type} events, expected {n}"));
        }
    }
    if let Some(check) = case.check {
        if let Err(e) = check(&invoices, &sub) {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

fn brief(invoices: &[Value]) -> String {
    invoices
        .iter()
        .map(|i| format!("({} {} {})", s(&i["period_start"]), s(&i["period_end"]), i["amount_due"]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs every case (each on its own server and clock) and fails once with all the mismatches.
async fn run_table(cases: Vec<Case>) {
    let mut failures = Vec::new();
    let n = cases.len();
    for case in &cases {
        if let Err(e) = run_case(case).await {
            failures.push(format!("  {}:\n    {e}", case.name));
        }
    }
    assert!(failures.is_empty(), "{} of {n} cases failed:\n{}", failures.len(), failures.join("\n"));
}

fn inv(start: &'static str, end: &'static str, amount: i64) -> (&'static str, &'static str, i64) {
    (start, end, amount)
}

fn step(to: &'static str) -> Vec<(&'static str, Option<usize>)> {
    vec![(to, None)]
}

// -------------------------------------------------------------------------------------------------
// Month ends, Feb 29, quarters, counts
// -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn month_ends_leap_days_quarters_and_counts() {
    let m = |start, end| inv(start, end, 1000);
    run_table(vec![
        Case {
            name: "Jan 31 monthly through a leap year: Feb 29, then back to Mar 31",
            clock: "2024-01-31T10:00:00Z",
            amount: 1000,
            interval: "monthly",
            steps: step("2024-04-30T10:00:00Z"),
            invoices: vec![
                m("2024-01-31T10:00:00Z", "2024-02-29T10:00:00Z"),
                m("2024-02-29T10:00:00Z", "2024-03-31T10:00:00Z"),
                m("2024-03-31T10:00:00Z", "2024-04-30T10:00:00Z"),
                m("2024-04-30T10:00:00Z", "2024-05-31T10:00:00Z"),
            ],
            status: Some("ACTIVE"),
            current: Some(("2024-04-30T10:00:00Z", "2024-05-31T10:00:00Z")),
            anchor: Some("2024-01-31T10:00:00Z"),
            events: vec![("invoice.paid", 4)],
            ..Case::default()
        },
        Case {
            name: "Jan 31 monthly through a common year: Feb 28, then back to Mar 31",
            clock: "2023-01-31T00:00:00Z",
            amount: 1000,
            interval: "monthly",
            steps: step("2023-03-31T00:00:00Z"),
            invoices: vec![
                m("2023-01-31T00:00:00Z", "2023-02-28T00:00:00Z"),
                m("2023-02-28T00:00:00Z", "2023-03-31T00:00:00Z"),
                m("2023-03-31T00:00:00Z", "2023-04-30T00:00:00Z"),
            ],
            status: Some("ACTIVE"),
            current: Some(("2023-03-31T00:00:00Z", "2023-04-30T00:00:00Z")),
            ..Case::default()
        },
        Case {
            name: "Jan 30 monthly: Feb 28, then Mar 30 (not Mar 28)",
            clock: "2025-01-30T12:00:00Z",
            amount: 1000,
            interval: "monthly",
            steps: step("2025-03-30T12:00:00Z"),
            invoices: vec![
                m("2025-01-30T12:00:00Z", "2025-02-28T12:00:00Z"),
                m("2025-02-28T12:00:00Z", "2025-03-30T12:00:00Z"),
                m("2025-03-30T12:00:00Z", "2025-04-30T12:00:00Z"),
            ],
            current: Some(("2025-03-30T12:00:00Z", "2025-04-30T12:00:00Z")),
            ..Case::default()
        },
        Case {
            name: "Dec 31 23:59:59 monthly over the year end",
            clock: "2024-12-31T23:59:59Z",
            amount: 1000,
            interval: "monthly",
            steps: step("2025-02-28T23:59:59Z"),
            invoices: vec![
                m("2024-12-31T23:59:59Z", "2025-01-31T23:59:59Z"),
                m("2025-01-31T23:59:59Z", "2025-02-28T23:59:59Z"),
                m("2025-02-28T23:59:59Z", "2025-03-31T23:59:59Z"),
            ],
            ..Case::default()
        },
        Case {
            name: "fractional-second start keeps its microseconds on every boundary",
            clock: "2024-05-10T12:00:00.123456Z",
            amount: 1000,
            interval: "monthly",
            steps: step("2024-06-10T12:00:00.123456Z"),
            invoices: vec![
                m("2024-05-10T12:00:00.123456Z", "2024-06-10T12:00:00.123456Z"),
                m("2024-06-10T12:00:00.123456Z", "2024-07-10T12:00:00.123456Z"),
            ],
            current: Some(("2024-06-10T12:00:00.123456Z", "2024-07-10T12:00:00.123456Z")),
            ..Case::default()
        },
        Case {
            name: "yearly on Feb 29: Feb 28 in common years, Feb 29 again in 2028",
            clock: "2024-02-29T12:00:00Z",
            amount: 12000,
            interval: "yearly",
            // A clock moves at most two years per advance.
            steps: vec![
                ("2026-02-28T12:00:00Z", Some(3)),
                ("2028-02-28T12:00:00Z", Some(4)),
                ("2028-02-29T12:00:00Z", Some(5)),
            ],
            invoices: vec![
                inv("2024-02-29T12:00:00Z", "2025-02-28T12:00:00Z", 12000),
                inv("2025-02-28T12:00:00Z", "2026-02-28T12:00:00Z", 12000),
                inv("2026-02-28T12:00:00Z", "2027-02-28T12:00:00Z", 12000),
                inv("2027-02-28T12:00:00Z", "2028-02-29T12:00:00Z", 12000),
                inv("2028-02-29T12:00:00Z", "2029-02-28T12:00:00Z", 12000),
            ],
            status: Some("ACTIVE"),
            current: Some(("2028-02-29T12:00:00Z", "2029-02-28T12:00:00Z")),
            anchor: Some("2024-02-29T12:00:00Z"),
            ..Case::default()
        },
        Case {
            name: "QUARTER (price default) from Nov 30: Feb 28, May 30, Aug 30",
            clock: "2024-11-30T08:00:00Z",
            amount: 3000,
            interval: "quarterly",
            steps: step("2025-05-30T08:00:00Z"),
            invoices: vec![
                inv("2024-11-30T08:00:00Z", "2025-02-28T08:00:00Z", 3000),
                inv("2025-02-28T08:00:00Z", "2025-05-30T08:00:00Z", 3000),
                inv("2025-05-30T08:00:00Z", "2025-08-30T08:00:00Z", 3000),
            ],
            current: Some(("2025-05-30T08:00:00Z", "2025-08-30T08:00:00Z")),
            ..Case::default()
        },
        Case {
            name: "QUARTER (explicit) from Nov 30 into a leap year: Feb 29, then May 30",
            clock: "2023-11-30T00:00:00Z",
            amount: 3000,
            interval: "quarterly",
            body: json!({"billing_period": "QUARTER", "billing_period_count": 1}),
            steps: step("2024-02-29T00:00:00Z"),
            invoices: vec![
                inv("2023-11-30T00:00:00Z", "2024-02-29T00:00:00Z", 3000),
                inv("2024-02-29T00:00:00Z", "2024-05-30T00:00:00Z", 3000),
            ],
            ..Case::default()
        },
        Case {
            name: "every 2 months from Dec 31: Feb 29, Apr 30, Jun 30",
            clock: "2023-12-31T00:00:00Z",
            amount: 2000,
            interval: "monthly",
            interval_count: 2,
            body: json!({"billing_period": "MONTH", "billing_period_count": 2}),
            steps: step("2024-04-30T00:00:00Z"),
            invoices: vec![
                inv("2023-12-31T00:00:00Z", "2024-02-29T00:00:00Z", 2000),
                inv("2024-02-29T00:00:00Z", "2024-04-30T00:00:00Z", 2000),
                inv("2024-04-30T00:00:00Z", "2024-06-30T00:00:00Z", 2000),
            ],
            ..Case::default()
        },
        Case {
            name: "every 3 months (price interval_count 3) from Aug 31: Nov 30, Feb 28, May 31",
            clock: "2024-08-31T00:00:00Z",
            amount: 4500,
            interval: "monthly",
            interval_count: 3,
            steps: step("2025-02-28T00:00:00Z"),
            invoices: vec![
                inv("2024-08-31T00:00:00Z", "2024-11-30T00:00:00Z", 4500),
                inv("2024-11-30T00:00:00Z", "2025-02-28T00:00:00Z", 4500),
                inv("2025-02-28T00:00:00Z", "2025-05-31T00:00:00Z", 4500),
            ],
            check: Some(|_, sub| {
                (sub["billing_period"] == "MONTH" && sub["billing_period_count"] == 3)
                    .then_some(())
                    .ok_or(format!("period {} x {}", sub["billing_period_count"], sub["billing_period"]))
            }),
            ..Case::default()
        },
    ])
    .await;
}

// -------------------------------------------------------------------------------------------------
// Weeks and days
// -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn weeks_and_days() {
    run_table(vec![
        Case {
            name: "weekly from a Monday 09:00 across Feb 29",
            clock: "2024-02-26T09:00:00Z",
            amount: 500,
            interval: "weekly",
            steps: step("2024-03-11T09:00:00Z"),
            invoices: vec![
                inv("2024-02-26T09:00:00Z", "2024-03-04T09:00:00Z", 500),
                inv("2024-03-04T09:00:00Z", "2024-03-11T09:00:00Z", 500),
                inv("2024-03-11T09:00:00Z", "2024-03-18T09:00:00Z", 500),
            ],
            current: Some(("2024-03-11T09:00:00Z", "2024-03-18T09:00:00Z")),
            ..Case::default()
        },
        Case {
            name: "every 2 weeks over the year end",
            clock: "2024-12-21T08:00:00Z",
            amount: 900,
            interval: "weekly",
            interval_count: 2,
            body: json!({"billing_period": "WEEK", "billing_period_count": 2}),
            steps: step("2025-01-04T08:00:00Z"),
            invoices: vec![
                inv("2024-12-21T08:00:00Z", "2025-01-04T08:00:00Z", 900),
                inv("2025-01-04T08:00:00Z", "2025-01-18T08:00:00Z", 900),
            ],
            ..Case::default()
        },
        Case {
            name: "daily across Feb 29",
            clock: "2024-02-28T23:00:00Z",
            amount: 100,
            interval: "daily",
            steps: step("2024-03-01T23:00:00Z"),
            invoices: vec![
                inv("2024-02-28T23:00:00Z", "2024-02-29T23:00:00Z", 100),
                inv("2024-02-29T23:00:00Z", "2024-03-01T23:00:00Z", 100),
                inv("2024-03-01T23:00:00Z", "2024-03-02T23:00:00Z", 100),
            ],
            ..Case::default()
        },
        Case {
            name: "every 3 days across Feb 29",
            clock: "2024-02-26T23:00:00Z",
            amount: 300,
            interval: "daily",
            interval_count: 3,
            body: json!({"billing_period": "DAY", "billing_period_count": 3}),
            steps: step("2024-03-03T23:00:00Z"),
            invoices: vec![
                inv("2024-02-26T23:00:00Z", "2024-02-29T23:00:00Z", 300),
                inv("2024-02-29T23:00:00Z", "2024-03-03T23:00:00Z", 300),
                inv("2024-03-03T23:00:00Z", "2024-03-06T23:00:00Z", 300),
            ],
            ..Case::default()
        },
        Case {
            name: "weekly in New York at 09:00 local across the November change (13:00Z -> 14:00Z)",
            clock: "2025-10-25T13:00:00Z",
            amount: 500,
            interval: "weekly",
            body: json!({"customer_timezone": "America/New_York"}),
            steps: step("2025-11-08T14:00:00Z"),
            invoices: vec![
                inv("2025-10-25T13:00:00Z", "2025-11-01T13:00:00Z", 500),
                inv("2025-11-01T13:00:00Z", "2025-11-08T14:00:00Z", 500),
                inv("2025-11-08T14:00:00Z", "2025-11-15T14:00:00Z", 500),
            ],
            ..Case::default()
        },
    ])
    .await;
}

// -------------------------------------------------------------------------------------------------
// Time zones: New York (DST) and Kolkata (UTC+5:30, no DST)
// -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn local_midnight_in_new_york_and_kolkata() {
    let ny = json!({"customer_timezone": "America/New_York"});
    let kolkata = json!({"customer_timezone": "Asia/Kolkata"});
    run_table(vec![
        Case {
            name: "New York midnight monthly across the March change: 05:00Z then 04:00Z",
            clock: "2025-02-15T05:00:00Z",
            amount: 1000,
            interval: "monthly",
            body: ny.clone(),
            steps: step("2025-04-15T04:00:00Z"),
            invoices: vec![
                inv("2025-02-15T05:00:00Z", "2025-03-15T04:00:00Z", 1000),
                inv("2025-03-15T04:00:00Z", "2025-04-15T04:00:00Z", 1000),
                inv("2025-04-15T04:00:00Z", "2025-05-15T04:00:00Z", 1000),
            ],
            current: Some(("2025-04-15T04:00:00Z", "2025-05-15T04:00:00Z")),
            check: Some(|_, sub| {
                (sub["customer_timezone"] == "America/New_York")
                    .then_some(())
                    .ok_or(format!("customer_timezone {}", sub["customer_timezone"]))
            }),
            ..Case::default()
        },
        Case {
            name: "New York midnight monthly across the November change: 04:00Z then 05:00Z",
            clock: "2025-10-15T04:00:00Z",
            amount: 1000,
            interval: "monthly",
            body: ny.clone(),
            steps: step("2025-12-15T05:00:00Z"),
            invoices: vec![
                inv("2025-10-15T04:00:00Z", "2025-11-15T05:00:00Z", 1000),
                inv("2025-11-15T05:00:00Z", "2025-12-15T05:00:00Z", 1000),
                inv("2025-12-15T05:00:00Z", "2026-01-15T05:00:00Z", 1000),
            ],
            ..Case::default()
        },
        Case {
            name: "New York DAY across spring-forward: the Mar 9 period is 23 hours",
            clock: "2025-03-08T05:00:00Z",
            amount: 100,
            interval: "daily",
            body: ny.clone(),
            steps: step("2025-03-10T04:00:00Z"),
            invoices: vec![
                inv("2025-03-08T05:00:00Z", "2025-03-09T05:00:00Z", 100),
                inv("2025-03-09T05:00:00Z", "2025-03-10T04:00:00Z", 100),
                inv("2025-03-10T04:00:00Z", "2025-03-11T04:00:00Z", 100),
            ],
            ..Case::default()
        },
        Case {
            name: "New York DAY across fall-back: the Nov 2 period is 25 hours",
            clock: "2025-11-01T04:00:00Z",
            amount: 100,
            interval: "daily",
            body: ny.clone(),
            steps: step("2025-11-03T05:00:00Z"),
            invoices: vec![
                inv("2025-11-01T04:00:00Z", "2025-11-02T04:00:00Z", 100),
                inv("2025-11-02T04:00:00Z", "2025-11-03T05:00:00Z", 100),
                inv("2025-11-03T05:00:00Z", "2025-11-04T05:00:00Z", 100),
            ],
            ..Case::default()
        },
        Case {
            name: "New York start_date given with a -05:00 offset on Jan 31: Feb 28 05:00Z, Mar 31 04:00Z",
            clock: "2025-01-31T05:00:00Z",
            amount: 1000,
            interval: "monthly",
            body: json!({"customer_timezone": "America/New_York", "start_date": "2025-01-31T00:00:00-05:00"}),
            steps: step("2025-03-31T04:00:00Z"),
            invoices: vec![
                inv("2025-01-31T05:00:00Z", "2025-02-28T05:00:00Z", 1000),
                inv("2025-02-28T05:00:00Z", "2025-03-31T04:00:00Z", 1000),
                inv("2025-03-31T04:00:00Z", "2025-04-30T04:00:00Z", 1000),
            ],
            anchor: Some("2025-01-31T05:00:00Z"),
            check: Some(|_, sub| {
                (sub["start_date"] == "2025-01-31T05:00:00Z")
                    .then_some(())
                    .ok_or(format!("start_date {}", sub["start_date"]))
            }),
            ..Case::default()
        },
        Case {
            // In UTC the anchor is Jan 30 18:30, which would give Feb 29 18:30Z: the local date counts.
            name: "Kolkata midnight Jan 31 monthly: local Feb 29 (Feb 28 18:30Z), Mar 31, Apr 30",
            clock: "2024-01-30T18:30:00Z",
            amount: 1000,
            interval: "monthly",
            body: kolkata.clone(),
            steps: step("2024-03-30T18:30:00Z"),
            invoices: vec![
                inv("2024-01-30T18:30:00Z", "2024-02-28T18:30:00Z", 1000),
                inv("2024-02-28T18:30:00Z", "2024-03-30T18:30:00Z", 1000),
                inv("2024-03-30T18:30:00Z", "2024-04-29T18:30:00Z", 1000),
            ],
            ..Case::default()
        },
        Case {
            name: "Kolkata midnight Feb 29 yearly: local Feb 28 2025 (Feb 27 18:30Z)",
            clock: "2024-02-28T18:30:00Z",
            amount: 12000,
            interval: "yearly",
            body: kolkata.clone(),
            steps: step("2025-02-27T18:30:00Z"),
            invoices: vec![
                inv("2024-02-28T18:30:00Z", "2025-02-27T18:30:00Z", 12000),
                inv("2025-02-27T18:30:00Z", "2026-02-27T18:30:00Z", 12000),
            ],
            ..Case::default()
        },
        Case {
            // Sunday 18:30Z is Monday 00:00 in Kolkata: a calendar boundary, so no stub.
            name: "Kolkata CALENDAR WEEK starting on local Monday midnight has no stub",
            clock: "2024-03-03T18:30:00Z",
            amount: 700,
            interval: "weekly",
            body: json!({"customer_timezone": "Asia/Kolkata", "billing_cycle": "CALENDAR"}),
            steps: step("2024-03-10T18:30:00Z"),
            invoices: vec![
                inv("2024-03-03T18:30:00Z", "2024-03-10T18:30:00Z", 700),
                inv("2024-03-10T18:30:00Z", "2024-03-17T18:30:00Z", 700),
            ],
            anchor: Some("2024-03-03T18:30:00Z"),
            ..Case::default()
        },
        Case {
            // Start 17:30 IST; next local midnight is 18:30Z. Stub 6.5 h of a 24 h local day:
            // 2400 x 23400 / 86400 = 650 exactly.
            name: "Kolkata CALENDAR DAY stub to local midnight (650 of 2400)",
            clock: "2024-03-10T12:00:00Z",
            amount: 2400,
            interval: "daily",
            body: json!({"customer_timezone": "Asia/Kolkata", "billing_cycle": "CALENDAR"}),
            steps: step("2024-03-11T18:30:00Z"),
            invoices: vec![
                inv("2024-03-10T12:00:00Z", "2024-03-10T18:30:00Z", 650),
                inv("2024-03-10T18:30:00Z", "2024-03-11T18:30:00Z", 2400),
                inv("2024-03-11T18:30:00Z", "2024-03-12T18:30:00Z", 2400),
            ],
            anchor: Some("2024-03-10T18:30:00Z"),
            ..Case::default()
        },
        Case {
            // 23:30 on Jan 31 in New York is Feb 1 04:30Z: the local date (Jan 31) is the anchor day.
            name: "New York 23:30 local on Jan 31: Feb 28 23:30 EST, Mar 31 23:30 EDT",
            clock: "2025-02-01T04:30:00Z",
            amount: 1000,
            interval: "monthly",
            body: ny.clone(),
            steps: step("2025-04-01T03:30:00Z"),
            invoices: vec![
                inv("2025-02-01T04:30:00Z", "2025-03-01T04:30:00Z", 1000),
                inv("2025-03-01T04:30:00Z", "2025-04-01T03:30:00Z", 1000),
                inv("2025-04-01T03:30:00Z", "2025-05-01T03:30:00Z", 1000),
            ],
            ..Case::default()
        },
        Case {
            // Mar 9 02:30 does not exist in New York; like java.time / Temporal ("compatible") the
            // boundary moves forward by the gap to 03:30 EDT (07:30Z). Apr 9 is 02:30 EDT again.
            name: "New York 02:30 anchor: the spring-forward gap moves Mar 9 to 03:30 EDT",
            clock: "2025-02-09T07:30:00Z",
            amount: 1000,
            interval: "monthly",
            body: ny.clone(),
            steps: step("2025-04-09T06:30:00Z"),
            invoices: vec![
                inv("2025-02-09T07:30:00Z", "2025-03-09T07:30:00Z", 1000),
                inv("2025-03-09T07:30:00Z", "2025-04-09T06:30:00Z", 1000),
                inv("2025-04-09T06:30:00Z", "2025-05-09T06:30:00Z", 1000),
            ],
            ..Case::default()
        },
        Case {
            // Nov 2 01:30 happens twice in New York; the first (EDT, 05:30Z) is the boundary.
            name: "New York 01:30 anchor: the fall-back fold takes the first 01:30",
            clock: "2025-10-02T05:30:00Z",
            amount: 1000,
            interval: "monthly",
            body: ny.clone(),
            steps: step("2025-12-02T06:30:00Z"),
            invoices: vec![
                inv("2025-10-02T05:30:00Z", "2025-11-02T05:30:00Z", 1000),
                inv("2025-11-02T05:30:00Z", "2025-12-02T06:30:00Z", 1000),
                inv("2025-12-02T06:30:00Z", "2026-01-02T06:30:00Z", 1000),
            ],
            ..Case::default()
        },
    ])
    .await;
}

// -------------------------------------------------------------------------------------------------
// CALENDAR billing: stubs prorated to the second, half to even
// -------------------------------------------------------------------------------------------------

fn stub_is_a_proration(invoices: &[Value], _: &Value) -> Result<(), String> {
    let flags: Vec<&Value> = invoices.iter().map(|i| &i["lines"][0]["proration"]).collect();
    let mut expected = vec![&Value::Bool(true)];
    expected.resize(invoices.len(), &Value::Bool(false));
    (flags == expected).then_some(()).ok_or(format!("lines[0].proration flags {flags:?}"))
}

#[tokio::test]
async fn calendar_stubs_and_boundaries() {
    let cal = json!({"billing_cycle": "CALENDAR"});
    run_table(vec![
        Case {
            // Stub 2024-03-20T15:04:05Z .. 04-01T00:00Z = 11 d + 8:55:55 = 982,555 s of March's
            // 31 d = 2,678,400 s. 4999 x 982555 / 2678400 = 1833.853... -> 1834.
            name: "CALENDAR monthly from Mar 20 15:04:05: prorated stub, then the 1st",
            clock: "2024-03-20T15:04:05Z",
            amount: 4999,
            interval: "monthly",
            body: cal.clone(),
            steps: step("2024-05-01T00:00:00Z"),
            invoices: vec![
                inv("2024-03-20T15:04:05Z", "2024-04-01T00:00:00Z", 1834),
                inv("2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z", 4999),
                inv("2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z", 4999),
            ],
            status: Some("ACTIVE"),
            current: Some(("2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z")),
            anchor: Some("2024-04-01T00:00:00Z"),
            check: Some(stub_is_a_proration),
            ..Case::default()
        },
        Case {
            // 15 of April's 30 days: 1001 x 1/2 = 500.5 -> 500 (half to even; half up would be 501).
            name: "CALENDAR stub of exactly half: 500.5 rounds to even 500",
            clock: "2024-04-16T00:00:00Z",
            amount: 1001,
            interval: "monthly",
            body: cal.clone(),
            steps: step("2024-05-01T00:00:00Z"),
            invoices: vec![
                inv("2024-04-16T00:00:00Z", "2024-05-01T00:00:00Z", 500),
                inv("2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z", 1001),
            ],
            ..Case::default()
        },
        Case {
            // 1003 x 1/2 = 501.5 -> 502 (half to even rounds up here).
            name: "CALENDAR stub of exactly half: 501.5 rounds to even 502",
            clock: "2024-04-16T00:00:00Z",
            amount: 1003,
            interval: "monthly",
            body: cal.clone(),
            steps: vec![],
            invoices: vec![inv("2024-04-16T00:00:00Z", "2024-05-01T00:00:00Z", 502)],
            status: Some("ACTIVE"),
            current: Some(("2024-04-16T00:00:00Z", "2024-05-01T00:00:00Z")),
            ..Case::default()
        },
        Case {
            // Zero-decimal currency: 1001 yen x 1/2 = 500.5 -> 500 yen.
            name: "CALENDAR stub in JPY rounds half to even at the yen",
            clock: "2024-04-16T00:00:00Z",
            amount: 1001,
            interval: "monthly",
            currency: "jpy",
            body: json!({"billing_cycle": "CALENDAR", "currency": "jpy"}),
            steps: vec![],
            invoices: vec![inv("2024-04-16T00:00:00Z", "2024-05-01T00:00:00Z", 500)],
            ..Case::default()
        },
        Case {
            // The line total is prorated, not the unit: 3 x 1001 = 3003 x 1/2 = 1501.5 -> 1502
            // (prorating each unit would give 3 x 500 = 1500).
            name: "CALENDAR stub of a quantity-3 override prorates the line total",
            clock: "2024-04-16T00:00:00Z",
            amount: 1001,
            interval: "monthly",
            body: json!({"billing_cycle": "CALENDAR", "override_line_items": [{"price_id": "$PLAN", "quantity": "3"}]}),
            steps: vec![],
            invoices: vec![inv("2024-04-16T00:00:00Z", "2024-05-01T00:00:00Z", 1502)],
            ..Case::default()
        },
        Case {
            name: "CALENDAR with proration_behavior NONE charges the stub in full",
            clock: "2024-03-20T15:04:05Z",
            amount: 4999,
            interval: "monthly",
            body: json!({"billing_cycle": "CALENDAR", "proration_behavior": "NONE"}),
            steps: step("2024-04-01T00:00:00Z"),
            invoices: vec![
                inv("2024-03-20T15:04:05Z", "2024-04-01T00:00:00Z", 4999),
                inv("2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z", 4999),
            ],
            ..Case::default()
        },
        Case {
            // Wednesday noon to Monday 00:00 = 4.5 of 7 days: 700 x 4.5 / 7 = 450.
            name: "CALENDAR WEEK stub to the next Monday 00:00",
            clock: "2024-05-15T12:00:00Z",
            amount: 700,
            interval: "weekly",
            body: cal.clone(),
            steps: step("2024-05-27T00:00:00Z"),
            invoices: vec![
                inv("2024-05-15T12:00:00Z", "2024-05-20T00:00:00Z", 450),
                inv("2024-05-20T00:00:00Z", "2024-05-27T00:00:00Z", 700),
                inv("2024-05-27T00:00:00Z", "2024-06-03T00:00:00Z", 700),
            ],
            anchor: Some("2024-05-20T00:00:00Z"),
            ..Case::default()
        },
        Case {
            // Wed Mar 5 12:00 EST (17:00Z) to Mon Mar 10 00:00 EDT (04:00Z) = 4 d 11 h = 385,200 s.
            // The week Mon Mar 3 05:00Z .. Mar 10 04:00Z lost an hour: 601,200 s.
            // 7000 x 385200 / 601200 = 4485.03 -> 4485 (a 604,800 s week would give 4458).
            name: "CALENDAR WEEK in New York: stub prorated over the 167-hour DST week",
            clock: "2025-03-05T17:00:00Z",
            amount: 7000,
            interval: "weekly",
            body: json!({"billing_cycle": "CALENDAR", "customer_timezone": "America/New_York"}),
            steps: step("2025-03-10T04:00:00Z"),
            invoices: vec![
                inv("2025-03-05T17:00:00Z", "2025-03-10T04:00:00Z", 4485),
                inv("2025-03-10T04:00:00Z", "2025-03-17T04:00:00Z", 7000),
            ],
            ..Case::default()
        },
        Case {
            // Q1 2024 = 31 + 29 + 31 = 91 days; Feb 15 .. Apr 1 = 15 + 31 = 46 days.
            // 9000 x 46 / 91 = 4549.45 -> 4549.
            name: "CALENDAR QUARTER stub from Feb 15 in a leap year, then Apr 1, Jul 1",
            clock: "2024-02-15T00:00:00Z",
            amount: 9000,
            interval: "quarterly",
            body: cal.clone(),
            steps: step("2024-07-01T00:00:00Z"),
            invoices: vec![
                inv("2024-02-15T00:00:00Z", "2024-04-01T00:00:00Z", 4549),
                inv("2024-04-01T00:00:00Z", "2024-07-01T00:00:00Z", 9000),
                inv("2024-07-01T00:00:00Z", "2024-10-01T00:00:00Z", 9000),
            ],
            anchor: Some("2024-04-01T00:00:00Z"),
            ..Case::default()
        },
        Case {
            // Jul 1 .. Jan 1 = 184 of 2024's 366 days: 36600 x 184 / 366 = 18400.
            name: "CALENDAR YEAR stub from Jul 1, then Jan 1",
            clock: "2024-07-01T00:00:00Z",
            amount: 36600,
            interval: "yearly",
            body: cal.clone(),
            steps: step("2025-01-01T00:00:00Z"),
            invoices: vec![
                inv("2024-07-01T00:00:00Z", "2025-01-01T00:00:00Z", 18400),
                inv("2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z", 36600),
            ],
            anchor: Some("2025-01-01T00:00:00Z"),
            ..Case::default()
        },
        Case {
            // Sat Mar 8 12:00 EST to midnight Mar 9 EST (05:00Z): 12 of 24 h -> 1200. Mar 9 is 23 h
            // (a full day, charged in full), Mar 10 starts at 04:00Z.
            name: "CALENDAR DAY in New York: noon stub, then the 23-hour Mar 9",
            clock: "2025-03-08T17:00:00Z",
            amount: 2400,
            interval: "daily",
            body: json!({"billing_cycle": "CALENDAR", "customer_timezone": "America/New_York"}),
            steps: step("2025-03-10T04:00:00Z"),
            invoices: vec![
                inv("2025-03-08T17:00:00Z", "2025-03-09T05:00:00Z", 1200),
                inv("2025-03-09T05:00:00Z", "2025-03-10T04:00:00Z", 2400),
                inv("2025-03-10T04:00:00Z", "2025-03-11T04:00:00Z", 2400),
            ],
            ..Case::default()
        },
        Case {
            name: "CALENDAR start exactly on the 1st: no stub",
            clock: "2024-05-01T00:00:00Z",
            amount: 1000,
            interval: "monthly",
            body: cal.clone(),
            steps: step("2024-06-01T00:00:00Z"),
            invoices: vec![
                inv("2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z", 1000),
                inv("2024-06-01T00:00:00Z", "2024-07-01T00:00:00Z", 1000),
            ],
            anchor: Some("2024-05-01T00:00:00Z"),
            check: Some(|invoices, _| {
                (invoices[0]["lines"][0]["proration"] == false)
                    .then_some(())
                    .ok_or(format!("first line {}", invoices[0]["lines"][0]))
            }),
            ..Case::default()
        },
        Case {
            // Dec 1 02:00Z is Nov 30 21:00 in New York: a 3 h stub to Dec 1 00:00 EST (05:00Z). The
            // local November is Nov 1 04:00Z .. Dec 1 05:00Z = 30 d + 1 h = 2,595,600 s.
            // 10000 x 10800 / 2595600 = 41.6 -> 42. (In UTC this start would be on a boundary.)
            name: "CALENDAR MONTH in New York: Dec 1 02:00Z is still November locally",
            clock: "2024-12-01T02:00:00Z",
            amount: 10000,
            interval: "monthly",
            body: json!({"billing_cycle": "CALENDAR", "customer_timezone": "America/New_York"}),
            steps: step("2024-12-01T05:00:00Z"),
            invoices: vec![
                inv("2024-12-01T02:00:00Z", "2024-12-01T05:00:00Z", 42),
                inv("2024-12-01T05:00:00Z", "2025-01-01T05:00:00Z", 10000),
            ],
            anchor: Some("2024-12-01T05:00:00Z"),
            ..Case::default()
        },
        Case {
            name: "CALENDAR MONTH in New York starting on local Nov 1 midnight: no stub, Dec 1 at 05:00Z",
            clock: "2024-11-01T04:00:00Z",
            amount: 1000,
            interval: "monthly",
            body: json!({"billing_cycle": "CALENDAR", "customer_timezone": "America/New_York"}),
            steps: step("2024-12-01T05:00:00Z"),
            invoices: vec![
                inv("2024-11-01T04:00:00Z", "2024-12-01T05:00:00Z", 1000),
                inv("2024-12-01T05:00:00Z", "2025-01-01T05:00:00Z", 1000),
            ],
            ..Case::default()
        },
    ])
    .await;
}

// -------------------------------------------------------------------------------------------------
// Trials and end dates
// -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn trials_and_end_dates() {
    run_table(vec![
        Case {
            name: "ANNIVERSARY with a 14-day price trial: $0 invoice, anchor moves to the trial end",
            clock: "2024-01-10T09:00:00Z",
            amount: 2000,
            interval: "monthly",
            trial_days: Some(14),
            steps: vec![("2024-01-24T08:59:59Z", Some(1)), ("2024-02-24T09:00:00Z", None)],
            invoices: vec![
                inv("2024-01-10T09:00:00Z", "2024-01-24T09:00:00Z", 0),
                inv("2024-01-24T09:00:00Z", "2024-02-24T09:00:00Z", 2000),
                inv("2024-02-24T09:00:00Z", "2024-03-24T09:00:00Z", 2000),
            ],
            status: Some("ACTIVE"),
            current: Some(("2024-02-24T09:00:00Z", "2024-03-24T09:00:00Z")),
            anchor: Some("2024-01-24T09:00:00Z"),
            events: vec![("customer.subscription.trial_will_end", 1)],
            check: Some(|invoices, sub| {
                let reasons: Vec<&Value> = invoices.iter().map(|i| &i["billing_reason"]).collect();
                if reasons
                    != [&json!("subscription_create"), &json!("subscription_cycle"), &json!("subscription_cycle")]
                {
                    return Err(format!("billing reasons {reasons:?}"));
                }
                if (&sub["trial_start"], &sub["trial_end"])
                    != (&json!("2024-01-10T09:00:00Z"), &json!("2024-01-24T09:00:00Z"))
                {
                    return Err(format!("trial {} .. {}", sub["trial_start"], sub["trial_end"]));
                }
                Ok(())
            }),
            ..Case::default()
        },
        Case {
            name: "ANNIVERSARY with an explicit trial_end: charges from Mar 31, then Apr 30",
            clock: "2024-03-01T00:00:00Z",
            amount: 1000,
            interval: "monthly",
            body: json!({"trial_end": "2024-03-31T00:00:00Z"}),
            steps: step("2024-04-30T00:00:00Z"),
            invoices: vec![
                inv("2024-03-01T00:00:00Z", "2024-03-31T00:00:00Z", 0),
                inv("2024-03-31T00:00:00Z", "2024-04-30T00:00:00Z", 1000),
                inv("2024-04-30T00:00:00Z", "2024-05-31T00:00:00Z", 1000),
            ],
            anchor: Some("2024-03-31T00:00:00Z"),
            ..Case::default()
        },
        Case {
            name: "still TRIALING one second before the trial ends",
            clock: "2024-03-01T00:00:00Z",
            amount: 1000,
            interval: "monthly",
            body: json!({"trial_end": "2024-03-31T00:00:00Z"}),
            steps: step("2024-03-30T23:59:59Z"),
            invoices: vec![inv("2024-03-01T00:00:00Z", "2024-03-31T00:00:00Z", 0)],
            status: Some("TRIALING"),
            current: Some(("2024-03-01T00:00:00Z", "2024-03-31T00:00:00Z")),
            ..Case::default()
        },
        Case {
            name: "IN_ARREARS with a trial: $0 trial invoice, the first period billed at its end",
            clock: "2024-01-10T09:00:00Z",
            amount: 2000,
            interval: "monthly",
            trial_days: Some(14),
            body: json!({"billing_cadence": "IN_ARREARS"}),
            steps: vec![("2024-02-24T08:59:59Z", Some(1)), ("2024-02-24T09:00:00Z", None)],
            invoices: vec![
                inv("2024-01-10T09:00:00Z", "2024-01-24T09:00:00Z", 0),
                inv("2024-01-24T09:00:00Z", "2024-02-24T09:00:00Z", 2000),
            ],
            status: Some("ACTIVE"),
            current: Some(("2024-02-24T09:00:00Z", "2024-03-24T09:00:00Z")),
            anchor: Some("2024-01-24T09:00:00Z"),
            ..Case::default()
        },
        Case {
            // Trial Jan 20 .. Jan 27, stub Jan 27 .. Feb 1 = 5 of January's 31 days: 3100 x 5/31 = 500.
            name: "CALENDAR with a 7-day trial stays calendar aligned: stub from the trial end",
            clock: "2024-01-20T00:00:00Z",
            amount: 3100,
            interval: "monthly",
            trial_days: Some(7),
            body: json!({"billing_cycle": "CALENDAR"}),
            steps: step("2024-02-01T00:00:00Z"),
            invoices: vec![
                inv("2024-01-20T00:00:00Z", "2024-01-27T00:00:00Z", 0),
                inv("2024-01-27T00:00:00Z", "2024-02-01T00:00:00Z", 500),
                inv("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", 3100),
            ],
            anchor: Some("2024-02-01T00:00:00Z"),
            status: Some("ACTIVE"),
            ..Case::default()
        },
        Case {
            name: "7 trial days in New York are local days: Mar 5 00:00 EST to Mar 12 00:00 EDT",
            clock: "2025-03-05T05:00:00Z",
            amount: 1000,
            interval: "monthly",
            trial_days: Some(7),
            body: json!({"customer_timezone": "America/New_York"}),
            steps: step("2025-03-12T04:00:00Z"),
            invoices: vec![
                inv("2025-03-05T05:00:00Z", "2025-03-12T04:00:00Z", 0),
                inv("2025-03-12T04:00:00Z", "2025-04-12T04:00:00Z", 1000),
            ],
            anchor: Some("2025-03-12T04:00:00Z"),
            ..Case::default()
        },
        Case {
            // Mar 1 .. Mar 16 = 15 of March's 31 days: 3000 x 15 / 31 = 1451.61 -> 1452.
            name: "end_date cuts the last period: prorated last invoice, then CANCELED",
            clock: "2024-01-01T00:00:00Z",
            amount: 3000,
            interval: "monthly",
            body: json!({"end_date": "2024-03-16T00:00:00Z"}),
            steps: vec![("2024-03-15T23:59:59Z", Some(3)), ("2024-04-01T00:00:00Z", None)],
            invoices: vec![
                inv("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", 3000),
                inv("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", 3000),
                inv("2024-03-01T00:00:00Z", "2024-03-16T00:00:00Z", 1452),
            ],
            status: Some("CANCELED"),
            current: Some(("2024-03-01T00:00:00Z", "2024-03-16T00:00:00Z")),
            events: vec![("customer.subscription.deleted", 1)],
            check: Some(|invoices, sub| {
                if invoices[2]["lines"][0]["proration"] != true {
                    return Err(format!("cut period line {}", invoices[2]["lines"][0]));
                }
                (sub["canceled_at"] == "2024-03-16T00:00:00Z")
                    .then_some(())
                    .ok_or(format!("canceled_at {}", sub["canceled_at"]))
            }),
            ..Case::default()
        },
        Case {
            name: "end_date on a boundary: no partial period",
            clock: "2024-01-01T00:00:00Z",
            amount: 3000,
            interval: "monthly",
            body: json!({"end_date": "2024-03-01T00:00:00Z"}),
            steps: step("2024-04-01T00:00:00Z"),
            invoices: vec![
                inv("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", 3000),
                inv("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", 3000),
            ],
            status: Some("CANCELED"),
            current: Some(("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z")),
            events: vec![("customer.subscription.deleted", 1)],
            ..Case::default()
        },
        Case {
            name: "end_date with proration_behavior NONE: the cut period is charged in full",
            clock: "2024-01-01T00:00:00Z",
            amount: 3000,
            interval: "monthly",
            body: json!({"end_date": "2024-03-16T00:00:00Z", "proration_behavior": "NONE"}),
            steps: step("2024-04-01T00:00:00Z"),
            invoices: vec![
                inv("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", 3000),
                inv("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", 3000),
                inv("2024-03-01T00:00:00Z", "2024-03-16T00:00:00Z", 3000),
            ],
            status: Some("CANCELED"),
            ..Case::default()
        },
        Case {
            name: "end_date inside the trial: nothing is ever charged",
            clock: "2024-01-01T00:00:00Z",
            amount: 1000,
            interval: "monthly",
            trial_days: Some(14),
            body: json!({"end_date": "2024-01-05T00:00:00Z"}),
            steps: step("2024-02-01T00:00:00Z"),
            invoices: vec![inv("2024-01-01T00:00:00Z", "2024-01-05T00:00:00Z", 0)],
            status: Some("CANCELED"),
            events: vec![("customer.subscription.deleted", 1), ("invoice.payment_succeeded", 1)],
            ..Case::default()
        },
        Case {
            // Stub Apr 16 .. May 1 = 1001 x 15/30 = 500.5 -> 500; cut Jun 1 .. Jun 16 = 15 of 30 days
            // again -> 500.
            name: "CALENDAR stub and an end_date cut in one subscription",
            clock: "2024-04-16T00:00:00Z",
            amount: 1001,
            interval: "monthly",
            body: json!({"billing_cycle": "CALENDAR", "end_date": "2024-06-16T00:00:00Z"}),
            steps: step("2024-07-01T00:00:00Z"),
            invoices: vec![
                inv("2024-04-16T00:00:00Z", "2024-05-01T00:00:00Z", 500),
                inv("2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z", 1001),
                inv("2024-06-01T00:00:00Z", "2024-06-16T00:00:00Z", 500),
            ],
            status: Some("CANCELED"),
            current: Some(("2024-06-01T00:00:00Z", "2024-06-16T00:00:00Z")),
            ..Case::default()
        },
    ])
    .await;
}

// -------------------------------------------------------------------------------------------------
// Cadence, start dates and collection
// -------------------------------------------------------------------------------------------------

fn arrears_invoices_are_made_at_period_end(invoices: &[Value], _: &Value) -> Result<(), String> {
    if invoices[0]["billing_reason"] != "subscription_create" {
        return Err(format!("first invoice reason {}", invoices[0]["billing_reason"]));
    }
    for i in &invoices[1..] {
        if i["created_at"] != i["period_end"] || i["billing_reason"] != "subscription_cycle" {
            return Err(format!(
                "arrears invoice {}..{} made at {} ({})",
                i["period_start"], i["period_end"], i["created_at"], i["billing_reason"]
            ));
        }
    }
    Ok(())
}

#[tokio::test]
async fn cadence_start_dates_and_collection() {
    run_table(vec![
        Case {
            name: "IN_ARREARS: $0 invoice at creation, each period invoiced at its end",
            clock: "2024-01-15T00:00:00Z",
            amount: 1000,
            interval: "monthly",
            body: json!({"billing_cadence": "IN_ARREARS"}),
            steps: vec![("2024-02-14T23:59:59Z", Some(1)), ("2024-03-15T00:00:00Z", None)],
            invoices: vec![
                inv("*", "*", 0),
                inv("2024-01-15T00:00:00Z", "2024-02-15T00:00:00Z", 1000),
                inv("2024-02-15T00:00:00Z", "2024-03-15T00:00:00Z", 1000),
            ],
            status: Some("ACTIVE"),
            current: Some(("2024-03-15T00:00:00Z", "2024-04-15T00:00:00Z")),
            check: Some(arrears_invoices_are_made_at_period_end),
            ..Case::default()
        },
        Case {
            name: "IN_ARREARS with a one-time setup fee: the first invoice is the fee only",
            clock: "2024-01-15T00:00:00Z",
            amount: 1000,
            interval: "monthly",
            extras: vec![(2500, None)],
            body: json!({"billing_cadence": "IN_ARREARS", "line_items": [{"price_id": "$EXTRA0", "display_name": "Setup fee"}]}),
            steps: step("2024-02-15T00:00:00Z"),
            invoices: vec![inv("*", "*", 2500), inv("2024-01-15T00:00:00Z", "2024-02-15T00:00:00Z", 1000)],
            check: Some(|invoices, _| {
                let first = &invoices[0]["lines"];
                (first.as_array().map(Vec::len) == Some(1) && first[0]["description"] == "Setup fee")
                    .then_some(())
                    .ok_or(format!("first invoice lines {first}"))
            }),
            ..Case::default()
        },
        Case {
            name: "IN_ARREARS + CALENDAR: the stub is invoiced (prorated) at its end",
            clock: "2024-04-16T00:00:00Z",
            amount: 1001,
            interval: "monthly",
            body: json!({"billing_cadence": "IN_ARREARS", "billing_cycle": "CALENDAR"}),
            steps: step("2024-06-01T00:00:00Z"),
            invoices: vec![
                inv("*", "*", 0),
                inv("2024-04-16T00:00:00Z", "2024-05-01T00:00:00Z", 500),
                inv("2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z", 1001),
            ],
            current: Some(("2024-06-01T00:00:00Z", "2024-07-01T00:00:00Z")),
            check: Some(arrears_invoices_are_made_at_period_end),
            ..Case::default()
        },
        Case {
            name: "IN_ARREARS with an end_date: the cut period is billed at the end date",
            clock: "2024-01-01T00:00:00Z",
            amount: 3000,
            interval: "monthly",
            body: json!({"billing_cadence": "IN_ARREARS", "end_date": "2024-03-16T00:00:00Z"}),
            steps: step("2024-04-01T00:00:00Z"),
            invoices: vec![
                inv("*", "*", 0),
                inv("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", 3000),
                inv("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", 3000),
                inv("2024-03-01T00:00:00Z", "2024-03-16T00:00:00Z", 1452),
            ],
            status: Some("CANCELED"),
            events: vec![("customer.subscription.deleted", 1)],
            check: Some(arrears_invoices_are_made_at_period_end),
            ..Case::default()
        },
        Case {
            name: "start_date in the future: nothing until the clock reaches it",
            clock: "2024-01-01T00:00:00Z",
            amount: 1000,
            interval: "monthly",
            body: json!({"start_date": "2024-02-15T00:00:00Z"}),
            steps: vec![("2024-02-14T23:59:59Z", Some(0)), ("2024-03-15T00:00:00Z", None)],
            invoices: vec![
                inv("2024-02-15T00:00:00Z", "2024-03-15T00:00:00Z", 1000),
                inv("2024-03-15T00:00:00Z", "2024-04-15T00:00:00Z", 1000),
            ],
            anchor: Some("2024-02-15T00:00:00Z"),
            events: vec![("invoice.paid", 2)],
            check: Some(|invoices, _| {
                (invoices[0]["created_at"] == "2024-02-15T00:00:00Z")
                    .then_some(())
                    .ok_or(format!("first invoice made at {}", invoices[0]["created_at"]))
            }),
            ..Case::default()
        },
        Case {
            // Feb 15 .. Mar 1 = 15 of February 2024's 29 days: 2900 x 15 / 29 = 1500.
            name: "CALENDAR with a future start_date: the stub is billed when it starts",
            clock: "2024-01-01T00:00:00Z",
            amount: 2900,
            interval: "monthly",
            body: json!({"billing_cycle": "CALENDAR", "start_date": "2024-02-15T00:00:00Z"}),
            steps: vec![("2024-02-14T23:59:59Z", Some(0)), ("2024-03-01T00:00:00Z", None)],
            invoices: vec![
                inv("2024-02-15T00:00:00Z", "2024-03-01T00:00:00Z", 1500),
                inv("2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z", 2900),
            ],
            anchor: Some("2024-03-01T00:00:00Z"),
            ..Case::default()
        },
        Case {
            // Invoice dates Mar 1 00:00 EST and Apr 1 00:00 EDT; + 15 local days.
            name: "SEND_INVOICE 15_NET in New York: due dates in local days across DST",
            clock: "2024-03-01T05:00:00Z",
            amount: 1000,
            interval: "monthly",
            no_card: true,
            body: json!({"collection_method": "SEND_INVOICE", "payment_terms": "15_NET", "customer_timezone": "America/New_York"}),
            steps: step("2024-04-01T04:00:00Z"),
            invoices: vec![
                inv("2024-03-01T05:00:00Z", "2024-04-01T04:00:00Z", 1000),
                inv("2024-04-01T04:00:00Z", "2024-05-01T04:00:00Z", 1000),
            ],
            check: Some(|invoices, _| {
                let due: Vec<&Value> = invoices.iter().map(|i| &i["due_date"]).collect();
                if due != [&json!("2024-03-16T04:00:00Z"), &json!("2024-04-16T04:00:00Z")] {
                    return Err(format!("due dates {due:?}"));
                }
                for i in invoices {
                    let url = i["hosted_invoice_url"].as_str().unwrap_or_default();
                    let id = i["invoice_id"].as_str().unwrap_or("?");
                    if !url.ends_with(&format!("/pay/i/{id}")) || i["attempt_count"] != 0 {
                        return Err(format!("invoice {id}: url {url}, attempts {}", i["attempt_count"]));
                    }
                }
                Ok(())
            }),
            ..Case::default()
        },
        Case {
            // Feb 1 00:00 IST + 30 local days = Mar 2 00:00 IST = Mar 1 18:30Z.
            name: "SEND_INVOICE 30_NET in Kolkata: due Mar 2 local midnight",
            clock: "2024-01-31T18:30:00Z",
            amount: 1000,
            interval: "monthly",
            no_card: true,
            body: json!({"collection_method": "SEND_INVOICE", "payment_terms": "30_NET", "customer_timezone": "Asia/Kolkata"}),
            steps: vec![],
            invoices: vec![inv("2024-01-31T18:30:00Z", "2024-02-29T18:30:00Z", 1000)],
            status: Some("ACTIVE"),
            check: Some(|invoices, _| {
                (invoices[0]["due_date"] == "2024-03-01T18:30:00Z")
                    .then_some(())
                    .ok_or(format!("due_date {}", invoices[0]["due_date"]))
            }),
            ..Case::default()
        },
        Case {
            // Dec 1 + 90 days: Dec 31 is +30, Jan 31 +61, Feb 29 +90.
            name: "SEND_INVOICE 90_NET across a leap February",
            clock: "2023-12-01T00:00:00Z",
            amount: 1000,
            interval: "monthly",
            no_card: true,
            body: json!({"collection_method": "SEND_INVOICE", "payment_terms": "90_NET"}),
            steps: vec![],
            invoices: vec![inv("2023-12-01T00:00:00Z", "2024-01-01T00:00:00Z", 1000)],
            check: Some(|invoices, _| {
                (invoices[0]["due_date"] == "2024-02-29T00:00:00Z")
                    .then_some(())
                    .ok_or(format!("due_date {}", invoices[0]["due_date"]))
            }),
            ..Case::default()
        },
    ])
    .await;
}

// -------------------------------------------------------------------------------------------------
// Commitments, overrides, extra items, phases
// -------------------------------------------------------------------------------------------------

fn line_amounts(invoice: &Value) -> Vec<(String, i64)> {
    invoice["lines"]
        .as_array()
        .map(|l| l.iter().map(|l| (s(&l["description"]), l["amount"].as_i64().unwrap_or(0))).collect())
        .unwrap_or_default()
}

fn true_ups(invoice: &Value) -> Vec<i64> {
    line_amounts(invoice).into_iter().filter(|(d, _)| d == "Commitment true-up").map(|(_, a)| a).collect()
}

#[tokio::test]
async fn commitments_overrides_and_phases() {
    let jan = "2024-01-01T00:00:00Z";
    let feb = "2024-02-01T00:00:00Z";
    let mar = "2024-03-01T00:00:00Z";
    let apr = "2024-04-01T00:00:00Z";
    let may = "2024-05-01T00:00:00Z";
    run_table(vec![
        Case {
            // 10.00 billed of a 50.00 monthly commitment: a 40.00 true-up on each invoice.
            name: "monthly commitment with true-up",
            clock: jan,
            amount: 1000,
            interval: "monthly",
            body: json!({"commitment_amount": "50.00", "commitment_duration": "MONTH", "enable_true_up": true}),
            steps: step(feb),
            invoices: vec![inv(jan, feb, 5000), inv(feb, mar, 5000)],
            check: Some(|invoices, _| {
                let t: Vec<Vec<i64>> = invoices.iter().map(true_ups).collect();
                (t == [vec![4000], vec![4000]]).then_some(()).ok_or(format!("true-ups {t:?}"))
            }),
            ..Case::default()
        },
        Case {
            // 3 x 20.00 = 60.00 of a 100.00 quarterly commitment: the quarter's last invoice
            // (March) gets a 40.00 true-up; April starts a new window.
            name: "quarterly commitment: true-up on the window's last invoice only",
            clock: jan,
            amount: 2000,
            interval: "monthly",
            body: json!({"commitment_amount": "100.00", "commitment_duration": "QUARTER", "enable_true_up": true}),
            steps: step(apr),
            invoices: vec![inv(jan, feb, 2000), inv(feb, mar, 2000), inv(mar, apr, 6000), inv(apr, may, 2000)],
            check: Some(|invoices, _| {
                let t: Vec<Vec<i64>> = invoices.iter().map(true_ups).collect();
                (t == [vec![], vec![], vec![4000], vec![]]).then_some(()).ok_or(format!("true-ups {t:?}"))
            }),
            ..Case::default()
        },
        Case {
            name: "commitment without true-up bills what was used",
            clock: jan,
            amount: 2000,
            interval: "monthly",
            body: json!({"commitment_amount": "100.00", "commitment_duration": "QUARTER"}),
            steps: step(apr),
            invoices: vec![inv(jan, feb, 2000), inv(feb, mar, 2000), inv(mar, apr, 2000), inv(apr, may, 2000)],
            ..Case::default()
        },
        Case {
            // Plan 8.00 + extra recurring item 4.00 = 12.00 against a 10.00 commitment: the 2.00
            // above it is billed x 1.5, i.e. 1.00 more: 13.00.
            name: "overage_factor 1.5 with an extra line item above the commitment",
            clock: jan,
            amount: 800,
            interval: "monthly",
            extras: vec![(400, Some("monthly"))],
            body: json!({
                "commitment_amount": "10.00", "commitment_duration": "MONTH", "overage_factor": "1.5",
                "line_items": [{"price_id": "$EXTRA0", "quantity": "1"}]
            }),
            steps: step(feb),
            invoices: vec![inv(jan, feb, 1300), inv(feb, mar, 1300)],
            check: Some(|invoices, _| {
                let lines = line_amounts(&invoices[0]);
                let amounts: Vec<i64> = lines.iter().map(|l| l.1).collect();
                (amounts.len() == 3 && amounts.contains(&800) && amounts.contains(&400) && amounts.contains(&100))
                    .then_some(())
                    .ok_or(format!("lines {lines:?}"))
            }),
            ..Case::default()
        },
        Case {
            // Override 15.00 against a 10.00 commitment: 5.00 above x 1.5 = 2.50 more: 17.50.
            name: "overage_factor 1.5 with an override amount above the commitment",
            clock: jan,
            amount: 1000,
            interval: "monthly",
            body: json!({
                "commitment_amount": "10.00", "commitment_duration": "MONTH", "overage_factor": "1.5",
                "override_line_items": [{"price_id": "$PLAN", "amount": "15.00"}]
            }),
            steps: step(feb),
            invoices: vec![inv(jan, feb, 1750), inv(feb, mar, 1750)],
            ..Case::default()
        },
        Case {
            name: "phases: 5.00 until Mar 1, then 20.00",
            clock: jan,
            amount: 1000,
            interval: "monthly",
            body: json!({"phases": [
                {"start_date": jan, "end_date": mar, "override_line_items": [{"price_id": "$PLAN", "amount": "5.00"}]},
                {"start_date": mar, "override_line_items": [{"price_id": "$PLAN", "amount": "20.00"}]}
            ]}),
            steps: step(apr),
            invoices: vec![inv(jan, feb, 500), inv(feb, mar, 500), inv(mar, apr, 2000), inv(apr, may, 2000)],
            ..Case::default()
        },
        Case {
            // The phase changes on Feb 15, inside the Feb period: that period keeps the old price,
            // the next one (Mar 1) is priced by the new phase.
            name: "phase boundary inside a period applies from the next period",
            clock: jan,
            amount: 1000,
            interval: "monthly",
            body: json!({"phases": [
                {"start_date": jan, "end_date": "2024-02-15T00:00:00Z",
                    "override_line_items": [{"price_id": "$PLAN", "amount": "5.00"}]},
                {"start_date": "2024-02-15T00:00:00Z", "override_line_items": [{"price_id": "$PLAN", "amount": "20.00"}]}
            ]}),
            steps: step(mar),
            invoices: vec![inv(jan, feb, 500), inv(feb, mar, 500), inv(mar, apr, 2000)],
            ..Case::default()
        },
        Case {
            name: "override quantity 3",
            clock: jan,
            amount: 1000,
            interval: "monthly",
            body: json!({"override_line_items": [{"price_id": "$PLAN", "quantity": "3"}]}),
            steps: step(feb),
            invoices: vec![inv(jan, feb, 3000), inv(feb, mar, 3000)],
            check: Some(|invoices, _| {
                (invoices[0]["lines"][0]["quantity"] == 3)
                    .then_some(())
                    .ok_or(format!("line {}", invoices[0]["lines"][0]))
            }),
            ..Case::default()
        },
        Case {
            name: "override amount 12.34 x quantity 2",
            clock: jan,
            amount: 1000,
            interval: "monthly",
            body: json!({"override_line_items": [{"price_id": "$PLAN", "amount": "12.34", "quantity": 2}]}),
            steps: step(feb),
            invoices: vec![inv(jan, feb, 2468), inv(feb, mar, 2468)],
            ..Case::default()
        },
        Case {
            name: "extra recurring line item with quantity 4 renews with the plan",
            clock: jan,
            amount: 1000,
            interval: "monthly",
            extras: vec![(250, Some("monthly"))],
            body: json!({"line_items": [{"price_id": "$EXTRA0", "quantity": "4", "display_name": "Towels"}]}),
            steps: step(feb),
            invoices: vec![inv(jan, feb, 2000), inv(feb, mar, 2000)],
            check: Some(|invoices, _| {
                let lines = line_amounts(&invoices[1]);
                lines.contains(&("Towels".to_string(), 1000)).then_some(()).ok_or(format!("lines {lines:?}"))
            }),
            ..Case::default()
        },
    ])
    .await;
}

// -------------------------------------------------------------------------------------------------
// INVOICE_TO_PARENT
// -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_child_billed_to_its_parent_is_invoiced_to_the_parents_customer_and_card() {
    let app = spawn_app().await;
    let c = clock(&app, "2024-01-01T00:00:00Z").await;
    let parent_customer = customer_on(&app, &c, "parent").await;
    save_card(&app, &parent_customer, GOOD_CARD).await;
    let child_customer = customer_on(&app, &c, "child").await;
    let price = monthly(&app, 1000).await;
    let child_price = monthly(&app, 500).await;
    let parent = create_ok(&app, json!({"customer_id": parent_customer, "plan_id": price})).await;
    // The child's own customer has no card: billing itself is refused...
    let own = create_sub(
        &app,
        json!({"customer_id": child_customer, "plan_id": child_price, "parent_subscription_id": id_of(&parent)}),
    )
    .await;
    assert_eq!(own.status, 422, "{}", own.text);
    assert_eq!(own.body["error"]["code"], "payment_method_required");
    // ... billing the parent is not.
    let child = create_ok(
        &app,
        json!({"customer_id": child_customer, "plan_id": child_price, "parent_subscription_id": id_of(&parent),
            "invoice_billing": "INVOICE_TO_PARENT"}),
    )
    .await;
    assert_eq!(child["customer_id"], child_customer.as_str());
    assert_eq!(child["parent_subscription_id"], id_of(&parent).as_str());
    assert_eq!(child["invoice_billing"], "INVOICE_TO_PARENT");
    advance(&app, &c, "2024-02-01T00:00:00Z").await;
    let invoices = invoices_of(&app, &id_of(&child)).await;
    assert_eq!(invoices.len(), 2, "{invoices:?}");
    for i in &invoices {
        assert_eq!(i["customer"], parent_customer.as_str(), "{i}");
        assert_eq!((i["status"].as_str(), i["amount_paid"].as_i64()), (Some("paid"), Some(500)), "{i}");
    }
    let parents = app.get(&format!("/v1/invoices?customer={parent_customer}&limit=100")).await;
    assert_eq!(parents.body["invoices"].as_array().unwrap().len(), 4, "{}", parents.text);
    let childs = app.get(&format!("/v1/invoices?customer={child_customer}")).await;
    assert_eq!(childs.body["invoices"], json!([]), "{}", childs.text);
}

// -------------------------------------------------------------------------------------------------
// PATCH /v1/subscriptions/{id}
// -------------------------------------------------------------------------------------------------

async fn patch(app: &TestApp, id: &str, body: Value) -> Response {
    app.send(
        reqwest::Method::PATCH,
        &format!("/v1/subscriptions/{id}"),
        Some(&app.test_key),
        Some(body.to_string()),
        None,
    )
    .await
}

#[tokio::test]
async fn patch_changes_metadata_and_lookup_key() {
    let app = spawn_app().await;
    let (_, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(GOOD_CARD)).await;
    let price = monthly(&app, 1000).await;
    let sub = create_ok(&app, json!({"customer_id": customer, "plan_id": price, "metadata": {"a": "1"}})).await;
    let id = id_of(&sub);
    let other = create_ok(&app, json!({"customer_id": customer, "plan_id": price, "lookup_key": "taken"})).await;
    let r = patch(&app, &id, json!({"metadata": {"a": "2", "b": "x"}, "lookup_key": "gold"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["metadata"], json!({"a": "2", "b": "x"}));
    assert_eq!(r.body["lookup_key"], "gold");
    let found = app.get("/v1/subscriptions?lookup_key=gold").await;
    let ids: Vec<&Value> = found.body["subscriptions"].as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, [&json!(id)]);
    // Taken by another subscription: 409 naming lookup_key, nothing changes.
    let r = patch(&app, &id, json!({"lookup_key": "taken"})).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(param(&r), "lookup_key");
    assert_eq!(subscription(&app, &id).await["lookup_key"], "gold");
    // Wrapped body works too; null clears.
    let r = patch(&app, &id, json!({"subscription": {"lookup_key": null, "metadata": null}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["lookup_key"], Value::Null);
    assert!(r.body["metadata"].is_null() || r.body["metadata"] == json!({}), "{}", r.body["metadata"]);
    assert_eq!(app.get("/v1/subscriptions?lookup_key=gold").await.body["subscriptions"], json!([]));
    assert_eq!(subscription(&app, &id_of(&other)).await["lookup_key"], "taken");
    // A metadata change bills nothing.
    assert_eq!(invoices_of(&app, &id).await.len(), 1);
}

#[tokio::test]
async fn patch_cancel_at_period_end_ends_it_at_the_period_end() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(GOOD_CARD)).await;
    let price = monthly(&app, 1000).await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": price})).await);
    advance(&app, &c, "2024-01-10T00:00:00Z").await;
    let r = patch(&app, &id, json!({"cancel_at_period_end": true})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["cancel_at_period_end"], true);
    assert_eq!(r.body["subscription_status"], "ACTIVE");
    advance(&app, &c, "2024-01-31T23:59:59Z").await;
    assert_eq!(subscription(&app, &id).await["subscription_status"], "ACTIVE");
    assert!(events_of(&app, "customer.subscription.deleted").await.is_empty());
    advance(&app, &c, "2024-03-01T00:00:00Z").await;
    let s = subscription(&app, &id).await;
    assert_eq!(s["subscription_status"], "CANCELED");
    assert_eq!(s["canceled_at"], "2024-02-01T00:00:00Z");
    assert_eq!(invoices_of(&app, &id).await.len(), 1, "no renewal after the period end");
    let deleted = events_of(&app, "customer.subscription.deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["created_at"], "2024-02-01T00:00:00Z");
    // No upcoming-invoice reminder for a renewal that will not happen.
    assert!(events_of(&app, "invoice.upcoming").await.is_empty());
}

#[tokio::test]
async fn patch_end_date_cuts_a_later_period_and_ends_the_subscription() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(GOOD_CARD)).await;
    let price = monthly(&app, 3000).await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": price})).await);
    let r = patch(&app, &id, json!({"end_date": "2024-03-16T00:00:00Z"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["end_date"], "2024-03-16T00:00:00Z");
    advance(&app, &c, "2024-04-01T00:00:00Z").await;
    let got: Vec<(String, String, i64)> = invoices_of(&app, &id)
        .await
        .iter()
        .map(|i| (s(&i["period_start"]), s(&i["period_end"]), i["amount_due"].as_i64().unwrap()))
        .collect();
    // Mar 1 .. Mar 16: 3000 x 15/31 = 1451.6 -> 1452.
    let expected = [
        ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z", 3000),
        ("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", 3000),
        ("2024-03-01T00:00:00Z", "2024-03-16T00:00:00Z", 1452),
    ];
    assert_eq!(got, expected.map(|(a, b, n)| (a.to_string(), b.to_string(), n)));
    let s = subscription(&app, &id).await;
    assert_eq!(s["subscription_status"], "CANCELED");
    assert_eq!(events_of(&app, "customer.subscription.deleted").await.len(), 1);
}

#[tokio::test]
async fn patch_trial_end_while_trialing_moves_the_first_charge() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-01-10T09:00:00Z", "c", Some(GOOD_CARD)).await;
    let price = make_price(&app, 2000, Some("monthly"), 1, Some(14), "usd").await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": price})).await);
    advance(&app, &c, "2024-01-15T00:00:00Z").await;
    let r = patch(&app, &id, json!({"trial_end": "2024-02-01T00:00:00Z"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["trial_end"], "2024-02-01T00:00:00Z");
    assert_eq!(r.body["billing_anchor"], "2024-02-01T00:00:00Z");
    assert_eq!(r.body["subscription_status"], "TRIALING");
    assert_eq!(r.body["current_period_end"], "2024-02-01T00:00:00Z");
    // The old trial end passes without a charge.
    advance(&app, &c, "2024-01-31T23:59:59Z").await;
    assert_eq!(invoices_of(&app, &id).await.len(), 1);
    assert_eq!(subscription(&app, &id).await["subscription_status"], "TRIALING");
    // The reminder follows the new end: Jan 29 00:00, once.
    let reminders = events_of(&app, "customer.subscription.trial_will_end").await;
    let at: Vec<&Value> = reminders.iter().map(|e| &e["created_at"]).collect();
    assert_eq!(at, [&json!("2024-01-29T00:00:00Z")]);
    advance(&app, &c, "2024-02-01T00:00:00Z").await;
    let invoices = invoices_of(&app, &id).await;
    assert_eq!(invoices.len(), 2);
    assert_eq!(
        (&invoices[1]["period_start"], &invoices[1]["period_end"], &invoices[1]["amount_paid"]),
        (&json!("2024-02-01T00:00:00Z"), &json!("2024-03-01T00:00:00Z"), &json!(2000))
    );
    assert_eq!(subscription(&app, &id).await["subscription_status"], "ACTIVE");
    // Not trialing any more: trial_end cannot change.
    let r = patch(&app, &id, json!({"trial_end": "2024-02-20T00:00:00Z"})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(param(&r), "trial_end");
}

#[tokio::test]
async fn patch_status_active_starts_billing_a_draft() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", None).await;
    let price = monthly(&app, 1000).await;
    // A draft needs no card and bills nothing, even as time passes.
    let draft = create_ok(&app, json!({"customer_id": customer, "plan_id": price, "status": "DRAFT"})).await;
    let id = id_of(&draft);
    assert_eq!(draft["subscription_status"], "DRAFT");
    advance(&app, &c, "2024-01-05T12:00:00Z").await;
    assert!(invoices_of(&app, &id).await.is_empty());
    // Activating without a card: 422, still a draft.
    let r = patch(&app, &id, json!({"status": "ACTIVE"})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "payment_method_required");
    assert_eq!(subscription(&app, &id).await["subscription_status"], "DRAFT");
    save_card(&app, &customer, GOOD_CARD).await;
    let r = patch(&app, &id, json!({"status": "ACTIVE"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["subscription_status"], "ACTIVE");
    assert_eq!(r.body["current_period_start"], "2024-01-05T12:00:00Z");
    assert_eq!(r.body["current_period_end"], "2024-02-05T12:00:00Z");
    let invoices = invoices_of(&app, &id).await;
    assert_eq!(invoices.len(), 1);
    assert_eq!((&invoices[0]["status"], &invoices[0]["amount_paid"]), (&json!("paid"), &json!(1000)));
    assert_eq!(invoices[0]["period_start"], "2024-01-05T12:00:00Z");
    advance(&app, &c, "2024-02-05T12:00:00Z").await;
    assert_eq!(invoices_of(&app, &id).await.len(), 2);
    // Only a draft can be activated.
    let r = patch(&app, &id, json!({"status": "DRAFT"})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(param(&r), "status");
}

#[tokio::test]
async fn patch_plan_id_without_proration_takes_effect_next_period() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(GOOD_CARD)).await;
    let basic = monthly(&app, 1000).await;
    let gold = monthly(&app, 2500).await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": basic})).await);
    advance(&app, &c, "2024-01-11T00:00:00Z").await;
    let r = patch(&app, &id, json!({"plan_id": gold, "proration_behavior": "NONE"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["plan_id"], gold.as_str());
    assert_eq!(invoices_of(&app, &id).await.len(), 1, "nothing billed now");
    advance(&app, &c, "2024-02-01T00:00:00Z").await;
    let invoices = invoices_of(&app, &id).await;
    let amounts: Vec<&Value> = invoices.iter().map(|i| &i["amount_paid"]).collect();
    assert_eq!(amounts, [&json!(1000), &json!(2500)]);
    assert_eq!(invoices[1]["lines"][0]["price"], gold.as_str());
    // Bad plan ids name the param.
    let one_time = make_price(&app, 500, None, 1, None, "usd").await;
    let eur = make_price(&app, 500, Some("monthly"), 1, None, "eur").await;
    for bad in ["fprice_01HW5MXAPBE79RHMMJJGB4ACAB", one_time.as_str(), eur.as_str(), "nonsense"] {
        let r = patch(&app, &id, json!({"plan_id": bad})).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(param(&r), "plan_id", "{bad}");
    }
}

#[tokio::test]
async fn patch_plan_id_with_prorations_bills_the_rest_of_the_period_now() {
    // BILLING.md: plan changes "with proration_behavior deciding whether an immediate prorated
    // invoice is made"; CREATE_PRORATIONS is the default.
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(GOOD_CARD)).await;
    let basic = monthly(&app, 1000).await;
    let gold = monthly(&app, 2500).await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": basic})).await);
    advance(&app, &c, "2024-01-11T00:00:00Z").await;
    let r = patch(&app, &id, json!({"plan_id": gold})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let invoices = invoices_of(&app, &id).await;
    assert_eq!(invoices.len(), 2, "an immediate prorated invoice: {}", brief(&invoices));
    let update = &invoices[1];
    assert_eq!(update["billing_reason"], "subscription_update");
    assert_eq!(
        (&update["period_start"], &update["period_end"]),
        (&json!("2024-01-11T00:00:00Z"), &json!("2024-02-01T00:00:00Z"))
    );
    // 21 of January's 31 days left: (2500 - 1000) x 21/31 = 1016.13 as one line; as a credit line
    // -677.42 -> -677 and a charge 1693.55 -> 1694 it is 1017. Either is a correct proration.
    let due = update["amount_due"].as_i64().unwrap();
    assert!(due == 1016 || due == 1017, "{update}");
    advance(&app, &c, "2024-02-01T00:00:00Z").await;
    assert_eq!(invoices_of(&app, &id).await[2]["amount_paid"], 2500);
}

#[tokio::test]
async fn a_downgrade_refunds_the_credit_the_new_plan_does_not_use() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-04-01T00:00:00Z", "c", Some(GOOD_CARD)).await;
    let gold = monthly(&app, 3000).await;
    let basic = monthly(&app, 1200).await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": gold})).await);
    let first = invoices_of(&app, &id).await.remove(0);
    let pi = first["payment_intent"].as_str().unwrap().to_string();
    // Half of April left: -1500 unused on gold, +600 for the rest of April on basic.
    advance(&app, &c, "2024-04-16T00:00:00Z").await;
    let r = patch(&app, &id, json!({"plan_id": basic})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let update = invoices_of(&app, &id).await.pop().unwrap();
    assert_eq!(update["billing_reason"], "subscription_update");
    let amounts: Vec<i64> = update["lines"].as_array().unwrap().iter().map(|l| l["amount"].as_i64().unwrap()).collect();
    assert_eq!(amounts, [-1500, 600], "{update}");
    assert_eq!((&update["amount_due"], &update["status"]), (&json!(0), &json!("paid")), "{update}");
    let refunds = app.get(&format!("/v1/refunds?payment_intent={pi}")).await;
    let list = refunds.body["refunds"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", refunds.text);
    assert_eq!((&list[0]["amount"], &list[0]["status"]), (&json!(900), &json!("succeeded")), "{}", refunds.text);
    assert_eq!(list[0]["metadata"]["reason"], "proration_credit");
    // An upgrade refunds nothing.
    let r = patch(&app, &id, json!({"plan_id": gold})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get(&format!("/v1/refunds?payment_intent={pi}")).await.body["refunds"].as_array().unwrap().len(), 1);
    advance(&app, &c, "2024-05-01T00:00:00Z").await;
    assert_eq!(invoices_of(&app, &id).await.pop().unwrap()["amount_paid"], 3000);
}

#[tokio::test]
async fn patch_rejects_unknown_fields_and_bad_values_naming_the_param() {
    let app = spawn_app().await;
    let (_, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(GOOD_CARD)).await;
    let price = monthly(&app, 1000).await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": price})).await);
    let before = app.snapshot().await;
    let sub_before = subscription(&app, &id).await;
    let cases = [
        (json!({"colour": "red"}), "colour"),
        (json!({"metadata": {"a": "1"}, "cancel_at_end": true}), "cancel_at_end"),
        (json!({"status": "CANCELED"}), "status"),
        (json!({"status": "active"}), "status"),
        (json!({"trial_end": "2024-02-01T00:00:00Z"}), "trial_end"),
        (json!({"trial_end": "tomorrow"}), "trial_end"),
        (json!({"end_date": "2024-13-01T00:00:00Z"}), "end_date"),
        (json!({"end_date": "2023-12-31T00:00:00Z"}), "end_date"),
        (json!({"proration_behavior": "SOMETIMES"}), "proration_behavior"),
        (json!({"metadata": "gold"}), "metadata"),
        (json!({"cancel_at_period_end": "yes"}), "cancel_at_period_end"),
        (json!({"lookup_key": 5}), "lookup_key"),
        (json!({"lookup_key": "x".repeat(256)}), "lookup_key"),
        (json!({"plan_id": "fprod_01HW5MXAPBE79RHMMJJGB4ACAB"}), "plan_id"),
    ];
    for (body, expected) in cases {
        let r = patch(&app, &id, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(param(&r), expected, "{body}: {}", r.text);
    }
    let r = app
        .send(reqwest::Method::PATCH, &format!("/v1/subscriptions/{id}"), Some(&app.test_key), Some("{".into()), None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = patch(&app, "fsub_01HW5MXAPBE79RHMMJJGB4ACAB", json!({"metadata": {"a": "1"}})).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(app.snapshot().await, before);
    assert_eq!(subscription(&app, &id).await, sub_before);
}

// -------------------------------------------------------------------------------------------------
// POST /v1/subscriptions/{id}/cancel
// -------------------------------------------------------------------------------------------------

async fn cancel(app: &TestApp, id: &str, body: Value) -> Response {
    app.post(&format!("/v1/subscriptions/{id}/cancel"), body).await
}

#[tokio::test]
async fn cancel_now_ends_it_and_voids_open_invoices() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", None).await;
    let price = monthly(&app, 1000).await;
    let id = id_of(
        &create_ok(&app, json!({"customer_id": customer, "plan_id": price, "collection_method": "SEND_INVOICE"})).await,
    );
    let open = invoices_of(&app, &id).await;
    assert_eq!(open[0]["status"], "open");
    advance(&app, &c, "2024-01-10T06:00:00Z").await;
    let r = cancel(&app, &id, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["subscription_status"], "CANCELED");
    assert_eq!(r.body["canceled_at"], "2024-01-10T06:00:00Z");
    assert_eq!(invoice(&app, open[0]["invoice_id"].as_str().unwrap()).await["status"], "void");
    assert_eq!(events_of(&app, "customer.subscription.deleted").await.len(), 1);
    assert_eq!(events_of(&app, "invoice.voided").await.len(), 1);
    advance(&app, &c, "2024-03-01T00:00:00Z").await;
    assert_eq!(invoices_of(&app, &id).await.len(), 1, "nothing billed after the cancel");
    // Once ended, it cannot be canceled or changed again.
    let r = cancel(&app, &id, json!({})).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = patch(&app, &id, json!({"cancel_at_period_end": true})).await;
    assert_eq!(r.status, 422, "{}", r.text);
}

#[tokio::test]
async fn cancel_with_a_prorated_refund_returns_the_unused_seconds() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-04-01T00:00:00Z", "c", Some(GOOD_CARD)).await;
    let price = monthly(&app, 3000).await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": price})).await);
    let paid = invoices_of(&app, &id).await.remove(0);
    let pi = paid["payment_intent"].as_str().unwrap().to_string();
    advance(&app, &c, "2024-04-11T08:00:00Z").await;
    let r = cancel(&app, &id, json!({"refund": "prorated"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["subscription_status"], "CANCELED");
    // Unused: Apr 11 08:00 .. May 1 00:00 = 19 d 16 h = 1,699,200 s of April's 2,592,000 s.
    // 3000 x 1699200 / 2592000 = 1966.67 -> 1967.
    let refunds = app.get(&format!("/v1/refunds?payment_intent={pi}")).await;
    assert_eq!(refunds.status, 200, "{}", refunds.text);
    let list = refunds.body["refunds"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", refunds.text);
    assert_eq!(list[0]["amount"], 1967);
    assert_eq!(list[0]["payment_intent"], pi.as_str());
    assert_eq!(events_of(&app, "refund.created").await.len(), 1);
    assert_eq!(events_of(&app, "customer.subscription.deleted").await.len(), 1);
}

#[tokio::test]
async fn cancel_at_period_end_through_the_cancel_endpoint_and_bad_cancel_bodies() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(GOOD_CARD)).await;
    let price = monthly(&app, 1000).await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": price})).await);
    let before = app.snapshot().await;
    for (body, expected) in [
        (json!({"cancel_at_period_end": true, "refund": "prorated"}), "refund"),
        (json!({"refund": "all"}), "refund"),
        (json!({"refund_now": true}), "refund_now"),
        (json!({"cancel_at_period_end": "soon"}), "cancel_at_period_end"),
    ] {
        let r = cancel(&app, &id, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(param(&r), expected, "{body}: {}", r.text);
    }
    assert_eq!(app.snapshot().await, before);
    assert_eq!(cancel(&app, "fsub_01HW5MXAPBE79RHMMJJGB4ACAB", json!({})).await.status, 404);
    let r = cancel(&app, &id, json!({"cancel_at_period_end": true})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((&r.body["subscription_status"], &r.body["cancel_at_period_end"]), (&json!("ACTIVE"), &json!(true)));
    advance(&app, &c, "2024-02-01T00:00:00Z").await;
    let s = subscription(&app, &id).await;
    assert_eq!(s["subscription_status"], "CANCELED");
    assert_eq!(s["canceled_at"], "2024-02-01T00:00:00Z");
    assert_eq!(invoices_of(&app, &id).await.len(), 1);
    assert_eq!(events_of(&app, "customer.subscription.deleted").await.len(), 1);
}

// -------------------------------------------------------------------------------------------------
// Lists
// -------------------------------------------------------------------------------------------------

fn ids(r: &Response, key: &str, id_field: &str) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body[key].as_array().unwrap().iter().map(|s| s[id_field].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn subscriptions_list_filters_and_pages() {
    let app = spawn_app().await;
    let c = clock(&app, "2024-01-01T00:00:00Z").await;
    let a = customer_on(&app, &c, "ext-a").await;
    save_card(&app, &a, GOOD_CARD).await;
    let b = customer_on(&app, &c, "ext-b").await;
    save_card(&app, &b, GOOD_CARD).await;
    let p1 = monthly(&app, 1000).await;
    let p2 = monthly(&app, 2000).await;
    let s1 = id_of(&create_ok(&app, json!({"customer_id": a, "plan_id": p1, "lookup_key": "a-1"})).await);
    let s2 = id_of(&create_ok(&app, json!({"customer_id": a, "plan_id": p2})).await);
    let s3 = id_of(&create_ok(&app, json!({"customer_id": b, "plan_id": p1, "lookup_key": "b-1"})).await);
    assert_eq!(cancel(&app, &s3, json!({})).await.status, 200);
    let (s1, s2, s3) = (s1.as_str(), s2.as_str(), s3.as_str());
    let list = |q: String| {
        let app = &app;
        async move { ids(&app.get(&format!("/v1/subscriptions{q}")).await, "subscriptions", "id") }
    };
    assert_eq!(list(String::new()).await, [s3, s2, s1]);
    assert_eq!(list(format!("?customer_id={a}")).await, [s2, s1]);
    assert_eq!(list("?external_customer_id=ext-b".into()).await, [s3]);
    assert!(list("?external_customer_id=nobody".into()).await.is_empty());
    assert!(list(format!("?external_customer_id=ext-b&customer_id={a}")).await.is_empty());
    assert_eq!(list("?subscription_status=CANCELED".into()).await, [s3]);
    assert_eq!(list("?subscription_status=ACTIVE".into()).await, [s2, s1]);
    assert_eq!(list(format!("?plan_id={p1}")).await, [s3, s1]);
    assert_eq!(list(format!("?plan_id={p1}&customer_id={a}")).await, [s1]);
    assert_eq!(list("?lookup_key=b-1".into()).await, [s3]);
    // Pages of one, newest first, both ways.
    let page = app.get("/v1/subscriptions?limit=1").await;
    assert_eq!((ids(&page, "subscriptions", "id"), &page.body["has_more"]), (vec![s3.to_string()], &json!(true)));
    let page = app.get(&format!("/v1/subscriptions?limit=1&starting_after={s3}")).await;
    assert_eq!((ids(&page, "subscriptions", "id"), &page.body["has_more"]), (vec![s2.to_string()], &json!(true)));
    let page = app.get(&format!("/v1/subscriptions?limit=2&starting_after={s2}")).await;
    assert_eq!((ids(&page, "subscriptions", "id"), &page.body["has_more"]), (vec![s1.to_string()], &json!(false)));
    let page = app.get(&format!("/v1/subscriptions?limit=1&ending_before={s1}")).await;
    assert_eq!(ids(&page, "subscriptions", "id"), [s2]);
    // Bad filters name the param.
    for (q, expected) in [
        ("subscription_status=BOGUS", "subscription_status"),
        ("customer_id=cus_123", "customer_id"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("colour=red", "colour"),
        ("starting_after=fcus_01HW5MXAPBE79RHMMJJGB4ACAB", "starting_after"),
    ] {
        let r = app.get(&format!("/v1/subscriptions?{q}")).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
        assert_eq!(param(&r), expected, "{q}: {}", r.text);
    }
}

#[tokio::test]
async fn invoices_list_filters_and_pages() {
    let app = spawn_app().await;
    let c = clock(&app, "2024-01-01T00:00:00Z").await;
    let a = customer_on(&app, &c, "ext-a").await;
    let b = customer_on(&app, &c, "ext-b").await;
    save_card(&app, &b, GOOD_CARD).await;
    let price = monthly(&app, 1000).await;
    let sa =
        id_of(&create_ok(&app, json!({"customer_id": a, "plan_id": price, "collection_method": "SEND_INVOICE"})).await);
    let sb = id_of(&create_ok(&app, json!({"customer_id": b, "plan_id": price})).await);
    advance(&app, &c, "2024-02-01T00:00:00Z").await;
    let list = |q: String| {
        let app = &app;
        async move { ids(&app.get(&format!("/v1/invoices{q}")).await, "invoices", "invoice_id") }
    };
    let of_a = list(format!("?customer={a}")).await;
    let of_b = list(format!("?customer={b}")).await;
    assert_eq!((of_a.len(), of_b.len()), (2, 2));
    assert_eq!(list(format!("?subscription={sa}")).await, of_a);
    assert_eq!(list(format!("?subscription={sb}")).await, of_b);
    assert_eq!(list("?status=open".into()).await, of_a);
    assert_eq!(list("?status=paid".into()).await, of_b);
    assert_eq!(list(format!("?status=paid&customer={a}")).await, Vec::<String>::new());
    assert_eq!(list("?limit=100".into()).await.len(), 4);
    let page = app.get("/v1/invoices?limit=3").await;
    assert_eq!((ids(&page, "invoices", "invoice_id").len(), &page.body["has_more"]), (3, &json!(true)));
    let last = ids(&page, "invoices", "invoice_id").pop().unwrap();
    let page = app.get(&format!("/v1/invoices?limit=3&starting_after={last}")).await;
    assert_eq!((ids(&page, "invoices", "invoice_id").len(), &page.body["has_more"]), (1, &json!(false)));
    for (q, expected) in [
        ("status=overdue", "status"),
        ("customer=nope", "customer"),
        ("subscription=fcus_01HW5MXAPBE79RHMMJJGB4ACAB", "subscription"),
        ("plan=x", "plan"),
    ] {
        let r = app.get(&format!("/v1/invoices?{q}")).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
        assert_eq!(param(&r), expected, "{q}: {}", r.text);
    }
}

// -------------------------------------------------------------------------------------------------
// Paying and voiding invoices
// -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_open_invoice_is_paid_with_a_new_card_after_a_decline() {
    let app = spawn_app().await;
    let (_, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(DECLINING_CARD)).await;
    let price = monthly(&app, 1000).await;
    let sub = create_ok(&app, json!({"customer_id": customer, "plan_id": price})).await;
    let id = id_of(&sub);
    // DEFAULT_ACTIVE: the failed first charge starts dunning.
    let open = invoices_of(&app, &id).await.remove(0);
    assert_eq!((&open["status"], &open["attempt_count"]), (&json!("open"), &json!(1)), "{open}");
    assert_eq!(open["next_payment_attempt"], "2024-01-02T00:00:00Z");
    let status = subscription(&app, &id).await["subscription_status"].clone();
    assert!(status == "PAST_DUE" || status == "ACTIVE", "{status}");
    let invoice_id = open["invoice_id"].as_str().unwrap().to_string();
    // The customer saves a good card; paying now uses it.
    save_card(&app, &customer, GOOD_CARD).await;
    let r = app.post(&format!("/v1/invoices/{invoice_id}/pay"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let paid = &r.body["invoice"];
    assert_eq!((&paid["status"], &paid["amount_paid"]), (&json!("paid"), &json!(1000)), "{paid}");
    assert_eq!(paid["next_payment_attempt"], Value::Null);
    assert_eq!(subscription(&app, &id).await["subscription_status"], "ACTIVE");
    let pi = app.get(&format!("/v1/payment_intents/{}", paid["payment_intent"].as_str().unwrap())).await;
    assert_eq!(pi.body["payment_intent"]["status"], "succeeded", "{}", pi.text);
    // Paying twice: 422.
    let r = app.post(&format!("/v1/invoices/{invoice_id}/pay"), json!({})).await;
    assert_eq!(r.status, 422, "{}", r.text);
}

#[tokio::test]
async fn paying_with_only_the_declining_card_is_a_402_and_counts_the_attempt() {
    let app = spawn_app().await;
    let (_, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(DECLINING_CARD)).await;
    let price = monthly(&app, 1000).await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": price})).await);
    let invoice_id = invoices_of(&app, &id).await[0]["invoice_id"].as_str().unwrap().to_string();
    let r = app.post(&format!("/v1/invoices/{invoice_id}/pay"), json!({})).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["error"]["type"], "card_error");
    assert_eq!(r.body["error"]["decline_code"], "generic_decline");
    let after = invoice(&app, &invoice_id).await;
    assert_eq!((&after["status"], &after["attempt_count"]), (&json!("open"), &json!(2)));
}

#[tokio::test]
async fn a_voided_invoice_cannot_be_paid() {
    let app = spawn_app().await;
    let (_, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(GOOD_CARD)).await;
    let price = monthly(&app, 1000).await;
    let id = id_of(
        &create_ok(&app, json!({"customer_id": customer, "plan_id": price, "collection_method": "SEND_INVOICE"})).await,
    );
    let invoice_id = invoices_of(&app, &id).await[0]["invoice_id"].as_str().unwrap().to_string();
    let r = app.post(&format!("/v1/invoices/{invoice_id}/void"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["invoice"]["status"], "void");
    assert_eq!(events_of(&app, "invoice.voided").await.len(), 1);
    for action in ["pay", "void"] {
        let r = app.post(&format!("/v1/invoices/{invoice_id}/{action}"), json!({})).await;
        assert_eq!(r.status, 422, "{action}: {}", r.text);
        assert_eq!(r.body["error"]["type"], "unprocessable", "{action}");
    }
    assert_eq!(invoice(&app, &invoice_id).await["status"], "void");
    assert_eq!(app.post("/v1/invoices/fin_01HW5MXAPBE79RHMMJJGB4ACAB/pay", json!({})).await.status, 404);
    let r = app.post(&format!("/v1/invoices/{invoice_id}/pay"), json!({"amount": 5})).await;
    assert_eq!(r.status, 400, "{}", r.text);
}

// -------------------------------------------------------------------------------------------------
// payment_behavior
// -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn default_incomplete_waits_23_hours_then_expires_and_voids_the_invoice() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-01-01T10:00:00Z", "c", Some(GOOD_CARD)).await;
    let price = monthly(&app, 1000).await;
    let sub =
        create_ok(&app, json!({"customer_id": customer, "plan_id": price, "payment_behavior": "DEFAULT_INCOMPLETE"}))
            .await;
    let id = id_of(&sub);
    assert_eq!(sub["subscription_status"], "INCOMPLETE");
    let first = invoices_of(&app, &id).await.remove(0);
    assert_eq!((&first["status"], &first["amount_paid"]), (&json!("open"), &json!(0)), "not charged: {first}");
    advance(&app, &c, "2024-01-02T08:59:59Z").await;
    assert_eq!(subscription(&app, &id).await["subscription_status"], "INCOMPLETE");
    advance(&app, &c, "2024-01-02T09:00:00Z").await;
    assert_eq!(subscription(&app, &id).await["subscription_status"], "INCOMPLETE_EXPIRED");
    assert_eq!(invoice(&app, first["invoice_id"].as_str().unwrap()).await["status"], "void");
    advance(&app, &c, "2024-03-01T00:00:00Z").await;
    assert_eq!(invoices_of(&app, &id).await.len(), 1, "an expired subscription is not billed");

    // Paid within the 23 hours, it becomes ACTIVE and renews.
    let sub =
        create_ok(&app, json!({"customer_id": customer, "plan_id": price, "payment_behavior": "DEFAULT_INCOMPLETE"}))
            .await;
    let id = id_of(&sub);
    let first = invoices_of(&app, &id).await.remove(0);
    let r = app.post(&format!("/v1/invoices/{}/pay", first["invoice_id"].as_str().unwrap()), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(subscription(&app, &id).await["subscription_status"], "ACTIVE");
    advance(&app, &c, "2024-04-01T00:00:00Z").await;
    assert_eq!(subscription(&app, &id).await["subscription_status"], "ACTIVE");
    assert_eq!(invoices_of(&app, &id).await.len(), 2);
}

#[tokio::test]
async fn allow_incomplete_with_a_declining_card_leaves_it_incomplete() {
    let app = spawn_app().await;
    let (_, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(DECLINING_CARD)).await;
    let price = monthly(&app, 1000).await;
    let r =
        create_sub(&app, json!({"customer_id": customer, "plan_id": price, "payment_behavior": "ALLOW_INCOMPLETE"}))
            .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["subscription_status"], "INCOMPLETE");
    let first = invoices_of(&app, &id_of(&r.body)).await.remove(0);
    assert_eq!((&first["status"], &first["attempt_count"]), (&json!("open"), &json!(1)), "{first}");
    assert_eq!(first["last_decline_code"], "generic_decline");
    assert_eq!(events_of(&app, "invoice.payment_failed").await.len(), 1);
    // With a good card it is simply ACTIVE.
    let (_, good) = customer_at(&app, "2024-01-01T00:00:00Z", "g", Some(GOOD_CARD)).await;
    let r =
        create_sub(&app, json!({"customer_id": good, "plan_id": price, "payment_behavior": "ALLOW_INCOMPLETE"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["subscription_status"], "ACTIVE");
}

#[tokio::test]
async fn error_if_incomplete_with_a_declining_card_is_a_402_and_creates_nothing() {
    let app = spawn_app().await;
    let (_, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "c", Some(DECLINING_CARD)).await;
    let price = monthly(&app, 1000).await;
    let before = app.snapshot().await;
    let r = create_sub(
        &app,
        json!({"customer_id": customer, "plan_id": price, "payment_behavior": "ERROR_IF_INCOMPLETE", "lookup_key": "k"}),
    )
    .await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["error"]["type"], "card_error");
    assert_eq!(r.body["error"]["decline_code"], "generic_decline");
    assert_eq!(app.snapshot().await, before);
    assert_eq!(app.get("/v1/subscriptions").await.body["subscriptions"], json!([]));
    // The lookup key is still free.
    let (_, good) = customer_at(&app, "2024-01-01T00:00:00Z", "g", Some(GOOD_CARD)).await;
    let r = create_sub(
        &app,
        json!({"customer_id": good, "plan_id": price, "payment_behavior": "ERROR_IF_INCOMPLETE", "lookup_key": "k"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["subscription_status"], "ACTIVE");
    assert_eq!(invoices_of(&app, &id_of(&r.body)).await[0]["status"], "paid");
    assert_eq!(events_of(&app, "customer.subscription.created").await.len(), 1);
}

// -------------------------------------------------------------------------------------------------
// Hard declines, reminders
// -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_hard_decline_at_renewal_stops_automatic_retries() {
    let app = spawn_app().await;
    let c = clock(&app, "2024-05-01T00:00:00Z").await;
    let customer = customer_on(&app, &c, "c").await;
    save_card_through_challenge(&app, &customer, THREE_DS_ALWAYS_CARD).await;
    let price = make_price(&app, 4999, Some("monthly"), 1, Some(7), "usd").await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": price})).await);
    assert_eq!(subscription(&app, &id).await["subscription_status"], "TRIALING");
    // Trial ends May 8: the off-session charge needs authentication the customer is not there for.
    advance(&app, &c, "2024-05-08T00:00:01Z").await;
    let renewal = invoices_of(&app, &id).await.pop().unwrap();
    assert_eq!(renewal["status"], "open", "{renewal}");
    assert_eq!(renewal["attempt_count"], 1);
    assert_eq!(renewal["next_payment_attempt"], Value::Null, "no automatic retries: {renewal}");
    assert_eq!(renewal["last_decline_code"], "authentication_required");
    let url = renewal["hosted_invoice_url"].as_str().unwrap();
    assert!(url.ends_with(&format!("/pay/i/{}", renewal["invoice_id"].as_str().unwrap())), "{url}");
    assert_eq!(subscription(&app, &id).await["subscription_status"], "PAST_DUE");
    let pi = app.get(&format!("/v1/payment_intents/{}", renewal["payment_intent"].as_str().unwrap())).await;
    assert_eq!(pi.body["payment_intent"]["last_payment_error"]["decline_code"], "authentication_required");
    // Days pass: still one attempt (until the collection deadline, see below).
    advance(&app, &c, "2024-05-14T00:00:00Z").await;
    let later = invoices_of(&app, &id).await.pop().unwrap();
    assert_eq!((&later["attempt_count"], &later["status"]), (&json!(1), &json!("open")));
    assert_eq!(subscription(&app, &id).await["subscription_status"], "PAST_DUE");
    let failed = events_of(&app, "invoice.payment_failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["object"]["invoice"]["next_payment_attempt"], Value::Null);
}

#[tokio::test]
async fn a_hard_declined_invoice_unpaid_by_the_last_retry_day_ends_dunning_without_another_charge() {
    for unpaid in [false, true] {
        let app = spawn_app().await;
        if unpaid {
            let r =
                app.post("/v1/billing_settings", json!({"billing_settings": {"after_final_failure": "UNPAID"}})).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
        let c = clock(&app, "2024-05-01T00:00:00Z").await;
        let customer = customer_on(&app, &c, "c").await;
        save_card_through_challenge(&app, &customer, THREE_DS_ALWAYS_CARD).await;
        let price = make_price(&app, 4999, Some("monthly"), 1, Some(7), "usd").await;
        let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": price})).await);
        advance(&app, &c, "2024-05-08T00:00:01Z").await;
        let renewal = invoices_of(&app, &id).await.pop().unwrap();
        assert_eq!(renewal["last_decline_code"], "authentication_required");
        assert_eq!(renewal["next_payment_attempt"], Value::Null, "{renewal}");
        // The customer has until the day of dunning's last retry to pay on the hosted page.
        assert_eq!(renewal["due_date"], "2024-05-15T00:00:00Z", "{renewal}");
        advance(&app, &c, "2024-05-14T23:59:59Z").await;
        assert_eq!(subscription(&app, &id).await["subscription_status"], "PAST_DUE");
        advance(&app, &c, "2024-05-15T00:00:01Z").await;
        let ended = invoices_of(&app, &id).await.pop().unwrap();
        assert_eq!((&ended["status"], &ended["attempt_count"]), (&json!("uncollectible"), &json!(1)), "{ended}");
        let status = if unpaid { "UNPAID" } else { "CANCELED" };
        assert_eq!(subscription(&app, &id).await["subscription_status"], status);
        assert_eq!(events_of(&app, "invoice.marked_uncollectible").await.len(), 1);
        assert_eq!(events_of(&app, "invoice.payment_failed").await.len(), 1, "no charge at the deadline");
        assert_eq!(events_of(&app, "customer.subscription.deleted").await.len(), usize::from(!unpaid));
        // Nothing more is due on it.
        advance(&app, &c, "2024-05-30T00:00:00Z").await;
        assert_eq!(events_of(&app, "invoice.marked_uncollectible").await.len(), 1);
    }
}

#[tokio::test]
async fn a_send_invoice_subscription_is_past_due_once_its_invoice_is_overdue_and_active_once_paid() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-03-01T00:00:00Z", "c", None).await;
    let price = monthly(&app, 4999).await;
    let body = json!({"customer_id": customer, "plan_id": price, "collection_method": "SEND_INVOICE",
        "payment_terms": "15_NET"});
    let id = id_of(&create_ok(&app, body).await);
    let first = invoices_of(&app, &id).await.pop().unwrap();
    assert_eq!(first["due_date"], "2024-03-16T00:00:00Z", "{first}");
    assert_eq!(first["next_payment_attempt"], Value::Null, "nothing is charged automatically: {first}");
    advance(&app, &c, "2024-03-15T23:59:59Z").await;
    assert_eq!(subscription(&app, &id).await["subscription_status"], "ACTIVE");
    assert!(events_of(&app, "invoice.overdue").await.is_empty());
    advance(&app, &c, "2024-03-16T00:00:01Z").await;
    assert_eq!(subscription(&app, &id).await["subscription_status"], "PAST_DUE");
    let overdue = events_of(&app, "invoice.overdue").await;
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0]["object"]["invoice"]["invoice_id"], first["invoice_id"]);
    assert_eq!(overdue[0]["created_at"], "2024-03-16T00:00:00Z");
    // Still open: the customer pays it on its page, and the subscription is active again.
    let open = invoice(&app, first["invoice_id"].as_str().unwrap()).await;
    assert_eq!(open["status"], "open");
    let paid = crate::invoice_page::pay_invoice(&app, &crate::invoice_page::page_path(&open), GOOD_CARD).await;
    assert_eq!(paid.status, 303, "{}", paid.html);
    assert_eq!(subscription(&app, &id).await["subscription_status"], "ACTIVE");
    // Once only.
    advance(&app, &c, "2024-03-20T00:00:00Z").await;
    assert_eq!(events_of(&app, "invoice.overdue").await.len(), 1);
}

#[tokio::test]
async fn trial_will_end_and_invoice_upcoming_come_three_days_before() {
    let app = spawn_app().await;
    let (c, customer) = customer_at(&app, "2024-01-10T09:00:00Z", "c", Some(GOOD_CARD)).await;
    let price = make_price(&app, 2000, Some("monthly"), 1, Some(14), "usd").await;
    let id = id_of(&create_ok(&app, json!({"customer_id": customer, "plan_id": price})).await);
    advance(&app, &c, "2024-01-21T08:59:59Z").await;
    assert!(events_of(&app, "customer.subscription.trial_will_end").await.is_empty());
    assert!(events_of(&app, "invoice.upcoming").await.is_empty());
    advance(&app, &c, "2024-01-21T09:00:00Z").await;
    let will_end = events_of(&app, "customer.subscription.trial_will_end").await;
    assert_eq!(will_end.len(), 1);
    assert_eq!(will_end[0]["created_at"], "2024-01-21T09:00:00Z");
    assert_eq!(will_end[0]["object"]["subscription"]["id"], id.as_str());
    assert_eq!(will_end[0]["object"]["subscription"]["trial_end"], "2024-01-24T09:00:00Z");
    let upcoming = events_of(&app, "invoice.upcoming").await;
    assert_eq!(upcoming.len(), 1, "the first charge at the trial end is announced too");
    assert_eq!(upcoming[0]["created_at"], "2024-01-21T09:00:00Z");
    let preview = &upcoming[0]["object"]["invoice"];
    assert_eq!(
        (preview["amount_due"].as_i64(), preview["period_start"].as_str()),
        (Some(2000), Some("2024-01-24T09:00:00Z"))
    );
    advance(&app, &c, "2024-02-21T08:59:59Z").await;
    assert_eq!(events_of(&app, "invoice.upcoming").await.len(), 1);
    advance(&app, &c, "2024-02-21T09:00:00Z").await;
    let upcoming = events_of(&app, "invoice.upcoming").await;
    assert_eq!(upcoming.len(), 2);
    assert_eq!(upcoming[1]["created_at"], "2024-02-21T09:00:00Z");
    assert_eq!(upcoming[1]["object"]["invoice"]["period_start"], "2024-02-24T09:00:00Z");
    assert_eq!(upcoming[1]["object"]["invoice"]["period_end"], "2024-03-24T09:00:00Z");
    assert_eq!(events_of(&app, "customer.subscription.trial_will_end").await.len(), 1);
}

// -------------------------------------------------------------------------------------------------
// Live keys
// -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn live_keys_get_404_from_test_clocks_and_cannot_use_test_customers() {
    let app = spawn_app_with_live_stripe().await;
    let c = clock(&app, "2024-01-01T00:00:00Z").await;
    let customer = customer_on(&app, &c, "c").await;
    let price = monthly(&app, 1000).await;
    let live = app.live_key.clone();
    let before = app.snapshot().await;
    let r = app
        .post_as(&live, "/v1/test_helpers/test_clocks", json!({"test_clock": {"frozen_time": "2024-01-01T00:00:00Z"}}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = app
        .post_as(
            &live,
            &format!("/v1/test_helpers/test_clocks/{c}/advance"),
            json!({"test_clock": {"frozen_time": "2024-02-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = app.post_as(&live, "/v1/customers", json!({"customer": {"email": "a@example.com", "test_clock": c}})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(param(&r), "customer.test_clock");
    let r = app.post_as(&live, "/v1/subscriptions", json!({"customer_id": customer, "plan_id": price})).await;
    assert!(r.status == 400 || r.status == 404, "{}", r.text);
    assert_eq!(app.get_as(&live, &format!("/v1/customers/{customer}")).await.status, 404);
    assert_eq!(app.snapshot().await, before);
}

// -------------------------------------------------------------------------------------------------
// Malformed create requests
// -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_create_requests_name_the_param_and_write_nothing() {
    let app = spawn_app().await;
    let (_, customer) = customer_at(&app, "2024-01-01T00:00:00Z", "ext-1", None).await;
    let price = monthly(&app, 1000).await;
    let other = monthly(&app, 500).await;
    let one_time = make_price(&app, 500, None, 1, None, "usd").await;
    let nowhere = "fprice_01HW5MXAPBE79RHMMJJGB4ACAB";
    let monthly_only = app.post("/v1/products", json!({"product": {"name": "Only monthly"}})).await.body["product"]
        ["product_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .post(
            "/v1/prices",
            json!({"price": {"product": monthly_only, "unit_amount": 100, "recurring": {"interval": "monthly"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let base = json!({"customer_id": customer, "plan_id": price});
    let with = |extra: Value| {
        let mut b = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(json!({"billing_period": "MONTHLY"})), "billing_period"),
        (with(json!({"billing_period_count": 1.5})), "billing_period_count"),
        (with(json!({"billing_period_count": -1})), "billing_period_count"),
        (with(json!({"billing_period_count": "2"})), "billing_period_count"),
        (with(json!({"start_date": "2024-13-01T00:00:00Z"})), "start_date"),
        (with(json!({"start_date": "2024-03-20"})), "start_date"),
        (with(json!({"start_date": 1710892800})), "start_date"),
        (with(json!({"end_date": "soon"})), "end_date"),
        (with(json!({"start_date": "2024-02-01T00:00:00Z", "trial_end": "2024-01-01T00:00:00Z"})), "trial_end"),
        (with(json!({"trial_start": "2024-02-01T00:00:00Z"})), "trial_end"),
        (with(json!({"trial_end": "2024-02-30T00:00:00Z"})), "trial_end"),
        (with(json!({"collection_method": "CHARGE"})), "collection_method"),
        (with(json!({"payment_behavior": "DEFAULT"})), "payment_behavior"),
        (with(json!({"status": "CANCELED"})), "status"),
        (with(json!({"commitment_duration": "MONTH"})), "commitment_duration"),
        (with(json!({"commitment_amount": "10", "commitment_duration": "WEEK"})), "commitment_duration"),
        (with(json!({"commitment_amount": "10", "overage_factor": 1.5})), "overage_factor"),
        (with(json!({"enable_true_up": true})), "enable_true_up"),
        (with(json!({"commitment_amount": "-5"})), "commitment_amount"),
        (with(json!({"commitment_amount": "10.001"})), "commitment_amount"),
        (with(json!({"commitment_amount": "1e3"})), "commitment_amount"),
        (with(json!({"proration_behavior": "ALWAYS"})), "proration_behavior"),
        (with(json!({"customer_timezone": ""})), "customer_timezone"),
        (with(json!({"customer_timezone": "GMT+5"})), "customer_timezone"),
        (with(json!({"invoice_billing": "INVOICE_TO_PARENT"})), "invoice_billing"),
        (with(json!({"parent_subscription_id": "fsub_01HW5MXAPBE79RHMMJJGB4ACAB"})), "parent_subscription_id"),
        (
            with(json!({"override_line_items": [{"price_id": other, "amount": "1.00"}]})),
            "override_line_items[0].price_id",
        ),
        (
            with(json!({"override_line_items": [{"price_id": price, "quantity": "0"}]})),
            "override_line_items[0].quantity",
        ),
        (
            with(json!({"override_line_items": [{"price_id": price, "quantity": "1.5"}]})),
            "override_line_items[0].quantity",
        ),
        (with(json!({"override_line_items": [{"price_id": price, "amount": "-1"}]})), "override_line_items[0].amount"),
        (
            with(json!({"override_line_items": [{"price_id": price, "amount": "1.234"}]})),
            "override_line_items[0].amount",
        ),
        (with(json!({"override_line_items": [{"price_id": price, "amount": 12}]})), "override_line_items[0].amount"),
        (with(json!({"override_line_items": [{"price_id": price}]})), "override_line_items[0]"),
        (
            with(json!({"override_line_items": [{"price_id": price, "amount": "1", "colour": "x"}]})),
            "override_line_items[0].colour",
        ),
        (with(json!({"line_items": [{"price_id": nowhere}]})), "line_items[0].price_id"),
        (with(json!({"line_items": [{"price_id": other, "quantity": "1.5"}]})), "line_items[0].quantity"),
        (with(json!({"line_items": [{"price_id": other, "quantity": 0}]})), "line_items[0].quantity"),
        (with(json!({"phases": [{"end_date": "2024-03-01T00:00:00Z"}]})), "phases[0].start_date"),
        (
            with(json!({"phases": [{"start_date": "2024-01-01T00:00:00Z"}, {"start_date": "2024-03-01T00:00:00Z"}]})),
            "phases[0].end_date",
        ),
        (
            with(json!({"phases": [
                {"start_date": "2024-01-01T00:00:00Z", "end_date": "2024-03-01T00:00:00Z"},
                {"start_date": "2024-02-01T00:00:00Z"}
            ]})),
            "phases[1].start_date",
        ),
        (
            with(json!({"phases": [{"start_date": "2024-03-01T00:00:00Z", "end_date": "2024-02-01T00:00:00Z"}]})),
            "phases[0].end_date",
        ),
        (
            with(json!({"start_date": "2024-01-01T00:00:00Z", "phases": [{"start_date": "2023-12-01T00:00:00Z"}]})),
            "phases[0].start_date",
        ),
        (with(json!({"lookup_key": "x".repeat(256)})), "lookup_key"),
        (with(json!({"external_customer_id": "someone-else"})), "external_customer_id"),
        (with(json!({"plan_id": one_time})), "plan_id"),
        (with(json!({"plan_id": ""})), "plan_id"),
        (with(json!({"currency": "zzz"})), "currency"),
        (with(json!({"billing_cycle": "calendar"})), "billing_cycle"),
        (with(json!({"plan_id": price, "planid": price})), "planid"),
    ];
    let before = app.snapshot().await;
    let mut wrong = Vec::new();
    for (body, expected) in &cases {
        let r = create_sub(&app, body.clone()).await;
        if r.status != 400 || param(&r) != expected {
            wrong.push(format!("{body}\n    expected 400 {expected}, got {} {}", r.status, r.text));
        }
    }
    // Metadata: a non-string value is refused (param names metadata or the key).
    let r = create_sub(&app, with(json!({"metadata": {"k": 5}}))).await;
    if r.status != 400 || !param(&r).as_str().unwrap_or_default().starts_with("metadata") {
        wrong.push(format!("metadata {{k: 5}}: {} {}", r.status, r.text));
    }
    for raw in ["{", "[]", "\"x\"", "{\"customer_id\": }"] {
        let r = app.post_raw("/v1/subscriptions", raw).await;
        if r.status != 400 || r.body["error"]["type"] != "invalid_request_error" {
            wrong.push(format!("body {raw}: {} {}", r.status, r.text));
        }
    }
    // A product with no recurring price for the period asked: 422 saying so.
    let r = create_sub(&app, with(json!({"plan_id": monthly_only, "billing_period": "YEAR"}))).await;
    if r.status != 422 {
        wrong.push(format!("product without a yearly price: {} {}", r.status, r.text));
    }
    assert!(
        wrong.is_empty(),
        "{} of {} malformed requests answered wrongly:\n  {}",
        wrong.len(),
        cases.len(),
        wrong.join("\n  ")
    );
    assert_eq!(app.snapshot().await, before);
}
