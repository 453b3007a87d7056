//! CONNECT: check the client's identity and will, claim its session (taking it over from
//! an older connection if need be), and answer CONNACK.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;
use crate::codec::{self, Connect, ProtocolVersion};
use crate::connection::Client;
use crate::outbox::Outbox;
use crate::session::{Limits, Timers};
use crate::topic;

/// CONNACK return codes of MQTT 3.1.1 (3.1 shares them).
pub const ACCEPTED: u8 = 0x00;
pub const IDENTIFIER_REJECTED: u8 = 0x02;

/// MQTT 3.1 limits client ids to 23 characters; Mosquitto enforces it for `MQIsdp`.
const V31_MAX_CLIENT_ID: usize = 23;

/// A refused CONNECT: the CONNACK code to send first, if any (some violations close the
/// connection without one).
#[derive(Debug)]
pub struct Refusal {
    pub connack: Option<u8>,
}

pub async fn handle(
    broker: &Arc<Broker>,
    limits: &Arc<Limits>,
    peer: SocketAddr,
    connect: Connect,
) -> Result<Client, Refusal> {
    let mut client_id = connect.client_id;
    if client_id.is_empty() {
        if !connect.clean_session {
            // [MQTT-3.1.3-8]
            tracing::info!(%peer, "empty client id without clean session, refusing (0x02)");
            return Err(Refusal {
                connack: Some(IDENTIFIER_REJECTED),
            });
        }
        // [MQTT-3.1.3-6]
        client_id = broker.assign_client_id();
    }
    let too_long = client_id.len() > broker.config.max_client_id_len
        || (connect.version == ProtocolVersion::V31
            && client_id.chars().count() > V31_MAX_CLIENT_ID);
    if too_long {
        tracing::info!(%peer, len = client_id.len(), "client id too long, refusing (0x02)");
        return Err(Refusal {
            connack: Some(IDENTIFIER_REJECTED),
        });
    }
    if let Some(will) = &connect.will {
        let max_levels = broker.config.max_topic_levels;
        if !topic::valid_topic_name(&will.topic)
            || (max_levels > 0 && topic::level_count(&will.topic) > max_levels)
        {
            tracing::info!(%peer, client_id, topic = will.topic.as_str(), "invalid will topic, closing");
            return Err(Refusal { connack: None });
        }
    }
    // Authentication (password file, certificates) plugs in here.

    // The server allows one and a half keep-alive periods [MQTT-3.1.2-24].
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    // Timed retransmission on a live connection is an MQTT 3.1.1/3.1 behaviour; MQTT 5.0
    // allows re-sending only on reconnect.
    let retry = (broker.config.retry_interval > 0 && connect.version != ProtocolVersion::V5)
        .then(|| Duration::from_secs(broker.config.retry_interval));
    let Some(att) = broker
        .attach(
            &client_id,
            connect.clean_session,
            limits.clone(),
            Timers::new(keep_alive, retry),
        )
        .await
    else {
        tracing::info!(%peer, client_id, "CONNECT overtaken by a newer one for the same client id");
        return Err(Refusal { connack: None });
    };

    let level = match connect.version {
        ProtocolVersion::V31 => 3,
        ProtocolVersion::V311 => 4,
        ProtocolVersion::V5 => 5,
    };
    tracing::info!(
        "New client connected from {peer} as {client_id} (p{level}, c{}, k{}{}).",
        u8::from(connect.clean_session),
        connect.keep_alive,
        connect
            .username
            .as_deref()
            .map(|u| format!(", u'{u}'"))
            .unwrap_or_default(),
    );

    let mut out = Outbox::default();
    // [MQTT-3.2.2-1/2]: session present only when a stored session was resumed.
    codec::encode_connack(out.buf(), att.session_present, ACCEPTED);
    Ok(Client {
        broker: broker.clone(),
        session: att.session,
        generation: att.generation,
        version: connect.version,
        peer,
        out,
        will: connect.will.map(Box::new),
        withheld: None,
        _attached: att.guard,
    })
}
