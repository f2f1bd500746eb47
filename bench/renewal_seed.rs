//! Due renewals for tests/multi_instance.rs and the renewal benchmark (bench/renewals.rs): a few
//! subscriptions made through the public API (both doors: `POST /v1/subscriptions` for a customer
//! whose card a setup checkout saved, and a subscription checkout paid on the hosted form), then
//! copies of one of them made by SQL with fresh ids, and all of them put one period back so that
//! exactly one renewal is due for each on the system clock.
//!
//! Included with `#[path]` by both; not a test or a bench of its own.
#![allow(dead_code)]

use flex_checkout::db::{Backend, Db};
use flex_checkout::domain::ids::{CustomerId, InvoiceId, PaymentMethodId, SubscriptionId};
use serde_json::{json, Value};

pub const DAY_MICROS: i64 = 86_400_000_000;
/// The seeded subscriptions' price: $49.99 a day.
pub const AMOUNT: i64 = 4999;

/// The public API of a running server, as a merchant with a test key.
pub struct Api<'a> {
    pub client: &'a reqwest::Client,
    pub base: &'a str,
    pub key: &'a str,
}

impl Api<'_> {
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.key)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn get(&self, path: &str) -> Value {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Pays checkout session `id` on its hosted form (the no-JavaScript path) with test card 4242.
    async fn pay(&self, id: &str) {
        let html = self.client.get(format!("{}/pay/c/{id}", self.base)).send().await.unwrap().text().await.unwrap();
        let marker = "name=\"csrf\" value=\"";
        let at = html.find(marker).expect("a checkout form with a CSRF token") + marker.len();
        let token = &html[at..at + 64];
        let res = self
            .client
            .post(format!("{}/pay/c/{id}", self.base))
            .header("Origin", self.base)
            .form(&[
                ("csrf", token),
                ("email", "ana@example.com"),
                ("first_name", "Ana"),
                ("last_name", "Silva"),
                ("card_number", "4242 4242 4242 4242"),
                ("card_expiry", "12 / 34"),
                ("card_cvc", "123"),
                ("card_postal_code", "94103"),
            ])
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert_eq!(status, 303, "paying {id}: {}", res.text().await.unwrap_or_default());
    }

    async fn session(&self, fields: Value) -> String {
        let mut body = json!({"success_url": "https://shop.example/ok", "cancel_url": "https://shop.example/no"});
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let s = self.post("/v1/checkout/sessions", json!({ "checkout_session": body })).await;
        s["checkout_session"]["checkout_session_id"].as_str().unwrap().to_string()
    }
}

/// A daily price of [`AMOUNT`] for a plain product; returns its id.
pub async fn daily_price(api: &Api<'_>) -> String {
    let p = api.post("/v1/products", json!({"product": {"name": "Day pass"}})).await;
    let product = p["product"]["product_id"].as_str().unwrap();
    let pr = api
        .post(
            "/v1/prices",
            json!({"price": {"product": product, "unit_amount": AMOUNT, "recurring": {"interval": "daily"}}}),
        )
        .await;
    pr["price"]["price_id"].as_str().unwrap().to_string()
}

/// `n` subscriptions to `price` through the public API, each paid for its first day: even ones by
/// `POST /v1/subscriptions` for a customer whose card a setup checkout saved, odd ones by a
/// subscription checkout paid on the hosted form. Returns their ids.
pub async fn api_subscriptions(api: &Api<'_>, price: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        if i % 2 == 0 {
            let c = api
                .post(
                    "/v1/customers",
                    json!({"customer": {"email": "ana@example.com", "external_id": format!("c{i}")}}),
                )
                .await;
            let customer = c["customer"]["customer_id"].as_str().unwrap().to_string();
            let setup = api.session(json!({"mode": "setup", "customer": customer})).await;
            api.pay(&setup).await;
            let s = api.post("/v1/subscriptions", json!({"customer_id": customer, "plan_id": price})).await;
            assert_eq!(s["subscription_status"], "ACTIVE", "{s}");
            ids.push(s["id"].as_str().unwrap().to_string());
        } else {
            let id =
                api.session(json!({"mode": "subscription", "line_items": [{"price": price, "quantity": 1}]})).await;
            api.pay(&id).await;
            let s = api.get(&format!("/v1/checkout/sessions/{id}")).await;
            let sub = s["checkout_session"]["subscription"].as_str().expect("a subscription from the checkout");
            ids.push(sub.to_string());
        }
    }
    ids
}

