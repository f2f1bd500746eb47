//! Integration tests of the merchant API and the hosted page's form posts, through real HTTP
//! against a real server and database (SQLite, or PostgreSQL when TEST_POSTGRES_URL is set).

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod billing;
mod billing_periods;
mod billing_settings;
mod checkout_sessions;
mod customers;
mod engine;
mod invoice_page;
mod isolation;
mod pay;
mod prices;
mod products;
mod refunds;
mod server;
mod test_clocks;
mod webhooks;
