//! CONNECT: check the client's identity and will, claim its session (taking it over from
//! an older connection if need be), and answer CONNACK.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Access, Verdict};
use crate::broker::Broker;
use crate::broker::{AttachRequest, Refused};
use crate::client::{Client, ClientV5, Incoming};
use crate::codec::reason;
use crate::codec::{ConnackProps, Connect, ProtocolVersion};
use crate::log_limit::{self, field, LogLimit, Quoted};
use crate::log_peer::{connected_message, PeerText};
use crate::outbox::Outbox;
use crate::outbox::PeerV5;
use crate::session::{Peer, Timers, Wire};
use crate::topic;

pub use crate::codec::reason::v311::{
    BAD_USERNAME_OR_PASSWORD, IDENTIFIER_REJECTED, NOT_AUTHORIZED, SERVER_UNAVAILABLE,
    UNSUPPORTED_PROTOCOL_VERSION,
};

/// MQTT 3.1 limits client ids to 23 characters; Mosquitto enforces it for `MQIsdp`.
const V31_MAX_CLIENT_ID: usize = 23;

/// A refused CONNECT: the CONNACK code to send first, if any (some violations close the
/// connection without one), as an MQTT 3.1.1 return code.
#[derive(Debug)]
pub struct Refusal {
    pub connack: Option<u8>,
}

