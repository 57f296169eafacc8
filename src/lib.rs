//! wsnorm: a sidecar in front of a WebSocket chat backend. It proxies plain HTTP untouched,
//! terminates WebSocket upgrades (negotiating `agent_chat` with clients), and rewrites JSON
//! messages by config rules on their way through.
//!
//! One message, socket to rule to socket: [`relay`] reads it from one leg, [`rules`] decides what
//! it becomes, [`relay`] writes it to the other leg. [`proxy`] is how connections get there.

pub mod admin;
pub mod cli;
pub mod config;
pub mod fixtures;
pub mod headers;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod relay;
pub mod reload;
pub mod rules;
pub mod server;
pub mod state;