/// Puts every subscription on the system clock one day back: its period `[start, start + 1 day)`
/// (with `start` its start and anchor) has ended, its in-advance invoice for that period exists, and
/// its renewal is due at `start + 1 day`. With `start` 36 hours ago exactly one renewal is due,
/// for `[start + 1 day, start + 2 days)`.
pub async fn make_due(db: &Db, start: i64) {
    sqlx::query(
        "UPDATE subscriptions SET start_date = $1, billing_anchor = $1, current_period_start = $1,
            current_period_end = $2, next_action_at = $2, created_at = $1, updated_at = $1, cycle_invoiced = 1,
            upcoming_sent_for = NULL
         WHERE test_clock IS NULL",
    )
    .bind(start)
    .bind(start + DAY_MICROS)
    .execute(&db.pool)
    .await
    .expect("put the subscriptions one period back");
}

/// The columns of `table`, in order.
async fn columns(db: &Db, table: &str) -> Vec<String> {
    let sql = match db.backend {
        Backend::Sqlite => "SELECT name FROM pragma_table_info($1) ORDER BY cid",
        Backend::Postgres => {
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
        }
    };
    let cols: Vec<String> = sqlx::query_scalar(sql).bind(table).fetch_all(&db.pool).await.expect("table columns");
    assert!(!cols.is_empty(), "no table {table}");
    cols
}

/// `INSERT INTO table (every column) SELECT (t.column, or its override) FROM table t, seed_ids s
/// WHERE <filter>`: a copy of the template's rows for every new id, whatever columns the table has.
async fn copy_statement(db: &Db, table: &str, overrides: &[(&str, &str)], filter: &str) -> String {
    let cols = columns(db, table).await;
    let values: Vec<String> = cols
        .iter()
        .map(|c| overrides.iter().find(|(name, _)| name == c).map_or_else(|| format!("t.{c}"), |(_, e)| e.to_string()))
        .collect();
    format!(
        "INSERT INTO {table} ({}) SELECT {} FROM {table} t CROSS JOIN seed_ids s WHERE {filter}",
        cols.join(", "),
        values.join(", ")
    )
}

/// Copies subscription `template` `n` times, each with a customer, a saved sandbox card that
/// succeeds (`sbx_card_ok_<ULID>`, as the sandbox makes them) and the template's items, all with
/// fresh ids; in one transaction. Call [`make_due`] afterwards.
pub async fn copy_subscription(db: &Db, template: &str, n: usize) {
    let (customer, card): (String, String) =
        sqlx::query_as("SELECT customer_id, default_payment_method FROM subscriptions WHERE id = $1")
            .bind(template)
            .fetch_one(&db.pool)
            .await
            .expect("the template subscription with its card");
    let customers = copy_statement(
        db,
        "customers",
        &[("id", "s.cus"), ("external_id", "NULL"), ("test_clock", "NULL")],
        "t.id = $1",
    )
    .await;
    let cards = copy_statement(
        db,
        "payment_methods",
        &[("id", "s.pm"), ("customer_id", "s.cus"), ("gateway_ref", "'sbx_card_ok_' || substr(s.pm, 5)")],
        "t.id = $1",
    )
    .await;
    let subscriptions = copy_statement(
        db,
        "subscriptions",
        &[
            ("id", "s.sub"),
            ("customer_id", "s.cus"),
            ("default_payment_method", "s.pm"),
            ("lookup_key", "NULL"),
            ("checkout_session_id", "NULL"),
        ],
        "t.id = $1",
    )
    .await;
    let items = copy_statement(
        db,
        "subscription_items",
        &[("id", "s.sub || substr(t.id, length(t.subscription_id) + 1)"), ("subscription_id", "s.sub")],
        "t.subscription_id = $1",
    )
    .await;

    let mut tx = db.pool.begin().await.expect("begin");
    sqlx::query("CREATE TEMPORARY TABLE seed_ids (n BIGINT PRIMARY KEY, cus TEXT NOT NULL, pm TEXT NOT NULL, sub TEXT NOT NULL)")
        .execute(&mut *tx)
        .await
        .expect("staging table");
    const CHUNK: usize = 200;
    let mut done = 0;
    while done < n {
        let rows = CHUNK.min(n - done);
        let mut sql = String::from("INSERT INTO seed_ids (n, cus, pm, sub) VALUES ");
        for r in 0..rows {
            let b = r * 4;
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4));
        }
        let mut q = sqlx::query(&sql);
        for r in 0..rows {
            q = q
                .bind((done + r) as i64)
                .bind(CustomerId::generate().to_string())
                .bind(PaymentMethodId::generate().to_string())
                .bind(SubscriptionId::generate().to_string());
        }
        q.execute(&mut *tx).await.expect("staged ids");
        done += rows;
    }
    for (sql, from) in [
        (&customers, &customer),
        (&cards, &card),
        (&subscriptions, &template.to_string()),
        (&items, &template.to_string()),
    ] {
        sqlx::query(sql).bind(from).execute(&mut *tx).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    sqlx::query("DROP TABLE seed_ids").execute(&mut *tx).await.expect("drop the staging table");
    tx.commit().await.expect("commit the copies");
    if db.backend == Backend::Postgres {
        // What autovacuum would do soon after a bulk load; the due-work queries need the statistics.
        sqlx::query("ANALYZE").execute(&db.pool).await.expect("analyze");
    }
}

