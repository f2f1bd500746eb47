//! Nothing lost, nothing charged twice, when the server is killed (SIGKILL) at the worst moments of
//! a Stripe payment: the real binary runs as a child process against localstripe, a crash point
//! (`FLEX_TEST_CRASH_AT`, debug builds only) kills it right before or right after Stripe charges,
//! and a restarted server finishes the payment from Stripe's record, through the reconciler or
//! through a signed Stripe webhook. Also: localstripe's own signed webhook deliveries.
//!
//! Needs `LOCALSTRIPE_URL` (scripts/test.sh starts localstripe); with CI=true a missing one fails.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::stripe::{confirm_card_setup, contact_fields, localstripe_url, PUBLISHABLE, SECRET};
use flex_checkout::db::Db;
use serde_json::{json, Value};

const WEBHOOK_SECRET: &str = "whsec_flexcheckoutcrashtests";
const STALE_SECONDS: u64 = 30;

/// One server process on a database that outlives it.
struct Server {
    child: Child,
    port: u16,
    base: String,
    database_url: String,
    localstripe: String,
}

impl Server {
    fn start(database_url: &str, port: u16, localstripe: &str, crash_at: Option<&str>) -> (Server, Vec<String>) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flex-checkout"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("STRIPE_SECRET_KEY", SECRET)
            .env("STRIPE_PUBLISHABLE_KEY", PUBLISHABLE)
            .env("STRIPE_API_BASE", localstripe)
            .env("STRIPE_JS_URL", format!("{localstripe}/js.stripe.com/v3/"))
            .env("STRIPE_WEBHOOK_SECRET", format!("whsec_rotatedaway,{WEBHOOK_SECRET}"))
            .env("PAYMENT_STALE_SECONDS", STALE_SECONDS.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(point) = crash_at {
            cmd.env("FLEX_TEST_CRASH_AT", point);
        }
        let mut child = cmd.spawn().expect("start the server binary");
        // The banner ends with the "listening" line; a first start prints a test key before it.
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout).lines();
        let mut lines = Vec::new();
        for line in reader.by_ref() {
            let line = line.expect("server output");
            let done = line.contains("listening on");
            lines.push(line);
            if done {
                break;
            }
        }
        // Keep reading what the server logs later, so its writes never meet a closed pipe.
        std::thread::spawn(move || reader.for_each(|l| eprintln!("server: {}", l.unwrap_or_default())));
        let server = Server {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            database_url: database_url.to_string(),
            localstripe: localstripe.to_string(),
        };
        (server, lines)
    }

    fn restart(mut self) -> Server {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (server, _) = Server::start(&self.database_url, self.port, &self.localstripe, None);
        server
    }

    /// Waits for the process to die and says whether SIGKILL killed it.
    fn wait_killed(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.signal() == Some(9);
            }
            assert!(Instant::now() < deadline, "the server did not die at the crash point");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn api(server: &Server, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = client().request(method, format!("{}{path}", server.base)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("API answers");
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// A $49.99 one-time checkout session; returns its id.
async fn session(server: &Server, key: &str) -> String {
    let p =
        api(server, key, reqwest::Method::POST, "/v1/products", Some(json!({"product": {"name": "Kettlebell"}}))).await;
    let product = p["product"]["product_id"].as_str().unwrap();
    let pr = api(
        server,
        key,
        reqwest::Method::POST,
        "/v1/prices",
        Some(json!({"price": {"product": product, "unit_amount": 4999}})),
    )
    .await;
    let price = pr["price"]["price_id"].as_str().unwrap();
    let s = api(
        server,
        key,
        reqwest::Method::POST,
        "/v1/checkout/sessions",
        Some(json!({"checkout_session": {"mode": "payment", "line_items": [{"price": price}],
            "success_url": "https://shop.example/ok?s={CHECKOUT_SESSION_ID}", "cancel_url": ""}})),
    )
    .await;
    s["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string()
}

async fn csrf(server: &Server, session: &str) -> String {
    let html = client().get(format!("{}/pay/c/{session}", server.base)).send().await.unwrap().text().await.unwrap();
    let marker = r#"name="csrf" value=""#;
    let at = html.find(marker).expect("a CSRF token") + marker.len();
    html[at..at + 64].to_string()
}

/// The page's card step up to the hand-back: setup, Stripe.js's confirmation. Returns the attempt.
async fn set_up_card(server: &Server, session: &str, number: &str) -> String {
    let token = csrf(server, session).await;
    let mut form = vec![("csrf", token.as_str())];
    form.extend(contact_fields());
    let setup: Value = client()
        .post(format!("{}/pay/c/{session}/setup", server.base))
        .header("Origin", &server.base)
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    confirm_card_setup(setup["client_secret"].as_str().expect("a client secret"), number).await;
    setup["attempt"].as_str().unwrap().to_string()
}

/// The hidden form the page's script submits after Stripe.js.
async fn hand_back(server: &Server, session: &str, attempt: &str) -> Result<reqwest::Response, reqwest::Error> {
    let token = csrf(server, session).await;
    hand_back_with(server, session, attempt, &token).await
}

async fn hand_back_with(
    server: &Server,
    session: &str,
    attempt: &str,
    token: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    client()
        .post(format!("{}/pay/c/{session}/confirm", server.base))
        .header("Origin", &server.base)
        .form(&[("csrf", token), ("attempt", attempt)])
        .send()
        .await
}

async fn session_status(server: &Server, key: &str, session: &str) -> String {
    let s = api(server, key, reqwest::Method::GET, &format!("/v1/checkout/sessions/{session}"), None).await;
    s["checkout_session"]["status"].as_str().unwrap().to_string()
}

/// localstripe's PaymentIntents made for these attempts.
async fn stripe_charges(attempts: &[&str]) -> Vec<Value> {
    common::stripe::all_payment_intents()
        .await
        .into_iter()
        .filter(|pi| pi["metadata"]["flex_attempt"].as_str().is_some_and(|a| attempts.contains(&a)))
        .collect()
}

async fn db_count(database_url: &str, sql: &str, bind: &str) -> i64 {
    let db = Db::connect(database_url, 1).await.unwrap();
    let n = sqlx::query_scalar::<_, i64>(sql).bind(bind).fetch_one(&db.pool).await.unwrap();
    db.pool.close().await;
    n
}

fn key_from(banner: &[String]) -> String {
    banner
        .iter()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("fsk_test_")).map(String::from))
        .expect("a first start prints a test key")
}

/// A Stripe event about `object`, signed as Stripe signs.
fn signed_event(event_type: &str, object: &Value, secret: &str) -> (String, String) {
    let body = json!({"id": format!("evt_{}", ulid::Ulid::new()), "object": "event", "type": event_type,
        "created": chrono_now(), "livemode": false, "data": {"object": object}})
    .to_string();
    let t = chrono_now().to_string();
    let sig = hex::encode(flex_checkout::gateway::stripe_webhook::sign(secret, &t, body.as_bytes()));
    (body, format!("t={t},v1={sig}"))
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn post_event(server: &Server, body: &str, signature: &str) -> reqwest::Response {
    client()
        .post(format!("{}/stripe/webhook", server.base))
        .header("Stripe-Signature", signature)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn wait_for_status(server: &Server, key: &str, session: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if session_status(server, key, session).await == want {
            return;
        }
        assert!(Instant::now() < deadline, "session {session} did not become {want}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn killed_after_stripe_charged_the_reconciler_completes_the_session_once() {
    let Some(localstripe) = localstripe_url() else { return };
    let (database_url, _dir) = common::fresh_database().await;
    let (mut server, banner) = Server::start(&database_url, free_port(), &localstripe, Some("after_charge"));
    let key = key_from(&banner);
    let session = session(&server, &key).await;
    let attempt = set_up_card(&server, &session, "4242424242424242").await;

    assert!(hand_back(&server, &session, &attempt).await.is_err(), "the server dies mid-request");
    assert!(server.wait_killed(), "killed by SIGKILL at the crash point");
    // Stripe took the money; we recorded nothing yet.
    let charges = stripe_charges(&[&attempt]).await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["status"], "succeeded");
    let pending = "SELECT COUNT(*) FROM payment_attempts WHERE id = $1 AND status = 'pending'";
    assert_eq!(db_count(&database_url, pending, &attempt).await, 1);

    let server = server.restart();
    assert_eq!(session_status(&server, &key, &session).await, "open");
    // The reconciler presumes the attempt dead after PAYMENT_STALE_SECONDS and asks Stripe.
    wait_for_status(&server, &key, &session, "complete", Duration::from_secs(STALE_SECONDS + 30)).await;
    assert_eq!(stripe_charges(&[&attempt]).await.len(), 1, "never charged twice");
    let intents = "SELECT COUNT(*) FROM payment_intents WHERE checkout_session_id = $1";
    assert_eq!(db_count(&database_url, intents, &session).await, 1);
    let completed = "SELECT COUNT(*) FROM events WHERE event_type = 'checkout.session.completed' AND object_id = $1";
    assert_eq!(db_count(&database_url, completed, &session).await, 1);
    // The customer who reloads sees the payment.
    let page = client().get(format!("{}/pay/c/{session}", server.base)).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("Payment received"));
}

#[tokio::test]
async fn killed_after_stripe_charged_a_signed_stripe_event_completes_the_session_once() {
    let Some(localstripe) = localstripe_url() else { return };
    let (database_url, _dir) = common::fresh_database().await;
    let (mut server, banner) = Server::start(&database_url, free_port(), &localstripe, Some("after_charge"));
    let key = key_from(&banner);
    let session = session(&server, &key).await;
    let attempt = set_up_card(&server, &session, "4242424242424242").await;
    assert!(hand_back(&server, &session, &attempt).await.is_err());
    assert!(server.wait_killed());
    let server = server.restart();

    let charge = stripe_charges(&[&attempt]).await.remove(0);
    let (body, signature) = signed_event("payment_intent.succeeded", &charge, WEBHOOK_SECRET);
    // Forged or stale deliveries change nothing.
    let (_, forged) = signed_event("payment_intent.succeeded", &charge, "whsec_someoneelse");
    assert_eq!(post_event(&server, &body, &forged).await.status(), 400);
    let old = format!(
        "t={},v1={}",
        chrono_now() - 600,
        hex::encode(flex_checkout::gateway::stripe_webhook::sign(
            WEBHOOK_SECRET,
            &(chrono_now() - 600).to_string(),
            body.as_bytes()
        ))
    );
    assert_eq!(post_event(&server, &body, &old).await.status(), 400);
    assert_eq!(session_status(&server, &key, &session).await, "open");

    // Stripe delivers at least once: the same event twice completes the session once.
    for _ in 0..2 {
        let res = post_event(&server, &body, &signature).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    }
    assert_eq!(session_status(&server, &key, &session).await, "complete");
    let intents = "SELECT COUNT(*) FROM payment_intents WHERE checkout_session_id = $1";
    assert_eq!(db_count(&database_url, intents, &session).await, 1);
    let completed = "SELECT COUNT(*) FROM events WHERE event_type = 'checkout.session.completed' AND object_id = $1";
    assert_eq!(db_count(&database_url, completed, &session).await, 1);
    assert_eq!(stripe_charges(&[&attempt]).await.len(), 1);
}

#[tokio::test]
async fn killed_before_the_charge_nothing_is_charged_and_the_customer_can_pay_again() {
    let Some(localstripe) = localstripe_url() else { return };
    let (database_url, _dir) = common::fresh_database().await;
    let (mut server, banner) = Server::start(&database_url, free_port(), &localstripe, Some("before_charge"));
    let key = key_from(&banner);
    let session = session(&server, &key).await;
    let first = set_up_card(&server, &session, "4242424242424242").await;
    assert!(hand_back(&server, &session, &first).await.is_err());
    assert!(server.wait_killed());
    assert!(stripe_charges(&[&first]).await.is_empty(), "Stripe was never asked");

    let server = server.restart();
    // The session is held by the dead attempt until the reconciler finds Stripe never charged it.
    let failed = "SELECT COUNT(*) FROM payment_attempts WHERE id = $1 AND status = 'failed'";
    let deadline = Instant::now() + Duration::from_secs(STALE_SECONDS + 30);
    while db_count(&database_url, failed, &first).await == 0 {
        assert!(Instant::now() < deadline, "the dead attempt was never settled");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(session_status(&server, &key, &session).await, "open");
    let second = set_up_card(&server, &session, "4242424242424242").await;
    let res = hand_back(&server, &session, &second).await.expect("the restarted server answers");
    assert_eq!(res.status(), 303);
    assert_eq!(session_status(&server, &key, &session).await, "complete");
    let charges = stripe_charges(&[&first, &second]).await;
    assert_eq!(charges.len(), 1, "one charge in all");
    assert_eq!(charges[0]["amount"], 4999);
}

#[tokio::test]
async fn the_customer_closed_the_tab_after_stripe_confirmed_the_card() {
    let Some(localstripe) = localstripe_url() else { return };
    let (database_url, _dir) = common::fresh_database().await;
    let (server, banner) = Server::start(&database_url, free_port(), &localstripe, None);
    let key = key_from(&banner);
    let session = session(&server, &key).await;
    // Stripe.js confirmed the card; the browser never came back to us.
    let token = csrf(&server, &session).await;
    let attempt = set_up_card(&server, &session, "4242424242424242").await;
    wait_for_status(&server, &key, &session, "complete", Duration::from_secs(STALE_SECONDS + 30)).await;
    let charges = stripe_charges(&[&attempt]).await;
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0]["status"], "succeeded");
    // The browser comes back late after all (with the page it had): it goes where a paid session goes.
    let res = hand_back_with(&server, &session, &attempt, &token).await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(stripe_charges(&[&attempt]).await.len(), 1);
}

#[tokio::test]
async fn localstripe_signed_webhooks_are_verified_and_applied_idempotently() {
    let Some(localstripe) = localstripe_url() else { return };
    let (database_url, _dir) = common::fresh_database().await;
    let (server, banner) = Server::start(&database_url, free_port(), &localstripe, None);
    let key = key_from(&banner);
    // localstripe signs its deliveries with this secret (the server also accepts a rotated-away one).
    let res = reqwest::Client::new()
        .post(format!("{localstripe}/_config/webhooks/flex-{}", server.port))
        .json(&json!({"url": format!("{}/stripe/webhook", server.base), "secret": WEBHOOK_SECRET,
            "events": ["payment_intent.succeeded", "payment_intent.payment_failed"]}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let session = session(&server, &key).await;
    let attempt = set_up_card(&server, &session, "4242424242424242").await;
    let res = hand_back(&server, &session, &attempt).await.unwrap();
    assert_eq!(res.status(), 303);
    // localstripe delivers payment_intent.succeeded about a second later, signed: the server verifies
    // it, finds the outcome recorded already, and remembers the event.
    let charge = stripe_charges(&[&attempt]).await.remove(0);
    let pi = charge["id"].as_str().unwrap();
    let received =
        "SELECT COUNT(*) FROM stripe_events WHERE event_type = 'payment_intent.succeeded' AND object_id = $1";
    let deadline = Instant::now() + Duration::from_secs(15);
    while db_count(&database_url, received, pi).await == 0 {
        assert!(Instant::now() < deadline, "localstripe's signed delivery was not accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let intents = "SELECT COUNT(*) FROM payment_intents WHERE checkout_session_id = $1";
    assert_eq!(db_count(&database_url, intents, &session).await, 1);
    let completed = "SELECT COUNT(*) FROM events WHERE event_type = 'checkout.session.completed' AND object_id = $1";
    assert_eq!(db_count(&database_url, completed, &session).await, 1);
}

/// A renewal charged at Stripe whose answer was never recorded (the process died right after):
/// the invoice's attempt is leased, the lease runs out, and the restarted worker asks Stripe again
/// under the same idempotency key, so the invoice is paid once and Stripe holds one charge.
#[tokio::test]
async fn killed_after_an_invoice_charge_the_worker_settles_it_once() {
    let Some(localstripe) = localstripe_url() else { return };
    let (database_url, _dir) = common::fresh_database().await;
    let (mut server, banner) = Server::start(&database_url, free_port(), &localstripe, Some("after_invoice_charge"));
    let key = key_from(&banner);
    let post = |path: &'static str, body: Value| {
        let (server, key) = (&server, &key);
        async move { api(server, key, reqwest::Method::POST, path, Some(body)).await }
    };
    let customer = post("/v1/customers", json!({"customer": {"email": "ana@example.com"}})).await["customer"]
        ["customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let setup = post(
        "/v1/checkout/sessions",
        json!({"checkout_session": {"mode": "setup", "customer": customer,
            "success_url": "https://shop.example/ok", "cancel_url": ""}}),
    )
    .await["checkout_session"]["checkout_session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let attempt = set_up_card(&server, &setup, "4242424242424242").await;
    assert!(hand_back(&server, &setup, &attempt).await.unwrap().status().is_redirection());
    let product = post("/v1/products", json!({"product": {"name": "Coaching"}})).await["product"]["product_id"]
        .as_str()
        .unwrap()
        .to_string();
    let price = post(
        "/v1/prices",
        json!({"price": {"product": product, "unit_amount": 3_333, "recurring": {"interval": "monthly"}}}),
    )
    .await["price"]["price_id"]
        .as_str()
        .unwrap()
        .to_string();
    let created = client()
        .post(format!("{}/v1/subscriptions", server.base))
        .bearer_auth(&key)
        .json(&json!({"customer_id": customer, "plan_id": price}))
        .send()
        .await;
    assert!(created.is_err(), "the server dies right after Stripe charged the first invoice");
    assert!(server.wait_killed(), "killed by SIGKILL at the crash point");
    let invoice: String = {
        let db = Db::connect(&database_url, 1).await.unwrap();
        let id = sqlx::query_scalar("SELECT id FROM invoices WHERE customer_id = $1 AND billing_reason = 'subscription_create' AND status = 'open'")
            .bind(&customer)
            .fetch_one(&db.pool)
            .await
            .expect("the first invoice is open, its attempt leased");
        db.pool.close().await;
        id
    };
    let charge_key = format!("{invoice}-a1");
    assert_eq!(stripe_charges(&[&charge_key]).await.len(), 1, "Stripe charged before the crash");

    let server = server.restart();
    let deadline = Instant::now() + Duration::from_secs(STALE_SECONDS + 30);
    loop {
        let i = api(&server, &key, reqwest::Method::GET, &format!("/v1/invoices/{invoice}"), None).await;
        if i["invoice"]["status"] == "paid" {
            assert_eq!(i["invoice"]["attempt_count"], 1, "the same attempt, asked again");
            break;
        }
        assert!(Instant::now() < deadline, "the invoice was not settled after its lease: {i}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let charges = stripe_charges(&[&charge_key]).await;
    assert_eq!(charges.len(), 1, "never charged twice");
    assert_eq!(charges[0]["status"], "succeeded");
    let paid = "SELECT COUNT(*) FROM events WHERE event_type = 'invoice.paid' AND object_id = $1";
    assert_eq!(db_count(&database_url, paid, &invoice).await, 1);
    let subs = api(&server, &key, reqwest::Method::GET, "/v1/subscriptions", None).await;
    assert_eq!(subs["subscriptions"][0]["subscription_status"], "ACTIVE");
}
