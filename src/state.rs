//! What every request handler, flow and worker shares: the database, the gateway, the clock and
//! the settings.

use std::net::IpAddr;
use std::sync::Arc;

use governor::DefaultKeyedRateLimiter;

use crate::clock::Clock;
use crate::config::Settings;
use crate::db::Db;
use crate::gateway::Gateways;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// The payment gateway of each mode.
    pub gateways: Gateways,
    pub clock: Clock,
    pub settings: Arc<Settings>,
    /// Signs the CSRF tokens of the hosted pages; shared by every instance through the database.
    pub page_key: Arc<Vec<u8>>,
    /// Card payments per client address per minute, kept in this instance's memory.
    pub pay_limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// Rendered checkout forms of open sessions, by session id. Every change this instance makes to
    /// a session drops its entry; entries also die after a short time so a change made by another
    /// instance on the same database shows within that time.
    pub page_cache: moka::sync::Cache<String, Arc<CachedPage>>,
}

/// A checkout form as sent, and until when it may be sent (the session's expiry).
pub struct CachedPage {
    pub html: actix_web::web::Bytes,
    pub csp: String,
    pub expires_at: crate::domain::timestamp::Timestamp,
}

/// How long another instance's change to a session may take to show on this instance's cached form.
pub const PAGE_CACHE_SECONDS: u64 = 2;

/// The cache's bound, in bytes of HTML: a form is about 6.5 KB, so this holds about 600 of them.
pub const PAGE_CACHE_BYTES: u64 = 4 * 1024 * 1024;

pub fn new_page_cache() -> moka::sync::Cache<String, Arc<CachedPage>> {
    moka::sync::Cache::builder()
        .weigher(|id: &String, page: &Arc<CachedPage>| {
            u32::try_from(id.len() + page.html.len() + page.csp.len()).unwrap_or(u32::MAX)
        })
        .max_capacity(PAGE_CACHE_BYTES)
        .time_to_live(std::time::Duration::from_secs(PAGE_CACHE_SECONDS))
        .build()
}
