//! midge: a lightweight MQTT broker.
//!
//! A PUBLISH travels: [`server`] (accepts sockets) → [`connection`] (reads and writes one
//! client's bytes) → [`codec`] (bytes to packets) → [`handlers`] (one file per packet type,
//! acting on the [`client`]) → [`broker`] (`Broker::publish`) → [`router`] (topic trie,
//! finds subscribers) → each subscriber's [`session`] queue → that subscriber's
//! [`connection`] → socket. Imports point only down that list (docs/DESIGN.md, "Layers";
//! checked by tests/layering.rs).

pub mod auth;
pub mod broker;
pub mod chain;
pub mod client;
pub mod codec;
pub mod config;
pub mod connection;
pub mod expiry;
pub mod handlers;
pub mod handshake;
pub mod linger;
pub mod log_limit;
pub mod memory;
pub mod message;
pub mod outbox;
pub mod retain;
pub mod router;
pub mod server;
pub mod session;
pub mod store;
pub mod subscriptions;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod topic;

pub use config::Config;
pub use server::run;
