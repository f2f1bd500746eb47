//! The renewal benchmark (BENCHMARKS.md, "Renewals"): how fast one instance renews due
//! subscriptions with the sandbox gateway, next to a reference measured in the same command.
//!
//!   cargo run --release --example renewal_bench -- [--sizes 1000,10000,100000] [--sqlite]
//!       [--postgres postgres://user@host:port/db] [--endpoints K]
//!
//! `bash bench/renewals.sh` builds it, starts a throw-away PostgreSQL and runs every size on both
//! databases. Each (database, size) runs in a child process of its own (`--case`), on a fresh
//! database:
//!
//! 1. seed: a merchant and a test key; a daily $49.99 price and two subscriptions through the public
//!    API of the in-process server (one by `POST /v1/subscriptions`, one by a paid subscription
//!    checkout); `N - 2` copies of the first by SQL (customer, sandbox card `sbx_card_ok_<ULID>`,
//!    subscription, items); all put one day back so that one renewal each is due. With
//!    `--endpoints K`, K webhook endpoints subscribed to every event (deliveries are queued, not sent).
//! 2. measure: `flows::billing::run_due_for(state, BATCH, workers::BILLING_BUDGET)` (what the billing
//!    worker calls each round) in a loop until a call handles nothing; the wall time of the loop
//!    gives renewals per second.
//! 3. verify (not timed): N `subscription_cycle` invoices, each paid once, one sandbox charge per
//!    attempt key, one payment intent and one `invoice.paid` per invoice, numbers without gaps,
//!    nothing left due.
//! 4. references (timed), in the same database right after the engine's run: the same row writes
//!    per renewal as plain statements on the same pool, in the engine's transaction grouping (BATCH
//!    renewals per transaction): the subscription UPDATE, the counter UPDATE, the invoice and its
//!    line, the sandbox charge, the invoice UPDATE, the payment intent and the five events (and
//!    their deliveries), copied from rows the engine wrote so they have the same widths. First one
//!    statement per row, as the engine wrote them before it batched (ratio = engine renewals/s ÷
//!    this reference's), then
//!    a batch's rows per statement (multi-row INSERTs, `WITH v AS (VALUES ...) UPDATE ... FROM v`), which
//!    shows what batching the writes could reach on the same machine.
//!
//! Not part of the test suite (an example: `cargo test` only builds it).

#[path = "renewal_seed.rs"]
mod renewal_seed;

// The allocator the server runs with: the engine's batches allocate many small rows and strings,
// and glibc's malloc and free were about a quarter of a renewal pass's CPU samples (BENCHMARKS.md,
// "Renewals"; SQLite's own allocations stay with the C allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use flex_checkout::clock::Clock;
use flex_checkout::config::Settings;
use flex_checkout::db::{self, Db};
use flex_checkout::domain::ids::{EventId, InvoiceId, PaymentIntentId, WebhookDeliveryId};
use flex_checkout::domain::Mode;
use flex_checkout::flows::{billing, keys};
use flex_checkout::startup::Application;
use renewal_seed::{Api, DAY_MICROS};
use serde_json::{json, Value};

/// Rows per statement in the multi-row reference: a pass's batch, as the engine writes it.
const MULTI_ROW: usize = billing::BATCH as usize;

const USAGE: &str = "usage: renewal_bench [--sizes 1000,10000,100000] [--sqlite] [--postgres URL] [--endpoints K]
       renewal_bench --case sqlite|postgres --n N [--postgres URL] [--endpoints K]";

struct Args {
    case: Option<String>,
    n: usize,
    sizes: Vec<usize>,
    sqlite: bool,
    postgres: Option<String>,
    endpoints: usize,
}

fn args() -> Args {
    let mut a =
        Args { case: None, n: 0, sizes: vec![1_000, 10_000, 100_000], sqlite: false, postgres: None, endpoints: 0 };
    let mut it = std::env::args().skip(1);
    let fail = |m: &str| -> ! {
        eprintln!("renewal_bench: {m}\n{USAGE}");
        std::process::exit(2)
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--case" => a.case = Some(value()),
            "--n" => a.n = value().parse().unwrap_or_else(|_| fail("--n must be a whole number")),
            "--sizes" => {
                a.sizes = value()
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| fail("--sizes must be whole numbers")))
                    .collect()
            }
            "--sqlite" => a.sqlite = true,
            "--postgres" => a.postgres = Some(value()),
            "--endpoints" => {
                a.endpoints = value().parse().unwrap_or_else(|_| fail("--endpoints must be a whole number"))
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => fail(&format!("unknown argument {other}")),
        }
    }
    if a.sizes.iter().any(|&n| n < 2) || (a.case.is_some() && a.n < 2) {
        fail("sizes start at 2 (two subscriptions are made through the API)");
    }
    if !a.sqlite && a.postgres.is_none() {
        a.sqlite = true;
    }
    a
}