pub async fn handle(
    broker: &Arc<Broker>,
    incoming: &Incoming,
    mut connect: Connect,
) -> Result<Client, Refusal> {
    let peer = incoming.peer;
    let v5 = connect.version == ProtocolVersion::V5;
    if let Some(method) = connect
        .props
        .authentication_method
        .as_deref()
        .filter(|_| v5)
    {
        // midge offers no enhanced authentication (MQTT 5.0 §4.12).
        static LOG: LogLimit = LogLimit::new(10_000);
        if let Some(suppressed) = LOG.allow() {
            tracing::info!(event = "connect_refused", cause = "auth_method", %peer, method = ?field(method), suppressed, "authentication method not supported, refusing (0x8C)");
        }
        return Err(Refusal {
            connack: Some(reason::BAD_AUTHENTICATION_METHOD),
        });
    }
    let mut client_id = std::mem::take(&mut connect.client_id);
    let mut assigned = false;
    if client_id.is_empty() {
        // 5.0 assigns an id whatever Clean Start says [MQTT-3.1.3-6/7 of 5.0].
        if !connect.clean_session && !v5 {
            // [MQTT-3.1.3-8]
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::info!(event = "connect_refused", cause = "empty_client_id", %peer, suppressed, "empty client id without clean session, refusing (0x02)");
            }
            return Err(Refusal {
                connack: Some(IDENTIFIER_REJECTED),
            });
        }
        // [MQTT-3.1.3-6]
        client_id = broker.assign_client_id();
        assigned = true;
    }
    let too_long = client_id.len() > broker.config().max_client_id_len
        || (connect.version == ProtocolVersion::V31
            && client_id.chars().count() > V31_MAX_CLIENT_ID);
    if too_long {
        static LOG: LogLimit = LogLimit::new(10_000);
        if let Some(suppressed) = LOG.allow() {
            tracing::info!(event = "connect_refused", cause = "client_id_too_long", %peer, len = client_id.len(), suppressed, "client id too long, refusing (0x02)");
        }
        return Err(Refusal {
            connack: Some(IDENTIFIER_REJECTED),
        });
    }
    if let Some(will) = &connect.will {
        if !topic::valid_topic_name(&will.topic) {
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::info!(event = "connect_refused", cause = "will_topic_invalid", %peer, client_id = ?field(&client_id), topic = ?field(&will.topic), suppressed, "invalid will topic, closing");
            }
            return Err(Refusal { connack: None });
        }
        if !topic::within_levels(&will.topic, broker.config().max_topic_levels) {
            // A well-formed topic this server does not accept: 5.0 has a CONNACK code
            // for it (0x90); 3.1.1 has none, so the connection is closed without one.
            static DEEP_WILL_LOG: LogLimit = LogLimit::new(10_000);
            if let Some(held_back) = DEEP_WILL_LOG.allow() {
                tracing::info!(event = "connect_refused", cause = "will_topic_too_deep", %peer, client_id = ?field(&client_id),
                    held_back, "will topic deeper than max_topic_levels, refusing");
            }
            return Err(Refusal {
                connack: v5.then_some(reason::TOPIC_NAME_INVALID),
            });
        }
        // The will is kept for the whole session: its user properties are capped like a
        // PUBLISH's, with CONNACK 0x97 Quota exceeded (Table 3-1).
        let max_user = broker.config().max_user_properties;
        let user_props = will.props.as_ref().map_or(0, |p| p.user_properties.len());
        if max_user > 0 && user_props > max_user {
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::info!(event = "connect_refused", cause = "will_user_properties", %peer, client_id = ?field(&client_id), user_props, suppressed, "will has more user properties than max_user_properties, refusing (0x97)");
            }
            return Err(Refusal {
                connack: Some(reason::QUOTA_EXCEEDED),
            });
        }
    }
    let username = authenticate(broker, incoming, &connect, &client_id).await?;
    if let Some(will) = &connect.will {
        // A will is a PUBLISH made in advance: it needs write access like any other.
        if !broker
            .auth()
            .allows(&client_id, username.as_deref(), &will.topic, Access::Write)
        {
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::info!(event = "connect_refused", cause = "will_denied", %peer, client_id = ?field(&client_id), topic = ?field(&will.topic), suppressed, "will topic denied by the ACL, refusing (not authorized)");
            }
            return Err(Refusal {
                connack: Some(NOT_AUTHORIZED),
            });
        }
    }

    // A 5.0 client asking for more than max_keepalive (or for none) is told the server's
    // (Server Keep Alive, [MQTT-3.2.2-21/22]).
    let max_ka = broker.config().max_keepalive;
    let server_keep_alive =
        (v5 && max_ka > 0 && (connect.keep_alive == 0 || connect.keep_alive > max_ka))
            .then_some(max_ka);
    let keep_alive_secs = server_keep_alive.unwrap_or(connect.keep_alive);
    // The server allows one and a half keep-alive periods [MQTT-3.1.2-24].
    let keep_alive =
        (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500));
    // Session Expiry Interval: 5.0 says it; 3.1.1's clean session is "0", and a
    // persistent 3.1.1 session never expires by the protocol (persistent_client_expiration
    // bounds it offline, as it cannot be told). A 5.0 client asking for more than
    // max_session_expiry_interval (0xFFFFFFFF included) gets the maximum, and is told so
    // in CONNACK (5.0 §3.2.2.3.2, an unnumbered rule).
    let (session_expiry, granted_expiry) = match (v5, connect.clean_session) {
        (true, _) => crate::expiry::granted(
            connect.props.session_expiry,
            broker.config().max_session_expiry_interval,
        ),
        (false, true) => (0, None),
        (false, false) => (u32::MAX, None),
    };
    let receive_maximum = v5.then_some(connect.props.receive_maximum);
    let peer_v5 = v5.then(|| {
        Box::new(PeerV5::new(
            connect.props.maximum_packet_size,
            // The broker keeps every topic it aliases: bounded by its own maximum too.
            connect
                .props
                .topic_alias_maximum
                .min(broker.config().max_topic_alias_broker),
        ))
    });
    // Timed retransmission on a live connection is an MQTT 3.1.1/3.1 behaviour; MQTT 5.0
    // allows re-sending only on reconnect.
    let retry = (broker.config().retry_interval > 0 && connect.version != ProtocolVersion::V5)
        .then(|| Duration::from_secs(broker.config().retry_interval));
    // A new session that would take the broker above memory_limit is not made (existing
    // ones may come back, to drain what they hold): 5.0 gets 0x97 Quota exceeded, 3.1.1 0x03 Server unavailable.
    let session_bytes = crate::memory::SESSION_BYTES + client_id.len();
    if broker.memory_full(session_bytes) && !broker.has_session(&client_id) {
        static LOG: LogLimit = LogLimit::new(10_000);
        if let Some(held_back) = LOG.allow() {
            tracing::warn!(
                event = "memory_limit",
                %peer,
                client_id = %field(&client_id),
                used = crate::memory::used(),
                held_back,
                "memory_limit reached, new session refused"
            );
        }
        return Err(Refusal {
            connack: Some(if v5 {
                reason::QUOTA_EXCEEDED
            } else {
                SERVER_UNAVAILABLE
            }),
        });
    }
    let level = match connect.version {
        ProtocolVersion::V31 => 3,
        ProtocolVersion::V311 => 4,
        ProtocolVersion::V5 => 5,
    };
    let attached = broker
        .attach(
            &client_id,
            AttachRequest {
                username: username.clone(),
                clean_start: connect.clean_session,
                expiry: session_expiry,
                limits: incoming.listener.limits.clone(),
                timers: Timers::new(keep_alive, retry),
                receive_maximum,
                peer: Peer {
                    address: peer,
                    protocol: level,
                    keep_alive: keep_alive_secs,
                },
                wire: Wire::of(peer_v5.as_deref()),
            },
        )
        .await;
    let att = match attached {
        Ok(att) => att,
        Err(Refused::Overtaken) => {
            tracing::info!(event = "connect_refused", cause = "overtaken", %peer, client_id, "CONNECT overtaken by a newer one for the same client id");
            return Err(Refusal { connack: None });
        }
        Err(Refused::NotOwner) => {
            // Someone reusing another user's client id: refused, and the owner's
            // connection and session are left as they are.
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(held_back) = LOG.allow() {
                tracing::warn!(
                    event = "connect_refused",
                    cause = "client_id_in_use",
                    %peer,
                    client_id = &*log_limit::field(&client_id),
                    username = &*log_limit::field(username.as_deref().unwrap_or("")),
                    held_back,
                    "client id in use by a session of another user, refusing (not authorized)"
                );
            }
            return Err(Refusal {
                connack: Some(NOT_AUTHORIZED),
            });
        }
    };

    // The identity (a certificate's under use_identity_as_username), else the username as
    // claimed, verified or not, as Mosquitto logs it.
    let user = username
        .as_deref()
        .or(connect.username.as_deref())
        .map(log_limit::field);
    // Every connection logs this line: the address through PeerText, not SocketAddr's
    // Display, which costs about four times as much, the message written by
    // `connected_message` rather than `format_args!`, and the client id through `Quoted`
    // (src/log_peer.rs, src/log_limit.rs): the same text for a fraction of the work.
    let id = field(&client_id);
    let clean = connect.clean_session;
    let keep_alive = connect.keep_alive;
    let built = connected_message(peer, &id, level, clean, keep_alive, user.as_deref());
    // Past the buffer (not seen: see `connected_message`), `format!` writes the same text.
    let fallback;
    let message = match &built {
        Some(message) => message.as_str(),
        None => {
            fallback = format!(
                "New client connected from {} as {} (p{level}, c{}, k{keep_alive}{}).",
                PeerText::new(peer),
                id,
                u8::from(clean),
                user.as_deref()
                    .map(|u| format!(", u'{u}'"))
                    .unwrap_or_default(),
            );
            fallback.as_str()
        }
    };
    tracing::info!(
        message,
        event = "client_connected",
        peer = %PeerText::new(peer),
        client_id = ?Quoted(&id),
        protocol = level,
        clean,
        keep_alive,
        user = user.as_deref(),
    );
    drop(id);

    let mut out = Outbox::for_client(peer_v5);
    let config = &broker.config();
    // [MQTT-3.2.2-1/2]: session present only when a stored session was resumed. The
    // properties are built only for a 5.0 client: 3.1.1's CONNACK has none.
    out.connack(att.session_present, || ConnackProps {
        receive_maximum: (config.receive_maximum < u16::MAX).then_some(config.receive_maximum),
        retain_available: Some(true),
        maximum_packet_size: u32::try_from(config.max_packet_size).ok(),
        assigned_client_id: assigned.then(|| client_id.clone()),
        topic_alias_maximum: (config.max_topic_alias > 0).then_some(config.max_topic_alias),
        wildcard_available: Some(true),
        subscription_ids_available: Some(true),
        shared_available: Some(true),
        server_keep_alive,
        session_expiry: granted_expiry,
        ..ConnackProps::default()
    });
    let client_v5 = v5.then(|| {
        Box::new(ClientV5 {
            aliases: Default::default(),
            session_expiry,
            qos2_in: Default::default(),
        })
    });
    Ok(Client {
        broker: broker.clone(),
        session: att.session,
        generation: att.generation,
        version: connect.version,
        peer,
        username,
        v5: client_v5,
        out,
        will: connect.will.map(Box::new),
        withheld: None,
        retained_due: None,
        _attached: att.guard,
    })
}

