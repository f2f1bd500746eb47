//! What every request handler, flow and worker shares: the database, the gateway, the clock and
//! the settings.

use std::net::IpAddr;
use std::sync::Arc;

use governor::DefaultKeyedRateLimiter;

use crate::clock::Clock;
use crate::config::Settings;
use crate::db::Db;
use crate::gateway::PaymentGateway;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub gateway: Arc<dyn PaymentGateway>,
    pub clock: Clock,
    pub settings: Arc<Settings>,
    /// Signs the CSRF tokens of the hosted pages; shared by every instance through the database.
    pub page_key: Arc<Vec<u8>>,
    /// Card payments per client address per minute, kept in this instance's memory.
    pub pay_limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}