fn main() {
    let a = args();
    match a.case.clone() {
        Some(backend) => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=warn"));
            tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
            let result = runtime.block_on(case(&backend, a.n, a.postgres.as_deref(), a.endpoints));
            println!("RESULT {result}");
        }
        None => orchestrate(&a),
    }
}

/// Runs every (database, size) in a child process and prints the table.
fn orchestrate(a: &Args) {
    let exe = std::env::current_exe().expect("own path");
    let mut backends = Vec::new();
    if a.sqlite {
        backends.push("sqlite");
    }
    if a.postgres.is_some() {
        backends.push("postgres");
    }
    let mut rows = Vec::new();
    for backend in backends {
        for &n in &a.sizes {
            eprintln!("== {backend}, {n} renewals");
            let mut cmd = Command::new(&exe);
            cmd.args(["--case", backend, "--n", &n.to_string(), "--endpoints", &a.endpoints.to_string()]);
            if let Some(url) = &a.postgres {
                cmd.args(["--postgres", url]);
            }
            let out = cmd.output().expect("run a case");
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
                eprintln!("{stdout}");
                panic!("{backend} {n}: the case failed ({})", out.status);
            };
            let r: Value = serde_json::from_str(line).unwrap();
            eprintln!("   {r}");
            rows.push(r);
        }
    }
    println!();
    println!(
        "| database | renewals | engine s | renewals/s | reference s | reference renewals/s | ratio | multi-row reference renewals/s | ratio to multi-row |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {:.0} | **{:.2}** | {:.0} | **{:.2}** |",
            r["database"].as_str().unwrap(),
            r["n"],
            r["engine_seconds"].as_f64().unwrap(),
            r["renewals_per_second"].as_f64().unwrap(),
            r["reference_seconds"].as_f64().unwrap(),
            r["reference_per_second"].as_f64().unwrap(),
            r["ratio"].as_f64().unwrap(),
            r["multi_row_per_second"].as_f64().unwrap(),
            r["multi_row_ratio"].as_f64().unwrap(),
        );
    }
}

/// A fresh database: a file in a temp dir, or a new database on the PostgreSQL server.
async fn fresh_database(backend: &str, postgres: Option<&str>) -> (String, Option<tempfile::TempDir>, Option<String>) {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().expect("temp dir");
            (format!("sqlite://{}/bench.db", dir.path().display()), Some(dir), None)
        }
        "postgres" => {
            let base = postgres.expect("--postgres URL");
            let name = format!("renewals_{}", ulid::Ulid::new().to_string().to_lowercase());
            let admin = Db::connect(base, 1).await.expect("connect to --postgres");
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin.pool).await.expect("create database");
            admin.pool.close().await;
            let (head, _) = base.rsplit_once('/').expect("the URL ends with /<database>");
            (format!("{head}/{name}"), None, Some(name))
        }
        other => panic!("unknown database {other}"),
    }
}

