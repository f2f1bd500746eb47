//! Several instances on one PostgreSQL database renew each due subscription exactly once: three
//! server processes (the real binary, workers on) find 3,000 renewals due on the system clock at
//! once, and afterwards every subscription has one renewal invoice, paid once, charged once at the
//! sandbox under its attempt key, with one payment intent, one `invoice.paid` event and a number in
//! an unbroken sequence.
//!
//! Needs `TEST_POSTGRES_URL` (scripts/test.sh starts PostgreSQL): SQLite is one file that several
//! processes share only on one machine, so on SQLite this test notes that it is skipped.

#[path = "common/mod.rs"]
mod common;
#[path = "../bench/renewal_seed.rs"]
mod renewal_seed;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fresh_database, spawn_app_on};
use renewal_seed::{scalar, Api, DAY_MICROS};

const SUBSCRIPTIONS: usize = 3_000;
/// Subscriptions made through the public API (both doors); the rest are copies made by SQL.
const THROUGH_THE_API: usize = 4;
const INSTANCES: usize = 3;
const WITHIN: Duration = Duration::from_secs(120);

/// One server process with the workers on.
struct Instance {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    fn spawn(database_url: &str) -> Instance {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_flex-checkout"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("DATABASE_MAX_CONNECTIONS", "8")
            .env("HTTP_WORKERS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server binary");
        Instance { child, port, log: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Waits for the "listening" line, then keeps reading (and keeping) what the server logs.
    fn wait_listening(&mut self) {
        let mut lines = BufReader::new(self.child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.expect("server output");
            if line.contains("listening on") {
                let (log, port) = (self.log.clone(), self.port);
                std::thread::spawn(move || {
                    for line in lines.map_while(Result::ok) {
                        eprintln!("instance :{port}: {line}");
                        log.lock().unwrap().push(line);
                    }
                });
                return;
            }
            self.log.lock().unwrap().push(line);
        }
        panic!("instance on port {} exited before listening: {:?}", self.port, self.log.lock().unwrap());
    }

    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("instance on port {} exited ({status}): {:?}", self.port, self.log.lock().unwrap());
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_renew_3000_due_subscriptions_exactly_once() {
    if std::env::var("TEST_POSTGRES_URL").map_or(true, |u| u.is_empty()) {
        eprintln!("notice: TEST_POSTGRES_URL is not set; several instances need PostgreSQL, skipping");
        return;
    }
    let (database_url, dir) = fresh_database().await;
    // An in-process server (no workers) for the merchant, its key and the subscriptions made
    // through the API; its pool also reads the results.
    let app = spawn_app_on(database_url.clone(), dir, true).await;
    let db = app.state.db.clone();
    let api = Api { client: &app.client, base: &app.address, key: &app.test_key };
    let price = renewal_seed::daily_price(&api).await;
    let made = renewal_seed::api_subscriptions(&api, &price, THROUGH_THE_API).await;
    renewal_seed::copy_subscription(&db, &made[0], SUBSCRIPTIONS - made.len()).await;
    let start = (app.state.clock.now().micros() / 1_000_000) * 1_000_000 - DAY_MICROS - DAY_MICROS / 2;
    renewal_seed::make_due(&db, start).await;
    let n = SUBSCRIPTIONS as i64;
    let now = app.state.clock.now().micros();
    assert_eq!(scalar(&db, &format!("SELECT COUNT(*) FROM subscriptions WHERE next_action_at <= {now}")).await, n);
    let before = renewal_seed::Before::count(&db).await;

    let started = Instant::now();
    let mut instances: Vec<Instance> = (0..INSTANCES).map(|_| Instance::spawn(&database_url)).collect();
    for i in &mut instances {
        i.wait_listening();
    }
    let paid_renewals = "SELECT COUNT(*) FROM invoices WHERE billing_reason = 'subscription_cycle' AND status = 'paid'";
    loop {
        if scalar(&db, paid_renewals).await >= n {
            break;
        }
        for i in &mut instances {
            i.check_alive();
        }
        assert!(
            started.elapsed() < WITHIN,
            "after {WITHIN:?}, {} of {n} renewals were paid",
            scalar(&db, paid_renewals).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    // Nothing runs while the results are read.
    for i in &mut instances {
        i.stop();
    }

    // Who did the work: each invoice's events carry the public URL of the instance that made it.
    let mut made_by = Vec::new();
    for i in &instances {
        let marker = format!("%127.0.0.1:{}/pay/i/%", i.port);
        let stepped: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = 'invoice.created' AND payload LIKE $1")
                .bind(&marker)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let settled: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = 'invoice.paid' AND payload LIKE $1")
                .bind(&marker)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let failed_passes = i.log.lock().unwrap().iter().filter(|l| l.contains("billing pass failed")).count();
        made_by.push((i.port, stepped, settled, failed_passes));
    }
    eprintln!("{n} renewals by {INSTANCES} instances in {took:?}; (port, invoices made, invoices settled, failed passes): {made_by:?}");
    assert_eq!(made_by.iter().map(|m| m.1).sum::<i64>(), n, "every renewal invoice was made by one of the instances");
    assert_eq!(
        made_by.iter().map(|m| m.2).sum::<i64>(),
        n,
        "every renewal invoice was settled by one of the instances"
    );

    renewal_seed::verify(&db, n, start, &before).await;
}
