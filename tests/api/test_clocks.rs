//! `/v1/test_helpers/test_clocks` and customers on a test clock: the round trip, idempotent
//! writes, test mode only, isolation, bad input named by param with nothing written, advances that
//! only go forward and never overlap, deletion, and the customer's `test_clock`.

use serde_json::{json, Value};

use crate::common::{spawn_app, spawn_app_with_live_stripe, Response, TestApp};

const CLOCKS: &str = "/v1/test_helpers/test_clocks";
const START: &str = "2024-01-01T00:00:00Z";

async fn create(app: &TestApp, body: Value) -> Response {
    app.post(CLOCKS, json!({ "test_clock": body })).await
}

/// A clock frozen at `START`; returns its id.
async fn clock(app: &TestApp) -> String {
    let r = create(app, json!({"frozen_time": START})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["test_clock"]["test_clock_id"].as_str().unwrap().to_string()
}

async fn advance(app: &TestApp, id: &str, to: &str) -> Response {
    app.post(&format!("{CLOCKS}/{id}/advance"), json!({"test_clock": {"frozen_time": to}})).await
}

async fn delete(app: &TestApp, key: &str, path: &str) -> Response {
    app.send(reqwest::Method::DELETE, path, Some(key), None, None).await
}

/// (frozen_time in microseconds, status, deleted) as stored.
async fn stored(app: &TestApp, id: &str) -> (i64, String, bool) {
    let (frozen, status, deleted_at): (i64, String, Option<i64>) =
        sqlx::query_as("SELECT frozen_time, status, deleted_at FROM test_clocks WHERE id = $1")
            .bind(id)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap();
    (frozen, status, deleted_at.is_some())
}

fn micros(rfc3339: &str) -> i64 {
    flex_checkout::domain::timestamp::Timestamp::parse_rfc3339(rfc3339).unwrap().micros()
}

#[tokio::test]
async fn create_retrieve_list_advance_and_delete() {
    let app = spawn_app().await;
    let r = create(&app, json!({"frozen_time": "2024-01-01T05:30:00+05:30", "name": "  Annual renewals  "})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = &r.body["test_clock"];
    let first = c["test_clock_id"].as_str().unwrap().to_string();
    assert!(first.starts_with("fclock_") && first.len() == 7 + 26, "{first}");
    assert_eq!(c["name"], "Annual renewals");
    assert_eq!(c["frozen_time"], START, "kept as the instant, shown in UTC");
    assert_eq!(c["status"], "ready");
    assert_eq!(c["test_mode"], true);
    assert!(c["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(c.get("deleted").is_none());
    let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 6, "{keys:?}");

    let got = app.get(&format!("{CLOCKS}/{first}")).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body, r.body);
    // Ids are canonical: a lower-case spelling finds the same clock.
    let lower = format!("fclock_{}", first.trim_start_matches("fclock_").to_lowercase());
    assert_eq!(app.get(&format!("{CLOCKS}/{lower}")).await.body, r.body);

    let second = clock(&app).await;
    let list = app.get(CLOCKS).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let ids: Vec<&str> =
        list.body["test_clocks"].as_array().unwrap().iter().map(|c| c["test_clock_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    assert_eq!(list.body["has_more"], false);
    assert_eq!(list.body["test_clocks"][0]["name"], Value::Null);
    let page = app.get(&format!("{CLOCKS}?limit=1")).await;
    assert_eq!(page.body["test_clocks"].as_array().unwrap().len(), 1);
    assert_eq!(page.body["has_more"], true);
    let next = app.get(&format!("{CLOCKS}?limit=1&starting_after={second}")).await;
    assert_eq!(next.body["test_clocks"][0]["test_clock_id"], first.as_str());
    assert_eq!(next.body["has_more"], false);
    let back = app.get(&format!("{CLOCKS}?ending_before={first}")).await;
    assert_eq!(back.body["test_clocks"][0]["test_clock_id"], second.as_str());

    let a = advance(&app, &first, "2024-02-01T00:00:00.5Z").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["test_clock"]["frozen_time"], "2024-02-01T00:00:00.5Z");
    assert_eq!(a.body["test_clock"]["status"], "ready");
    assert_eq!(a.body["test_clock"]["name"], "Annual renewals");
    assert_eq!(app.get(&format!("{CLOCKS}/{first}")).await.body, a.body);
    // Two years to the day is the longest step.
    let far = advance(&app, &first, "2026-02-01T00:00:00.5Z").await;
    assert_eq!(far.status, 200, "{}", far.text);
    assert_eq!(stored(&app, &first).await, (micros("2026-02-01T00:00:00.5Z"), "ready".to_string(), false));

    let d = delete(&app, &app.test_key, &format!("{CLOCKS}/{first}")).await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["test_clock"]["deleted"], true);
    assert_eq!(d.body["test_clock"]["test_clock_id"], first.as_str());
    assert_eq!(d.body["test_clock"]["frozen_time"], "2026-02-01T00:00:00.5Z");
    assert!(stored(&app, &first).await.2, "kept, marked deleted");
    for r in [
        app.get(&format!("{CLOCKS}/{first}")).await,
        advance(&app, &first, "2026-03-01T00:00:00Z").await,
        delete(&app, &app.test_key, &format!("{CLOCKS}/{first}")).await,
    ] {
        assert_eq!(r.status, 404, "{}", r.text);
        assert_eq!(r.body["error"]["type"], "not_found");
    }
    let list = app.get(CLOCKS).await;
    assert_eq!(list.body["test_clocks"].as_array().unwrap().len(), 1);
    assert!(!list.text.contains(&first));
}

#[tokio::test]
async fn idempotent_creates_and_advances_replay() {
    let app = spawn_app().await;
    let body = json!({"test_clock": {"frozen_time": START, "name": "replayed"}}).to_string();
    let send = |path: String, body: String, key: &'static str| {
        let app = &app;
        async move { app.send(reqwest::Method::POST, &path, Some(&app.test_key), Some(body), Some(key)).await }
    };
    let a = send(CLOCKS.to_string(), body.clone(), "c1").await;
    let b = send(CLOCKS.to_string(), body, "c1").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.text, b.text);
    assert_eq!(b.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(app.count("test_clocks").await, 1);

    let id = a.body["test_clock"]["test_clock_id"].as_str().unwrap();
    let path = format!("{CLOCKS}/{id}/advance");
    let step = json!({"test_clock": {"frozen_time": "2024-06-01T00:00:00Z"}}).to_string();
    let first = send(path.clone(), step.clone(), "a1").await;
    assert_eq!(first.status, 200, "{}", first.text);
    // Run again it would be a 400 (not after the current time); the key replays the first answer.
    let again = send(path.clone(), step, "a1").await;
    assert_eq!((again.status, again.text.as_str()), (200, first.text.as_str()));
    let other = send(path, json!({"test_clock": {"frozen_time": "2024-07-01T00:00:00Z"}}).to_string(), "a1").await;
    assert_eq!(other.status, 409, "{}", other.text);
    assert_eq!(other.body["error"]["type"], "idempotency_error");
    assert_eq!(stored(&app, id).await.0, micros("2024-06-01T00:00:00Z"));
}

#[tokio::test]
async fn live_keys_other_merchants_and_other_ids_get_404() {
    let app = spawn_app_with_live_stripe().await;
    let id = clock(&app).await;
    let live = app.live_key.clone();
    let advance_body = json!({"test_clock": {"frozen_time": "2024-02-01T00:00:00Z"}});
    // With a live key every route is a 404, whatever the body or id.
    for r in [
        app.post_as(&live, CLOCKS, json!({"test_clock": {"frozen_time": START}})).await,
        app.post_as(&live, CLOCKS, json!({"nonsense": true})).await,
        app.get_as(&live, CLOCKS).await,
        app.get_as(&live, &format!("{CLOCKS}/{id}")).await,
        app.get_as(&live, &format!("{CLOCKS}/nope")).await,
        app.post_as(&live, &format!("{CLOCKS}/{id}/advance"), advance_body.clone()).await,
        delete(&app, &live, &format!("{CLOCKS}/{id}")).await,
    ] {
        assert_eq!(r.status, 404, "{}", r.text);
        assert_eq!(r.body["error"]["type"], "not_found", "{}", r.text);
    }
    assert!(app.post_as(&live, CLOCKS, json!({})).await.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("test mode"));

    let other = app.other_merchant_key().await;
    for r in [
        app.get_as(&other, &format!("{CLOCKS}/{id}")).await,
        app.post_as(&other, &format!("{CLOCKS}/{id}/advance"), advance_body.clone()).await,
        delete(&app, &other, &format!("{CLOCKS}/{id}")).await,
    ] {
        assert_eq!(r.status, 404, "{}", r.text);
        assert_eq!(r.body["error"]["type"], "not_found");
    }
    let theirs = app.get_as(&other, CLOCKS).await;
    assert_eq!((theirs.status, &theirs.body["test_clocks"]), (200, &json!([])));
    // Their clocks are theirs.
    let made = app.post_as(&other, CLOCKS, json!({"test_clock": {"frozen_time": START}})).await;
    assert_eq!(made.status, 200, "{}", made.text);
    let their_id = made.body["test_clock"]["test_clock_id"].as_str().unwrap();
    assert_eq!(app.get(&format!("{CLOCKS}/{their_id}")).await.status, 404);
    assert_eq!(app.get(CLOCKS).await.body["test_clocks"].as_array().unwrap().len(), 1);
    // Ours is untouched.
    assert_eq!(stored(&app, &id).await, (micros(START), "ready".to_string(), false));
    for path in ["fcus_01HW5MXAPBE79RHMMJJGB4ACAB", "nope", "fclock_", "fclock_01HW5MXAPBE79RHMMJJGB4ACAB"] {
        assert_eq!(app.get(&format!("{CLOCKS}/{path}")).await.status, 404, "{path}");
        assert_eq!(advance(&app, path, "2024-02-01T00:00:00Z").await.status, 404, "{path}");
    }
    let r = app.send(reqwest::Method::PUT, &format!("{CLOCKS}/{id}"), Some(&app.test_key), None, None).await;
    assert_eq!(r.status, 405, "{}", r.text);
}

#[tokio::test]
async fn bad_input_names_the_param_and_writes_nothing() {
    let app = spawn_app().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "test_clock.frozen_time"),
        (json!({"frozen_time": "2024-01-01"}), "test_clock.frozen_time"),
        (json!({"frozen_time": "yesterday"}), "test_clock.frozen_time"),
        (json!({"frozen_time": "2024-02-30T00:00:00Z"}), "test_clock.frozen_time"),
        (json!({"frozen_time": 1704067200}), "test_clock.frozen_time"),
        (json!({"frozen_time": null}), "test_clock.frozen_time"),
        (json!({"frozen_time": "1999-12-31T23:59:59Z"}), "test_clock.frozen_time"),
        (json!({"frozen_time": "2200-01-01T00:00:00Z"}), "test_clock.frozen_time"),
        (json!({"frozen_time": START, "name": "x".repeat(301)}), "test_clock.name"),
        (json!({"frozen_time": START, "name": "a\u{0}b"}), "test_clock.name"),
        (json!({"frozen_time": START, "name": 7}), "test_clock.name"),
        (json!({"frozen_time": START, "status": "advancing"}), "test_clock.status"),
        (json!({"frozen_time": START, "frozen_tme": START}), "test_clock.frozen_tme"),
    ];
    for (body, param) in cases {
        let r = create(&app, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.text);
    }
    let r = app.post(CLOCKS, json!({"frozen_time": START})).await;
    assert_eq!((r.status, r.body["error"]["param"].as_str()), (400, Some("test_clock")));
    let r = app.post_raw(CLOCKS, "{\"test_clock\": ").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(app.count("test_clocks").await, 0);
    assert!(create(&app, json!({"frozen_time": START, "name": "x".repeat(300)})).await.status == 200);

    // Advances: forward only, at most two years, the same format; the clock stays as it was.
    let id = clock(&app).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"frozen_time": START}), "test_clock.frozen_time"),
        (json!({"frozen_time": "2023-12-31T23:59:59Z"}), "test_clock.frozen_time"),
        (json!({"frozen_time": "2026-01-01T00:00:00.000001Z"}), "test_clock.frozen_time"),
        (json!({"frozen_time": "2030-01-01T00:00:00Z"}), "test_clock.frozen_time"),
        (json!({"frozen_time": "next month"}), "test_clock.frozen_time"),
        (json!({}), "test_clock.frozen_time"),
        (json!({"frozen_time": "2024-02-01T00:00:00Z", "name": "renamed"}), "test_clock.name"),
    ];
    for (body, param) in cases {
        let r = app.post(&format!("{CLOCKS}/{id}/advance"), json!({ "test_clock": body })).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.text);
    }
    let backwards = advance(&app, &id, "2023-06-01T00:00:00Z").await;
    assert!(backwards.body["error"]["message"].as_str().unwrap().contains(START), "{}", backwards.text);
    let far = advance(&app, &id, "2027-01-01T00:00:00Z").await;
    assert!(far.body["error"]["message"].as_str().unwrap().contains("2026-01-01T00:00:00Z"), "{}", far.text);
    assert_eq!(stored(&app, &id).await, (micros(START), "ready".to_string(), false));
}

