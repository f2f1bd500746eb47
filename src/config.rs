//! Command line and environment: every flag can also be set by the environment variable named in
//! its help, and is checked once, at start-up, with a message that names the setting.

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/flex-checkout.db";

#[derive(Debug, Parser)]
#[command(name = "flex-checkout", version, about = "Hosted checkout and subscription billing server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Flags of `serve`, which runs when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Database: `sqlite://path/to/file.db` or `postgres://user:pass@host/db`.
    #[arg(long, env = "DATABASE_URL", global = true, default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API, the hosted pages and the background workers (the default).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage merchant accounts.
    #[command(subcommand)]
    Merchants(MerchantsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Create a sample product, price and checkout session through the running server's API.
    Demo(DemoArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Address to bind (0.0.0.0 to accept connections from other machines).
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// The public base URL customers reach this server at; checkout links start with it.
    /// Default: http://localhost:<PORT>.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Size of the database connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    /// Card payments a single client address may attempt per minute, across all sessions
    /// (card-testing defence).
    #[arg(long, env = "PAY_ATTEMPTS_PER_IP_PER_MINUTE", default_value_t = 30)]
    pub pay_attempts_per_ip_per_minute: u32,

    /// Log as JSON lines (for production log collectors) instead of text.
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            port: 3000,
            host: "127.0.0.1".into(),
            public_url: None,
            database_max_connections: 16,
            http_workers: None,
            pay_attempts_per_ip_per_minute: 30,
            log_json: false,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum MerchantsCommand {
    /// Create a merchant account; prints its id alone on the last line.
    Create {
        #[arg(long)]
        name: String,
    },
    /// List merchant accounts.
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; prints the secret alone on the last line (it is shown only this once).
    Create {
        #[arg(long)]
        name: String,
        /// A live key (`fsk_...`) instead of a test key (`fsk_test_...`).
        #[arg(long, default_value_t = false)]
        live: bool,
        /// The merchant the key acts for (default: the first merchant).
        #[arg(long)]
        merchant: Option<String>,
    },
    /// List API keys (redacted).
    List {
        #[arg(long)]
        merchant: Option<String>,
    },
    /// Revoke an API key at once.
    Revoke { key_id: String },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Base URL of the running server's API.
    #[arg(long, env = "FLEX_API_URL", default_value = "http://localhost:3000")]
    pub api_url: String,
    /// A test secret key; by default a new one is created for the first merchant.
    #[arg(long, env = "FLEX_API_KEY")]
    pub api_key: Option<String>,
}

/// Settings the server runs with, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub host: String,
    pub port: u16,
    pub public_url: String,
    pub database_max_connections: u32,
    pub http_workers: Option<usize>,
    pub pay_attempts_per_ip_per_minute: u32,
}

impl Settings {
    pub fn from_args(database_url: String, args: &ServeArgs) -> anyhow::Result<Settings> {
        let public_url = match &args.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://localhost:{}", args.port),
        };
        let parsed = url::Url::parse(&public_url)
            .map_err(|e| anyhow::anyhow!("PUBLIC_URL `{public_url}` is not an absolute URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            anyhow::bail!("PUBLIC_URL `{public_url}` must be an http or https URL with a host");
        }
        if parsed.path() != "/" || parsed.query().is_some() {
            anyhow::bail!(
                "PUBLIC_URL `{public_url}` must not have a path or query (checkout links are /pay/c/<id> under it)"
            );
        }
        if args.pay_attempts_per_ip_per_minute == 0 {
            anyhow::bail!("PAY_ATTEMPTS_PER_IP_PER_MINUTE must be at least 1");
        }
        if args.database_max_connections == 0 {
            anyhow::bail!("DATABASE_MAX_CONNECTIONS must be at least 1");
        }
        Ok(Settings {
            database_url,
            host: args.host.clone(),
            port: args.port,
            public_url,
            database_max_connections: args.database_max_connections,
            http_workers: args.http_workers,
            pay_attempts_per_ip_per_minute: args.pay_attempts_per_ip_per_minute,
        })
    }

    /// The origin (scheme://host[:port]) browsers send in `Origin` for our own pages.
    pub fn public_origin(&self) -> String {
        url::Url::parse(&self.public_url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| self.public_url.clone())
    }
}
