//! socketlab: one single-threaded daemon on a hand-written mio reactor,
//! hosting classic network services, plus their clients, a load generator
//! and a teaching mode. See ARCHITECTURE.md for the map.

pub mod auth;
pub mod client;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod loadgen;
pub mod logging;
pub mod reactor;
pub mod service_id;
pub mod services;
pub mod units;
