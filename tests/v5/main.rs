//! MQTT 5.0 against a real `midge` process: properties, session and will timing, flow
//! control, topic aliases, subscription options, shared subscriptions, reason codes, and
//! 3.1.1 and 5.0 clients on the same topics. One file a chapter of the specification.
//!
//! Tests are named after the MQTT 5.0 statement or section they check
//! (`mqtt5_<section>_...`); docs/CONFORMANCE.md maps the 5.0 statements to them. Wire-level
//! checks use the raw client of tests/common ([`common::raw::Raw`], speaking 5.0 after a
//! 5.0 CONNECT); client-library checks use rumqttc's v5 client; interoperability uses
//! `mosquitto_pub`/`mosquitto_sub -V mqttv5`.
//!
//! One test binary with a module a chapter rather than a binary a chapter: each binary
//! links the whole crate, and the suite's time is mostly linking.

#[path = "../common/mod.rs"]
mod common;

mod connect;
mod publish;
mod retained;
mod session;
mod subscribe;
mod will;

// What the chapters share.
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::raw::WAIT;

/// How long to listen before concluding that nothing (more) arrives.
const QUIET: Duration = Duration::from_millis(400);