async fn case(backend: &str, n: usize, postgres: Option<&str>, endpoints: usize) -> Value {
    let (url, _dir, pg_name) = fresh_database(backend, postgres).await;
    // The server's defaults: 16 connections, one HTTP worker per core.
    let db = Db::connect(&url, 16).await.expect("connect");
    db.migrate().await.expect("migrate");
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let settings = Settings {
        database_url: url.clone(),
        host: "127.0.0.1".into(),
        port,
        public_url: base.clone(),
        database_max_connections: 16,
        http_workers: None,
        pay_attempts_per_ip_per_minute: 1000,
        payment_stale_seconds: flex_checkout::flows::checkout::STALE_PAYMENT_SECONDS,
        stripe: None,
        stripe_webhook_secrets: Vec::new(),
    };
    let clock = Clock::system();
    let app = Application::build_with_listener(settings, clock.clone(), db.clone(), listener)
        .await
        .expect("build the app")
        .without_workers();
    let state = app.state.clone();
    tokio::spawn(app.run());

    // 1. Seed.
    let seed_started = Instant::now();
    let merchant = keys::create_merchant(&db, "Bench gym", clock.now()).await.unwrap();
    let key = keys::create_key(&db, &merchant, "bench", Mode::Test, clock.now()).await.unwrap().secret;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let api = Api { client: &client, base: &base, key: &key };
    for i in 0..endpoints {
        api.post(
            "/v1/webhooks",
            json!({"webhook": {"url": format!("https://hooks{i}.shop.example/in"), "events": ["*"]}}),
        )
        .await;
    }
    let price = renewal_seed::daily_price(&api).await;
    let made = renewal_seed::api_subscriptions(&api, &price, 2).await;
    renewal_seed::copy_subscription(&db, &made[0], n - made.len()).await;
    let start = (clock.now().micros() / 1_000_000) * 1_000_000 - DAY_MICROS - DAY_MICROS / 2;
    renewal_seed::make_due(&db, start).await;
    let before = renewal_seed::Before::count(&db).await;
    let seed_seconds = seed_started.elapsed().as_secs_f64();

    // 2. Measure.
    let perf = PerfControl::from_env();
    perf.send("enable");
    // With RUST_LOG=warn,sqlx::query=debug,renewal_bench=info the statements logged between these
    // two lines are the engine's: that is how BENCHMARKS.md counts statements per renewal.
    tracing::info!(target: "renewal_bench", "engine begins");
    let started = Instant::now();
    let mut passes = 0;
    let mut phases = [Duration::ZERO; 4];
    loop {
        let handled = if std::env::var_os("RENEWAL_BENCH_PHASES").is_some() {
            phased_pass(&state, &mut phases).await
        } else {
            billing::run_due_for(&state, billing::BATCH, flex_checkout::workers::BILLING_BUDGET)
                .await
                .expect("a billing pass")
                .0
        };
        passes += 1;
        if handled == 0 {
            break;
        }
    }
    let engine = started.elapsed();
    tracing::info!(target: "renewal_bench", "engine ends");
    perf.send("disable");
    if std::env::var_os("RENEWAL_BENCH_PHASES").is_some() {
        eprintln!(
            "phases: due {:.2}s, step {:.2}s, charge {:.2}s, settle {:.2}s",
            phases[0].as_secs_f64(),
            phases[1].as_secs_f64(),
            phases[2].as_secs_f64(),
            phases[3].as_secs_f64()
        );
    }

    // 3. Verify.
    renewal_seed::verify(&db, n as i64, start, &before).await;

    // 4. Reference.
    let one_at_a_time = reference(&db, 1).await;
    let multi_row = reference(&db, MULTI_ROW).await;
    let result = json!({
        "database": backend,
        "n": n,
        "endpoints": endpoints,
        "seed_seconds": seed_seconds,
        "engine_seconds": engine.as_secs_f64(),
        "renewals_per_second": n as f64 / engine.as_secs_f64(),
        "passes": passes,
        "reference_seconds": one_at_a_time.as_secs_f64(),
        "reference_per_second": n as f64 / one_at_a_time.as_secs_f64(),
        "ratio": one_at_a_time.as_secs_f64() / engine.as_secs_f64(),
        "multi_row_seconds": multi_row.as_secs_f64(),
        "multi_row_per_second": n as f64 / multi_row.as_secs_f64(),
        "multi_row_ratio": multi_row.as_secs_f64() / engine.as_secs_f64(),
    });
    state.db.pool.close().await;
    db.pool.close().await;
    if let (Some(name), Some(base)) = (pg_name, postgres) {
        let admin = Db::connect(base, 1).await.expect("connect to --postgres");
        let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&admin.pool).await;
    }
    result
}

/// `perf record --control fifo:<ctl> -D -1`: the engine's loop alone is recorded when
/// `PERF_CTL_FIFO` names perf's control FIFO.
struct PerfControl(Option<std::path::PathBuf>);

impl PerfControl {
    fn from_env() -> PerfControl {
        PerfControl(std::env::var_os("PERF_CTL_FIFO").map(Into::into))
    }

    fn send(&self, command: &str) {
        if let Some(path) = &self.0 {
            use std::io::Write;
            let mut fifo = std::fs::OpenOptions::new().write(true).open(path).expect("perf control FIFO");
            writeln!(fifo, "{command}").expect("perf control");
        }
    }
}