/// Row counts before the renewals (the subscriptions made through the API left some rows).
pub struct Before {
    pub invoices: i64,
    pub charges: i64,
    pub paid_events: i64,
}

impl Before {
    pub async fn count(db: &Db) -> Before {
        Before {
            invoices: scalar(db, "SELECT COUNT(*) FROM invoices").await,
            charges: scalar(db, "SELECT COUNT(*) FROM sandbox_charges").await,
            paid_events: scalar(db, "SELECT COUNT(*) FROM events WHERE event_type = 'invoice.paid'").await,
        }
    }
}

pub async fn scalar(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(&db.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Renewal invoices for which `per_invoice` (rows of `(k, n)`) does not give exactly one.
fn renewal_invoices_without_exactly_one(per_invoice: &str, key: &str) -> String {
    format!(
        "SELECT COUNT(*) FROM invoices i LEFT JOIN ({per_invoice}) x ON x.k = {key}
         WHERE i.billing_reason = 'subscription_cycle' AND COALESCE(x.n, 0) <> 1"
    )
}

/// After the `n` subscriptions made due by [`make_due`] with `start` were renewed (and nothing
/// else ran): each renewed once into `[start + 1 day, start + 2 days)`, with one renewal invoice
/// paid exactly once, one succeeded sandbox charge under its attempt key `{invoice}-a1` and no
/// other attempt, one payment intent, one `invoice.created` and one `invoice.paid`; invoice numbers
/// unique and without gaps per merchant (`FLEX-000001` up) and the counter at the last one.
pub async fn verify(db: &Db, n: i64, start: i64, before: &Before) {
    let renewed_start = start + DAY_MICROS;
    let checks: Vec<(&str, String, i64)> = vec![
        (
            "subscriptions renewed into the next period",
            format!(
                "SELECT COUNT(*) FROM subscriptions WHERE status = 'ACTIVE' AND current_period_start = {renewed_start}
                    AND current_period_end = {} AND next_action_at = {}",
                renewed_start + DAY_MICROS,
                renewed_start + DAY_MICROS
            ),
            n,
        ),
        ("invoices made during the run", "SELECT COUNT(*) FROM invoices".into(), before.invoices + n),
        (
            "renewal invoices",
            format!(
                "SELECT COUNT(*) FROM invoices WHERE billing_reason = 'subscription_cycle' AND period_start = {renewed_start}"
            ),
            n,
        ),
        (
            "subscriptions without exactly one renewal invoice for the renewed period",
            format!(
                "SELECT COUNT(*) FROM subscriptions s LEFT JOIN (SELECT subscription_id, COUNT(*) AS n FROM invoices
                    WHERE billing_reason = 'subscription_cycle' AND period_start = {renewed_start}
                    GROUP BY subscription_id) x ON x.subscription_id = s.id
                 WHERE COALESCE(x.n, 0) <> 1"
            ),
            0,
        ),
        (
            "(subscription, period) pairs with more than one renewal invoice",
            "SELECT COUNT(*) FROM (SELECT subscription_id FROM invoices WHERE billing_reason = 'subscription_cycle'
                GROUP BY subscription_id, period_start HAVING COUNT(*) > 1) d"
                .into(),
            0,
        ),
        (
            "renewal invoices not paid exactly once (paid, one attempt, nothing in flight)",
            format!(
                "SELECT COUNT(*) FROM invoices WHERE billing_reason = 'subscription_cycle' AND NOT (status = 'paid'
                    AND amount_paid = {AMOUNT} AND amount_remaining = 0 AND attempt_count = 1 AND charging = 0
                    AND paid_at IS NOT NULL)"
            ),
            0,
        ),
        ("sandbox charges made during the run", "SELECT COUNT(*) FROM sandbox_charges".into(), before.charges + n),
        (
            "renewal invoices without exactly one succeeded sandbox charge under `{invoice}-a1`",
            renewal_invoices_without_exactly_one(
                "SELECT idempotency_key AS k, COUNT(*) AS n FROM sandbox_charges
                 WHERE outcome = 'succeeded' AND amount = 4999 GROUP BY idempotency_key",
                "i.id || '-a1'",
            ),
            0,
        ),
        (
            "sandbox charges under another attempt of a renewal invoice",
            // Attempt keys are `{invoice}-a{n}`, and invoice ids have a fixed length.
            format!(
                "SELECT COUNT(*) FROM sandbox_charges c JOIN invoices i ON i.id = substr(c.idempotency_key, 1, {})
                 WHERE i.billing_reason = 'subscription_cycle' AND c.idempotency_key <> i.id || '-a1'",
                InvoiceId::PREFIX.len() + 26
            ),
            0,
        ),
        (
            "renewal invoices without exactly one payment intent",
            renewal_invoices_without_exactly_one(
                "SELECT invoice_id AS k, COUNT(*) AS n FROM payment_intents GROUP BY invoice_id",
                "i.id",
            ),
            0,
        ),
        (
            "renewal invoices whose payment intent is not the succeeded one they name",
            "SELECT COUNT(*) FROM invoices i LEFT JOIN payment_intents p ON p.id = i.payment_intent_id
             WHERE i.billing_reason = 'subscription_cycle'
                AND (p.id IS NULL OR p.invoice_id <> i.id OR p.status <> 'succeeded' OR p.amount_received <> 4999)"
                .into(),
            0,
        ),
        (
            "invoice.paid events during the run",
            "SELECT COUNT(*) FROM events WHERE event_type = 'invoice.paid'".into(),
            before.paid_events + n,
        ),
        (
            "renewal invoices without exactly one invoice.paid event",
            renewal_invoices_without_exactly_one(
                "SELECT object_id AS k, COUNT(*) AS n FROM events WHERE event_type = 'invoice.paid' GROUP BY object_id",
                "i.id",
            ),
            0,
        ),
        (
            "renewal invoices without exactly one invoice.created event",
            renewal_invoices_without_exactly_one(
                "SELECT object_id AS k, COUNT(*) AS n FROM events WHERE event_type = 'invoice.created' GROUP BY object_id",
                "i.id",
            ),
            0,
        ),
    ];
    if db.backend == Backend::Postgres {
        // The run wrote every table in moments, before autovacuum's statistics caught up: without
        // them PostgreSQL plans the checks' joins as nested loops over "small" tables (minutes).
        sqlx::query("ANALYZE").execute(&db.pool).await.expect("ANALYZE");
    }
    for (what, sql, want) in checks {
        let got = scalar(db, &sql).await;
        assert_eq!(got, want, "{what}: {got}, expected {want}");
    }

    // Invoice numbers: unique and without gaps per merchant, FLEX-000001 up.
    let numbers: Vec<(String, String)> =
        sqlx::query_as("SELECT merchant_id, number FROM invoices ORDER BY merchant_id, number")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(numbers.len() as i64, before.invoices + n);
    let mut expected = 0;
    let mut merchant = String::new();
    for (m, number) in &numbers {
        if *m != merchant {
            merchant = m.clone();
            expected = 0;
        }
        expected += 1;
        assert_eq!(number, &format!("FLEX-{expected:06}"), "invoice numbers of {m} are unique and without gaps");
    }
    let counter: i64 = sqlx::query_scalar("SELECT last_number FROM invoice_counters WHERE merchant_id = $1")
        .bind(&merchant)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(counter, expected, "the counter stands at the last number given");
}
