//! Test harness: a real server on a free port, against a fresh SQLite file or, when
//! `TEST_POSTGRES_URL` is set, a fresh database on that PostgreSQL server.
#![allow(dead_code)]

use std::net::TcpListener;

use flex_checkout::clock::Clock;
use flex_checkout::config::Settings;
use flex_checkout::db::Db;
use flex_checkout::domain::ids::MerchantId;
use flex_checkout::domain::Mode;
use flex_checkout::flows::keys;
use flex_checkout::startup::Application;
use flex_checkout::state::AppState;
use serde_json::{json, Value};

pub mod stripe;

pub struct TestApp {
    pub address: String,
    pub state: AppState,
    pub client: reqwest::Client,
    pub merchant: MerchantId,
    pub test_key: String,
    pub live_key: String,
    pub database_url: String,
    _dir: Option<tempfile::TempDir>,
}

pub struct Response {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

/// A database of its own for one test.
pub async fn fresh_database() -> (String, Option<tempfile::TempDir>) {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
            let admin = Db::connect(&base, 1).await.expect("TEST_POSTGRES_URL must point at a running server");
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin.pool).await.expect("create database");
            admin.pool.close().await;
            let (head, _) = base.rsplit_once('/').expect("TEST_POSTGRES_URL ends with /<database>");
            (format!("{head}/{name}"), None)
        }
        _ => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}/test.db", dir.path().display());
            (url, Some(dir))
        }
    }
}

pub async fn spawn_app() -> TestApp {
    let (database_url, dir) = fresh_database().await;
    spawn_app_on(database_url, dir, true).await
}

/// A server whose settings the test adjusts first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let (database_url, dir) = fresh_database().await;
    spawn(database_url, dir, true, adjust).await
}

/// A server with a live Stripe key, so live API keys work. Its Stripe API address answers nothing:
/// for tests of everything short of paying in live mode.
pub async fn spawn_app_with_live_stripe() -> TestApp {
    spawn_app_with(|s| {
        s.stripe = Some(flex_checkout::gateway::stripe::StripeConfig {
            secret_key: "sk_live_flexcheckouttests".into(),
            publishable_key: "pk_live_flexcheckouttests".into(),
            api_base: Some("http://127.0.0.1:9".into()),
            js_url: "https://js.stripe.com/v3/".into(),
        })
    })
    .await
}

/// A second server on the same database (several instances behind a load balancer).
pub async fn spawn_app_on(database_url: String, dir: Option<tempfile::TempDir>, with_keys: bool) -> TestApp {
    spawn(database_url, dir, with_keys, |_| {}).await
}

async fn spawn(
    database_url: String,
    dir: Option<tempfile::TempDir>,
    with_keys: bool,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().unwrap().port();
    let address = format!("http://127.0.0.1:{port}");
    let mut settings = Settings {
        database_url: database_url.clone(),
        host: "127.0.0.1".into(),
        port,
        public_url: address.clone(),
        database_max_connections: 8,
        http_workers: Some(2),
        pay_attempts_per_ip_per_minute: 1000,
        payment_stale_seconds: flex_checkout::flows::checkout::STALE_PAYMENT_SECONDS,
        stripe: None,
        stripe_webhook_secrets: Vec::new(),
    };
    adjust(&mut settings);
    let db = Db::connect(&database_url, 8).await.expect("connect");
    db.migrate().await.expect("migrate");
    let clock = Clock::system();
    let app = Application::build_with_listener(settings, clock.clone(), db.clone(), listener)
        .await
        .expect("build app")
        .without_workers();
    let state = app.state.clone();
    tokio::spawn(app.run());

    let (merchant, test_key, live_key) = if with_keys {
        let merchant = keys::create_merchant(&db, "Acme Fitness", clock.now()).await.unwrap();
        let test_key = keys::create_key(&db, &merchant, "test", Mode::Test, clock.now()).await.unwrap().secret;
        let live_key = keys::create_key(&db, &merchant, "live", Mode::Live, clock.now()).await.unwrap().secret;
        (merchant, test_key, live_key)
    } else {
        (MerchantId::generate(), String::new(), String::new())
    };
    TestApp {
        address,
        state,
        client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        merchant,
        test_key,
        live_key,
        database_url,
        _dir: dir,
    }
}

