//! flex-checkout: a hosted checkout and subscription billing server.

pub mod api;
pub mod clock;
pub mod config;
pub mod crash_points;
pub mod db;
pub mod domain;
pub mod error;
pub mod flows;
pub mod gateway;
pub mod listen;
pub mod pages;
pub mod startup;
pub mod state;
pub mod workers;
