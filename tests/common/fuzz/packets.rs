//! Strategies for valid client packets of MQTT 3.1, 3.1.1 and 5.0, as the decoder returns
//! them.

use bytes::Bytes;
use midge::codec::{
    Ack, Connect, ConnectProps, Disconnect, MessageProps, Packet, ProtocolVersion, Publish, QoS,
    Subscribe, SubscriptionOptions, Unsubscribe, Will,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// A UTF-8 string without U+0000, short, with multi-byte characters now and then.
pub fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/_ .\u{e9}\u{4e2d}\u{1f600}-]{0,10}"
}

/// A topic name or filter made of a few levels that often collide between cases.
pub fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "", "fz", "+", "#", "$SYS", "x\u{e9}"]),
        1..4,
    )
    .prop_map(|levels| levels.join("/"))
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn user_properties() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(), text()), 0..3)
}

/// Message properties as the decoder returns them: `None` when nothing was sent.
fn message_props() -> impl Strategy<Value = Option<Box<MessageProps>>> {
    (
        prop::option::of(any::<bool>()),
        prop::option::of(any::<u32>()),
        prop::option::of(text()),
        // Non-empty and without wildcards [MQTT-4.7.3-1] [MQTT-3.3.2-14].
        prop::option::of("[a-z/]{1,8}"),
        prop::option::of(binary()),
        user_properties(),
    )
        .prop_map(
            |(payload_format, message_expiry, content_type, response_topic, corr, user)| {
                let p = MessageProps {
                    payload_format,
                    message_expiry,
                    content_type,
                    response_topic,
                    correlation_data: corr,
                    user_properties: user.into(),
                };
                (p != MessageProps::default()).then(|| Box::new(p))
            },
        )
}

/// MQTT 5.0 message properties that the decoder reads back as sent (for the
/// store's `encode_message_props` / `decode_message_props` round trip).
pub fn some_message_props() -> impl Strategy<Value = Option<Box<MessageProps>>> {
    message_props()
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version == ProtocolVersion::V5;
    let props = (
        any::<u32>(),
        1..=u16::MAX,
        prop::option::of(1..=u32::MAX),
        any::<u16>(),
        any::<bool>(),
        any::<bool>(),
        user_properties(),
        prop::option::of(text()),
    )
        .prop_map(|(se, rm, mps, tam, rri, rpi, user, method)| ConnectProps {
            session_expiry: se,
            receive_maximum: rm,
            maximum_packet_size: mps,
            topic_alias_maximum: tam,
            request_response_information: rri,
            request_problem_information: rpi,
            user_property_count: user.len() as u32,
            authentication_method: method,
        });
    let will = (
        topic(),
        binary(),
        qos(),
        any::<bool>(),
        any::<u32>(),
        message_props(),
    )
        .prop_map(move |(topic, payload, qos, retain, delay, props)| Will {
            topic,
            payload,
            qos,
            retain,
            delay: if v5 { delay } else { 0 },
            props: if v5 { props } else { None },
        });
    (
        any::<bool>(),
        any::<u16>(),
        "[a-zA-Z0-9-]{0,12}",
        prop::option::of(will),
        prop::option::of(text()),
        prop::option::of(binary()),
        props,
    )
        .prop_map(
            move |(clean, keep_alive, client_id, will, username, password, props)| {
                // 3.1 and 3.1.1 refuse a password without a username [MQTT-3.1.2-22].
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Connect {
                    version,
                    clean_session: clean,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    props: if v5 { props } else { ConnectProps::default() },
                })
            },
        )
}

fn publish(v5: bool) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic(),
        1..=u16::MAX,
        binary(),
        prop::option::of(any::<u16>()),
        message_props(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, pkid, payload, alias, props)| {
                let q0 = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !q0,
                    qos,
                    retain,
                    topic: topic.into(),
                    pkid: if q0 { 0 } else { pkid },
                    payload,
                    topic_alias: if v5 { alias } else { None },
                    props: if v5 { props } else { None },
                })
            },
        )
}

