//! The `flex-checkout` command: serve (the default), migrate, merchants, keys, demo, listen.

// The allocator the server runs with: the engine's batches allocate many small rows and strings,
// and glibc's malloc and free were about a quarter of a renewal pass's CPU samples (BENCHMARKS.md,
// "Renewals"; SQLite's own allocations stay with the C allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use serde_json::{json, Value};

use flex_checkout::clock::Clock;
use flex_checkout::config::{Cli, Command, DemoArgs, KeysCommand, MerchantsCommand, ServeArgs, Settings};
use flex_checkout::db::{self, Db};
use flex_checkout::domain::ids::MerchantId;
use flex_checkout::domain::Mode;
use flex_checkout::flows::keys;
use flex_checkout::startup::Application;

fn main() {
    let cli = Cli::parse();
    flex_checkout::startup::install_tls_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let database_url = cli.database_url;
    match cli.command {
        None => serve(database_url, cli.serve).await,
        Some(Command::Serve(args)) => serve(database_url, args).await,
        Some(Command::Migrate) => {
            let db = open(&database_url).await?;
            println!("migrations applied to {}", redact_url(&database_url));
            drop(db);
            Ok(())
        }
        Some(Command::Merchants(cmd)) => merchants(&database_url, cmd).await,
        Some(Command::Keys(cmd)) => keys_command(&database_url, cmd).await,
        Some(Command::Demo(args)) => demo(&database_url, args).await,
        Some(Command::Listen(args)) => flex_checkout::listen::run(args).await,
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,actix_server=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn open(database_url: &str) -> anyhow::Result<Db> {
    let db = Db::connect(database_url, 4).await?;
    db.migrate().await?;
    Ok(db)
}

fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

async fn serve(database_url: String, args: ServeArgs) -> anyhow::Result<()> {
    init_logs(args.log_json);
    let settings = Settings::from_args(database_url, &args)?;
    let clock = Clock::system();
    let app = Application::build(settings.clone(), clock.clone()).await?;
    if let Some((merchant, key)) = keys::bootstrap(&app.state.db, clock.now()).await? {
        println!();
        println!("  First start: created merchant account {merchant}.");
        println!("  Your test API key (shown once; store it now):");
        println!();
        println!("    {}", key.secret);
        println!();
        println!("  Try: curl {}/v1/products -H 'Authorization: Bearer {}'", settings.public_url, key.secret);
        println!();
    }
    println!(
        "flex-checkout listening on {}:{} (public URL {}, database {}; {})",
        settings.host,
        app.port,
        settings.public_url,
        redact_url(&settings.database_url),
        app.state.gateways.describe()
    );
    app.run().await?;
    Ok(())
}

async fn merchants(database_url: &str, cmd: MerchantsCommand) -> anyhow::Result<()> {
    let db = open(database_url).await?;
    let clock = Clock::system();
    match cmd {
        MerchantsCommand::Create { name } => {
            let id = keys::create_merchant(&db, &name, clock.now()).await?;
            println!("created merchant {name:?}");
            println!("{id}");
        }
        MerchantsCommand::List => {
            let rows: Vec<(String, String)> =
                sqlx::query_as("SELECT id, name FROM merchants ORDER BY id").fetch_all(&db.pool).await?;
            for (id, name) in rows {
                println!("{id}\t{name}");
            }
        }
    }
    Ok(())
}

async fn default_merchant(db: &Db, given: Option<String>) -> anyhow::Result<MerchantId> {
    let mut conn = db.conn().await?;
    match given {
        Some(raw) => {
            let id = MerchantId::parse(&raw)
                .ok_or_else(|| anyhow::anyhow!("--merchant must be a merchant id (facct_...)"))?;
            if db::merchants::get(&mut conn, id.as_str()).await?.is_none() {
                anyhow::bail!("no merchant with id {id}");
            }
            Ok(id)
        }
        None => match db::merchants::first(&mut conn).await? {
            Some(m) => Ok(MerchantId::from_trusted(m.id)),
            None => {
                drop(conn);
                let id = keys::create_merchant(db, "My store", Clock::system().now()).await?;
                eprintln!("no merchant yet: created {id}");
                Ok(id)
            }
        },
    }
}

async fn keys_command(database_url: &str, cmd: KeysCommand) -> anyhow::Result<()> {
    let db = open(database_url).await?;
    let clock = Clock::system();
    match cmd {
        KeysCommand::Create { name, live, merchant } => {
            let merchant = default_merchant(&db, merchant).await?;
            let mode = if live { Mode::Live } else { Mode::Test };
            let key = keys::create_key(&db, &merchant, &name, mode, clock.now()).await?;
            println!(
                "created {} key {} for merchant {merchant}; the secret is shown only now:",
                if live { "live" } else { "test" },
                key.id
            );
            println!("{}", key.secret);
        }
        KeysCommand::List { merchant } => {
            let mut conn = db.conn().await?;
            let keys = db::api_keys::list(&mut conn, merchant.as_deref()).await?;
            println!("id\tmerchant\tmode\tname\tkey\tstatus");
            for k in keys {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.merchant_id,
                    if k.livemode != 0 { "live" } else { "test" },
                    k.name,
                    k.redacted,
                    if k.revoked_at.is_some() { "revoked" } else { "active" }
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            let mut conn = db.conn().await?;
            if db::api_keys::revoke(&mut conn, &key_id, clock.now()).await? {
                println!("revoked {key_id}");
            } else {
                anyhow::bail!("no active key with id {key_id}");
            }
        }
    }
    Ok(())
}

async fn demo(database_url: &str, args: DemoArgs) -> anyhow::Result<()> {
    let secret = match args.api_key {
        Some(k) => k,
        None => {
            let db = open(database_url).await?;
            let merchant = default_merchant(&db, None).await?;
            keys::create_key(&db, &merchant, "demo", Mode::Test, Clock::system().now()).await?.secret
        }
    };
    let base = args.api_url.trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let client = client.clone();
        let url = format!("{base}{path}");
        let secret = secret.clone();
        async move {
            let res = client.post(&url).bearer_auth(&secret).json(&body).send().await.map_err(|e| {
                anyhow::anyhow!("cannot reach {url}: {e}. Is the server running? Start it with `cargo run --release`.")
            })?;
            let status = res.status();
            let value: Value = res.json().await?;
            if !status.is_success() {
                anyhow::bail!("{url} answered {status}: {value}");
            }
            Ok::<Value, anyhow::Error>(value)
        }
    };
    let product = post(
        "/v1/products",
        json!({"product": {"name": "Gym membership", "description": "Monthly access to every club",
            "visit_type": "gym", "hsa_fsa_eligibility": "letter_of_medical_necessity"}}),
    )
    .await?;
    let product_id = product["product"]["product_id"].as_str().unwrap_or_default().to_string();
    let price = post(
        "/v1/prices",
        json!({"price": {"product": product_id, "description": "Monthly", "unit_amount": 4999,
            "recurring": {"interval": "monthly"}}}),
    )
    .await?;
    let price_id = price["price"]["price_id"].as_str().unwrap_or_default().to_string();
    let session = post(
        "/v1/checkout/sessions",
        json!({"checkout_session": {"mode": "subscription", "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": format!("{base}/pay/c/{{CHECKOUT_SESSION_ID}}"), "cancel_url": base}}),
    )
    .await?;
    println!("product {product_id}, price {price_id}");
    println!("open this link and pay with 4242 4242 4242 4242, any future expiry, any CVC:");
    println!("{}", session["checkout_session"]["redirect_url"].as_str().unwrap_or_default());
    Ok(())
}
