//! Building the running application: the database, the state every handler shares, the HTTP server
//! and the workers. `main` and the tests both start the server through here.

use std::net::TcpListener;
use std::num::NonZeroU32;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use base64::Engine;
use rand::RngCore;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Settings;
use crate::db::{self, Db};
use crate::gateway::sandbox::SandboxGateway;
use crate::gateway::stripe::StripeGateway;
use crate::gateway::{Gateways, PaymentGateway};
use crate::state::AppState;
use crate::{api, pages, workers};

pub struct Application {
    pub port: u16,
    pub state: AppState,
    server: Server,
    stop_workers: watch::Sender<bool>,
    run_workers: bool,
}

impl Application {
    /// Connects, migrates, and binds the port (0 picks a free one). Workers start with `run`.
    pub async fn build(settings: Settings, clock: Clock) -> anyhow::Result<Application> {
        let db = Db::connect(&settings.database_url, settings.database_max_connections).await?;
        db.migrate().await?;
        Self::build_with_db(settings, clock, db).await
    }

    pub async fn build_with_db(settings: Settings, clock: Clock, db: Db) -> anyhow::Result<Application> {
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .map_err(|e| anyhow::anyhow!("cannot listen on {}:{} (PORT/HOST): {e}", settings.host, settings.port))?;
        Self::build_with_listener(settings, clock, db, listener).await
    }

    /// Serves on a listener bound by the caller (tests bind port 0 first to learn the public URL).
    pub async fn build_with_listener(
        settings: Settings,
        clock: Clock,
        db: Db,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        install_tls_provider();
        let page_key = page_key(&db).await?;
        let gateways = gateways(&settings, &db, &clock)?;
        let per_minute = NonZeroU32::new(settings.pay_attempts_per_ip_per_minute).unwrap_or(NonZeroU32::MIN);
        let pay_limiter = Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute)));
        let state = AppState {
            db,
            gateways,
            clock,
            settings: Arc::new(settings.clone()),
            page_key: Arc::new(page_key),
            pay_limiter,
            page_cache: crate::state::new_page_cache(),
        };
        let port = listener.local_addr()?.port();
        let data = web::Data::new(state.clone());
        let mut server = HttpServer::new(move || {
            App::new().wrap(tracing_actix_web::TracingLogger::default()).app_data(data.clone()).configure(routes)
        })
        .listen(listener)?;
        if let Some(workers) = settings.http_workers {
            server = server.workers(workers);
        }
        let server = server.shutdown_timeout(30).run();
        let (stop_workers, _) = watch::channel(false);
        Ok(Application { port, state, server, stop_workers, run_workers: true })
    }

    /// Serve without the background workers (tests drive them one pass at a time).
    pub fn without_workers(mut self) -> Application {
        self.run_workers = false;
        self
    }

    /// Serves until the server stops (SIGTERM/SIGINT: in-flight requests finish first); the
    /// workers stop between passes.
    pub async fn run(self) -> std::io::Result<()> {
        let worker = self.run_workers.then(|| {
            let rx = self.stop_workers.subscribe();
            tokio::spawn(workers::run(self.state.clone(), rx))
        });
        let result = self.server.await;
        let _ = self.stop_workers.send(true);
        if let Some(w) = worker {
            let _ = w.await;
        }
        result
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/healthz").route(web::get().to(healthz)).default_service(web::to(api::method_not_allowed)),
    )
    .configure(api::routes)
    .configure(pages::routes)
    .default_service(web::to(pages::fallback));
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if state.db.ping().await {
        HttpResponse::Ok().content_type("application/json").body(r#"{"status":"ok"}"#)
    } else {
        HttpResponse::ServiceUnavailable().content_type("application/json").body(r#"{"status":"database unreachable"}"#)
    }
}

/// The key that signs page CSRF tokens: made once, kept in the database for every instance.
async fn page_key(db: &Db) -> anyhow::Result<Vec<u8>> {
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    let encoded = base64::engine::general_purpose::STANDARD.encode(fresh);
    let mut conn = db.conn().await?;
    let stored = db::settings::get_or_insert(&mut conn, "page_key", &encoded).await?;
    Ok(base64::engine::general_purpose::STANDARD.decode(stored)?)
}

/// Stripe with a test key pays for test mode; with a live key, live mode (test mode keeps the
/// sandbox); without Stripe, test mode uses the sandbox and live mode cannot pay.
fn gateways(settings: &Settings, db: &Db, clock: &Clock) -> anyhow::Result<Gateways> {
    let sandbox: Arc<dyn PaymentGateway> = Arc::new(SandboxGateway::new(db.clone(), clock.clone()));
    let Some(config) = settings.stripe.clone() else { return Ok(Gateways::new(sandbox, None)) };
    let live = config.is_live();
    let stripe: Arc<dyn PaymentGateway> = Arc::new(
        StripeGateway::new(config).map_err(|e| anyhow::anyhow!("cannot set up Stripe (STRIPE_SECRET_KEY): {e}"))?,
    );
    Ok(if live { Gateways::new(sandbox, Some(stripe)) } else { Gateways::new(stripe, None) })
}

/// Chooses rustls's crypto provider for the whole process, once: the Stripe client and the HTTP
/// clients link more than one, and without a choice the first TLS connection would panic.
pub fn install_tls_provider() {
    // A second call (tests start many servers in one process) finds it chosen; that is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
