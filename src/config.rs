//! Command line and environment: every flag can also be set by the environment variable named in
//! its help, and is checked once, at start-up, with a message that names the setting.

use clap::{Args, Parser, Subcommand};

use crate::gateway::stripe::StripeConfig;

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
    /// Print events as they happen and forward them, signed, to a local URL (like `stripe listen`).
    Listen(ListenArgs),
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

    /// Seconds after which a payment still waiting for the processor's answer is presumed dead (its
    /// process crashed) and finished from the processor's record. At least 30: longer than any
    /// processor call may take.
    #[arg(long, env = "PAYMENT_STALE_SECONDS", default_value_t = crate::flows::checkout::STALE_PAYMENT_SECONDS)]
    pub payment_stale_seconds: i64,

    /// Log as JSON lines (for production log collectors) instead of text.
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    pub log_json: bool,

    /// Stripe secret key (`sk_test_...` or `sk_live_...`): payments go through Stripe instead of the
    /// built-in sandbox. A live key is what lets live API keys (`fsk_...`) take payments.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,

    /// Stripe publishable key (`pk_test_...` or `pk_live_...`, the same mode as the secret key),
    /// used by Stripe.js on the checkout page.
    #[arg(long, env = "STRIPE_PUBLISHABLE_KEY")]
    pub stripe_publishable_key: Option<String>,

    /// Base URL of Stripe's API (default https://api.stripe.com; tests point it at localstripe).
    #[arg(long, env = "STRIPE_API_BASE")]
    pub stripe_api_base: Option<String>,

    /// Where the checkout page loads Stripe.js from (default https://js.stripe.com/v3/).
    #[arg(long, env = "STRIPE_JS_URL")]
    pub stripe_js_url: Option<String>,

    /// Signing secrets (`whsec_...`, comma-separated during a rotation) of the Stripe webhook
    /// endpoint that sends to /stripe/webhook.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,
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
            payment_stale_seconds: crate::flows::checkout::STALE_PAYMENT_SECONDS,
            log_json: false,
            stripe_secret_key: None,
            stripe_publishable_key: None,
            stripe_api_base: None,
            stripe_js_url: None,
            stripe_webhook_secret: None,
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

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Where to POST each event, signed like a webhook delivery (e.g. http://localhost:4242/webhook).
    /// Without it, events are only printed.
    #[arg(long)]
    pub forward_to: Option<String>,
    /// Base URL of the server's API.
    #[arg(long, env = "FLEX_API_URL", default_value = "http://localhost:3000")]
    pub api_url: String,
    /// A secret API key (`fsk_test_...` or `fsk_...`): events of its merchant and mode are shown.
    #[arg(long, env = "FLEX_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Only these event types, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<String>,
    /// The signing secret (`whsec_...`) to sign forwarded events with; default: a new one, printed
    /// at start. Pass the same one each time to keep your handler's configuration.
    #[arg(long, hide_env_values = true)]
    pub secret: Option<String>,
    /// How often to ask the API for new events, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,
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
    pub payment_stale_seconds: i64,
    /// Stripe, when configured; otherwise test mode pays through the sandbox and live mode cannot pay.
    pub stripe: Option<StripeConfig>,
    /// Secrets that may sign inbound Stripe webhooks (more than one during a rotation).
    pub stripe_webhook_secrets: Vec<String>,
}

pub const DEFAULT_STRIPE_JS_URL: &str = "https://js.stripe.com/v3/";