#[tokio::test]
async fn a_clock_being_advanced_is_a_conflict() {
    let app = spawn_app().await;
    let id = clock(&app).await;
    // Another request is advancing it (what `begin_advance` leaves until that request finishes).
    sqlx::query("UPDATE test_clocks SET status = 'advancing' WHERE id = $1")
        .bind(&id)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(app.get(&format!("{CLOCKS}/{id}")).await.body["test_clock"]["status"], "advancing");
    let r = advance(&app, &id, "2024-02-01T00:00:00Z").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["error"]["type"], "conflict");
    assert_eq!(r.body["error"]["code"], "test_clock_advancing");
    assert_eq!(stored(&app, &id).await, (micros(START), "advancing".to_string(), false));
    // Bad input is still named first.
    assert_eq!(advance(&app, &id, START).await.status, 400);
    // A clock left advancing (its server died mid-advance) can still be deleted.
    let d = delete(&app, &app.test_key, &format!("{CLOCKS}/{id}")).await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["test_clock"]["deleted"], true);
}

#[tokio::test]
async fn an_advance_whose_server_died_lets_go_of_the_clock_after_ten_minutes() {
    let app = spawn_app().await;
    let id = clock(&app).await;
    let now = app.state.clock.now();
    let hold = |since: i64| {
        sqlx::query("UPDATE test_clocks SET status = 'advancing', advancing_since = $1 WHERE id = $2")
            .bind(since)
            .bind(id.clone())
            .execute(&app.state.db.pool)
    };
    // Nine minutes in, it may still be running.
    hold(now.plus_seconds(-540).micros()).await.unwrap();
    assert_eq!(advance(&app, &id, "2024-02-01T00:00:00Z").await.status, 409);
    // Eleven minutes: its process died; the clock can be advanced again.
    hold(now.plus_seconds(-660).micros()).await.unwrap();
    let r = advance(&app, &id, "2024-02-01T00:00:00Z").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["test_clock"]["status"], "ready");
}

