//! midge: a lightweight MQTT broker.
//!
//! A PUBLISH travels: [`server`] (accepts sockets) → [`connection`] (reads and writes one
//! client's bytes) → [`codec`] (bytes to packets) → [`handlers`] (one file per packet type,
//! acting on the [`client`]) → [`broker`] (`Broker::publish`) → [`router`] (topic trie,
//! finds subscribers) → each subscriber's [`session`] queue → that subscriber's
//! [`connection`] → socket. Imports point only down that list (docs/DESIGN.md, "Layers";
//! checked by tests/layering.rs).

pub mod auth;
pub(crate) mod broker;
pub(crate) mod buffers;
pub(crate) mod chain;
pub mod check;
pub(crate) mod client;
pub mod codec;
pub mod config;
pub(crate) mod connection;
pub(crate) mod expiry;
pub(crate) mod handlers;
pub(crate) mod handshake;
pub(crate) mod http;
pub(crate) mod id_hash;
pub(crate) mod linger;
pub mod log_file;
pub(crate) mod log_limit;
pub(crate) mod log_peer;
pub(crate) mod memory;
pub(crate) mod message;
// Its recording half (counters, histograms, listener registration) is fed by the data
// path in the $SYS work (issue 14); until then only its readers use it.
pub(crate) mod metrics;
pub(crate) mod outbox;
// Idle connections parked outside the runtime: epoll, hence Linux; its wakers are one
// 64-bit word.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub(crate) mod park;
pub(crate) mod retain;
pub mod router;
pub mod server;
pub(crate) mod session;
pub(crate) mod store;
pub(crate) mod subscriptions;
pub(crate) mod sys;
pub(crate) mod systemd;
#[cfg(test)]
mod testing;
pub(crate) mod tls;
pub mod topic;
pub(crate) mod websocket;

pub use config::Config;
pub use server::run;