/// An absolute http(s) URL with a host, or a message naming `setting`.
pub fn http_url(setting: &str, raw: &str) -> anyhow::Result<url::Url> {
    let parsed = url::Url::parse(raw).map_err(|e| anyhow::anyhow!("{setting} `{raw}` is not an absolute URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        anyhow::bail!("{setting} `{raw}` must be an http or https URL with a host");
    }
    Ok(parsed)
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Checks the Stripe settings together: both keys or neither, well-formed, of one mode.
pub fn stripe_settings(args: &ServeArgs) -> anyhow::Result<(Option<StripeConfig>, Vec<String>)> {
    let secret = non_empty(&args.stripe_secret_key);
    let publishable = non_empty(&args.stripe_publishable_key);
    let webhook_secrets: Vec<String> = non_empty(&args.stripe_webhook_secret)
        .map(|raw| raw.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let (secret, publishable) = match (secret, publishable) {
        (None, None) => {
            for (setting, value) in [
                ("STRIPE_API_BASE", &args.stripe_api_base),
                ("STRIPE_JS_URL", &args.stripe_js_url),
                ("STRIPE_WEBHOOK_SECRET", &args.stripe_webhook_secret),
            ] {
                if non_empty(value).is_some() {
                    anyhow::bail!("{setting} is set but STRIPE_SECRET_KEY is not: set both Stripe keys, or neither");
                }
            }
            return Ok((None, Vec::new()));
        }
        (Some(_), None) => anyhow::bail!("STRIPE_SECRET_KEY is set but STRIPE_PUBLISHABLE_KEY is not: set both"),
        (None, Some(_)) => anyhow::bail!("STRIPE_PUBLISHABLE_KEY is set but STRIPE_SECRET_KEY is not: set both"),
        (Some(s), Some(p)) => (s, p),
    };
    let well_formed = |key: &str| key.len() > 8 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let secret_live = match secret {
        s if (s.starts_with("sk_test_") || s.starts_with("rk_test_")) && well_formed(s) => false,
        s if (s.starts_with("sk_live_") || s.starts_with("rk_live_")) && well_formed(s) => true,
        _ => anyhow::bail!("STRIPE_SECRET_KEY must be a Stripe secret key: sk_test_... or sk_live_..."),
    };
    let publishable_live = match publishable {
        p if p.starts_with("pk_test_") && well_formed(p) => false,
        p if p.starts_with("pk_live_") && well_formed(p) => true,
        _ => anyhow::bail!("STRIPE_PUBLISHABLE_KEY must be a Stripe publishable key: pk_test_... or pk_live_..."),
    };
    if secret_live != publishable_live {
        anyhow::bail!("STRIPE_SECRET_KEY and STRIPE_PUBLISHABLE_KEY must be of the same mode (both test or both live)");
    }
    let api_base = match non_empty(&args.stripe_api_base) {
        None => None,
        Some(raw) => {
            let url = http_url("STRIPE_API_BASE", raw)?;
            if url.query().is_some() || url.fragment().is_some() {
                anyhow::bail!("STRIPE_API_BASE `{raw}` must not have a query or fragment");
            }
            // The client appends `v1/...` to a base with a path only when it ends in a slash.
            let base = raw.trim_end_matches('/');
            Some(if url.path() == "/" { base.to_string() } else { format!("{base}/") })
        }
    };
    let js_url = non_empty(&args.stripe_js_url).unwrap_or(DEFAULT_STRIPE_JS_URL).to_string();
    let js = http_url("STRIPE_JS_URL", &js_url)?;
    if secret_live && js.scheme() != "https" {
        anyhow::bail!("STRIPE_JS_URL must be an https URL with a live Stripe key (the page loads it for card entry)");
    }
    for s in &webhook_secrets {
        if !s.starts_with("whsec_") || s.len() <= "whsec_".len() {
            anyhow::bail!("STRIPE_WEBHOOK_SECRET must be one or more whsec_... secrets separated by commas");
        }
    }
    Ok((
        Some(StripeConfig {
            secret_key: secret.to_string(),
            publishable_key: publishable.to_string(),
            api_base,
            js_url,
        }),
        webhook_secrets,
    ))
}

impl Settings {
    pub fn from_args(database_url: String, args: &ServeArgs) -> anyhow::Result<Settings> {
        let public_url = match &args.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://localhost:{}", args.port),
        };
        let parsed = http_url("PUBLIC_URL", &public_url)?;
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
        if !(30..=86_400).contains(&args.payment_stale_seconds) {
            anyhow::bail!("PAYMENT_STALE_SECONDS must be between 30 and 86400");
        }
        let (stripe, stripe_webhook_secrets) = stripe_settings(args)?;
        Ok(Settings {
            database_url,
            host: args.host.clone(),
            port: args.port,
            public_url,
            database_max_connections: args.database_max_connections,
            http_workers: args.http_workers,
            pay_attempts_per_ip_per_minute: args.pay_attempts_per_ip_per_minute,
            payment_stale_seconds: args.payment_stale_seconds,
            stripe,
            stripe_webhook_secrets,
        })
    }

    /// Whether live-mode API keys may be used: only with a live Stripe key.
    pub fn live_payments(&self) -> bool {
        self.stripe.as_ref().is_some_and(StripeConfig::is_live)
    }

    /// The origin (scheme://host[:port]) browsers send in `Origin` for our own pages.
    pub fn public_origin(&self) -> String {
        url::Url::parse(&self.public_url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| self.public_url.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(secret: Option<&str>, publishable: Option<&str>) -> ServeArgs {
        ServeArgs {
            stripe_secret_key: secret.map(String::from),
            stripe_publishable_key: publishable.map(String::from),
            ..ServeArgs::default()
        }
    }

    fn error_of(a: &ServeArgs) -> String {
        stripe_settings(a).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn no_stripe_keys_means_the_sandbox() {
        let (stripe, secrets) = stripe_settings(&ServeArgs::default()).unwrap();
        assert!(stripe.is_none() && secrets.is_empty());
    }

    #[test]
    fn stripe_misconfiguration_names_the_setting() {
        assert!(error_of(&args(Some("sk_test_abc123456"), None)).contains("STRIPE_PUBLISHABLE_KEY"));
        assert!(error_of(&args(None, Some("pk_test_abc123456"))).contains("STRIPE_SECRET_KEY"));
        assert!(error_of(&args(Some("pk_test_abc123456"), Some("pk_test_abc123456"))).starts_with("STRIPE_SECRET_KEY"));
        assert!(
            error_of(&args(Some("sk_test_abc123456"), Some("sk_test_abc123456"))).starts_with("STRIPE_PUBLISHABLE_KEY")
        );
        assert!(error_of(&args(Some("sk_live_abc123456"), Some("pk_test_abc123456"))).contains("same mode"));
        let mut a = args(Some("sk_test_abc123456"), Some("pk_test_abc123456"));
        a.stripe_api_base = Some("ftp://x".into());
        assert!(error_of(&a).starts_with("STRIPE_API_BASE"));
        a.stripe_api_base = None;
        a.stripe_js_url = Some("not a url".into());
        assert!(error_of(&a).starts_with("STRIPE_JS_URL"));
        a.stripe_js_url = None;
        a.stripe_webhook_secret = Some("whsec_abc, nope".into());
        assert!(error_of(&a).starts_with("STRIPE_WEBHOOK_SECRET"));
        let mut b =
            ServeArgs { stripe_js_url: Some("http://127.0.0.1:1/js.stripe.com/v3/".into()), ..ServeArgs::default() };
        assert!(error_of(&b).contains("STRIPE_JS_URL is set but STRIPE_SECRET_KEY is not"));
        b.stripe_js_url = None;
        let mut live = args(Some("sk_live_abc123456"), Some("pk_live_abc123456"));
        live.stripe_js_url = Some("http://127.0.0.1:1/js.stripe.com/v3/".into());
        assert!(error_of(&live).contains("https"));
    }

    #[test]
    fn a_good_stripe_configuration_is_kept_whole() {
        let mut a = args(Some("sk_test_abc123456"), Some("pk_test_abc123456"));
        a.stripe_api_base = Some("http://127.0.0.1:8420/".into());
        a.stripe_js_url = Some("http://127.0.0.1:8420/js.stripe.com/v3/".into());
        a.stripe_webhook_secret = Some("whsec_one, whsec_two".into());
        let (stripe, secrets) = stripe_settings(&a).unwrap();
        let stripe = stripe.unwrap();
        assert_eq!(stripe.api_base.as_deref(), Some("http://127.0.0.1:8420"));
        assert_eq!(stripe.js_origin(), "http://127.0.0.1:8420");
        assert!(!stripe.is_live());
        assert_eq!(secrets, vec!["whsec_one".to_string(), "whsec_two".to_string()]);
    }
}