const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
    0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

fn ack(v5: bool) -> impl Strategy<Value = Packet> {
    (0..4u8, any::<u16>(), any::<Index>()).prop_map(move |(kind, pkid, reason)| {
        let table = if kind < 2 {
            PUBACK_REASONS
        } else {
            PUBREL_REASONS
        };
        let reason = if v5 { *reason.get(table) } else { 0 };
        let a = Ack { pkid, reason };
        match kind {
            0 => Packet::PubAck(a),
            1 => Packet::PubRec(a),
            2 => Packet::PubRel(a),
            _ => Packet::PubComp(a),
        }
    })
}

fn subscribe(v5: bool) -> impl Strategy<Value = Packet> {
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0..3u8).prop_map(move |(qos, no_local, rap, rh)| {
            if v5 {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubscriptionOptions::qos(qos)
            }
        });
    (
        1..=u16::MAX,
        prop::collection::vec((topic(), options), 1..4),
        prop::option::of(1..=268_435_455u32),
    )
        .prop_map(move |(pkid, filters, id)| {
            Packet::Subscribe(Subscribe {
                pkid,
                filters,
                subscription_id: if v5 { id } else { None },
            })
        })
}

fn unsubscribe() -> impl Strategy<Value = Packet> {
    (1..=u16::MAX, prop::collection::vec(topic(), 1..4))
        .prop_map(|(pkid, filters)| Packet::Unsubscribe(Unsubscribe { pkid, filters }))
}

fn disconnect(v5: bool) -> impl Strategy<Value = Packet> {
    (any::<Index>(), prop::option::of(any::<u32>())).prop_map(move |(reason, expiry)| {
        Packet::Disconnect(if v5 {
            Disconnect {
                reason: *reason.get(DISCONNECT_REASONS),
                session_expiry: expiry,
            }
        } else {
            Disconnect {
                reason: 0,
                session_expiry: None,
            }
        })
    })
}

/// Any packet a client may send after its CONNECT (a second CONNECT included: the codec
/// reads it, the connection refuses it).
pub fn packet_after_connect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version == ProtocolVersion::V5;
    let common = prop_oneof![
        4 => publish(v5),
        3 => ack(v5),
        2 => subscribe(v5),
        1 => unsubscribe(),
        1 => Just(Packet::PingReq),
        1 => disconnect(v5),
        1 => connect(version),
    ];
    if v5 {
        prop_oneof![9 => common, 1 => prop::sample::select(vec![0u8, 0x18, 0x19]).prop_map(Packet::Auth)].boxed()
    } else {
        common.boxed()
    }
}

/// The protocol versions, 3.1 rarely.
pub fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![
        1 => Just(ProtocolVersion::V31),
        4 => Just(ProtocolVersion::V311),
        5 => Just(ProtocolVersion::V5),
    ]
}

/// Properties the decoder checks and drops (Reason String, User Property, Authentication
/// Data), added by the encoder where the packet allows them, so that their parsing is
/// fuzzed too.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub reason_string: Option<String>,
    pub user: Vec<(String, String)>,
    pub auth_data: Option<Vec<u8>>,
}

fn extras() -> impl Strategy<Value = Extras> {
    (
        prop::option::of(text()),
        user_properties(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..6)),
    )
        .prop_map(|(reason_string, user, auth_data)| Extras {
            reason_string,
            user,
            auth_data,
        })
}

/// A CONNECT of `version` and packets that follow it, each with its extra properties.
pub fn session(
    version: ProtocolVersion,
    max: usize,
) -> impl Strategy<Value = Vec<(Packet, Extras)>> {
    (
        (connect(version), extras()),
        prop::collection::vec((packet_after_connect(version), extras()), 0..max),
    )
        .prop_map(|(first, rest)| {
            let mut all = vec![first];
            all.extend(rest);
            all
        })
}