/// Who the client is: the verified certificate's Common Name on a
/// `use_identity_as_username` listener, otherwise the CONNECT username once the password
/// file accepts it, or `None` for an anonymous client the listener lets in (which is what
/// a client with a username but no password file to check it against is). Only this
/// verified identity unlocks an ACL `user` section and owns a session. The password
/// itself is never logged.
async fn authenticate(
    broker: &Broker,
    incoming: &Incoming,
    connect: &Connect,
    client_id: &str,
) -> Result<Option<Arc<str>>, Refusal> {
    let peer = incoming.peer;
    let refuse = |code| {
        Err(Refusal {
            connack: Some(code),
        })
    };
    if incoming.listener.use_identity_as_username {
        return match &incoming.cert_name {
            Some(name) => Ok(Some(Arc::from(name.as_str()))),
            None => {
                static LOG: LogLimit = LogLimit::new(10_000);
                if let Some(suppressed) = LOG.allow() {
                    tracing::info!(event = "connect_refused", cause = "no_common_name", %peer, client_id = ?field(client_id), suppressed, "client certificate has no Common Name, refusing (not authorized)");
                }
                refuse(NOT_AUTHORIZED)
            }
        };
    }
    let verdict = broker
        .auth()
        .check_password(
            connect.username.as_deref(),
            connect.password.as_deref(),
            incoming.listener.allow_anonymous,
            incoming.peer.ip(),
        )
        .await;
    match verdict {
        // Without a password file nothing vouches for the username: the client is
        // anonymous to the ACL (its `user` section and `%u` patterns do not apply) and
        // owns no session under that name. Anyone can type any username.
        Verdict::Allowed if broker.auth().passwords().is_none() => Ok(None),
        Verdict::Allowed => Ok(connect.username.as_deref().map(Arc::from)),
        Verdict::BadCredentials => {
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::info!(
                    event = "connect_refused",
                    cause = "bad_credentials",
                    %peer,
                    client_id = ?field(client_id),
                    username = ?field(connect.username.as_deref().unwrap_or_default()),
                    suppressed,
                    "bad username or password, refusing"
                );
            }
            refuse(BAD_USERNAME_OR_PASSWORD)
        }
        Verdict::Busy => {
            static BUSY: LogLimit = LogLimit::new(10_000);
            if let Some(held_back) = BUSY.allow() {
                tracing::warn!(
                    event = "connect_refused",
                    cause = "busy",
                    %peer,
                    client_id = %field(client_id),
                    held_back,
                    max_queued_password_checks = broker.config().max_queued_password_checks,
                    "too many password checks waiting, refusing the longest-waiting CONNECT (server busy)"
                );
            }
            refuse(SERVER_UNAVAILABLE)
        }
        Verdict::NotAuthorized => {
            let why = if connect.username.is_some() {
                "username given but no password_file to check it, and anonymous clients are not allowed on this listener"
            } else {
                "anonymous clients are not allowed on this listener"
            };
            static LOG: LogLimit = LogLimit::new(10_000);
            if let Some(suppressed) = LOG.allow() {
                tracing::info!(event = "connect_refused", cause = "anonymous", %peer, client_id = ?field(client_id), suppressed, "{why}, refusing (not authorized)");
            }
            refuse(NOT_AUTHORIZED)
        }
    }
}