/// `billing::run_due`'s first half (due subscriptions, their steps, charges and settling) with its
/// phases timed, for finding where the time goes (`RENEWAL_BENCH_PHASES=1`). Mirrors the engine's
/// code at the time of writing; the measured numbers come from `run_due` itself.
async fn phased_pass(state: &flex_checkout::state::AppState, phases: &mut [Duration; 4]) -> usize {
    let now = state.clock.now();
    let t = Instant::now();
    // One connection for the pass, as the engine holds one.
    let mut conn = state.db.conn().await.unwrap();
    let subs = db::subscriptions::due(&mut conn, now, billing::BATCH).await.unwrap();
    phases[0] += t.elapsed();
    let t = Instant::now();
    let mut handled = 0;
    let stepped = if subs.is_empty() {
        billing::Stepped { count: 0, jobs: Vec::new(), carried: Default::default() }
    } else {
        let mut tx = state.db.begin_on(&mut conn).await.unwrap();
        let stepped = billing::step_many(state, &mut tx, subs, now).await.unwrap();
        tx.commit().await.unwrap();
        stepped
    };
    handled += stepped.count;
    let jobs = stepped.jobs;
    phases[1] += t.elapsed();
    let t = Instant::now();
    let results = billing::charge_many_on(state, &mut conn, &jobs, &stepped.carried).await;
    phases[2] += t.elapsed();
    let t = Instant::now();
    let answered: Vec<(&billing::ChargeJob, &billing::AttemptResult)> =
        jobs.iter().zip(&results).filter_map(|(j, r)| r.as_ref().map(|r| (j, r))).collect();
    if !answered.is_empty() {
        let mut tx = state.db.begin_on(&mut conn).await.unwrap();
        let applied = billing::settle_carried(state, &mut tx, &answered, stepped.carried, now).await.unwrap();
        tx.commit().await.unwrap();
        handled += applied.into_iter().filter(|a| *a).count();
    }
    phases[3] += t.elapsed();
    handled
}

/// A column value copied from a row the engine wrote.
#[derive(Clone, Debug)]
enum Val {
    Int(Option<i64>),
    Text(Option<String>),
}

impl Val {
    fn text(s: impl Into<String>) -> Val {
        Val::Text(Some(s.into()))
    }
}

/// One row of `table` as the engine wrote it, column by column (typed by the declared type, so
/// that PostgreSQL gets typed NULLs).
struct Template {
    table: &'static str,
    cols: Vec<String>,
    vals: Vec<Val>,
}

impl Template {
    async fn read(db: &Db, table: &'static str, key: &str, value: &str) -> Template {
        let sql = match db.backend {
            db::Backend::Sqlite => "SELECT name, upper(type) FROM pragma_table_info($1) ORDER BY cid",
            db::Backend::Postgres => {
                "SELECT CAST(column_name AS TEXT), upper(CAST(data_type AS TEXT)) FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
            }
        };
        let cols: Vec<(String, String)> = sqlx::query_as(sql).bind(table).fetch_all(&db.pool).await.unwrap();
        let select: Vec<String> = cols
            .iter()
            .map(|(c, t)| if t.contains("INT") { c.clone() } else { format!("CAST({c} AS TEXT)") })
            .collect();
        let row = sqlx::query(&format!("SELECT {} FROM {table} WHERE {key} = $1 LIMIT 1", select.join(", ")))
            .bind(value)
            .fetch_one(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("a {table} row with {key} = {value}: {e}"));
        use sqlx::Row;
        let vals = cols
            .iter()
            .enumerate()
            .map(|(i, (_, t))| if t.contains("INT") { Val::Int(row.get(i)) } else { Val::Text(row.get(i)) })
            .collect();
        Template { table, cols: cols.into_iter().map(|c| c.0).collect(), vals }
    }

    /// The template's values with some columns replaced.
    fn row(&self, overrides: &[(&str, Val)]) -> Vec<Val> {
        let mut v = self.vals.clone();
        for (col, val) in overrides {
            let i = self.cols.iter().position(|c| c == col).unwrap_or_else(|| panic!("no {col} in {}", self.table));
            v[i] = val.clone();
        }
        v
    }
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    vals: &'q [Val],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for v in vals {
        q = match v {
            Val::Int(i) => q.bind(*i),
            Val::Text(t) => q.bind(t.as_deref()),
        };
    }
    q
}