impl TestApp {
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
        idempotency_key: Option<&str>,
    ) -> Response {
        let mut req = self.client.request(method, format!("{}{}", self.address, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        if let Some(i) = idempotency_key {
            req = req.header("Idempotency-Key", i);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response { status, body, text, headers }
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.send(reqwest::Method::POST, path, Some(&self.test_key), Some(body.to_string()), None).await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> Response {
        self.send(reqwest::Method::POST, path, Some(&self.test_key), Some(body.to_string()), None).await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: Value) -> Response {
        self.send(reqwest::Method::POST, path, Some(key), Some(body.to_string()), None).await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(reqwest::Method::GET, path, Some(&self.test_key), None, None).await
    }

    pub async fn get_as(&self, key: &str, path: &str) -> Response {
        self.send(reqwest::Method::GET, path, Some(key), None, None).await
    }

    /// A second merchant with its own test key.
    pub async fn other_merchant_key(&self) -> String {
        let now = self.state.clock.now();
        let m = keys::create_merchant(&self.state.db, "Other shop", now).await.unwrap();
        keys::create_key(&self.state.db, &m, "test", Mode::Test, now).await.unwrap().secret
    }

    /// The seed's product and monthly price; returns (product_id, price_id).
    pub async fn seed_product_and_price(&self) -> (String, String) {
        let p = self
            .post(
                "/v1/products",
                json!({"product": {"name": "Test Product", "description": "Test Product Description",
                    "visit_type": "gym", "hsa_fsa_eligibility": "letter_of_medical_necessity"}}),
            )
            .await;
        assert_eq!(p.status, 200, "{}", p.text);
        let product = p.body["product"]["product_id"].as_str().unwrap().to_string();
        let pr = self
            .post(
                "/v1/prices",
                json!({"price": {"product": product, "description": "Our awesome new price", "unit_amount": 4999,
                    "recurring": {"interval": "monthly"}}}),
            )
            .await;
        assert_eq!(pr.status, 200, "{}", pr.text);
        (product, pr.body["price"]["price_id"].as_str().unwrap().to_string())
    }

    /// A one-time price of `amount` for a plain product.
    pub async fn one_time_price(&self, name: &str, amount: i64) -> String {
        let p = self.post("/v1/products", json!({"product": {"name": name}})).await;
        assert_eq!(p.status, 200, "{}", p.text);
        let product = p.body["product"]["product_id"].as_str().unwrap().to_string();
        let pr = self.post("/v1/prices", json!({"price": {"product": product, "unit_amount": amount}})).await;
        assert_eq!(pr.status, 200, "{}", pr.text);
        pr.body["price"]["price_id"].as_str().unwrap().to_string()
    }

    /// Creates a session with the given body fields merged over sensible defaults.
    pub async fn create_session(&self, fields: Value) -> Response {
        let mut body = json!({
            "success_url": "http://localhost:9/success?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": "http://localhost:9/cancel",
        });
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.post("/v1/checkout/sessions", json!({ "checkout_session": body })).await
    }

    /// An open invoice of a new monthly `SEND_INVOICE` subscription to `price` (terms 30_NET) for a
    /// new customer Jane: (invoice id, its hosted page).
    pub async fn open_send_invoice(&self, price: &str) -> (String, String) {
        let c =
            self.post("/v1/customers", json!({"customer": {"email": "jane@example.com", "first_name": "Jane"}})).await;
        assert_eq!(c.status, 200, "{}", c.text);
        let customer = c.body["customer"]["customer_id"].as_str().unwrap().to_string();
        let s = self
            .post(
                "/v1/subscriptions",
                json!({"customer_id": customer, "plan_id": price, "collection_method": "SEND_INVOICE",
                    "payment_terms": "30_NET"}),
            )
            .await;
        assert_eq!(s.status, 200, "{}", s.text);
        let sub = s.body["id"].as_str().unwrap();
        let invoice = self.get(&format!("/v1/invoices?subscription={sub}")).await.body["invoices"][0].clone();
        assert_eq!(invoice["status"], "open", "{invoice}");
        let id = invoice["invoice_id"].as_str().unwrap().to_string();
        let page = invoice["hosted_invoice_url"].as_str().unwrap().to_string();
        (id, page)
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&self.state.db.pool)
            .await
            .unwrap()
    }

    /// Row counts of every table that a failed request must leave alone.
    pub async fn snapshot(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for t in [
            "products",
            "prices",
            "customers",
            "checkout_sessions",
            "payment_attempts",
            "payment_intents",
            "payment_methods",
            "subscriptions",
            "invoices",
            "events",
            "consultations",
            "refunds",
        ] {
            out.push((t.to_string(), self.count(t).await));
        }
        out
    }

    pub async fn run_workers(&self) -> usize {
        flex_checkout::workers::run_once(&self.state).await
    }
}
