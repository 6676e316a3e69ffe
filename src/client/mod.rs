//! Clients for each service: what the classic tutorial clients do, done right.

pub mod chat;
pub mod daytime;
pub mod echo;
pub mod exec;