#[tokio::test]
async fn concurrent_advances_of_one_clock_never_overlap() {
    let app = spawn_app().await;
    let id = clock(&app).await;
    let to = "2024-03-01T00:00:00Z";
    let (a, b) = tokio::join!(advance(&app, &id, to), advance(&app, &id, to));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    // One moves the clock. The other either ran into it (409) or came after it (400: the clock is
    // already there); never a second advance over the same span.
    assert_eq!(statuses[0], 200, "{}\n{}", a.text, b.text);
    let loser = if a.status == 200 { &b } else { &a };
    match loser.status {
        409 => assert_eq!(loser.body["error"]["code"], "test_clock_advancing", "{}", loser.text),
        400 => assert_eq!(loser.body["error"]["param"], "test_clock.frozen_time", "{}", loser.text),
        other => panic!("unexpected {other}: {}", loser.text),
    }
    assert_eq!(stored(&app, &id).await, (micros(to), "ready".to_string(), false));

    // Many requests at once, each to its own later time: every 200 is a step forward, and the clock
    // ends ready at the latest time any of them reached.
    let targets: Vec<String> = (1..=6).map(|d| format!("2024-04-0{d}T00:00:00Z")).collect();
    let answers = futures_util::future::join_all(targets.iter().map(|t| advance(&app, &id, t))).await;
    let mut reached = Vec::new();
    for (r, t) in answers.iter().zip(&targets) {
        match r.status {
            200 => reached.push(t.clone()),
            400 | 409 => {}
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    let last = reached.iter().max().expect("at least one advance wins");
    assert_eq!(stored(&app, &id).await, (micros(last), "ready".to_string(), false));
}

#[tokio::test]
async fn customers_on_a_clock_show_it_and_keep_it() {
    let app = spawn_app().await;
    let id = clock(&app).await;
    let r = app.post("/v1/customers", json!({"customer": {"email": "clock@example.com", "test_clock": id}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let customer = r.body["customer"]["customer_id"].as_str().unwrap().to_string();
    assert_eq!(r.body["customer"]["test_clock"], id.as_str());
    let path = format!("/v1/customers/{customer}");
    assert_eq!(app.get(&path).await.body["customer"]["test_clock"], id.as_str());
    let plain =
        app.post("/v1/customers", json!({"customer": {"email": "plain@example.com", "test_clock": null}})).await;
    assert_eq!(plain.status, 200, "{}", plain.text);
    assert_eq!(plain.body["customer"]["test_clock"], Value::Null);

    let on_clock = app.get(&format!("/v1/customers?test_clock={id}")).await;
    assert_eq!(on_clock.status, 200, "{}", on_clock.text);
    let ids: Vec<&str> =
        on_clock.body["customers"].as_array().unwrap().iter().map(|c| c["customer_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [customer.as_str()]);
    let r = app.get("/v1/customers?test_clock=fcus_01HW5MXAPBE79RHMMJJGB4ACAB").await;
    assert_eq!((r.status, r.body["error"]["param"].as_str()), (400, Some("test_clock")));

    // The event reports the clock too.
    let events = app.get(&format!("/v1/events?object_id={customer}")).await;
    assert_eq!(events.body["events"][0]["object"]["customer"]["test_clock"], id.as_str(), "{}", events.text);

    // Sending the same clock back is fine; another one, or none, is refused and changes nothing.
    let u = app.post(&path, json!({"customer": {"first_name": "Cleo", "test_clock": id}})).await;
    assert_eq!(u.status, 200, "{}", u.text);
    assert_eq!(u.body["customer"]["test_clock"], id.as_str());
    let other = clock(&app).await;
    for value in [json!(other), json!(null), json!("fclock_nope")] {
        let r = app.post(&path, json!({"customer": {"first_name": "Changed", "test_clock": value}})).await;
        assert_eq!(r.status, 400, "{value}: {}", r.text);
        assert_eq!(r.body["error"]["param"], "customer.test_clock", "{value}");
    }
    let r = app
        .post(
            &format!("/v1/customers/{}", plain.body["customer"]["customer_id"].as_str().unwrap()),
            json!({"customer": {"test_clock": id}}),
        )
        .await;
    assert_eq!((r.status, r.body["error"]["param"].as_str()), (400, Some("customer.test_clock")));
    let now = app.get(&path).await.body["customer"].clone();
    assert_eq!((now["first_name"].as_str(), now["test_clock"].as_str()), (Some("Cleo"), Some(id.as_str())));
}

#[tokio::test]
async fn customers_need_an_existing_clock_of_their_own() {
    let app = spawn_app_with_live_stripe().await;
    let deleted = clock(&app).await;
    assert_eq!(delete(&app, &app.test_key, &format!("{CLOCKS}/{deleted}")).await.status, 200);
    let other = app.other_merchant_key().await;
    let theirs = app.post_as(&other, CLOCKS, json!({"test_clock": {"frozen_time": START}})).await;
    let theirs = theirs.body["test_clock"]["test_clock_id"].as_str().unwrap().to_string();
    let before = app.snapshot().await;
    for value in [
        json!("fclock_nope"),
        json!("fcus_01HW5MXAPBE79RHMMJJGB4ACAB"),
        json!("fclock_01HW5MXAPBE79RHMMJJGB4ACAB"),
        json!(""),
        json!(7),
        json!(deleted),
        json!(theirs),
    ] {
        let r = app.post("/v1/customers", json!({"customer": {"email": "a@example.com", "test_clock": value}})).await;
        assert_eq!(r.status, 400, "{value}: {}", r.text);
        assert_eq!(r.body["error"]["type"], "invalid_request_error", "{value}");
        assert_eq!(r.body["error"]["param"], "customer.test_clock", "{value}: {}", r.text);
    }
    let r = app.post("/v1/customers", json!({"customer": {"test_clock": deleted}})).await;
    assert!(r.body["error"]["message"].as_str().unwrap().contains("No such test clock"), "{}", r.text);
    // Live customers never live on a clock, not even on a real one of the same merchant.
    let ours = clock(&app).await;
    let before_live = app.snapshot().await;
    let r = app.post_as(&app.live_key, "/v1/customers", json!({"customer": {"test_clock": ours}})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["param"], "customer.test_clock");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("test mode"), "{}", r.text);
    assert_eq!(app.snapshot().await, before_live);
    assert_eq!(before, before_live);
}

#[tokio::test]
async fn deleting_a_clock_cancels_its_subscriptions_and_voids_their_open_invoices() {
    use crate::billing::{customer_on, invoices_of, monthly_price, save_card, subscription};
    let app = spawn_app().await;
    let id = clock(&app).await;
    let (_, price) = monthly_price(&app, 4999, None).await;
    // One charged automatically (paid), one sent as an invoice (left open).
    let ana = customer_on(&app, &id, "ana").await;
    save_card(&app, &ana, "4242424242424242").await;
    let paid = app.post("/v1/subscriptions", json!({"customer_id": ana, "plan_id": price})).await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    let bo = customer_on(&app, &id, "bo").await;
    let sent = app
        .post("/v1/subscriptions", json!({"customer_id": bo, "plan_id": price, "collection_method": "SEND_INVOICE"}))
        .await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    // A subscription on no clock is untouched.
    let other = app.post("/v1/customers", json!({"customer": {"email": "cy@example.com"}})).await;
    let cy = other.body["customer"]["customer_id"].as_str().unwrap().to_string();
    save_card(&app, &cy, "4242424242424242").await;
    let free = app.post("/v1/subscriptions", json!({"customer_id": cy, "plan_id": price})).await;
    assert_eq!(free.status, 200, "{}", free.text);

    let d = delete(&app, &app.test_key, &format!("{CLOCKS}/{id}")).await;
    assert_eq!(d.status, 200, "{}", d.text);
    for (r, open_invoice) in [(&paid, false), (&sent, true)] {
        let sub = r.body["id"].as_str().unwrap();
        let s = subscription(&app, sub).await;
        assert_eq!(s["subscription_status"], "CANCELED", "{s}");
        // At the clock's time, not the real one.
        assert_eq!(s["canceled_at"], START, "{s}");
        let invoices = invoices_of(&app, sub).await;
        assert_eq!(invoices[0]["status"], if open_invoice { "void" } else { "paid" }, "{invoices:?}");
    }
    assert_eq!(subscription(&app, free.body["id"].as_str().unwrap()).await["subscription_status"], "ACTIVE");
    let deleted = app.get("/v1/events?event_type=customer.subscription.deleted").await;
    assert_eq!(deleted.body["events"].as_array().unwrap().len(), 2, "{}", deleted.text);
    let voided = app.get("/v1/events?event_type=invoice.voided").await;
    assert_eq!(voided.body["events"].as_array().unwrap().len(), 1, "{}", voided.text);
    assert_eq!(advance(&app, &id, "2024-06-01T00:00:00Z").await.status, 404);
}