/// `(${first}, ..., ${first + width - 1})`, or `(?, ..., ?)` on SQLite, which looks a named
/// parameter up by a linear search (quadratic in a statement with thousands of them).
fn placeholders(conn: &db::Conn, first: usize, width: usize) -> String {
    let positional = conn.backend_name() == "SQLite";
    let p: Vec<String> =
        (first..first + width).map(|i| if positional { "?".into() } else { format!("${i}") }).collect();
    format!("({})", p.join(", "))
}

/// Inserts `rows` into the template's table, `per_statement` rows in each statement.
async fn insert_rows(conn: &mut db::Conn, t: &Template, rows: &[Vec<Val>], per_statement: usize) {
    for chunk in rows.chunks(per_statement) {
        let width = t.cols.len();
        let values: Vec<String> = (0..chunk.len()).map(|r| placeholders(conn, r * width + 1, width)).collect();
        let sql = format!("INSERT INTO {} ({}) VALUES {}", t.table, t.cols.join(", "), values.join(", "));
        let flat: Vec<Val> = chunk.iter().flatten().cloned().collect();
        bind_all(sqlx::query(&sql), &flat).execute(&mut *conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// `UPDATE table SET <set> WHERE id = <first value>` for each row of `rows` (`[id, set values...]`),
/// one row at a time or `per_statement` at a time (`WITH v (k, s0, ...) AS (VALUES ...) UPDATE
/// table SET c = v.s0, ... FROM v WHERE id = v.k`, as the engine writes a batch).
async fn update_rows(conn: &mut db::Conn, table: &str, set: &[&str], rows: &[Vec<Val>], per_statement: usize) {
    let width = set.len() + 1;
    for chunk in rows.chunks(per_statement) {
        let sql = if per_statement == 1 {
            let assignments: Vec<String> = set.iter().enumerate().map(|(i, c)| format!("{c} = ${}", i + 2)).collect();
            format!("UPDATE {table} SET {} WHERE id = $1", assignments.join(", "))
        } else {
            let names: Vec<String> =
                std::iter::once("k".to_string()).chain((0..set.len()).map(|j| format!("s{j}"))).collect();
            let values: Vec<String> = (0..chunk.len()).map(|r| placeholders(conn, r * width + 1, width)).collect();
            let assignments: Vec<String> = set.iter().enumerate().map(|(j, c)| format!("{c} = v.s{j}")).collect();
            format!(
                "WITH v ({}) AS (VALUES {}) UPDATE {table} SET {} FROM v WHERE id = v.k",
                names.join(", "),
                values.join(", "),
                assignments.join(", ")
            )
        };
        let flat: Vec<Val> = chunk.iter().flatten().cloned().collect();
        let done = bind_all(sqlx::query(&sql), &flat)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .rows_affected();
        assert_eq!(done, chunk.len() as u64, "{sql}");
    }
}

/// The engine's row writes per renewal, timed, written `per_statement` rows at a time (1: one
/// statement per row, like the engine), into the same tables right after the engine's run; see the
/// module comment.
async fn reference(db: &Db, per_statement: usize) -> Duration {
    let invoice: String =
        scalar_text(db, "SELECT id FROM invoices WHERE billing_reason = 'subscription_cycle' ORDER BY id LIMIT 1")
            .await;
    let pi: String = scalar_text(db, &format!("SELECT payment_intent_id FROM invoices WHERE id = '{invoice}'")).await;
    let invoices = Template::read(db, "invoices", "id", &invoice).await;
    let lines = Template::read(db, "invoice_lines", "invoice_id", &invoice).await;
    let intents = Template::read(db, "payment_intents", "id", &pi).await;
    let charges = Template::read(db, "sandbox_charges", "idempotency_key", &format!("{invoice}-a1")).await;
    let mut events = Vec::new();
    for t in [
        "invoice.created",
        "invoice.finalized",
        "payment_intent.succeeded",
        "invoice.paid",
        "invoice.payment_succeeded",
    ] {
        let id =
            scalar_text(db, &format!("SELECT id FROM events WHERE event_type = '{t}' ORDER BY id DESC LIMIT 1")).await;
        events.push(Template::read(db, "events", "id", &id).await);
    }
    let endpoints: Vec<String> = sqlx::query_scalar("SELECT id FROM webhook_endpoints WHERE status = 'enabled'")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let deliveries = endpoints.first().map(|_| Template {
        table: "webhook_deliveries",
        cols: [
            "id",
            "merchant_id",
            "livemode",
            "event_id",
            "endpoint_id",
            "status",
            "attempt_count",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ]
        .map(String::from)
        .to_vec(),
        vals: Vec::new(),
    });
    let (merchant, livemode): (String, i64) =
        sqlx::query_as("SELECT merchant_id, livemode FROM invoices WHERE id = $1")
            .bind(&invoice)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let subs: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT id, current_period_start, current_period_end FROM subscriptions ORDER BY next_action_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let now = Clock::system().now().micros();
    let event_rows = |t: &Template, ids: &[(String, String)], delivery_rows: &mut Vec<Vec<Val>>| -> Vec<Vec<Val>> {
        ids.iter()
            .map(|(object, _)| {
                let id = EventId::generate().to_string();
                for e in &endpoints {
                    delivery_rows.push(vec![
                        Val::text(WebhookDeliveryId::generate().to_string()),
                        Val::text(merchant.clone()),
                        Val::Int(Some(livemode)),
                        Val::text(id.clone()),
                        Val::text(e.clone()),
                        Val::text("pending"),
                        Val::Int(Some(0)),
                        Val::Int(Some(now)),
                        Val::Int(Some(now)),
                        Val::Int(Some(now)),
                    ]);
                }
                t.row(&[
                    ("id", Val::text(id)),
                    ("object_id", Val::text(object.clone())),
                    ("created_at", Val::Int(Some(now))),
                ])
            })
            .collect()
    };

    let started = Instant::now();
    for (c, chunk) in subs.chunks(billing::BATCH as usize).enumerate() {
        // Ids of this batch's invoices and payment intents.
        let ids: Vec<(String, String)> = chunk
            .iter()
            .map(|_| (InvoiceId::generate().to_string(), PaymentIntentId::generate().to_string()))
            .collect();
        // The step's transaction: subscription, counter, invoice with its line, two events.
        let mut tx = db.begin().await.unwrap();
        let sub_rows: Vec<Vec<Val>> = chunk
            .iter()
            .zip(&ids)
            .map(|((sub, start, end), (inv, _))| {
                vec![
                    Val::text(sub.clone()),
                    Val::Int(Some(start + DAY_MICROS)),
                    Val::Int(Some(end + DAY_MICROS)),
                    Val::Int(Some(end + DAY_MICROS)),
                    Val::text(inv.clone()),
                    Val::Int(Some(now)),
                    Val::Int(Some(c as i64 + 2)),
                ]
            })
            .collect();
        let set =
            ["current_period_start", "current_period_end", "next_action_at", "latest_invoice", "updated_at", "version"];
        let counter =
            "UPDATE invoice_counters SET last_number = last_number + $1 WHERE merchant_id = $2 AND livemode = $3
                       RETURNING last_number";
        let mut invoice_rows = Vec::new();
        if per_statement == 1 {
            for (i, row) in sub_rows.iter().enumerate() {
                update_rows(&mut tx, "subscriptions", &set, std::slice::from_ref(row), 1).await;
                let _: i64 = sqlx::query_scalar(counter)
                    .bind(1_i64)
                    .bind(&merchant)
                    .bind(livemode)
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                invoice_rows.push(invoices.row(&[
                    ("id", Val::text(ids[i].0.clone())),
                    ("number", Val::text(format!("REF{per_statement}-{c}-{i}"))),
                    ("subscription_id", Val::text(chunk[i].0.clone())),
                    ("status", Val::text("open")),
                    ("charging", Val::Int(Some(1))),
                    ("payment_intent_id", Val::Text(None)),
                ]));
                insert_rows(&mut tx, &invoices, &invoice_rows[i..i + 1], 1).await;
                let line = lines
                    .row(&[("id", Val::text(format!("{}_0", ids[i].0))), ("invoice_id", Val::text(ids[i].0.clone()))]);
                insert_rows(&mut tx, &lines, &[line], 1).await;
                for t in &events[..2] {
                    let mut d = Vec::new();
                    let rows = event_rows(t, &ids[i..i + 1], &mut d);
                    insert_rows(&mut tx, t, &rows, 1).await;
                    if let Some(dt) = &deliveries {
                        insert_rows(&mut tx, dt, &d, 1).await;
                    }
                }
            }
        } else {
            update_rows(&mut tx, "subscriptions", &set, &sub_rows, per_statement).await;
            let _: i64 = sqlx::query_scalar(counter)
                .bind(chunk.len() as i64)
                .bind(&merchant)
                .bind(livemode)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            for (i, (inv, _)) in ids.iter().enumerate() {
                invoice_rows.push(invoices.row(&[
                    ("id", Val::text(inv.clone())),
                    ("number", Val::text(format!("REF{per_statement}-{c}-{i}"))),
                    ("subscription_id", Val::text(chunk[i].0.clone())),
                    ("status", Val::text("open")),
                    ("charging", Val::Int(Some(1))),
                    ("payment_intent_id", Val::Text(None)),
                ]));
            }
            insert_rows(&mut tx, &invoices, &invoice_rows, per_statement).await;
            let line_rows: Vec<Vec<Val>> = ids
                .iter()
                .map(|(inv, _)| {
                    lines.row(&[("id", Val::text(format!("{inv}_0"))), ("invoice_id", Val::text(inv.clone()))])
                })
                .collect();
            insert_rows(&mut tx, &lines, &line_rows, per_statement).await;
            let mut d = Vec::new();
            for t in &events[..2] {
                let rows = event_rows(t, &ids, &mut d);
                insert_rows(&mut tx, t, &rows, per_statement).await;
            }
            if let Some(dt) = &deliveries {
                insert_rows(&mut tx, dt, &d, per_statement).await;
            }
        }
        tx.commit().await.unwrap();

        // The charges (at the sandbox, each its own transaction in the engine; here in the
        // settling transaction) and the settling: the invoice paid, the payment intent, three events.
        let mut tx = db.begin().await.unwrap();
        let charge_rows: Vec<Vec<Val>> = ids
            .iter()
            .map(|(inv, _)| {
                charges.row(&[("idempotency_key", Val::text(format!("{inv}-a1"))), ("created_at", Val::Int(Some(now)))])
            })
            .collect();
        let paid_rows: Vec<Vec<Val>> = ids
            .iter()
            .map(|(inv, pi)| {
                vec![
                    Val::text(inv.clone()),
                    Val::text("paid"),
                    Val::Int(Some(renewal_seed::AMOUNT)),
                    Val::Int(Some(0)),
                    Val::Int(None),
                    Val::text(pi.clone()),
                    Val::Int(Some(0)),
                    Val::Int(Some(now)),
                    Val::Int(Some(now)),
                ]
            })
            .collect();
        let paid_set = [
            "status",
            "amount_paid",
            "amount_remaining",
            "next_payment_attempt",
            "payment_intent_id",
            "charging",
            "paid_at",
            "updated_at",
        ];
        let pi_rows: Vec<Vec<Val>> = ids
            .iter()
            .map(|(inv, pi)| {
                intents.row(&[
                    ("id", Val::text(pi.clone())),
                    ("invoice_id", Val::text(inv.clone())),
                    ("gateway_ref", Val::text(format!("sbx_ch_{inv}-a1"))),
                ])
            })
            .collect();
        if per_statement == 1 {
            for i in 0..ids.len() {
                insert_rows(&mut tx, &charges, &charge_rows[i..i + 1], 1).await;
                update_rows(&mut tx, "invoices", &paid_set, &paid_rows[i..i + 1], 1).await;
                insert_rows(&mut tx, &intents, &pi_rows[i..i + 1], 1).await;
                for t in &events[2..] {
                    let mut d = Vec::new();
                    let rows = event_rows(t, &ids[i..i + 1], &mut d);
                    insert_rows(&mut tx, t, &rows, 1).await;
                    if let Some(dt) = &deliveries {
                        insert_rows(&mut tx, dt, &d, 1).await;
                    }
                }
            }
        } else {
            insert_rows(&mut tx, &charges, &charge_rows, per_statement).await;
            update_rows(&mut tx, "invoices", &paid_set, &paid_rows, per_statement).await;
            insert_rows(&mut tx, &intents, &pi_rows, per_statement).await;
            let mut d = Vec::new();
            for t in &events[2..] {
                let rows = event_rows(t, &ids, &mut d);
                insert_rows(&mut tx, t, &rows, per_statement).await;
            }
            if let Some(dt) = &deliveries {
                insert_rows(&mut tx, dt, &d, per_statement).await;
            }
        }
        tx.commit().await.unwrap();
    }
    started.elapsed()
}

async fn scalar_text(db: &Db, sql: &str) -> String {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}
