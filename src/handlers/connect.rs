//! CONNECT: check the client's identity and will, claim its session (taking it over from
//! an older connection if need be), and answer CONNACK.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Access, Verdict};
use crate::broker::Broker;
use crate::codec::{self, Connect, ProtocolVersion};
use crate::connection::{Client, Origin};
use crate::outbox::Outbox;
use crate::session::Timers;
use crate::topic;

/// CONNACK return codes of MQTT 3.1.1 (3.1 shares them).
pub const ACCEPTED: u8 = 0x00;
pub const IDENTIFIER_REJECTED: u8 = 0x02;
pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x04;
pub const NOT_AUTHORIZED: u8 = 0x05;

/// MQTT 3.1 limits client ids to 23 characters; Mosquitto enforces it for `MQIsdp`.
const V31_MAX_CLIENT_ID: usize = 23;

pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x01;

/// A refused CONNECT: the CONNACK code to send first, if any (some violations close the
/// connection without one), as an MQTT 3.1.1 return code.
#[derive(Debug)]
pub struct Refusal {
    pub connack: Option<u8>,
}

/// Writes the refusing CONNACK in the client's protocol version: an MQTT 5.0 client gets
/// 5.0's reason code for the same refusal.
pub fn encode_refusal(out: &mut bytes::BytesMut, version: Option<ProtocolVersion>, code: u8) {
    if version == Some(ProtocolVersion::V5) {
        let reason = match code {
            UNSUPPORTED_PROTOCOL_VERSION => 0x84,
            IDENTIFIER_REJECTED => 0x85,
            BAD_USERNAME_OR_PASSWORD => 0x86,
            NOT_AUTHORIZED => 0x87,
            _ => 0x80,
        };
        codec::encode_connack_v5(out, false, reason);
    } else {
        codec::encode_connack(out, false, code);
    }
}

pub async fn handle(
    broker: &Arc<Broker>,
    origin: &Origin,
    mut connect: Connect,
) -> Result<Client, Refusal> {
    let peer = origin.peer;
    let mut client_id = std::mem::take(&mut connect.client_id);
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
    let username = authenticate(broker, origin, &connect, &client_id).await?;
    if let Some(will) = &connect.will {
        // A will is a PUBLISH made in advance: it needs write access like any other.
        if !broker
            .auth
            .allows(&client_id, username.as_deref(), &will.topic, Access::Write)
        {
            tracing::info!(%peer, client_id, topic = will.topic.as_str(), "will topic denied by the ACL, refusing (not authorized)");
            return Err(Refusal {
                connack: Some(NOT_AUTHORIZED),
            });
        }
    }
    if connect.version == ProtocolVersion::V5 {
        // Authenticated, but MQTT 5.0 sessions are not implemented yet.
        tracing::info!(%peer, client_id, "MQTT 5.0 is not supported yet, refusing (0x84)");
        return Err(Refusal {
            connack: Some(UNSUPPORTED_PROTOCOL_VERSION),
        });
    }

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
            username.clone(),
            connect.clean_session,
            origin.endpoint.limits.clone(),
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
        username
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
        username,
        out,
        will: connect.will.map(Box::new),
        withheld: None,
        _attached: att.guard,
    })
}

/// Who the client is: the verified certificate's Common Name on a
/// `use_identity_as_username` listener, otherwise the CONNECT username once the password
/// file accepts it (or `None` for an anonymous client the listener lets in). The password
/// itself is never logged.
async fn authenticate(
    broker: &Broker,
    origin: &Origin,
    connect: &Connect,
    client_id: &str,
) -> Result<Option<Arc<str>>, Refusal> {
    let peer = origin.peer;
    let refuse = |code| {
        Err(Refusal {
            connack: Some(code),
        })
    };
    if origin.endpoint.use_identity_as_username {
        return match &origin.cert_name {
            Some(name) => Ok(Some(Arc::from(name.as_str()))),
            None => {
                tracing::info!(%peer, client_id, "client certificate has no Common Name, refusing (not authorized)");
                refuse(NOT_AUTHORIZED)
            }
        };
    }
    let verdict = broker
        .auth
        .check_password(
            connect.username.as_deref(),
            connect.password.as_deref(),
            origin.endpoint.allow_anonymous,
        )
        .await;
    match verdict {
        Verdict::Allowed => Ok(connect.username.as_deref().map(Arc::from)),
        Verdict::BadCredentials => {
            tracing::info!(
                %peer,
                client_id,
                username = connect.username.as_deref().unwrap_or_default(),
                "bad username or password, refusing"
            );
            refuse(BAD_USERNAME_OR_PASSWORD)
        }
        Verdict::NotAuthorized => {
            let why = if connect.username.is_some() {
                "username given but no password_file to check it, and anonymous clients are not allowed on this listener"
            } else {
                "anonymous clients are not allowed on this listener"
            };
            tracing::info!(%peer, client_id, "{why}, refusing (not authorized)");
            refuse(NOT_AUTHORIZED)
        }
    }
}
